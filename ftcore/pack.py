"""A pack: the task and the adapted model that E member runs sharing a pack key train together (DESIGN.md §3),
built on the CPU from the members' generators. A member with `model.from` trains over a trained base: the source
run's one-member pack rebuilt from its checkpoint (ftcore.checkpoint: the bytes) with its trained slices copied in
and folded into a frozen base (`adapter.merged_base()`), recursively for a chain of sources.
"""
from __future__ import annotations

import copy
import json
from collections import OrderedDict

import torch
from torch import nn

import ftcore.adapters  # noqa: F401  (registers adapters)
import ftcore.models  # noqa: F401
import ftcore.tasks  # noqa: F401
from ftcore.adapters.base import build_adapter
from ftcore.checkpoint import checkpoint_path, from_bytes, load_state, read_bytes
from ftcore.config import MemberConfig, ModelFrom, member_from_dict
from ftcore.registry import TASKS
from ftcore.seeding import generators


def step_hook(model):
    """The base's `train_kwargs(step)` (per-step forward keywords: the looped transformer's curriculum), or None."""
    return getattr(getattr(model, "base", model), "train_kwargs", None)


def check_pack(members: list[MemberConfig]) -> None:
    keys = {m.pack_key() for m in members}
    if len(keys) != 1:
        raise ValueError("a pack's members must agree outside their per-member fields (seed, lr, rank, ...)")


def build_pack(members: list[MemberConfig], dtype: torch.dtype, device: torch.device | str = "cpu"):
    """-> (task, adapted model) for the pack, in `dtype` on `device` (built on the CPU from the members'
    generators, then moved, so a member's numbers do not depend on the device it trains on)."""
    c0, seeds = members[0], [m.seed for m in members]
    task = TASKS.get_entry(c0.task.name)([m.task for m in members], c0.model, seeds)
    base = task.build_base()                  # also the task's data
    if c0.source is not None:                 # model.from: the trained base, one (1, ...) copy shared by the pack
        base = load_base(c0.source).to(torch.float32)     # built like the task's own base, cast with the pack below
        if hasattr(base, "for_members"):                   # parameters each member trains from the source's
            base = base.for_members(len(members))
        task.use_base(base)                                # tasks whose labels derive from the base
    elif hasattr(base, "embed_words") and (words := task.input_words(c0.task)):
        base.embed_words(words)               # a pretrained model reads the task's words as its own tokens
    teacher = task.teacher_source()
    if teacher is not None:                   # task.teacher: a distilling task's teacher, loaded like a base
        task.use_teacher(load_base(ModelFrom(*teacher)).to(torch.float32))
    in_dim, out_dim = task.io_dims(c0.task, c0.model)
    model = build_adapter([m.adapter for m in members], base, in_dim, out_dim, generators(seeds, "adapter"))
    model.run_ids = [m.run_id() for m in members]     # pack position -> run_id (states of members compacted away)
    return task.to(dtype, device), model.to(device, dtype)


_CACHE: OrderedDict[tuple[str, str], nn.Module] = OrderedDict()
_CACHE_SIZE = 2


def load_base(source: ModelFrom) -> nn.Module:
    """The frozen base a member with `model.from` trains on: the source run's trained model merged, leading
    member dim 1, on the CPU (a fresh copy each call; the merged base is cached per process, since compaction
    and the next packs of a trial rebuild packs over the same base)."""
    key = (source.run_id, source.dir)
    if key not in _CACHE:
        _CACHE[key] = rebuild(*from_bytes(read_bytes(checkpoint_path(source))), expect=source.run_id)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return copy.deepcopy(_CACHE[key])


def rebuild(meta: dict[str, str], state: dict[str, torch.Tensor], expect: str | None = None) -> nn.Module:
    """Checkpoint -> merged base (1, ...): the source's one-member pack with its trained state copied in."""
    member = member_from_dict(json.loads(meta["config"]))
    if expect is not None and meta.get("run_id") != expect:
        raise ValueError(f"model.from: checkpoint of run {meta.get('run_id')!r} found where run {expect!r} was expected")
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in state.values()) else torch.float32
    _, model = build_pack([member], dtype, "cpu")
    load_state(model, state)
    return model.merged_base()
