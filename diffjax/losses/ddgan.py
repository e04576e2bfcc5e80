"""The few-step discrete VP chain of Denoising Diffusion GANs (Xiao, Kreis & Vahdat, ICLR 2022).

DDGAN diffuses data in ``T`` large steps (``T = 4`` on CIFAR-10) taken from the continuous VP
SDE of Song et al. 2021 (eq. 33): the chain's times are ``tau_i = i/T (1 - eps) + eps`` with
``eps = 1e-3`` for ``i = 0..T``, and the cumulative signal is ``alpha_bar(tau) = 1 - var(tau)``
with ``var(tau) = 1 - exp(-tau^2 (beta_max - beta_min)/2 - tau beta_min)`` (``beta_min = 0.1``,
``beta_max = 20``) or, with ``geometric=True``, ``var(tau) = beta_min (beta_max /
beta_min)^tau``. The step variances are ``beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}`` for ``i =
1..T``, with ``beta_0 = 1e-8`` prepended, as the paper's code does (paper sec. 3 and App. C).

Indices follow the paper: index 0 is (almost) clean data, ``x_{t+1}`` is one step noisier than
``x_t``, the generator is fed ``t`` while it denoises ``x_{t+1}``, and

* :func:`q_sample_pairs`: ``x_t = abar_t x0 + sigmabar_t z`` and ``x_{t+1} = a_{t+1} x_t +
  sqrt(beta_{t+1}) z'`` (the forward chain, eq. 1), with ``a_i = sqrt(1 - beta_i)``,
  ``abar_i = prod_{j<=i} a_j`` (``beta_0`` included) and ``sigmabar_i = sqrt(1 - abar_i^2)``;
* :func:`posterior_sample`: ``x_t ~ q(x_t | x_{t+1}, x0) = N(c1 x0 + c2 x_{t+1}, betatilde)``
  with the DDPM posterior (Ho et al. 2020, eq. 6-7) of the chain *without* ``beta_0`` (the
  code's ``Posterior_Coefficients`` uses ``betas[1:]``): ``c1 = beta_{t+1} sqrt(alphabar_t) /
  (1 - alphabar_{t+1})``, ``c2 = (1 - alphabar_t) sqrt(1 - beta_{t+1}) / (1 - alphabar_{t+1})``,
  ``betatilde = beta_{t+1} (1 - alphabar_t) / (1 - alphabar_{t+1})`` where ``alphabar_t =
  prod_{j=1..t}(1 - beta_j)``; no noise is added at ``t = 0``.

Because ``beta_0 = 1e-8`` enters the forward chain but not the posterior, the posterior is the
exact Gaussian conditional of the forward chain only up to ~1e-8 relative; with ``beta0=0`` it
is exact (``tests/test_gan.py`` checks both against the joint covariance in float64).
The tables are built in float64 NumPy and cast once (:class:`DDGANChain` holds them as arrays).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = ["DDGANChain", "ddgan_chain", "q_sample", "q_sample_pairs", "posterior_sample",
           "posterior_coefficients"]


@struct.dataclass
class DDGANChain:
    """The ``T``-step chain's tables (index ``i = 0..T``; posterior tables index ``t = 0..T-1``).

    Attributes:
      betas: ``(T+1,)`` step variances, ``beta_0`` first.
      a_s: ``sqrt(1 - beta_i)``; a_s_cum: ``abar_i = prod_{j<=i} a_j``; sigmas_cum:
        ``sqrt(1 - abar_i^2)``.
      post_c1, post_c2, post_var: ``(T,)`` posterior mean coefficients and variance of
        ``q(x_t | x_{t+1}, x0)`` at ``t = 0..T-1``.
      num_timesteps: ``T`` (static).
    """

    betas: jax.Array
    a_s: jax.Array
    a_s_cum: jax.Array
    sigmas_cum: jax.Array
    post_c1: jax.Array
    post_c2: jax.Array
    post_var: jax.Array
    num_timesteps: int = struct.field(pytree_node=False, default=4)


def posterior_coefficients(betas_post: np.ndarray):
    """``(c1, c2, betatilde)`` of ``q(x_{t} | x_{t+1}, x0)`` for the chain with step variances
    ``betas_post`` (``beta_1..beta_T``), float64 (Ho et al. 2020, eq. 7)."""
    b = np.asarray(betas_post, np.float64)
    abar = np.cumprod(1.0 - b)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    c1 = b * np.sqrt(abar_prev) / (1.0 - abar)
    c2 = (1.0 - abar_prev) * np.sqrt(1.0 - b) / (1.0 - abar)
    var = b * (1.0 - abar_prev) / (1.0 - abar)
    return c1, c2, var


def ddgan_tables(num_timesteps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0, *,
                 geometric: bool = False, eps_small: float = 1e-3, beta0: float = 1e-8) -> dict:
    """The chain's tables in float64 NumPy (see the module docstring for the formulas)."""
    T = int(num_timesteps)
    if T < 1:
        raise ValueError(f"num_timesteps must be >= 1; got {num_timesteps}")
    if not 0 < beta_min < beta_max:
        raise ValueError(f"need 0 < beta_min < beta_max; got beta_min={beta_min}, "
                         f"beta_max={beta_max}")
    if beta0 < 0:
        raise ValueError(f"beta0 must be >= 0; got {beta0}")
    tau = np.arange(T + 1, dtype=np.float64) / T * (1.0 - eps_small) + eps_small
    if geometric:
        var = beta_min * (beta_max / beta_min) ** tau
    else:
        var = -np.expm1(-0.5 * tau**2 * (beta_max - beta_min) - tau * beta_min)
    alpha_bars = 1.0 - var
    betas = np.concatenate([[beta0], 1.0 - alpha_bars[1:] / alpha_bars[:-1]])
    a_s = np.sqrt(1.0 - betas)
    a_s_cum = np.cumprod(a_s)
    sigmas_cum = np.sqrt(1.0 - a_s_cum**2)
    c1, c2, pvar = posterior_coefficients(betas[1:])
    return dict(betas=betas, a_s=a_s, a_s_cum=a_s_cum, sigmas_cum=sigmas_cum, post_c1=c1,
                post_c2=c2, post_var=pvar)


def ddgan_chain(num_timesteps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0, *,
                geometric: bool = False, beta0: float = 1e-8,
                dtype=jnp.float32) -> DDGANChain:
    """The DDGAN chain (paper sec. 3; ``T = 4``, ``beta_min = 0.1``, ``beta_max = 20`` for
    CIFAR-10) as a pytree of ``dtype`` tables."""
    tabs = ddgan_tables(num_timesteps, beta_min, beta_max, geometric=geometric, beta0=beta0)
    return DDGANChain(**{k: jnp.asarray(v, dtype) for k, v in tabs.items()},
                      num_timesteps=int(num_timesteps))


def _per_example(table, t, x):
    return table[t].reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)


def q_sample(chain: DDGANChain, x0, t, noise):
    """``x_t = abar_t x0 + sigmabar_t noise`` (``t`` integer ``(B,)`` in ``0..T``)."""
    return _per_example(chain.a_s_cum, t, x0) * x0 + _per_example(chain.sigmas_cum, t, x0) * noise


def q_sample_pairs(chain: DDGANChain, key, x0, t):
    """``(x_t, x_{t+1})`` for integer ``t`` ``(B,)`` in ``0..T-1`` (the paper's
    ``q_sample_pairs``): the pair on which the discriminator sees real data."""
    k1, k2 = jax.random.split(key)
    x_t = q_sample(chain, x0, t, jax.random.normal(k1, x0.shape, x0.dtype))
    x_tp1 = (_per_example(chain.a_s, t + 1, x0) * x_t
             + _per_example(jnp.sqrt(chain.betas), t + 1, x0)
             * jax.random.normal(k2, x0.shape, x0.dtype))
    return x_t, x_tp1


def posterior_sample(chain: DDGANChain, x0, x_tp1, t, noise):
    """``x_t ~ q(x_t | x_{t+1}, x0)`` given standard normal ``noise``; the mean at ``t = 0``
    (paper eq. 8: the generator's ``x0`` prediction is pushed through the true posterior)."""
    mean = _per_example(chain.post_c1, t, x0) * x0 + _per_example(chain.post_c2, t, x0) * x_tp1
    std = jnp.sqrt(_per_example(chain.post_var, t, x0))
    nonzero = (t != 0).reshape((-1,) + (1,) * (x0.ndim - 1)).astype(x0.dtype)
    return mean + nonzero * std * noise
