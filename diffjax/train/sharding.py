"""Meshes and shardings for training: ``('data', 'fsdp')`` meshes, batch and parameter specs.

* The batch axis is split over both mesh axes (every device gets its own examples).
* Parameters are FSDP-sharded: each array is split along its largest dimension divisible by
  the ``fsdp`` axis size (big_vision's "fsdp" rule), arrays smaller than ``min_size``
  elements stay replicated. With ``fsdp = 1`` everything is replicated (pure data parallel).
  Models that carry logical axis names can instead pass explicit ``PartitionSpec`` trees.
* Multi-host: each host feeds its local batch to :func:`shard_batch`, which assembles the
  global array with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["make_mesh", "batch_sharding", "fsdp_spec", "param_shardings", "shard_batch",
           "replicated"]


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
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_spec(shape, fsdp_size: int, min_size: int = 2**12) -> P:
    """Shard the largest dimension divisible by ``fsdp_size``; replicate small arrays."""
    if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for axis in np.argsort(shape)[::-1]:
        if shape[axis] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def param_shardings(tree: Any, mesh: Mesh, min_size: int = 2**12) -> Any:
    """``NamedSharding`` for every array leaf of ``tree`` (shapes may be abstract)."""
    size = mesh.shape["fsdp"]

    def one(leaf):
        shape = getattr(leaf, "shape", ())
        return NamedSharding(mesh, fsdp_spec(tuple(shape), size, min_size) if shape else P())

    return jax.tree_util.tree_map(one, tree)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Assemble per-host numpy batches into global arrays sharded over the batch axis."""

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

    return jax.tree_util.tree_map(one, batch)
