"""DDIM (Song, Meng & Ermon 2021, eq. 12) and DDIM inversion.

Step from ``t`` to ``s`` with ``a = alpha``, ``c = eta sqrt(beta_tilde)`` where
``beta_tilde = sigma_{t|s}^2 sigma_s^2 / sigma_t^2``:

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z

(ermongroup/ddim ``generalized_steps``; ``c1 = eta sqrt((1 - a_t/a_n)(1 - a_n)/(1 - a_t))``).
``eta = 0`` is the Euler step of the probability-flow ODE in EDM's ``(x / alpha,
sigma / alpha)`` coordinates (paper eq. 14); ``eta = 1`` on the full grid is DDPM with the
fixed-small variance. The last step of a grid ending at ``t = 0`` returns ``x0_hat`` exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from diffjax.samplers.ddpm import posterior
from diffjax.samplers.driver import Step, sample

__all__ = ["DDIM", "ddim_invert"]


@struct.dataclass
class DDIM(Step):
    """DDIM step; ``eta`` is traced (changing it does not recompile)."""

    eta: float = 0.0

    def __call__(self, ctx, x, t, s, state):
        pred = ctx.denoise(x, t)
        proc = ctx.process
        sig_s = proc.sigma(s)
        # Going forward in time (inversion) there is no posterior: only eta = 0 is meaningful.
        _, _, var_small, _ = posterior(proc, jnp.maximum(t, s), jnp.minimum(t, s))
        c = self.eta * jnp.sqrt(jnp.where(s < t, var_small, 0.0))
        x_next = proc.alpha(s) * pred.x0 + jnp.sqrt(jnp.maximum(sig_s**2 - c**2, 0.0)) * pred.eps
        # eta is traced: lax.cond skips the per-sample draws entirely for deterministic DDIM
        noise = jax.lax.cond(self.eta > 0, lambda: c * ctx.normal(x), lambda: jnp.zeros_like(x))
        return x_next + jnp.where(ctx.is_last, 0.0, noise), state


def ddim_invert(model, x0, grid, *, process, prediction="eps", cond=None, key=None, **kw):
    """Encode data into noise by running deterministic DDIM forward along an increasing grid.

    ``grid`` starts at the data end (e.g. the smallest time of the sampling grid) and
    increases; each step uses ``eps_hat`` at the current, less noisy point (the first-order
    approximation of improved-diffusion's ``ddim_reverse_sample``). Decoding the result with
    ``DDIM(eta=0)`` on the reversed grid reconstructs ``x0`` up to discretisation error.
    """
    key = jax.random.key(0) if key is None else key
    return sample(model, key, x0.shape, grid, DDIM(eta=0.0), process=process,
                  prediction=prediction, cond=cond, x_init=x0, **kw)
