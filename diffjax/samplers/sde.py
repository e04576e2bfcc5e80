"""Reverse-SDE samplers: Euler-Maruyama (with SiT's diffusion choices), score_sde's
reverse-diffusion predictor, the Langevin corrector and predictor-corrector composition, and
the multistep SDE-DPM-Solver++ family (2M and 3M, k-diffusion's ``sample_dpmpp_*m_sde``).

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
           "Ancestral", "DPMSolverPP2MSDE", "DPMSolverPP3MSDE", "DIFFUSION_CHOICES"]

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


def _half_log_snr_step(proc, t, s, last):
    """``h = lambda_s - lambda_t`` (half log-SNR), 1 where the step ends at ``sigma = 0``
    (those steps return ``x0`` and never use ``h``)."""
    return jnp.where(last, 1.0, 0.5 * (proc.log_snr(jnp.where(last, t, s)) - proc.log_snr(t)))


@struct.dataclass
class DPMSolverPP2MSDE(Step):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, arXiv 2211.01095, the SDE variant of Algorithm 2;
    k-diffusion ``sample_dpmpp_2m_sde``), with k-diffusion's ``eta`` interpolating between the
    ODE (``eta = 0``: DPM-Solver++(2M)) and the reverse SDE (``eta = 1``).

    In ``y = x / alpha``, ``h = lambda_s - lambda_t``, ``r = h_prev / h``, ``D = x0(t)``:
    ``y_s = (sigma~_s / sigma~_t) e^{-eta h} y + (1 - e^{-(1+eta) h}) D + c (D - D_prev) / r +
    sigma~_s sqrt(1 - e^{-2 eta h}) S_noise z`` with ``c = (1 - e^{-(1+eta) h}) / 2``
    ('midpoint') or ``c = (1 - e^{-(1+eta)h}) / (-(1+eta) h) + 1`` ('heun'); the first step
    drops the ``D_prev`` term and a step to ``sigma = 0`` returns ``x0``. ``NFE = N``.
    """

    eta: float = 1.0
    s_noise: float = 1.0
    solver_type: str = struct.field(pytree_node=False, default="midpoint")
    nfe = 1

    def __post_init__(self):
        if self.solver_type not in ("midpoint", "heun"):
            raise ValueError(f"solver_type must be 'midpoint' or 'heun'; got {self.solver_type!r}")

    def init(self, x, grid):
        return (jnp.zeros_like(x), jnp.zeros((), x.dtype))

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        x0_prev, h_prev = state
        x0 = ctx.denoise(x, t).x0
        last = proc.sigma(s) <= 0
        h = _half_log_snr_step(proc, t, s, last)
        eta_h = self.eta * h
        one_minus = -jnp.expm1(-h - eta_h)
        # (sigma~_s / sigma~_t) y_t times alpha_s = (sigma_s / sigma_t) x
        y_part = (proc.sigma(s) / proc.sigma(t)) * jnp.exp(-eta_h) * x
        D = one_minus * x0
        if self.solver_type == "heun":
            c = one_minus / (-h - eta_h) + 1.0
        else:
            c = 0.5 * one_minus
        second = ctx.index > 0
        inv_r = jnp.where(second, h / jnp.where(second, h_prev, 1.0), 0.0)
        D = D + c * inv_r * (x0 - x0_prev)
        noise = proc.sigma(s) * jnp.sqrt(-jnp.expm1(-2.0 * eta_h)) * self.s_noise * ctx.normal(x)
        x_next = y_part + proc.alpha(s) * D + noise
        x_next = jnp.where(last, proc.alpha(s) * x0, x_next)
        return x_next.astype(x.dtype), (x0, h.astype(x.dtype))


@struct.dataclass
class DPMSolverPP3MSDE(Step):
    """SDE-DPM-Solver++(3M): third-order multistep data-prediction solver of the reverse SDE
    (k-diffusion ``sample_dpmpp_3m_sde``; the exponential-integrator expansion of Lu et al.
    2022b, arXiv 2211.01095, to the second divided difference).

    With ``h_eta = (1 + eta) h``, ``r_0 = h_1 / h``, ``r_1 = h_2 / h`` (previous steps) and
    ``D_0, D_1, D_2`` the last three ``x0`` predictions:
    ``d1_0 = (D_0 - D_1) / r_0``, ``d1_1 = (D_1 - D_2) / r_1``,
    ``d1 = d1_0 + (d1_0 - d1_1) r_0 / (r_0 + r_1)``, ``d2 = (d1_0 - d1_1) / (r_0 + r_1)``,
    ``phi_2 = (e^{-h_eta} - 1) / h_eta + 1``, ``phi_3 = phi_2 / h_eta - 1/2``;
    ``y_s = e^{-h_eta} y_t + (1 - e^{-h_eta}) D_0 + phi_2 d1 - phi_3 d2 +
    sigma~_s sqrt(1 - e^{-2 eta h}) S_noise z`` (``y = x / alpha``; first and second order
    on the first two steps; a step to ``sigma = 0`` returns ``x0``). ``NFE = N``.
    """

    eta: float = 1.0
    s_noise: float = 1.0
    nfe = 1

    def init(self, x, grid):
        return (jnp.zeros_like(x), jnp.zeros_like(x), jnp.zeros((), x.dtype),
                jnp.zeros((), x.dtype))

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        D1, D2, h1, h2 = state
        D0 = ctx.denoise(x, t).x0
        last = proc.sigma(s) <= 0
        h = _half_log_snr_step(proc, t, s, last)
        h_eta = h * (self.eta + 1.0)
        # e^{-h_eta} y_t times alpha_s = (sigma_s / sigma_t) e^{-eta h} x
        y_part = (proc.sigma(s) / proc.sigma(t)) * jnp.exp(-self.eta * h) * x
        phi_2 = jnp.expm1(-h_eta) / h_eta + 1.0
        phi_3 = phi_2 / h_eta - 0.5
        n = ctx.index
        safe = lambda v: jnp.where(v != 0, v, 1.0)
        r0, r1 = h1 / h, h2 / h
        d1_0 = (D0 - D1) / safe(r0)
        d1_1 = (D1 - D2) / safe(r1)
        d1 = d1_0 + (d1_0 - d1_1) * r0 / safe(r0 + r1)
        d2 = (d1_0 - d1_1) / safe(r0 + r1)
        third = phi_2 * d1 - phi_3 * d2
        corr = jnp.where(n >= 2, third, jnp.where(n == 1, phi_2 * d1_0, 0.0))
        D = -jnp.expm1(-h_eta) * D0 + corr
        noise_std = proc.sigma(s) * jnp.sqrt(-jnp.expm1(-2.0 * h * self.eta)) * self.s_noise
        noise = noise_std * ctx.normal(x)
        x_next = y_part + proc.alpha(s) * D + noise
        x_next = jnp.where(last, proc.alpha(s) * D0, x_next)
        return x_next.astype(x.dtype), (D0, D1, h.astype(x.dtype), h1)
