"""The reverse-kernel network of Sohl-Dickstein et al. (2015) for low-dimensional data.

Sohl-Dickstein, Weiss, Maheswaranathan, Ganguli, "Deep Unsupervised Learning using
Nonequilibrium Thermodynamics", ICML 2015 (arXiv 1503.03585), sec. 2.3 and Appendix D.1.

One MLP maps ``x^t`` to ``2 D n_basis`` numbers; the per-time coefficients ``mu_coeff(x^t, t)``
and ``beta_coeff(x^t, t)`` are their mix by fixed Gaussian bump functions of ``t`` (the
"temporal readout" of the authors' reference code: ``n_basis`` bumps with centres evenly on
``[-1, 1]``, width half their spacing, normalised to sum to one at every ``t``). The reverse
kernel ``p(x^{t-1}|x^t) = N(mu, diag sigma^2)`` is a perturbation of the forward step (as the
reference code's ``get_mu_sigma``):

* ``mu = sqrt(1 - beta_t) x^t + sqrt(beta_t) mu_coeff``,
* ``sigma^2 = sigmoid(beta_coeff / sqrt(T) + logit(beta_t))``.

The forward schedule lives here too, because the paper learns it (sec. 2.4.1: "we learn the
forward diffusion schedule beta_{2..T} by gradient ascent on K ... the variance beta_1 of the
first step is fixed to a small constant"): ``beta_t = sigmoid(logit(b_t) + (B c)_t)`` squashed
into ``[min_beta_t, 1 - 1e-5]`` with ``b_t = 1 / linspace(T, 2, T)_t`` (about
``1/(T - t + 1)``) the baseline
(:func:`diffjax.processes.sohl_dickstein_betas`) and ``c`` the ``n_basis`` coefficients on the
same bumps, initialised at zero. ``beta_1`` keeps its baseline value (no perturbation), as the
paper fixes it. ``learn_beta=False`` freezes the schedule at the baseline (the reference code's
behaviour, whose perturbation is never trained).

The MLP's width and depth for the swiss roll are not in the paper's text in a form recorded
here; the defaults (two hidden layers of 128, tanh) are a choice, stated as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["SohlDicksteinMLP", "temporal_basis", "bump_weights", "reverse_kernel"]


def _check_basis(num_steps: int, n_basis: int):
    if int(num_steps) < 2:
        raise ValueError(f"num_steps must be an integer >= 2; got {num_steps}")
    if int(n_basis) < 2:
        raise ValueError(f"n_temporal_basis must be an integer >= 2; got {n_basis}")


def bump_weights(t, num_steps: int, n_basis: int):
    """Weights of the ``n_basis`` temporal bumps at paper times ``t`` (shape ``t.shape +
    (n_basis,)``), rows summing to one.

    Time ``t in [1, T]`` sits at ``u = -1 + 2 (t - 1) / (T - 1)``; bump ``j`` is
    ``exp(-(u - c_j)^2 / (2 w^2))`` with ``c = linspace(-1, 1, n_basis)`` and ``w = (c_1 -
    c_0) / 2``. Fractional ``t`` evaluates the bumps in between (the reference code
    interpolates linearly instead; the two agree at integer ``t``).
    """
    _check_basis(num_steps, n_basis)
    centres = jnp.linspace(-1.0, 1.0, n_basis)
    width = (2.0 / (n_basis - 1)) / 2.0
    u = -1.0 + 2.0 * (jnp.asarray(t, jnp.float32) - 1.0) / (num_steps - 1)
    centres = centres.reshape((1,) * u.ndim + (n_basis,))  # explicit ranks (no promotion)
    g = jnp.exp(-((u[..., None] - centres) ** 2) / (2.0 * width**2))
    return g / jnp.sum(g, axis=-1, keepdims=True)


def temporal_basis(num_steps: int, n_basis: int) -> np.ndarray:
    """The bump basis at ``t = 1..T`` as a float64 ``(T, n_basis)`` table (rows sum to one)."""
    _check_basis(num_steps, n_basis)
    u = np.linspace(-1.0, 1.0, num_steps)
    c = np.linspace(-1.0, 1.0, n_basis)
    w = (c[1] - c[0]) / 2.0
    g = np.exp(-((u[:, None] - c[None, :]) ** 2) / (2.0 * w**2))
    return g / g.sum(axis=1, keepdims=True)


def reverse_kernel(out, x, beta_t, num_steps: int):
    """``(mu, sigma^2)`` of ``p(x^{t-1}|x^t)`` from the network's ``[mu_coeff, beta_coeff]``.

    Args:
      out: ``(B, 2D)`` network output, ``mu_coeff`` then ``beta_coeff``.
      x: ``(B, D)`` the current ``x^t``.
      beta_t: ``(B, 1)`` forward variance of step ``t``.
      num_steps: ``T`` (``beta_coeff`` is scaled by ``1/sqrt(T)`` as in the reference code,
        so its effect is commensurate with ``mu_coeff``'s over the whole chain).

    Returns:
      ``(mu (B, D), var (B, D))``.
    """
    D = x.shape[-1]
    mu_coeff, beta_coeff = out[..., :D], out[..., D:]
    mu = jnp.sqrt(1.0 - beta_t) * x + jnp.sqrt(beta_t) * mu_coeff
    logit_beta = jnp.log(beta_t) - jnp.log1p(-beta_t)
    var = jax.nn.sigmoid(beta_coeff / np.sqrt(num_steps) + logit_beta)
    return mu, var


class SohlDicksteinMLP(nnx.Module):
    """MLP with the temporal bump readout; it also holds the (learnable) forward schedule.

    Called as every diffjax network, ``net(x, t, cond=None, train=False, rngs=None)``, with
    ``t`` the paper's step index (``1..T``, float); returns ``(B, 2D)``: ``mu_coeff`` then
    ``beta_coeff`` (:func:`reverse_kernel` turns them into the kernel).

    Args:
      dim: ``D``, the data dimension (2 for the swiss roll).
      hidden: widths of the hidden layers.
      num_steps: ``T`` (40 in the paper's swiss-roll run).
      n_temporal_basis: number of bump functions (10, the reference code's default).
      step1_beta: the reference's extra floor on ``beta_1`` (``min_beta_1 = min_beta +
        step1_beta``).
      min_beta: floor of every ``beta_t``.
      learn_beta: learn ``beta_{2..T}`` (paper sec. 2.4.1) or keep the baseline.
      rngs: NNX PRNG streams.
    """

    def __init__(self, dim: int = 2, hidden: Sequence[int] = (128, 128), num_steps: int = 40,
                 n_temporal_basis: int = 10, step1_beta: float = 1e-3, min_beta: float = 1e-6,
                 learn_beta: bool = True, *, rngs: nnx.Rngs):
        _check_basis(num_steps, n_temporal_basis)
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive integer; got {dim}")
        hidden = tuple(int(h) for h in hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive widths; got "
                             f"{hidden}")
        self.dim, self.num_steps, self.n_basis = int(dim), int(num_steps), int(n_temporal_basis)
        self.step1_beta, self.min_beta = float(step1_beta), float(min_beta)
        self.learn_beta = bool(learn_beta)
        widths = (self.dim,) + hidden
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs)
                                for a, b in zip(widths[:-1], widths[1:], strict=True)])
        # zero-initialised readout: the untrained kernel is the forward step itself
        self.readout = nnx.Linear(widths[-1], 2 * self.dim * self.n_basis,
                                  kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.beta_perturb = nnx.Param(jnp.zeros((self.n_basis,), jnp.float32))

    def betas(self):
        """The forward variances ``beta_1..beta_T`` (float32 ``(T,)``), ``beta_1`` fixed."""
        T = self.num_steps
        base = 1.0 / np.linspace(T, 2.0, T)  # ~1/(T - t + 1): a constant fraction per step
        lo = np.full(T, self.min_beta)
        lo[0] += self.step1_beta
        c = self.beta_perturb[...]
        if not self.learn_beta:
            c = jax.lax.stop_gradient(c)
        perturb = jnp.asarray(temporal_basis(T, self.n_basis), jnp.float32) @ c
        perturb = perturb * jnp.asarray(np.arange(T) > 0, jnp.float32)  # beta_1 fixed
        logit_base = jnp.asarray(np.log(base) - np.log1p(-base), jnp.float32)
        s = jax.nn.sigmoid(logit_base + perturb)
        return jnp.asarray(lo, jnp.float32) + s * jnp.asarray(1.0 - lo - 1e-5, jnp.float32)

    def __call__(self, x, t, cond=None, train: bool = False, rngs=None):
        h = x
        for layer in self.layers:
            h = jnp.tanh(layer(h))
        z = self.readout(h).reshape(x.shape[0], 2 * self.dim, self.n_basis)
        w = bump_weights(jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],)),
                         self.num_steps, self.n_basis)
        return jnp.einsum("bkn,bn->bk", z, w)
