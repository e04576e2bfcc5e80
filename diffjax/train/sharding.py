"""Meshes and shardings for training: ``('data', 'fsdp')`` meshes, batch and parameter specs.

* The batch axis is split over both mesh axes (every device gets its own examples).
* Parameters that carry logical axis names (every DiT/SiT/LightningDiT parameter: the
  ``out_sharding`` metadata set by :mod:`diffjax.models.layers`) are sharded by a rules table
  (:data:`diffjax.models.layers.DEFAULT_RULES`: ``embed -> 'fsdp'``, the rest replicated;
  MaxText's ``logical_axis_rules``), with the table's divisibility fallback. Parameters
  without names (the UNets, which are convolutions whose channel counts change per level) use
  the FSDP shape rule: each array is split along its largest dimension divisible by the
  ``fsdp`` axis size (big_vision's "fsdp" rule), arrays smaller than ``min_size`` elements stay
  replicated. With ``fsdp = 1`` everything is replicated (pure data parallel).
* Multi-host: each host feeds its local batch to :func:`shard_batch`, which assembles the
  global array with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["make_mesh", "batch_sharding", "fsdp_spec", "param_spec", "param_shardings",
           "shard_batch", "replicated"]


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


def param_spec(leaf: Any, mesh: Mesh, min_size: int = 2**12, rules: Any = None) -> P:
    """The ``PartitionSpec`` of one parameter-like leaf (an ``nnx.Variable`` or an array).

    Logical axis names (``nnx.Variable`` metadata ``out_sharding``) win; otherwise the FSDP
    shape rule of :func:`fsdp_spec` applies.
    """
    from diffjax.models.layers import logical_to_pspec

    names = None
    if isinstance(leaf, nnx.Variable):
        names = leaf.get_metadata().get("out_sharding")
        leaf = leaf.get_value()
    shape = tuple(getattr(leaf, "shape", ()))
    if not shape:
        return P()
    if names:
        if len(names) != len(shape):
            raise ValueError(f"logical axis names {tuple(names)} do not match the parameter "
                             f"shape {shape}")
        return logical_to_pspec(names, rules, mesh, shape)
    fsdp = mesh.shape["fsdp"] if "fsdp" in mesh.shape else 1
    return fsdp_spec(shape, fsdp, min_size)


def param_shardings(tree: Any, mesh: Mesh, min_size: int = 2**12, rules: Any = None) -> Any:
    """``NamedSharding`` for every parameter-like leaf of ``tree`` (shapes may be abstract).

    ``nnx.Variable`` leaves keep their wrapper (holding the sharding), so the result has the
    tree structure ``jax.jit(..., out_shardings=...)`` expects for ``tree``; optimizer states
    built by optax over an ``nnx.State`` carry the same variables and metadata, so moments are
    sharded like their parameters. See the module docstring for the two rules.
    """

    def one(leaf):
        sharding = NamedSharding(mesh, param_spec(leaf, mesh, min_size, rules))
        return leaf.replace(sharding) if isinstance(leaf, nnx.Variable) else sharding

    return jax.tree_util.tree_map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Assemble per-host numpy batches into global arrays sharded over the batch axis."""

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

    return jax.tree_util.tree_map(one, batch)
