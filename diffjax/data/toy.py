"""Toy 2-D data sets: Gaussian mixtures, two moons, Swiss roll, checkerboard.

Every function here is pure and deterministic: ``f(n, seed=...)`` draws ``n`` i.i.d. points
from a *fixed* distribution with a NumPy ``Generator`` seeded by ``seed`` and returns a
``float32`` array of shape ``(n, 2)``. Same ``(n, seed)``, same array, on every machine.

The distributions are fixed (not re-standardised per draw), so a 10k-point draw and a 200k-point
draw are samples of the same law and can be compared with a two-sample metric. Where a set is
"scaled to unit variance" the constants are computed once from the closed form, not from the
sample.

Sets (names accepted by :func:`sample_toy` and by ``get_source('toy:<name>')``):

* ``gmm_small``: a 3-component 2-D mixture with data inside [-1, 1]: weights
  (0.3, 0.5, 0.2), means (-0.6, -0.3), (0.5, 0.4), (0.0, 0.8), stds (0.10, 0.15, 0.05). Its
  exact denoiser is ``diffjax.analytic.GaussianMixture`` with the constants in :data:`GMM_SMALL`.
* ``gmm_smooth``: same weights and means, stds 0.3 (a smoother target).
* ``eight_gaussians``: 8 equal-weight isotropic Gaussians on a ring of radius 2, std 0.05.
* ``two_moons``: two interleaved half circles with Gaussian noise, centred at the origin.
* ``swiss_roll``: the 2-D Swiss roll of Sohl-Dickstein et al. (2015, Fig. 1), centred and
  isotropically scaled so that each coordinate has unit variance on average.
* ``checkerboard``: uniform on the 8 "black" unit cells of a 4x4 board over ``[-2, 2]^2``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "GMM_SMALL",
    "GMM_SMOOTH",
    "EIGHT_GAUSSIANS",
    "TOY_DATASETS",
    "gaussian_mixture",
    "gmm_small",
    "gmm_smooth",
    "eight_gaussians",
    "eight_gaussians_params",
    "two_moons",
    "swiss_roll",
    "checkerboard",
    "sample_toy",
]

#: ``gmm_small``: a 3-component 2-D Gaussian mixture with data inside [-1, 1].
GMM_SMALL = dict(
    weights=(0.3, 0.5, 0.2),
    means=((-0.6, -0.3), (0.5, 0.4), (0.0, 0.8)),
    stds=(0.10, 0.15, 0.05),
)
#: ``gmm_smooth``: ``gmm_small`` with every std 0.3.
GMM_SMOOTH = dict(GMM_SMALL, stds=(0.3, 0.3, 0.3))
#: 8 Gaussians on a ring: radius and per-component std.
EIGHT_GAUSSIANS = dict(radius=2.0, std=0.05)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed)))


def _check_n(n: int) -> int:
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    return n


def gaussian_mixture(
    n: int,
    *,
    weights: Sequence[float],
    means: Sequence[Sequence[float]],
    stds: Sequence[float] | float,
    seed: int = 0,
) -> np.ndarray:
    """Draws from an isotropic Gaussian mixture in 2-D.

    Args:
        n: Number of points.
        weights: Mixture weights, shape ``(K,)``; normalised to sum to one.
        means: Component means, shape ``(K, 2)``.
        stds: Per-component isotropic standard deviations, shape ``(K,)`` or a scalar.
        seed: Seed of the NumPy generator.

    Returns:
        ``float32`` array ``(n, 2)``.
    """
    n = _check_n(n)
    w = np.asarray(weights, np.float64)
    mu = np.asarray(means, np.float64)
    s = np.broadcast_to(np.asarray(stds, np.float64), w.shape)
    if w.ndim != 1 or mu.shape != (w.shape[0], 2):
        raise ValueError(f"weights must be (K,) and means (K, 2); got {w.shape} and {mu.shape}")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum; got {weights}")
    rng = _rng(seed)
    comp = rng.choice(w.shape[0], size=n, p=w / w.sum())
    x = mu[comp] + s[comp, None] * rng.standard_normal((n, 2))
    return x.astype(np.float32)


def gmm_small(n: int, *, seed: int = 0) -> np.ndarray:
    """Draws from the ``gmm_small`` mixture (see :data:`GMM_SMALL`).

    Args:
        n: Number of points.
        seed: Seed of the NumPy generator.

    Returns:
        ``float32`` array ``(n, 2)``.
    """
    return gaussian_mixture(n, seed=seed, **GMM_SMALL)


def gmm_smooth(n: int, *, seed: int = 0) -> np.ndarray:
    """Draws from ``gmm_smooth``: ``gmm_small`` with stds 0.3 (see :data:`GMM_SMOOTH`)."""
    return gaussian_mixture(n, seed=seed, **GMM_SMOOTH)


def eight_gaussians_params(radius: float = 2.0, std: float = 0.05) -> dict:
    """The 8-Gaussians ring as mixture parameters (``weights``, ``means``, ``stds``).

    Handy to build the exact denoiser: ``GaussianMixture.create(**eight_gaussians_params(),
    process=...)``.

    Args:
        radius: Radius of the ring.
        std: Isotropic std of every component.

    Returns:
        Dict with ``weights`` (8,), ``means`` (8, 2) and ``stds`` (8,) as tuples.
    """
    ang = 2.0 * np.pi * np.arange(8) / 8.0
    means = np.stack([np.cos(ang), np.sin(ang)], axis=1) * radius
    return dict(
        weights=(1.0 / 8,) * 8,
        means=tuple(map(tuple, means.tolist())),
        stds=(float(std),) * 8,
    )


def eight_gaussians(
    n: int, *, seed: int = 0, radius: float = 2.0, std: float = 0.05
) -> np.ndarray:
    """Draws from 8 equal-weight Gaussians at angles ``2 pi k / 8`` on a ring.

    Args:
        n: Number of points.
        seed: Seed of the NumPy generator.
        radius: Radius of the ring (default 2).
        std: Isotropic std of every component (default 0.05).

    Returns:
        ``float32`` array ``(n, 2)``.
    """
    return gaussian_mixture(n, seed=seed, **eight_gaussians_params(radius, std))


def two_moons(n: int, *, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """Draws from two interleaved half circles (the classic "two moons"), centred.

    Upper moon ``(cos a, sin a)``, lower moon ``(1 - cos a, 0.5 - sin a)`` with
    ``a ~ U[0, pi]``, each picked with probability 1/2, plus isotropic Gaussian noise of std
    ``noise``; then shifted by ``-(0.5, 0.25)`` (the exact mean), so the set is centred at the
    origin.

    Args:
        n: Number of points.
        seed: Seed of the NumPy generator.
        noise: Std of the added Gaussian noise.

    Returns:
        ``float32`` array ``(n, 2)``.
    """
    n = _check_n(n)
    rng = _rng(seed)
    a = rng.uniform(0.0, np.pi, n)
    lower = rng.random(n) < 0.5
    x = np.where(lower, 1.0 - np.cos(a), np.cos(a))
    y = np.where(lower, 0.5 - np.sin(a), np.sin(a))
    pts = np.stack([x - 0.5, y - 0.25], axis=1) + noise * rng.standard_normal((n, 2))
    return pts.astype(np.float32)


def _swiss_roll_moments() -> tuple[np.ndarray, float]:
    """Exact mean and isotropic scale of the raw roll ``t (cos t, sin t)``, ``t ~ U[1.5pi, 4.5pi]``.

    Computed by a fine midpoint rule (error far below float32 resolution).
    """
    m = 200_000
    t = 1.5 * np.pi + 3.0 * np.pi * (np.arange(m) + 0.5) / m
    p = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    mean = p.mean(axis=0)
    var = ((p - mean) ** 2).sum(axis=1).mean() / 2.0  # mean per-coordinate variance
    return mean, float(np.sqrt(var))


_SWISS_MEAN, _SWISS_SCALE = _swiss_roll_moments()


def swiss_roll(n: int, *, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """Draws from the 2-D Swiss roll, centred and scaled to unit variance.

    The raw roll is ``t (cos t, sin t)`` with ``t ~ U[1.5 pi, 4.5 pi]`` (as scikit-learn's
    ``make_swiss_roll``, keeping its x and z coordinates); it is centred by its exact mean and
    divided by one isotropic scale so that the two coordinates' variances average to one
    (the shape is kept: the x and y variances are 0.95 and 1.05). ``noise`` is the std of
    Gaussian noise added *after* scaling.

    Reference: Sohl-Dickstein et al., "Deep Unsupervised Learning using Nonequilibrium
    Thermodynamics", ICML 2015, Fig. 1.

    Args:
        n: Number of points.
        seed: Seed of the NumPy generator.
        noise: Std of Gaussian noise added to the scaled points.

    Returns:
        ``float32`` array ``(n, 2)``.
    """
    n = _check_n(n)
    rng = _rng(seed)
    t = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n)
    p = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    p = (p - _SWISS_MEAN) / _SWISS_SCALE
    if noise:
        p = p + noise * rng.standard_normal((n, 2))
    return p.astype(np.float32)


def checkerboard(n: int, *, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Draws uniformly from the 8 cells ``(i + j)`` even of a 4x4 board on ``[-2, 2]^2``.

    Each coordinate's marginal is uniform on ``[-2, 2]`` (mean 0, variance 4/3), times
    ``scale``.

    Args:
        n: Number of points.
        seed: Seed of the NumPy generator.
        scale: Multiplies the board (``[-2 scale, 2 scale]^2``).

    Returns:
        ``float32`` array ``(n, 2)``.
    """
    n = _check_n(n)
    rng = _rng(seed)
    i = rng.integers(0, 4, n)
    j = (2 * rng.integers(0, 2, n) + i % 2) % 4  # (i + j) even
    u = rng.random((n, 2))
    p = np.stack([i + u[:, 0], j + u[:, 1]], axis=1) - 2.0
    return (scale * p).astype(np.float32)


#: Name -> sampler ``f(n, *, seed)``. Aliases included.
TOY_DATASETS: dict[str, Callable[..., np.ndarray]] = {
    "gmm_small": gmm_small,
    "gmm_smooth": gmm_smooth,
    "eight_gaussians": eight_gaussians,
    "8gaussians": eight_gaussians,
    "two_moons": two_moons,
    "moons": two_moons,
    "swiss_roll": swiss_roll,
    "checkerboard": checkerboard,
}


def sample_toy(name: str, n: int, *, seed: int = 0, **kwargs) -> np.ndarray:
    """Draws ``n`` points from the toy set called ``name``.

    Args:
        name: One of :data:`TOY_DATASETS` (``gmm_small``, ``gmm_smooth``, ``eight_gaussians``,
            ``two_moons``, ``swiss_roll``, ``checkerboard`` and aliases ``8gaussians``,
            ``moons``).
        n: Number of points.
        seed: Seed of the NumPy generator.
        **kwargs: Passed to the set's function (e.g. ``noise``, ``radius``).

    Returns:
        ``float32`` array ``(n, 2)``.

    Raises:
        ValueError: ``name`` is not a known toy set (the message lists the valid names).
    """
    try:
        fn = TOY_DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown toy data set name={name!r}; valid names: {sorted(TOY_DATASETS)}"
        ) from None
    return fn(n, seed=seed, **kwargs)
