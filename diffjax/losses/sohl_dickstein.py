"""The lower bound K of Sohl-Dickstein et al. (2015) on the log-likelihood (pure functions).

Sohl-Dickstein, Weiss, Maheswaranathan, Ganguli, "Deep Unsupervised Learning using
Nonequilibrium Thermodynamics", ICML 2015 (arXiv 1503.03585), eq. 14 and Appendix B:

.. math::

    K = -\\sum_{t=2}^{T} E_{q(x^0, x^t)}\\big[D_{KL}(q(x^{t-1}|x^t, x^0)\\,\\|\\,
        p(x^{t-1}|x^t))\\big] + H_q(X^T|X^0) - H_q(X^1|X^0) - H_p(X^T).

The forward chain is ``q(x^t|x^{t-1}) = N(sqrt(1 - beta_t) x^{t-1}, beta_t I)`` (paper
Table App.1), the prior ``p(x^T) = N(0, I)`` and every reverse kernel a diagonal Gaussian.
Paper indices are used throughout: ``t = 1..T``, ``betas[t - 1] = beta_t``.

When K is exact. Appendix B.2 fixes the last reverse step to the forward one reweighted by the
prior (``p(x^0|x^1) = q(x^1|x^0) pi(x^0) / pi(x^1)``; with ``pi = N(0, I)`` this is
``N(sqrt(1 - beta_1) x^1, beta_1 I)``, the forward kernel itself by detailed balance) and
replaces the cross-entropy ``-E_q[log p(x^T)]`` by the entropy ``H_p(X^T)``. The trajectory
bound ``E_q[log p(x^{0:T}) / q(x^{1:T}|x^0)]`` of that model (a true lower bound on its
log-likelihood) equals ``K + (alpha_bar_T + beta_1) (D - E|x^0|^2) / 2``: the prior
cross-entropy contributes ``alpha_bar_T (D - E|x^0|^2) / 2`` and the edge step
``E_q[log pi(x^0) - log pi(x^1)] = beta_1 (D - E|x^0|^2) / 2``. Both vanish when
``E|x^0|^2 = D`` (unit second moment per coordinate on average, as diffjax's swiss roll), and
are small otherwise (``alpha_bar_T = 1/T`` and ``beta_1`` small under the paper's schedule).
The tests check K against a direct Monte Carlo of the trajectory
log-ratio in exactly that case.

Units: nats per example (the sum over the ``D`` coordinates); :func:`nats_to_bits` converts.
The reference code reports ``-(K - L_null) / ln 2`` with ``L_null`` the log-likelihood of an
identity-covariance Gaussian (:func:`isotropic_gaussian_loglik`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "gaussian_entropy",
    "forward_entropies",
    "cumulative_alpha",
    "posterior",
    "gaussian_kl",
    "bound_from_kl",
    "sohl_dickstein_bound",
    "isotropic_gaussian_loglik",
    "nats_to_bits",
]

_HALF_LOG_2PI_E = 0.5 * (1.0 + math.log(2.0 * math.pi))


def _check_betas(betas):
    betas = jnp.asarray(betas)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"betas must be a 1-D array of T >= 2 forward variances; got shape "
                         f"{betas.shape}")
    return betas


def gaussian_entropy(var, dim: int):
    """Differential entropy (nats) of ``N(m, var I_dim)``: ``dim/2 (1 + log 2 pi) + dim/2 log
    var`` (``var`` a scalar or broadcastable array)."""
    return dim * _HALF_LOG_2PI_E + 0.5 * dim * jnp.log(var)


def cumulative_alpha(betas):
    """``alpha_bar_t = prod_{s <= t} (1 - beta_s)`` for ``t = 1..T`` (shape ``(T,)``)."""
    return jnp.exp(jnp.cumsum(jnp.log1p(-_check_betas(betas))))


def forward_entropies(betas, dim: int) -> dict:
    """The three entropy terms of K (paper eq. 14; Appendix B.2, eqs. 45-47).

    ``q(x^t|x^0) = N(sqrt(alpha_bar_t) x^0, (1 - alpha_bar_t) I)``, so the conditional
    entropies do not depend on the data:

    * ``H_q(X^T|X^0)``: entropy of ``N(., (1 - alpha_bar_T) I_D)``;
    * ``H_q(X^1|X^0)``: entropy of ``N(., beta_1 I_D)``;
    * ``H_p(X^T)``: entropy of the prior ``N(0, I_D)``.

    Args:
      betas: ``(T,)`` forward variances ``beta_1..beta_T``.
      dim: ``D``, the data dimension.

    Returns:
      ``{'H_q_T', 'H_q_1', 'H_p_T'}`` in nats.
    """
    betas = _check_betas(betas)
    if int(dim) < 1:
        raise ValueError(f"dim must be a positive integer; got {dim}")
    alpha_bar_T = cumulative_alpha(betas)[-1]
    return {"H_q_T": gaussian_entropy(1.0 - alpha_bar_T, dim),
            "H_q_1": gaussian_entropy(betas[0], dim),
            "H_p_T": gaussian_entropy(1.0, dim)}


def posterior(betas, t, x0, xt):
    """``q(x^{t-1}|x^t, x^0) = N(mu_tilde, var_tilde I)`` for paper indices ``t >= 2``.

    Product of ``q(x^t|x^{t-1})`` and ``q(x^{t-1}|x^0)`` (the reference's ``cov1``, ``cov2``):
    ``1/var_tilde = 1/(1 - alpha_bar_{t-1}) + alpha_t/beta_t``,
    ``mu_tilde = var_tilde (sqrt(alpha_bar_{t-1}) x^0/(1 - alpha_bar_{t-1})
    + sqrt(alpha_t) x^t / beta_t)`` (the same as DDPM's eq. 7).

    Args:
      betas: ``(T,)`` forward variances.
      t: ``(B,)`` integer paper indices in ``2..T``.
      x0, xt: ``(B, D)`` data and ``x^t``.

    Returns:
      ``(mu_tilde (B, D), var_tilde (B, 1))``.
    """
    betas = _check_betas(betas)
    abar = cumulative_alpha(betas)
    t = jnp.asarray(t, jnp.int32)
    beta_t = betas[t - 1][:, None]
    abar_prev = abar[t - 2][:, None]
    alpha_t = 1.0 - beta_t
    cov1 = 1.0 - abar_prev
    lam = 1.0 / cov1 + alpha_t / beta_t
    var = 1.0 / lam
    mu = var * (jnp.sqrt(abar_prev) * x0 / cov1 + jnp.sqrt(alpha_t) * xt / beta_t)
    return mu, var


def gaussian_kl(mu_q, var_q, mu_p, var_p):
    """``KL(N(mu_q, diag var_q) || N(mu_p, diag var_p))`` summed over the last axis (nats)."""
    kl = 0.5 * (jnp.log(var_p) - jnp.log(var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0)
    return jnp.sum(jnp.broadcast_to(kl, jnp.broadcast_shapes(jnp.shape(kl), jnp.shape(mu_q))),
                   axis=-1)


def bound_from_kl(kl_sum, betas, dim: int):
    """K from the summed KL terms (paper eq. 14): ``-kl_sum + H_q(X^T|X^0) - H_q(X^1|X^0) -
    H_p(X^T)`` (nats; ``kl_sum`` any shape)."""
    h = forward_entropies(betas, dim)
    return -kl_sum + h["H_q_T"] - h["H_q_1"] - h["H_p_T"]


def sohl_dickstein_bound(reverse_kernel: Callable, betas, x0, key, *, timesteps: str = "all"):
    """Per-example estimate of the bound K (paper eq. 14), in nats.

    Each KL term is an expectation over ``q(x^0, x^t)`` only, so ``x^t`` is drawn directly as
    ``sqrt(alpha_bar_t) x^0 + sqrt(1 - alpha_bar_t) eps`` (reparameterised: gradients reach
    ``betas`` when they are learned, as paper sec. 2.4.1 does for ``beta_{2..T}``).

    Args:
      reverse_kernel: ``(x^t (B, D), t (B,) int) -> (mu (B, D), var (B, D) or (B, 1))``: the
        reverse kernel ``p(x^{t-1}|x^t)``, called for paper indices ``t = 2..T``.
      betas: ``(T,)`` forward variances ``beta_1..beta_T``.
      x0: ``(B, D)`` data.
      key: PRNG key.
      timesteps: ``'all'``: the sum over every ``t = 2..T`` (one ``x^t`` draw each, T - 1
        kernel calls per example, the lowest variance); ``'one'``: one uniform ``t`` per
        example and ``(T - 1) KL_t`` (unbiased, as the reference code's single-t cost but with
        one t per example instead of per minibatch).

    Returns:
      ``(K (B,), kl (B,))``: the bound and its summed KL part.
    """
    betas = _check_betas(betas)
    x0 = jnp.asarray(x0)
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (batch, dim); got {x0.shape}")
    if timesteps not in ("all", "one"):
        raise ValueError(f"timesteps must be 'all' or 'one'; got {timesteps!r}")
    B, D = x0.shape
    T = betas.shape[0]
    abar = cumulative_alpha(betas)

    def kl_at(t, k):
        eps = jax.random.normal(k, x0.shape, x0.dtype)
        a = abar[t - 1][:, None]
        xt = jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * eps
        mu_q, var_q = posterior(betas, t, x0, xt)
        mu_p, var_p = reverse_kernel(xt, t)
        return gaussian_kl(mu_q, var_q, mu_p, var_p)

    if timesteps == "all":
        ts = jnp.arange(2, T + 1, dtype=jnp.int32)
        keys = jax.random.split(key, T - 1)
        kls = jax.vmap(lambda t, k: kl_at(jnp.full((B,), t, jnp.int32), k))(ts, keys)
        kl = jnp.sum(kls, axis=0)
    else:
        kt, ke = jax.random.split(key)
        t = jax.random.randint(kt, (B,), 2, T + 1)
        kl = (T - 1) * kl_at(t, ke)
    return bound_from_kl(kl, betas, D), kl


def isotropic_gaussian_loglik(x0, var: float = 1.0):
    """``L_null``: mean log-likelihood (nats per example) of ``x0 (B, D)`` under
    ``N(0, var I)`` (the reference code's null model has ``var = 1``)."""
    x0 = jnp.asarray(x0)
    D = x0.shape[-1]
    return jnp.mean(-0.5 * jnp.sum(x0**2, axis=-1) / var - 0.5 * D * jnp.log(2 * jnp.pi * var))


def nats_to_bits(x):
    """Nats to bits (divide by ``ln 2``)."""
    return x / math.log(2.0)
