"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on any grid (iDDPM respacing).

A step from ``t`` to ``s < t`` samples the Gaussian posterior ``q(x_s | x_t, x0_hat)``
(Ho et al. 2020, eqs. 6-7; Kingma et al. 2021, eq. 4 for arbitrary ``s < t``):

    mean = (alpha_{t|s} sigma_s^2 / sigma_t^2) x_t + (alpha_s sigma_{t|s}^2 / sigma_t^2) x0_hat
    var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2                  ("fixed small", beta tilde)

On a respaced grid this is exactly iDDPM's ``SpacedDiffusion`` with
``beta'_i = 1 - alpha_bar_{S_i} / alpha_bar_{S_{i-1}} = sigma_{t|s}^2`` (VP). The variance is
``'small'`` (beta tilde), ``'large'`` (``sigma_{t|s}^2``, i.e. beta) or ``'learned'`` (iDDPM
``LEARNED_RANGE``: ``log Sigma = frac log beta + (1 - frac) log beta_tilde``,
``frac = (v + 1) / 2``). No noise is added on the final step (DDPM's ``1[t > 0]``).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from diffjax.samplers.driver import Step

__all__ = ["posterior", "DDPMAncestral"]


def posterior(process, t, s):
    """Coefficients of ``q(x_s | x_t, x0)``: ``(c_x, c_x0, var_small, var_large)``.

    Uses ``sigma_{t|s}^2 = sigma_t^2 (1 - exp(lambda_t - lambda_s))`` (expm1 form: exact to
    float32 for the tiny steps of a 1000-step chain). ``s = 0`` gives ``(0, 1, 0, sigma_t^2)``.
    """
    a_t, a_s = process.alpha(t), process.alpha(s)
    sig2_t, sig2_s = process.sigma(t) ** 2, process.sigma(s) ** 2
    frac = -jnp.expm1(process.log_snr(t) - process.log_snr(s))  # sigma_{t|s}^2 / sigma_t^2
    var_large = sig2_t * frac
    c_x = (a_t / a_s) * sig2_s / sig2_t
    c_x0 = a_s * frac
    var_small = var_large * sig2_s / sig2_t
    return c_x, c_x0, var_small, var_large


@struct.dataclass
class DDPMAncestral(Step):
    """Ancestral step with fixed-small, fixed-large or learned variance.

    Attributes:
      variance: ``'small'`` (beta tilde), ``'large'`` (beta), ``'learned'`` (needs a model with
        ``learned_variance=True``).
    """

    variance: str = struct.field(pytree_node=False, default="small")

    def __post_init__(self):
        if self.variance not in ("small", "large", "learned"):
            raise ValueError(
                f"unknown variance {self.variance!r}; expected 'small', 'large' or 'learned'"
            )

    def __call__(self, ctx, x, t, s, state):
        pred = ctx.denoise(x, t)
        c_x, c_x0, var_small, var_large = posterior(ctx.process, t, s)
        mean = c_x * x + c_x0 * pred.x0
        if self.variance == "small":
            std = jnp.sqrt(var_small)
        elif self.variance == "large":
            std = jnp.sqrt(var_large)
        else:
            if pred.v_var is None:
                raise ValueError("variance='learned' needs sample(..., learned_variance=True)")
            frac = (pred.v_var + 1.0) / 2.0
            # iDDPM clips log beta_tilde away from log 0; only the last step has beta_tilde = 0
            # and it adds no noise, so a floor is equivalent.
            log_small = jnp.log(jnp.maximum(var_small, 1e-20))
            std = jnp.exp(0.5 * (frac * jnp.log(var_large) + (1.0 - frac) * log_small))
        noise = std * ctx.normal(x)
        return mean + jnp.where(ctx.is_last, 0.0, noise), state
