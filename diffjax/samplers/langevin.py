"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1, in the reference code's form).

At each noise level ``sigma_i`` (a grid point), ``n_steps_each`` updates

    x <- x + a_i score(x, sigma_i) + sqrt(2 a_i) z,     a_i = eps (sigma_i / sigma_L)^2

(ermongroup/ncsn ``anneal_Langevin_dynamics``: the paper writes ``a/2`` and ``sqrt(a)``, the
code's form reproduces its numbers; defaults eps = 2e-5, sigma_L = 0.01, 100 steps each).
Each driver step runs the level ``t``; the last step also runs the final level ``s``, so a grid
of ``L`` points visits ``L`` levels. No final denoising step (NCSN v1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from diffjax.samplers.driver import Step

__all__ = ["AnnealedLangevin"]


@struct.dataclass
class AnnealedLangevin(Step):
    step_size: float = 2e-5
    sigma_last: float = 0.01
    n_steps_each: int = struct.field(pytree_node=False, default=100)

    def _level(self, ctx, x, t, salt):
        proc = ctx.process
        sig = proc.sigma_tilde(t)
        a = self.step_size * (sig / self.sigma_last) ** 2

        def body(k, x):
            pred = ctx.denoise(x, t)
            score = -pred.eps / proc.sigma(t)
            keys = jax.vmap(jax.random.fold_in, (0, None))(ctx.keys, salt + k)
            z = jax.vmap(lambda kk: jax.random.normal(kk, x.shape[1:]))(keys)
            return x + a * score + jnp.sqrt(2.0 * a) * z

        return jax.lax.fori_loop(0, self.n_steps_each, body, x)

    def __call__(self, ctx, x, t, s, state):
        x = self._level(ctx, x, t, 0)
        x = jax.lax.cond(ctx.is_last, lambda x: self._level(ctx, x, s, 1 << 20), lambda x: x, x)
        return x, state
