"""`t2i_icl`: an ANALOGUE of text-to-image in-context learning — CoBSAT (Zeng, Kang, Chen, Koo, Lee 2024, "Can
MLLMs perform text-to-image in-context learning?"; papers.md §8; UW-Madison-Lee-Lab/CoBSAT), small enough to train
a sequence model from scratch on CPU. No MLLM is involved: the images are `ftcore.tasks.images` renders.

A prompt holds k demonstrations (x_j, y_j) that share a latent value θ of one attribute (`task.latent`), then a
query text x_q; the model must emit y_q = render(named = x_q, latent = θ). `named: shape, latent: colour` is
CoBSAT's *attribute inference* (the text names the object, the attribute is latent); `named: colour, latent:
shape` its *object inference*. Every other attribute is fixed (solid, large, centred; circle / white when not
named or latent) so that the scoring classifier can be checked (`attribute_classifier`).

Tokens (one per text, one per image; V = |images.vocabulary()|, D = 3·S², 4 role flags):

    token = [ words (V): multi-hot of the names the text says | image (D): flattened pixels | text, image, query,
              cot flags ]                                                        (E, B, T, V + D + 4)
    layout  [pad … pad, x_1, y_1, …, x_k, y_k, x_q (, c)]     T = 2K + 1 (+ 1 with cot)   K = task.k_max

Demonstrations fill the last 2k slots before the query (left padding with zero tokens), so the query sits at a
fixed position for every k; training draws k ~ U{0, …, K} per prompt. The model's output (E, B, T, D + V):

    image   ŷ_q = pred[..., T−1, :D]              loss  mean_d (ŷ_q,d − y_q,d)²            (regression head)
    cot     logits = pred[..., T−2, D:]  (at x_q)   loss  + cot_weight · CE(logits, word(θ))
            c = [one-hot word | 0 | cot flag]: the true θ word in training (teacher forcing), the model's own
            argmax at evaluation (two forwards: the first reads the word, the second the image at c)

`task.mode`: `icl` (the task above), `caption` (plain text-to-image data: every scene independent, every text
names both attributes — the pretraining base of the fine-tuning remedy, same token layout so `model.from`
carries over), `given` (icl prompts whose query also names θ: the upper-bound control).

Evaluation (a fixed set of `n_eval` prompts with K demonstrations per member, stream "eval"; prompts at k < K are
the same prompts with their first K − k demonstrations blanked, so every k is scored on the same queries):

    t2i/acc/kNN      the classifier reads both the query's named value and θ in clamp(ŷ_q, 0, 1)
    t2i/named/kNN    … the named value;  t2i/latent/kNN … θ          (k = 0: θ unknowable, the chance control)
    cot/acc/kNN      (cot) the emitted word is θ's
    t2i/acc/mean     mean of t2i/acc over k = 1 … K (also val/acc);  val/mse  the image MSE at k = K
    t2i/chance       1 / n_latent;  val/acc/chance  1 / (n_named · n_latent) (both attributes guessed)
    classifier/acc   the checker's lowest held-out accuracy (>= its bar)
    before/<metric>  t2i/acc, named, latent and cot metrics at the first evaluation (step 0: a fine-tuned
                     base before any update, its adapters at zero), repeated at every later one
kNN is k zero-padded to 2 digits. Members differ by seed only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks.attribute_classifier import classifier
from ftcore.tasks.images import ATTRIBUTES, render, sample_scenes, vocabulary
from ftcore.tasks.sequence import SequenceTask

MODES = ("icl", "caption", "given")
SCORED = ("shape", "colour", "texture")          # attributes the checked classifier can score
FIXED = {"shape": 0, "colour": 6, "texture": 0, "size": 2, "position": 0}   # circle, white, solid, large, centre
N_FLAGS = 4                                       # text, image, query, cot
TEXT, IMAGE, QUERY, COT = range(N_FLAGS)
BEFORE = ("t2i/acc/", "t2i/named/", "t2i/latent/", "cot/acc/")


@dataclass
class T2iIclConfig:
    name: str = "t2i_icl"
    mode: str = "icl"            # icl | caption (pretraining data) | given (θ named in the query: upper bound)
    named: str = "shape"         # the attribute the text names
    latent: str = "colour"       # the attribute shared by the demonstrations, inferred in context
    n_named: int = 4             # values used of each (the first n of images.ATTRIBUTES[a])
    n_latent: int = 4
    k_max: int = 8               # K: demonstrations at most (CoBSAT: N ∈ {2, 4, 6, 8})
    side: int = 16               # image side S in pixels
    jitter: float = 1.0          # render's centre jitter (pixels)
    noise: float = 0.02          # render's pixel noise
    cot: bool = False            # emit θ's word first, then the image
    cot_weight: float = 1.0      # weight of the word CE next to the image MSE
    batch_size: int = 32
    n_eval: int = 128            # evaluation prompts per member (scored at every k)

    per_member = ()

    def __post_init__(self):
        check(self.mode in MODES, "task.mode", f"one of {', '.join(MODES)}", self.mode)
        check(self.named in SCORED, "task.named", f"one of {', '.join(SCORED)}", self.named)
        check(self.latent in SCORED and self.latent != self.named, "task.latent",
              f"one of {', '.join(SCORED)}, not task.named", self.latent)
        for a in ("named", "latent"):
            n, total = getattr(self, f"n_{a}"), len(ATTRIBUTES[getattr(self, a)])
            check(2 <= n <= total, f"task.n_{a}", f"in 2..{total} (values of {getattr(self, a)})", n)
        check(self.k_max >= 1, "task.k_max", ">= 1", self.k_max)
        check(self.side >= 8, "task.side", ">= 8", self.side)
        check(self.jitter >= 0, "task.jitter", ">= 0", self.jitter)
        check(self.noise >= 0, "task.noise", ">= 0", self.noise)
        check(self.cot_weight > 0, "task.cot_weight", "> 0", self.cot_weight)
        check(self.batch_size >= 1, "task.batch_size", ">= 1", self.batch_size)
        check(self.n_eval >= 2, "task.n_eval", ">= 2", self.n_eval)

    # -- the scene distribution ---------------------------------------------------------------------------
    def n_values(self) -> dict[str, int]:
        return {self.named: self.n_named, self.latent: self.n_latent}

    def fixed(self) -> dict[str, int]:
        return {a: v for a, v in FIXED.items() if a not in (self.named, self.latent)}

    def dims(self) -> tuple[int, int, int]:
        """(V, D, T): vocabulary size, pixels per image, tokens per prompt."""
        return len(vocabulary()), 3 * self.side ** 2, 2 * self.k_max + 1 + int(self.cot)


def word_index(attribute: str, value: torch.Tensor) -> torch.Tensor:
    """Value indices of `attribute` -> their word's index in images.vocabulary()."""
    offset = sum(len(ATTRIBUTES[a]) for a in list(ATTRIBUTES)[:list(ATTRIBUTES).index(attribute)])
    return value + offset


@dataclass
class Prompts:
    tokens: torch.Tensor         # (P, T, V + D + 4); the cot token carries θ's word (teacher forcing)
    target: torch.Tensor         # (P, D) the query's image
    named: torch.Tensor          # (P,) the query's named value
    latent: torch.Tensor         # (P,) θ (the query's latent value)


def sample_prompts(cfg: T2iIclConfig, gen: torch.Generator, n: int, k: torch.Tensor | int | None = None) -> Prompts:
    """n prompts with k demonstrations each (an (n,) tensor, an int, or None: k ~ U{0..K} per prompt).
    Draw order on gen: k (when None), θ (n,), the (n·(K+1)) scenes (slot K = the query), their renders."""
    K = cfg.k_max
    V, D, T = cfg.dims()
    if k is None:
        k = torch.randint(0, K + 1, (n,), generator=gen)
    k = torch.as_tensor(k).expand(n) if not isinstance(k, torch.Tensor) or k.dim() == 0 else k
    theta = torch.randint(0, cfg.n_latent, (n,), generator=gen)                       # (n,)
    fixed = dict(cfg.fixed())
    if cfg.mode != "caption":                     # the demonstrations and the query share θ
        fixed[cfg.latent] = theta.repeat_interleave(K + 1)
    sc = sample_scenes(gen, n * (K + 1), cfg.n_values(), fixed)
    img = render(sc, gen, cfg.side, cfg.jitter, cfg.noise).reshape(n, K + 1, D)        # (n, K+1, D)
    named = sc[cfg.named].reshape(n, K + 1)
    latent = sc[cfg.latent].reshape(n, K + 1)
    tok = torch.zeros(n, T, V + D + N_FLAGS)
    text, image = tok[:, 0:2 * K + 1:2], tok[:, 1:2 * K:2]                            # views (n, K+1, ·), (n, K, ·)
    text.scatter_(-1, word_index(cfg.named, named)[..., None], 1.0)
    says_latent = torch.zeros(K + 1, dtype=torch.bool)
    says_latent[K] = cfg.mode != "icl"
    says_latent[:K] = cfg.mode == "caption"
    lat_word = torch.nn.functional.one_hot(word_index(cfg.latent, latent), V).float()   # (n, K+1, V)
    text[..., :V] += lat_word * says_latent[None, :, None]
    text[..., V + D + TEXT] = 1.0
    text[:, K, V + D + QUERY] = 1.0
    image[..., V:V + D] = img[:, :K]
    image[..., V + D + IMAGE] = 1.0
    if cfg.cot:
        tok[:, 2 * K + 1, :V] = lat_word[:, K]
        tok[:, 2 * K + 1, V + D + COT] = 1.0
    blank = torch.arange(2 * K)[None] < (2 * (K - k))[:, None]                          # (n, 2K): padding
    tok[:, :2 * K][blank] = 0.0
    return Prompts(tok, img[:, K], named[:, K], latent[:, K])


def truncate(tokens: torch.Tensor, k: int, K: int) -> torch.Tensor:
    """Prompts of K demonstrations (..., T, F) -> the same prompts with only their last k (the rest padding)."""
    out = tokens.clone()
    out[..., :2 * (K - k), :] = 0.0
    return out


@TASKS.register("t2i_icl")
class T2iIcl(SequenceTask):
    Config = T2iIclConfig
    per_member = T2iIclConfig.per_member

    @staticmethod
    def io_dims(cfg, model_cfg):
        V, D, _ = cfg.dims()
        return V + D + N_FLAGS, D + V

    @staticmethod
    def input_words(cfg):
        """Feature v < V is word v of images.vocabulary() (the texts' multi-hot)."""
        return vocabulary()

    @staticmethod
    def seq_len(cfg):
        return cfg.dims()[2], "2 * task.k_max + 1 (+ 1 with task.cot)"

    @staticmethod
    def check_source(cfg, source_task_cfg):
        """A base pretrained on this task (any mode) drew the same attributes at the same size."""
        check(source_task_cfg.name == "t2i_icl", "model.from", "a run of task t2i_icl (e.g. task.mode: caption)",
              source_task_cfg.name)
        for f in ("named", "latent", "side"):
            mine, theirs = getattr(cfg, f), getattr(source_task_cfg, f)
            check(mine == theirs, f"task.{f}", f"the base run's task.{f} = {theirs!r}", mine)

    def build_base(self):
        c0 = self.cfgs[0]
        V, D, _ = c0.dims()
        model = build_model(self.model_cfg, V + D + N_FLAGS, D + V, generators(self.seeds, "base"))
        ps = [sample_prompts(c, g, c.n_eval, c.k_max) for c, g in zip(self.cfgs, generators(self.seeds, "eval"))]
        self.eval_tokens = torch.stack([p.tokens for p in ps])                  # (E, P, T, F)
        if c0.cot:
            self.eval_tokens[..., -1, :V] = 0.0      # θ's word is the model's to emit (generate fills it in)
        self.eval_target = torch.stack([p.target for p in ps])                  # (E, P, D)
        self.eval_named = torch.stack([p.named for p in ps])                    # (E, P)
        self.eval_latent = torch.stack([p.latent for p in ps])
        self.checker = classifier((c0.named, c0.latent), c0.n_values(), c0.fixed(), c0.side, c0.jitter, c0.noise)
        self.before: dict[str, torch.Tensor] | None = None
        return model

    def batch(self, step):
        toks, ys = [], []
        for cfg, g in zip(self.cfgs, self.gens):
            p = sample_prompts(cfg, g, cfg.batch_size)
            toks.append(p.tokens)
            ys.append(torch.cat([p.target, word_index(cfg.latent, p.latent)[:, None].float()], -1))
        x, y = torch.stack(toks), torch.stack(ys)                                # (E, B, T, F), (E, B, D + 1)
        w = torch.full(y.shape[:2], 1.0 / y.shape[1])                            # (E, B)
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype), w.to(self.device, self.dtype)

    def loss(self, pred, y, w):
        """pred (E, B, T, D + V), y (E, B, D + 1) = [target image | θ's word index]:
        Σ_b w_b · [mean_d (ŷ_q,d − y_d)² + cot_weight · CE(word logits at x_q, θ's word)]  -> (E,)."""
        c0 = self.cfgs[0]
        D = y.shape[-1] - 1
        mse = (pred[..., -1, :D] - y[..., :D]).square().mean(-1)                 # (E, B)
        if c0.cot:
            logits = pred[..., -2, D:]                                           # (E, B, V)
            ce = F.cross_entropy(logits.flatten(0, 1), y[..., D].long().flatten(), reduction="none")
            mse = mse + c0.cot_weight * ce.view_as(mse)
        return (w * mse).sum(-1)

    @torch.no_grad()
    def generate(self, model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens (E, P, T, F) -> (images (E, P, D) in [0, 1], the emitted word (E, P) or None without cot).
        With cot the word is the argmax over the whole vocabulary, fed back as the cot token's word."""
        c0 = self.cfgs[0]
        V, D, _ = c0.dims()
        word = None
        if c0.cot:
            logits = model(tokens)[..., -2, D:]                                  # (E, P, V)
            word = logits.argmax(-1)
            tokens = tokens.clone()
            tokens[..., -1, :V] = F.one_hot(word, V).to(tokens)                  # the model's own word, not θ's
        return model(tokens)[..., -1, :D].clamp(0, 1), word

    @torch.no_grad()
    def evaluate(self, model):
        c0 = self.cfgs[0]
        K = c0.k_max
        out, acc_k = {}, []
        theta_word = word_index(c0.latent, self.eval_latent).to(self.device)
        for k in range(K + 1):
            img, word = self.generate(model, truncate(self.eval_tokens, k, K))
            side = c0.side
            got = self.checker.predict(img.float().cpu().reshape(*img.shape[:2], 3, side, side))
            named = (got[c0.named] == self.eval_named.cpu()).float().mean(1)     # (E,)
            latent = (got[c0.latent] == self.eval_latent.cpu()).float().mean(1)
            both = ((got[c0.named] == self.eval_named.cpu()) & (got[c0.latent] == self.eval_latent.cpu()))
            out[f"t2i/acc/k{k:02d}"] = both.float().mean(1)
            out[f"t2i/named/k{k:02d}"], out[f"t2i/latent/k{k:02d}"] = named, latent
            if word is not None:
                out[f"cot/acc/k{k:02d}"] = (word == theta_word).float().mean(1).cpu()
            acc_k.append(out[f"t2i/acc/k{k:02d}"])
            if k == K:
                out["val/mse"] = (img - self.eval_target).square().mean((1, 2)).cpu()
        out["t2i/acc/mean"] = torch.stack(acc_k[1:]).mean(0)
        out["val/acc"] = out["t2i/acc/mean"]
        out["t2i/chance"] = torch.full((self.E,), 1.0 / c0.n_latent)
        out["val/acc/chance"] = torch.full((self.E,), 1.0 / (c0.n_latent * c0.n_named))
        out["classifier/acc"] = torch.full((self.E,), min(self.checker.accuracy.values()))
        if self.before is None:              # step 0: every adapter starts at its base
            self.before = {f"before/{k}": v.clone() for k, v in out.items() if k.startswith(BEFORE)}
        out |= self.before
        return {k: v.to(self.device, self.dtype) for k, v in out.items()}
