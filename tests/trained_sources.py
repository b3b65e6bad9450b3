"""Sources that shipped sweeps read before they validate: the recorded runs their `model.from` or `task.teacher` name
(results/<stage>), and a tiny random-weight GPT-2 saved with `save_pretrained` (ftcore.models.hf_tiny) for
`model.name: hf_causal_lm` (a tiny LLaVA for `hf_vlm`). Each recorded source is the first member of the stage's own
shipped sweep, trained a step or two without Ray and committed through the sink (paper-sized `gpu` stages shrunk in
width, untrained: the sizes a later stage checks are kept). Built once per session in a temporary directory, never under
results/."""
from __future__ import annotations

from pathlib import Path

import yaml

SWEEPS = Path(__file__).parent.parent / "sweeps"
TINY = ["train.steps=2", "train.eval_every=2"]
GPU_NEEDLES = ["variant=gpu", "model.n_embd=8", "model.n_layer=1", "model.n_head=1", "task.batch_size=1",
               "train.steps=0", "train.eval_every=1", "task.n_eval=2"]
GPU_FEATURE = ["variant=gpu", "train.steps=0", "model.width=8", "seeds=1", "train.eval_every=2"]
T2I_TINY = [*TINY, "task.k_max=2", "task.n_eval=4", "task.batch_size=2"]
# results/<name> -> (the shipped sweep that writes it, overrides; "{x}" = the directory of source x, built first)
STAGES: dict[str, tuple[str, list[str]]] = {
    "needles_pretrain": ("needles_pretrain.yaml", [*TINY, "task.n_eval=2"]),
    "needles_pretrain_gpu": ("needles_pretrain.yaml", GPU_NEEDLES),
    "feature_pretrain": ("feature_pretrain.yaml", [*TINY, "seeds=1"]),
    "feature_retrieval": ("feature_retrieval.yaml", [*TINY, "seeds=1", "model.from.dir={feature_pretrain}",
                                                     "train.batch_selection=shuffle"]),
    "feature_pretrain_gpu": ("feature_pretrain.yaml", GPU_FEATURE),
    "feature_retrieval_gpu": ("feature_retrieval.yaml", [*TINY, *GPU_FEATURE[:2], "seeds=1",
                                                         "model.from.dir={feature_pretrain_gpu}",
                                                         "train.batch_selection=shuffle"]),
    "t2i_pretrain": ("t2i_pretrain.yaml", T2I_TINY),
    "t2i_pretrain_hf": ("t2i_pretrain.yaml", ["variant=hf", "model.path={hf_tiny}", *T2I_TINY]),
}


def record_pack(out: Path, configs: list[dict], trial: str = "t0", sweep: str = "src") -> list[dict]:
    """Train member `configs` (nested dicts) as one pack through the workers' run_pack and commit it to `out` -> rows."""
    from sweeps.execute import run_pack
    from sweeps.probe import Probe
    from sweeps.sink import ResultSink
    pack = [Probe.from_payload({"config": c, "meta": {"group": "", "round": 1}}) for c in configs]
    runs, curves = run_pack(pack, {"sweep": sweep}, trial, out_dir=str(out))
    ResultSink(out).write_pack(trial, runs, curves)
    return runs


def record(yaml_name: str, out: Path, overrides: list[str]) -> Path:
    """Train the first member of a shipped sweep (with `overrides`, no Ray) and commit it to `out`."""
    from sweeps.spec import load_checked
    spec, members = load_checked(SWEEPS / yaml_name, overrides)
    record_pack(out, [members[0].nested()], sweep=spec.name)
    return out


def _chosen(path: Path, variant: str) -> tuple[dict, dict]:
    """(the YAML, the variant's overrides: the default variant when `variant` is '')."""
    data = yaml.safe_load(path.read_text())
    return data, (data.get("variants") or {}).get(variant or data.get("variant") or "", {})


def source_overrides(path: Path, variant: str, dirs: dict[str, Path]) -> list[str]:
    """The overrides a shipped sweep (variant) needs to validate here: model.from.dir for a model `from` a recorded
    run, task.teacher.dir for a task distilling from one, model.path for an HF model."""
    data, chosen = _chosen(path, variant)
    model = {**(data.get("model") or {}), **{k[6:]: v for k, v in chosen.items() if k.startswith("model.")}}
    arms = chosen.get("axes.model", (data.get("axes") or {}).get("model")) or []
    names = {model.get("name")} | {a.get("name") for a in arms if isinstance(a, dict)}
    teacher = chosen.get("task.teacher") or (data.get("task") or {}).get("teacher")
    out = []
    if "from" in model:
        out.append(f"model.from.dir={dirs[Path(model['from']['dir']).name]}")
    if isinstance(teacher, dict) and "dir" in teacher:
        out.append(f"task.teacher.dir={dirs[Path(teacher['dir']).name]}")
    if names & {"hf_causal_lm", "hf_backbone"}:
        out.append(f"model.path={dirs['hf_tiny']}")
    if "hf_vlm" in names:                     # a tiny LLaVA (callers' fakes may lack the key)
        out.append(f"model.path={dirs.get('hf_tiny_vlm', dirs.get('hf_tiny'))}")
    return out


def needs_sources(path: Path) -> bool:
    """Whether some variant of the sweep at `path` reads a recorded run or an HF model."""
    data = yaml.safe_load(path.read_text())
    fake = {name: Path("x") for name in [*STAGES, "hf_tiny", "hf_tiny_vlm"]}
    return any(source_overrides(path, v, fake) for v in ["", *(data.get("variants") or {})])


def tiny_vlm(out: Path) -> Path:
    """A tiny random-weight LLaVA whose tokenizer has criterion_clustering's words as tokens (`model.name: hf_vlm`)."""
    from ftcore.models.hf_tiny import save_tiny_vlm
    from ftcore.tasks.criterion_clustering import vlm_corpus
    return save_tiny_vlm(out, n_embd=32, n_layer=1, extra=vlm_corpus(), vocab_size=512)


def make_dirs(root: Path) -> dict[str, Path]:
    """{results/<name> -> a temporary directory holding what it holds after that stage's run}, for every stage."""
    from ftcore.models.hf_tiny import save_tiny
    save_tiny(root / "hf_tiny")
    dirs = {"hf_tiny": root / "hf_tiny", "hf_tiny_vlm": tiny_vlm(root / "hf_tiny_vlm")}
    for name, (yaml_name, overrides) in STAGES.items():       # in order: a stage's own sources come first
        dirs[name] = record(yaml_name, root / name, [o.format(**dirs) for o in overrides])
    return dirs
