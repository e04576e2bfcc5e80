"""Inductive Moment Matching, IMM (Zhou, Ermon, Song 2025, arXiv 2503.07565).

Convention: t = 0 data, t = 1 noise, the OT-FM path ``alpha_t = 1 - t``, ``sigma_t = t``
(:data:`diffjax.parameterization.IMM_PROCESS`, a :class:`diffjax.processes.Linear`, so diffjax
time is IMM time), noise ``eps ~ N(0, sigma_d^2 I)``. ``eta_t = sigma_t / alpha_t`` and
``lambda_t`` are the process's ``sigma_tilde`` and ``log_snr``. The official repository ships
inference only (``lumalabs/imm — training/preconds.py :: IMMPrecond``); the preconditioning,
DDIM interpolant and time embeddings follow it. The loss follows the paper (eq. 12-13, Alg. 1),
as two third-party re-implementations (not official) also read it, and the target particles
use the online parameters under stop-gradient by default (``theta^- = stopgrad(theta)``; pass
``target_params`` for an EMA target).

A network here is ``apply_fn(params, x_t, t, s, cond) -> G`` (the raw output); the map
:func:`diffjax.parameterization.imm_map` turns ``G`` into ``f_{s,t}(x_t)`` so that CFG can act
on ``G`` before the map, as ``IMMPrecond.cfg_forward`` does; the loss and the sampler
(:func:`diffjax.samplers.few_step.imm_sample`) both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.losses.diffusion import as_batch, bcast
from diffjax.parameterization import IMM_KINDS, IMM_PROCESS, imm_coeffs, imm_map

Array = Any

__all__ = [
    "eta_of_t",
    "t_of_eta",
    "imm_log_snr",
    "ddim_interpolant",
    "imm_precond",
    "imm_mapping_r",
    "imm_weight",
    "laplace_kernel",
    "mmd_v_statistic",
    "imm_loss",
]


def eta_of_t(t: Array) -> Array:
    """``eta_t = sigma_t / alpha_t = t / (1 - t)`` ("nt"): the process's ``sigma_tilde``."""
    return IMM_PROCESS.sigma_tilde(t)


def t_of_eta(eta: Array) -> Array:
    """Inverse of :func:`eta_of_t`, ``t = eta / (1 + eta)``; ``eta = inf`` (or NaN) maps to 1
    (``IMMPrecond.nt_to_t``)."""
    eta = jnp.asarray(eta)
    bad = ~jnp.isfinite(eta)
    return jnp.where(bad, 1.0, IMM_PROCESS.t_from_sigma_tilde(jnp.where(bad, 0.0, eta)))


def imm_log_snr(t: Array) -> Array:
    """``lambda_t = 2 (log alpha_t - log sigma_t) = 2 (log(1 - t) - log t)``
    (``IMMPrecond.get_logsnr``, FM schedule): the process's ``log_snr``."""
    return IMM_PROCESS.log_snr(t)


def ddim_interpolant(x_t: Array, x_hat: Array, t: Array, s: Array) -> Array:
    """``DDIM(x_t, x_hat, t, s) = (alpha_s - alpha_t sigma_s / sigma_t) x_hat + (sigma_s /
    sigma_t) x_t`` (paper eq. 4; ``IMMPrecond.ddim``: map from t to s given ``x_hat``).
    ``t``, ``s``: per example ``(B,)``."""
    p = IMM_PROCESS
    tb, sb = bcast(t, x_t), bcast(s, x_t)
    ratio = p.sigma(sb) / p.sigma(tb)
    return (p.alpha(sb) - p.alpha(tb) * ratio) * x_hat + ratio * x_t


def imm_precond(net: Callable, kind: str = "euler_fm", temb: str = "identity",
                sigma_data: float = 0.5, time_scale: float = 1000.0) -> Callable:
    """Wrap a raw network ``net(x_in, c_noise_t, c_noise_s, cond)`` into ``g(x_t, t, s, cond)
    -> G`` with ``x_in = c_in x_t`` and time inputs ``1000 t`` and ``1000 s`` (``'identity'``
    temb) or ``1000 (t - s)`` (``'stride'``) (``IMMPrecond.forward_model``)."""
    if temb not in ("identity", "stride"):
        raise ValueError(f"unknown temb {temb!r}; expected 'identity' or 'stride'")
    if kind not in IMM_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {IMM_KINDS}")

    def g(x_t, t, s, cond=None):
        _, _, c_in = imm_coeffs(kind, t, s, sigma_data)
        second = s if temb == "identity" else t - s
        return net(bcast(c_in, x_t) * x_t, time_scale * t, time_scale * second, cond)

    return g


def imm_mapping_r(s: Array, t: Array, k: int = 12, T: float = 0.994, eta_min: float = 0.0,
                  eta_max: float | None = None) -> Array:
    """``r(s, t) = max(s, eta^-1(eta_t - eps_eta))``, ``eps_eta = (eta_max - eta_min) / 2^k``,
    ``eta_max = eta(T)`` by default ("constant decrement in eta", paper sec. 4)."""
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0; got {k!r}")
    if eta_max is None:
        eta_max = T / (1.0 - T)
    eps_eta = (eta_max - eta_min) / 2.0**k
    r = t_of_eta(jnp.maximum(eta_of_t(t) - eps_eta, 0.0))
    return jnp.maximum(s, r)


def imm_weight(t: Array, a: float = 1.0, b: float = 4.0) -> Array:
    """``w(t) = 1/2 sigmoid(b - lambda_t) (-d lambda_t / dt) alpha_t^a / (alpha_t^2 + sigma_t^2)``
    with ``-d lambda / dt = 2 / (t (1 - t))`` (paper eq. 13, FM schedule)."""
    p = IMM_PROCESS
    at, st = p.alpha(t), p.sigma(t)
    return 0.5 * jax.nn.sigmoid(b - imm_log_snr(t)) * (2.0 / (st * at)) * at**a / (
        at**2 + st**2)


def laplace_kernel(a: Array, b: Array, w_tilde: Array, eps_k: float = 1e-8) -> Array:
    """Pairwise ``exp(-w_tilde max(||a_i - b_j||_2, eps_k) / D)`` for particle sets ``(M, ...)``."""
    af, bf = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    D = af.shape[1]
    d2 = jnp.sum((af[:, None, :] - bf[None, :, :]) ** 2, axis=-1)
    dist = jnp.sqrt(jnp.maximum(d2, eps_k**2))
    return jnp.exp(-w_tilde * dist / D)


def mmd_v_statistic(y_t: Array, y_r: Array, w_tilde: Array, eps_k: float = 1e-8) -> Array:
    """``MMD^2 = mean k(y_t, y_t) + mean k(y_r, y_r) - 2 mean k(y_t, y_r)`` (V-statistic over
    the ``M`` particles of one group; paper eq. 12 with the Laplace kernel)."""
    return (jnp.mean(laplace_kernel(y_t, y_t, w_tilde, eps_k))
            + jnp.mean(laplace_kernel(y_r, y_r, w_tilde, eps_k))
            - 2.0 * jnp.mean(laplace_kernel(y_t, y_r, w_tilde, eps_k)))


def imm_loss(apply_fn: Callable, params: Any, key: Array, x0: Array, *,
             target_params: Any | None = None, group_size: int = 4, kind: str = "euler_fm",
             k: int = 12, a: float = 1.0, b: float = 4.0, T: float = 0.994, eps_t: float = 0.0,
             sigma_data: float = 0.5, eps_k: float = 1e-8,
             cond: Any = None) -> tuple[Array, dict]:
    """IMM loss: weighted Laplace-kernel MMD between ``f_{s,t}(x_t)`` and ``f_{s,r}(x_r)``.

    Per group of ``M = group_size`` consecutive rows: one ``t ~ U(eps_t, T)``,
    ``s ~ U(eps_t, t)``, ``r = r(s, t)``; ``x_t = alpha_t x + sigma_t eps`` and
    ``x_r = DDIM(x_t, x, t, r)`` (same ``eps``); ``y_t = f^theta_{s,t}(x_t)`` (gradient),
    ``y_r = stopgrad(f^{theta^-}_{s,r}(x_r))``; kernel weight ``w_tilde = 1/|c_out(s, t)|``;
    loss ``w(t) MMD^2`` (paper eq. 12-13 / Alg. 1).

    Args:
      apply_fn: ``apply_fn(params, x_t, t, s, cond) -> G`` (e.g. :func:`imm_precond` output).
      params: online parameters. ``target_params``: for ``y_r`` (default: ``params``).
      key: PRNG key. ``x0``: data ``(B, ...)``, ``B`` divisible by ``group_size``.
      group_size: ``M`` particles per group (one ``(t, s)`` per group).
      kind: the map of :func:`~diffjax.parameterization.imm_map`.
      k: ``r(s, t)``'s decrement ``2^-k`` (:func:`imm_mapping_r`).
      a, b: the weighting ``w(t)`` (:func:`imm_weight`).
      T, eps_t: ``t ~ U(eps_t, T)``.
      sigma_data: the noise scale ``eps ~ N(0, sigma_d^2 I)``.
      eps_k: the kernel's distance floor (:func:`laplace_kernel`).
      cond: conditioning ``(B, ...)`` or None.

    Returns:
      ``(loss (B,), aux)``: each row carries its group's ``w MMD^2`` (so the batch mean is the
      mean over groups); ``aux``: ``t``, ``s``, ``r``, ``weight``, ``unweighted``, ``index``.
    """
    x0 = as_batch(x0)
    B = x0.shape[0]
    if not isinstance(group_size, (int, np.integer)) or group_size < 1 or B % group_size:
        raise ValueError(f"group_size must be a positive integer dividing the batch {B}; "
                         f"got {group_size!r}")
    if not 0.0 <= eps_t < T < 1.0:
        raise ValueError(f"need 0 <= eps_t < T < 1; got eps_t={eps_t!r}, T={T!r}")
    if kind not in IMM_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {IMM_KINDS}")
    G_n = B // group_size
    k_t, k_s, k_e = jax.random.split(key, 3)
    tg = jax.random.uniform(k_t, (G_n,), x0.dtype, eps_t, T)
    sg = eps_t + (tg - eps_t) * jax.random.uniform(k_s, (G_n,), x0.dtype)
    rg = imm_mapping_r(sg, tg, k, T)
    rep = lambda v: jnp.repeat(v, group_size)
    t, s, r = rep(tg), rep(sg), rep(rg)
    eps = sigma_data * jax.random.normal(k_e, x0.shape, x0.dtype)
    x_t = IMM_PROCESS.marginal(x0, t, eps)
    x_r = ddim_interpolant(x_t, x0, t, r)
    y_t = imm_map(kind, apply_fn(params, x_t, t, s, cond), x_t, t, s, sigma_data)
    tp = jax.lax.stop_gradient(params if target_params is None else target_params)
    y_r = jax.lax.stop_gradient(
        imm_map(kind, apply_fn(tp, x_r, r, s, cond), x_r, r, s, sigma_data))
    _, c_out, _ = imm_coeffs(kind, tg, sg, sigma_data)
    w_tilde = 1.0 / jnp.maximum(jnp.abs(c_out), 1e-8)
    grp = lambda y: y.reshape((G_n, group_size) + y.shape[1:])
    mmd = jax.vmap(lambda a_, b_, w_: mmd_v_statistic(a_, b_, w_, eps_k))(
        grp(y_t), grp(y_r), w_tilde)
    w = imm_weight(tg, a, b)
    aux = {"t": t, "s": s, "r": r, "weight": rep(w), "unweighted": rep(mmd), "index": None}
    return rep(w * mmd), aux
