"""`needles_finetune`: stage 2 of the artificial-needles study ("From Artificial Needles to Real Haystacks",
Xiong et al., ICLR 2025; papers.md §6(b)–(d)): fine-tune a pretrained LM (a stage-1 `lm_text` run through
`model.from`, or an HF causal LM) on the synthetic dictionary key-value data, then measure retrieval on prompts
*in a different format* — a multi-document QA stand-in — by gold position, before and after, and what the model
forgot of its pretraining text.

Training data (`seq_generators.sample_kv_retrieval`, the paper's `build_dicts`): `n_dicts` dictionaries, the gold
one holding the queried key, rendered in `fmt` (tiny `{k:v}…?k:` -> `v` on CPU, the paper's `template` in `gpu`);
gold slot uniform, except `frac_0` of the prompts at slot 0 and `frac_top` at a slot uniform in the first 20%
(papers.md §6(a): 5% / 3%, slots 0–16 of 85). `n_train` > 0 fixes a training set of that many prompts per member
(the paper: 350, 2–3 epochs), visited in a fresh permutation every epoch; 0 draws fresh prompts every step.
Loss: answer tokens only (`text_batches.encode_pairs`):

    ℓ = Σ_b w_b · (1/A_b) Σ_{t ∈ answer(b) ∪ EOS} −log softmax(z_{b,t})[s_{b,t+1}],     w_b = 1/B

Evaluation (fixed sets per member, teacher-forced exact match = greedy exact match, as `kv_retrieval`):
    mdqa/pos{i}      exact match of the answer's value (`4821` of `a: 4821.`, as MDQA scores whether the answer
                     is in the response, not its punctuation) on `needles_text.sample_mdqa` prompts (`mdqa_docs`
                     one-fact documents, the question about the one at slot i); slots stratified: prompt j at
                     slot j mod mdqa_docs; mdqa/mean over all prompts, mdqa/ce the CE of the whole answer + EOS
    kv/acc, kv/ce    the training task's own exact match and answer CE on held-out dictionaries (slots
                     stratified the same way)
    retain/lm_ce     token-weighted next-token CE on held-out stage-1 text (`sample_corpus` with this config's
                     docs_max, facts_max, digits_*, ask, which must equal the stage-1 run's — `sweeps/needles_*.yaml`)
    before/<metric>  the same metric on the frozen base: computed once, at the first evaluation (step 0, where
                     every adapter equals its base) and repeated at every later one, so a run's row holds both
    fit/success      kv/acc >= target_acc, when target_acc > 0: what a capacity search over `adapter.rank` asks
                     ("the smallest rank at which fine-tuning this base reaches the target"); with
                     `train.early_stop` a member stops at its first success
Members differ by seed only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ftcore.fields import check
from ftcore.registry import TASKS
from ftcore.seeding import generators, member_generator
from ftcore.tasks.kv_retrieval import check_dict_fields, pos_keys
from ftcore.tasks.lm_text import TextTask, char_len, check_world
from ftcore.tasks.needles_text import mdqa_max_chars, sample_corpus, sample_mdqa
from ftcore.tasks.seq_generators import kv_max_lengths, sample_kv_retrieval
from ftcore.tasks.text_batches import score, token_mean

BEFORE = ("mdqa/", "kv/acc", "retain/lm_ce")     # metrics also reported on the base (before/...)
RETAIN_FIELDS = ("docs_max", "facts_max", "digits_min", "digits_max", "ask")   # must equal the stage-1 lm_text's


@dataclass
class NeedlesFinetuneConfig:
    name: str = "needles_finetune"
    # training: dictionary key-value retrieval (paper: 85 dicts, gold 3 entries, others 3..4, 3..4 digits)
    n_dicts: int = 6
    gold_dict_size: int = 1
    dict_size_min: int = 1
    dict_size_max: int = 1
    key_digits_min: int = 2
    key_digits_max: int = 2
    val_digits_min: int = 2
    val_digits_max: int = 2
    fmt: str = "tiny"            # seq_generators.FORMATS
    frac_0: float = 0.05         # share of training prompts with the gold dict at slot 0
    frac_top: float = 0.03       # ... at a slot uniform in the first 20% of the slots
    n_train: int = 0             # fixed training set size (0 = fresh prompts every step)
    batch_size: int = 16
    n_eval_kv: int = 48          # held-out dictionary prompts
    # evaluation: MDQA stand-in
    mdqa_docs: int = 6           # documents per prompt (paper's MDQA: 20)
    n_eval: int = 120            # MDQA prompts per member, gold slot stratified
    # retention: the stage-1 corpus (must match the stage-1 run's task)
    docs_max: int = 3
    facts_max: int = 2
    digits_min: int = 2
    digits_max: int = 3
    ask: str = "any"
    n_retain: int = 64
    # success (capacity search over adapter.rank, early stop): kv/acc >= target_acc; 0 = no success metric
    target_acc: float = 0.0

    per_member = ()

    def __post_init__(self):
        check_dict_fields(self)
        check(self.frac_0 >= 0 and self.frac_top >= 0 and self.frac_0 + self.frac_top <= 1, "task.frac_0/frac_top",
              ">= 0 with a sum <= 1", (self.frac_0, self.frac_top))
        check(self.n_train >= 0, "task.n_train", ">= 0 (0 = fresh prompts every step)", self.n_train)
        check(self.batch_size >= 1, "task.batch_size", ">= 1", self.batch_size)
        check(self.n_eval_kv >= self.n_dicts, "task.n_eval_kv", f">= task.n_dicts = {self.n_dicts}", self.n_eval_kv)
        check_world(self)
        check(self.mdqa_docs >= 2, "task.mdqa_docs", ">= 2 (a gold position needs company)", self.mdqa_docs)
        check(self.mdqa_docs <= self.n_eval, "task.n_eval", f">= task.mdqa_docs = {self.mdqa_docs} (a prompt per slot)",
              self.n_eval)
        check(self.n_retain >= 1, "task.n_retain", ">= 1", self.n_retain)
        check(0 <= self.target_acc <= 1, "task.target_acc", "in [0, 1] (0 = no success metric)", self.target_acc)

    def kv(self, gen: torch.Generator, n: int, gold_position=None):
        return sample_kv_retrieval(gen, n, self.n_dicts, gold_position, self.fmt, self.gold_dict_size,
                                   (self.dict_size_min, self.dict_size_max), (self.key_digits_min, self.key_digits_max),
                                   (self.val_digits_min, self.val_digits_max), self.frac_0, self.frac_top,
                                   max(1, round(0.2 * self.n_dicts)))


def lengths(cfg: NeedlesFinetuneConfig) -> dict[str, int]:
    """Input length bounds with one token per character (BOS + prompt + answer + EOS − 1), per data set."""
    kv_p, kv_a = kv_max_lengths(cfg.n_dicts, cfg.gold_dict_size, (cfg.dict_size_min, cfg.dict_size_max),
                                (cfg.key_digits_min, cfg.key_digits_max), (cfg.val_digits_min, cfg.val_digits_max),
                                cfg.fmt)                                          # kv_a counts the EOS
    md_p, md_a = mdqa_max_chars(cfg.mdqa_docs, (cfg.digits_min, cfg.digits_max))
    return {"kv": 1 + kv_p + kv_a - 1, "mdqa": 1 + md_p + md_a, "retain": char_len(cfg)}


@TASKS.register("needles_finetune")
class NeedlesFinetune(TextTask):
    Config = NeedlesFinetuneConfig
    per_member = NeedlesFinetuneConfig.per_member

    def __init__(self, cfgs, model_cfg, seeds):
        super().__init__(cfgs, model_cfg, seeds)
        self.T = lengths(cfgs[0])
        self.before: dict[str, torch.Tensor] | None = None
        self.success_metric = "fit/success" if cfgs[0].target_acc > 0 else None   # (no target: nothing to stop on)

    @staticmethod
    def check_source(cfg, source_task_cfg):
        """retain/lm_ce replays the stage-1 corpus: its fields must be those the base was pretrained with."""
        if source_task_cfg.name != "lm_text":
            return
        for f in RETAIN_FIELDS:
            mine, theirs = getattr(cfg, f), getattr(source_task_cfg, f)
            check(mine == theirs, f"task.{f}", f"the stage-1 run's task.{f} = {theirs!r} (retain/lm_ce replays its "
                  "corpus)", mine)

    @staticmethod
    def seq_len(cfg):
        T = lengths(cfg)
        return max(T.values()), f"the longest of the kv / mdqa / retention inputs {T}"

    def build_base(self):
        model = self.build_model()
        c0 = self.cfgs[0]
        g_md, g_kv, g_rt = (generators(self.seeds, s) for s in ("eval", "eval_kv", "retain"))
        slots = [j % c0.mdqa_docs for j in range(c0.n_eval)]
        self.md_inp, self.md_tgt, self.md_val = self.encode(
            [sample_mdqa(g, c.mdqa_docs, slots, (c.digits_min, c.digits_max)) for c, g in zip(self.cfgs, g_md)],
            self.T["mdqa"], lm=False, suffix=".")                                 # (E, P, T)
        self.md_pos = torch.tensor(slots)
        self.kv_inp, self.kv_tgt, _ = self.encode(
            [c.kv(g, c.n_eval_kv, [j % c.n_dicts for j in range(c.n_eval_kv)]) for c, g in zip(self.cfgs, g_kv)],
            self.T["kv"], lm=False)
        self.rt_inp, self.rt_tgt, _ = self.encode(
            [sample_corpus(g, c.n_retain, c.docs_max, c.facts_max, (c.digits_min, c.digits_max), c.ask)
             for c, g in zip(self.cfgs, g_rt)], self.T["retain"], lm=True)
        if c0.n_train:                                                            # the fixed training sets
            self.train_inp, self.train_tgt, _ = self.encode(
                [c.kv(g, c.n_train) for c, g in zip(self.cfgs, generators(self.seeds, "train_set"))],
                self.T["kv"], lm=False)
        return model

    def batch(self, step):
        c0 = self.cfgs[0]
        if not c0.n_train:
            inp, tgt, _ = self.encode([c.kv(g, c.batch_size) for c, g in zip(self.cfgs, self.gens)], self.T["kv"],
                                      lm=False)
            return self.train_batch(inp, tgt)
        idx = torch.stack([self.epoch_rows(seed, step) for seed in self.seeds]).to(self.train_inp.device)   # (E, B)
        take = lambda t: t.gather(1, idx[..., None].expand(-1, -1, t.shape[-1]))                            # noqa: E731
        return self.train_batch(take(self.train_inp), take(self.train_tgt))

    def epoch_rows(self, seed: int, step: int) -> torch.Tensor:
        """Rows of the fixed training set at `step`: sample k = step·B + b is row perm_{k // n}[k mod n], with a
        permutation per epoch drawn from (seed, epoch) — a pure function of the step."""
        c0 = self.cfgs[0]
        n, out = c0.n_train, []
        for k in range(step * c0.batch_size, (step + 1) * c0.batch_size):
            perm = torch.randperm(n, generator=member_generator(seed, f"epoch{k // n}"))
            out.append(perm[k % n])
        return torch.stack(out)

    @torch.no_grad()
    def evaluate(self, model):
        c0, chunk = self.cfgs[0], self.cfgs[0].batch_size
        (md_exact, _, _, _), (_, md_ce, _, _) = score(model, self.md_inp, [self.md_val, self.md_tgt], self.model_cfg,
                                                      self.V, self.dtype, chunk)
        ((kv_exact, kv_ce, _, _),) = score(model, self.kv_inp, [self.kv_tgt], self.model_cfg, self.V, self.dtype, chunk)
        ((_, rt_ce, _, rt_n),) = score(model, self.rt_inp, [self.rt_tgt], self.model_cfg, self.V, self.dtype, chunk)
        out = {"mdqa/mean": md_exact.mean(1), "mdqa/ce": md_ce.mean(1)}
        pos = self.md_pos.to(md_exact.device)
        for i, key in enumerate(pos_keys(c0.mdqa_docs, "mdqa/pos")):
            out[key] = md_exact[:, pos == i].mean(1)
        out |= {"kv/acc": kv_exact.mean(1), "kv/ce": kv_ce.mean(1), "val/ce": kv_ce.mean(1),
                "retain/lm_ce": token_mean(rt_ce, rt_n)}
        if self.before is None:              # step 0: every adapter starts at its base
            self.before = {f"before/{k}": v.clone() for k, v in out.items() if k.startswith(BEFORE)}
        out |= self.before
        if c0.target_acc > 0:                # the practitioner's target: "the smallest rank that reaches it"
            out["fit/success"] = (out["kv/acc"] >= c0.target_acc).to(out["kv/acc"])
        return {k: v.to(self.dtype) for k, v in out.items()}
