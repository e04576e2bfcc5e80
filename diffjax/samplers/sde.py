"""Reverse-SDE samplers: Euler-Maruyama (with SiT's diffusion choices), score_sde's
reverse-diffusion predictor, the Langevin corrector and predictor-corrector composition.

A family of reverse-time SDEs shares the marginals of the forward process (Song et al. 2021,
eq. 6; Ma et al. 2024, eq. 9): in diffjax time (``dt < 0``)

    dx = [u(x, t) - w(t) score(x, t)] dt + sqrt(2 w(t)) dW,

with ``u`` the probability-flow velocity. ``w = g^2 / 2`` is the reverse SDE of score_sde,
``w = 0`` the ODE. SiT's choices of ``w`` (``transport/path.py :: compute_diffusion``, mapped
from its data-at-1 time): ``'sbdm'`` (``g^2 / 2``), ``'sigma'`` (``sigma(t)``, SiT's default),
``'linear'`` (``t``), ``'constant'`` (1), ``'decreasing'`` (``(1 - cos(pi t))^2 / 4``),
``'increasing-decreasing'`` (``sin(pi t)^2``), each times ``norm``.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from diffjax.samplers.ddpm import DDPMAncestral
from diffjax.samplers.driver import Step

__all__ = ["EulerMaruyama", "ReverseDiffusion", "LangevinCorrector", "PredictorCorrector",
           "Ancestral", "DIFFUSION_CHOICES"]

DIFFUSION_CHOICES = ("sbdm", "sigma", "linear", "constant", "decreasing", "increasing-decreasing")


def _w(kind, proc, t):
    if kind == "sbdm":
        return 0.5 * proc.diffusion_sq(t)
    if kind == "sigma":
        return proc.sigma(t)
    if kind == "linear":
        return t
    if kind == "constant":
        return jnp.ones_like(t)
    if kind == "decreasing":
        return 0.25 * (1.0 - jnp.cos(jnp.pi * t)) ** 2
    return jnp.sin(jnp.pi * t) ** 2


@struct.dataclass
class EulerMaruyama(Step):
    """Euler-Maruyama on the reverse SDE family above; no noise on the last step (score_sde's
    ``noise_removal`` / SiT's "Mean" last step)."""

    diffusion: str = struct.field(pytree_node=False, default="sbdm")
    norm: float = 1.0

    def __post_init__(self):
        if self.diffusion not in DIFFUSION_CHOICES:
            raise ValueError(f"unknown diffusion {self.diffusion!r}; expected one of {DIFFUSION_CHOICES}")

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        pred = ctx.denoise(x, t)
        u = proc.alpha_dot(t) * pred.x0 + proc.sigma_dot(t) * pred.eps
        score = -pred.eps / proc.sigma(t)
        w = self.norm * _w(self.diffusion, proc, t)
        dt = s - t
        x_mean = x + (u - w * score) * dt
        noise = jnp.sqrt(2.0 * w * jnp.abs(dt)) * ctx.normal(x)
        return x_mean + jnp.where(ctx.is_last, 0.0, noise), state


@struct.dataclass
class ReverseDiffusion(Step):
    """score_sde's reverse-diffusion predictor from the discretised forward step
    ``x_t = alpha_{t|s} x_s + sigma_{t|s} z``: ``x_mean = (2 - alpha_{t|s}) x + sigma_{t|s}^2
    score``, ``x = x_mean + sigma_{t|s} z`` (VE: ``x + (sigma_t^2 - sigma_s^2) score``)."""

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        pred = ctx.denoise(x, t)
        score = -pred.eps / proc.sigma(t)
        a_ts, var_ts = proc.transition(t, s)
        x_mean = (2.0 - a_ts) * x + var_ts * score
        noise = jnp.sqrt(var_ts) * ctx.normal(x)
        return x_mean + jnp.where(ctx.is_last, 0.0, noise), state


#: score_sde's ancestral predictor is the DDPM posterior step (fixed-small for VE, where it
#: coincides with score_sde's formula; use ``DDPMAncestral('large')`` for its VP variant).
Ancestral = DDPMAncestral


@struct.dataclass
class LangevinCorrector(Step):
    """Langevin corrector (Song et al. 2021, Algorithm 4; score_sde ``LangevinCorrector``).

    ``n_steps`` times at fixed ``t``: ``step = 2 a (snr ||z|| / ||score||)^2``,
    ``x <- x + step score + sqrt(2 step) z`` with ``a = alpha_{t|s}^2`` (score_sde's per-step
    ``alpha_i = 1 - beta_i`` for VP, 1 for VE). Norms are per example by default, so sample
    ``i`` depends only on its own key; ``norm='batch'`` averages them over the batch as
    score_sde does (couples the samples of a batch).
    """

    snr: float = 0.16
    n_steps: int = struct.field(pytree_node=False, default=1)
    norm: str = struct.field(pytree_node=False, default="batch")

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        a_ts, _ = proc.transition(t, s)
        a = a_ts**2
        axes = tuple(range(1, x.ndim))
        for k in range(self.n_steps):
            pred = ctx.denoise(x, t)
            score = -pred.eps / proc.sigma(t)
            z = ctx.normal(x, salt=1000 + k)
            gn = jnp.sqrt(jnp.sum(score**2, axis=axes))
            zn = jnp.sqrt(jnp.sum(z**2, axis=axes))
            if self.norm == "batch":
                gn, zn = jnp.mean(gn), jnp.mean(zn)
            step = 2.0 * a * (self.snr * zn / gn) ** 2
            step = step.reshape(step.shape + (1,) * (x.ndim - step.ndim))
            x = x + step * score + jnp.sqrt(2.0 * step) * z
        return x, state


@struct.dataclass
class PredictorCorrector(Step):
    """Predictor-corrector (Song et al. 2021, Algorithm 1): the corrector at ``t`` first, then
    the predictor from ``t`` to ``s`` (score_sde's order). NFE per step = corrector steps + 1."""

    predictor: Step
    corrector: Step

    def init(self, x, grid):
        return (self.predictor.init(x, grid), self.corrector.init(x, grid))

    def __call__(self, ctx, x, t, s, state):
        ps, cs = state
        x, cs = self.corrector(ctx, x, t, s, cs)
        x, ps = self.predictor(ctx, x, t, s, ps)
        return x, (ps, cs)
