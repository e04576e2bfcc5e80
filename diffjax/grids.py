"""Time grids for samplers: decreasing arrays ``t_0 > t_1 > ... > t_N`` in ``[0, 1]``.

A grid of ``N`` steps has ``N + 1`` points; the sampler driver takes one step per
consecutive pair. Grids are plain arrays in the default float dtype (float32, or float64
when ``jax_enable_x64`` is on), passed to the jitted sampler as traced values: a new grid of
the same length never recompiles. The sampler casts the grid to the dtype of its state.

Grids are computed in float64 NumPy where the formula allows it, then cast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.processes import Process, as_time, check_steps, default_float

__all__ = [
    "uniform_grid",
    "quadratic_grid",
    "karras_sigma",
    "karras_sigmas",
    "karras_grid",
    "log_snr_grid",
    "discrete_grid",
    "shift_grid",
    "validate_grid",
]


def _out(t) -> jnp.ndarray:
    return jnp.asarray(np.asarray(t, np.float64), default_float())


def uniform_grid(num_steps: int, t_max: float = 1.0, t_min: float = 0.0) -> jnp.ndarray:
    """``linspace(t_max, t_min, N + 1)`` (score_sde uses ``t_min = eps = 1e-3`` for VP)."""
    check_steps(num_steps)
    return _out(np.linspace(t_max, t_min, num_steps + 1))


def quadratic_grid(num_steps: int, t_max: float = 1.0, t_min: float = 0.0) -> jnp.ndarray:
    """Quadratic spacing, dense near the data (DDIM's ``quad`` sub-sequence, continuous form)."""
    check_steps(num_steps)
    u = np.linspace(1.0, 0.0, num_steps + 1)
    return _out(t_min + (t_max - t_min) * u**2)


def karras_sigma(i, num, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float = 7.0):
    """Point ``i`` of an ``N``-point Karras noise-level grid (Karras et al. 2022, eq. 5).

    ``sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``,
    so ``sigma_0 = sigma_max`` and ``sigma_{N-1} = sigma_min``. The one place this formula is
    written: EDM's sampling grid (:func:`karras_sigmas`), consistency models' discretisation
    (Song et al. 2023, sec. 5; ``i`` and ``N`` traced in the loss), their multistep sampler
    and IMM's ``'edm'`` grid in ``eta``.

    Args:
      i: index (int or float, any shape).
      num: ``N >= 2``, the number of points.
      sigma_min, sigma_max, rho: the grid's end points and curvature (Python floats).

    Returns:
      ``sigma_i``: float64 NumPy when ``i`` and ``num`` are NumPy/Python values; a jax array
      otherwise (``i`` cast to the default float dtype, float64 under ``jax.enable_x64``).
    """
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    if isinstance(i, jax.Array) or isinstance(num, jax.Array):
        i = jnp.asarray(i)
        i = i if jnp.issubdtype(i.dtype, jnp.floating) else i.astype(jnp.result_type(float))
        return (a + i / (jnp.asarray(num, i.dtype) - 1) * (b - a)) ** rho
    i = np.asarray(i, np.float64)
    return (a + i / (np.float64(num) - 1.0) * (b - a)) ** rho


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                  rho: float = 7.0, append_zero: bool = True) -> np.ndarray:
    """EDM's noise levels (Karras et al. 2022, eq. 5), float64: :func:`karras_sigma` at
    ``i = 0..N-1`` (``N = num_steps``; ``[sigma_max]`` for ``N = 1``), followed by
    ``sigma_N = 0`` when ``append_zero``."""
    check_steps(num_steps)
    if num_steps == 1:
        s = np.array([sigma_max], np.float64)
    else:
        s = karras_sigma(np.arange(num_steps), num_steps, sigma_min, sigma_max, rho)
    return np.concatenate([s, [0.0]]) if append_zero else s


def karras_grid(process: Process, num_steps: int, sigma_min: float | None = None,
                sigma_max: float | None = None, rho: float | None = None) -> jnp.ndarray:
    """Karras rho-grid of ``num_steps`` steps for any process, ending at ``t = 0``.

    The sigmas are EDM's ``sigma_tilde = sigma / alpha`` and are mapped to ``t`` by the
    process's inverse log-SNR, so the same grid serves VP, VE and EDM processes. Defaults come
    from an :class:`~diffjax.processes.EDM` process, else (0.002, 80, 7). ``N`` steps cost
    ``2N - 1`` evaluations with Heun (the last step is Euler).
    """
    sigma_min = getattr(process, "sigma_min", 0.002) if sigma_min is None else sigma_min
    sigma_max = getattr(process, "sigma_max", 80.0) if sigma_max is None else sigma_max
    rho = getattr(process, "rho", 7.0) if rho is None else rho
    s = karras_sigmas(num_steps, sigma_min, sigma_max, rho, append_zero=True)
    return process.t_from_sigma_tilde(jnp.asarray(s, default_float()))


def log_snr_grid(process: Process, num_steps: int, t_max: float = 1.0,
                 t_min: float = 1e-3) -> jnp.ndarray:
    """Grid uniform in log-SNR between ``lambda(t_max)`` and ``lambda(t_min)``."""
    check_steps(num_steps)
    lam = jnp.linspace(process.log_snr(t_max), process.log_snr(t_min), num_steps + 1)
    t = process.t_from_log_snr(lam)
    # pin the end points exactly (the inverse is exact only to rounding)
    return t.at[0].set(t_max).at[-1].set(t_min)


def discrete_grid(indices, num_timesteps: int, to_data: bool = True) -> jnp.ndarray:
    """Grid through DDPM indices (any respacing/DDIM sub-sequence), largest first.

    Index ``i`` sits at ``t = (i + 1) / T`` (:func:`diffjax.adapters.ddpm_index_to_t`).
    With ``to_data`` the grid ends at ``t = 0`` (alpha_bar = 1): the final step returns the
    model's ``x0`` estimate, as DDPM (no noise at the last step) and DDIM (``a_n = 1``) do.
    """
    idx = np.unique(np.asarray(indices, np.int64))[::-1]
    if idx.size == 0 or idx[-1] < 0 or idx[0] >= num_timesteps:
        raise ValueError(f"indices must lie in [0, {num_timesteps - 1}]")
    t = (idx + 1.0) / num_timesteps
    if to_data:
        t = np.concatenate([t, [0.0]])
    return _out(t)


def shift_grid(grid, shift: float) -> jnp.ndarray:
    """Timestep shift (SD3 / LightningDiT): ``t' = s t / (1 + (s - 1) t)``.

    ``shift > 1`` spends more steps at high noise; end points 0 and 1 are fixed.
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0; got {shift}")
    t = as_time(grid)
    return shift * t / (1.0 + (shift - 1.0) * t)


def validate_grid(grid) -> np.ndarray:
    """Check a concrete grid: 1-D, at least 2 points, inside [0, 1], monotone. Returns it."""
    g = np.asarray(grid)
    if g.ndim != 1 or g.shape[0] < 2:
        raise ValueError(
            f"grid must be a 1-D array of at least 2 time points (steps >= 1); got shape {g.shape}"
        )
    if not np.all(np.isfinite(g)) or g.min() < 0.0 or g.max() > 1.0:
        raise ValueError(
            f"grid times must lie in [0, 1] (data at 0, noise at 1); got range [{g.min()}, {g.max()}]"
        )
    d = np.diff(g)
    if not (np.all(d < 0) or np.all(d > 0)):
        raise ValueError("grid must be strictly monotone (decreasing to sample, increasing to invert)")
    return g
