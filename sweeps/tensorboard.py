"""TensorBoard events for a sweep: one run and one HParams session per member run, written live.

Layout (``tb_root`` is ``DIR/tb``)::

    tb_root/events.out.tfevents.*          experiment config (write_experiment_config, by the driver):
                                           the HParams dashboard's columns, domains and metrics
    tb_root/sweep/events.out.tfevents.*    sweep-level scalars (SweepScalars, by the driver): runs done,
                                           thresholds found per group, the fitted exponent per curve
    tb_root/<run name>/events.out.tfevents.*   one member run (LiveRun in a worker, or write_run_events):
        step 0           _hparams_/session_start_info   hparams of this run, its run_id among them
        each eval step   one Event: a simple_value per numeric metric of that evaluation
        last eval step   final metrics that differ from the last eval's (same tags as the metric_infos)
        last eval step   _hparams_/session_end_info     status (ok -> SUCCESS, diverged/failed -> FAILURE;
                                                        pruned -> UNKNOWN: TensorBoard has no "pruned", and a run
                                                        the search stopped early did not fail)

Run names say what varies (``run_name``): the grid point's axis values, then the searched values (capacity
parameter, Optuna proposals), then the seed, one path component each:
``adapter.depth=2/task.n=16/adapter.width=8/seed=0``.  The driver picks them (``RunNames``) so that two run_ids
with the same visible values get distinct names (``seed=0,run_id=1a2b3c4d``); the run_id itself is an hparam
of the session (and a column of the Parquet records).

Live writing (local or NFS ``tb_root``): a member's file is created at its first evaluation — after deleting the
events files an earlier attempt left in that run directory — and every evaluation appends one record and
flushes, so TensorBoard shows a run while its trial is still going.  The session end and the final metrics are
appended when the pack ends.  Crash safety: records are length-prefixed and CRC-checked, and TensorBoard's
reader stops at a record whose bytes are not all there yet, so a worker killed mid-write leaves a file whose
complete records all read back and whose torn tail is never shown.  A retried trial starts each member's file
anew (the old attempt's file is deleted first), so a re-run pack does not double its points; a TensorBoard
server that already showed the old attempt's points drops them when the new file restarts at step 0 (its
accumulator purges points at or after a step that goes backwards).  A trial that fails for good leaves its
last attempt's file without a session end.  No handle outlives a pack: files are closed when it ends, also
when training raises.

On object stores (``s3://``, ``gs://``, ... — any URI ``tb_root``) an object cannot be appended to, so a member's
events are kept in memory and its whole file is uploaded once when the pack ends (``write_run_events``: the
run shows up when its trial ends); ``file://`` URIs go the same way.  Whole files, locally too, are written to
a hidden temp name and renamed (TensorBoard only reads names containing "tfevents"), so no half file is read.

Why a session per run directory and not ``SummaryWriter.add_hparams``: add_hparams writes into a new
``<logdir>/<timestamp>/`` run, so every member would show up twice (curves run + hparams run) and its metrics
would live apart from its curves.  Here the run directory *is* the session: the plugin takes a session's
metric value as the last value of that tag in the session's own run, i.e. the final metric.  One experiment
config per sweep at ``tb_root`` (the plugin reads ``_hparams_/experiment`` from the first run that has one, so
per-run copies would let an arbitrary member define the columns).  No Ray, no torch: plain tensorboard protos.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import socket
import time
import uuid
from pathlib import Path

from google.protobuf import struct_pb2
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from sweeps.storage import Location, is_uri, join

_RUN_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.,=+-]*")    # one path component of a run name
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+-]")
_AXIS_SPLIT = re.compile(r",(?=[A-Za-z_][A-Za-z0-9_.]*=)")         # 'a.b=1,c=x,y' -> 'a.b=1', 'c=x,y'
_MAX_COMPONENT = 120
SWEEP_RUN = "sweep"                                                # tb_root/sweep: the driver's scalars
_STATUS = {"ok": api_pb2.STATUS_SUCCESS, "diverged": api_pb2.STATUS_FAILURE,
           "failed": api_pb2.STATUS_FAILURE, "pruned": api_pb2.STATUS_UNKNOWN}   # stopped by the search: not failed


# --------------------------------------------------------------------------- run names
def run_name(group: str, searched: dict, seed: int) -> str:
    """``<axis values>/<searched values>/seed=<s>``: the grid point's label (sweeps.grid.group_label,
    ``k=v,k=v``) split into one component per axis, then ``k=v`` per searched parameter (floats to 4
    significant digits), then the seed; characters outside ``[A-Za-z0-9_.,=+-]`` become ``_``."""
    parts = [p for p in _AXIS_SPLIT.split(group) if p] if group else []
    parts += [f"{k}={_text(v)}" for k, v in searched.items()]
    parts.append(f"seed={seed}")
    return "/".join(_safe(p) for p in parts)


def _text(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _safe(component: str) -> str:
    out = _UNSAFE.sub("_", component)[:_MAX_COMPONENT]
    return "_" + out[1:] if out.startswith(".") else out


class RunNames:
    """The driver's run names, unique per run_id: the first run_id to claim a visible name gets it, a later one
    with the same visible values gets ``<name>,run_id=<first 8 hex>`` (its full run_id if even that is taken).
    Deterministic for a search that proposes its probes in the same order (resume replays wave 1 on)."""

    def __init__(self):
        self.by_id: dict[str, str] = {}
        self.taken: set[str] = {SWEEP_RUN}

    def name(self, run_id: str, visible: str) -> str:
        if run_id not in self.by_id:
            name = next(n for n in (visible, f"{visible},run_id={run_id[:8]}", f"{visible},run_id={run_id}")
                        if n not in self.taken)
            self.taken.add(name)
            self.by_id[run_id] = name
        return self.by_id[run_id]


def check_run_name(name: str) -> None:
    """ValueError unless every ``/``-separated component is a safe, non-hidden file name."""
    parts = name.split("/") if isinstance(name, str) else [None]
    if not all(isinstance(p, str) and _COMPONENT_RE.fullmatch(p) and len(p) <= _MAX_COMPONENT for p in parts) \
            or parts[0] == SWEEP_RUN:
        raise ValueError(f"run name must be '/'-joined components [A-Za-z0-9_+-][A-Za-z0-9_.,=+-]*, got {name!r}")


# --------------------------------------------------------------------------- public API
def write_run_events(
    tb_root: Path | str | Location,
    run_id: str,
    curve_rows: list[dict],
    hparams: dict,
    final_metrics: dict,
    *,
    status: str = "ok",
    group: str = "",
    name: str | None = None,
) -> Path | str:
    """Write one member run's curves + HParams session as one whole file in ``tb_root/<name>/``.

    curve_rows: dicts with "step" and slash-named metrics (non-numeric/None skipped, bools
    as 0/1; "run_id" and other strings are ignored).  hparams: flat config values (None
    skipped, lists as JSON-ish strings).  final_metrics: numeric final values, written at the
    last curve step under their own tags.  ``group``: sessions sharing it are aggregated by
    the dashboard (e.g. the seeds of one config); empty = one group per run.  ``name``: the
    run's directory (``run_name``; default: the run_id).
    Returns the events file written (a ``Path`` for a plain-path root, else a URI string).
    """
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"run_id must match [A-Za-z0-9_-][A-Za-z0-9_.-]*, got {run_id!r}")
    name = run_id if name is None else name
    check_run_name(name)
    now = time.time()
    rows = sorted(curve_rows, key=lambda r: r["step"])
    events = [_start_event(hparams, group, now)]    # raises on bad hparams before any file exists
    events += [_scalars_event(int(r["step"]), now, v) for r in rows if (v := _numeric(r, skip=("step",)))]
    events += _end_events(final_metrics, rows[-1] if rows else {}, status, now)
    return _write_events_file(tb_root, name.split("/"), events)


class LiveRun:
    """One member run written as it trains: ``add(row)`` at every evaluation, ``close(finals, status)`` when
    its pack ends, ``abort()`` if training raised.  For a plain-path ``tb_root`` the file is created at the
    first ``add`` (older events files of the run directory deleted first: a retry starts anew) and every call
    appends and flushes; for a URI the events are kept and uploaded as one file by ``close``."""

    def __init__(self, tb_root: Path | str | Location, name: str, hparams: dict, group: str = ""):
        check_run_name(name)
        self.root, self.parts = tb_root, name.split("/")
        self.live = not (isinstance(tb_root, Location) or is_uri(tb_root))
        self.pending = [_start_event(hparams, group, time.time())]   # raises on bad hparams: no file yet
        self.last_row: dict = {}
        self.file: _AppendFile | None = None

    def add(self, row: dict) -> None:
        """One evaluation's row ({"step": s, metric: value, ...})."""
        values = _numeric(row, skip=("step",))
        self.last_row = row
        if values:
            self._emit([_scalars_event(int(row["step"]), time.time(), values)])

    def close(self, final_metrics: dict, status: str) -> Path | str | None:
        """Append the finals and the session end; -> the events file."""
        self._emit(_end_events(final_metrics, self.last_row, status, time.time()))
        if not self.live:
            return _write_events_file(self.root, self.parts, self.pending)
        path = self.file.path
        self.abort()
        return path

    def abort(self) -> None:
        """Close the file if open (no session end: the run stays 'unknown' until a retry replaces it)."""
        if self.file is not None:
            self.file.close()
            self.file = None

    def _emit(self, events: list[event_pb2.Event]) -> None:
        if not self.live:
            self.pending += events
            return
        if self.file is None:
            self.file = _AppendFile(Path(self.root, *self.parts))
            events, self.pending = self.pending + events, []
        self.file.write(events)


class SweepScalars:
    """The driver's sweep-level scalars in ``tb_root/sweep``: ``add(step, {tag: value})`` appends and flushes
    (plain path; the run's older events files are deleted when the first is written, so a resumed sweep starts
    its curves anew) or rewrites the run's whole file (URI: one small upload per call)."""

    def __init__(self, tb_root: Path | str | Location):
        self.root = tb_root
        self.live = not (isinstance(tb_root, Location) or is_uri(tb_root))
        self.events: list[event_pb2.Event] = []
        self.file: _AppendFile | None = None

    def add(self, step: int, values: dict) -> None:
        values = _numeric(values)
        if not values:
            return
        event = _scalars_event(int(step), time.time(), values)
        if not self.live:
            self.events.append(event)
            _write_events_file(self.root, [SWEEP_RUN], self.events)
            return
        if self.file is None:
            self.file = _AppendFile(Path(self.root, SWEEP_RUN))
        self.file.write([event])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def write_experiment_config(
    tb_root: Path | str | Location, hparam_domains: dict[str, list], metric_tags: list[str] | dict[str, str]
) -> Path:
    """Declare the HParams dashboard's columns at ``tb_root`` (run "." in TensorBoard).

    hparam_domains: name -> list of allowed values (discrete domain; None entries dropped;
    an empty list declares the column with no domain), a ``(lo, hi)`` tuple of numbers
    (interval domain, for continuously searched hparams) or the type ``str`` (a string
    column without a domain, e.g. run_id).  metric_tags: the final-metric tags in display
    order, or a mapping tag -> display name.  Hparams not named here do not appear as
    columns, so pass every config key that varies.  Rewriting replaces the previous config.
    """
    names = metric_tags if isinstance(metric_tags, dict) else dict.fromkeys(metric_tags, "")
    exp = api_pb2.Experiment(
        hparam_infos=[_hparam_info(k, v) for k, v in hparam_domains.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t), display_name=d) for t, d in names.items()],
        time_created_secs=time.time(),
    )
    event = _hparams_event(metadata.EXPERIMENT_TAG, 0, time.time(),
                           plugin_data_pb2.HParamsPluginData(experiment=exp))
    return _write_events_file(tb_root, [], [event])


def _start_event(hparams: dict, group: str, now: float) -> event_pb2.Event:
    return _hparams_event(metadata.SESSION_START_INFO_TAG, 0, now, _session_start(hparams, group, now))


def _end_events(final_metrics: dict, last_row: dict, status: str, now: float) -> list[event_pb2.Event]:
    """Finals not already logged by the last row, then the session end, at the last row's step."""
    last_step = int(last_row.get("step", 0))
    events = []
    finals = _new_final_values(_numeric(final_metrics), last_row, last_step)
    if finals:
        events.append(_scalars_event(last_step, now, finals))
    end = plugin_data_pb2.SessionEndInfo(status=_STATUS.get(status, api_pb2.STATUS_UNKNOWN), end_time_secs=now)
    events.append(_hparams_event(metadata.SESSION_END_INFO_TAG, last_step, now,
                                 plugin_data_pb2.HParamsPluginData(session_end_info=end)))
    return events


# --------------------------------------------------------------------------- values
def _numeric(row: dict, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """Scalar-able entries of a row: bools as 0/1, reals as float, everything else dropped."""
    out = {}
    for key, value in row.items():
        if key in skip or value is None:
            continue
        if isinstance(value, (bool, numbers.Real)):
            out[key] = float(value)
    return out


def _new_final_values(finals: dict[str, float], last_row: dict, last_step: int) -> dict:
    """Final metrics minus those the last curve row already logged with the same value,
    so an unchanged metric does not get a second point at the last step."""
    logged = _numeric(last_row, skip=("step",)) if last_row.get("step") == last_step else {}
    return {k: v for k, v in finals.items() if not _same(logged.get(k), v)}


def _same(a: float | None, b: float) -> bool:
    return a is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def _hparam_value(value) -> struct_pb2.Value | None:
    """Config value -> protobuf Value; bool before number because bool is an int."""
    if value is None:
        return None
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, numbers.Real):
        return struct_pb2.Value(number_value=float(value))
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    if isinstance(value, (list, tuple)):
        return struct_pb2.Value(string_value=str(list(value)))
    raise TypeError(f"hparam value of type {type(value).__name__} not supported: {value!r}")


def _session_start(hparams: dict, group: str, now: float) -> plugin_data_pb2.HParamsPluginData:
    start = plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=now)
    for key, value in hparams.items():
        pb = _hparam_value(value)
        if pb is not None:
            start.hparams[key].CopyFrom(pb)
    return plugin_data_pb2.HParamsPluginData(session_start_info=start)


def _hparam_info(name: str, domain) -> api_pb2.HParamInfo:
    """Column declaration: interval for a (lo, hi) tuple, else a typed discrete domain
    (mixed kinds become strings, which is how the dashboard would compare them anyway)."""
    if domain is str:
        return api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_STRING)
    if isinstance(domain, tuple):
        lo, hi = (float(x) for x in domain)
        return api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_FLOAT64,
                                  domain_interval=api_pb2.Interval(min_value=lo, max_value=hi))
    values = [v for v in domain if v is not None]
    if all(isinstance(v, bool) for v in values):
        dtype = api_pb2.DATA_TYPE_BOOL if values else api_pb2.DATA_TYPE_UNSET
    elif all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        dtype = api_pb2.DATA_TYPE_FLOAT64
    else:
        dtype, values = api_pb2.DATA_TYPE_STRING, [str(v) for v in values]
    info = api_pb2.HParamInfo(name=name, type=dtype)
    if values:
        info.domain_discrete.values.extend(_hparam_value(v) for v in values)
    return info


# --------------------------------------------------------------------------- events
def _scalars_event(step: int, wall_time: float, values: dict[str, float]) -> event_pb2.Event:
    """One Event per step holding every metric: fewer records than one per (step, tag)."""
    summary = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    return event_pb2.Event(step=step, wall_time=wall_time, summary=summary)


def _hparams_event(tag: str, step: int, wall_time: float,
                   data: plugin_data_pb2.HParamsPluginData) -> event_pb2.Event:
    value = summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data),
                                      tensor=metadata.NULL_TENSOR)
    return event_pb2.Event(step=step, wall_time=wall_time,
                           summary=summary_pb2.Summary(value=[value]))


def _events_name() -> str:
    token = uuid.uuid4().hex[:8]
    return f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{token}"


class _AppendFile:
    """A new events file in a local directory, appended and flushed record by record; creating it deletes the
    directory's older events files (an earlier attempt's)."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("events.out.tfevents.*"):
            old.unlink(missing_ok=True)
        self.path = directory / _events_name()
        self._f = open(self.path, "xb")                 # noqa: SIM115  (closed by close())
        self._writer = RecordWriter(self._f)
        self.write([event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")])

    def write(self, events: list[event_pb2.Event]) -> None:
        for event in events:
            self._writer.write(event.SerializeToString())
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _write_events_file(tb_root: Path | str | Location, sub: list[str],
                       events: list[event_pb2.Event]) -> Path | str:
    """Write events (after the file_version header) to a new events file in ``tb_root/*sub``,
    atomically, then delete the directory's older events files (a retry replaces them)."""
    directory = Location.of(tb_root).child(*sub)
    directory.mkdir()
    name = _events_name()
    token = name.rsplit(".", 1)[1]
    header = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
    with directory.child(name).open_atomic(f".{token}.tmp") as f:
        writer = RecordWriter(f)
        for event in [header, *events]:
            writer.write(event.SerializeToString())
    for old in directory.files("events.out.tfevents.*"):
        if old.base_name != name:
            directory.child(old.base_name).delete()
    if isinstance(tb_root, Location) or is_uri(tb_root):
        return join(directory.where, name)
    return Path(tb_root, *sub, name)
