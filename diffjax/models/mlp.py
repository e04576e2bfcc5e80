"""A small time-conditioned MLP for 2-D toy data (the spec's CPU-scale learning checks).

``x -> concat(x, sinusoidal(t_in), [sinusoidal(s)], [label embedding]) -> [Linear, SiLU] x
depth -> Linear``. The call signature ``model(x, t_in, cond=None)`` matches the other diffjax
networks, so :func:`diffjax.models.as_denoiser` wraps it for the samplers and losses.

With ``second_scalar=True`` the network also reads ``cond['s']``, a second per-example scalar
(the shortcut step level ``log2(1/d)`` of Frans et al. 2024, or IMM's target time ``s`` of
Zhou et al. 2025), exactly as :class:`diffjax.models.dit.DiT` does with ``second_scalar``:
``cond`` is then a dict ``{'s': (B,), 'y': labels}`` (``'y'`` only for class-conditional
models). ``s`` is embedded as given (no ``time_scale``), like DiT's second timestep embedder, so
the caller chooses its scale (the integer level, or ``1000 s``).
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
    else a label table with a null row for classifier-free guidance), second_scalar (also embed
    ``cond['s']``, see the module docstring)."""

    def __init__(self, dim: int = 2, width: int = 256, depth: int = 3, time_dim: int = 64,
                 time_scale: float = 1000.0, num_classes: int = 0, second_scalar: bool = False,
                 *, rngs: nnx.Rngs):
        self.dim, self.time_dim, self.time_scale = dim, time_dim, time_scale
        self.num_classes = num_classes
        self.second_scalar = bool(second_scalar)
        in_dim = dim + time_dim * (2 if second_scalar else 1) + (width if num_classes else 0)
        self.label = nnx.Embed(num_classes + 1, width, rngs=rngs) if num_classes else None
        self.layers = nnx.List([nnx.Linear(in_dim if i == 0 else width, width, rngs=rngs)
                                for i in range(depth)])
        self.out = nnx.Linear(width, dim, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x: jax.Array, t: jax.Array, cond: Any = None, *, train: bool = False,
                 rngs: Any = None) -> jax.Array:
        """``train``/``rngs`` are accepted for the trainer's common call and unused (no
        dropout, and labels are dropped by the losses)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}); got {x.shape}")
        half = self.time_dim // 2
        freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
        a = (jnp.asarray(t, jnp.float32) * self.time_scale)[:, None] * freqs[None]
        h = jnp.concatenate([x, jnp.sin(a), jnp.cos(a)], axis=-1)
        s = cond.get("s") if isinstance(cond, dict) else None
        if self.second_scalar:
            if s is None:
                raise ValueError("this ToyMLP has second_scalar=True: cond must be a dict with "
                                 "'s' (B,)")
            s = jnp.broadcast_to(jnp.asarray(s, jnp.float32), (x.shape[0],))
            b = s[:, None] * freqs[None]
            h = jnp.concatenate([h, jnp.sin(b), jnp.cos(b)], axis=-1)
        elif s is not None:
            raise ValueError("cond['s'] given but the ToyMLP has second_scalar=False")
        if self.label is not None:
            y = cond.get("y") if isinstance(cond, dict) else cond
            y = jnp.full((x.shape[0],), self.num_classes) if y is None else y
            h = jnp.concatenate([h, self.label(y)], axis=-1)
        for layer in self.layers:
            h = jax.nn.silu(layer(h))
        return self.out(h)
