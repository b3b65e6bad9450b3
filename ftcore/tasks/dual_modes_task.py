"""`dual_modes`: a sequence model trained from scratch on the mixture-of-tasks prior of Lin & Lee ("Dual
Operating Modes of In-Context Learning", ICML 2024; papers.md §7, code `TransformerExperiment/setting.py`,
`mydataloader.py`, `NumericalComputation/Figure6/EarlyAscent_Preprocess.py`), scored against the closed-form
Bayes predictor (`dual_modes.bayes_prefix_predict`) on the same evaluation prompts.

Training (per step, per member): B prompts of K points from the prior (`dual_modes.sample_prompts`): a group
β ~ π, a task μ ~ N(μ_β, σ_μ²I), w ~ N(w_β, σ_w²I), x_i ~ N(μ, σ²I), y_i = wᵀx_i + ε, ε ~ N(0, τ²) (noisy
labels, as the reference trains). Tokens are Garg's interleaving x_1, ỹ_1, …, x_K, ỹ_K (`interleave`); the
prediction of y_k is read at the x_k token; loss = MSE over the K positions (as in `icl_regression`), against
the noisy y_k (`target: noisy`, the reference) or the noiseless z_k = wᵀx_k (`target: noiseless`: the context
still shows noisy labels; E[y_k | prompt] = E[z_k | prompt], so the minimiser — the Bayes predictor — is the
same and the gradient noise is smaller, which matters for CPU-sized budgets).

Evaluation: `n_eval` prompts of K points from one fixed in-context task (μ*, w*) whose inputs look like one
group and whose labels follow another (noiseless labels z = w*ᵀx, as in Fig. 6). Per position k:

    nse/<who>/kNN = mean_p (ŷ_k − z_k)² / N,    N = E[(w*ᵀx)²] = σ²‖w*‖² + (w*ᵀμ*)²

so predicting 0 scores 1 (the Garg convention). <who> ∈ model, bayes (closed-form MMSE under the prior,
misspecified for the noiseless task exactly as in the paper), least_squares (`icl_baselines`).

On-prior check (papers.md §7d: "mean squared gap to the Bayes prediction < 10% of the Bayes risk for every
k"): `n_eval` further prompts drawn from the TRAINING prior itself (`sample_prompts`, stream "eval_prior";
the context shows noisy labels as in training, the target is the noiseless z_k = wᵀx_k, whose conditional
mean is the same as y_k's, so the Bayes predictor is the MMSE one and its risk has no label-noise floor):

    nse_prior/<who>/kNN  = mean_p (ŷ_k − z_k)² / N_π        <who> ∈ model, bayes
    gap_prior/bayes/kNN  = mean_p (ŷ_model,k − ŷ_bayes,k)² / N_π

with N_π = E_prior[(wᵀx)²] (`prior_normalizer`). Under the prior the Bayes predictor is the posterior mean,
so nse_prior/model = nse_prior/bayes + gap_prior/bayes up to Monte-Carlo noise (orthogonality); the report
(`analysis/dual_modes_report.py`) reads the off-prior curve only at the k where gap_prior/bayes is below 10%
of nse_prior/bayes. Also
`bayes/wrong_group/kNN` (mean posterior mass π̃_0 on group 0: early_ascent's input-matching group whose
labels are wrong; regular4's c_0, the group nearest the demo task), `gap/bayes/mean` (mean (ŷ_model − ŷ_bayes)² / N:
§7(d)'s "tracks the Bayes predictor"), `val/mse`
`nse_ref/bayes/kNN` (when `n_ref` > 0: the same closed-form curve on `n_ref` fresh task prompts, precise
enough to decide whether it rises or falls; the report takes the settings' roles from it) and, when
`long_k` > 0, `nse_long/bayes/kNNNN`: the closed-form Bayes curve at k = 0, 1, 2, 4, …, long_k
(`bayes_risk_curve`, n_eval fresh prompts), far past the model's context.

Priors (`task.prior`):
  early_ascent  Fig. 6's construction (`early_ascent_prior`): d = 1: M = 2, d ≥ 2: M = 3; μ centres scaled
                by `mu_scale`, w centres unit; σ = 1, τ = `tau`, σ_μ = `sigma_mu`, σ_w = τ√δ (δ = δ_w =
                `delta`), group 0 with prior weight `wrong_weight`; task μ* = mu_scale·1/√d, w* = 1/√d.
                The paper's setting (mu_scale 1, tau 2, sigma_mu 0.05, δ = 0.000625, uniform π) only falls
                at k ≳ 100 (§7c calibration) — beyond a CPU model's context. The defaults — a SCALED prior,
                not the paper's (`variant=gpu` of sweeps/dual_modes.yaml is the paper's experiment): mu_scale
                0.75, δ = 0.02, wrong_weight 0.05, chosen by a numerical search over the closed form — put the whole
                rise and fall inside K = 32: at k = 0 the prior favours the right group, a few inputs retrieve
                the wrong one (risk up ~1.8×, peak near k = 8), then task learning (δ k E[x²] ≳ 1) brings it
                down (closed form, d = 1, 4000 prompts: nse 1.07 at k = 0, 1.91 at k = 8, 1.06 at k = 31;
                δ = 0.5 falls from the start: 1.07, 0.10, 0.01).
  regular4      Fig. 9's `Regular4` (d = 3, M = 4 tetrahedron vertices, μ_β = w_β, σ = τ = 1, δ_μ = δ_w =
                `delta`, uniform π) and its demo task μ* = w* = normalize(2c_0 + c_1 + 0.2c_2)
                (`regular4_task`): the paper's Transformer experiment (model vs Bayes, `gap/bayes/mean`).
                Its Bayes curve falls monotonically for δ = 4^{-a}, a = 0…4 (closed form, checked): no early
                ascent here. tau, sigma_mu, mu_scale and wrong_weight do not apply; dim must be 3.
Members differ by seed only (`per_member = ()`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ftcore.fields import check
from ftcore.models.mlp import build_model
from ftcore.registry import TASKS
from ftcore.seeding import generators
from ftcore.tasks.dual_modes import (
    bayes_prefix_predict,
    bayes_risk_curve,
    early_ascent_prior,
    early_ascent_task,
    prior_normalizer,
    regular4_prior,
    regular4_task,
    sample_prompts,
    sample_task_prompts,
)
from ftcore.tasks.icl_baselines import least_squares
from ftcore.tasks.icl_functions import interleave
from ftcore.tasks.icl_regression import IclRegression, position_keys, position_metrics
from ftcore.tasks.sequence import SequenceTask

PRIORS = ("early_ascent", "regular4")
TARGETS = ("noisy", "noiseless")


@dataclass
class DualModesConfig:
    name: str = "dual_modes"
    prior: str = "early_ascent"
    dim: int = 1                # d (regular4: 3)
    delta: float = 0.02         # δ_w = (σ_w/τ)² (regular4: δ_μ = δ_w = δ)
    tau: float = 2.0            # label-noise std τ (early_ascent)
    sigma_mu: float = 0.05      # σ_μ (early_ascent)
    mu_scale: float = 0.75      # norm of the μ centres (early_ascent; paper 1)
    wrong_weight: float = 0.05  # prior weight of group 0 (early_ascent; 1/M = uniform, the paper's)
    n_points: int = 32          # K (paper k = 32)
    batch_size: int = 64        # B prompts per training step
    n_eval: int = 256           # evaluation prompts per member
    long_k: int = 4096          # closed-form Bayes curve up to this k (0 = off)
    n_ref: int = 20000          # fresh task prompts for the precise closed-form curve nse_ref/bayes (0 = off)
    target: str = "noisy"       # training labels: noisy y (the reference) | noiseless z (same minimiser)

    per_member = ()             # members of a pack differ by seed only

    def __post_init__(self):
        check(self.prior in PRIORS, "task.prior", f"one of {', '.join(PRIORS)}", self.prior)
        check(self.dim >= 1, "task.dim", ">= 1", self.dim)
        if self.prior == "regular4":
            check(self.dim == 3, "task.dim", "3 for task.prior=regular4", self.dim)
        check(self.delta > 0, "task.delta", "> 0", self.delta)
        check(self.tau > 0, "task.tau", "> 0", self.tau)
        check(self.sigma_mu > 0, "task.sigma_mu", "> 0", self.sigma_mu)
        check(self.mu_scale > 0, "task.mu_scale", "> 0", self.mu_scale)
        check(0 < self.wrong_weight < 1, "task.wrong_weight", "in (0, 1)", self.wrong_weight)
        check(self.n_points >= 1, "task.n_points", ">= 1", self.n_points)
        check(self.batch_size >= 1, "task.batch_size", ">= 1", self.batch_size)
        check(self.n_eval >= 1, "task.n_eval", ">= 1", self.n_eval)
        check(self.long_k >= 0, "task.long_k", ">= 0 (0 = off)", self.long_k)
        check(self.n_ref >= 0, "task.n_ref", ">= 0 (0 = off)", self.n_ref)
        check(self.target in TARGETS, "task.target", f"one of {', '.join(TARGETS)}", self.target)


def build_prior(cfg: DualModesConfig):
    """(MixturePrior, (μ*, w*)) of the configured setting (see the module docstring)."""
    if cfg.prior == "regular4":
        return regular4_prior(cfg.delta), regular4_task()
    prior = early_ascent_prior(cfg.dim, cfg.mu_scale, 1.0, cfg.tau, cfg.sigma_mu, cfg.tau * math.sqrt(cfg.delta),
                               cfg.wrong_weight)
    return prior, early_ascent_task(cfg.dim, cfg.mu_scale, 1.0)


def normalizer(task: tuple[torch.Tensor, torch.Tensor], sigma: float = 1.0) -> float:
    """N = E[(w*ᵀx)²] for x ~ N(μ*, σ²I): σ²‖w*‖² + (w*ᵀμ*)²."""
    mu, w = task
    return float(sigma ** 2 * (w @ w) + (w @ mu) ** 2)


def long_ks(long_k: int) -> list[int]:
    """0 and the powers of 2 up to long_k, plus long_k itself."""
    ks = [0] + [2 ** i for i in range(int(math.log2(long_k)) + 1)] if long_k else []
    return sorted(set(ks) | ({long_k} if long_k else set()))


def _points(p) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts of k examples + query -> Garg points xs (P, k+1, d), noisy ys and noiseless zs (P, k+1)."""
    def cat(ctx, query):
        return torch.cat([ctx, query[:, None]], 1)
    return cat(p.xs, p.x_query), cat(p.ys, p.y_query), cat(p.zs, p.z_query)


@TASKS.register("dual_modes")
class DualModes(SequenceTask):
    Config = DualModesConfig
    per_member = DualModesConfig.per_member

    def __init__(self, cfgs, model_cfg, seeds):
        super().__init__(cfgs, model_cfg, seeds)
        self.prior, self.task = build_prior(cfgs[0])

    @staticmethod
    def io_dims(cfg, model_cfg):
        return cfg.dim, 1

    seq_len = IclRegression.seq_len                                               # 2K interleaved tokens

    def build_base(self):
        c0 = self.cfgs[0]
        model = build_model(self.model_cfg, c0.dim, 1, generators(self.seeds, "base"))
        self.normalizer = normalizer(self.task)
        mu, w = self.task
        xs, ys, bayes, post, long = [], [], [], [], []
        for cfg, g in zip(self.cfgs, generators(self.seeds, "eval")):
            x, _, y = _points(sample_task_prompts(g, cfg.n_eval, cfg.n_points - 1, mu, w, 1.0, 0.0))
            pred, pi = bayes_prefix_predict(x, y, self.prior)                     # (P, K), (P, K, M)
            xs.append(x)
            ys.append(y)
            bayes.append(pred)
            post.append(pi[..., 0].mean(0))                                        # (K,)
            if cfg.long_k:
                curve = bayes_risk_curve(g, self.prior, long_ks(cfg.long_k), cfg.n_eval, task=self.task)
                long.append(curve["risk"] / self.normalizer)
        self.eval_xs, self.eval_ys = torch.stack(xs), torch.stack(ys)               # (E, P, K, d), (E, P, K)
        self.bayes_pred = torch.stack(bayes)                                        # (E, P, K)
        self.bayes_nse = (self.bayes_pred - self.eval_ys).pow(2).mean(1) / self.normalizer      # (E, K)
        self.ls_nse = torch.stack([(least_squares(x, y) - y).pow(2).mean(0) for x, y in zip(xs, ys)]) / self.normalizer
        self.wrong_post = torch.stack(post)                                         # (E, K)
        self.long_nse = torch.stack(long) if long else None                         # (E, L)
        self.eval_tokens = torch.stack([interleave(x, y) for x, y in zip(xs, ys)])  # (E, P, 2K, d)
        self._build_prior_eval()
        self._build_reference()
        return model

    def _build_reference(self) -> None:
        """nse_ref/bayes (E, K): the closed-form Bayes curve on the off-prior task from n_ref fresh prompts
        (stream "eval_ref"), precise enough to decide its shape (the per-prompt squared error is heavy-tailed:
        its SD is ~4× its mean, so n_eval prompts leave a first step of 0.08 at δ = 0.2 within noise)."""
        mu, w = self.task
        ref = []
        for cfg, g in zip(self.cfgs, generators(self.seeds, "eval_ref")):
            if not cfg.n_ref:
                return
            x, _, z = _points(sample_task_prompts(g, cfg.n_ref, cfg.n_points - 1, mu, w, 1.0, 0.0))
            ref.append((bayes_prefix_predict(x, z, self.prior)[0] - z).pow(2).mean(0) / self.normalizer)   # (K,)
        self.ref_nse = torch.stack(ref)                                             # (E, K)

    def _build_prior_eval(self) -> None:
        """On-prior evaluation prompts (see the module docstring): tokens show noisy y, targets are z."""
        self.norm_prior = prior_normalizer(self.prior)
        tokens, zs, bayes = [], [], []
        for cfg, g in zip(self.cfgs, generators(self.seeds, "eval_prior")):
            x, y, z = _points(sample_prompts(g, cfg.n_eval, cfg.n_points - 1, self.prior))   # (P, K, d), (P, K)
            tokens.append(interleave(x, y))
            zs.append(z)
            bayes.append(bayes_prefix_predict(x, y, self.prior)[0])             # (P, K)
        self.prior_tokens, self.prior_zs = torch.stack(tokens), torch.stack(zs)  # (E, P, 2K, d), (E, P, K)
        self.prior_bayes = torch.stack(bayes)                                   # (E, P, K)
        self.prior_bayes_nse = (self.prior_bayes - self.prior_zs).pow(2).mean(1) / self.norm_prior  # (E, K)

    def batch(self, step):
        xs, ys = [], []
        for cfg, g in zip(self.cfgs, self.gens):
            x, y, z = _points(sample_prompts(g, cfg.batch_size, cfg.n_points - 1, self.prior))
            xs.append(interleave(x, y))                                          # the context always shows noisy y
            ys.append(y if cfg.target == "noisy" else z)
        x, y = torch.stack(xs), torch.stack(ys)                                  # (E, B, 2K, d), (E, B, K)
        w = torch.full(y.shape[:2], 1.0 / y.shape[1])                            # (E, B)
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype), w.to(self.device, self.dtype)

    loss = staticmethod(IclRegression.loss)    # (E, B, 2K, 1) read at the x tokens vs y (E, B, K) -> (E,)

    @torch.no_grad()
    def evaluate(self, model):
        pred = model(self.eval_tokens)[..., ::2, 0]                              # (E, P, K)
        sq = (pred - self.eval_ys).pow(2)                                        # (E, P, K)
        K = sq.shape[-1]
        out = position_metrics({"model": sq.mean(1) / self.normalizer, "bayes": self.bayes_nse,
                                "least_squares": self.ls_nse})
        for k, key in enumerate(position_keys("bayes/wrong_group", K)):
            out[key] = self.wrong_post[:, k]
        out["gap/bayes/mean"] = (pred - self.bayes_pred).pow(2).mean((1, 2)) / self.normalizer
        if self.long_nse is not None:
            ks = long_ks(self.cfgs[0].long_k)
            width = len(str(ks[-1]))
            for i, k in enumerate(ks):
                out[f"nse_long/bayes/k{k:0{width}d}"] = self.long_nse[:, i]
        out["val/mse"] = sq.mean((1, 2))
        out.update(self._prior_metrics(model))
        if getattr(self, "ref_nse", None) is not None:
            for k, key in enumerate(position_keys("nse_ref/bayes", self.ref_nse.shape[-1])):
                out[key] = self.ref_nse[:, k]
        return out

    def _prior_metrics(self, model) -> dict[str, torch.Tensor]:
        """nse_prior/{model,bayes}/kNN and gap_prior/bayes/kNN (E,) on the on-prior prompts."""
        pred = model(self.prior_tokens)[..., ::2, 0]                            # (E, P, K)
        n = self.norm_prior
        curves = {"nse_prior/model": (pred - self.prior_zs).pow(2).mean(1) / n,  # (E, K)
                  "nse_prior/bayes": self.prior_bayes_nse,
                  "gap_prior/bayes": (pred - self.prior_bayes).pow(2).mean(1) / n}
        out = {}
        for prefix, values in curves.items():
            for k, key in enumerate(position_keys(prefix, values.shape[-1])):
                out[key] = values[:, k]
        return out
