"""Sample-quality metrics for low-dimensional (toy, 2-D) data, float64 numpy.

* :func:`sliced_wasserstein` — re-exported from :mod:`diffjax.analytic` (one implementation).
* :func:`mmd` — squared maximum mean discrepancy with an RBF kernel (unbiased U-statistic by
  default; the biased V-statistic is exactly 0 for identical sets).
* :func:`energy_distance` — ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (V-statistic, >= 0).
* :func:`exact_nll` — negative log-likelihood of samples under the *true data density* of an
  :mod:`diffjax.analytic` ``Gaussian`` / ``GaussianMixture`` (its parameters, not a noised
  marginal). For a model's own NLL use :func:`diffjax.likelihood.log_likelihood` and
  :func:`diffjax.likelihood.logp_to_bits_per_dim` (or, on a data set,
  :func:`diffjax.evaluation.evaluate_bits_per_dim`).
"""

from __future__ import annotations

import math

import numpy as np

from diffjax.analytic import Gaussian, GaussianMixture, sliced_wasserstein

__all__ = ["sliced_wasserstein", "mmd", "energy_distance", "exact_log_prob", "exact_nll"]


def _flat(x):
    x = np.asarray(x, np.float64)
    return x.reshape(len(x), -1)


def _sqdist(a, b):
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def mmd(x, y, bandwidth=None, unbiased: bool = True) -> float:
    """Squared MMD with ``k(a, b) = exp(-|a - b|^2 / (2 h^2))``.

    ``bandwidth``: a scalar ``h`` or a sequence (the kernels are summed); ``None`` takes the
    median pairwise distance of the pooled samples. Memory ``O((n + m)^2)``: subsample first for
    large sets.
    """
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dims differ: {x.shape[1]} vs {y.shape[1]}")
    dxx, dyy, dxy = _sqdist(x, x), _sqdist(y, y), _sqdist(x, y)
    if bandwidth is None:
        z = np.concatenate([x, y])
        d = _sqdist(z, z)
        bandwidth = math.sqrt(float(np.median(d[np.triu_indices(len(z), 1)])))
        bandwidth = bandwidth if bandwidth > 0 else 1.0
    hs = np.atleast_1d(np.asarray(bandwidth, np.float64))
    k = lambda d: sum(np.exp(-d / (2.0 * h * h)) for h in hs)
    kxx, kyy, kxy = k(dxx), k(dyy), k(dxy)
    n, m = len(x), len(y)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD needs at least 2 samples per set")
        sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return float(sxx + syy - 2.0 * kxy.mean())


def energy_distance(x, y) -> float:
    """Energy distance (Székely) ``2 E|X-Y| - E|X-X'| - E|Y-Y'|``; 0 iff equal distributions.
    Memory ``O((n + m)^2)``."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dims differ: {x.shape[1]} vs {y.shape[1]}")
    exy = np.sqrt(_sqdist(x, y)).mean()
    exx = np.sqrt(_sqdist(x, x)).mean()
    eyy = np.sqrt(_sqdist(y, y)).mean()
    return float(2.0 * exy - exx - eyy)


def exact_log_prob(density, x) -> np.ndarray:
    """``log p(x)`` (nats, ``(B,)``) under the data density of an analytic ``Gaussian`` or
    ``GaussianMixture`` (float64; components with zero variance are rejected)."""
    x = _flat(x)
    log2pi = math.log(2.0 * math.pi)
    if isinstance(density, Gaussian):
        mu = np.asarray(density.mean, np.float64)
        u = np.asarray(density.evecs, np.float64)
        lam = np.asarray(density.evals, np.float64)
        if np.any(lam <= 0):
            raise ValueError("the Gaussian is degenerate (zero eigenvalue): no density")
        y = (x - mu[None]) @ u
        return -0.5 * np.sum(y**2 / lam + np.log(lam) + log2pi, axis=-1)
    if isinstance(density, GaussianMixture):
        lw = np.asarray(density.log_weights, np.float64)
        mu = np.asarray(density.means, np.float64)
        var = np.asarray(density.variances, np.float64)
        if np.any(var <= 0):
            raise ValueError("a mixture component has zero variance (empirical data): no density")
        diff = x[:, None, :] - mu[None]
        logn = -0.5 * np.sum(diff**2 / var[None] + np.log(var)[None] + log2pi, axis=-1)
        a = lw[None] + logn
        amax = a.max(axis=1, keepdims=True)
        return (amax + np.log(np.exp(a - amax).sum(axis=1, keepdims=True)))[:, 0]
    raise TypeError(f"exact_log_prob needs an analytic Gaussian or GaussianMixture; got "
                    f"{type(density).__name__}")


def exact_nll(density, x, per_dim: bool = False) -> float:
    """Mean negative log-likelihood of samples ``x`` under the true density (nats; divided by
    the dimension with ``per_dim``)."""
    lp = exact_log_prob(density, x)
    nll = -float(np.mean(lp))
    return nll / _flat(x).shape[1] if per_dim else nll
