"""Registries: plain dicts keyed by short names (dtsip `get_task_sampler`, optuna `samplers/__init__.py`).

Every entry is a class with a `Config` dataclass (its schema) and a `per_member` tuple naming the config
fields that may differ between the members of one pack (everything else must match: it fixes shapes).
"""
from __future__ import annotations


class Registry(dict):
    """A dict of name -> class that refuses unknown names with the list of valid ones."""

    def __init__(self, kind: str, key: str = "name"):
        super().__init__()
        self.kind, self.key = kind, key       # the config field that names an entry (`model.name`, `search.kind`)

    def register(self, name: str):
        def deco(cls):
            if name in self:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            cls.registry_name = name
            self[name] = cls
            return cls
        return deco

    def get_entry(self, name: str):
        if name not in self:
            raise ValueError(f"{self.kind}.{self.key}: unknown {self.kind} '{name}'; valid: {', '.join(sorted(self))}")
        return self[name]


MODELS = Registry("model")
ADAPTERS = Registry("adapter")
TASKS = Registry("task")
BATCHINGS = Registry("batch_selection")
