"""Gaussian noise processes in one convention: ``x_t = alpha(t) * x0 + sigma(t) * eps``.

Time ``t`` runs over ``[0, 1]`` with data at ``t = 0`` and noise at ``t = 1`` for every
process in this module. Each paper's own time variable (DDPM index, EDM sigma, SiT's
"t = 1 is data", NCSN labels) enters through :mod:`diffjax.adapters`.

Processes are small frozen pytrees (``flax.struct.dataclass``): float hyper-parameters and
tables are leaves, so they can be traced and changing them never recompiles a sampler.
Every process provides ``alpha``, ``sigma``, ``log_snr`` and its inverse
``t_from_log_snr``; derivatives (``alpha_dot``, ``sigma_dot``) are closed form where cheap
and otherwise come from ``jax.jvp``. The SDE view (Song et al. 2021, eq. 5/6) follows from
the marginals: ``f(t) = alpha_dot / alpha`` and
``g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2`` (which gives ``beta(t)`` for VP,
``beta(t) (1 - alpha^4)`` for sub-VP and ``d sigma^2 / dt`` for VE, as in the paper).

Discrete DDPM-family tables (beta schedules) are built in float64 NumPy and stored as
``log(alpha_bar)`` in the default float dtype (float32 unless x64 is on):
``sigma^2 = -expm1(log alpha_bar)`` keeps full relative precision at small t, the failure that
storing ``alpha_bar`` itself in low precision causes (diffusers #2155, #3005).

Dtype policy (written once, here: :func:`as_time`). Times keep a floating dtype they already
have, promoted to at least float32 (bfloat16/float16 times would collapse a 1000-step grid);
Python numbers and integers become the default float dtype (float32, or float64 under
``jax_enable_x64``). So float32 inputs compute exactly as before and float64 inputs stay
float64 end to end: the sampler driver hands every process the dtype of its state.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = Any

__all__ = [
    "Process",
    "VP",
    "SubVP",
    "VE",
    "EDM",
    "Linear",
    "GVP",
    "DiscreteVP",
    "linear_betas",
    "cosine_betas",
    "sohl_dickstein_betas",
    "quadratic_betas",
    "respace_betas",
    "space_timesteps",
    "ddim_timesteps",
    "broadcast_t",
    "as_time",
    "default_float",
]


def default_float():
    """The default float dtype: float32, or float64 when ``jax_enable_x64`` is on."""
    return jnp.result_type(float)


def as_time(t: Array) -> Array:
    """``t`` as a floating array in the dtype policy of this module (see the module docstring):
    a floating ``t`` keeps its dtype promoted to at least float32; anything else (Python
    numbers, integers) becomes :func:`default_float`."""
    t = jnp.asarray(t)
    if t.weak_type or not jnp.issubdtype(t.dtype, jnp.floating):  # Python numbers, integers
        return jnp.asarray(t, default_float())
    return jnp.asarray(t, jnp.promote_types(t.dtype, jnp.float32))


def broadcast_t(t: Array, x: Array) -> Array:
    """Reshape per-example times ``t`` (shape ``()`` or ``(B,)``) to broadcast against ``x``."""
    t = jnp.asarray(t)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"t must be a scalar or have shape (batch,) = ({x.shape[0]},); got shape {t.shape}"
        )
    return t.reshape(t.shape + (1,) * (x.ndim - 1))


class Process:
    """Interface of a Gaussian noise process ``x_t = alpha(t) x0 + sigma(t) eps``.

    Subclasses implement ``alpha``, ``sigma`` and ``t_from_log_snr``; the rest derives from
    them. All methods act elementwise on ``t`` (any shape).
    """

    # -- marginals ---------------------------------------------------------------------
    def alpha(self, t: Array) -> Array:
        raise NotImplementedError

    def sigma(self, t: Array) -> Array:
        raise NotImplementedError

    def log_snr(self, t: Array) -> Array:
        """``lambda(t) = log(alpha^2 / sigma^2)``, decreasing in t."""
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))

    def t_from_log_snr(self, lam: Array) -> Array:
        """Inverse of :meth:`log_snr`."""
        raise NotImplementedError

    # -- EDM view: sigma_tilde = sigma / alpha (Karras et al. 2022, sec. 2, s(t) scaling) -----
    def sigma_tilde(self, t: Array) -> Array:
        """Noise level of the scaled variable ``x / alpha`` (EDM's sigma of any process)."""
        return self.sigma(t) / self.alpha(t)

    def t_from_sigma_tilde(self, s: Array) -> Array:
        """Inverse of :meth:`sigma_tilde`; ``s = 0`` maps to ``t = 0``."""
        s = as_time(s)
        safe = jnp.where(s > 0, s, 1.0)
        return jnp.where(s > 0, self.t_from_log_snr(-2.0 * jnp.log(safe)), 0.0)

    # -- derivatives and SDE coefficients ----------------------------------------------------
    def alpha_dot(self, t: Array) -> Array:
        t = as_time(t)
        return jax.jvp(self.alpha, (t,), (jnp.ones_like(t),))[1]

    def sigma_dot(self, t: Array) -> Array:
        t = as_time(t)
        return jax.jvp(self.sigma, (t,), (jnp.ones_like(t),))[1]

    def drift_coef(self, t: Array) -> Array:
        """``f(t)`` of the forward SDE ``dx = f(t) x dt + g(t) dw``: ``alpha_dot / alpha``."""
        return self.alpha_dot(t) / self.alpha(t)

    def diffusion_sq(self, t: Array) -> Array:
        """``g(t)^2 = 2 sigma sigma_dot - 2 f(t) sigma^2`` (the SDE with these marginals)."""
        s = self.sigma(t)
        return 2.0 * s * self.sigma_dot(t) - 2.0 * self.drift_coef(t) * s**2

    # -- sampling from the marginal -------------------------------------------------------------
    def marginal(self, x0: Array, t: Array, eps: Array) -> Array:
        """``x_t = alpha(t) x0 + sigma(t) eps`` with per-example ``t`` of shape ``(B,)``."""
        tb = broadcast_t(t, x0)
        return self.alpha(tb) * x0 + self.sigma(tb) * eps

    def transition(self, t: Array, s: Array) -> tuple[Array, Array]:
        """``(alpha_{t|s}, sigma_{t|s}^2)`` of ``q(x_t | x_s)`` for ``s < t``.

        ``alpha_{t|s} = alpha_t / alpha_s``; ``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2
        sigma_s^2`` (Kingma et al. 2021, eq. 3). For DDPM with ``s`` one step before ``t``
        this is ``(sqrt(1 - beta_t), beta_t)``.
        """
        a_ts = self.alpha(t) / self.alpha(s)
        var = self.sigma(t) ** 2 - a_ts**2 * self.sigma(s) ** 2
        return a_ts, jnp.maximum(var, 0.0)


# ----------------------------------------------------------------------------------------------
# Continuous processes
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class VP(Process):
    """Variance-preserving SDE (Song et al. 2021, eq. 11; DDPM's continuous limit).

    ``beta(t) = beta_min + t (beta_max - beta_min)``,
    ``alpha(t) = exp(-t^2 (beta_max - beta_min) / 4 - t beta_min / 2)``,
    ``sigma(t) = sqrt(1 - alpha^2)``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def log_alpha(self, t):
        t = as_time(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def beta(self, t):
        return self.beta_min + as_time(t) * (self.beta_max - self.beta_min)

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def log_snr(self, t):
        la2 = 2.0 * self.log_alpha(t)
        return la2 - jnp.log(-jnp.expm1(la2))

    def _t_from_neg_log_alpha2(self, c):
        # Solve  t^2 (b1 - b0)/2 + t b0 = c  in the cancellation-free form 2c / (b0 + sqrt(.)).
        d = self.beta_max - self.beta_min
        return 2.0 * c / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * d * c))

    def t_from_log_snr(self, lam):
        # alpha^2 = sigmoid(lam)  =>  -log alpha^2 = softplus(-lam)
        return self._t_from_neg_log_alpha2(jax.nn.softplus(-as_time(lam)))

    def alpha_dot(self, t):
        return -0.5 * self.beta(t) * self.alpha(t)

    def sigma_dot(self, t):
        a = self.alpha(t)
        return 0.5 * self.beta(t) * a**2 / self.sigma(t)

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def diffusion_sq(self, t):
        return self.beta(t)


@struct.dataclass
class SubVP(VP):
    """Sub-VP SDE (Song et al. 2021, eq. 12): same drift as VP, ``sigma(t) = 1 - alpha(t)^2``.

    Note ``sigma`` is the standard deviation (score_sde's ``marginal_prob`` returns it as such);
    ``g(t)^2 = beta(t) (1 - exp(-2 int_0^t beta))``.
    """

    def sigma(self, t):
        return -jnp.expm1(2.0 * self.log_alpha(t))

    def log_snr(self, t):
        la2 = 2.0 * self.log_alpha(t)
        return la2 - 2.0 * jnp.log(-jnp.expm1(la2))

    def t_from_log_snr(self, lam):
        # a = alpha^2 solves e^lam (1 - a)^2 = a: the root in (0, 1) is
        # 2 e^lam / (2 e^lam + 1 + sqrt(4 e^lam + 1)), rewritten with e^-lam for lam > 0.
        lam = as_time(lam)
        e_pos = jnp.exp(jnp.minimum(lam, 0.0))
        a_neg = 2.0 * e_pos / (2.0 * e_pos + 1.0 + jnp.sqrt(4.0 * e_pos + 1.0))
        e_neg = jnp.exp(-jnp.maximum(lam, 0.0))
        a_pos = 2.0 / (2.0 + e_neg + jnp.sqrt(4.0 * e_neg + e_neg**2))
        a = jnp.where(lam > 0, a_pos, a_neg)
        return self._t_from_neg_log_alpha2(-jnp.log(a))

    def sigma_dot(self, t):
        return self.beta(t) * self.alpha(t) ** 2

    def diffusion_sq(self, t):
        return self.beta(t) * -jnp.expm1(4.0 * self.log_alpha(t))


@struct.dataclass
class VE(Process):
    """Variance-exploding SDE (Song et al. 2021, eq. 9; SMLD/NCSN's continuous limit).

    ``alpha = 1``, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``. Defaults are the CIFAR-10
    values (0.01, 50). ``sigma(0) = sigma_min``, not 0, as in the paper.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def alpha(self, t):
        return jnp.ones_like(as_time(t))

    def sigma(self, t):
        t = as_time(t)
        return self.sigma_min * jnp.exp(t * jnp.log(self.sigma_max / self.sigma_min))

    def log_snr(self, t):
        return -2.0 * jnp.log(self.sigma(t))

    def t_from_log_snr(self, lam):
        log_s = -0.5 * as_time(lam)
        return (log_s - jnp.log(self.sigma_min)) / jnp.log(self.sigma_max / self.sigma_min)

    def alpha_dot(self, t):
        return jnp.zeros_like(as_time(t))

    def sigma_dot(self, t):
        return self.sigma(t) * jnp.log(self.sigma_max / self.sigma_min)

    def drift_coef(self, t):
        return jnp.zeros_like(as_time(t))

    def diffusion_sq(self, t):
        return 2.0 * self.sigma(t) ** 2 * jnp.log(self.sigma_max / self.sigma_min)


@struct.dataclass
class EDM(Process):
    """EDM's process (Karras et al. 2022): ``x = y + n``, ``n ~ N(0, sigma^2 I)``, sigma as time.

    Internally ``sigma(t) = sigma_max * t`` so that ``t = 0`` is clean data and ``t = 1`` is
    ``sigma_max``; an affine change of time, so Euler/Heun steps in ``t`` and in ``sigma`` are
    identical. ``sigma_min`` and ``rho`` are the defaults of :func:`diffjax.grids.karras_grid`.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def alpha(self, t):
        return jnp.ones_like(as_time(t))

    def sigma(self, t):
        return self.sigma_max * as_time(t)

    def log_snr(self, t):
        return -2.0 * jnp.log(self.sigma(t))

    def t_from_log_snr(self, lam):
        return jnp.exp(-0.5 * as_time(lam)) / self.sigma_max

    def alpha_dot(self, t):
        return jnp.zeros_like(as_time(t))

    def sigma_dot(self, t):
        return jnp.full_like(as_time(t), self.sigma_max)

    def drift_coef(self, t):
        return jnp.zeros_like(as_time(t))

    def diffusion_sq(self, t):
        return 2.0 * self.sigma_max**2 * as_time(t)


@struct.dataclass
class Linear(Process):
    """Linear interpolant ``x_t = (1 - t) x0 + (sigma_min + (1 - sigma_min) t) eps``.

    With ``sigma_min = 0`` (default) this is rectified flow / SiT "Linear": ``alpha = 1 - t``,
    ``sigma = t``. SiT writes ``x_t = t x1 + (1 - t) x0`` with data at ``t = 1``: ours is
    ``1 - t_SiT`` (:func:`diffjax.adapters.flip_time`).

    ``sigma_min > 0`` keeps a floor of noise at the data end (the optimal-transport path of flow
    matching, Lipman et al. 2023, sec. 4.1): shortcut models (Frans et al. 2024) train on
    ``x_t' = (1 - (1 - eps) t') x_noise + t' x_data`` with data at ``t' = 1`` and
    ``eps = 1e-5``, which is ``Linear(sigma_min=eps)`` at ``t = 1 - t'``. Then
    ``sigma(t) = t + sigma_min (1 - t)``, ``lambda(0) = -2 log(sigma_min)`` is finite and
    :meth:`t_from_log_snr` clips log-SNRs above it to ``t = 0``.
    """

    sigma_min: float = 0.0

    def alpha(self, t):
        return 1.0 - as_time(t)

    def sigma(self, t):
        # t + sigma_min (1 - t): exactly t for sigma_min = 0 and exactly 1 at t = 1
        t = as_time(t)
        return t + self.sigma_min * (1.0 - t)

    def t_from_log_snr(self, lam):
        # (1 - t) / (t + m (1 - t)) = r = e^(lam/2); with q = sigmoid(-lam/2) = 1 / (1 + r):
        # t = (q - m (1 - q)) / (1 - m (1 - q)), written without r (no overflow), = q for m = 0
        q = jax.nn.sigmoid(-0.5 * as_time(lam))
        m = self.sigma_min * (1.0 - q)
        return jnp.maximum((q - m) / (1.0 - m), 0.0)

    def alpha_dot(self, t):
        return -jnp.ones_like(as_time(t))

    def sigma_dot(self, t):
        return (1.0 - self.sigma_min) * jnp.ones_like(as_time(t))


@struct.dataclass
class GVP(Process):
    """Generalised variance-preserving interpolant (SiT "GVP"): ``alpha = cos(pi t / 2)``,
    ``sigma = sin(pi t / 2)`` in our time (data at 0)."""

    def alpha(self, t):
        return jnp.cos(0.5 * jnp.pi * as_time(t))

    def sigma(self, t):
        return jnp.sin(0.5 * jnp.pi * as_time(t))

    def t_from_log_snr(self, lam):
        return (2.0 / jnp.pi) * jnp.arctan(jnp.exp(-0.5 * as_time(lam)))

    def alpha_dot(self, t):
        return -0.5 * jnp.pi * self.sigma(t)

    def sigma_dot(self, t):
        return 0.5 * jnp.pi * self.alpha(t)


# ----------------------------------------------------------------------------------------------
# Discrete-time (DDPM family) processes
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class DiscreteVP(Process):
    """A DDPM-style process defined by a table of ``alpha_bar`` (Ho et al. 2020, eq. 4).

    DDPM's code index ``i in {0..T-1}`` (paper's ``t = i + 1``) sits at ``t = (i + 1) / T``
    and ``t = 0`` is clean data (``alpha_bar = 1``). Between grid points ``log alpha_bar`` is
    linear in ``t`` (constant beta within a step), which makes the process usable by the
    continuous-time samplers while leaving every value at the grid points exact.

    Build with :meth:`from_betas` (tables in float64, stored as ``log alpha_bar`` in the default
    float dtype: float32, or float64 when ``jax_enable_x64`` is on at construction).
    """

    log_alpha_bar: Array  # shape (T,), log of alpha_bar at indices 0..T-1

    @classmethod
    def from_betas(cls, betas) -> DiscreteVP:
        betas = np.asarray(betas, np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ValueError(f"betas must be a non-empty 1-D array; got shape {betas.shape}")
        if np.any(betas <= 0) or np.any(betas >= 1):
            raise ValueError("betas must lie in (0, 1)")
        return cls(log_alpha_bar=jnp.asarray(np.cumsum(np.log1p(-betas)), default_float()))

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
               rescale: bool = False) -> DiscreteVP:
        """DDPM's linear schedule (``rescale=True``: iDDPM's 1000/T rescaling)."""
        return cls.from_betas(linear_betas(num_steps, beta_start, beta_end, rescale))

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        """Improved DDPM's cosine schedule."""
        return cls.from_betas(cosine_betas(num_steps, s, max_beta))

    @property
    def num_steps(self) -> int:
        return self.log_alpha_bar.shape[0]

    def _knots(self):
        T = self.num_steps
        la = self.log_alpha_bar
        t_knots = jnp.arange(T + 1, dtype=la.dtype) / T
        la = jnp.concatenate([jnp.zeros((1,), la.dtype), la])
        return t_knots, la

    def log_alpha_bar_at(self, t):
        t_knots, la = self._knots()
        return jnp.interp(as_time(t), t_knots, la)

    def alpha(self, t):
        return jnp.exp(0.5 * self.log_alpha_bar_at(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(self.log_alpha_bar_at(t)))

    def log_snr(self, t):
        la = self.log_alpha_bar_at(t)
        return la - jnp.log(-jnp.expm1(la))

    def t_from_log_snr(self, lam):
        # alpha_bar = sigmoid(lam); invert the monotone piecewise-linear log alpha_bar(t).
        t_knots, la = self._knots()
        target = -jax.nn.softplus(-as_time(lam))
        return jnp.interp(-target, -la, t_knots)

    def betas(self) -> Array:
        """The per-step betas ``1 - alpha_bar_i / alpha_bar_{i-1}`` (in the table's dtype)."""
        la = jnp.concatenate([jnp.zeros((1,), self.log_alpha_bar.dtype), self.log_alpha_bar])
        return -jnp.expm1(jnp.diff(la))


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 rescale: bool = False) -> np.ndarray:
    """DDPM linear betas (float64). ``rescale``: iDDPM's ``scale = 1000 / T`` on both ends."""
    check_steps(num_steps)
    scale = 1000.0 / num_steps if rescale else 1.0
    return np.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=np.float64)


def quadratic_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """DDPM's ``quad`` schedule: ``linspace(sqrt(b0), sqrt(b1))^2`` (float64)."""
    check_steps(num_steps)
    return np.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=np.float64) ** 2


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Improved DDPM cosine schedule (Nichol & Dhariwal 2021, eq. 17), float64.

    ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2((t/T + s) / (1 + s) * pi / 2)``;
    ``beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta)``.
    """
    check_steps(num_steps)
    f = lambda u: np.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    return np.minimum(1.0 - f(u[1:]) / f(u[:-1]), max_beta)


def sohl_dickstein_betas(num_steps: int = 1000, step1_beta: float = 1e-3,
                         min_beta: float = 1e-6) -> np.ndarray:
    """Sohl-Dickstein et al. 2015 baseline schedule (reference ``generate_beta_arr``), float64.

    ``b_t = 1 / linspace(T, 2, T)_t`` destroys a constant fraction of the remaining signal
    variance each step; it is then squashed into ``[min_beta_t, 1 - 1e-5]`` with
    ``min_beta_1 = min_beta + step1_beta`` (the un-learned temporal perturbation is zero).
    """
    check_steps(num_steps)
    base = 1.0 / np.linspace(num_steps, 2.0, num_steps, dtype=np.float64)
    lo = np.full(num_steps, min_beta, np.float64)
    lo[0] += step1_beta
    return lo + base * (1.0 - lo - 1e-5)


def respace_betas(betas, use_timesteps) -> np.ndarray:
    """iDDPM respacing: ``beta'_i = 1 - alpha_bar_{S_i} / alpha_bar_{S_{i-1}}`` (float64).

    The respaced chain has exactly the base ``alpha_bar`` at the kept indices ``S``.
    """
    alpha_bar = np.cumprod(1.0 - np.asarray(betas, np.float64))
    idx = np.asarray(sorted(set(int(i) for i in use_timesteps)))
    if idx.size == 0 or idx[0] < 0 or idx[-1] >= alpha_bar.size:
        raise ValueError(f"use_timesteps must be indices in [0, {alpha_bar.size - 1}]")
    kept = alpha_bar[idx]
    prev = np.concatenate([[1.0], kept[:-1]])
    return 1.0 - kept / prev


def space_timesteps(num_timesteps: int, section_counts) -> list[int]:
    """iDDPM ``space_timesteps``: which original indices to keep when respacing.

    ``section_counts`` is an int, a comma-separated string of per-section counts (``"10,15"``),
    a list of ints, or ``"ddimN"`` (stride ``T // N`` from 0, as DDIM's "uniform"; it never
    includes ``T - 1``: see improved-diffusion issue #44). Within each section the steps are
    spread evenly including both ends (50 of 1000: 0, 20, 41, ..., 979, 999).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            n = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == n:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {n} steps with an integer stride")
        section_counts = [int(c) for c in section_counts.split(",")]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start, out = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count or count < 1:
            raise ValueError(f"cannot divide section of {size} steps into {count}")
        frac_stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            out.append(start + round(cur))
            cur += frac_stride
        start += size
    return sorted(set(out))


def ddim_timesteps(num_timesteps: int, num_steps: int, kind: str = "uniform") -> list[int]:
    """DDIM sub-sequences tau (ascending original indices).

    ``uniform`` (= "leading"): ``range(0, T, T // S)`` (ermongroup/ddim); ``quad``:
    ``int(linspace(0, sqrt(0.8 T), S)^2)``; ``trailing``: ``round(arange(T, 0, -T/S)) - 1``
    (always includes ``T - 1``); ``linspace``: ``round(linspace(0, T - 1, S))``.
    """
    check_steps(num_steps)
    T, S = num_timesteps, num_steps
    if S > T:
        raise ValueError(f"num_steps={S} exceeds num_timesteps={T}")
    if kind in ("uniform", "leading"):
        seq = list(range(0, T, T // S))[:S] if kind == "leading" else list(range(0, T, T // S))
    elif kind == "quad":
        seq = [int(s) for s in np.linspace(0, np.sqrt(T * 0.8), S) ** 2]
    elif kind == "trailing":
        seq = [int(s) for s in np.round(np.arange(T, 0, -T / S)) - 1]
    elif kind == "linspace":
        seq = [int(s) for s in np.round(np.linspace(0, T - 1, S))]
    else:
        raise ValueError(
            f"unknown spacing kind {kind!r}; expected 'uniform', 'leading', 'quad', "
            "'trailing' or 'linspace'"
        )
    return sorted(set(seq))


def check_steps(n):
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of steps must be an integer >= 1; got {n!r}")
