"""Drive a sweep on Ray Tune: waves of probes from a search, packed into trials, run by reused Tune actors (or Ray
Train workers with `execution.worker: train`).

`PackSearcher` is a Tune `Searcher` with no round barrier: each trial's rows are recorded with the search as soon
as it completes (a group whose probe is all in advances then, sweeps/search/base.py), and when a slot is free and
no planned trial is queued, `suggest` asks the search for the probes that can run now (a *wave*) and plans them
into as many trials as there are free slots. It answers None (Tune waits) when nothing can run now, and FINISHED
when the search has nothing to hand out and nothing is parked, queued or running. One Tune experiment runs the
whole sweep (actor reuse, one place for failure handling: a trial that still fails after `execution.max_failures`
retries has its members recorded as `failed`).

Lanes. What a member computes depends (at float round-off, which gradient training amplifies) on the pack it
trains in, so packs must not depend on timing. A *lane* is the groups whose members may share a pack (the pack
key of a group's first probe, `MemberConfig.pack_key`): a lane's next probes are parked until none of its members
is in a running trial, then packed together on their own, with a pack size that depends on the lane alone. Lanes
advance independently (in the FTC sweep: adam and construction × depth 2 and 3), so no slot waits for another
lane's slowest pack; the packs, hence the results, are the same whatever order trials complete in.

Resume (`ftsweep resume DIR`, `run_sweep(resume=True)`): the search starts again from its first wave, and every
probe whose run_id is already committed in DIR is replayed from its row instead of run (recorded at once, so the
groups it completes advance in the same `suggest`), so a deterministic search (grid, capacity; Optuna with
per-trial seeds) takes the decisions of the interrupted run again.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import time
from pathlib import Path

import ray
import ray.tune
from ray.tune.search import Searcher

from analysis.powerlaw import fit_powerlaw
from sweeps.execute import failed_rows
from sweeps.grid import group_label
from sweeps.plan import plan_packs, spread_packs
from sweeps.probe import Probe
from sweeps.search.capacity import CapacitySearch
from sweeps.search.kinds import make_search
from sweeps.shared_storage import unshared_nodes
from sweeps.sink import ResultSink
from sweeps.spec import SpecError, SweepSpec
from sweeps.storage import is_uri, join
from sweeps.tensorboard import RunNames, SweepScalars, run_name, write_experiment_config
from sweeps.trainable import trainable_for


def sweep_meta(spec: SweepSpec) -> dict:
    """Columns every run row of this sweep carries (search and report hints for `analysis`), each section's own."""
    return {"sweep": spec.name, **spec.search.columns(), **spec.report.columns()}


class PackSearcher(Searcher):
    def __init__(self, spec: SweepSpec, out_dir: Path, n_slots: int, progress, budget_bytes: float | None = None,
                 recorded: dict[str, dict] | None = None):
        super().__init__(metric="n_runs", mode="max")
        self.spec, self.out, self.n_slots, self.progress = spec, str(out_dir), n_slots, progress
        self.budget_bytes = budget_bytes
        self.recorded = recorded or {}        # resume: run_id -> its committed row (not run again)
        self.resumed = 0
        self.mismatch = False                 # resume: the first wave matches none of the recorded runs
        self.search = make_search(spec, out_dir)
        self.meta = sweep_meta(spec)
        self.queue: list[list[list[Probe]]] = []          # planned trials not handed to Tune yet, each packs of probes
        self.outstanding: dict[str, list[list[Probe]]] = {}   # running trials: trial id -> its packs
        self.parked: dict[tuple, list[Probe]] = {}        # lane -> probes handed out by the search, not planned yet
        self.lanes: dict[str, tuple] = {}                 # group -> its lane (`_lane`)
        self.finished = False
        self.t0 = time.time()
        self.done_runs = 0
        self.ok_runs = 0
        self.board = SweepBoard(spec, self.out, progress)

    def set_search_properties(self, metric, mode, config, **spec):
        return True

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the records in DIR are the state (resume is `ftsweep resume`'s job)."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""

    def _record(self, rows: list[dict]) -> None:
        """Tell the search `rows`; the board's search scalars follow when a decision was taken."""
        if self.search.record(rows):
            self.board.round_done(self.search, self.done_runs)

    def _refill(self) -> None:
        """Plan what can run now into the free slots' trials (the queue is empty): ask the search for its ready
        probes (`_collect`), then plan every lane with nothing in a trial (`_plan`). FINISHED when nothing is
        left to run and nothing is running."""
        free = self.n_slots - len(self.outstanding)
        if free < 1:
            return
        self._collect()
        if self.mismatch:
            return
        busy = {self._lane(p) for trial in self.outstanding.values() for pack in trial for p in pack}
        ready = [lane for lane in self.parked if lane not in busy]
        if ready:
            self._plan(ready, free)
        elif not self.outstanding:
            self.finished = True
            if self.search.waiting():          # a trial returned fewer rows than it had members
                self.progress(f"{self.search.waiting()} probe(s) never got all their seeds' rows: left undecided")

    def _collect(self) -> None:
        """Park the probes the search can hand out now, by lane. On resume a probe whose run_id is already
        committed is not run: its recorded row is recorded at once (so the search replays the same decisions),
        and the search is asked again while that made more groups ready. `mismatch` when the first wave of a
        search whose first wave never changes matches no recorded run (`ResumeMismatch`)."""
        while (probes := self.search.next_round()) is not None:
            self.board.name(probes)        # every probe, recorded ones too: the same names on resume
            for p in probes:               # every probe's lane, replayed ones too: auto pack sizes count all lanes
                self._lane(p)
            run = [p for p in probes if p.member.run_id() not in self.recorded]
            if (self.search.round == 1 and self.search.same_first_round and self.recorded
                    and len(run) == len(probes)):
                self.mismatch = self.finished = True    # see `ResumeMismatch`
                return
            for p in run:
                self.parked.setdefault(self._lane(p), []).append(p)
            replay = [{**self.recorded[p.member.run_id()], **p.meta} for p in probes
                      if p.member.run_id() in self.recorded]
            if not replay:
                return
            self.resumed += len(replay)
            self.done_runs += len(replay)
            if run:
                self.progress(f"round {self.search.round}: {len(replay)} of {len(probes)} runs already recorded")
            else:
                self.progress(f"round {self.search.round}: all {len(probes)} runs already recorded | {self._elapsed()}")
            self._record(replay)

    def _lane(self, p: Probe) -> tuple:
        """A probe's lane: the pack key of its group's first probe (groups whose members may share a pack)."""
        return self.lanes.setdefault(p.meta["group"], p.member.pack_key())

    def _plan(self, lanes: list[tuple], free: int) -> None:
        """Pack each lane's parked probes of its lowest `round` (the groups' probe index: on resume a replayed
        group's later probe waits for its lane-mates) on their own, with a pack size that depends on the lane
        alone, so a member's pack never depends on timing; then spread the packs over `free` trials and say so
        (sweeps/progress.py reads the line)."""
        ex, probes, packs = self.spec.execution, [], []
        slots_per_lane = max(1, self.n_slots // max(len(set(self.lanes.values())), 1))
        for lane in lanes:
            parked = self.parked.pop(lane)
            low = min(p.meta.get("round", 0) for p in parked)
            batch = [p for p in parked if p.meta.get("round", 0) == low]
            if len(batch) < len(parked):
                self.parked[lane] = [p for p in parked if p.meta.get("round", 0) != low]
            size = ex.pack_size or auto_pack_size(len(batch), slots_per_lane)
            packs += [[len(probes) + i for i in pack]
                      for pack in plan_packs([p.member for p in batch], ex.max_waste, size, ex.pack_overhead)]
            probes += batch
        members = [p.member for p in probes]
        cap = ex.pack_size or max(auto_pack_size(len(members), free), max(map(len, packs)))
        trials = spread_packs(packs, members, free, cap)
        self.queue = [[[probes[i] for i in pack] for pack in trial] for trial in trials]
        groups = len({p.meta["group"] for p in probes})
        self.progress(f"round {self.search.round}: {len(probes)} runs ({groups} groups) in {len(trials)} trial(s), "
                      f"{len(packs)} pack(s) | {self._elapsed()}")

    def _elapsed(self) -> str:
        s = int(time.time() - self.t0)
        return f"{s // 60}m{s % 60:02d}s"

    def suggest(self, trial_id):
        if self.finished:
            return Searcher.FINISHED
        if not self.queue:
            self._refill()
            if self.finished:
                return Searcher.FINISHED
        if not self.queue:
            return None
        packs = self.queue.pop(0)
        self.outstanding[trial_id] = packs
        ex = self.spec.execution
        return {"packs": [[{**p.payload(), "tb": self.board.names.by_id[p.member.run_id()]} for p in pack]
                          for pack in packs], "out": self.out,
                "storage": join(self.out, "ray"), "cpus": ex.cpus_per_trial,
                "threads": ex.cpus_per_trial, "gpus": ex.gpus_per_trial, "workers": ex.workers_per_trial,
                "memory_fraction": ex.memory_fraction, "pruner": self.spec.search.pruner_payload(),
                "cuda_graphs": ex.cuda_graphs,
                "budget_bytes": self.budget_bytes, "sweep_meta": self.meta}

    def on_trial_result(self, trial_id, result):
        """A progress report from inside a long trial (sweeps/execute.py `throttled`)."""
        if "step" in result and "rows" not in result:
            self.progress(f"  trial {trial_id}: pack {result['pack']}/{result['packs']} at step {result['step']}/"
                          f"{result['steps']}, {result['active']}/{result['of']} members training | {self._elapsed()}")

    def on_trial_complete(self, trial_id, result=None, error=False):
        """Record the trial's rows with the search at once (its groups may advance while other trials run); a
        trial that failed after its retries gives `failed` rows, failures to the search."""
        packs = self.outstanding.pop(trial_id, None)
        if packs is None:
            return
        if error or not result or "rows" not in result:
            rows = failed_rows(packs, self.meta, trial_id, "trial failed after retries")
            ResultSink(self.out).write_trial(trial_id, rows, [], failed=True)     # part <trial>.<driver>-failed
        else:
            rows = json.loads(result["rows"])
        self.done_runs += len(rows)
        ok = sum(r.get("status") == "ok" for r in rows)
        self.ok_runs += ok
        self.board.trial_done(rows, self.done_runs, self.ok_runs, self.search.round)
        self.progress(f"  trial {trial_id}: {len(rows)} runs ({ok} ok) | total {self.done_runs} runs | {self._elapsed()}")
        self._record(rows)


class SweepBoard:
    """The driver's TensorBoard side (sweeps.tensorboard): run names (`RunNames`, handed to the workers in each
    member's payload), the sweep's HParams experiment config at DIR/tb (its hparam domains from the axes and the
    search; its metrics the search's, completed from the first rows) and sweep-level scalars at DIR/tb/sweep,
    stepped by runs done: `sweep/runs_done`, `sweep/runs_ok`, `sweep/round` (waves handed out so far) after each
    trial; after each record that completed a probe of a capacity search `search/thresholds_found`,
    `search/groups_censored`, `search/groups_open`, `threshold/<group>` per group found, and
    `search/exponent[/<curve>]`: the power-law slope of the found thresholds against `report.x`
    (analysis.powerlaw.fit_powerlaw; censored groups left out), once a curve has 3 of them. A failing write is
    said once and stops the board, never the sweep."""

    def __init__(self, spec: SweepSpec, out: str, progress):
        self.spec, self.progress = spec, progress
        self.tb = join(out, "tb")
        self.names = RunNames()
        self.searched = searched_domains(spec.search)
        self.domains = {**axis_domains(spec), **self.searched, "seed": spec.seed_list(), "run_id": str}
        self.metrics = dict.fromkeys(["train/loss", *search_metrics(spec.search)])
        self.scalars = SweepScalars(self.tb)
        self.ok = True
        self._write(self._config)

    def name(self, probes: list[Probe]) -> None:
        for p in probes:
            flat = p.member.flat()
            visible = run_name(p.meta.get("group", ""), {k: flat.get(k) for k in self.searched}, p.member.seed)
            self.names.name(p.member.run_id(), visible)

    def trial_done(self, rows: list[dict], done: int, ok: int, round_: int) -> None:
        new = [k for r in rows for k, v in r.items() if "/" in k and k not in self.metrics and isinstance(v, (int, float))]
        if new:
            self.metrics.update(dict.fromkeys(new))
            self._write(self._config)
        self._write(lambda: self.scalars.add(done, {"sweep/runs_done": done, "sweep/runs_ok": ok,
                                                    "sweep/round": round_}))

    def round_done(self, search, done: int) -> None:
        cap = getattr(search, "search", None)
        if isinstance(cap, CapacitySearch):
            self._write(lambda: self.scalars.add(done, capacity_scalars(cap, self.spec)))

    def close(self) -> None:
        self.scalars.close()

    def _config(self) -> None:
        write_experiment_config(self.tb, self.domains, {t: t.replace("/", " ").replace("_", " ") for t in self.metrics})

    def _write(self, action) -> None:
        if not self.ok:
            return
        try:
            action()
        except OSError as e:
            self.ok = False
            self.progress(f"TensorBoard: sweep-level events not written from now on ({e})")


def axis_domains(spec: SweepSpec) -> dict[str, list]:
    """Each axis column's values in grid order; a section-valued axis gives one column per key of its mappings."""
    domains: dict[str, list] = {}
    for point in spec.grid_points():
        for k, v in point.items():
            for key, u in ({f"{k}.{f}": u for f, u in v.items()} if isinstance(v, dict) else {k: v}).items():
                values = domains.setdefault(key, [])
                u = str(u) if isinstance(u, (list, dict)) else u
                if not any(u == w and type(u) is type(w) for w in values):
                    values.append(u)
    return domains


def searched_domains(search) -> dict:
    """The searched columns and their domains: a capacity search's `param` (its ladder; an interval past 32
    values), an Optuna search's `params` (an interval, or a categorical's choices)."""
    out: dict = {}
    if getattr(search, "param", ""):
        ladder = list(search.ladder_values())
        out[search.param] = ladder if len(ladder) <= 32 else (ladder[0], ladder[-1])
    for name, p in (getattr(search, "params", None) or {}).items():
        out[name] = list(p.choices) if p.type == "categorical" else (p.low, p.high)
    return out


def search_metrics(search) -> list[str]:
    """The metrics a search reads (success metric, objectives, pruning metric), in that order."""
    names = [search.columns().get("search.success", "")]
    if hasattr(search, "objectives"):
        names += [m for m, _ in search.objectives()]
    return [n for n in dict.fromkeys(names) if n]


def capacity_scalars(cap: CapacitySearch, spec: SweepSpec) -> dict[str, float]:
    """After a capacity probe is recorded: groups found / censored / open, each found threshold, and the exponent per curve
    (groups sharing every axis but `report.x`) with >= 3 found thresholds."""
    found = {g: cap.threshold(g) for g, s in cap.state.items() if s.next is None and s.ok is not None}
    censored = sum(s.next is None and s.ok is None for s in cap.state.values())
    out = {"search/thresholds_found": len(found), "search/groups_censored": censored,
           "search/groups_open": sum(s.next is not None for s in cap.state.values()),
           **{f"threshold/{g}": v for g, v in found.items()}}
    x = spec.report.x
    if x:
        curves: dict[str, list[tuple[float, float]]] = {}
        for point in spec.grid_points():
            g = group_label(point)
            if g in found and isinstance(point.get(x), (int, float)):
                curves.setdefault(group_label(point, exclude=(x,)), []).append((point[x], found[g]))
        for curve, xy in curves.items():
            fit = fit_powerlaw([a for a, _ in xy], [b for _, b in xy]) if len(xy) >= 3 else None
            if fit is not None and fit.ok:
                out["search/exponent" + (f"/{curve}" if curve else "")] = fit.exponent
    return out


class ResumeMismatch(SpecError):
    """Resume found runs recorded in DIR, but none of them is a run of the first wave that this code builds
    from DIR/spec.yaml. A grid or capacity search hands a group its next probe only once its previous one is
    recorded, and its first wave (every group's first probe) is always the same, so an interrupted sweep with any
    recorded run has recorded some of wave 1: its run_ids (hashes of the resolved configs) are not this code's
    (not checked for Optuna, whose resumed first wave is a later batch).
    That happens when the config schema changed since the sweep started (a new field changes every run_id);
    resuming would run the whole sweep again beside the old runs."""

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
    """Connect to `address`, or start a local Ray bound to 127.0.0.1 with token authentication (sweeps/access.py).
    Returns True if we started it. Outputs written from here on, by this process or Ray's, are not world-writable."""
    from sweeps.access import no_world_write, require_token_auth
    no_world_write()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address:
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        except (ConnectionError, ray.exceptions.AuthenticationError) as e:  # no cluster there; no or a wrong token
            raise SpecError(f"--address {address}: {' '.join(str(e).split())[:300]}") from None
        return False
    loopback_only()
    require_token_auth()
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


def tune_loggers_off() -> None:
    """No second TensorBoard/CSV/JSON tree under DIR/ray: Tune adds its TBX, CSV and JSON logger callbacks unless
    TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 when the Tuner starts (ray/tune/utils/callback.py). The results Tune
    would read back from those files (the ResultGrid tuner.fit returns, unused here) are then missing; its
    warning saying so is silenced. DIR/tb (sweeps.tensorboard) and the Parquet records are the sweep's outputs.
    Tune's upload of its own experiment state to DIR/ray races with its writes (Ray 2.60: a temporary
    `.tmp-search_gen_state-*.json` it is renaming vanishes between the syncer's listing and its copy, seen when a
    sweep ends at once) and logs the FileNotFoundError's traceback; ftsweep never reads that state back (resume
    reads the Parquet records), so that logger is silenced too."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)


def slots(ex, resources: dict) -> int:
    """Concurrent trials the cluster's resources allow: CPUs per trial, and GPUs per trial when on GPU; a trial
    of `workers_per_trial` Ray Train workers takes that many times both."""
    n = int(resources.get("CPU", 1) // (ex.cpus_per_trial * ex.workers_per_trial))
    if ex.gpus_per_trial > 0:
        n = min(n, int(resources.get("GPU", 0) // (ex.gpus_per_trial * ex.workers_per_trial) + 1e-9))
    return n


def auto_pack_size(n_members: int, n_slots: int) -> int:
    """`execution.pack_size: 0`: spread `n_members` evenly over `n_slots` (every core busy, fewest trials). The
    runner sizes a lane's packs with its share of the slots (n_slots // lanes, at least 1: `PackSearcher._plan`).
    Memory is the worker's concern: it cuts a pack that would not fit its share (`split_for_memory`)."""
    return max(1, math.ceil(n_members / max(n_slots, 1)))


def recorded_rows(out_dir: str) -> dict[str, dict]:
    """Resume: the committed runs rows of `out_dir` by run_id, leaving out the parts of `failed` rows (a trial
    that failed after its retries), so those runs are tried again. Reads only (creates nothing): `run_sweep`
    deletes those parts once every check has passed, so a resume refused by a check leaves DIR as it was."""
    return {r["run_id"]: r for r in ResultSink(out_dir, create=False).read_rows("runs", skip_suffix="-failed")}


def run_sweep(spec: SweepSpec, out_dir: str | Path, address: str | None = None, progress=print,
              resume: bool = False, prepare=None) -> dict:
    """Run `spec` into `out_dir` (a path or a pyarrow-filesystem URI); with `resume`, runs already committed
    there are not run again. `prepare()` (the CLI: create DIR, save spec.yaml) runs once Ray is up and has
    the resources a trial needs, so a mistaken address or execution section writes nothing."""
    out_dir = out_dir if is_uri(out_dir) else str(Path(out_dir).resolve())
    from sweeps.faults import check_env
    check_env(progress)                  # FTCORE_FAULT (tests): a bad value refused before any write; a set one named
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
        if resume:                          # after every check: the failed parts' runs are run again below
            ResultSink(out_dir).drop_parts("-failed")
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(n_slots)
        tune_loggers_off()
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
        try:
            tuner.fit()
        finally:
            searcher.board.close()
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
