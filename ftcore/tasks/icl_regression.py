"""`icl_regression`: in-context regression of Garg et al. 2022 ("What Can Transformers Learn In-Context?",
papers.md §0.1; code dtsip/in-context-learning `src/train.py`, `src/eval.py`), packed over members.

Each training step draws, per member, a fresh batch of B prompts from the function class (`task.function`,
samplers in `icl_functions`): prompt p has its own f_p and K points x_i ~ N(0, I_d), tokens interleaved as
x_1, ỹ_1, …, x_K, ỹ_K (`interleave`). The model maps (E, B, 2K, d) -> (E, B, 2K, 1); the prediction of y_i is
read at the x_i token (even positions). Training loss = MSE over the K positions, averaged over prompts.

Curriculum (Garg `src/curriculum.py`): at training step s the active dimension is
    min(dims_start + dims_inc · ⌊s / dims_interval⌋, dim)   (coordinates past it are 0)
and the number of points min(points_start + points_inc · ⌊s / points_interval⌋, n_points): exactly what
`Curriculum` holds after s calls to `update()`, computed from s alone (so a member sees the same curriculum
alone or in any pack). An interval of 0 switches that variable's curriculum off (full dim / n_points always);
that is the default, so small configs validate as they are — Garg's schedule is start 5 / 11, inc 1 / 2,
interval 2000 / 2000 (the start and inc defaults are his; set the intervals to turn it on).

Evaluation: a fixed set of `n_eval` prompts per member (full d, K points, stream "eval"). Metrics:
    nse/model/kNN          normalised squared error (pred − y)² / error_normalizer(function, d) at position k
    nse/model/mean         its mean over positions
    nse/{least_squares,knn,averaging}/kNN, …/mean   the classical baselines (`icl_baselines`) on the same
                           prompts, computed once in build_base and returned unchanged every time
    nse/lasso/kNN, lasso/alpha   sparse_linear only: Lasso (`icl_baselines.lasso`), the baseline of Yang et al.
                           2024 Fig. 3 / Garg Fig. 5. Its α is set by a stated rule, not on the evaluation
                           prompts: the α of LASSO_ALPHAS with the lowest mean nse (over positions)
                           on `n_eval` held-out prompts of the same prior (`lasso_alpha`: a fixed generator no member uses)
    nse/model_b/kNN        looped model with model.eval_loops = b' > b = model.n_loops only: the prediction after
                           b iterations (the trained loop count), read from the same forward whose last
                           iteration b' gives nse/model (Yang et al. §4: the looped model evaluated past b)
    val/mse                the unnormalised MSE over positions and prompts (the training loss on the eval set)
kNN is k zero-padded to 2 digits (3 when K > 100). Members differ by seed only (`per_member = ()`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ftcore.fields import check
from ftcore.losses import weighted_mse
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks.icl_baselines import BASELINES
from ftcore.tasks.icl_functions import (
    FUNCTION_CLASSES,
    error_normalizer,
    get_function_class,
    interleave,
)
from ftcore.tasks.sequence import SequenceTask

BASELINE_NAMES = ("least_squares", "knn", "averaging")
LASSO_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1)     # the grid the α rule picks from (module docstring)
LASSO_TUNE_SEED = 20240506                   # the α rule's held-out prompts (no member's stream)


@dataclass
class IclRegressionConfig:
    name: str = "icl_regression"
    function: str = "linear"
    dim: int = 20               # d
    n_points: int = 41          # K (the curriculum's end)
    batch_size: int = 64        # B prompts per training step
    n_eval: int = 256           # evaluation prompts per member
    dims_start: int = 5
    dims_inc: int = 1
    dims_interval: int = 0      # 0 = no curriculum on the dimension (Garg: 2000)
    points_start: int = 11
    points_inc: int = 2
    points_interval: int = 0    # 0 = no curriculum on the number of points (Garg: 2000)
    sparsity: int = 3           # sparse_linear
    noise_std: float = 0.1      # noisy_linear
    hidden_size: int = 100      # relu_2nn
    tree_depth: int = 4         # decision_tree

    per_member = ()             # members of a pack differ by seed only

    def __post_init__(self):
        check(self.function in FUNCTION_CLASSES, "task.function", f"one of {', '.join(FUNCTION_CLASSES)}",
              self.function)
        check(self.dim >= 1, "task.dim", ">= 1", self.dim)
        check(self.n_points >= 1, "task.n_points", ">= 1", self.n_points)
        check(self.batch_size >= 1, "task.batch_size", ">= 1", self.batch_size)
        check(self.n_eval >= 1, "task.n_eval", ">= 1", self.n_eval)
        for var, end in (("dims", self.dim), ("points", self.n_points)):
            start, inc, interval = (getattr(self, f"{var}_{f}") for f in ("start", "inc", "interval"))
            check(interval >= 0, f"task.{var}_interval", ">= 0 (0 = no curriculum)", interval)
            if interval > 0:
                check(1 <= start <= end, f"task.{var}_start", f"in 1..{end} (the curriculum's end)", start)
                check(inc >= 0, f"task.{var}_inc", ">= 0", inc)
        d_min = self.dims_start if self.dims_interval > 0 else self.dim
        if self.function == "sparse_linear":
            check(1 <= self.sparsity <= d_min, "task.sparsity", f"in 1..{d_min} (the smallest active dim)",
                  self.sparsity)
        check(self.noise_std >= 0, "task.noise_std", ">= 0", self.noise_std)
        check(self.hidden_size >= 1, "task.hidden_size", ">= 1", self.hidden_size)
        check(self.tree_depth >= 1, "task.tree_depth", ">= 1", self.tree_depth)


def curriculum_at(cfg: IclRegressionConfig, step: int) -> tuple[int, int]:
    """(n_dims_truncated, n_points) at training step `step`: a pure function of the step (Garg's Curriculum
    after `step` updates)."""
    def value(start, inc, interval, end):
        return end if interval == 0 else min(start + inc * (step // interval), end)
    return (value(cfg.dims_start, cfg.dims_inc, cfg.dims_interval, cfg.dim),
            value(cfg.points_start, cfg.points_inc, cfg.points_interval, cfg.n_points))


def sample_prompts(cfg: IclRegressionConfig, gen: torch.Generator, n_prompts: int, n_points: int,
                   n_dims_truncated: int | None):
    """xs (P, K, d), ys (P, K) of the configured function class."""
    kw = {"sparse_linear": {"sparsity": cfg.sparsity}, "noisy_linear": {"noise_std": cfg.noise_std},
          "relu_2nn": {"hidden_layer_size": cfg.hidden_size}, "decision_tree": {"depth": cfg.tree_depth}}
    fn = get_function_class(cfg.function)
    return fn(gen, n_prompts, n_points, cfg.dim, n_dims_truncated, **kw.get(cfg.function, {}))


def position_metrics(curves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{who: per-position values (E, K)} -> `nse/<who>/kNN` (E,) for every k and `nse/<who>/mean`."""
    out = {}
    for who, nse in curves.items():
        for k, key in enumerate(position_keys(f"nse/{who}", nse.shape[-1])):
            out[key] = nse[:, k]
        out[f"nse/{who}/mean"] = nse.mean(-1)
    return out


def position_keys(prefix: str, K: int) -> list[str]:
    width = max(2, len(str(K - 1)))
    return [f"{prefix}/k{k:0{width}d}" for k in range(K)]


@TASKS.register("icl_regression")
class IclRegression(SequenceTask):
    Config = IclRegressionConfig
    per_member = IclRegressionConfig.per_member

    @staticmethod
    def io_dims(cfg, model_cfg):
        return cfg.dim, 1

    @staticmethod
    def seq_len(cfg):
        return 2 * cfg.n_points, "2 * task.n_points (interleaved x, y tokens)"

    def build_base(self):
        c0 = self.cfgs[0]
        model = build_model(self.model_cfg, c0.dim, 1, generators(self.seeds, "base"))
        xs, ys = [], []
        for cfg, g in zip(self.cfgs, generators(self.seeds, "eval")):
            x, y = sample_prompts(cfg, g, cfg.n_eval, cfg.n_points, None)
            xs.append(x)
            ys.append(y)
        self.eval_xs, self.eval_ys = torch.stack(xs), torch.stack(ys)           # (E, P, K, d), (E, P, K)
        self.normalizer = float(error_normalizer(c0.function, c0.dim, c0.sparsity))
        self.baseline_nse = {}                                                 # name -> (E, K)
        for name in BASELINE_NAMES:
            errs = [(BASELINES[name](x, y) - y).pow(2).mean(0) / self.normalizer for x, y in zip(xs, ys)]
            self.baseline_nse[name] = torch.stack(errs)
        self.lasso_alpha = None
        if c0.function == "sparse_linear":
            alphas = [lasso_alpha(cfg) for cfg in self.cfgs]
            self.lasso_alpha = torch.tensor(alphas)                            # (E,)
            errs = [(BASELINES["lasso"](x, y, alpha=a) - y).pow(2).mean(0) / self.normalizer
                    for x, y, a in zip(xs, ys, alphas)]
            self.baseline_nse["lasso"] = torch.stack(errs)
        self.eval_tokens = torch.stack([interleave(x, y) for x, y in zip(xs, ys)])   # (E, P, 2K, d)
        return model

    def to(self, dtype, device=None):
        super().to(dtype, device)
        self.baseline_nse = {k: v.to(self.device, dtype) for k, v in self.baseline_nse.items()}
        if self.lasso_alpha is not None:
            self.lasso_alpha = self.lasso_alpha.to(self.device, dtype)
        return self

    def batch(self, step):
        xs, ys = [], []
        for cfg, g in zip(self.cfgs, self.gens):
            n_dims, n_points = curriculum_at(cfg, step)
            x, y = sample_prompts(cfg, g, cfg.batch_size, n_points, n_dims)
            xs.append(interleave(x, y))
            ys.append(y)
        x, y = torch.stack(xs), torch.stack(ys)                                  # (E, B, 2K, d), (E, B, K)
        w = torch.full(y.shape[:2], 1.0 / y.shape[1])                            # (E, B)
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype), w.to(self.device, self.dtype)

    @staticmethod
    def loss(pred, y, w):
        """pred (E, B, 2K, 1) read at the x tokens vs y (E, B, K): Σ_b w_b · mean_k (ŷ_k − y_k)²  -> (E,)."""
        return weighted_mse(pred[..., ::2, 0], y, w)

    @torch.no_grad()
    def evaluate(self, model):
        b, b_eval = loop_counts(self.model_cfg)
        extra = {}
        if b_eval > b:              # one forward of b' iterations, read out after b and after b'
            preds = model(self.eval_tokens, n_loops=b_eval, keep_last=b_eval - b + 1)
            pred = preds[-1][..., ::2, 0]                                        # (E, P, K) after b'
            extra["model_b"] = (preds[0][..., ::2, 0] - self.eval_ys).pow(2).mean(1) / self.normalizer
        else:
            pred = model(self.eval_tokens)[..., ::2, 0]                          # (E, P, K)
        sq = (pred - self.eval_ys).pow(2)                                        # (E, P, K)
        out = position_metrics({"model": sq.mean(1) / self.normalizer, **extra, **self.baseline_nse})
        out["val/mse"] = sq.mean((1, 2))
        if self.lasso_alpha is not None:
            out["lasso/alpha"] = self.lasso_alpha
        return out


def loop_counts(model_cfg) -> tuple[int, int]:
    """(b, b'): the looped model's trained and evaluated iteration counts; (0, 0) for other models."""
    b = int(getattr(model_cfg, "n_loops", 0) or 0)
    return b, int(getattr(model_cfg, "eval_loops", 0) or b)


def lasso_alpha(cfg: IclRegressionConfig, alphas=LASSO_ALPHAS) -> float:
    """The α rule of the Lasso baseline: the α of `alphas` with the lowest mean nse over positions on
    `cfg.n_eval` held-out prompts of the task's prior, drawn from a fixed generator (LASSO_TUNE_SEED) that no
    member's data uses — so α depends on the task's configuration only (computed once per configuration)."""
    key = (cfg.function, cfg.dim, cfg.n_points, cfg.sparsity, cfg.n_eval, tuple(alphas))
    if key not in _ALPHA_CACHE:
        gen = torch.Generator().manual_seed(LASSO_TUNE_SEED)
        x, y = sample_prompts(cfg, gen, cfg.n_eval, cfg.n_points, None)
        errs = [float((BASELINES["lasso"](x, y, alpha=a) - y).pow(2).mean()) for a in alphas]
        _ALPHA_CACHE[key] = float(alphas[min(range(len(alphas)), key=errs.__getitem__)])
    return _ALPHA_CACHE[key]


_ALPHA_CACHE: dict[tuple, float] = {}
