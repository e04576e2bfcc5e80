"""What a network predicts, and how to turn any prediction into any other for any process.

With ``x = alpha x0 + sigma eps`` (per-example ``t``), the kinds are

* ``'eps'``: the noise (DDPM);
* ``'x0'``: the clean data, EDM's denoiser ``D`` (Karras et al. 2022);
* ``'v'``: ``v = alpha eps - sigma x0`` (Salimans & Ho 2022; VP-only in its usual form, here
  solved for any ``alpha, sigma``);
* ``'score'``: ``grad log p_t(x) = -eps / sigma`` (NCSN, score SDE);
* ``'velocity'``: the probability-flow velocity ``dx/dt = alpha_dot x0 + sigma_dot eps`` in
  *our* time (a SiT/flow network trained with data at ``t = 1`` predicts the negative of it
  at ``1 - t``: wrap it with :func:`diffjax.adapters.sit_velocity`).

Everything passes through the pair ``(x0, eps)``: ``to_x0_eps`` and ``from_x0_eps``.
EDM preconditioning and the consistency-model boundary form are wrappers that turn a raw
network ``F`` into an ``'x0'`` model. IMM's networks output ``G``, which means a map
``f_{s,t}(x_t)`` between two times (:func:`imm_map`), used by both IMM's loss and its sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from flax import struct

from diffjax.processes import Linear, Process, as_time, broadcast_t

Array = Any

PREDICTION_KINDS = ("eps", "x0", "v", "score", "velocity")

__all__ = [
    "PREDICTION_KINDS",
    "Prediction",
    "check_kind",
    "to_x0_eps",
    "from_x0_eps",
    "convert",
    "split_learned_variance",
    "edm_precond_coeffs",
    "vp_precond_coeffs",
    "ve_precond_coeffs",
    "EDMPrecond",
    "consistency_coeffs",
    "ConsistencyPrecond",
    "IMM_KINDS",
    "IMM_PROCESS",
    "imm_coeffs",
    "imm_map",
]


class Prediction(NamedTuple):
    """A denoiser evaluation in canonical form: ``x0_hat``, ``eps_hat`` and, for learned-variance
    models (iDDPM), the raw variance interpolation output ``v_var`` in [-1, 1] (else None)."""

    x0: Array
    eps: Array
    v_var: Array | None = None


def check_kind(kind: str) -> str:
    if kind not in PREDICTION_KINDS:
        raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}")
    return kind


def _coefs(process: Process, x: Array, t: Array):
    tb = broadcast_t(t, x)
    return process.alpha(tb), process.sigma(tb), tb


def to_x0_eps(kind: str, pred: Array, x: Array, t: Array, process: Process) -> tuple[Array, Array]:
    """Convert a ``kind`` prediction at ``(x, t)`` into ``(x0_hat, eps_hat)``.

    Closed forms (from ``x = alpha x0 + sigma eps``): ``x0 = (x - sigma eps) / alpha``,
    ``eps = (x - alpha x0) / sigma``, score ``s``: ``eps = -sigma s``; ``v``: ``x0 = (alpha x -
    sigma v) / (alpha^2 + sigma^2)``, ``eps = (sigma x + alpha v) / (alpha^2 + sigma^2)``;
    velocity ``u``: solve ``[alpha sigma; alpha_dot sigma_dot] [x0; eps] = [x; u]``.
    Where a kind cannot recover a quantity (``eps`` from ``x0`` at ``sigma = 0``), the result
    is non-finite; samplers never ask for it there.
    """
    check_kind(kind)
    a, s, tb = _coefs(process, x, t)
    if kind == "eps":
        return (x - s * pred) / a, pred
    if kind == "x0":
        return pred, (x - a * pred) / s
    if kind == "score":
        eps = -s * pred
        return (x + s**2 * pred) / a, eps
    if kind == "v":
        n = a**2 + s**2
        return (a * x - s * pred) / n, (s * x + a * pred) / n
    # velocity
    ad, sd = process.alpha_dot(tb), process.sigma_dot(tb)
    det = a * sd - s * ad
    return (sd * x - s * pred) / det, (a * pred - ad * x) / det


def from_x0_eps(kind: str, x0: Array, eps: Array, x: Array, t: Array, process: Process) -> Array:
    """Express ``(x0, eps)`` at ``(x, t)`` as a ``kind`` prediction (inverse of ``to_x0_eps``)."""
    check_kind(kind)
    a, s, tb = _coefs(process, x, t)
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "score":
        return -eps / s
    if kind == "v":
        return a * eps - s * x0
    return process.alpha_dot(tb) * x0 + process.sigma_dot(tb) * eps


def convert(pred: Array, x: Array, t: Array, process: Process, src: str, dst: str) -> Array:
    """Convert a prediction of kind ``src`` into kind ``dst``."""
    if src == dst:
        check_kind(src)
        return pred
    x0, eps = to_x0_eps(src, pred, x, t, process)
    return from_x0_eps(dst, x0, eps, x, t, process)


def split_learned_variance(out: Array, channels: int | None = None) -> tuple[Array, Array]:
    """Split an iDDPM learned-variance output ``(..., 2C)`` into ``(mean_pred, v_var)``."""
    c2 = out.shape[-1]
    if c2 % 2 or (channels is not None and c2 != 2 * channels):
        raise ValueError(
            f"learned-variance output must have 2*C channels on the last axis; got {out.shape}"
        )
    return out[..., : c2 // 2], out[..., c2 // 2:]


# ----------------------------------------------------------------------------------------------
# Preconditioning (Karras et al. 2022, Table 1) and the consistency boundary form
# ----------------------------------------------------------------------------------------------


def edm_precond_coeffs(sigma: Array, sigma_data: float = 0.5):
    """EDM ``(c_skip, c_out, c_in, c_noise)`` (Karras et al. 2022, Table 1, eq. 7).

    ``c_skip = sd^2/(s^2+sd^2)``, ``c_out = s sd / sqrt(s^2+sd^2)``, ``c_in = 1/sqrt(s^2+sd^2)``,
    ``c_noise = ln(s) / 4``. With the loss weight ``lambda = (s^2+sd^2)/(s sd)^2``,
    ``lambda c_out^2 = 1``.
    """
    sigma = as_time(sigma)
    n = sigma**2 + sigma_data**2
    return sigma_data**2 / n, sigma * sigma_data / jnp.sqrt(n), 1.0 / jnp.sqrt(n), 0.25 * jnp.log(sigma)


def vp_precond_coeffs(sigma: Array, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000):
    """EDM's VP baseline preconditioning: ``c_skip=1, c_out=-s, c_in=1/sqrt(s^2+1)``,
    ``c_noise = (M-1) t(s)`` with ``t(s) = (sqrt(beta_min^2 + 2 beta_d ln(1+s^2)) - beta_min)/beta_d``."""
    sigma = as_time(sigma)
    t = (jnp.sqrt(beta_min**2 + 2.0 * beta_d * jnp.log1p(sigma**2)) - beta_min) / beta_d
    return jnp.ones_like(sigma), -sigma, 1.0 / jnp.sqrt(sigma**2 + 1.0), (M - 1) * t


def ve_precond_coeffs(sigma: Array):
    """EDM's VE baseline preconditioning: ``c_skip=1, c_out=s, c_in=1, c_noise=ln(s/2)``."""
    sigma = as_time(sigma)
    return jnp.ones_like(sigma), sigma, jnp.ones_like(sigma), jnp.log(0.5 * sigma)


def consistency_coeffs(sigma: Array, sigma_min: float = 0.002, sigma_data: float = 0.5):
    """Consistency-model boundary scalings (Song et al. 2023, appendix C):
    ``c_skip = sd^2 / ((s - s_min)^2 + sd^2)``, ``c_out = (s - s_min) sd / sqrt(s^2 + sd^2)``,
    so ``f(x, s_min) = x`` exactly; ``c_in`` and ``c_noise`` as EDM."""
    sigma = as_time(sigma)
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = (sigma - sigma_min) * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)
    c_in = 1.0 / jnp.sqrt(sigma**2 + sigma_data**2)
    return c_skip, c_out, c_in, 0.25 * jnp.log(sigma)


@struct.dataclass
class EDMPrecond:
    """``D(x; sigma) = c_skip x~ + c_out F(c_in x~, c_noise)`` as an ``'x0'`` model of any process.

    ``x~ = x / alpha`` and ``sigma = sigma(t) / alpha(t)`` (EDM's scaled view), so the same raw
    network serves VP, VE and EDM processes. ``net(x, c_noise, cond)`` is the raw network.
    Mirrors NVlabs/edm ``EDMPrecond``; ``coeffs`` selects ``'edm'`` (default), ``'vp'``, ``'ve'``.
    """

    net: Callable
    process: Process
    sigma_data: float = 0.5
    coeffs: str = struct.field(pytree_node=False, default="edm")

    def __post_init__(self):
        if self.coeffs not in ("edm", "vp", "ve"):
            raise ValueError(f"unknown coeffs {self.coeffs!r}; expected 'edm', 'vp' or 've'")

    def scalings(self, sigma):
        if self.coeffs == "edm":
            return edm_precond_coeffs(sigma, self.sigma_data)
        return vp_precond_coeffs(sigma) if self.coeffs == "vp" else ve_precond_coeffs(sigma)

    def __call__(self, x, t, cond=None):
        a, _, tb = _coefs(self.process, x, t)
        sigma_b = self.process.sigma_tilde(tb)
        c_skip, c_out, c_in, _ = self.scalings(sigma_b)
        c_noise = self.scalings(self.process.sigma_tilde(as_time(t)))[3]
        xs = x / a
        return c_skip * xs + c_out * self.net(c_in * xs, c_noise, cond)


@struct.dataclass
class ConsistencyPrecond(EDMPrecond):
    """Consistency-model parameterisation ``f(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``
    with the boundary condition ``f(x, sigma_min) = x`` (Song et al. 2023, eq. 3)."""

    sigma_min: float = 0.002

    def scalings(self, sigma):
        return consistency_coeffs(sigma, self.sigma_min, self.sigma_data)


# ----------------------------------------------------------------------------------------------
# IMM: the network output is a map between two times (Zhou, Ermon, Song 2025, arXiv 2503.07565)
# ----------------------------------------------------------------------------------------------

IMM_KINDS = ("identity", "simple_edm", "euler_fm")

#: IMM's path: the OT flow-matching interpolant ``alpha_t = 1 - t``, ``sigma_t = t``
IMM_PROCESS = Linear()


def imm_coeffs(kind: str, t: Array, s: Array, sigma_data: float = 0.5):
    """``(c_skip, c_out, c_in)`` with ``f_{s,t}(x) = c_skip x + c_out G(c_in x, t, s)`` (IMM,
    Zhou et al. 2025, sec. 4 and eq. 12; official ``IMMPrecond``), on :data:`IMM_PROCESS`.

    * ``'identity'``: ``f = DDIM(x_t, G, t, s)``: ``c_skip = sigma_s/sigma_t``,
      ``c_out = alpha_s - alpha_t sigma_s / sigma_t``;
    * ``'simple_edm'``: ``c_skip = (a_t a_s + s_t s_s)/(a_t^2+s_t^2)``,
      ``c_out = -(a_s s_t - a_t s_s) sigma_d / sqrt(a_t^2 + s_t^2)``;
    * ``'euler_fm'``: ``f = x_t - (t - s) sigma_d G``.

    ``c_in = 1 / (sigma_d sqrt(a_t^2 + s_t^2))`` for all kinds. ``t``, ``s``: any shape.
    """
    if kind not in IMM_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {IMM_KINDS}")
    p = IMM_PROCESS
    at, st, as_, ss = p.alpha(t), p.sigma(t), p.alpha(s), p.sigma(s)
    nrm = jnp.sqrt(at**2 + st**2)
    c_in = 1.0 / (sigma_data * nrm)
    if kind == "identity":
        return ss / st, as_ - at * ss / st, c_in
    if kind == "simple_edm":
        return (at * as_ + st * ss) / nrm**2, -(as_ * st - at * ss) * sigma_data / nrm, c_in
    return jnp.ones_like(at), -(jnp.asarray(t, at.dtype) - s) * sigma_data, c_in


def imm_map(kind: str, G: Array, x_t: Array, t: Array, s: Array,
            sigma_data: float = 0.5) -> Array:
    """The pushforward ``f_{s,t}(x_t) = c_skip x_t + c_out G`` (:func:`imm_coeffs`) of a raw
    IMM output ``G``; per-example ``t``, ``s`` of shape ``(B,)`` (or scalars). Guidance acts on
    ``G`` before the map (official ``IMMPrecond.cfg_forward``)."""
    c_skip, c_out, _ = imm_coeffs(kind, t, s, sigma_data)
    return broadcast_t(c_skip, x_t) * x_t + broadcast_t(c_out, x_t) * G
