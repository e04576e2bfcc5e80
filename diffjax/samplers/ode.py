"""Fixed-grid probability-flow ODE solvers: Euler, Heun, RK4, DPM-Solver-2, linear multistep
(LMS), DPM-Solver++(2M) and UniPC.

The PF-ODE (Song et al. 2021, eq. 13) has two useful coordinate systems:

* ``'edm'``: ``y = x / alpha``, ``tau = sigma / alpha`` (Karras et al. 2022, eq. 4 with
  ``s(t) = alpha``); the ODE is ``dy / dtau = eps_hat``. Euler here *is* DDIM (eta = 0), Heun
  is EDM's Algorithm 1. This is the default for diffusion processes.
* ``'time'``: ``dx / dt = alpha_dot x0_hat + sigma_dot eps_hat`` (the flow / SiT view, and
  score_sde's ODE). Needed where ``alpha`` reaches 0 (linear and GVP interpolants at t=1),
  and the default for those.

Heun skips its correction when the step ends at ``sigma = 0`` (EDM Alg. 1: ``NFE = 2N - 1``);
so does DPM-Solver-2 (k-diffusion ``sample_dpm_2``). The exponential-integrator solvers
(DPM-Solver-2, DPM-Solver++(2M), UniPC) step in the half log-SNR ``lambda = log(alpha /
sigma) = -log(sigma~)`` and need ``alpha > 0`` at the grid points.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffjax.processes import GVP, Linear
from diffjax.samplers.driver import Step

__all__ = ["Euler", "Heun", "RK4", "DPMSolver2", "LMS", "lms_coefficients", "DPMSolverPP2M",
           "UniPC", "resolve_coords"]

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
        # the history in the state's dtype: a float32 placeholder would clash with a float64
        # carry under jax_enable_x64 (the scan requires identical carry types)
        return (jnp.zeros_like(x), jnp.zeros((), x.dtype))

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
        return x_next, (x0.astype(x.dtype), h.astype(x.dtype))


@struct.dataclass
class DPMSolver2(Step):
    """DPM-Solver-2 (Lu et al. 2022, arXiv 2206.00927, Algorithm 1 with ``r_1 = 1/2``), order 2.

    With ``y = x / alpha``, ``sigma~ = sigma / alpha`` and ``eps_hat`` the exponential
    integrator is exact in its linear part: ``y_s = y_t + (sigma~_s - sigma~_t) eps(s_1)``, where
    ``s_1`` is the midpoint in ``lambda``, i.e. ``sigma~_1 = sqrt(sigma~_t sigma~_s)`` and
    ``y_1`` is the first-order (DDIM) step to it. This is k-diffusion's ``sample_dpm_2`` (no
    churn); a step that ends at ``sigma = 0`` is a plain Euler step, so ``NFE = 2N - 1``.
    """

    nfe = 2

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        pred = ctx.denoise(x, t)

        def second(_):
            tau_t, tau_s = proc.sigma_tilde(t), proc.sigma_tilde(s)
            tau_1 = jnp.sqrt(tau_t * tau_s)  # lambda midpoint: geometric mean of sigma~
            t_1 = proc.t_from_sigma_tilde(tau_1)
            x_1 = proc.alpha(t_1) * pred.x0 + proc.sigma(t_1) * pred.eps
            eps_1 = ctx.denoise(x_1, t_1).eps
            # y_t + (tau_s - tau_t) eps_1 times alpha_s, with y_t = x0 + tau_t eps (no x / alpha)
            a_s = proc.alpha(s)
            return a_s * pred.x0 + proc.sigma(s) * eps_1 + a_s * tau_t * (pred.eps - eps_1)

        def euler(_):
            return proc.alpha(s) * pred.x0 + proc.sigma(s) * pred.eps

        return jax.lax.cond(proc.sigma(s) > 0, second, euler, None), state


def lms_coefficients(nodes, u_next, order: int):
    """Adams-Bashforth weights on a non-uniform grid, exactly.

    ``c_j = int_{u_0}^{u_next} l_j(u) du`` with ``l_j`` the Lagrange basis polynomial of the
    nodes ``u_0, ..., u_{order-1}`` (``nodes[0]`` the current point, then older ones). ``l_j``
    has degree ``order - 1``, so Gauss-Legendre quadrature with ``ceil(order / 2)`` points is
    exact (k-diffusion's ``linear_multistep_coeff`` integrates it adaptively with
    ``scipy.integrate.quad(epsrel=1e-4)``; for these polynomials both agree to rounding).

    Args:
      nodes: ``(>= order,)`` array, only the first ``order`` entries are used.
      u_next: the end of the step.
      order: number of nodes (static int >= 1).

    Returns:
      ``(order,)`` weights with ``x_next = x + sum_j c_j d_j``.
    """
    xi, w = np.polynomial.legendre.leggauss(max(1, math.ceil(order / 2)))
    u0 = nodes[0]
    mid, half = 0.5 * (u0 + u_next), 0.5 * (u_next - u0)
    q = mid + half * jnp.asarray(xi, nodes.dtype)  # quadrature points in [u0, u_next]
    out = []
    for j in range(order):
        lj = jnp.ones_like(q)
        for k in range(order):
            if k != j:
                lj = lj * (q - nodes[k]) / (nodes[j] - nodes[k])
        out.append(half * jnp.sum(jnp.asarray(w, nodes.dtype) * lj))
    return jnp.stack(out)


@struct.dataclass
class LMS(Step):
    """Linear multistep (Adams-Bashforth) of order ``order`` (default 4) on the PF-ODE:
    k-diffusion's ``sample_lms`` (Karras et al. 2022 use it as a baseline in sigma).

    ``x_{n+1} = x_n + sum_{j < p} c_j d_{n-j}`` with ``p = min(n + 1, order)`` (a lower-order
    start, no extra evaluations) and ``c_j`` the integrals of the Lagrange basis polynomials
    on the past nodes (:func:`lms_coefficients`, exact Gauss-Legendre). ``'edm'`` coordinates:
    nodes ``sigma~`` and ``d = eps_hat``; ``'time'``: nodes ``t`` and ``d`` the PF-ODE velocity.
    One evaluation per step (the last one included): ``NFE = N``.
    """

    order: int = struct.field(pytree_node=False, default=4)
    coords: str = struct.field(pytree_node=False, default="auto")
    nfe = 1

    def __post_init__(self):
        if not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"order must be an integer >= 1; got {self.order!r}")

    def init(self, x, grid):
        return (jnp.zeros((self.order,) + x.shape, x.dtype), jnp.zeros((self.order,), x.dtype))

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        co = resolve_coords(self.coords, ctx.process)
        ds, us = state
        pred = ctx.denoise(x, t)
        if co == "time":
            d = proc.alpha_dot(t) * pred.x0 + proc.sigma_dot(t) * pred.eps
            u_t, u_s = t, s
        else:
            d = pred.eps
            u_t, u_s = proc.sigma_tilde(t), proc.sigma_tilde(s)
        ds = jnp.concatenate([d[None].astype(x.dtype), ds[:-1]])
        us = jnp.concatenate([jnp.reshape(u_t, (1,)).astype(x.dtype), us[:-1]])
        p = jnp.minimum(ctx.index + 1, self.order)
        # coefficients of every possible current order, padded to `order`, then the current one
        u_s = u_s.astype(x.dtype)
        table = jnp.stack([jnp.pad(lms_coefficients(us, u_s, q), (0, self.order - q))
                           for q in range(1, self.order + 1)])
        c = table[p - 1]
        incr = jnp.tensordot(c, ds, axes=1)
        if co == "time":
            x_next = x + incr
        else:
            # y_t + incr times alpha_s, with y_t = x / alpha_t = x0 + sigma~_t eps
            x_next = proc.alpha(s) * (pred.x0 + u_t * pred.eps + incr)
        return x_next, (ds, us)


def _unipc_b(hh, p: int):
    """UniPC's ``b_i = i! h phi_{i+1}(h) / B(h)``, ``i = 1..p``, with ``B(h) = e^h - 1``
    ('bh2') and ``hh = -h`` (data prediction); also returns ``h phi_1 = e^hh - 1`` and ``B``."""
    h_phi_1 = jnp.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    fact, b = 1.0, []
    for i in range(1, p + 1):
        b.append(h_phi_k * fact / h_phi_1)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return jnp.stack(b), h_phi_1


def _unip(x, ms, lams, lam_s, ratio, a_s, p: int):
    """UniP-p (data prediction, B(h) = e^h - 1) from the newest history point to ``lam_s``:
    ``x_s = (sigma_s/sigma_t) x - alpha_s (e^-h - 1) m_0 - alpha_s B(h) sum_k rho_k D_k``."""
    h = lam_s - lams[0]
    b, h_phi_1 = _unipc_b(-h, p)
    x_s = ratio * x - a_s * h_phi_1 * ms[0]
    if p == 1:
        return x_s
    rks = [(lams[i] - lams[0]) / h for i in range(1, p)]
    D = [(ms[i] - ms[0]) / rks[i - 1] for i in range(1, p)]
    if p == 2:
        rhos = [0.5]  # UniPC's simplified order-2 predictor
    else:
        R = jnp.stack([jnp.stack([rk ** i for rk in rks]) for i in range(p - 1)])
        sol = jnp.linalg.solve(R, b[: p - 1])
        rhos = [sol[k] for k in range(p - 1)]
    return x_s - a_s * h_phi_1 * sum(r * d for r, d in zip(rhos, D, strict=True))


def _unic(x_last, ms, lams, m_t, lam_t, ratio, a_t, p: int):
    """UniC-p: corrects the point reached from the newest history point ``(ms[0], lams[0])``
    with the model output ``m_t`` at the new point (no extra evaluation)."""
    h = lam_t - lams[0]
    b, h_phi_1 = _unipc_b(-h, p)
    rks = [(lams[i] - lams[0]) / h for i in range(1, p)]
    D = [(ms[i] - ms[0]) / rks[i - 1] for i in range(1, p)]
    if p == 1:
        rhos = [0.5]
    else:
        rks1 = rks + [jnp.ones_like(h)]
        R = jnp.stack([jnp.stack([rk ** i for rk in rks1]) for i in range(p)])
        sol = jnp.linalg.solve(R, b)
        rhos = [sol[k] for k in range(p)]
    corr = sum((r * d for r, d in zip(rhos[:-1], D, strict=True)), jnp.zeros_like(m_t))
    corr = corr + rhos[-1] * (m_t - ms[0])
    return ratio * x_last - a_t * h_phi_1 * ms[0] - a_t * h_phi_1 * corr


@struct.dataclass
class UniPC(Step):
    """UniPC (Zhao et al. 2023, arXiv 2302.04867): the UniP-p predictor and the UniC corrector
    with data prediction and ``B(h) = e^h - 1`` ('bh2'), as diffusers'
    ``UniPCMultistepScheduler`` defaults (``solver_order=2``, ``lower_order_final=True``).

    At step ``n`` the model output ``m_n`` at the predicted point first corrects that point
    with UniC of the previous predictor's order (from ``x_{n-1}``, using ``m_n``), then UniP
    of order ``p = min(order, n + 1, N - n)`` steps on from the corrected point. The corrector
    reuses the evaluation the predictor needs anyway: ``NFE = N``. In half log-SNR ``lambda``
    with ``h = lambda_s - lambda_t``, ``r_k = (lambda_{t_k} - lambda_t) / h``,
    ``D_k = (m_k - m_0) / r_k``: ``x_s = (sigma_s / sigma_t) x - alpha_s (e^{-h} - 1) m_0 -
    alpha_s B(h) sum_k rho_k D_k``, ``rho`` from ``R rho = b`` with ``R_{ik} = r_k^{i-1}``,
    ``b_i = i! h phi_{i+1}(h) / B(h)``; the order-2 predictor uses ``rho = 1/2`` and UniC-1
    ``rho = 1/2`` (diffusers' simplification).
    """

    order: int = struct.field(pytree_node=False, default=2)
    nfe = 1

    def __post_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3; got {self.order!r}")

    def init(self, x, grid):
        o = self.order
        return (jnp.zeros((o,) + x.shape, x.dtype), jnp.zeros((o,), x.dtype), jnp.zeros_like(x),
                jnp.zeros((), x.dtype), jnp.ones((), jnp.int32))

    def __call__(self, ctx, x, t, s, state):
        proc = ctx.process
        ms, lams, x_last, t_prev, p_last = state
        lam = lambda u: (0.5 * proc.log_snr(u)).astype(x.dtype)
        m_t = ctx.denoise(x, t).x0
        lam_t = lam(t)

        def correct(_):
            ratio, a_t = proc.sigma(t) / proc.sigma(t_prev), proc.alpha(t)
            branches = [lambda p=p: _unic(x_last, ms, lams, m_t, lam_t, ratio, a_t, p)
                        for p in range(1, self.order + 1)]
            return jax.lax.switch(p_last - 1, branches).astype(x.dtype)

        x = jax.lax.cond(ctx.index > 0, correct, lambda _: x, None)
        ms = jnp.concatenate([m_t[None], ms[:-1]])
        lams = jnp.concatenate([lam_t[None], lams[:-1]])
        p = jnp.minimum(jnp.minimum(ctx.index + 1, ctx.num_steps - ctx.index), self.order)
        ratio, a_s, lam_s = proc.sigma(s) / proc.sigma(t), proc.alpha(s), lam(s)
        branches = [lambda p=q: _unip(x, ms, lams, lam_s, ratio, a_s, p)
                    for q in range(1, self.order + 1)]
        x_next = jax.lax.switch(p - 1, branches)
        return x_next.astype(x.dtype), (ms, lams, x, jnp.asarray(t, x.dtype), p.astype(jnp.int32))
