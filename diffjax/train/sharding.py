"""Meshes and batch shardings for training: ``('data', 'fsdp')`` meshes, batch specs.

* The batch axis is split over both mesh axes (every device gets its own examples).
* Parameters, optimizer moments and EMAs are placed by the library's one names-to-sharding
  mapper, :func:`diffjax.models.layers.logical_to_mesh_sharding` (used by
  :func:`diffjax.train.state_shardings`): logical axis names through a rules table first
  (:data:`diffjax.models.layers.DEFAULT_RULES`: ``embed -> 'fsdp'``), then, for arrays the rules
  leave off the ``fsdp`` axis, the FSDP shape rule (the largest still-replicated dimension
  divisible by the ``fsdp`` axis size; arrays under 4096 elements stay replicated). DiTs are
  sharded by their names, the UNets (DDPM, ADM, NCSN++, whose ``channels_in`` /
  ``channels_out`` names have no rule) by shape; tests/test_sharding.py checks that >= 99 % of
  every family's state bytes are split. With ``fsdp = 1`` everything is replicated (pure data
  parallel).
* Multi-host: configs give the global batch (``data.batch_size``); each host loads
  ``global / process_count`` rows (:func:`diffjax.data.pipeline.per_host_batch_size`) and feeds
  them to :func:`shard_batch`, which assembles the global array with
  ``jax.make_array_from_process_local_data`` (host ``i``'s rows land on its own devices).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["make_mesh", "batch_sharding", "shard_batch", "replicated"]


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """A ``('data', 'fsdp')`` mesh over ``devices`` (default: all); ``-1`` takes the rest."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise ValueError(f"fsdp={fsdp} must divide the device count {n}")
    if data == -1:
        data = n // fsdp
    if data < 1 or data * fsdp > n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} needs more than the {n} devices")
    devices = devices[: data * fsdp]  # an explicit smaller mesh uses the first devices
    return Mesh(np.asarray(devices).reshape(data, fsdp), ("data", "fsdp"))


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading (batch) axis of an ``ndim``-dimensional array split over ``('data', 'fsdp')``."""
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Assemble per-host numpy batches into global arrays sharded over the batch axis."""

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

    return jax.tree_util.tree_map(one, batch)
