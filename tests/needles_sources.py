"""Sources that `model.from` / `variant=hf` sweeps need before they validate: a recorded 2-step run of
`sweeps/needles_pretrain.yaml` (what `sweeps/needles_finetune.yaml` reads from results/needles_pretrain), an
untrained narrow one of its `variant=gpu`, and a tiny random-weight GPT-2 saved with `save_pretrained`
(ftcore.models.hf_tiny). Built once per session in a temporary directory, never under results/."""
from __future__ import annotations

from pathlib import Path

import yaml

SWEEPS = Path(__file__).parent.parent / "sweeps"


def record_pretrain(out: Path, overrides: list[str] = (), steps: int = 2) -> Path:
    """Train the first member of the stage-1 sweep for `steps` steps (no Ray) and commit it to `out`."""
    from sweeps.execute import run_pack
    from sweeps.probe import Probe
    from sweeps.sink import ResultSink
    from sweeps.spec import load_checked
    over = [*overrides, f"train.steps={steps}", f"train.eval_every={max(steps, 1)}", "task.n_eval=2"]
    spec, members = load_checked(SWEEPS / "needles_pretrain.yaml", over)
    pack = [Probe(members[0], {"group": "", "round": 1})]
    runs, curves = run_pack(pack, {"sweep": spec.name}, "t0", out_dir=str(out))
    ResultSink(out).write_pack("t0", runs, curves)
    return out


def needs_sources(path: Path) -> bool:
    """Whether some variant of the sweep at `path` fine-tunes a recorded run or an HF model."""
    data = yaml.safe_load(path.read_text())
    return any(source_overrides(path, v, {"needles_pretrain": "x", "needles_pretrain_gpu": "x", "hf_tiny": "x"})
               for v in ["", *(data.get("variants") or {})])


def source_overrides(path: Path, variant: str, dirs: dict[str, Path]) -> list[str]:
    """The overrides a shipped sweep needs to validate here: model.from.dir for a sweep whose (variant's) model
    comes `from` a recorded run, model.path for one on an HF model."""
    data = yaml.safe_load(path.read_text())
    chosen = (data.get("variants") or {}).get(variant or data.get("variant") or "", {})
    model = {**(data.get("model") or {}), **{k[6:]: v for k, v in chosen.items() if k.startswith("model.")}}
    out = []
    if "from" in model:                                  # the stage-1 output it names, built here instead
        out.append(f"model.from.dir={dirs[Path(model['from']['dir']).name]}")
    if model.get("name") == "hf_causal_lm":
        out.append(f"model.path={dirs['hf_tiny']}")
    return out


def make_dirs(root: Path) -> dict[str, Path]:
    from ftcore.models.hf_tiny import save_tiny
    save_tiny(root / "hf_tiny")
    # the paper-sized stage 1 shrunk in width (its n_positions, which stage 2 checks, kept), untrained
    gpu = record_pretrain(root / "needles_pretrain_gpu", ["variant=gpu", "model.n_embd=8", "model.n_layer=1",
                                                          "model.n_head=1", "task.batch_size=1"], steps=0)
    return {"needles_pretrain": record_pretrain(root / "needles_pretrain"), "needles_pretrain_gpu": gpu,
            "hf_tiny": root / "hf_tiny"}
