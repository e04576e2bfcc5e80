"""The training state: one pytree ``{step, params, opt_state, ema, rng, skipped, extra}``.

``rng`` is stored as raw ``uint32`` key data so checkpoints need no special key handling;
``skipped`` counts updates dropped because the loss or a gradient was not finite; ``extra``
holds method state that is neither a parameter nor an optimizer moment but must be carried and
checkpointed with them (iDDPM's loss history for importance sampling,
:class:`~diffjax.losses.timesteps.ResamplerState`; empty for most methods).
:func:`create_train_state` builds the state already sharded: the initialiser is traced
abstractly (``jax.eval_shape``), shardings are chosen from the abstract shapes (and the
parameters' logical axis names, :func:`diffjax.models.layers.logical_to_mesh_sharding`), and
``jax.jit(init, out_shardings=...)`` materialises every array directly on its devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from diffjax.models.layers import logical_to_mesh_sharding
from diffjax.train.sharding import replicated

__all__ = ["TrainState", "abstract_train_state", "create_train_state", "state_shardings"]


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema: dict
    rng: jax.Array
    skipped: jax.Array
    extra: dict = struct.field(default_factory=dict)

    def key(self):
        return jax.random.wrap_key_data(self.rng)


def _init_state(init_params: Callable, optimizer: optax.GradientTransformation,
                ema_names, init_extra, rng_data):
    key = jax.random.wrap_key_data(rng_data)
    k_params, k_state = jax.random.split(key)
    params = init_params(k_params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema={name: jax.tree_util.tree_map(jnp.copy, params) for name in ema_names},
        rng=jax.random.key_data(k_state),
        skipped=jnp.zeros((), jnp.int32),
        extra=dict(init_extra() if init_extra is not None else {}),
    )


def state_shardings(abstract_state: TrainState, mesh, rules=None) -> TrainState:
    """Parameters, EMAs and optimizer moments sharded by
    :func:`diffjax.models.layers.logical_to_mesh_sharding` (logical axis names through
    ``rules`` first, then the FSDP shape rule for arrays the rules leave off the ``fsdp`` axis);
    scalars and ``extra`` replicated.

    Optimizer moments and EMAs mirror the parameter tree (optax and :func:`update_emas` map
    over it, keeping each ``nnx.Variable``'s metadata), so they receive exactly the
    parameters' shardings: the update is then element-wise on every device, with no
    communication.
    """
    rep = replicated(mesh)
    shard = lambda tree: logical_to_mesh_sharding(tree, mesh, rules)
    return TrainState(
        step=rep,
        params=shard(abstract_state.params),
        opt_state=shard(abstract_state.opt_state),
        ema=shard(abstract_state.ema),
        rng=rep,
        skipped=rep,
        extra=jax.tree_util.tree_map(lambda _: rep, abstract_state.extra),
    )


def create_train_state(init_params: Callable[[jax.Array], Any],
                       optimizer: optax.GradientTransformation, *, seed: int = 0,
                       ema_names=("ema",), mesh=None, init_extra: Callable[[], dict] | None = None,
                       rules=None) -> TrainState:
    """Create the state with ``init_params(key) -> params`` (a pure function of a key).

    Args:
      init_params: ``key -> params`` (e.g. ``nnx.state(Model(rngs=nnx.Rngs(key)), nnx.Param)``).
      optimizer: the optax transformation whose state is created here.
      seed: seeds the parameter key and the state's training key.
      ema_names: one EMA copy of the parameters per name.
      mesh: create the state sharded on this mesh (see :func:`state_shardings`).
      init_extra: ``() -> dict`` of extra method state (see the module docstring).
      rules: logical-axis rules for the parameters (default
        :data:`diffjax.models.layers.DEFAULT_RULES`).
    """
    rng_data = jax.random.key_data(jax.random.key(seed))
    fn = lambda r: _init_state(init_params, optimizer, tuple(ema_names), init_extra, r)
    if mesh is None:
        return jax.jit(fn)(rng_data)
    abstract = jax.eval_shape(fn, rng_data)
    return jax.jit(fn, out_shardings=state_shardings(abstract, mesh, rules))(rng_data)


def abstract_train_state(init_params: Callable[[jax.Array], Any],
                         optimizer: optax.GradientTransformation, *, seed: int = 0,
                         ema_names=("ema",), mesh=None,
                         init_extra: Callable[[], dict] | None = None,
                         rules=None) -> TrainState:
    """The state :func:`create_train_state` would build, as ``jax.ShapeDtypeStruct`` leaves
    carrying their final shardings; nothing is allocated.

    Restoring a checkpoint into this target (orbax ``StandardRestore``) writes every array
    straight onto its devices, so resuming peaks at the memory of a fresh start instead of a
    fresh start plus the restored copy. Arguments as :func:`create_train_state`; without a
    ``mesh`` every array targets the first device.
    """
    rng_data = jax.random.key_data(jax.random.key(seed))
    fn = lambda r: _init_state(init_params, optimizer, tuple(ema_names), init_extra, r)
    abstract = jax.eval_shape(fn, rng_data)
    if mesh is None:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                                     sharding=dev), abstract)
    return jax.tree_util.tree_map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract,
        state_shardings(abstract, mesh, rules))
