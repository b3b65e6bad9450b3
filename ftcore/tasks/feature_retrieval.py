"""`feature_retrieval`: an ANALOGUE of retrieving device features from contextual queries with a relevance
bi-encoder trained contrastively from a pretrained base, then distilled into small students (papers.md §10; the
paper fine-tunes a pretrained language model, here a small `mlp` over hashed words, pretrained by the platform).

Data (ftcore.tasks.feature_catalogue): N = `task.n` features (catalogue fixed by `catalogue_seed`), queries of
three kinds (keyword, paraphrase, situation) split into train/val/test by new phrase combinations, contextual test
queries also by a held-out phrase per object; fixed by `catalogue_seed` too, so a teacher and its students share the
split (member seeds vary initialisation and sampling). Side A's pool is stored sparse (`hash_sparse`).
Text -> x ∈ R^H by feature hashing (ftcore.tasks.text_hashing, H = `hash_dim`); the encoder f (model) maps x to
R^d; u = f(x)/‖f(x)‖. Both sides use the same encoder (a siamese bi-encoder).
With `model.name: hf_causal_lm` (`model.output: hidden`, `task.dim: 0`) the encoder is a Hugging Face causal LM given
by path, as in the paper: each text is tokenised by the model's tokenizer with EOS appended (once per task,
ftcore.tasks.text_tokens), x carries the ids (E, R, T) right-padded, and f(x) is the last hidden state at the EOS,
d = H (the model's width; `hash_dim` is not read). Everything else (pairs, InfoNCE, batch selection, metrics,
TF-IDF) is the same. Such a model cannot be a `task.teacher` (students read hashed vectors), nor a student.

Pair i (one per feature, so no batch holds the same feature twice): side A a fresh draw from feature i's pool
(stream "augment": a kind uniformly, then a training query of it), side B feature i's catalogue text.
`with_corpus` adds the generic corpus to side A's draws (a fourth kind).
`stage: pretrain` is the platform's stage 1: side A a description from the generic corpus
(`feature_catalogue.corpus`: every synonym × situation), side B the feature's short name.
With z_ij = u_iᵀv_j / τ a batch S is trained on the symmetric InfoNCE L_S (ftcore.batching.symmetric_infonce);
`train.batch_selection` chooses S (N and B as `digits_contrastive`).

Distillation (`teacher_run_id`/`teacher_dir`: a recorded run of this task, resolved by the sweep layer from
`task.teacher: {dir, best, mode, where}` like `model.from`): the student (its own `model.width`, from its own
initialisation) minimises

    α · L_S  +  (1 − α) · ½ Σ_{rows, cols} KL( softmax(t_iᵀt_j / τ_kd) ‖ softmax(u_iᵀv_j / τ_kd) )

over each batch's B×B score matrix (t = the teacher's unit embeddings; α = `distill_alpha`, τ_kd =
`distill_temperature`). Listwise KL on in-batch scores (as RocketQAv2's / Tevatron's distillation of rankers): it
transfers the teacher's ranking of near-miss features, which is what retrieval needs, and leaves the student its
own embedding coordinates (an embedding MSE would also force the teacher's rotation on a narrower network).
α = 1 is the no-distillation control (the teacher is still evaluated on the same queries).

Batches: x (E, R, H) ordered [batch m][side][row b] (R = M·2·B) (HF: ids (E, R, T), T the batch's longest text);
y (E, R, d) carries each row's [m, feature id, pool draw (−1 on side B), 0…] (HF: channel 3 the EOS position; the
contract's y is (E, rows, out)): the loss reads M from it, and with a teacher looks up the teacher's precomputed unit
embeddings of exactly those texts; w (E, R) = 1/R.
Metrics (test/ on held-out test queries, val/ on val queries; ranks against all N catalogue texts; ties count
half, as a random tie-break would):
    test/mrr, test/top1              mean reciprocal rank, top-1 accuracy, over all test queries
    test/mrr/<kind>, test/top1/<kind>    per kind; `contextual` = paraphrase ∪ situation
    val/mrr                          the selector of the best run (a teacher is chosen on val, not on test)
    tfidf/...                        the term-frequency baseline (scikit-learn TF-IDF over the catalogue texts,
                                     unigrams + bigrams, cosine), same queries; constant over seeds
    teacher/..., distill/mrr_ratio   with a teacher: its metrics on the same queries, test/mrr ÷ teacher/mrr,
                                     teacher/width its model's width (NaN if it has none)
    full/loss                        L_[N] with one fixed training draw per feature
    cost/forwards, cost/batch_losses as `digits_contrastive`
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ftcore.batching import symmetric_infonce
from ftcore.batching.partition import Shuffle
from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks import feature_catalogue as fc
from ftcore.tasks.feature_metrics import kind_metrics, tfidf_scores
from ftcore.tasks.selection import SelectionTask
from ftcore.tasks.text_hashing import densify, hash_sparse, hash_texts
from ftcore.tasks.text_tokens import last_token, token_table
from ftcore.tokenizers import HF_MODELS, is_hf, tokenizer_for

STAGES = ("finetune", "pretrain")
TEACHER_SAME = ("n", "catalogue_seed", "n_val", "n_test", "hash_dim", "dim")


@dataclass
class FeatureRetrievalConfig:
    name: str = "feature_retrieval"
    n: int = 256                 # N features in the catalogue (of 320)
    catalogue_seed: int = 0      # fixes the catalogue and the query split (shared by a teacher and its students)
    n_val: int = 1               # held-out phrase combinations per feature and kind (val)
    n_test: int = 2              # ... (test; contextual kinds: with the held-out phrase)
    hash_dim: int = 1024         # H, the hashed input size
    dim: int = 32                # d, the embedding size (0 with model hf_causal_lm: its hidden size H)
    batch_size: int = 32         # B
    temperature: float = 0.1     # τ
    stage: str = "finetune"      # finetune: query <-> catalogue text; pretrain: generic description <-> name
    with_corpus: bool = False    # finetune: side A also draws from the generic corpus (a 4th kind; a student's
    #                              transfer set, so the teacher's knowledge of phrases no query shows reaches it)
    teacher_run_id: str = ""     # distillation: the teacher run (resolved from task.teacher by the sweep layer)
    teacher_dir: str = ""        # ... and the sweep output directory that holds its checkpoint
    distill_alpha: float = 0.0   # α: weight of the hard InfoNCE; 1 - α of the teacher KL (1 = no distillation)
    distill_temperature: float = 0.1    # τ_kd

    per_member = ()

    def __post_init__(self):
        check(2 <= self.n <= fc.MAX_FEATURES, "task.n", f"in [2, {fc.MAX_FEATURES}]", self.n)
        check(self.catalogue_seed >= 0, "task.catalogue_seed", ">= 0", self.catalogue_seed)
        check(self.n_val >= 0, "task.n_val", ">= 0", self.n_val)
        check(self.n_test >= 1, "task.n_test", ">= 1", self.n_test)
        check(self.n_val <= 2, "task.n_val", "<= 2 (3 paraphrase combinations of training phrases per feature, "
              "one at least left for training)", self.n_val)
        check(self.n_test <= 3, "task.n_test", "<= 3 (held-out-phrase paraphrase combinations per feature)",
              self.n_test)
        check(self.hash_dim >= 16, "task.hash_dim", ">= 16", self.hash_dim)
        check(self.dim >= 3 or self.dim == 0, "task.dim", ">= 3 (y carries 3 channels of batch layout), or 0 with "
              "model hf_causal_lm", self.dim)
        check(1 <= self.batch_size <= self.n, "task.batch_size", f"in [1, task.n={self.n}]", self.batch_size)
        check(self.temperature > 0, "task.temperature", "> 0", self.temperature)
        check(self.stage in STAGES, "task.stage", f"one of {', '.join(STAGES)}", self.stage)
        check(bool(self.teacher_run_id) == bool(self.teacher_dir), "task.teacher_run_id",
              "given with task.teacher_dir (write task.teacher: {dir, best, mode} and let the sweep resolve it)",
              self.teacher_run_id)
        check(0.0 <= self.distill_alpha <= 1.0, "task.distill_alpha", "in [0, 1]", self.distill_alpha)
        check(self.teacher_run_id or self.distill_alpha in (0.0, 1.0), "task.distill_alpha",
              "left at its default without a task.teacher", self.distill_alpha)
        check(self.distill_temperature > 0, "task.distill_temperature", "> 0", self.distill_temperature)
        check(not (self.teacher_run_id and self.stage == "pretrain"), "task.stage",
              "finetune when distilling from a task.teacher", self.stage)


@TASKS.register("feature_retrieval")
class FeatureRetrieval(SelectionTask):
    Config = FeatureRetrievalConfig
    per_member = FeatureRetrievalConfig.per_member
    models = ("mlp",) + HF_MODELS
    EVAL_ROWS = 256               # HF: texts per forward when embedding the catalogue and the queries

    @staticmethod
    def io_dims(cfg, model_cfg):
        if is_hf(model_cfg):                      # token ids in (V), the last hidden states out (H)
            from ftcore.models.hf_causal_lm import model_hidden_size, model_vocab_size
            return model_vocab_size(model_cfg.path, model_cfg.download), model_hidden_size(model_cfg.path,
                                                                                            model_cfg.download)
        return cfg.hash_dim, cfg.dim

    @staticmethod
    def check_compatible(cfg, model_cfg, adapter_cfg, train_cfg):
        SelectionTask.check_compatible(cfg, model_cfg, adapter_cfg, train_cfg)
        if not is_hf(model_cfg):
            check(cfg.dim >= 3, "task.dim", ">= 3 with model mlp (0 only with model hf_causal_lm)", cfg.dim)
            return
        check(model_cfg.output == "hidden", "model.output", "hidden for task feature_retrieval (it embeds a text "
              "as the last hidden state at its EOS)", model_cfg.output)
        check(cfg.dim == 0, "task.dim", "0 with model hf_causal_lm (the embedding is its hidden state: d = H)",
              cfg.dim)
        check(not cfg.teacher_run_id, "task.teacher", "unset with model hf_causal_lm (distillation students are "
              "mlp encoders of hashed words)", cfg.teacher_run_id)

    @classmethod
    def rows(cls, cfg):
        return 2 * cfg.batch_size

    @staticmethod
    def check_teacher(cfg, teacher_cfg, run_id: str) -> None:
        """`task.teacher` (sweeps.trained_base.resolve_teacher): the teacher must be a run of this task on the same
        catalogue, query split and sizes (else its embeddings would describe other texts, or test queries it
        trained on); ValueError naming the field otherwise."""
        if teacher_cfg.name != "feature_retrieval":
            raise ValueError(f"task.teacher: run {run_id} trained task '{teacher_cfg.name}', not feature_retrieval")
        if teacher_cfg.dim == 0:
            raise ValueError(f"task.teacher: run {run_id} encodes with a Hugging Face model (task.dim=0); a student "
                             "distils from an mlp teacher over hashed words only")
        for f in TEACHER_SAME:
            ours, theirs = getattr(cfg, f), getattr(teacher_cfg, f)
            if ours != theirs:
                raise ValueError(f"task.{f}: {ours!r} differs from the teacher's (run {run_id}: task.{f}={theirs!r}); "
                                 "a student sees its teacher's catalogue, query split and sizes")

    def build_base(self):
        c0 = self.cfgs[0]
        self.hf = is_hf(self.model_cfg)
        in_dim, self.d = self.io_dims(c0, self.model_cfg)
        self.n, self.b, self.tau, H = c0.n, c0.batch_size, c0.temperature, c0.hash_dim
        cat = fc.build_catalogue(c0.n, c0.catalogue_seed)
        split = fc.split_queries(cat, c0.n_val, c0.n_test, c0.catalogue_seed)
        if c0.stage == "pretrain":
            pool = [fc.corpus(o, a) for o, a in cat.features]
            groups = [len(pool[0])]
            side_b = cat.names
        else:
            pool, groups = _query_pool(split, c0.n)
            if c0.with_corpus:                    # the transfer set of distillation: queries + the generic corpus
                pool = [p + fc.corpus(o, a) for p, (o, a) in zip(pool, cat.features)]
                groups = groups + [len(fc.corpus(0, 0))]
            side_b = cat.texts
        self.groups = torch.tensor(groups)                                        # (K,) draws per kind
        if self.hf:
            self._tokenise(pool, side_b, cat.texts, split)
        else:
            idx, val = hash_sparse([t for p in pool for t in p], H)              # (N·Q, G) each
            self.pool_idx, self.pool_val = idx.reshape(c0.n, len(pool[0]), -1), val.reshape(c0.n, len(pool[0]), -1)
            self.keys = hash_texts(side_b, H)                                     # (N, H) side B
            self.catalogue = hash_texts(cat.texts, H)                             # (N, H) what queries retrieve
            for name in ("val", "test"):           # attributes, so Task.to moves them with the pack
                setattr(self, f"{name}_q", hash_texts(split.text[name], H))     # (T, H)
        for name in ("val", "test"):
            setattr(self, f"{name}_f", torch.tensor(split.feature[name], dtype=torch.long))    # (T,)
        self.kinds = {"val": list(split.kind["val"]), "test": list(split.kind["test"])}
        tq, tf_, tk = split.text["test"], split.feature["test"], split.kind["test"]
        self.fixed_metrics = kind_metrics(tfidf_scores(cat.texts, tq), torch.tensor(tf_), tk, "tfidf")
        self.aug_gens = generators(self.seeds, "augment")
        self.eval_draw = self._draw(torch.arange(c0.n).expand(self.E, 1, c0.n), generators(self.seeds, "eval"))
        self.own = Shuffle(self.n, self.b, 0, generators(self.seeds, "batching"))   # `batch_selection: task`
        self.teacher = None                        # set by use_teacher (ftcore.pack loads task.teacher)
        return build_model(self.model_cfg, in_dim, self.d, generators(self.seeds, "base"))

    def _tokenise(self, pool, side_b, catalogue, split) -> None:
        """HF: every text as the model's token ids with EOS appended, right-padded (text_tokens.token_table):
        pool (N, Q, L) and keys, catalogue, val/test queries (·, L), each with its EOS positions `*_end`."""
        parts = {"pool": [t for p in pool for t in p], "keys": side_b, "catalogue": catalogue,
                 "val_q": split.text["val"], "test_q": split.text["test"]}
        ids, end = token_table(tokenizer_for(self.model_cfg), [t for v in parts.values() for t in v])   # one width L
        for (name, texts), i in zip(parts.items(), torch.tensor([0, *map(len, parts.values())]).cumsum(0).tolist()):
            setattr(self, name, ids[i:i + len(texts)])
            setattr(self, f"{name}_end", end[i:i + len(texts)])
        self.pool_ids, self.pool_end = self.pool.reshape(self.n, len(pool[0]), -1), self.pool_end.reshape(self.n, -1)
        del self.pool

    def teacher_source(self):
        c0 = self.cfgs[0]
        return (c0.teacher_run_id, c0.teacher_dir) if c0.teacher_run_id else None

    def use_teacher(self, t) -> None:
        """The teacher's unit embeddings of the pool (N, Q, d) and of the keys (N, d), and its test metrics."""
        with torch.no_grad():
            emb = lambda x: torch.nn.functional.normalize(t(x.reshape(1, -1, x.shape[-1]))[0], dim=-1)  # noqa: E731
            q = self.pool_idx.shape[1]
            self.t_pool = torch.stack([emb(densify(self.pool_idx[:, j], self.pool_val[:, j], self.catalogue.shape[-1]))
                                       for j in range(q)], 1)                      # (N, Q, d)
            self.t_keys = emb(self.keys)                                           # (N, d)
            cat = emb(self.catalogue)                                              # (N, d)
            q, f, k = self.test_q, self.test_f, self.kinds["test"]
            m = kind_metrics(emb(q) @ cat.T, f, k, "teacher")
        self.fixed_metrics.update(m)
        self.fixed_metrics["teacher/width"] = torch.tensor(float(getattr(getattr(t, "cfg", None), "width", "nan")))
        self.teacher = True

    def _draw(self, idx: torch.Tensor, gens) -> torch.Tensor:
        """idx (E, M, B) features -> (E, M, B) pool positions: a kind uniformly, then a draw of it."""
        out = []
        groups = self.groups.cpu()                                                # draws stay on the CPU
        starts = torch.cumsum(groups, 0) - groups                                 # (K,)
        for e, g in enumerate(gens):
            k = torch.randint(0, len(groups), idx[e].shape, generator=g)
            r = torch.rand(idx[e].shape, generator=g)
            out.append(starts[k] + (r * groups[k]).long().clamp_max(groups[k] - 1))
        return torch.stack(out)

    def batch_of(self, idx: torch.Tensor, pos: torch.Tensor | None = None):
        """idx (E, M, B) features -> x (E, R, H) [m][side A, side B][b], y (E, R, d), w (E, R) = 1/R; R = M·2·B.
        HF: x (E, R, L) token ids as floats, L the longest text of the batch, y[..., 3] each row's EOS position."""
        E, M, B = idx.shape
        idx = idx.cpu()
        pos = self._draw(idx, self.aug_gens) if pos is None else pos.cpu()
        keys = self.keys.cpu()
        y = torch.zeros(E, M, 2, B, self.d)
        if self.hf:
            end = torch.stack([self.pool_end.cpu()[idx, pos], self.keys_end.cpu()[idx]], 2)         # (E, M, 2, B)
            L = int(end.max()) + 1
            x = torch.stack([self.pool_ids.cpu()[idx, pos][..., :L], keys[idx][..., :L]], 2)       # (E, M, 2, B, L)
            x, y[..., 3] = x.reshape(E, M * 2 * B, L).float(), end.float()
        else:
            a = densify(self.pool_idx.cpu()[idx, pos], self.pool_val.cpu()[idx, pos], keys.shape[-1])  # (E, M, B, H)
            x = torch.stack([a, keys[idx]], 2).reshape(E, M * 2 * B, -1)          # (E, M, 2, B, H) flattened
        y[..., 0] = torch.arange(M, dtype=torch.float32).view(1, M, 1, 1)
        y[..., 1] = idx.unsqueeze(2).float()
        y[:, :, 0, :, 2], y[:, :, 1, :, 2] = pos.float(), -1.0
        w = torch.full(x.shape[:2], 1.0 / x.shape[1])
        return (x.to(self.device, self.dtype), y.reshape(E, -1, self.d).to(self.device, self.dtype),
                w.to(self.device, self.dtype))

    def batch(self, step):
        return self.own_batch(step)

    def loss(self, pred, y, w):
        """pred (E, R, d) -> Σ_m w_m [α L_{S_m} + (1 − α) KD_m] (E,); M, ids and draws read from y's layout.
        HF: pred (E, R, L, H) hidden states, pooled at each row's EOS (y[..., 3]) first."""
        if pred.dim() == 4:
            pred = last_token(pred, y[..., 3].round().long())
        E, R, d = pred.shape
        M = int(y[0, :, 0].max()) + 1
        p = torch.nn.functional.normalize(pred, dim=-1).reshape(E, M, 2, R // (2 * M), d)
        wm = w.reshape(E, M, -1).sum(-1)                                          # (E, M)
        hard = symmetric_infonce(p[:, :, 0] @ p[:, :, 1].transpose(-1, -2) / self.tau)     # (E, M)
        alpha = self.cfgs[0].distill_alpha if self.teacher else 1.0
        if alpha >= 1.0:
            return (wm * hard).sum(-1)
        meta = y[..., 1:3].round().long().reshape(E, M, 2, -1, 2)                # (E, M, 2, B, [id, draw])
        ta = self.t_pool[meta[:, :, 0, :, 0], meta[:, :, 0, :, 1]]               # (E, M, B, d) teacher, side A
        tb = self.t_keys[meta[:, :, 1, :, 0]]                                     # (E, M, B, d) side B
        tk = self.cfgs[0].distill_temperature
        s = p[:, :, 0] @ p[:, :, 1].transpose(-1, -2) / tk                       # (E, M, B, B) student
        z = (ta @ tb.transpose(-1, -2) / tk).to(s)                                # teacher
        kd = 0.5 * (_kl(z, s, -1) + _kl(z, s, -2))                                # (E, M)
        return (wm * (alpha * hard + (1 - alpha) * kd)).sum(-1)

    def _embed(self, model, x: torch.Tensor, end: torch.Tensor | None = None) -> torch.Tensor:
        """x (R, H) shared by the members, or (E, R, H) -> unit embeddings (E, R, d). HF: x (R, L) / (E, R, L) ids
        and `end` (R,) / (E, R) their EOS positions, embedded `EVAL_ROWS` texts per forward."""
        if x.dim() == 2:
            x = x.expand(self.E, *x.shape)
        if not self.hf:
            return torch.nn.functional.normalize(model(x), dim=-1)
        end = end.to(x.device).long().expand(self.E, x.shape[1])
        out = []
        for i in range(0, x.shape[1], self.EVAL_ROWS):
            e = end[:, i:i + self.EVAL_ROWS]
            out.append(last_token(model(x[:, i:i + self.EVAL_ROWS, : int(e.max()) + 1].to(self.dtype)), e))
        return torch.nn.functional.normalize(torch.cat(out, 1), dim=-1)

    def _pairs(self, model, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Every feature's side A (draws `pos`, or fresh) and side B -> unit embeddings (E, 2, N, d)."""
        idx = torch.arange(self.n).expand(self.E, 1, self.n)
        x, y, _ = self.batch_of(idx, pos)
        return self._embed(model, x, y[..., 3] if self.hf else None).reshape(self.E, 2, self.n, self.d)

    def pair_logits(self, model) -> torch.Tensor:
        """Z (E, N, N) = u_iᵀv_j / τ for a fresh draw of every feature's side A (no grad)."""
        with torch.no_grad():
            p = self._pairs(model)
            return p[:, 0] @ p[:, 1].transpose(-1, -2) / self.tau

    @torch.no_grad()
    def evaluate(self, model):
        p = self._pairs(model, self.eval_draw)
        loss = symmetric_infonce(p[:, 0] @ p[:, 1].transpose(-1, -2) / self.tau)
        cat = self._embed(model, self.catalogue, getattr(self, "catalogue_end", None))    # (E, N, d)
        out = {"full/loss": loss}
        for name in ("val", "test"):
            q, f, k = getattr(self, f"{name}_q"), getattr(self, f"{name}_f"), self.kinds[name]
            if not len(f):
                continue
            m = kind_metrics(self._embed(model, q, getattr(self, f"{name}_q_end", None)) @ cat.transpose(1, 2), f, k,
                             name)
            out.update(m if name == "test" else {"val/mrr": m["val/mrr"], "val/top1": m["val/top1"]})
        out.update({k: v.expand(self.E) for k, v in self.fixed_metrics.items()})
        if self.teacher:
            out["distill/mrr_ratio"] = out["test/mrr"] / self.fixed_metrics["teacher/mrr"]
        return {k: v.to(loss) for k, v in {**out, **self.cost_metrics(loss)}.items()}


def _kl(z_teacher: torch.Tensor, z_student: torch.Tensor, dim: int) -> torch.Tensor:
    """mean over the other axis of KL(softmax(z_t) ‖ softmax(z_s)) along `dim`; (E, M, B, B) -> (E, M)."""
    lt, ls = torch.log_softmax(z_teacher, dim), torch.log_softmax(z_student, dim)
    return (lt.exp() * (lt - ls)).sum(dim).mean(-1)


def _query_pool(split: fc.QuerySplit, n: int) -> tuple[list[list[str]], list[int]]:
    """The training queries per feature, ordered by kind; (pool, per-kind counts). The generator gives every
    feature the same count per kind (its kinds' combination counts and templates are the same), checked here."""
    pool: list[dict[str, list[str]]] = [{k: [] for k in fc.KINDS} for _ in range(n)]
    for t, f, k in zip(split.text["train"], split.feature["train"], split.kind["train"]):
        pool[f][k].append(t)
    groups = [len(pool[0][k]) for k in fc.KINDS]
    if any([len(p[k]) for k in fc.KINDS] != groups for p in pool):
        raise ValueError("feature_retrieval: unequal training queries per feature (generator bug)")
    return [[t for k in fc.KINDS for t in p[k]] for p in pool], groups

