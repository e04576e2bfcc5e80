"""Exact denoisers: Gaussian, Gaussian-mixture and empirical (memorising) data.

For data ``x0 ~ p`` and ``x = alpha x0 + sigma eps``, ``E[x0 | x]`` is closed form when ``p``
is Gaussian or a mixture of Gaussians, and so are the score and the marginal density
``p_t``. These oracles are ``'x0'`` models with the sampler contract ``model(x, t, cond)``:
they prove samplers, losses and likelihoods correct before any network is trained.

* Gaussian ``N(mu, C)``: ``E[x0 | x] = mu + alpha C (alpha^2 C + sigma^2 I)^{-1} (x - alpha mu)``
  (computed in the eigenbasis of ``C``).
* Mixture with diagonal components ``N(mu_k, diag v_k)``: component ``k`` of ``p_t`` is
  ``N(alpha mu_k, alpha^2 v_k + sigma^2)``; ``E[x0 | x] = sum_k r_k(x) (mu_k + alpha v_k /
  (alpha^2 v_k + sigma^2) (x - alpha mu_k))`` with posterior responsibilities ``r_k``.
* Empirical data: the mixture with ``v_k = 0`` and equal weights (the "memorising" optimum
  of the denoising loss on a finite training set).

All are pytrees (arrays are leaves, the process is a child): pass them straight to
:func:`diffjax.samplers.sample` with ``prediction='x0'``. Inputs of any shape ``(B, ...)``
are flattened to ``(B, d)``.

Parameters are stored in the default float dtype at construction (float32, or float64 when
``jax_enable_x64`` is on): build the oracle inside an x64 context to get a float64-exact
denoiser (its output dtype then follows the usual promotion of parameters and input).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffjax.processes import Process, as_time, default_float

Array = Any

__all__ = ["Gaussian", "GaussianMixture", "empirical", "sliced_wasserstein"]

_LOG2PI = float(np.log(2.0 * np.pi))


def _ab(process, t, batch):
    t = as_time(t)
    t = jnp.broadcast_to(t, (batch,)) if t.ndim == 0 else t
    return process.alpha(t)[:, None], process.sigma(t)[:, None]


@struct.dataclass
class Gaussian:
    """Gaussian data ``N(mean, cov)`` with its exact denoiser, score and log-density."""

    mean: Array  # (d,)
    evecs: Array  # (d, d) columns: eigenvectors of cov
    evals: Array  # (d,)
    process: Process
    prediction = "x0"

    @classmethod
    def create(cls, mean, cov, process: Process) -> Gaussian:
        cov = np.asarray(cov, np.float64)
        mean = np.asarray(mean, np.float64)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or mean.shape != cov.shape[:1]:
            raise ValueError(f"mean must be (d,) and cov (d, d); got {mean.shape}, {cov.shape}")
        lam, u = np.linalg.eigh(cov)
        if lam.min() < 0:
            raise ValueError("cov must be positive semi-definite")
        f = lambda a: jnp.asarray(a, default_float())
        return cls(f(mean), f(u), f(np.maximum(lam, 0.0)), process)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def _proj(self, x, t):
        xf = x.reshape(x.shape[0], -1)
        a, s = _ab(self.process, t, x.shape[0])
        y = (xf - a * self.mean[None]) @ self.evecs
        var = a**2 * self.evals[None] + s**2
        return xf, a, s, y, var

    def __call__(self, x, t, cond=None):
        xf, a, s, y, var = self._proj(x, t)
        x0 = self.mean[None] + (a * self.evals[None] / var * y) @ self.evecs.T
        return x0.reshape(x.shape)

    def log_prob(self, x, t):
        """``log p_t(x)`` of the noised marginal (``t = 0``: the data density if VP-like)."""
        _, _, _, y, var = self._proj(x, t)
        return -0.5 * jnp.sum(y**2 / var + jnp.log(var) + _LOG2PI, axis=-1)

    def score(self, x, t):
        _, _, _, y, var = self._proj(x, t)
        return (-(y / var) @ self.evecs.T).reshape(x.shape)

    def sample_data(self, key, n: int):
        z = jax.random.normal(key, (n, self.dim))
        return self.mean[None] + (z * jnp.sqrt(self.evals)[None]) @ self.evecs.T


@struct.dataclass
class GaussianMixture:
    """Mixture of diagonal Gaussians with its exact denoiser, score and log-density."""

    log_weights: Array  # (K,)
    means: Array  # (K, d)
    variances: Array  # (K, d)
    process: Process
    prediction = "x0"

    @classmethod
    def create(cls, weights, means, stds, process: Process) -> GaussianMixture:
        """``stds``: per component, a scalar (isotropic) or a ``(d,)`` vector."""
        w = np.asarray(weights, np.float64)
        mu = np.atleast_2d(np.asarray(means, np.float64))
        sd = np.asarray(stds, np.float64)
        if w.ndim != 1 or w.shape[0] != mu.shape[0] or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be (K,) non-negative matching means {mu.shape}")
        sd = np.broadcast_to(sd.reshape(sd.shape + (1,) * (2 - sd.ndim)) if sd.ndim < 2 else sd,
                             mu.shape)
        f = lambda a: jnp.asarray(a, default_float())
        return cls(f(np.log(w / w.sum())), f(mu), f(sd**2), process)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self):
        return jnp.exp(self.log_weights)

    def _parts(self, x, t):
        xf = x.reshape(x.shape[0], -1)
        a, s = _ab(self.process, t, x.shape[0])  # (B, 1)
        a3, s3 = a[:, :, None], s[:, :, None]  # (B, 1, 1)
        var = a3**2 * self.variances[None] + s3**2  # (B, K, d)
        diff = xf[:, None, :] - a3 * self.means[None]  # (B, K, d)
        logn = -0.5 * jnp.sum(diff**2 / var + jnp.log(var) + _LOG2PI, axis=-1)  # (B, K)
        logj = self.log_weights[None] + logn
        return xf, a3, var, diff, logj

    def responsibilities(self, x, t):
        """Posterior component probabilities ``p(k | x_t)``, shape ``(B, K)``."""
        *_, logj = self._parts(x, t)
        return jax.nn.softmax(logj, axis=-1)

    def __call__(self, x, t, cond=None):
        xf, a3, var, diff, logj = self._parts(x, t)
        r = jax.nn.softmax(logj, axis=-1)[..., None]
        post = self.means[None] + a3 * self.variances[None] / var * diff
        return jnp.sum(r * post, axis=1).reshape(x.shape)

    def log_prob(self, x, t):
        *_, logj = self._parts(x, t)
        return jax.nn.logsumexp(logj, axis=-1)

    def score(self, x, t):
        xf, a3, var, diff, logj = self._parts(x, t)
        r = jax.nn.softmax(logj, axis=-1)[..., None]
        return jnp.sum(r * (-diff / var), axis=1).reshape(x.shape)

    def sample_data(self, key, n: int):
        kc, kz = jax.random.split(key)
        k = jax.random.categorical(kc, self.log_weights, shape=(n,))
        z = jax.random.normal(kz, (n, self.dim))
        return self.means[k] + jnp.sqrt(self.variances[k]) * z


def empirical(data, process: Process) -> GaussianMixture:
    """The exact denoiser of the empirical distribution of ``data`` (``(N, ...)``): it returns a
    softmax-weighted average of training points (memorisation)."""
    data = np.asarray(data, np.float64).reshape(len(data), -1)
    return GaussianMixture.create(np.ones(len(data)), data, 0.0, process)


def sliced_wasserstein(x, y, num_projections: int = 128, num_quantiles: int = 999, seed: int = 0,
                       p: int = 1):
    """Sliced p-Wasserstein distance between two point clouds ``(n, d)`` and ``(m, d)``.

    Fixed random unit directions (``seed``) and ``num_quantiles`` interior quantiles per
    projection (defaults: 128 projections, 999 quantiles);
    ``(mean over projections and quantiles of |q_x - q_y|^p)^(1/p)`` (``p = 1``: SW1).
    """
    if p < 1:
        raise ValueError(f"p must be >= 1; got {p!r}")
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(x.shape[1], num_projections))
    v /= np.linalg.norm(v, axis=0, keepdims=True)
    q = (np.arange(num_quantiles) + 1.0) / (num_quantiles + 1.0)
    qx = np.quantile(x @ v, q, axis=0)
    qy = np.quantile(y @ v, q, axis=0)
    return float(np.mean(np.abs(qx - qy) ** p) ** (1.0 / p))
