"""The full-disk scenario of tests/test_full_disk.py, run as a script inside a private mount namespace (where it
may mount a tmpfs): `python tests/full_disk_scenario.py SPEC WORK`.

1. mount a tmpfs at WORK/mnt and start `ftsweep run SPEC --out WORK/mnt/out`;
2. once the first trial has committed its part, fill the filesystem (a filler file, written until ENOSPC), so the
   trials still running or to come find no space; wait for the driver to end;
3. copy DIR as the failure left it to WORK/after_full (hidden files included);
4. delete the filler (space again) and run `ftsweep resume WORK/mnt/out`; copy DIR to WORK/after_resume;
5. write WORK/summary.json: each command's exit code, stdout and stderr, and DIR's path.
The namespace (and the tmpfs with it) goes when the script ends.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ftsweep(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=ROOT, text=True, bufsize=1,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def fill(mnt: Path) -> str:
    with open(mnt / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as e:
            return str(e)


def main(spec: str, work: str) -> None:
    work = Path(work)
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    out = mnt / "out"
    proc = ftsweep("run", spec, "--out", str(out))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(r"trial \S+: \d+ runs", line):
            break
    filled = fill(mnt)
    rest, err = proc.communicate(timeout=400)
    summary = {"out": str(out), "filled": filled,
               "run": {"rc": proc.returncode, "stdout": "".join(seen) + rest, "stderr": err}}
    shutil.copytree(out, work / "after_full", symlinks=True)
    (mnt / "filler").unlink()
    proc = ftsweep("resume", str(out))
    text, err = proc.communicate(timeout=400)
    summary["resume"] = {"rc": proc.returncode, "stdout": text, "stderr": err}
    shutil.copytree(out, work / "after_resume", symlinks=True, ignore=shutil.ignore_patterns("ray"))
    (work / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(*sys.argv[1:])
