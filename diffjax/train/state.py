"""The training state: one pytree ``{step, params, opt_state, ema, rng, skipped}``.

``rng`` is stored as raw ``uint32`` key data so checkpoints need no special key handling;
``skipped`` counts updates dropped because the loss or a gradient was not finite.
:func:`create_train_state` builds the state already sharded: the initialiser is traced
abstractly (``jax.eval_shape``), shardings are chosen from the abstract shapes, and
``jax.jit(init, out_shardings=...)`` materialises every array directly on its devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from diffjax.train.sharding import param_shardings, replicated

__all__ = ["TrainState", "create_train_state", "state_shardings"]


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema: dict
    rng: jax.Array
    skipped: jax.Array

    def key(self):
        return jax.random.wrap_key_data(self.rng)


def _init_state(init_params: Callable, optimizer: optax.GradientTransformation,
                ema_names, rng_data):
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
    )


def state_shardings(abstract_state: TrainState, mesh) -> TrainState:
    """Parameters, EMAs and optimizer moments FSDP-sharded; scalars replicated."""
    rep = replicated(mesh)
    return TrainState(
        step=rep,
        params=param_shardings(abstract_state.params, mesh),
        opt_state=param_shardings(abstract_state.opt_state, mesh),
        ema=param_shardings(abstract_state.ema, mesh),
        rng=rep,
        skipped=rep,
    )


def create_train_state(init_params: Callable[[jax.Array], Any],
                       optimizer: optax.GradientTransformation, *, seed: int = 0,
                       ema_names=("ema",), mesh=None) -> TrainState:
    """Create the state with ``init_params(key) -> params`` (a pure function of a key).

    With a ``mesh`` the state is created sharded (see :func:`state_shardings`).
    """
    rng_data = jax.random.key_data(jax.random.key(seed))
    fn = lambda r: _init_state(init_params, optimizer, tuple(ema_names), r)
    if mesh is None:
        return jax.jit(fn)(rng_data)
    abstract = jax.eval_shape(fn, rng_data)
    return jax.jit(fn, out_shardings=state_shardings(abstract, mesh))(rng_data)
