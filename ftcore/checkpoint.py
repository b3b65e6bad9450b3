"""Checkpoints: what a member trained, as safetensors bytes (the frozen base a later sweep builds from one is
`ftcore.pack.load_base`).

A member trained with `train.save: final` leaves its *trainable* state only: for every trainable parameter p of
the adapted model, its own slice p[e] (padded entries included: a rank-r member of a pack padded to R keeps the
(in, R) block, whose columns past r are zero). The frozen base is not stored but named in the metadata, so a
checkpoint of a LoRA on a large base stays small (peft's `adapter_model.safetensors` does the same):

    format          "ftcore.member_state"          format_version  "1"
    run_id          the member's run_id
    config          the member's nested config as JSON (`MemberConfig.nested()`, `member_from_dict` takes it back)
    base            JSON: {"kind": "from", "run_id", "dir"}   (its own base was a checkpoint: a chain)
                          {"kind": "init", "model", "task", "seed"}  (the task's seeded random base)
                          {"kind": "hf", "path"}                (a Hugging Face model)

A later member with `model.from: {run_id, dir}` gets the base back as: rebuild the source's one-member pack
(E = 1, from its config and seed, recursively loading its own source), copy the saved slices into its trainable
parameters (cropped to the E = 1 shapes), and fold them in with `adapter.merged_base()` — a frozen base with
leading member dim 1 that the whole new pack shares (DESIGN.md §7). No Parquet and no Ray here; the sweep layer
writes the bytes (atomically, local or URI) and resolves `model.from` selectors.
"""
from __future__ import annotations

import dataclasses
import json
import re
import struct
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ftcore.config import MemberConfig, ModelFrom
from ftcore.tokenizers import is_hf

FORMAT, VERSION = "ftcore.member_state", "1"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def relative_path(run_id: str) -> str:
    """Where a run's checkpoint lies inside its sweep output directory (the runs row's `checkpoint`)."""
    return f"checkpoints/{run_id}.safetensors"


def checkpoint_path(source: ModelFrom) -> str:
    """DIR/checkpoints/<run_id>.safetensors for a path or a URI (a URI's ?query stays last)."""
    rel = relative_path(source.run_id)
    if not _URI.match(source.dir):
        return str(Path(source.dir) / rel)
    head, sep, query = source.dir.partition("?")
    return f"{head.rstrip('/')}/{rel}{sep}{query}"


# --------------------------------------------------------------------------- state and bytes
def member_state(model: nn.Module, e: int) -> dict[str, torch.Tensor]:
    """Member e's slice of every trainable parameter, on the CPU: {name: p[e]} (padded entries included)."""
    return {n: p.detach()[e].to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def base_identity(member: MemberConfig) -> dict:
    """What the member's frozen base was (not stored in its checkpoint)."""
    if member.source is not None:
        return {"kind": "from", **dataclasses.asdict(member.source)}
    if is_hf(member.model):
        return {"kind": "hf", "path": getattr(member.model, "path", "")}
    return {"kind": "init", "model": dataclasses.asdict(member.model), "task": member.task.name, "seed": member.seed}


def to_bytes(member: MemberConfig, state: dict[str, torch.Tensor]) -> bytes:
    """The member's checkpoint file: its trainable state and str -> str metadata (module docstring)."""
    meta = {"format": FORMAT, "format_version": VERSION, "run_id": member.run_id(),
            "config": json.dumps(member.nested(), sort_keys=True), "base": json.dumps(base_identity(member), sort_keys=True)}
    return st_save({n: t.contiguous() for n, t in state.items()}, metadata=meta)


def metadata(data: bytes) -> dict[str, str]:
    """The str -> str metadata of safetensors bytes (the JSON header's `__metadata__`)."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]).get("__metadata__", {})


def from_bytes(data: bytes) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, state) of a checkpoint; ValueError if it is not one of ours."""
    try:
        meta, state = metadata(data), st_load(data)
    except Exception as e:                         # a truncated or foreign file
        raise ValueError(f"not a safetensors checkpoint ({e})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"not an ftcore checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("format_version") != VERSION:
        raise ValueError(f"checkpoint format_version {meta.get('format_version')!r} is not supported ({VERSION})")
    return meta, state


def read_bytes(path: str) -> bytes:
    """A local path, or a URI read through pyarrow.fs (`file://`, `s3://`, ...)."""
    if not _URI.match(path):
        return Path(path).read_bytes()
    import pyarrow.fs as pafs
    fs, where = pafs.FileSystem.from_uri(path)
    with fs.open_input_stream(where) as f:
        return f.read()


@torch.no_grad()
def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved member slices into a one-member pack's trainable parameters (1, ...), cropping padded dims
    (a member saved from a pack padded past its own rank or width)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        raise ValueError(f"checkpoint does not fit its config's model (missing {missing[:3]}, unexpected {extra[:3]})")
    for n, p in params.items():
        t = state[n]
        if t.dim() != p.dim() - 1 or any(s < q for s, q in zip(t.shape, p.shape[1:])):
            raise ValueError(f"checkpoint tensor {n} {tuple(t.shape)} does not fit parameter {tuple(p.shape)}")
        p.copy_(t[tuple(slice(0, q) for q in p.shape[1:])].unsqueeze(0))
