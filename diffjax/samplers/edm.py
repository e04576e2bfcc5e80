"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) and k-diffusion's ancestral
samplers (Euler ancestral, DPM-Solver++(2S) ancestral).

Both work in EDM's scaled coordinates ``y = x / alpha``, ``sigma~ = sigma / alpha``, so they
apply to VP and VE processes as well as to the EDM process itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from diffjax.samplers.driver import Step
from diffjax.samplers.ode import rk_step

__all__ = ["EDMStochastic", "EulerAncestral", "DPMSolverPP2SAncestral", "ancestral_split"]


@struct.dataclass
class EDMStochastic(Step):
    """Algorithm 2: churn, then a Heun step from ``sigma_hat`` to ``sigma_next``.

    ``gamma = min(S_churn / N, sqrt(2) - 1)`` if ``S_tmin <= sigma <= S_tmax`` else 0
    (note **min**: a ``max`` typo injects noise every step); ``sigma_hat = sigma (1 + gamma)``;
    ``x_hat = x + sqrt(sigma_hat^2 - sigma^2) S_noise z``. ``N`` is the number of steps of
    the grid. All four parameters are traced. ImageNet-64 recipe: (40, 0.05, 50, 1.003).
    """

    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    nfe = 2

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        sig = proc.sigma_tilde(t)
        in_range = (sig >= self.s_tmin) & (sig <= self.s_tmax)
        gamma = jnp.where(in_range, jnp.minimum(self.s_churn / ctx.num_steps, math.sqrt(2.0) - 1.0), 0.0)
        sig_hat = sig * (1.0 + gamma)
        t_hat = jnp.where(gamma > 0, proc.t_from_sigma_tilde(sig_hat), t)
        a_hat = proc.alpha(t_hat)
        # sqrt(sigma_hat^2 - sigma^2) written as sigma sqrt(gamma (2 + gamma)): exactly 0 for
        # gamma = 0 (the difference of squares under FMA contraction leaves a rounding residual
        # whose square root, ~sigma * 3e-4, would inject noise with churn off).
        churn = sig * jnp.sqrt(gamma * (2.0 + gamma)) * self.s_noise
        x_hat = (a_hat / proc.alpha(t)) * x + a_hat * churn * ctx.normal(x)
        heun = lambda x: rk_step(ctx, x, t_hat, s, "edm", (0.0, 1.0), ((), (1.0,)), (0.5, 0.5))
        euler = lambda x: rk_step(ctx, x, t_hat, s, "edm", (0.0,), ((),), (1.0,))
        return jax.lax.cond(proc.sigma(s) > 0, heun, euler, x_hat), state


@struct.dataclass
class EulerAncestral(Step):
    """Euler ancestral step (k-diffusion ``sample_euler_ancestral``).

    ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``,
    ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``: an Euler step to ``sigma_down`` then
    fresh noise of std ``sigma_up``. ``eta = 1`` matches DDPM's ancestral marginals.
    """

    eta: float = 1.0

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        sig, sig_next = proc.sigma_tilde(t), proc.sigma_tilde(s)
        # r = sigma_up / sigma_next; forms without differences of squares (see EDMStochastic)
        r = jnp.minimum(1.0, self.eta * jnp.sqrt(jnp.maximum(1.0 - (sig_next / sig) ** 2, 0.0)))
        up = sig_next * r
        down = sig_next * jnp.sqrt(jnp.maximum(1.0 - r**2, 0.0))
        pred = ctx.denoise(x, t)
        # Euler from sigma to sigma_down in y = x / alpha: y0 = x0 + sigma eps, so
        # y_down = x0 + sigma_down eps (written without forming x / alpha).
        y = pred.x0 + down * pred.eps + jnp.where(ctx.is_last, 0.0, up * ctx.normal(x))
        return proc.alpha(s) * y, state


def ancestral_split(sig, sig_next, eta):
    """k-diffusion's ``get_ancestral_step``: ``(sigma_down, sigma_up)`` with
    ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))`` and
    ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``, written as ``sigma_next`` times ratios
    (no difference of squares: exactly ``(sigma_next, 0)`` for ``eta = 0``)."""
    r = jnp.minimum(1.0, eta * jnp.sqrt(jnp.maximum(1.0 - (sig_next / sig) ** 2, 0.0)))
    return sig_next * jnp.sqrt(jnp.maximum(1.0 - r**2, 0.0)), sig_next * r


@struct.dataclass
class DPMSolverPP2SAncestral(Step):
    """DPM-Solver++(2S) (Lu et al. 2022b, arXiv 2211.01095, Algorithm 1 with ``r = 1/2``)
    steps to ``sigma_down``, then fresh noise of std ``sigma_up`` (k-diffusion
    ``sample_dpmpp_2s_ancestral``; :func:`ancestral_split`).

    In ``y = x / alpha`` with ``lambda = -log sigma~`` and ``h = lambda_down - lambda_t``:
    ``y_1 = (sigma~_1 / sigma~_t) y - (e^{-h/2} - 1) x0(t)`` at the ``lambda`` midpoint, then
    ``y_down = (sigma~_down / sigma~_t) y - (e^{-h} - 1) x0(y_1, t_1)`` and
    ``y_s = y_down + S_noise sigma_up z``. A step with ``sigma_down = 0`` (the last one) returns
    ``x0``: ``NFE = 2N - 1``. ``eta = 0`` is the deterministic DPM-Solver++(2S); ``eta`` and
    ``s_noise`` are traced.
    """

    eta: float = 1.0
    s_noise: float = 1.0
    nfe = 2

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        sig, sig_next = proc.sigma_tilde(t), proc.sigma_tilde(s)
        down, up = ancestral_split(sig, sig_next, self.eta)
        pred = ctx.denoise(x, t)
        sig_t = proc.sigma(t)

        def second(_):
            h = jnp.log(sig) - jnp.log(down)
            sig_1 = sig * jnp.exp(-0.5 * h)
            t_1 = proc.t_from_sigma_tilde(sig_1)
            # sigma~_1 / sigma~_t * y = sigma~_1 x / sigma_t: never forms x / alpha
            x_1 = proc.alpha(t_1) * ((sig_1 / sig_t) * x - jnp.expm1(-0.5 * h) * pred.x0)
            x0_1 = ctx.denoise(x_1, t_1).x0
            return (down / sig_t) * x - jnp.expm1(-h) * x0_1

        y = jax.lax.cond(down > 0, second, lambda _: pred.x0, None)
        y = y + jnp.where(sig_next > 0, up * self.s_noise, 0.0) * ctx.normal(x)
        return proc.alpha(s) * y, state
