"""A probe: one member run of a search's round, as a typed config and the columns the search adds to its row.

The driver builds probes from typed configs (sweeps.grid.build_member) and ships their JSON-able `payload` in the
Tune trial's config; the worker types each payload once at the trial's entry (`from_payload`), so a config is
parsed once on each side of the wire and never again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ftcore.config import MemberConfig, member_from_dict


@dataclass
class Probe:
    member: MemberConfig
    meta: dict = field(default_factory=dict)     # group, round, search/optuna columns

    def payload(self) -> dict:
        """JSON-able form shipped to the worker."""
        return {"config": self.member.nested(), "meta": self.meta}     # a trained base as model.from

    @classmethod
    def from_payload(cls, payload: dict) -> Probe:
        return cls(member_from_dict(payload["config"]), dict(payload.get("meta", {})))
