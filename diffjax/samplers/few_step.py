"""Few-step samplers as driver steps: consistency models, shortcut models, IMM pushforward.

Each moves between a handful of times with a *map* rather than an ODE step, but runs through
the same driver (:func:`diffjax.samplers.sample`) as every other sampler: sample ``i``
depends only on ``(key, sample_offset + i)`` (so any chunking of a sample set, on any number
of devices, draws the same set), the batch is sharded over the devices, and a model given as a
pytree (``jax.tree_util.Partial(apply, params)``, a ``flax.struct`` dataclass) is traced, so
new weights never recompile.

* :func:`consistency_sample` (Song et al. 2023, Alg. 1; reference
  ``cm/karras_diffusion.py :: karras_sample`` ``'onestep'`` and
  ``stochastic_iterative_sampler``) with :class:`ConsistencyStep`: the model is a diffjax
  ``'x0'`` consistency function on the :class:`~diffjax.processes.EDM` process
  (``t = sigma / sigma_max``).
* :func:`shortcut_sample` (Frans et al. 2024, Alg. 2) with :class:`ShortcutStep`:
  ``model(x, t, d_level, cond)`` in diffjax time, returning the velocity ``dx/dt`` at step size
  ``2^-d_level`` (:mod:`diffjax.losses.shortcut`).
* :func:`imm_sample` (Zhou et al. 2025, pushforward sampling; official ``generate_images.py
  :: pushforward_generator_fn``) with :class:`IMMStep`: ``g(x_t, t, s, cond) -> G`` and the
  map :func:`~diffjax.parameterization.imm_map` (eq. 12), CFG on ``G`` before the map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import struct

from diffjax.adapters import FixedLevel
from diffjax.grids import karras_sigma, karras_sigmas
from diffjax.parameterization import IMM_KINDS, IMM_PROCESS, imm_map
from diffjax.processes import EDM, Linear
from diffjax.samplers.driver import Step, sample

Array = Any

__all__ = ["ConsistencyStep", "ShortcutStep", "IMMStep", "IMMGuided", "consistency_grid",
           "consistency_sample", "shortcut_sample", "imm_time_grid", "imm_sample"]


# ----------------------------------------------------------------------------------------------
# Consistency models (Song et al. 2023, Alg. 1)
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class ConsistencyStep(Step):
    """One round of multistep consistency sampling (Song et al. 2023, Alg. 1) from ``t`` to
    ``s``: ``x0 = f(x, t)``, then ``x = x0 + noise[n] z`` with the fresh-noise std of step
    ``n``, ``noise[n] = sqrt(sigma'^2 - sigma_min^2)`` for the next level ``sigma'``
    (:func:`consistency_grid`; 0 after the last model evaluation when it ends at
    ``sigma_min``). With ``clip`` the final sample is clamped to ``[-1, 1]`` (the reference).
    ``noise`` is a leaf: new levels of the same count never recompile.
    """

    noise: Array
    clip: bool = struct.field(pytree_node=False, default=True)
    nfe = 1

    def __call__(self, ctx, x, t, s, state):
        x0 = ctx.denoise(x, t).x0
        x_next = x0 + self.noise[ctx.index] * ctx.normal(x)
        if self.clip:
            x_next = jnp.where(ctx.is_last, jnp.clip(x_next, -1.0, 1.0), x_next)
        return x_next, state


def _check_edm(process):
    if not isinstance(process, EDM):
        raise ValueError(f"process must be diffjax.processes.EDM; got {type(process).__name__}")
    return process


def consistency_grid(process: EDM, ts=(0,), steps: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Time grid and fresh-noise stds of :func:`consistency_sample` (float64, host).

    ``ts`` indexes a ``steps``-point Karras grid (:func:`~diffjax.grids.karras_sigma` with the
    process's ``sigma_min``, ``sigma_max``, ``rho``). ``ts = (0,)``: one step from
    ``sigma_max`` (grid ``[1, sigma_min / sigma_max]``, no noise). Otherwise strictly
    increasing indices, one model evaluation per consecutive pair ``(i, j)``: the model is
    evaluated at ``sigma_i`` and the noise std is ``sqrt(sigma'^2 - sigma_min^2)`` with
    ``sigma' = clip(sigma_j, sigma_min, sigma_max)`` (reference ``stochastic_iterative_sampler``,
    e.g. ``ts = (0, 22, 39)`` of 40 on ImageNet-64).

    Returns:
      ``(grid (K + 1,), noise (K,))`` with ``grid = sigma / sigma_max``.
    """
    process = _check_edm(process)
    ts = tuple(int(v) for v in ts)
    smin, smax, rho = process.sigma_min, process.sigma_max, process.rho
    if len(ts) == 1:
        if ts[0] != 0:
            raise ValueError(f"one-step sampling starts at sigma_max: ts must be (0,); got {ts}")
        return np.array([1.0, smin / smax]), np.zeros(1)
    increasing = all(b > a for a, b in zip(ts, ts[1:], strict=False))
    if not increasing or ts[0] < 0 or ts[-1] >= steps:
        raise ValueError(f"ts must be >= 2 strictly increasing indices in [0, steps-1={steps - 1}]"
                         f"; got {list(ts)}")
    sig = karras_sigma(np.asarray(ts), steps, smin, smax, rho)
    nxt = np.clip(sig[1:], smin, smax)
    return sig / smax, np.sqrt(np.maximum(nxt**2 - smin**2, 0.0))


def consistency_sample(f: Callable, key: Array, shape, *, process: EDM | None = None, ts=(0,),
                       steps: int = 40, cond: Any = None, clip: bool = True,
                       sample_offset: int = 0, mesh: Any = "auto") -> Array:
    """Consistency-model sampling, one-step or multistep (Song et al. 2023, Alg. 1).

    ``x = sigma_max z``; for each step ``x0 = f(x, t_n)`` and
    ``x = x0 + sqrt(sigma'^2 - sigma_min^2) z'`` (:func:`consistency_grid`); returns the last
    ``x`` (clamped to ``[-1, 1]`` with ``clip``). ``len(ts) - 1`` model evaluations (one for
    ``ts = (0,)``).

    Args:
      f: ``'x0'`` consistency function ``f(x, t, cond)`` on ``process`` (diffjax time
        ``t = sigma / sigma_max``), e.g. a
        :class:`~diffjax.parameterization.ConsistencyPrecond`; a pytree so weights are traced.
      key: PRNG key; sample ``i`` depends only on ``(key, sample_offset + i)``.
      shape: ``(B, ...)``.
      process: the :class:`~diffjax.processes.EDM` process (default ``EDM()``).
      ts, steps: ``(0,)`` for one step, else increasing indices into a ``steps``-point
        Karras grid.
      cond: conditioning passed to ``f``.
      clip: clamp the samples to ``[-1, 1]``.
      sample_offset, mesh: see :func:`diffjax.samplers.sample`.
    """
    process = _check_edm(EDM() if process is None else process)
    grid, noise = consistency_grid(process, ts, steps)
    step = ConsistencyStep(jnp.asarray(noise, jnp.float32), bool(clip))
    return sample(f, key, shape, jnp.asarray(grid, jnp.float32), step, process=process,
                  prediction="x0", cond=cond, sample_offset=sample_offset, mesh=mesh)


# ----------------------------------------------------------------------------------------------
# Shortcut models (Frans et al. 2024, Alg. 2)
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class ShortcutStep(Step):
    """An Euler step along the shortcut: ``x_s = x_t + (s - t) u(x_t, t)`` with the model's
    own output ``u`` (a velocity ``dx/dt`` at the step size ``t - s``; bind the level with
    :class:`~diffjax.adapters.FixedLevel`). On the uniform grid of ``M`` steps this is the
    paper's ``x <- x + s(x, t', d) / M`` (Alg. 2) with ``t' = 1 - t``, ``s = -u``."""

    nfe = 1

    def __call__(self, ctx, x, t, s, state):
        return x + (s - t) * ctx.raw(x, t), state


def _check_power_of_two(num_steps):
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1 or (
            num_steps & (num_steps - 1)):
        raise ValueError(f"num_steps must be a power of 2; got {num_steps!r}")
    return int(num_steps)


def shortcut_sample(model: Callable, key: Array, shape, num_steps: int, *,
                    process: Linear | None = None, cond: Any = None,
                    x_init: Array | None = None, sample_offset: int = 0,
                    mesh: Any = "auto") -> Array:
    """Shortcut sampling with ``M = num_steps`` Euler steps on the shortcut (Frans et al.
    2024, Alg. 2): ``x ~ N(0, I)`` at ``t = 1``; for ``i < M``, ``t = 1 - i/M``:
    ``x <- x - u(x, t, log2 M, cond) / M``. Returns ``x`` at ``t = 0``.

    Args:
      model: ``model(x, t, d_level, cond) -> u`` in diffjax time (velocity ``dx/dt`` at step
        size ``2^-d_level``); a pytree so weights are traced. ``M = 2^L`` with ``L`` the flow
        level is the plain flow ODE the model was trained on.
      key: PRNG key; sample ``i`` depends only on ``(key, sample_offset + i)``.
      shape: ``(B, ...)``.
      num_steps: ``M``, a power of 2.
      process: the path, a :class:`~diffjax.processes.Linear` (default ``Linear()``). Every
        ``sigma_min`` gives the same samples: ``sigma(1) = 1``, so the start is ``z``, and the
        steps use only the model.
      cond: conditioning passed to ``model``.
      x_init: start from this batch (at ``t = 1``) instead of ``z``.
      sample_offset, mesh: see :func:`diffjax.samplers.sample`.
    """
    M = _check_power_of_two(num_steps)
    process = Linear() if process is None else process
    if not isinstance(process, Linear):
        raise ValueError(f"process must be diffjax.processes.Linear; got "
                         f"{type(process).__name__}")
    level = int(round(math.log2(M)))
    grid = jnp.asarray(np.linspace(1.0, 0.0, M + 1), jnp.float32)  # exact: i / M is dyadic
    return sample(FixedLevel(model, level), key, shape, grid, ShortcutStep(), process=process,
                  prediction="velocity", cond=cond, x_init=x_init, sample_offset=sample_offset,
                  mesh=mesh)


# ----------------------------------------------------------------------------------------------
# IMM pushforward sampling (Zhou et al. 2025)
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class IMMStep(Step):
    """IMM's pushforward step ``x_s = f_{s,t}(x_t) = c_skip x_t + c_out G(x_t, t, s)``
    (:func:`~diffjax.parameterization.imm_map`, paper eq. 12) with the model's own output
    ``G = g(x_t, t, s, cond)``. The initial draw is ``x_T = sigma_d z`` (``prior_std``)."""

    kind: str = struct.field(pytree_node=False, default="euler_fm")
    sigma_data: float = 0.5
    nfe = 1

    def prior_std(self, process, t0):
        return jnp.asarray(self.sigma_data, jnp.float32)

    def __call__(self, ctx, x, t, s, state):
        tb = jnp.broadcast_to(t, (x.shape[0],))
        sb = jnp.broadcast_to(s, (x.shape[0],))
        G = ctx.raw(x, tb, sb)
        return imm_map(self.kind, G, x, tb, sb, self.sigma_data), state


@struct.dataclass
class IMMGuided:
    """Classifier-free guidance on IMM's raw output (official ``IMMPrecond.cfg_forward``):
    ``G = G(x, t, s, null) + scale (G(x, t, s, cond) - G(x, t, s, null))``, applied before the
    map. ``null_cond`` and ``scale`` are leaves (traced)."""

    g: Callable
    null_cond: Any
    scale: float

    def __call__(self, x, t, s, cond=None):
        # imported here: diffjax.guidance builds on the sampler driver (its step wrappers
        # subclass Step), so a module-level import would close a cycle through this package
        from diffjax.guidance import combine_cfg

        return combine_cfg(self.g(x, t, s, cond), self.g(x, t, s, self.null_cond), self.scale)


def imm_time_grid(num_steps: int, T: float = 0.994, eps_t: float = 0.0,
                  kind: str = "uniform", rho: float = 7.0, mid_eta=None) -> np.ndarray:
    """Decreasing times ``t_0 = T > ... > t_K = eps_t`` (official ``pushforward_generator_fn``):
    ``'uniform'`` (``linspace(T, eps_t, K+1)``), ``'edm'`` (Karras rho-grid in
    ``eta = sigma / alpha`` between ``eta(T)`` and ``eta(eps_t)``,
    :func:`~diffjax.grids.karras_sigmas`) or ``'mid_eta'`` (explicit interior ``eta`` values,
    e.g. ``[1.4]`` for CIFAR-10 2-step). float64, host."""
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1; got {num_steps!r}")
    if not 0.0 <= eps_t < T < 1.0:
        raise ValueError(f"need 0 <= eps_t < T < 1; got eps_t={eps_t!r}, T={T!r}")
    eta = lambda t: t / (1.0 - t)  # float64 here; IMM_PROCESS.sigma_tilde in float32
    t_of = lambda e: e / (1.0 + e)
    if kind == "uniform":
        return np.linspace(T, eps_t, num_steps + 1)
    if kind == "edm":
        return t_of(karras_sigmas(num_steps + 1, eta(eps_t), eta(T), rho, append_zero=False))
    if kind == "mid_eta":
        mids = np.asarray(mid_eta if mid_eta is not None else [], np.float64)
        if mids.size != num_steps - 1:
            raise ValueError(f"mid_eta must have num_steps - 1 = {num_steps - 1} values")
        return np.concatenate([[T], t_of(mids), [eps_t]])
    raise ValueError(f"unknown grid kind {kind!r}; expected 'uniform', 'edm' or 'mid_eta'")


def imm_sample(g: Callable, key: Array, shape, *, num_steps: int = 1, kind: str = "euler_fm",
               T: float = 0.994, eps_t: float = 0.0, grid: str = "uniform", mid_eta=None,
               sigma_data: float = 0.5, cond: Any = None, null_cond: Any = None,
               cfg_scale: float | None = None, sample_offset: int = 0,
               mesh: Any = "auto") -> Array:
    """IMM pushforward sampling: ``x_T = sigma_d z``, then ``x <- f_{t_{i+1}, t_i}(x)`` over
    :func:`imm_time_grid` (``num_steps`` network evaluations, twice that with CFG).

    Args:
      g: ``g(x_t, t, s, cond) -> G`` (e.g. :func:`~diffjax.losses.imm.imm_precond`'s output);
        a pytree so weights are traced.
      key: PRNG key; sample ``i`` depends only on ``(key, sample_offset + i)``.
      shape: ``(B, ...)``.
      num_steps, T, eps_t, grid, mid_eta: the time grid (:func:`imm_time_grid`).
      kind: the map (:data:`~diffjax.parameterization.IMM_KINDS`).
      sigma_data: ``sigma_d`` of the maps and of the initial draw.
      cond: conditioning passed to ``g``.
      null_cond, cfg_scale: CFG on ``G`` (:class:`IMMGuided`); ``null_cond`` is the null
        condition (e.g. the null label), required with ``cfg_scale``.
      sample_offset, mesh: see :func:`diffjax.samplers.sample`.
    """
    if kind not in IMM_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {IMM_KINDS}")
    if cfg_scale is not None and null_cond is None:
        raise ValueError("cfg_scale needs null_cond (the unconditional label)")
    ts = imm_time_grid(num_steps, T, eps_t, grid, mid_eta=mid_eta)
    model = g if cfg_scale is None else IMMGuided(g, null_cond, float(cfg_scale))
    return sample(model, key, shape, jnp.asarray(ts, jnp.float32),
                  IMMStep(kind, float(sigma_data)), process=IMM_PROCESS, prediction="x0",
                  cond=cond, sample_offset=sample_offset, mesh=mesh)
