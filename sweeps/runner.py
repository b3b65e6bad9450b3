"""Drive a sweep on Ray Tune: rounds from a search, packed into trials, run by reused Tune actors (or Ray Train
workers with `execution.worker: train`).

`PackSearcher` is a Tune `Searcher` over *rounds*: `suggest` hands out the current round's trials and
answers None (wait) until they have all completed, then asks the search for the next round, and
FINISHED when there is none. One Tune experiment runs the whole sweep (actor reuse, one place for
failure handling: a trial that still fails after `execution.max_failures` retries has its members
recorded as `failed`).

Resume (`ftsweep resume DIR`, `run_sweep(resume=True)`): the search starts again from round 1, and every
probe whose run_id is already committed in DIR is replayed from its row instead of run, so a deterministic
search (grid, capacity; Optuna with per-trial seeds) takes the decisions of the interrupted run again.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import time
from pathlib import Path

import ray
import ray.tune
from ray.tune.search import Searcher

from sweeps.execute import failed_rows
from sweeps.plan import plan_trials
from sweeps.search.base import make_search
from sweeps.shared_storage import unshared_nodes
from sweeps.sink import ResultSink
from sweeps.spec import SpecError, SweepSpec
from sweeps.storage import is_uri, join
from sweeps.trainable import trainable_for


def sweep_meta(spec: SweepSpec) -> dict:
    """Columns every run row of this sweep carries (search and report hints for `analysis`)."""
    s, r = spec.search, spec.report
    ladder = len(s.ladder_values()) if s.kind == "capacity" else None
    return {"sweep": spec.name, "search.kind": s.kind, "search.param": s.param, "search.success": s.success,
            "search.quorum": s.quorum, "search.ladder_size": ladder, "report.kind": r.kind, "report.x": r.x, "report.y": r.y,
            "report.select": r.select, "report.curve_by": ",".join(r.curve_by),
            "report.panel_by": ",".join(r.panel_by), "report.theory": json.dumps(r.theory)}


class PackSearcher(Searcher):
    def __init__(self, spec: SweepSpec, out_dir: Path, n_slots: int, progress, budget_bytes: float | None = None,
                 recorded: dict[str, dict] | None = None):
        super().__init__(metric="n_runs", mode="max")
        self.spec, self.out, self.n_slots, self.progress = spec, str(out_dir), n_slots, progress
        self.budget_bytes = budget_bytes
        self.recorded = recorded or {}        # resume: run_id -> its committed row (not run again)
        self.resumed = 0
        self.mismatch = False                 # resume: round 1 matches none of the recorded runs
        self.search = make_search(spec, out_dir)
        self.meta = sweep_meta(spec)
        self.queue: list[list] = []
        self.outstanding: dict[str, list] = {}
        self.round_rows: list[dict] = []
        self.finished = False
        self.t0 = time.time()
        self.done_runs = 0

    def set_search_properties(self, metric, mode, config, **spec):
        return True

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the records in DIR are the state (resume is `ftsweep resume`'s job)."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""

    def _advance(self) -> None:
        """Record the finished round and plan the next one. On resume a probe whose run_id is already
        committed is not run: its recorded row joins the round (so the search replays the same decisions),
        and a round made only of such probes is recorded at once."""
        while True:
            if self.search.round:
                self.search.record(self.round_rows)
            probes = self.search.next_round()
            if probes is None:
                self.finished = True
                return
            todo = [p for p in probes if p.member.run_id() not in self.recorded]
            if (self.search.round == 1 and self.search.same_first_round and self.recorded
                    and len(todo) == len(probes)):
                self.mismatch = self.finished = True    # see `ResumeMismatch`
                return
            self.round_rows = [{**self.recorded[p.member.run_id()], **p.meta} for p in probes
                               if p.member.run_id() in self.recorded]
            self.resumed += len(self.round_rows)
            self.done_runs += len(self.round_rows)
            if todo:
                break
            self.progress(f"round {self.search.round}: all {len(probes)} runs already recorded | {self._elapsed()}")
        if len(todo) < len(probes):
            self.progress(f"round {self.search.round}: {len(probes) - len(todo)} of {len(probes)} runs already recorded")
        probes = todo
        members = [p.member for p in probes]
        ex = self.spec.execution
        trials = plan_trials(members, self.n_slots, ex.pack_size or auto_pack_size(len(members), self.n_slots),
                             ex.max_waste, ex.pack_overhead)
        self.queue = [[[probes[i].payload() for i in pack] for pack in trial] for trial in trials]
        groups = len({p.meta["group"] for p in probes})
        self.progress(f"round {self.search.round}: {len(probes)} runs ({groups} groups) in {len(trials)} trial(s), "
                      f"{sum(len(t) for t in trials)} pack(s) | {self._elapsed()}")

    def _elapsed(self) -> str:
        s = int(time.time() - self.t0)
        return f"{s // 60}m{s % 60:02d}s"

    def suggest(self, trial_id):
        if self.finished:
            return Searcher.FINISHED
        if not self.queue and not self.outstanding:
            self._advance()
            if self.finished:
                return Searcher.FINISHED
        if not self.queue:
            return None
        packs = self.queue.pop(0)
        self.outstanding[trial_id] = packs
        ex = self.spec.execution
        return {"packs": packs, "out": self.out, "storage": join(self.out, "ray"), "cpus": ex.cpus_per_trial,
                "threads": ex.cpus_per_trial, "gpus": ex.gpus_per_trial, "workers": ex.workers_per_trial,
                "memory_fraction": ex.memory_fraction,
                "budget_bytes": self.budget_bytes, "sweep_meta": self.meta}

    def on_trial_result(self, trial_id, result):
        """A progress report from inside a long trial (sweeps/execute.py `throttled`)."""
        if "step" in result and "rows" not in result:
            self.progress(f"  trial {trial_id}: pack {result['pack']}/{result['packs']} at step {result['step']}/"
                          f"{result['steps']}, {result['active']}/{result['of']} members training | {self._elapsed()}")

    def on_trial_complete(self, trial_id, result=None, error=False):
        packs = self.outstanding.pop(trial_id, None)
        if packs is None:
            return
        if error or not result or "rows" not in result:
            rows = failed_rows(packs, self.meta, trial_id, "trial failed after retries")
            ResultSink(self.out).write_pack(f"{trial_id}-failed", rows, [])
        else:
            rows = json.loads(result["rows"])
        self.round_rows += rows
        self.done_runs += len(rows)
        ok = sum(r.get("status") == "ok" for r in rows)
        self.progress(f"  trial {trial_id}: {len(rows)} runs ({ok} ok) | total {self.done_runs} runs | {self._elapsed()}")


class ResumeMismatch(SpecError):
    """Resume found runs recorded in DIR, but none of them is a run of the first round that this code builds
    from DIR/spec.yaml. A grid or capacity search runs its rounds in order and its round 1 is always the same,
    so an interrupted sweep with any recorded run has recorded some of round 1: its run_ids (hashes of the
    resolved configs) are not this code's (not checked for Optuna, whose resumed first round is a later one). That happens when the config schema changed since the sweep started (a new
    field changes every run_id); resuming would run the whole sweep again beside the old runs."""

    def __init__(self, out_dir: str, n_recorded: int):
        super().__init__(f"{out_dir}: none of its {n_recorded} recorded runs is a run this version of ftcore builds "
                         "from its spec.yaml (was spec.yaml edited, or the config schema changed since the sweep "
                         "started?); resume it with the version that started it, or start a new sweep")


class SweepInterrupted(KeyboardInterrupt):
    """Tune ended before the search did (Ctrl-C, SIGTERM); `n_recorded` runs are committed in DIR."""

    def __init__(self, n_recorded: int):
        super().__init__(n_recorded)
        self.n_recorded = n_recorded


def init_ray(address: str | None) -> bool:
    """Connect to `address`, or start a local Ray bound to 127.0.0.1. Returns True if we started it."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address:
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        except ConnectionError as e:          # "auto" with no cluster on this machine, a cluster gone
            raise SpecError(f"--address {address}: {' '.join(str(e).split())[:300]}") from None
        return False
    loopback_only()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING",
             log_to_driver=False, _node_ip_address="127.0.0.1")
    return True


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """`--address` of `ftsweep run/resume`, checked before anything is written: the Jobs API URL is refused
    (it is `ftsweep submit`'s), and a HOST:PORT that nothing answers on fails now, in one line, instead of
    Ray waiting minutes for a GCS that is not there. `auto` and `ray://` are left to ray.init."""
    if not address or address == "auto" or address.startswith("ray://"):
        return
    if address.startswith(("http://", "https://")):
        raise SpecError(f"--address {address}: that is a Jobs API (dashboard) URL, which ftsweep submit takes; "
                        "ftsweep run and resume take the cluster's GCS address (HEAD:6379, or auto on a cluster node)")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(f"--address {address}: expected HOST:PORT (the GCS, e.g. 10.0.0.1:6379), auto or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise SpecError(f"--address {address}: no Ray cluster answers there ({e.strerror or e})") from None


def loopback_only() -> None:
    """Make a local Ray listen on 127.0.0.1 only (GCS, raylet, workers, agents; token auth stays on).

    Ray 2.60 replaces a node IP of 127.0.0.1 by the machine's routable address, and its servers then listen
    on every interface, unless Ray clusters are disabled: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (the
    laptop setting of macOS/Windows, where Ray keeps everything on the loopback). Its value is read when
    ray_constants is imported, so it is set for the processes Ray starts and mirrored into the module
    already imported here. `tests/test_security.py` checks the listening sockets."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants
    ray_constants.ENABLE_RAY_CLUSTER = False


def sigterm_like_ctrl_c():
    """`kill PID` stops a sweep as Ctrl-C does: Tune ends its trials and returns, Ray shuts down, the CLI exits
    130 naming `ftsweep resume`. Set after ray.init, whose own SIGTERM handler would otherwise kill the driver
    on the spot and leave Ray's agents behind. Returns the previous handler (None: left alone)."""
    try:
        return signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    except ValueError:                     # not the main thread (an embedding caller): leave SIGTERM alone
        return None


def slots(ex, resources: dict) -> int:
    """Concurrent trials the cluster's resources allow: CPUs per trial, and GPUs per trial when on GPU; a trial
    of `workers_per_trial` Ray Train workers takes that many times both."""
    n = int(resources.get("CPU", 1) // (ex.cpus_per_trial * ex.workers_per_trial))
    if ex.gpus_per_trial > 0:
        n = min(n, int(resources.get("GPU", 0) // (ex.gpus_per_trial * ex.workers_per_trial) + 1e-9))
    return n


def auto_pack_size(n_members: int, n_slots: int) -> int:
    """`execution.pack_size: 0`: spread a round evenly over the slots (every core busy, fewest trials).
    Memory is the worker's concern: it cuts a pack that would not fit its share (`split_for_memory`)."""
    return max(1, math.ceil(n_members / max(n_slots, 1)))


def recorded_rows(out_dir: str) -> dict[str, dict]:
    """Resume: the committed runs rows of `out_dir` by run_id. Parts of `failed` rows (a trial that failed
    after its retries) are dropped first, so those runs are tried again."""
    sink = ResultSink(out_dir)
    sink.drop_parts("-failed")
    return {r["run_id"]: r for r in sink.read_rows("runs")}


def run_sweep(spec: SweepSpec, out_dir: str | Path, address: str | None = None, progress=print,
              resume: bool = False, prepare=None) -> dict:
    """Run `spec` into `out_dir` (a path or a pyarrow-filesystem URI); with `resume`, runs already committed
    there are not run again. `prepare()` (the CLI: create DIR, save spec.yaml) runs once Ray is up and has
    the resources a trial needs, so a mistaken address or execution section writes nothing."""
    out_dir = out_dir if is_uri(out_dir) else str(Path(out_dir).resolve())
    recorded = recorded_rows(out_dir) if resume else None
    check_address(address)
    started = init_ray(address)
    previous = sigterm_like_ctrl_c()
    try:
        ex = spec.execution
        resources = ray.cluster_resources()
        n_slots = slots(ex, resources)
        if n_slots < 1:
            n = ex.workers_per_trial
            need = f"{ex.cpus_per_trial * n} CPU" + (f" and {ex.gpus_per_trial * n:g} GPU" if ex.gpus_per_trial else "")
            raise SpecError(f"execution: a trial needs {need}, but the cluster has "
                            f"{resources.get('CPU', 0):g} CPU and {resources.get('GPU', 0):g} GPU")
        if prepare is not None:
            prepare()
        missing = unshared_nodes(out_dir)
        if missing:
            raise SpecError(f"--out {out_dir}: node(s) {', '.join(missing)} cannot see this directory; on a "
                            "multi-node cluster --out must be shared storage (an NFS path) or a URI such as s3://bucket/prefix")
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(n_slots)
        budget = ex.memory_fraction * resources.get("memory", 0) / (n_slots * ex.workers_per_trial) or None  # bytes per worker
        searcher = PackSearcher(spec, out_dir, n_slots, progress, budget, recorded)
        tuner = ray.tune.Tuner(
            trainable_for(ex.worker, ex.cpus_per_trial, ex.gpus_per_trial),
            tune_config=ray.tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=n_slots,
                                            reuse_actors=True, trial_dirname_creator=lambda t: t.trial_id,
                                            trial_name_creator=lambda t: t.trial_id),
            run_config=ray.tune.RunConfig(name="tune", storage_path=join(out_dir, "ray"), verbose=0,
                                          failure_config=ray.tune.FailureConfig(max_failures=spec.execution.max_failures)),
        )
        tuner.fit()
        if searcher.mismatch:
            raise ResumeMismatch(out_dir, len(recorded))
        if not searcher.finished:           # Tune stopped early: SIGINT/SIGTERM (it returns normally then)
            raise SweepInterrupted(ResultSink(out_dir).n_runs())
        counts = searcher.search.counts()
        counts["wall_s"] = round(time.time() - searcher.t0, 1)
        counts["resumed"] = searcher.resumed
        return counts
    finally:
        if started:
            ray.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
