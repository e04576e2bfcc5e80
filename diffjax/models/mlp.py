"""A small time-conditioned MLP for 2-D toy data (the spec's CPU-scale learning checks).

``x -> concat(x, sinusoidal(t_in), label embedding) -> [Linear, SiLU] x depth -> Linear``.
The call signature ``model(x, t_in, cond=None)`` matches the other diffjax networks, so
:func:`diffjax.models.as_denoiser` wraps it for the samplers and losses.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ToyMLP"]


class ToyMLP(nnx.Module):
    """Args: dim (data dimension), width, depth (hidden layers), time_dim (sinusoid size),
    time_scale (multiplies t before the sinusoid: 1000 for t in [0, 1]), num_classes (0: none;
    else a label table with a null row for classifier-free guidance)."""

    def __init__(self, dim: int = 2, width: int = 256, depth: int = 3, time_dim: int = 64,
                 time_scale: float = 1000.0, num_classes: int = 0, *, rngs: nnx.Rngs):
        self.dim, self.time_dim, self.time_scale, self.num_classes = dim, time_dim, time_scale, num_classes
        in_dim = dim + time_dim + (width if num_classes else 0)
        self.label = nnx.Embed(num_classes + 1, width, rngs=rngs) if num_classes else None
        self.layers = nnx.List([nnx.Linear(in_dim if i == 0 else width, width, rngs=rngs)
                                for i in range(depth)])
        self.out = nnx.Linear(width, dim, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x: jax.Array, t: jax.Array, cond: Any = None) -> jax.Array:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}); got {x.shape}")
        half = self.time_dim // 2
        freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
        a = (jnp.asarray(t, jnp.float32) * self.time_scale)[:, None] * freqs[None]
        h = jnp.concatenate([x, jnp.sin(a), jnp.cos(a)], axis=-1)
        if self.label is not None:
            y = cond["y"] if isinstance(cond, dict) else cond
            y = jnp.full((x.shape[0],), self.num_classes) if y is None else y
            h = jnp.concatenate([h, self.label(y)], axis=-1)
        for layer in self.layers:
            h = jax.nn.silu(layer(h))
        return self.out(h)
