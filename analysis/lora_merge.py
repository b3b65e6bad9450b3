"""`python -m analysis.lora_merge DIR... --out OUT`: one report over several runs of the same sweep.

A range axis ("1..model.width") resolves once per sweep run, so the LoRA threshold grid over D ∈ {8, 16} is two
runs of `sweeps/lora_threshold.yaml` (the default and `variant=wide`). This copies their `runs` (and `curves`)
part files into OUT/<table>/part-<i>-<name> and writes OUT/report (one section per sweep name, so both runs
land in one table, one figure and one claims.json). A mistake (a missing directory, an existing OUT) is a
one-line error, exit 2.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from analysis.load import part_files
from analysis.report import write_report


def merge(dirs: list[str | Path], out: str | Path) -> Path:
    """Copy the part files of `dirs` into `out` and write its report; returns report.md's path."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out}: exists and is not empty")
    for i, d in enumerate(map(Path, dirs)):
        parts = part_files(d, "runs")
        if not parts:
            raise ValueError(f"{d}: no runs/part-*.parquet")
        for table in ("runs", "curves"):
            for p in part_files(d, table):
                (out / table).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, out / table / f"part-{i:02d}-{p.name[len('part-'):]}")
    return write_report(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.lora_merge", description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        print(merge(args.dirs, args.out))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
