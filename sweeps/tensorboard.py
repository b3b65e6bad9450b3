"""TensorBoard events for a sweep: one run directory and one HParams session per member run.

Layout (``tb_root`` is usually ``DIR/tb``)::

    tb_root/events.out.tfevents.*            experiment summary (write_experiment_config):
                                             the HParams dashboard's columns and domains
    tb_root/<run_id>/events.out.tfevents.*   one file per member run (write_run_events):
        step 0           _hparams_/session_start_info   hparams of this run
        step s (sorted)  one Event per curve row: a simple_value per numeric metric
        last curve step  final metrics, same tags as the experiment's metric_infos
        last curve step  _hparams_/session_end_info     status (ok -> SUCCESS, else FAILURE)

Why this layout and not ``SummaryWriter.add_hparams``: add_hparams writes into a new
``<logdir>/<timestamp>/`` run, so every member would show up twice (curves run + hparams run)
and its metrics would live apart from its curves.  Here the run directory *is* the session:
the plugin takes a session's metric value as the last value of that tag in the session's
own run, i.e. the final metric, and clicking the session shows the whole curve.

Why not an experiment summary per run: the plugin reads ``_hparams_/experiment`` from the
first run that has one, so per-run copies would make one arbitrary member define the
columns.  Without any experiment summary the plugin derives the columns from all sessions'
start infos and scalar tags, so per-run sessions alone are a complete dashboard;
``write_experiment_config`` adds declared domains and metric order on top.

``tb_root`` may be a local/NFS path or a URI of a pyarrow filesystem (``s3://bucket/x/tb``,
``file:///abs/tb``); paths are joined with ``sweeps.storage``.  TensorBoard reads such URIs
with its own file layer.

Files are written synchronously to a hidden temp name, then renamed (TensorBoard only reads
names containing "tfevents"), so no writer thread or handle outlives the call and a killed
worker leaves no half file.  On object stores (S3, GCS, Azure) the file is built in memory
and uploaded as one object instead, visible only once complete.  A retry replaces the directory's older events files, so a
re-run pack does not double its points.  No Ray, no torch: plain tensorboard protos.
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
_STATUS = {"ok": api_pb2.STATUS_SUCCESS, "diverged": api_pb2.STATUS_FAILURE,
           "failed": api_pb2.STATUS_FAILURE}


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
) -> Path:
    """Write one member run's curves + HParams session to ``tb_root/<run_id>/``.

    curve_rows: dicts with "step" and slash-named metrics (non-numeric/None skipped, bools
    as 0/1; "run_id" and other strings are ignored).  hparams: flat config values (None
    skipped, lists as JSON-ish strings).  final_metrics: numeric final values, written at the
    last curve step under their own tags.  ``group``: sessions sharing it are aggregated by
    the dashboard (e.g. the seeds of one config); empty = one group per run.
    Returns the events file written (a ``Path`` for a plain-path root, else a URI string).
    """
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"run_id must match [A-Za-z0-9_-][A-Za-z0-9_.-]*, got {run_id!r}")
    now = time.time()
    rows = sorted(curve_rows, key=lambda r: r["step"])
    last_step = int(rows[-1]["step"]) if rows else 0
    start = _session_start(hparams, group, now)  # raises on bad hparams before any file exists
    events = [_hparams_event(metadata.SESSION_START_INFO_TAG, 0, now, start)]
    for row in rows:
        values = _numeric(row, skip=("step",))
        if values:
            events.append(_scalars_event(int(row["step"]), now, values))
    finals = _new_final_values(_numeric(final_metrics), rows[-1] if rows else {}, last_step)
    if finals:
        events.append(_scalars_event(last_step, now, finals))
    end = plugin_data_pb2.SessionEndInfo(status=_STATUS.get(status, api_pb2.STATUS_UNKNOWN),
                                         end_time_secs=now)
    events.append(_hparams_event(metadata.SESSION_END_INFO_TAG, last_step, now,
                                 plugin_data_pb2.HParamsPluginData(session_end_info=end)))
    return _write_events_file(tb_root, [run_id], events)


def write_experiment_config(
    tb_root: Path | str | Location, hparam_domains: dict[str, list], metric_tags: list[str]
) -> Path:
    """Declare the HParams dashboard's columns at ``tb_root`` (run "." in TensorBoard).

    hparam_domains: name -> list of allowed values (discrete domain; None entries dropped;
    an empty list declares the column with no domain) or a ``(lo, hi)`` tuple of numbers
    (interval domain, for continuously searched hparams).  metric_tags: the final-metric
    tags, in display order.  Hparams not named here do not appear as columns, so pass
    every config key that varies.  Rewriting replaces the previous config.
    """
    exp = api_pb2.Experiment(
        hparam_infos=[_hparam_info(k, v) for k, v in hparam_domains.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metric_tags],
        time_created_secs=time.time(),
    )
    event = _hparams_event(metadata.EXPERIMENT_TAG, 0, time.time(),
                           plugin_data_pb2.HParamsPluginData(experiment=exp))
    return _write_events_file(tb_root, [], [event])


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


def _write_events_file(tb_root: Path | str | Location, sub: list[str],
                       events: list[event_pb2.Event]) -> Path | str:
    """Write events (after the file_version header) to a new events file in ``tb_root/*sub``,
    atomically, then delete the directory's older events files (a retry replaces them)."""
    directory = Location.of(tb_root).child(*sub)
    directory.mkdir()
    token = uuid.uuid4().hex[:8]
    host, pid = socket.gethostname(), os.getpid()
    name = f"events.out.tfevents.{int(time.time()):010d}.{host}.{pid}.{token}"
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
