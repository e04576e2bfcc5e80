"""Fixed-grid probability-flow ODE solvers: Euler, Heun, RK4 and DPM-Solver++(2M).

The PF-ODE (Song et al. 2021, eq. 13) has two useful coordinate systems:

* ``'edm'``: ``y = x / alpha``, ``tau = sigma / alpha`` (Karras et al. 2022, eq. 4 with
  ``s(t) = alpha``); the ODE is ``dy / dtau = eps_hat``. Euler here *is* DDIM (eta = 0), Heun
  is EDM's Algorithm 1. This is the default for diffusion processes.
* ``'time'``: ``dx / dt = alpha_dot x0_hat + sigma_dot eps_hat`` (the flow / SiT view, and
  score_sde's ODE). Needed where ``alpha`` reaches 0 (linear and GVP interpolants at t=1),
  and the default for those.

Heun skips its correction when the step ends at ``sigma = 0`` (EDM Alg. 1: ``NFE = 2N - 1``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from diffjax.processes import GVP, Linear
from diffjax.samplers.driver import Step

__all__ = ["Euler", "Heun", "RK4", "DPMSolverPP2M", "resolve_coords"]

_COORDS = ("auto", "edm", "time")


def resolve_coords(coords: str, process) -> str:
    if coords not in _COORDS:
        raise ValueError(f"unknown coords {coords!r}; expected one of {_COORDS}")
    if coords == "auto":
        return "time" if isinstance(process, (Linear, GVP)) else "edm"
    return coords


def _tau(proc, t, coords):
    return t if coords == "time" else proc.sigma_tilde(t)


def _t_of_tau(proc, tau, coords):
    return tau if coords == "time" else proc.t_from_sigma_tilde(tau)


def rk_step(ctx, x, t, s, coords, c, A, b):
    """One explicit Runge-Kutta step with Butcher tableau ``(c, A, b)`` from ``t`` to ``s``.

    ``'time'``: the textbook form on ``dx/dt = alpha_dot x0_hat + sigma_dot eps_hat``.

    ``'edm'``: on ``dy/dtau = eps_hat`` with ``y = x / alpha``, ``tau = sigma / alpha``. A stage
    ``y_i = y_0 + (tau_i - tau_0) e_i`` (``e_i`` the stage's weighted average of the ``k_j``)
    is evaluated as ``x_i = alpha_i x0_1 + sigma_i e_i + alpha_i tau_0 (eps_1 - e_i)``, using
    ``x = alpha_t x0_1 + sigma_t eps_1``. Algebraically the same; but it never forms
    ``x / alpha``, which near ``t = 1`` (alpha ~ 5e-5 for iDDPM's cosine table) destroys float32
    precision, and for one stage it *is* the DDIM update ``alpha_s x0 + sigma_s eps``.
    """
    proc = ctx.process

    def stage_time(ci):
        if ci == 0:
            return t
        if ci == 1:
            return s
        tau0, tau1 = _tau(proc, t, coords), _tau(proc, s, coords)
        return _t_of_tau(proc, tau0 + ci * (tau1 - tau0), coords)

    def combine(ti, ci, weights, ks, first):
        if coords == "time":
            return x + (ti - t) * sum(w * k for w, k in zip(weights, ks))
        e = sum(w * k for w, k in zip(weights, ks)) / ci
        a_i = proc.alpha(ti)
        return a_i * first.x0 + proc.sigma(ti) * e + a_i * proc.sigma_tilde(t) * (first.eps - e)

    ks, first = [], None
    for i, ci in enumerate(c):
        ti = stage_time(ci)
        xi = x if i == 0 else combine(ti, ci, A[i], ks, first)
        pred = ctx.denoise(xi, ti)
        first = pred if i == 0 else first
        if coords == "time":
            ks.append(proc.alpha_dot(ti) * pred.x0 + proc.sigma_dot(ti) * pred.eps)
        else:
            ks.append(pred.eps)
    return combine(s, 1.0, b, ks, first)


@struct.dataclass
class Euler(Step):
    """Euler step of the PF-ODE (order 1). In ``'edm'`` coordinates identical to DDIM(eta=0)."""

    coords: str = struct.field(pytree_node=False, default="auto")
    nfe = 1

    def __call__(self, ctx, x, t, s, state):
        co = resolve_coords(self.coords, ctx.process)
        return rk_step(ctx, x, t, s, co, (0.0,), ((),), (1.0,)), state


@struct.dataclass
class Heun(Step):
    """Heun's method (order 2), EDM Algorithm 1 in ``'edm'`` coordinates; Euler on a step that
    ends at ``sigma = 0``."""

    coords: str = struct.field(pytree_node=False, default="auto")
    nfe = 2

    def __call__(self, ctx, x, t, s, state):
        co = resolve_coords(self.coords, ctx.process)
        heun = lambda x: rk_step(ctx, x, t, s, co, (0.0, 1.0), ((), (1.0,)), (0.5, 0.5))
        euler = lambda x: rk_step(ctx, x, t, s, co, (0.0,), ((),), (1.0,))
        return jax.lax.cond(ctx.process.sigma(s) > 0, heun, euler, x), state


@struct.dataclass
class RK4(Step):
    """Classic fourth-order Runge-Kutta (order 4); needs the model defined at both ends."""

    coords: str = struct.field(pytree_node=False, default="auto")
    nfe = 4

    def __call__(self, ctx, x, t, s, state):
        co = resolve_coords(self.coords, ctx.process)
        A = ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0))
        return rk_step(ctx, x, t, s, co, (0.0, 0.5, 0.5, 1.0), A, (1 / 6, 1 / 3, 1 / 3, 1 / 6)), state


@struct.dataclass
class DPMSolverPP2M(Step):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), data prediction, multistep order 2.

    With ``h = lambda_s - lambda_t`` (half log-SNR) and ``r = h_prev / h``:
    ``x_s = (sigma_s / sigma_t) x + (alpha_s - alpha_t sigma_s / sigma_t) D`` with
    ``D = (1 + 1/(2r)) x0_t - x0_prev / (2r)``; the first step, and a last step ending at
    ``sigma = 0``, use ``D = x0_t`` (k-diffusion ``sample_dpmpp_2m``).
    """

    nfe = 1

    def init(self, x, grid):
        return (jnp.zeros_like(x), jnp.zeros((), jnp.float32))

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        x0_prev, h_prev = state
        x0 = ctx.denoise(x, t).x0
        sig_t, sig_s = proc.sigma(t), proc.sigma(s)
        ratio = sig_s / sig_t
        h = 0.5 * (proc.log_snr(s) - proc.log_snr(t))
        second = (ctx.index > 0) & (sig_s > 0)
        r = h_prev / jnp.where(second, h, 1.0)
        inv2r = 0.5 / jnp.where(second, r, 1.0)
        D = jnp.where(second, (1.0 + inv2r) * x0 - inv2r * x0_prev, x0)
        x_next = ratio * x + (proc.alpha(s) - proc.alpha(t) * ratio) * D
        return x_next, (x0, h)
