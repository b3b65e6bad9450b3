"""Adapters. Importing this package registers every adapter."""
from ftcore.adapters import additive_relu, delta, lora  # noqa: F401
from ftcore.adapters.base import Adapter, build_adapter  # noqa: F401
