"""Shortcut models (Frans, Hafner, Levine, Abbeel 2024, arXiv 2410.12557).

Convention (the paper's and the network's): ``t = 0`` is noise, ``t = 1`` is data,
``x_t = (1 - (1 - 1e-5) t) x_0 + t x_1`` with ``x_0 ~ N(0, I)`` and data ``x_1``; the
flow target is ``v = x_1 - (1 - 1e-5) x_0``. diffjax time is ``1 - t``
(:func:`diffjax.adapters.flip_time`); :func:`shortcut_as_velocity` exposes a trained shortcut
network at a fixed step level as a diffjax ``'velocity'`` model for the standard samplers.

The network is ``apply_fn(params, x, t, d_level, labels) -> s`` with the step size
``d = 2^-d_level`` fed as the **integer level** (reference encoding; spec §3d /
Appendix B #4). Targets follow ``targets_shortcut.py :: get_targets`` (spec §3a):

* the first ``B_b = B // bootstrap_every`` rows are bootstrap rows; the levels
  ``L-1, ..., 0`` (``L = log2 M``) get ``B_b // L`` rows each, deterministic; the remainder
  gets level 0; ``t`` is uniform on the grid of the row's step size;
* the remaining ``B - B_b`` rows are flow-matching rows on ``t in {0, 1/M, ...}`` with
  ``d = 1/M`` (level ``L``; the paper says ``d = 0``: Appendix B #3 follows the code) and
  labels dropped to the null class ``num_classes`` with probability ``class_dropout_prob``;
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

from diffjax.adapters import flip_time
from diffjax.losses.diffusion import as_batch, bcast

Array = Any

__all__ = ["bootstrap_levels", "shortcut_targets", "shortcut_loss", "shortcut_as_velocity",
           "PATH_EPS"]

PATH_EPS = 1e-5


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


def shortcut_targets(apply_fn: Callable, ema_params: Any, key: Array, x1: Array,
                     labels: Array | None = None, *, num_classes: int | None = None,
                     denoise_timesteps: int = 128, bootstrap_every: int = 8,
                     class_dropout_prob: float = 0.1, bootstrap_cfg: bool = False,
                     cfg_scale: float = 1.5, clip: float | None = 4.0,
                     path_eps: float = PATH_EPS) -> dict:
    """Inputs and targets of one shortcut batch (``targets_shortcut.py :: get_targets``).

    Bootstrap rows (paper eq. 5 / Alg. 1): ``b1 = s(x_t, t, l+1)``,
    ``x' = clip(x_t + d/2 b1)``, ``b2 = s(x', t + d/2, l+1)``, target ``clip((b1 + b2)/2)``
    with ``s`` evaluated at ``ema_params`` (``bootstrap_ema=1``), no gradient. With
    ``bootstrap_cfg`` the first ``B_b // L`` rows (level ``L-1``, whose halves are the flow
    level) use ``u + cfg_scale (c - u)`` for ``b1`` and ``b2`` (null label = ``num_classes``).

    Args:
      apply_fn: ``apply_fn(params, x, t, d_level, labels) -> s`` in paper time.
      ema_params: parameters for the bootstrap targets.
      key: PRNG key.
      x1: data ``(B, ...)``.
      labels: int labels ``(B,)`` or ``None`` (unconditional: no dropout, no CFG).
      num_classes: null label id; required with ``labels``.
      clip: the reference's ``[-4, 4]`` clipping (``None`` disables, for exact-oracle tests).
      path_eps: the ``1e-5`` of the path.

    Returns:
      dict with ``x_t``, ``t``, ``d_level`` (int32), ``target``, ``labels`` (or None),
      ``is_bootstrap`` (bool (B,)), ``num_bootstrap``.
    """
    x1 = as_batch(x1, "x1")
    B = x1.shape[0]
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

    # bootstrap rows
    lv = jnp.asarray(lv_np)
    dt = 1.0 / (2.0 ** lv.astype(x1.dtype))
    sections = 2 ** lv
    t_b = jax.random.randint(time_key, (bb,), 0, sections).astype(x1.dtype) / sections
    xb1 = x1[:bb]
    xb0 = jax.random.normal(noise_key, xb1.shape, x1.dtype)
    tb = bcast(t_b, xb1)
    x_t_b = (1.0 - (1.0 - path_eps) * tb) * xb0 + tb * xb1
    lab_b = labels[:bb] if labels is not None else None
    half = dt / 2.0
    lv_half = lv + 1

    def s_fn(x, t):
        if not bootstrap_cfg:
            return apply_fn(ema_params, x, t, lv_half, lab_b)
        n = num_dt_cfg
        xe = jnp.concatenate([x, x[:n]], axis=0)
        te = jnp.concatenate([t, t[:n]], axis=0)
        le = jnp.concatenate([lv_half, lv_half[:n]], axis=0)
        ye = jnp.concatenate([lab_b, jnp.full((n,), num_classes, lab_b.dtype)], axis=0)
        raw = apply_fn(ema_params, xe, te, le, ye)
        cond, unc = raw[:bb], raw[bb:]
        guided = unc + cfg_scale * (cond[:n] - unc)
        return jnp.concatenate([guided, cond[n:]], axis=0)

    b1 = s_fn(x_t_b, t_b)
    x_mid = cl(x_t_b + bcast(half, b1) * b1)
    b2 = s_fn(x_mid, t_b + half)
    tgt_b = jax.lax.stop_gradient(cl(0.5 * (b1 + b2)))

    # flow-matching rows (same time/noise keys as the reference)
    M = denoise_timesteps
    t_f = jax.random.randint(time_key, (B,), 0, M).astype(x1.dtype) / M
    x0 = jax.random.normal(noise_key, x1.shape, x1.dtype)
    tf = bcast(t_f, x1)
    x_t_f = (1.0 - (1.0 - path_eps) * tf) * x0 + tf * x1
    v_f = x1 - (1.0 - path_eps) * x0
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
        "target": jnp.concatenate([tgt_b, v_f[:nf]], axis=0),
        "labels": out_labels,
        "is_bootstrap": jnp.arange(B) < bb,
        "num_bootstrap": bb,
    }


def shortcut_loss(apply_fn: Callable, params: Any, ema_params: Any | None, key: Array, x1: Array,
                  labels: Array | None = None, **target_kwargs) -> tuple[Array, dict]:
    """Shortcut-model loss: plain MSE of ``s_theta(x_t, t, d_level, y)`` to
    :func:`shortcut_targets` over all rows (reference ``train.py :: loss_fn``).

    Args:
      apply_fn: ``apply_fn(params, x, t, d_level, labels) -> s`` (paper time: t=1 is data).
      params: online parameters.
      ema_params: parameters of the bootstrap targets (``None``: online params under
        stop-gradient, ``bootstrap_ema=0``).
      key, x1, labels: see :func:`shortcut_targets`; ``target_kwargs`` are passed to it.

    Returns:
      ``(loss (B,), aux)``; ``aux`` has the :func:`shortcut_targets` dict plus ``'t'`` in
      diffjax time (``flip_time``), ``'weight'`` and ``'unweighted'``.
    """
    tgt_params = jax.lax.stop_gradient(params if ema_params is None else ema_params)
    tg = shortcut_targets(apply_fn, tgt_params, key, x1, labels, **target_kwargs)
    pred = apply_fn(params, tg["x_t"], tg["t"], tg["d_level"], tg["labels"])
    per = jnp.mean((pred - tg["target"]) ** 2, axis=tuple(range(1, pred.ndim)))
    aux = dict(tg)
    aux.update({"t_paper": tg["t"], "t": flip_time(tg["t"]), "index": tg["d_level"],
                "weight": jnp.ones_like(per), "unweighted": per})
    return per, aux


def shortcut_as_velocity(model: Callable, d_level: int) -> Callable:
    """A shortcut model ``model(x, t_paper, d_level, cond)`` at a fixed level as a diffjax
    ``'velocity'`` model: ``u(x, t) = -s(x, 1 - t, d_level)`` (``dt = -dt_paper``)."""

    def velocity(x, t, cond=None):
        t = flip_time(t)
        lv = jnp.full(t.shape, d_level, jnp.int32)
        return -model(x, t, lv, cond)

    return velocity
