"""Shortcut models (Frans, Hafner, Levine, Abbeel 2024, arXiv 2410.12557), in diffjax time.

The paper's path ``x_t' = (1 - (1 - eps) t') x_noise + t' x_data`` (``t' = 0`` noise,
``t' = 1`` data, ``eps = 1e-5``) is :class:`diffjax.processes.Linear` with
``sigma_min = eps`` at ``t = 1 - t'``: ``alpha = 1 - t``, ``sigma = eps + (1 - eps) t``
(:data:`SHORTCUT_PROCESS`). Everything here runs in diffjax time on that process: a model is
``apply_fn(params, x, t, d_level, labels) -> u``, the velocity ``dx/dt`` of diffjax time at
step size ``d = 2^-d_level`` (the paper's ``s`` is ``-u``). A network trained in paper time
enters through :class:`diffjax.adapters.FlippedVelocity` (``u = -s(x, 1 - t, ...)``), the
only place the paper's time appears.

The step size is fed as the **integer level** ``d_level`` (the reference's encoding). Targets
follow the reference ``targets_shortcut.py :: get_targets``:

* the first ``B_b = B // bootstrap_every`` rows are bootstrap rows; the levels
  ``L-1, ..., 0`` (``L = log2 M``) get ``B_b // L`` rows each, deterministic; the remainder
  gets level 0; the paper time ``t'`` is uniform on the grid of the row's step size, so
  ``t = 1 - t'`` lies in ``{d, 2d, ..., 1}``;
* the remaining ``B - B_b`` rows are flow-matching rows at ``t' in {0, 1/M, ...}`` with
  ``d = 1/M`` (level ``L``; the paper's text says ``d = 0``, the reference code uses ``1/M``,
  followed here) and labels dropped to the null class ``num_classes`` with probability
  ``class_dropout_prob``;
* the reference draws the bootstrap and flow ``t``/noise from the **same** keys and takes the
  flow rows from the first ``B - B_b`` images; reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.adapters import FixedLevel
from diffjax.guidance import combine_cfg
from diffjax.losses.diffusion import as_batch, bcast
from diffjax.processes import Linear

Array = Any

__all__ = ["SHORTCUT_PROCESS", "bootstrap_levels", "shortcut_targets", "shortcut_loss",
           "shortcut_as_velocity"]

#: the paper's path: ``Linear`` with the reference's ``sigma_min = 1e-5``
SHORTCUT_PROCESS = Linear(sigma_min=1e-5)


def _log2_steps(denoise_timesteps: int) -> int:
    if not isinstance(denoise_timesteps, (int, np.integer)) or denoise_timesteps < 2 or (
            denoise_timesteps & (denoise_timesteps - 1)):
        raise ValueError(f"denoise_timesteps must be a power of 2 >= 2; got {denoise_timesteps!r}")
    return int(round(math.log2(denoise_timesteps)))


def bootstrap_levels(batch_size: int, denoise_timesteps: int = 128,
                     bootstrap_every: int = 8) -> tuple[np.ndarray, int]:
    """Deterministic level allocation of the bootstrap rows (``get_targets``,
    ``bootstrap_dt_bias == 0``): ``repeat(L-1-arange(L), B_b // L)`` padded with level 0.

    Returns ``(levels (B_b,) int32, num_dt_cfg = B_b // L)``. Raises when ``B_b < L`` (all
    rows would get level 0: kvfrans/shortcut-models#11) or ``B`` is not divisible by
    ``bootstrap_every``.
    """
    L = _log2_steps(denoise_timesteps)
    if not isinstance(bootstrap_every, (int, np.integer)) or bootstrap_every < 1:
        raise ValueError(f"bootstrap_every must be an integer >= 1; got {bootstrap_every!r}")
    if batch_size % bootstrap_every:
        raise ValueError(f"batch_size={batch_size} must be divisible by "
                         f"bootstrap_every={bootstrap_every}")
    bb = batch_size // bootstrap_every
    if bb < L:
        raise ValueError(
            f"batch_size // bootstrap_every = {bb} bootstrap rows < log2(denoise_timesteps) = {L} "
            f"levels: the level allocation degenerates (increase batch_size)")
    per = bb // L
    lv = np.repeat(L - 1 - np.arange(L), per)
    lv = np.concatenate([lv, np.zeros(bb - lv.shape[0], lv.dtype)]).astype(np.int32)
    return lv, per


def _check_process(process):
    if not isinstance(process, Linear):
        raise ValueError(f"shortcut models live on a diffjax.processes.Linear process (the "
                         f"paper's path is Linear(sigma_min=1e-5)); got {type(process).__name__}")
    return process


def shortcut_targets(apply_fn: Callable, ema_params: Any, key: Array, x_data: Array,
                     labels: Array | None = None, *, process: Linear = SHORTCUT_PROCESS,
                     num_classes: int | None = None, denoise_timesteps: int = 128,
                     bootstrap_every: int = 8, class_dropout_prob: float = 0.1,
                     bootstrap_cfg: bool = False, cfg_scale: float = 1.5,
                     clip: float | None = 4.0) -> dict:
    """Inputs and targets of one shortcut batch (reference ``targets_shortcut.py ::
    get_targets``), in diffjax time.

    Bootstrap rows (paper eq. 5 / Alg. 1, step ``h = d/2`` towards the data):
    ``u1 = u(x_t, t, l+1)``, ``x' = clip(x_t - h u1)``, ``u2 = u(x', t - h, l+1)``, target
    ``clip((u1 + u2)/2)``, with ``u`` evaluated at ``ema_params`` (``bootstrap_ema=1``), no
    gradient. With ``bootstrap_cfg`` the first ``B_b // L`` rows (level ``L-1``, whose halves
    are the flow level) use ``u_null + cfg_scale (u_cond - u_null)`` for ``u1`` and ``u2``
    (null label = ``num_classes``). Flow rows: ``x_t = alpha x_data + sigma z``, target the
    path's velocity ``alpha_dot x_data + sigma_dot z = (1 - eps) z - x_data``.

    Args:
      apply_fn: ``apply_fn(params, x, t, d_level, labels) -> u`` (diffjax time and velocity).
      ema_params: parameters for the bootstrap targets.
      key: PRNG key.
      x_data: data ``(B, ...)``.
      labels: int labels ``(B,)`` or ``None`` (unconditional: no dropout, no CFG).
      process: the path, a :class:`~diffjax.processes.Linear` (default: the paper's
        ``sigma_min = 1e-5``).
      num_classes: null label id; required with ``labels``.
      denoise_timesteps: ``M``, the finest level's number of steps (a power of 2).
      bootstrap_every: one row in this many is a bootstrap row.
      class_dropout_prob: label dropout of the flow rows.
      bootstrap_cfg, cfg_scale: guidance of the level ``L-1`` bootstrap targets.
      clip: the reference's ``[-4, 4]`` clipping (``None`` disables, for exact-oracle tests).

    Returns:
      dict with ``x_t``, ``t`` (diffjax time), ``d_level`` (int32), ``target``, ``labels``
      (or None), ``is_bootstrap`` (bool (B,)), ``num_bootstrap``.
    """
    process = _check_process(process)
    x_data = as_batch(x_data, "x_data")
    B = x_data.shape[0]
    L = _log2_steps(denoise_timesteps)
    lv_np, num_dt_cfg = bootstrap_levels(B, denoise_timesteps, bootstrap_every)
    bb = lv_np.shape[0]
    if labels is not None:
        labels = jnp.asarray(labels)
        if labels.shape != (B,):
            raise ValueError(f"labels must have shape ({B},); got {labels.shape}")
        if num_classes is None:
            raise ValueError("num_classes (the null label id) is required with labels")
    elif bootstrap_cfg:
        raise ValueError("bootstrap_cfg needs labels")
    if not 0.0 <= class_dropout_prob <= 1.0:
        raise ValueError(f"class_dropout_prob must lie in [0, 1]; got {class_dropout_prob!r}")
    label_key, time_key, noise_key = jax.random.split(key, 3)
    cl = (lambda v: jnp.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    dtype = x_data.dtype

    # bootstrap rows: paper time k d (k < 2^level) is diffjax time 1 - k d (exact: dyadic)
    lv = jnp.asarray(lv_np)
    dt = 1.0 / (2.0 ** lv.astype(dtype))
    sections = 2 ** lv
    t_b = 1.0 - jax.random.randint(time_key, (bb,), 0, sections).astype(dtype) / sections
    xb_data = x_data[:bb]
    xb_noise = jax.random.normal(noise_key, xb_data.shape, dtype)
    x_t_b = process.marginal(xb_data, t_b, xb_noise).astype(dtype)
    lab_b = labels[:bb] if labels is not None else None
    half = dt / 2.0
    lv_half = lv + 1

    def u_fn(x, t):
        if not bootstrap_cfg:
            return apply_fn(ema_params, x, t, lv_half, lab_b)
        n = num_dt_cfg
        xe = jnp.concatenate([x, x[:n]], axis=0)
        te = jnp.concatenate([t, t[:n]], axis=0)
        le = jnp.concatenate([lv_half, lv_half[:n]], axis=0)
        ye = jnp.concatenate([lab_b, jnp.full((n,), num_classes, lab_b.dtype)], axis=0)
        raw = apply_fn(ema_params, xe, te, le, ye)
        cond, unc = raw[:bb], raw[bb:]
        return jnp.concatenate([combine_cfg(cond[:n], unc, cfg_scale), cond[n:]], axis=0)

    u1 = u_fn(x_t_b, t_b)
    x_mid = cl(x_t_b - bcast(half, u1) * u1)
    u2 = u_fn(x_mid, t_b - half)
    tgt_b = jax.lax.stop_gradient(cl(0.5 * (u1 + u2)))

    # flow-matching rows (same time/noise keys as the reference)
    M = denoise_timesteps
    t_f = 1.0 - jax.random.randint(time_key, (B,), 0, M).astype(dtype) / M
    noise = jax.random.normal(noise_key, x_data.shape, dtype)
    x_t_f = process.marginal(x_data, t_f, noise).astype(dtype)
    tf = bcast(t_f, x_data)
    u_f = (process.alpha_dot(tf) * x_data + process.sigma_dot(tf) * noise).astype(dtype)
    nf = B - bb
    out_labels = None
    if labels is not None:
        drop = jax.random.bernoulli(label_key, class_dropout_prob, (B,))
        dropped = jnp.where(drop, num_classes, labels)
        out_labels = jnp.concatenate([lab_b, dropped[:nf]], axis=0)
    return {
        "x_t": jnp.concatenate([x_t_b, x_t_f[:nf]], axis=0),
        "t": jnp.concatenate([t_b, t_f[:nf]], axis=0),
        "d_level": jnp.concatenate([lv, jnp.full((nf,), L, jnp.int32)], axis=0),
        "target": jnp.concatenate([tgt_b, u_f[:nf]], axis=0),
        "labels": out_labels,
        "is_bootstrap": jnp.arange(B) < bb,
        "num_bootstrap": bb,
    }


def shortcut_loss(apply_fn: Callable, params: Any, ema_params: Any | None, key: Array,
                  x_data: Array, labels: Array | None = None,
                  **target_kwargs) -> tuple[Array, dict]:
    """Shortcut-model loss: plain MSE of ``u_theta(x_t, t, d_level, y)`` to
    :func:`shortcut_targets` over all rows (reference ``train.py :: loss_fn``; the same
    numbers as in the paper's time, since ``u = -s`` there and the MSE is sign-blind).

    Args:
      apply_fn: ``apply_fn(params, x, t, d_level, labels) -> u`` (diffjax time and velocity).
      params: online parameters.
      ema_params: parameters of the bootstrap targets (``None``: online params under
        stop-gradient, ``bootstrap_ema=0``).
      key, x_data, labels: see :func:`shortcut_targets`; ``target_kwargs`` (``process``,
        ``denoise_timesteps``, ...) are passed to it.

    Returns:
      ``(loss (B,), aux)``; ``aux`` has the :func:`shortcut_targets` dict plus ``'index'``
      (the level), ``'weight'`` and ``'unweighted'``.
    """
    tgt_params = jax.lax.stop_gradient(params if ema_params is None else ema_params)
    tg = shortcut_targets(apply_fn, tgt_params, key, x_data, labels, **target_kwargs)
    pred = apply_fn(params, tg["x_t"], tg["t"], tg["d_level"], tg["labels"])
    per = jnp.mean((pred - tg["target"]) ** 2, axis=tuple(range(1, pred.ndim)))
    aux = dict(tg)
    aux.update({"index": tg["d_level"], "weight": jnp.ones_like(per), "unweighted": per})
    return per, aux


def shortcut_as_velocity(model: Callable, d_level: int) -> FixedLevel:
    """A shortcut model ``model(x, t, d_level, cond)`` (diffjax time and velocity) at a fixed
    level as a diffjax ``'velocity'`` model ``u(x, t, cond)`` for the standard samplers (a
    pytree: :class:`diffjax.adapters.FixedLevel`). At the flow level ``log2 M`` this is the
    flow-matching velocity of the process."""
    return FixedLevel(model, int(d_level))
