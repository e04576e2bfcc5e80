"""Few-step samplers: consistency models, shortcut models and IMM pushforward.

These move between a handful of times with a *map* (not an ODE step), so they are plain
functions with a short Python loop (unrolled under ``jax.jit``; at most 128 iterations)
rather than :class:`~diffjax.samplers.driver.Step` objects.

* :func:`consistency_onestep`, :func:`stochastic_iterative_sampler` (Song et al. 2023,
  Alg. 1; ``cm/karras_diffusion.py :: karras_sample`` ``'onestep'`` and
  ``stochastic_iterative_sampler``): models are diffjax ``'x0'`` consistency functions on the
  :class:`~diffjax.processes.EDM` process (``t = sigma / sigma_max``).
* :func:`shortcut_sample` (Frans et al. 2024, Alg. 2; ``helper_inference.py :: do_inference``):
  paper time (t = 0 noise, t = 1 data), ``model(x, t, d_level, cond)``.
* :func:`imm_pushforward_sample` (Zhou et al. 2025; ``generate_images.py ::
  pushforward_generator_fn``): ``g(x_t, t, s, cond) -> G`` with CFG on ``G`` before the map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.losses.imm import IMM_KINDS, imm_map
from diffjax.processes import EDM

Array = Any

__all__ = ["consistency_onestep", "stochastic_iterative_sampler", "shortcut_sample",
           "imm_time_grid", "imm_pushforward_sample"]


def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be (batch, ...) with positive sizes; got {shape}")
    return shape


def consistency_onestep(model: Callable, key: Array, shape, *, process: EDM | None = None,
                        cond: Any = None, clip: bool = True) -> Array:
    """One-step consistency sampling: ``x_T = sigma_max z``, ``x = f(x_T, sigma_max)``
    (paper Alg. 1 with one step), clamped to ``[-1, 1]`` when ``clip`` (reference)."""
    shape = _check_shape(shape)
    process = EDM() if process is None else process
    if not isinstance(process, EDM):
        raise ValueError(f"process must be diffjax.processes.EDM; got {type(process).__name__}")
    x = process.sigma_max * jax.random.normal(key, shape)
    x = model(x, jnp.ones((shape[0],), x.dtype), cond)
    return jnp.clip(x, -1.0, 1.0) if clip else x


def stochastic_iterative_sampler(model: Callable, key: Array, shape, ts, steps: int, *,
                                 process: EDM | None = None, cond: Any = None,
                                 clip: bool = True) -> Array:
    """Multistep consistency sampling (paper Alg. 1; reference ``stochastic_iterative_sampler``).

    ``ts`` is an increasing list of indices into a Karras grid of ``steps`` points (e.g.
    ``[0, 22, 39]`` with ``steps = 40``). For consecutive ``(ts_i, ts_{i+1})``:
    ``x0 = f(x, sigma(ts_i))``, ``sigma' = clip(sigma(ts_{i+1}), sigma_min, sigma_max)``,
    ``x = x0 + sqrt(sigma'^2 - sigma_min^2) z``. With ``ts[-1] = steps - 1`` the last noise
    is zero; ``len(ts) - 1`` model evaluations.
    """
    shape = _check_shape(shape)
    process = EDM() if process is None else process
    if not isinstance(process, EDM):
        raise ValueError(f"process must be diffjax.processes.EDM; got {type(process).__name__}")
    ts = [int(v) for v in ts]
    increasing = all(b > a for a, b in zip(ts, ts[1:], strict=False))
    if len(ts) < 2 or not increasing or ts[0] < 0 or ts[-1] >= steps:
        raise ValueError(f"ts must be >= 2 strictly increasing indices in [0, steps-1={steps - 1}]"
                         f"; got {ts}")
    smin, smax, rho = process.sigma_min, process.sigma_max, process.rho
    a, b = smax ** (1.0 / rho), smin ** (1.0 / rho)
    sig = lambda i: (a + i / (steps - 1) * (b - a)) ** rho
    k0, key = jax.random.split(key)
    x = smax * jax.random.normal(k0, shape)
    ones = jnp.ones((shape[0],), x.dtype)
    for n, (i, j) in enumerate(zip(ts[:-1], ts[1:], strict=False)):
        x0 = model(x, ones * (sig(i) / smax), cond)
        nxt = float(np.clip(sig(j), smin, smax))
        x = x0 + math.sqrt(max(nxt**2 - smin**2, 0.0)) * jax.random.normal(
            jax.random.fold_in(key, n), shape)
    return jnp.clip(x, -1.0, 1.0) if clip else x


def shortcut_sample(model: Callable, key: Array, shape, num_steps: int, *, cond: Any = None,
                    x_init: Array | None = None) -> Array:
    """Shortcut sampling with ``M`` Euler steps on the shortcut (paper Alg. 2):
    ``x ~ N(0, I)``; for ``i < M``: ``x <- x + s(x, i/M, log2 M, y) / M``.

    ``model(x, t, d_level, cond)`` in paper time (t = 1 is data); ``num_steps`` a power of 2.
    With ``M = 128`` this is the flow level the model was trained on. Returns ``x`` at t = 1.
    """
    shape = _check_shape(shape)
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1 or (
            num_steps & (num_steps - 1)):
        raise ValueError(f"num_steps must be a power of 2; got {num_steps!r}")
    level = int(round(math.log2(num_steps)))
    x = jax.random.normal(key, shape) if x_init is None else jnp.asarray(x_init)
    lv = jnp.full((shape[0],), level, jnp.int32)
    for i in range(num_steps):
        t = jnp.full((shape[0],), i / num_steps, x.dtype)
        x = x + model(x, t, lv, cond) / num_steps
    return x


def imm_time_grid(num_steps: int, T: float = 0.994, eps_t: float = 0.0,
                  kind: str = "uniform", rho: float = 7.0, mid_eta=None) -> np.ndarray:
    """Decreasing times ``t_0 = T > ... > t_K = eps_t`` (``pushforward_generator_fn``):
    ``'uniform'`` (``linspace(T, eps_t, K+1)``), ``'edm'`` (Karras rho-grid in ``eta``) or
    ``'mid_eta'`` (explicit interior ``eta`` values, e.g. ``[1.4]`` for CIFAR 2-step)."""
    if kind == "uniform":
        return np.linspace(T, eps_t, num_steps + 1)
    eta = lambda t: t / (1.0 - t)
    if kind == "edm":
        a, b = eta(T) ** (1 / rho), max(eta(eps_t), 0.0) ** (1 / rho)
        e = (a + np.linspace(0, 1, num_steps + 1) * (b - a)) ** rho
        return e / (1.0 + e)
    if kind == "mid_eta":
        mids = np.asarray(mid_eta if mid_eta is not None else [], np.float64)
        if mids.size != num_steps - 1:
            raise ValueError(f"mid_eta must have num_steps - 1 = {num_steps - 1} values")
        return np.concatenate([[T], mids / (1.0 + mids), [eps_t]])
    raise ValueError(f"unknown grid kind {kind!r}; expected 'uniform', 'edm' or 'mid_eta'")


def imm_pushforward_sample(g: Callable, key: Array, shape, *, num_steps: int = 1,
                           kind: str = "euler_fm", T: float = 0.994, eps_t: float = 0.0,
                           grid: str = "uniform", mid_eta=None, sigma_data: float = 0.5,
                           cond: Any = None, null_cond: Any = None,
                           cfg_scale: float | None = None) -> Array:
    """IMM pushforward sampling: ``x_T ~ N(0, sigma_d^2 I)``, ``x <- f_{t_{i+1}, t_i}(x)``.

    ``g(x_t, t, s, cond) -> G``; with ``cfg_scale`` the map uses
    ``G_u + w (G_c - G_u)`` (``null_cond`` = the null label, e.g. a zero one-hot), applied to
    ``G`` before :func:`~diffjax.losses.imm.imm_map` (``IMMPrecond.cfg_forward``).
    """
    shape = _check_shape(shape)
    if kind not in IMM_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {IMM_KINDS}")
    if cfg_scale is not None and null_cond is None:
        raise ValueError("cfg_scale needs null_cond (the unconditional label)")
    ts = imm_time_grid(num_steps, T, eps_t, grid, mid_eta=mid_eta)
    x = sigma_data * jax.random.normal(key, shape)
    B = shape[0]
    for t, s in zip(ts[:-1], ts[1:], strict=False):
        tv = jnp.full((B,), t, x.dtype)
        sv = jnp.full((B,), s, x.dtype)
        G = g(x, tv, sv, cond)
        if cfg_scale is not None:
            Gu = g(x, tv, sv, null_cond)
            G = Gu + cfg_scale * (G - Gu)
        x = imm_map(kind, G, x, tv, sv, sigma_data)
    return x


