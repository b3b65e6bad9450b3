"""`criterion_clustering`: an ANALOGUE of image clustering conditioned on a text criterion (IC|TC: Kwon, Park, Kim,
Cho, Ryu, Lee, "Image Clustering Conditioned on Text Criteria", ICLR 2024; papers.md §9; code sehyunkwon/ICTC, a
prompt pipeline over a vision-language model and an LLM). The paper: a user names a criterion (TC) and K; (1) a
VLM describes each image with respect to the TC, (2) an LLM turns the descriptions into raw labels and merges them
into K cluster names, (3) the LLM assigns each image to one name. Criterion-blind baselines (k-means on generic
features) cluster by whatever their features emphasise. Here everything is small and trained from scratch:

Images (ftcore.tasks.images): 16×16 RGB scenes of one object whose five attributes all vary at once; with
`n_clusters` = K every attribute a uses its first K_a = min(K, n_a) values (shape 6, colour 8, texture 3, size 3,
position 5 values in all), so a criterion c has K_c clusters in its ground truth.

Captioner (the model, `mlp`): input x = [pixels (3·S·S); prompt one-hot (C + 1)], the prompt being one of the C
criteria or "describe everything"; output logits over the caption vocabulary V (every attribute value's name,
25 words). Training text: the generator's caption of the scene under the prompt — `images.caption(scene, i, (c,))`
("a red object") under criterion c, the full caption ("a small red striped circle at the left") under "describe
everything" — reduced to its vocabulary words; target q = uniform over those words (one word under a criterion,
five under "describe everything"); loss Σ_b w_b · (−Σ_v q_bv log softmax(ŷ_b)_v). One prompt is drawn per sample,
uniformly, so one model serves every criterion, as the paper's one MLLM does with a prompt. Fresh scenes every
step (stream "data"); held-out evaluation scenes (stream "eval", `n_eval` of them) are drawn once.

Clustering under criterion c (the paper's steps 2–3, without ground truth): each image's raw label is the
captioner's emitted word w_i = argmax_v ŷ_iv; the cluster names are the K_c most frequent raw labels (ties broken
by mean softmax mass, then vocabulary order); each image goes to the name with the highest logit among those K_c.
Scores against the criterion's truth: Hungarian accuracy and NMI (ftcore.tasks.cluster_metrics).

Baselines, criterion-blind (k-means with K_c clusters, scikit-learn, seed = the member's seed):
    base_pixels   on the raw pixels (3·S·S), computed once per member
    base_encoder  on the captioner's own last hidden layer under the "describe everything" prompt: a generic
                  encoder trained to describe every attribute (it must encode all five, linearly), the analogue
                  of the paper's generic-feature baselines; it is the same network, so it has the same capacity
                  at every width — the comparison isolates the criterion, not the training budget

Metrics (each (E,)), per criterion c:
    acc/<c>, nmi/<c>                        ours
    base_pixels/acc/<c>, base_pixels/nmi/<c>, base_encoder/acc/<c>, base_encoder/nmi/<c>
    caption_acc/<c>                         P[w_i = the true word] (the captioner's supervised accuracy)
    on_criterion/<c>                        share of the K_c cluster names that are values of c
    k/<c>                                   K_c
and acc/mean, base_pixels/acc/mean, base_encoder/acc/mean over the criteria; val/ce (the loss on the evaluation
scenes under every criterion prompt). Members may differ in `n_clusters` (per_member).

With `model.name: hf_vlm` (ftcore/models/hf_vlm.py) the captioner is a pretrained Hugging Face vision-language model
given by path — the paper's setting: the same inputs x, and its logits are the VLM's log-probabilities of each
vocabulary word's first token as the answer to QUESTIONS[p] about the image (upsampled from S×S by its processor).
`train.steps: 0` is the paper's zero-shot use; a LoRA adapter (`adapter.targets` on the language model's
projections) fine-tunes it on the same captions with the same loss (a softmax over the V words). base_encoder is then
k-means on the VLM's pooled image tokens (its vision tower + projector: criterion-blind, as a generic encoder is).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks import images
from ftcore.tasks.base import Task
from ftcore.tasks.cluster_metrics import kmeans, scores

VOCAB = images.vocabulary()
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
MAX_K = max(len(v) for v in images.ATTRIBUTES.values())
HF = "hf_vlm"


def questions(criteria: list[str]) -> list[str]:
    """The prompts as text for a VLM: one question per criterion, then "describe everything"."""
    return [f"What is the {c} of the object? Answer with one word." for c in criteria] + \
        ["Describe the object. Answer with one word."]


def vlm_corpus() -> tuple[str, ...]:
    """Lines for a tiny test VLM's tokenizer (ftcore.models.hf_tiny.save_tiny_vlm): the words and every question."""
    return (*VOCAB, *questions(list(images.ATTRIBUTES)))


@dataclass
class CriterionClusteringConfig:
    name: str = "criterion_clustering"
    criteria: list[str] = field(default_factory=lambda: list(images.ATTRIBUTES))
    n_clusters: int = 3         # K: every attribute uses its first min(K, n_a) values
    side: int = 16              # S, image side in pixels
    jitter: float = 1.0         # centre jitter in pixels
    noise: float = 0.02         # σ of the pixel noise
    batch_size: int = 64        # B scenes per training step
    n_eval: int = 512           # held-out scenes per member
    kmeans_init: int = 3        # k-means restarts of the baselines

    per_member = ("n_clusters",)

    def __post_init__(self):
        bad = [c for c in self.criteria if c not in images.ATTRIBUTES]
        check(len(self.criteria) >= 1 and not bad and len(set(self.criteria)) == len(self.criteria),
              "task.criteria", f"a non-empty list of distinct attributes from {', '.join(images.ATTRIBUTES)}",
              list(self.criteria))
        check(2 <= self.n_clusters <= MAX_K, "task.n_clusters", f"in 2..{MAX_K}", self.n_clusters)
        check(self.side >= 8, "task.side", ">= 8", self.side)
        check(self.jitter >= 0, "task.jitter", ">= 0", self.jitter)
        check(self.noise >= 0, "task.noise", ">= 0", self.noise)
        check(self.batch_size >= 1, "task.batch_size", ">= 1", self.batch_size)
        check(self.n_eval >= 2 * MAX_K, "task.n_eval", f">= {2 * MAX_K}", self.n_eval)
        check(self.kmeans_init >= 1, "task.kmeans_init", ">= 1", self.kmeans_init)


def n_values(cfg) -> dict[str, int]:
    """{attribute: K_a = min(K, n_a)}: the values every attribute uses at K = cfg.n_clusters."""
    return {a: min(cfg.n_clusters, len(v)) for a, v in images.ATTRIBUTES.items()}


def caption_word_ids(scenes: dict[str, torch.Tensor], prompts: torch.Tensor, criteria: list[str]) -> list[list[int]]:
    """The training text: per scene i, the vocabulary ids of the words of its caption under prompt p_i (criterion
    index, or len(criteria) = describe everything), parsed from the generator's caption string."""
    out = []
    for i, p in enumerate(prompts.tolist()):
        attrs = None if p == len(criteria) else (criteria[p],)
        out.append([WORD_ID[w] for w in images.caption(scenes, i, attrs).split() if w in WORD_ID])
    return out


def targets(word_ids: list[list[int]]) -> torch.Tensor:
    """Word ids per row -> q (B, V): uniform over each row's caption words."""
    q = torch.zeros(len(word_ids), len(VOCAB))
    for i, ids in enumerate(word_ids):
        q[i, ids] = 1.0 / len(ids)
    return q


def prompt_inputs(pixels: torch.Tensor, prompts: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """pixels (..., N, 3, S, S), prompts (..., N) -> x (..., N, 3·S·S + n_prompts)."""
    flat = pixels.flatten(-3)
    return torch.cat([flat, F.one_hot(prompts, n_prompts).to(flat)], -1)


def cluster_by_words(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """logits (N, V) -> (cluster id = vocabulary id of its name (N,), the K names (k,)): the K most frequent
    emitted words (ties: higher mean softmax mass, then lower vocabulary id), each image to its highest-logit name."""
    emitted = logits.argmax(1)
    counts = np.bincount(emitted, minlength=logits.shape[1])
    z = np.exp(logits - logits.max(1, keepdims=True))
    mass = (z / z.sum(1, keepdims=True)).mean(0)
    order = np.lexsort((np.arange(len(counts)), -mass, -counts))       # last key is primary
    names = order[:k]
    return names[logits[:, names].argmax(1)], names


def last_hidden(model, x: torch.Tensor) -> torch.Tensor:
    """The input of the last layer (E, N, D) of an mlp base, through the (adapted) model's own layers."""
    base = getattr(model, "base", model)
    linear, seen = model.linear, {}

    def record(l, h):
        if l == base.depth - 1:
            seen["h"] = h
        return linear(l, h)
    base(x, linear=record)
    return seen["h"]


@TASKS.register("criterion_clustering")
class CriterionClustering(Task):
    Config = CriterionClusteringConfig
    per_member = CriterionClusteringConfig.per_member
    models = ("mlp", HF)

    @staticmethod
    def io_dims(cfg, model_cfg):
        return 3 * cfg.side * cfg.side + len(cfg.criteria) + 1, len(VOCAB)

    @staticmethod
    def check_compatible(cfg, model_cfg, adapter_cfg, train_cfg):
        if model_cfg.name == HF:
            check(adapter_cfg.name != "lora" or bool(adapter_cfg.targets), "adapter.targets",
                  "module-name patterns of the VLM's language model (e.g. [language_model.layers.0.self_attn.q_proj] "
                  "or [o_proj, down_proj] for a LLaVA/Llama)", list(getattr(adapter_cfg, "targets", [])))
            from ftcore.models.hf_vlm import check_words
            check_words(model_cfg.path, model_cfg.download, VOCAB)
            return
        check(model_cfg.depth >= 2, "model.depth", ">= 2 (the encoder baseline reads the last hidden layer)",
              model_cfg.depth)

    @classmethod
    def rows(cls, cfg):
        return cfg.batch_size

    def build_base(self):
        c0 = self.cfgs[0]
        self.criteria, self.n_prompts = list(c0.criteria), len(c0.criteria) + 1
        self.gens = generators(self.seeds, "data")
        pix, truth, base_pixels = [], [], []
        for cfg, g, seed in zip(self.cfgs, generators(self.seeds, "eval"), self.seeds):
            scenes = images.sample_scenes(g, cfg.n_eval, n_values(cfg))
            img = images.render(scenes, g, cfg.side, cfg.jitter, cfg.noise)                 # (N, 3, S, S)
            pix.append(img)
            truth.append({c: scenes[c].numpy() for c in self.criteria})
            base_pixels.append(self._baseline(img.flatten(1).numpy(), truth[-1], cfg, seed))
        self.eval_pixels = torch.stack(pix)                                                   # (E, N, 3, S, S)
        self.truth, self.base_pixels = truth, base_pixels
        in_dim, out_dim = self.io_dims(c0, self.model_cfg)
        model = build_model(self.model_cfg, in_dim, out_dim, generators(self.seeds, "base"))
        if self.model_cfg.name == HF:
            model.set_prompts(questions(self.criteria), list(VOCAB), c0.side)
        return model

    def _baseline(self, features: np.ndarray, truth: dict, cfg, seed: int) -> dict[str, tuple[float, float]]:
        """k-means (K_c clusters, one run per distinct K_c) on criterion-blind features -> {c: (acc, nmi)}."""
        ks = {c: n_values(cfg)[c] for c in self.criteria}
        ids = {k: kmeans(features, k, seed, cfg.kmeans_init) for k in sorted(set(ks.values()))}
        return {c: scores(ids[ks[c]], truth[c]) for c in self.criteria}

    def batch(self, step):
        xs, ys = [], []
        for cfg, g in zip(self.cfgs, self.gens):
            scenes = images.sample_scenes(g, cfg.batch_size, n_values(cfg))
            img = images.render(scenes, g, cfg.side, cfg.jitter, cfg.noise)                 # (B, 3, S, S)
            prompts = torch.randint(0, self.n_prompts, (cfg.batch_size,), generator=g)       # (B,)
            xs.append(prompt_inputs(img, prompts, self.n_prompts))
            ys.append(targets(caption_word_ids(scenes, prompts, self.criteria)))
        x, y = torch.stack(xs), torch.stack(ys)                                               # (E, B, in), (E, B, V)
        w = torch.full(y.shape[:2], 1.0 / y.shape[1])                                         # (E, B)
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype), w.to(self.device, self.dtype)

    @staticmethod
    def loss(pred, y, w):
        """pred (E, B, V) logits, y (E, B, V) caption-word distributions -> Σ_b w_b CE_b  (E,)."""
        return (w * -(y * F.log_softmax(pred, -1)).sum(-1)).sum(-1)

    def _prompted(self, p: int) -> torch.Tensor:
        prompts = torch.full(self.eval_pixels.shape[:2], p, dtype=torch.long, device=self.eval_pixels.device)
        return prompt_inputs(self.eval_pixels, prompts, self.n_prompts)                       # (E, N, in)

    def _encoder_features(self, model) -> torch.Tensor:
        """(E, N, D): the generic encoder's features of the evaluation images (mlp: last hidden layer under
        "describe everything"; hf_vlm: the pooled image tokens)."""
        if self.model_cfg.name == HF:
            E, N = self.eval_pixels.shape[:2]
            return getattr(model, "base", model).image_features(self.eval_pixels.flatten(0, 1)).reshape(E, N, -1)
        return last_hidden(model, self._prompted(len(self.criteria)))

    @torch.no_grad()
    def evaluate(self, model):
        out: dict[str, list[float]] = {}
        put = lambda k, v: out.setdefault(k, []).append(float(v))            # noqa: E731
        feats = self._encoder_features(model).double().cpu().numpy()                        # (E, N, D)
        base = {"base_pixels": self.base_pixels,
                "base_encoder": [self._baseline(feats[e], self.truth[e], cfg, seed)
                                 for e, (cfg, seed) in enumerate(zip(self.cfgs, self.seeds))]}
        ces = []
        for j, c in enumerate(self.criteria):
            logits = model(self._prompted(j))                                                # (E, N, V)
            true_ids = torch.stack([torch.as_tensor(t[c]) for t in self.truth]).to(logits.device)
            word = true_ids + WORD_ID[images.ATTRIBUTES[c][0]]                               # (E, N) true word id
            ces.append(F.cross_entropy(logits.transpose(1, 2).float(), word, reduction="none").mean(-1).cpu())
            lg, wd = logits.double().cpu().numpy(), word.cpu().numpy()
            for e, cfg in enumerate(self.cfgs):
                k = n_values(cfg)[c]
                ids, names = cluster_by_words(lg[e], k)
                acc, nmi_ = scores(ids, self.truth[e][c])
                put(f"acc/{c}", acc)
                put(f"nmi/{c}", nmi_)
                put(f"caption_acc/{c}", (lg[e].argmax(1) == wd[e]).mean())
                put(f"on_criterion/{c}", np.isin(names, [WORD_ID[w] for w in images.ATTRIBUTES[c]]).mean())
                put(f"k/{c}", k)
                for kind, res in base.items():
                    put(f"{kind}/acc/{c}", res[e][c][0])
                    put(f"{kind}/nmi/{c}", res[e][c][1])
        metrics = {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}
        for kind in ("acc", "base_pixels/acc", "base_encoder/acc"):
            metrics[f"{kind}/mean"] = torch.stack([metrics[f"{kind}/{c}"] for c in self.criteria]).mean(0)
        metrics["val/ce"] = torch.stack(ces).mean(0).float()
        return metrics
