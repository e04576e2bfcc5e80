"""Consistency distillation (CD) and consistency training (CT) (Song et al. 2023, arXiv 2303.01469).

Conventions. Consistency models live on EDM's process ``x_sigma = x + sigma z``
(:class:`diffjax.processes.EDM`, ``sigma = sigma_max * t``): every model here is called with
diffjax time ``t = sigma / sigma_max``. The consistency function ``f(x, t)`` is an ``'x0'``
model, normally a :class:`diffjax.parameterization.ConsistencyPrecond` (boundary condition
``f(x, sigma_min) = x``, paper eq. 3 / appendix C; reference
``cm/karras_diffusion.py :: get_scalings_for_boundary_condition``).

Parameters are explicit because the target network differs from the online one:
``apply_fn(params, x, t, cond, dropout_key) -> f`` is evaluated with ``params`` (online,
gradient flows) and ``target_params`` (EMA ``theta^-``, stop-gradient) using the **same**
dropout key, as the reference restores the torch RNG state between the two calls
(``KarrasDenoiser.consistency_losses``). ``target_params=None`` means ``theta^- = theta``
(the released CIFAR-10 CD recipe).

Reference-code semantics followed where it differs from the paper: the
CT EMA rate is ``mu(k) = exp(s0 log mu0 / n(k))`` with ``n(k) = N(k) - 1``
(``cm/script_util.py :: create_ema_and_scales_fn``), so ``mu(0) = mu0^2``.

Improved consistency training, iCT (Song & Dhariwal 2023, "Improved Techniques for Training
Consistency Models", arXiv 2310.14189, sec. 3-4), is the same loss with four changes, each an
option here: the target is the online network under stop-gradient (``theta^- = theta``, no
EMA: ``target_params=None``); ``N(k)`` doubles from ``s0 = 10`` to ``s1 = 1280``
(:func:`ict_schedule`, :class:`ict_schedule_fn`); the pair index is drawn so that noise levels
follow a discretised log-normal (``level_sampling='lognormal'``, P_mean = -1.1, P_std = 2.0,
:func:`lognormal_level_probs`) instead of uniformly; and each pair is weighted by
``lambda = 1 / (sigma_n - sigma_{n+1})`` (``weighting='ict'``) with the pseudo-Huber distance
(``metric='pseudo_huber'``, ``c = 0.00054 sqrt(d)``). The weighting turns the loss into a
finite-difference derivative along the ODE, so its size does not shrink as ``N`` grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.grids import karras_sigma
from diffjax.losses.diffusion import as_batch, bcast
from diffjax.processes import EDM

Array = Any

__all__ = [
    "ct_schedule",
    "ct_schedule_fn",
    "ict_schedule",
    "ict_schedule_fn",
    "lognormal_level_probs",
    "teacher_step",
    "cd_target",
    "ct_target",
    "consistency_weighting",
    "pseudo_huber",
    "lpips_preprocess",
    "consistency_distance",
    "consistency_loss",
    "ema_update",
]

TEACHER_SOLVERS = ("heun", "euler", "ddim")
METRICS = ("l2", "l1", "pseudo_huber")
WEIGHTINGS = ("uniform", "snr", "snr+1", "karras", "truncated-snr", "ict")
LEVEL_SAMPLINGS = ("uniform", "lognormal")


def ct_schedule(step: int, total_steps: int, start_scales: int = 2, end_scales: int = 150,
                start_ema: float = 0.9) -> tuple[float, int]:
    """CT's adaptive schedule ``(mu(k), N(k))`` (Song et al. 2023, appendix C, "progressive").

    ``n(k) = max(1, ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1))``, ``N(k) = n(k) + 1``,
    ``mu(k) = exp(s0 log(mu0) / n(k))`` -- the reference divides by ``n(k) = N(k) - 1``
    (``cm/script_util.py :: create_ema_and_scales_fn``, ``progressive`` branch), not by
    ``N(k)`` as the paper writes. Host-side float64.

    Args:
      step: current optimisation step ``k >= 0``.
      total_steps: ``K > 0``.
      start_scales, end_scales: ``s0``, ``s1`` (CIFAR-10: 2, 150; ImageNet-64: 2, 200).
      start_ema: ``mu0`` (CIFAR-10: 0.9; ImageNet-64: 0.95).

    Returns:
      ``(mu, N)``: the target EMA rate and the number of discretisation points.
    """
    if not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1; got {total_steps!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step!r}")
    if not 0.0 < start_ema < 1.0:
        raise ValueError(f"start_ema must lie in (0, 1); got {start_ema!r}")
    s0, s1 = float(start_scales), float(end_scales)
    n = math.ceil(math.sqrt(step / total_steps * ((s1 + 1.0) ** 2 - s0**2) + s0**2) - 1.0)
    n = max(n, 1)
    mu = math.exp(s0 * math.log(start_ema) / n)
    return mu, n + 1


class ct_schedule_fn:  # noqa: N801 -- used like a function: ``ct_schedule_fn(...)(step)``
    """:func:`ct_schedule` as a traced function of the step, for a jitted train step.

    ``ct_schedule_fn(K, s0, s1, mu0)(step) -> (mu, N)`` with ``step`` a traced int32 scalar.
    ``n(k)`` is a step function of ``k`` with at most ``s1`` values, so the first step of
    every value is found once on the host with the float64 :func:`ct_schedule` (bisection;
    ``n(k)`` is non-decreasing) and ``n`` is then ``1 + #(boundaries <= k)``: integer
    comparisons, equal to the host schedule at every step (no float32 ``ceil`` at a perfect
    square). ``mu = exp(s0 log(mu0) / n)`` in float32 (reference semantics: ``n = N - 1``).
    Instances are hashable by their arguments, so
    ``EMASpec(decay_fn=ct_schedule_fn(...).mu)`` is a valid static field.

    Args:
      total_steps, start_scales, end_scales, start_ema: as :func:`ct_schedule`.
    """

    def __init__(self, total_steps: int, start_scales: int = 2, end_scales: int = 150,
                 start_ema: float = 0.9):
        ct_schedule(0, total_steps, start_scales, end_scales, start_ema)  # validates
        self.args = (int(total_steps), start_scales, end_scales, float(start_ema))
        n_of = lambda k: ct_schedule(k, *self.args)[1] - 1
        n_max = n_of(total_steps)
        bounds = []
        for target in range(n_of(0) + 1, n_max + 1):
            lo, hi = 0, total_steps  # n_of(lo) < target <= n_of(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if n_of(mid) < target else (lo, mid)
            bounds.append(hi)
        self.n0 = n_of(0)
        self.bounds = np.asarray(bounds, np.int64)

    def __hash__(self):
        return hash(("ct_schedule_fn",) + self.args)

    def __eq__(self, other):
        return isinstance(other, ct_schedule_fn) and other.args == self.args

    def num_scales(self, step: Array) -> Array:
        """``N(k)`` as int32 (``k`` past ``total_steps`` keeps the last value)."""
        k = jnp.asarray(step, jnp.int32)
        if self.bounds.size == 0:
            return jnp.full(jnp.shape(k), self.n0 + 1, jnp.int32)
        b = jnp.asarray(np.minimum(self.bounds, np.iinfo(np.int32).max), jnp.int32)
        n = self.n0 + jnp.sum(k[..., None] >= b, axis=-1).astype(jnp.int32)
        return n + 1

    def mu(self, step: Array) -> Array:
        """``mu(k) = exp(s0 log(mu0) / n(k))`` (float32)."""
        n = (self.num_scales(step) - 1).astype(jnp.float32)
        return jnp.exp(float(self.args[1]) * math.log(self.args[3]) / n)

    def __call__(self, step: Array) -> tuple[Array, Array]:
        return self.mu(step), self.num_scales(step)


def ict_schedule(step: int, total_steps: int, start_scales: int = 10,
                 end_scales: int = 1280) -> int:
    """iCT's exponential discretisation curriculum ``N(k)`` (Song & Dhariwal 2023, eq. 9).

    ``N(k) = min(s0 2^floor(k / K'), s1) + 1`` with ``K' = floor(K / (floor(log2(s1 / s0)) + 1))``:
    ``N`` doubles ``floor(log2(s1 / s0))`` times, spending equal numbers of steps at each value
    (CIFAR-10 / ImageNet-64: ``s0 = 10``, ``s1 = 1280``, so ``N`` = 11, 21, ..., 1281 over 8
    equal stages). There is no target EMA (``mu = 0``).

    Args:
      step: current optimisation step ``k >= 0``.
      total_steps: ``K``; must allow ``K' >= 1``.
      start_scales, end_scales: ``s0 <= s1``.

    Returns:
      ``N(k)``, the number of discretisation points.
    """
    kp = _ict_stage_len(total_steps, start_scales, end_scales)
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step!r}")
    return min(start_scales * 2 ** (step // kp), end_scales) + 1


def _ict_stage_len(total_steps, s0, s1) -> int:
    if not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1; got {total_steps!r}")
    if not (isinstance(s0, (int, np.integer)) and isinstance(s1, (int, np.integer))
            and 1 <= s0 <= s1):
        raise ValueError(f"start_scales, end_scales must be integers with 1 <= s0 <= s1; got "
                         f"{s0!r}, {s1!r}")
    stages = int(math.floor(math.log2(s1 / s0))) + 1
    kp = total_steps // stages
    if kp < 1:
        raise ValueError(f"total_steps = {total_steps} is shorter than the {stages} stages of "
                         f"the iCT curriculum s0 = {s0} .. s1 = {s1}")
    return kp


class ict_schedule_fn:  # noqa: N801 -- used like a function, as ct_schedule_fn
    """:func:`ict_schedule` as a traced function of the step (integer ops only).

    ``num_scales(step)`` is ``N(k)`` as int32; ``max_scales`` (static) is ``s1 + 1``, the
    length the log-normal level sampler pads to so a growing ``N`` never recompiles.
    """

    def __init__(self, total_steps: int, start_scales: int = 10, end_scales: int = 1280):
        self.args = (int(total_steps), int(start_scales), int(end_scales))
        self.stage = _ict_stage_len(*self.args)
        self.max_scales = self.args[2] + 1
        # past the last doubling the exponent is capped, so 2^e never overflows int32
        self._max_exp = int(math.ceil(math.log2(self.args[2] / self.args[1])))

    def __hash__(self):
        return hash(("ict_schedule_fn",) + self.args)

    def __eq__(self, other):
        return isinstance(other, ict_schedule_fn) and other.args == self.args

    def num_scales(self, step: Array) -> Array:
        k = jnp.asarray(step, jnp.int32)
        e = jnp.minimum(k // self.stage, self._max_exp)
        s0, s1 = self.args[1], self.args[2]
        return jnp.minimum(s0 * jnp.left_shift(jnp.int32(1), e), s1).astype(jnp.int32) + 1


def lognormal_level_probs(num_scales: int | Array, sigma_min: float = 0.002,
                          sigma_max: float = 80.0, rho: float = 7.0, p_mean: float = -1.1,
                          p_std: float = 2.0, max_scales: int | None = None) -> Array:
    """iCT's pair-index distribution (Song & Dhariwal 2023, sec. 3.5, eq. 10).

    Pair ``n`` joins ``sigma_n > sigma_{n+1}`` (index 0 = ``sigma_max``,
    :func:`~diffjax.grids.karras_sigma`) and
    gets the log-normal ``N(P_mean, P_std^2)`` mass of ``ln sigma`` between them:
    ``p(n) ∝ erf((ln sigma_n - P_mean) / (sqrt(2) P_std)) - erf((ln sigma_{n+1} - P_mean) /
    (sqrt(2) P_std))``, ``n = 0 .. N - 2``. With a traced ``num_scales`` pass ``max_scales``
    (static): the vector has ``max_scales - 1`` entries and those ``n >= N - 1`` are 0.

    Returns:
      probabilities ``(N - 1,)`` (or ``(max_scales - 1,)``), summing to 1.
    """
    if max_scales is None:
        if not isinstance(num_scales, (int, np.integer)):
            raise ValueError("a traced num_scales needs a static max_scales")
        max_scales = int(num_scales)
    n = jnp.arange(max_scales - 1, dtype=jnp.float32)
    hi = karras_sigma(n, num_scales, sigma_min, sigma_max, rho)
    lo = karras_sigma(n + 1.0, num_scales, sigma_min, sigma_max, rho)
    scale = math.sqrt(2.0) * p_std
    a, b = (jnp.log(hi) - p_mean) / scale, (jnp.log(lo) - p_mean) / scale  # a > b
    erf, erfc = jax.scipy.special.erf, jax.scipy.special.erfc
    # erf(a) - erf(b) cancels in float32 where both are near +-1 (the ends of the grid);
    # there the same difference is taken between small complementary values
    mass = jnp.where(b >= 0.0, erfc(b) - erfc(a),
                     jnp.where(a <= 0.0, erfc(-a) - erfc(-b), erf(a) - erf(b)))
    mass = jnp.where(n < jnp.asarray(num_scales) - 1, jnp.maximum(mass, 0.0), 0.0)
    return mass / jnp.sum(mass)


def _check_edm(process):
    if not isinstance(process, EDM):
        raise ValueError(
            f"process must be diffjax.processes.EDM (consistency models use x + sigma z); "
            f"got {type(process).__name__}"
        )


def teacher_step(teacher: Callable, x: Array, sigma: Array, sigma_next: Array, *,
                 process: EDM | None = None, solver: str = "heun", cond: Any = None) -> Array:
    """One step of the teacher's probability-flow ODE from ``sigma`` down to ``sigma_next``.

    ``teacher(x, t, cond)`` is any diffjax ``'x0'`` model on the EDM process (``t = sigma /
    sigma_max``), e.g. :class:`~diffjax.parameterization.EDMPrecond` or an exact
    :mod:`diffjax.analytic` denoiser. ``d(x, s) = (x - D(x, s)) / s``;

    * ``'euler'``: ``x + (s' - s) d(x, s)``;
    * ``'heun'``: Euler, then ``x + (s' - s) (d(x, s) + d(x', s')) / 2`` (paper eq. 7,
      ``karras_diffusion.py :: heun_solver``);
    * ``'ddim'``: ``D + s' (x - D) / s`` (``ddim_solver``; equal to Euler on this process).

    Per-example ``sigma``/``sigma_next`` of shape ``(B,)``; dtype is preserved (float64 in
    tests under ``jax.enable_x64``).
    """
    process = EDM() if process is None else process
    _check_edm(process)
    if solver not in TEACHER_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {TEACHER_SOLVERS}")
    sb, snb = bcast(sigma, x), bcast(sigma_next, x)
    denoised = teacher(x, sigma / process.sigma_max, cond)
    if solver == "ddim":
        return denoised + snb * (x - denoised) / sb
    d = (x - denoised) / sb
    x_e = x + (snb - sb) * d
    if solver == "euler":
        return x_e
    d2 = (x_e - teacher(x_e, sigma_next / process.sigma_max, cond)) / snb
    return x + (snb - sb) * 0.5 * (d + d2)


def cd_target(teacher: Callable, x_t: Array, sigma: Array, sigma_next: Array, *,
              process: EDM | None = None, solver: str = "heun", cond: Any = None) -> Array:
    """CD's target point ``x_{t_n}^phi``: the teacher's one-step ODE solution (paper eq. 7).

    The loss then evaluates ``stopgrad(f_{theta^-}(x_{t_n}^phi, t_n))`` at it. This is
    :func:`teacher_step` under stop-gradient (the teacher is never trained).
    """
    return jax.lax.stop_gradient(
        teacher_step(teacher, x_t, sigma, sigma_next, process=process, solver=solver, cond=cond))


def ct_target(x0: Array, z: Array, sigma_next: Array) -> Array:
    """CT's target point ``x + t_n z`` (paper Alg. 3): the Euler step from ``x + t_{n+1} z``
    with the one-sample denoiser ``x`` (reference ``dsm_target`` / ``euler_solver`` with
    ``x_start``)."""
    return x0 + bcast(sigma_next, x0) * z


def consistency_weighting(sigma: Array, schedule: str = "uniform", sigma_data: float = 0.5,
                          sigma_next: Array | None = None):
    """``lambda(t_{n+1})`` (reference ``karras_diffusion.py :: get_weightings``), at the
    higher noise level; every released CM recipe uses ``'uniform'``. ``'ict'`` is improved
    CT's ``1 / (sigma_n - sigma_{n+1})`` (Song & Dhariwal 2023, sec. 3.5) and needs
    ``sigma_next``."""
    snr = sigma**-2.0
    if schedule == "ict":
        if sigma_next is None:
            raise ValueError("weighting 'ict' needs sigma_next (lambda = 1 / (sigma - sigma_next))")
        return 1.0 / (sigma - sigma_next)
    if schedule == "uniform":
        return jnp.ones_like(sigma)
    if schedule == "snr":
        return snr
    if schedule == "snr+1":
        return snr + 1.0
    if schedule == "karras":
        return snr + 1.0 / sigma_data**2
    if schedule == "truncated-snr":
        return jnp.maximum(snr, 1.0)
    raise ValueError(f"unknown weighting {schedule!r}; expected one of {WEIGHTINGS}")


def pseudo_huber(a: Array, b: Array, c: float | None = None) -> Array:
    """Pseudo-Huber distance ``sqrt(||a - b||^2 + c^2) - c`` per example (iCT, Song & Dhariwal
    2023, eq. 11); default ``c = 0.00054 sqrt(D)``."""
    diff = (a - b).reshape(a.shape[0], -1)
    if c is None:
        c = 0.00054 * math.sqrt(diff.shape[1])
    return jnp.sqrt(jnp.sum(diff**2, axis=1) + c**2) - c


def lpips_preprocess(x: Array, size: int = 224) -> Array:
    """The reference's LPIPS input transform: ``(x + 1) / 2``, bilinearly resized to
    ``size`` when the resolution is below 256 (``consistency_losses``). ``x``: ``(B, H, W, C)``."""
    x = (x + 1.0) / 2.0
    if x.ndim == 4 and x.shape[1] < 256:
        x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), method="bilinear")
    return x


def consistency_distance(a: Array, b: Array, metric: str | Callable = "l2") -> Array:
    """``d(a, b)`` per example: ``'l2'`` mean square, ``'l1'`` mean absolute (reference
    ``mean_flat``), ``'pseudo_huber'`` or a callable ``metric(a, b) -> (B,)`` (e.g. LPIPS
    applied to :func:`lpips_preprocess` outputs)."""
    if callable(metric):
        out = metric(a, b)
        if jnp.shape(out) != (a.shape[0],):
            raise ValueError(f"metric callable must return shape ({a.shape[0]},); got "
                             f"{jnp.shape(out)}")
        return out
    axes = tuple(range(1, a.ndim))
    if metric == "l2":
        return jnp.mean((a - b) ** 2, axis=axes)
    if metric == "l1":
        return jnp.mean(jnp.abs(a - b), axis=axes)
    if metric == "pseudo_huber":
        return pseudo_huber(a, b)
    raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS} or a callable")


def consistency_loss(apply_fn: Callable, params: Any, target_params: Any, key: Array, x0: Array,
                     *, process: EDM | None = None, num_scales: int | Array = 18,
                     mode: str = "cd", teacher: Callable | None = None,
                     solver: str = "heun", metric: str | Callable = "l2",
                     weighting: str = "uniform", sigma_data: float = 0.5,
                     level_sampling: str = "uniform", p_mean: float = -1.1, p_std: float = 2.0,
                     max_scales: int | None = None, cond: Any = None) -> tuple[Array, dict]:
    """Consistency distillation / training loss (Song et al. 2023, Alg. 2 and 3, eq. 7/10;
    reference ``cm/karras_diffusion.py :: KarrasDenoiser.consistency_losses``).

    Per example: ``n ~ U{0, ..., N-2}`` (or iCT's log-normal, ``level_sampling``),
    ``t = sigma_n`` (higher noise), ``t2 = sigma_{n+1}``,
    ``x_t = x + t z``; online ``F1 = f_theta(x_t, t)``; target point ``x_t2`` from the teacher
    (``'cd'``, :func:`cd_target`) or ``x + t2 z`` (``'ct'``, :func:`ct_target`);
    ``F2 = stopgrad(f_{theta^-}(x_t2, t2))`` with the same dropout key;
    loss ``lambda(t) d(F1, F2)``.

    Args:
      apply_fn: ``apply_fn(params, x, t, cond, dropout_key) -> f`` (diffjax time
        ``t = sigma / sigma_max``; an ``'x0'`` model with the boundary condition).
      params: online parameters (differentiate w.r.t. these).
      target_params: EMA target ``theta^-``; ``None`` uses ``params`` (CIFAR-10 CD).
      key: PRNG key (split into index, noise and dropout keys).
      x0: data ``(B, ...)``.
      process: :class:`~diffjax.processes.EDM` (its ``sigma_min``, ``sigma_max``, ``rho``).
      num_scales: ``N`` (may be a traced integer, so CT's schedule never recompiles).
      mode: ``'cd'`` or ``'ct'``.
      teacher: ``'x0'`` model ``teacher(x, t, cond)`` on ``process``; required for CD.
      solver: ``'heun'`` (default), ``'euler'`` or ``'ddim'``.
      metric: ``'l2'``, ``'l1'``, ``'pseudo_huber'`` or a callable (LPIPS hook).
      weighting: ``lambda`` (``'uniform'`` in all released CM recipes; ``'ict'``:
        ``1 / (sigma_n - sigma_{n+1})``).
      sigma_data: for the ``'karras'`` weighting.
      level_sampling: ``'uniform'`` pair index (CM) or ``'lognormal'``
        (:func:`lognormal_level_probs`, iCT) with ``p_mean``, ``p_std``.
      max_scales: static upper bound of a traced ``num_scales`` (``'lognormal'`` only).
      cond: conditioning passed to all networks.

    Returns:
      ``(loss (B,), aux)`` with ``aux``: ``t``, ``index``, ``sigma``, ``sigma_next``,
      ``weight``, ``unweighted``.
    """
    process = EDM() if process is None else process
    _check_edm(process)
    x0 = as_batch(x0)
    if mode not in ("cd", "ct"):
        raise ValueError(f"unknown mode {mode!r}; expected 'cd' or 'ct'")
    if mode == "cd" and teacher is None:
        raise ValueError("teacher is required for mode='cd'")
    if isinstance(num_scales, (int, np.integer)) and num_scales < 2:
        raise ValueError(f"num_scales must be >= 2; got {num_scales!r}")
    if solver not in TEACHER_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {TEACHER_SOLVERS}")
    if not callable(metric) and metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS} or a callable")
    consistency_weighting(jnp.ones(()), weighting, sigma_next=jnp.zeros(()))  # validates
    if level_sampling not in LEVEL_SAMPLINGS:
        raise ValueError(f"unknown level_sampling {level_sampling!r}; expected one of "
                         f"{LEVEL_SAMPLINGS}")
    if target_params is None:
        target_params = params
    B = x0.shape[0]
    k_idx, k_z, k_drop = jax.random.split(key, 3)
    smin, smax, rho = process.sigma_min, process.sigma_max, process.rho
    if level_sampling == "uniform":
        n = jax.random.randint(k_idx, (B,), 0, jnp.asarray(num_scales) - 1)
    else:
        probs = lognormal_level_probs(num_scales, smin, smax, rho, p_mean, p_std, max_scales)
        # inverse-CDF draw: O(B log N), where jax.random.categorical's Gumbel trick draws B x N
        # random numbers (30x slower on CPU at N = 1281, B = 256)
        cdf = jnp.cumsum(probs)
        u = jax.random.uniform(k_idx, (B,), cdf.dtype) * cdf[-1]
        n = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), jnp.asarray(num_scales) - 2)
    sigma = karras_sigma(n, num_scales, smin, smax, rho).astype(x0.dtype)
    sigma_next = karras_sigma(n + 1, num_scales, smin, smax, rho).astype(x0.dtype)
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    x_t = x0 + bcast(sigma, x0) * z
    f1 = apply_fn(params, x_t, sigma / smax, cond, k_drop)
    if mode == "cd":
        x_t2 = cd_target(teacher, x_t, sigma, sigma_next, process=process, solver=solver,
                         cond=cond)
    else:
        x_t2 = ct_target(x0, z, sigma_next)
    f2 = jax.lax.stop_gradient(
        apply_fn(jax.lax.stop_gradient(target_params), x_t2, sigma_next / smax, cond, k_drop))
    dist = consistency_distance(f1, f2, metric)
    w = consistency_weighting(sigma, weighting, sigma_data, sigma_next)
    aux = {"t": sigma / smax, "index": n, "sigma": sigma, "sigma_next": sigma_next,
           "weight": w, "unweighted": dist}
    return w * dist, aux


def ema_update(target_params: Any, params: Any, mu: float | Array) -> Any:
    """``theta^- <- mu theta^- + (1 - mu) theta`` (after each optimizer step; paper Alg. 2)."""
    return jax.tree_util.tree_map(lambda a, b: mu * a + (1.0 - mu) * b, target_params, params)
