"""Exact log-likelihood, sampling and encoding with the probability-flow ODE.

The PF-ODE of a process ``x_t = alpha(t) x0 + sigma(t) eps`` (Song et al. 2021, eq. 13) is, in
diffjax time (data at ``t = 0``),

    dx/dt = v(x, t) = alpha_dot(t) x0_hat(x, t) + sigma_dot(t) eps_hat(x, t)
          = f(t) x - 1/2 g(t)^2 grad log p_t(x),

with ``x0_hat, eps_hat`` the model's denoiser in canonical form
(:func:`diffjax.samplers.make_denoise`); a ``'velocity'`` model returns ``v`` directly.

**Likelihood** (Song et al. 2021, appendix D.2; the instantaneous change of variables of
Chen et al. 2018, Grathwohl et al. 2019). Along a PF-ODE trajectory
``d log p_t(x_t) / dt = -div v(x_t, t)``, hence

    log p_eps(x) = log p_1(x_1) + int_eps^1 div v(x_t, t) dt,

computed by integrating the augmented state ``(x, delta_logp)`` with
``d delta_logp / dt = div v`` from ``t = eps`` to ``t = 1`` (score_sde
``likelihood.py:get_likelihood_fn``). ``eps = 1e-5`` by default, as there. The divergence is

* ``'exact'``: the trace of the Jacobian from ``D`` Jacobian-vector products (one per
  dimension, vectorised); cost ``D`` model evaluations per ODE step, for small ``D``;
* ``'hutchinson'``: the Skilling–Hutchinson estimate ``e^T (dv/dx) e`` with **one fixed probe
  ``e`` per datapoint for the whole trajectory** (Rademacher by default, or Gaussian; score_sde
  ``likelihood.py:get_div_fn``). It is computed as the JVP of ``v`` along ``e`` dotted with
  ``e`` (equal to score_sde's VJP of ``<v, e>`` dotted with ``e``). A fixed probe keeps the
  augmented ODE smooth, which adaptive step control needs. The estimate of ``log p`` is
  unbiased; its variance is ``2 sum_{i != j} M_ij^2`` (Rademacher) or ``2 ||M||_F^2``
  (Gaussian) for ``M`` the symmetrised time-integrated Jacobian, so Rademacher is exact
  when ``M`` is diagonal (e.g. axis-aligned Gaussian data).

Both assume the model treats datapoints independently (the Jacobian is block-diagonal over
the batch), as any network without cross-example layers does.

**Prior.** ``log p_1`` is taken as ``N(0, prior_var I)`` with the default
``prior_var = alpha(1)^2 + sigma(1)^2``: the variance of ``x_1`` for zero-mean data with unit
second moment per dimension. This is score_sde's ``N(0, I)`` for VP (``alpha^2 + sigma^2 = 1``
exactly) and, to within 4e-5, for sub-VP (``alpha^2 + (1 - alpha^2)^2``); it is the exact law of
``x_1`` for the linear interpolant (``alpha(1) = 0``). For VE it is ``1 + sigma_max^2`` where
score_sde uses ``sigma_max^2``: a change of order ``1 / (2 sigma_max^2)`` nats per dimension
(2e-4 for ``sigma_max = 50``); pass ``prior_var=process.sigma(1.)**2`` to reproduce score_sde's
VE numbers. Any zero-mean prior ignores the mean ``alpha(1) E[x0]`` of the true ``p_1``. For a
2-D Gaussian with mean (0.3, -0.2) (tests/test_likelihood.py) that error reaches 3e-3 nats per
dimension for VP (``alpha(1) = 0.0066``) and 1e-2 for VE (``alpha = 1``) at points in the tails;
it is zero for the linear interpolant.

**Batches.** One adaptive solve serves the whole batch. The error norm is the maximum over
datapoints of each datapoint's RMS scaled error (:func:`diffjax.integrate.batch_max_rms_norm`),
so every datapoint meets the tolerance whatever the batch size; the step count is set by the
hardest datapoint. (score_sde's RK45 uses the RMS over the flattened batch, which loosens the
per-datapoint control as the batch grows.)

**Bits per dimension.** For 8-bit data, uniformly dequantised (:func:`uniform_dequantize`),
``bpd = -log p / (D ln 2) + offset`` with ``offset = 8`` for data scaled to ``[0, 1]`` and ``7``
for ``[-1, 1]`` (score_sde ``run_lib.py:evaluate``: ``offset = 7 - inverse_scaler(-1)``). The
result upper-bounds the discrete NLL of the 8-bit data.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.integrate import batch_max_rms_norm, dopri5
from diffjax.parameterization import check_kind
from diffjax.processes import Process
from diffjax.samplers.driver import combine_static, make_denoise, partition_static, per_sample_keys

Array = Any

__all__ = [
    "DIVERGENCES",
    "PROBES",
    "OFFSET_CENTERED",
    "OFFSET_UNCENTERED",
    "LikelihoodResult",
    "ODEInfo",
    "probability_flow",
    "divergence_fn",
    "prior_logp",
    "log_likelihood",
    "logp_to_bits_per_dim",
    "uniform_dequantize",
    "sample_ode_adaptive",
    "encode_ode",
]

DIVERGENCES = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")
#: bits/dim offset for 8-bit data scaled to [-1, 1] (``log2(256 / 2)``)
OFFSET_CENTERED = 7.0
#: bits/dim offset for 8-bit data scaled to [0, 1] (``log2(256)``)
OFFSET_UNCENTERED = 8.0

_LOG2PI = math.log(2.0 * math.pi)


class ODEInfo(NamedTuple):
    """Solver statistics of one adaptive PF-ODE solve (shared by the whole batch)."""

    num_fevals: Array
    num_accepted: Array
    num_rejected: Array
    success: Array


class LikelihoodResult(NamedTuple):
    """Output of :func:`log_likelihood` (per-datapoint arrays have shape ``(B,)``).

    Attributes:
      logp: ``log p_eps(x)`` in nats (the density of the model's marginal at ``t = eps``).
      prior_logp: ``log N(x_1; 0, prior_var I)``.
      delta_logp: ``int_eps^1 div v(x_t, t) dt``; ``logp = prior_logp + delta_logp``.
      latent: ``x_1``, the PF-ODE image of the data at ``t_max``.
      info: :class:`ODEInfo` of the solve (model evaluations are ``num_fevals`` times ``D``
        for the exact divergence).
    """

    logp: Array
    prior_logp: Array
    delta_logp: Array
    latent: Array
    info: ODEInfo


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def probability_flow(model: Callable, *, process: Process, prediction: str = "eps",
                     cond: Any = None) -> Callable[[Array, Array], Array]:
    """The PF-ODE velocity ``v(x, t) = alpha_dot x0_hat + sigma_dot eps_hat`` in diffjax time.

    Song et al. 2021, eq. 13 (``f x - g^2/2 score``, rewritten with the marginal coefficients);
    score_sde ``sde_lib.py:SDE.reverse(probability_flow=True)`` up to the direction of time.
    A ``'velocity'`` model is used as is.

    Args:
      model: ``model(x, t, cond)`` with ``t`` of shape ``(B,)``.
      process: the noise process.
      prediction: what ``model`` returns.
      cond: conditioning passed to ``model``.

    Returns:
      ``v(x, t)`` for ``x`` of shape ``(B, ...)`` and scalar or ``(B,)`` ``t``.
    """
    check_kind(prediction)
    if prediction == "velocity":
        def v(x, t):
            t = jnp.asarray(t, jnp.float32)
            tb = jnp.broadcast_to(t, (x.shape[0],)) if t.ndim == 0 else t
            return model(x, tb, cond).astype(x.dtype)

        return v

    denoise = make_denoise(model, process, prediction, cond)

    def v(x, t):
        t = jnp.asarray(t, jnp.float32)
        pred = denoise(x, t)
        tb = t if t.ndim == 0 else t.reshape(t.shape + (1,) * (x.ndim - 1))
        out = process.alpha_dot(tb) * pred.x0 + process.sigma_dot(tb) * pred.eps
        return out.astype(x.dtype)

    return v


def divergence_fn(velocity: Callable, divergence: str = "hutchinson"):
    """``div(x, t, probe) -> (v(x, t), div_x v(x, t))`` per datapoint (shape ``(B,)``).

    ``'exact'``: ``sum_j (dv/dx e_j)_j`` from ``D`` vectorised JVPs (``jax.linearize`` once,
    ``vmap`` over the basis); ``probe`` is ignored. ``'hutchinson'``: ``e^T (dv/dx) e`` with
    ``e = probe`` (Skilling 1989, Hutchinson 1990; score_sde ``likelihood.py:get_div_fn``).
    Both rely on the Jacobian being block-diagonal over the batch.
    """
    _check_choice("divergence", divergence, DIVERGENCES)

    if divergence == "exact":
        def div(x, t, probe=None):
            b, d = x.shape[0], math.prod(x.shape[1:])
            v, lin = jax.linearize(lambda y: velocity(y, t), x)
            basis = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype)[:, None, :], (d, b, d))
            jac_cols = jax.vmap(lin)(basis.reshape((d,) + x.shape))  # (d, B, ...)
            jac_cols = jac_cols.reshape(d, b, d)
            return v, jnp.trace(jac_cols, axis1=0, axis2=2)

        return div

    def div(x, t, probe):
        v, jv = jax.jvp(lambda y: velocity(y, t), (x,), (probe,))
        return v, jnp.sum((jv * probe).reshape(x.shape[0], -1), axis=1)

    return div


def prior_logp(z: Array, prior_var: Array = 1.0) -> Array:
    """``log N(z; 0, prior_var I)`` per datapoint (score_sde ``sde_lib.py:*.prior_logp``)."""
    d = math.prod(z.shape[1:])
    zf = z.reshape(z.shape[0], -1)
    return -0.5 * (jnp.sum(zf**2, axis=1) / prior_var + d * (_LOG2PI + jnp.log(prior_var)))


def _probes(key, offset, shape, probe, dtype):
    keys = per_sample_keys(key, shape[0], offset)
    if probe == "rademacher":
        draw = lambda k: jax.random.rademacher(k, shape[1:], dtype=jnp.int32).astype(dtype)
    else:
        draw = lambda k: jax.random.normal(k, shape[1:], dtype)
    return jax.vmap(draw)(keys)


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {choices}")


def _concrete(v):
    try:
        return float(v)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _check_times(t_lo_name, t_lo, t_hi_name, t_hi):
    lo, hi = _concrete(t_lo), _concrete(t_hi)
    if lo is not None and not (0.0 < lo < 1.0):
        raise ValueError(f"{t_lo_name} must lie in (0, 1); got {t_lo}")
    if hi is not None and not (0.0 < hi <= 1.0):
        raise ValueError(f"{t_hi_name} must lie in (0, 1]; got {t_hi}")
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"need {t_lo_name} < {t_hi_name}; got {t_lo} and {t_hi}")


def _check_tols(rtol, atol, max_steps):
    for name, val in (("rtol", rtol), ("atol", atol)):
        v = _concrete(val)
        if v is not None and not v > 0.0:
            raise ValueError(f"{name} must be positive; got {val}")
    m = _concrete(max_steps)
    if m is not None and not m >= 1:
        raise ValueError(f"max_steps must be >= 1; got {max_steps}")


def _check_batch(name, x):
    shape = tuple(np.shape(x))
    if len(shape) < 2 or any(d < 1 for d in shape):
        raise ValueError(f"{name} must have shape (batch, ...) with positive sizes; got {shape}")
    return shape


def _warn_if_failed(info: ODEInfo, what: str):
    try:
        ok = bool(info.success)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError):
        return  # called under an outer jit: only ``info.success`` reports the failure
    if not ok:
        warnings.warn(
            f"{what}: the adaptive solve did not reach the final time after "
            f"{int(info.num_accepted) + int(info.num_rejected)} step attempts (raise max_steps, "
            "loosen rtol/atol, or check the model for non-finite outputs)",
            RuntimeWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------------------------
# Likelihood
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _LikConfig:
    prediction: str
    divergence: str
    probe: str
    has_prior_var: bool


@functools.partial(jax.jit, static_argnames=("static", "config"))
def _loglik_run(dyn, x, key, offset, eps, t_max, rtol, atol, prior_var, max_steps, *,
                static, config: _LikConfig):
    model, process, cond = combine_static(dyn, static)
    x = x.astype(jnp.float32)
    velocity = probability_flow(model, process=process, prediction=config.prediction, cond=cond)
    div = divergence_fn(velocity, config.divergence)
    if config.divergence == "hutchinson":
        probe = _probes(key, offset, x.shape, config.probe, x.dtype)
    else:
        probe = None

    def field(t, state, _):
        xt, _ = state
        v, dv = div(xt, t, probe)
        return v, dv

    state0 = (x, jnp.zeros((x.shape[0],), x.dtype))
    res = dopri5(field, state0, eps, t_max, rtol=rtol, atol=atol, max_steps=max_steps,
                 norm=batch_max_rms_norm)
    z, delta = res.y
    t1 = jnp.asarray(t_max, jnp.float32)
    var = prior_var if config.has_prior_var else process.alpha(t1) ** 2 + process.sigma(t1) ** 2
    plogp = prior_logp(z, var)
    info = ODEInfo(res.num_fevals, res.num_accepted, res.num_rejected, res.success)
    return LikelihoodResult(plogp + delta, plogp, delta, z, info)


def log_likelihood(
    model: Callable,
    x: Array,
    key: Array | None = None,
    *,
    process: Process,
    prediction: str = "eps",
    cond: Any = None,
    divergence: str = "hutchinson",
    probe: str = "rademacher",
    eps: float = 1e-5,
    t_max: float = 1.0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    prior_var: float | None = None,
    max_steps: int = 10_000,
    sample_offset: int = 0,
) -> LikelihoodResult:
    """Log-likelihood of data under the probability-flow ODE (Song et al. 2021, appendix D.2).

    Integrates ``(x, delta_logp)`` from ``t = eps`` to ``t_max`` with adaptive dopri5 and
    returns ``log p(x) = log N(x_1; 0, prior_var I) + delta_logp`` per datapoint (score_sde
    ``likelihood.py:get_likelihood_fn``, which returns ``-log p / (D ln 2)`` instead; see
    :func:`logp_to_bits_per_dim`). Jitted; the tolerances, ``eps``, ``t_max``, ``prior_var``
    and the model's, process's and ``cond``'s array/float leaves are traced.

    Args:
      model: ``model(x, t, cond) -> prediction`` with ``t`` of shape ``(B,)``; must treat
        datapoints independently.
      x: data, shape ``(B, ...)`` (for 8-bit images: dequantised and scaled as in training).
      key: PRNG key for the Hutchinson probes (required for ``'hutchinson'``). Datapoint ``i``
        uses ``fold_in(key, sample_offset + i)``, so its probe does not depend on the batch.
      process: the noise process the model was trained with.
      prediction: what ``model`` returns.
      cond: conditioning passed to ``model``.
      divergence: ``'hutchinson'`` (default) or ``'exact'`` (small ``D`` only: ``D`` model
        evaluations per ODE step).
      probe: Hutchinson probe distribution, ``'rademacher'`` (default) or ``'gaussian'``.
      eps: start time of the integration, in ``(0, 1)`` (score_sde: 1e-5).
      t_max: end time (default 1).
      rtol: relative tolerance of dopri5 (score_sde: 1e-5).
      atol: absolute tolerance of dopri5 (score_sde: 1e-5).
      prior_var: variance of the Gaussian prior at ``t_max``; ``None``:
        ``alpha(t_max)^2 + sigma(t_max)^2`` (see the module docstring).
      max_steps: maximum number of step attempts of the adaptive solve.
      sample_offset: index of the first datapoint (for the probe keys of later batches).

    Returns:
      A :class:`LikelihoodResult`; ``logp`` is in nats per datapoint. A solve that did not
      reach ``t_max`` raises a ``RuntimeWarning`` (outside ``jit``).

    Raises:
      ValueError: unknown ``prediction``/``divergence``/``probe``, times outside
        ``0 < eps < t_max <= 1``, non-positive tolerances or ``prior_var``, ``x`` without a
        batch axis, or a missing ``key`` for the Hutchinson estimator.
    """
    check_kind(prediction)
    _check_choice("divergence", divergence, DIVERGENCES)
    _check_choice("probe", probe, PROBES)
    _check_batch("x", x)
    _check_times("eps", eps, "t_max", t_max)
    _check_tols(rtol, atol, max_steps)
    if prior_var is not None:
        pv = _concrete(prior_var)
        if pv is not None and not pv > 0.0:
            raise ValueError(f"prior_var must be positive; got {prior_var}")
    if divergence == "hutchinson" and key is None:
        raise ValueError("the Hutchinson divergence needs a PRNG key for its probes (key=...)")
    if not callable(model):
        raise TypeError(f"model must be callable model(x, t, cond); got {type(model).__name__}")
    if key is None:
        key = jax.random.PRNGKey(0)  # unused by the exact divergence
    dyn, static = partition_static((model, process, cond))
    config = _LikConfig(prediction, divergence, probe if divergence == "hutchinson" else "",
                        prior_var is not None)
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    out = _loglik_run(
        dyn, jnp.asarray(x), key, jnp.uint32(sample_offset), f32(eps), f32(t_max), f32(rtol),
        f32(atol), f32(1.0 if prior_var is None else prior_var), jnp.int32(max_steps),
        static=static, config=config,
    )
    _warn_if_failed(out.info, "log_likelihood")
    return out


def logp_to_bits_per_dim(logp: Array, num_dims: int, data_offset: float) -> Array:
    """A log-density in nats as bits per dimension: ``-logp / (num_dims ln 2) + data_offset``.

    A unit conversion only; to evaluate a model on a data set use
    :func:`diffjax.evaluation.evaluate_bits_per_dim`. As in score_sde ``run_lib.py:evaluate``
    (bpd of uniformly dequantised 8-bit data), the offset turns the density of the scaled data
    into a density over ``[0, 256)^D`` in units of the integer bins: ``OFFSET_CENTERED = 7``
    for data in ``[-1, 1]``, ``OFFSET_UNCENTERED = 8`` for ``[0, 1]``. These offsets hold only
    for 8-bit data (score_sde_pytorch issue #51); ``0`` gives the plain continuous bits/dim.

    Args:
      logp: log-density in nats (any shape), e.g. :attr:`LikelihoodResult.logp`.
      num_dims: number of dimensions ``D`` of one datapoint (``H * W * C`` for images).
      data_offset: the offset in bits (see above).

    Returns:
      Bits per dimension, the shape of ``logp``.

    Raises:
      ValueError: ``num_dims`` is not a positive integer.
    """
    if not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer; got {num_dims!r}")
    return -jnp.asarray(logp) / (num_dims * math.log(2.0)) + data_offset


def uniform_dequantize(key: Array, x: Array, *, centered: bool | None = None) -> Array:
    """Uniform dequantisation of 8-bit data: ``(k + U) / 256`` with ``U ~ U[0, 1)``.

    score_sde ``run_lib.py:evaluate`` (``(x * 255 + uniform) / 256``, before the data scaler).
    Accepts the integers ``k`` themselves (a ``uint8``/integer array) or the scaled training
    data: ``k / 255`` in ``[0, 1]`` (``centered=False``) or ``2 k / 255 - 1`` in ``[-1, 1]``
    (``centered=True``); ``k`` is recovered by rounding. The output lies in ``[0, 1)``, or in
    ``[-1, 1)`` when ``centered``, ready for :func:`log_likelihood` and then
    :func:`logp_to_bits_per_dim` with offset 8 or 7. Noise is drawn for the whole array from
    ``key``.

    Args:
      key: PRNG key.
      x: integer array of values in ``0..255``, or floats scaled as above.
      centered: output (and, for floats, input) range ``[-1, 1]``; required for float input,
        default ``False`` for integer input.
    """
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.integer):
        k = x.astype(jnp.float32)
        centered = bool(centered) if centered is not None else False
    elif jnp.issubdtype(x.dtype, jnp.floating):
        if centered is None:
            raise ValueError(
                "float input needs centered=True (data 2k/255 - 1 in [-1, 1]) or "
                "centered=False (data k/255 in [0, 1])"
            )
        xf = x.astype(jnp.float32)
        k = jnp.round((xf + 1.0) * 127.5) if centered else jnp.round(xf * 255.0)
    else:
        raise ValueError(f"x must be an integer or float array; got dtype {x.dtype}")
    u = (k + jax.random.uniform(key, x.shape, jnp.float32)) / 256.0
    return 2.0 * u - 1.0 if centered else u


# --------------------------------------------------------------------------------------------
# Sampling and encoding
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _SolveConfig:
    shape: tuple
    prediction: str
    has_x_init: bool
    final_denoise: bool


@functools.partial(jax.jit, static_argnames=("static", "config"))
def _pf_solve(dyn, key, x_init, offset, t0, t1, rtol, atol, max_steps, *, static,
              config: _SolveConfig):
    model, process, cond = combine_static(dyn, static)
    shape = config.shape
    if config.has_x_init:
        x = x_init.astype(jnp.float32)
    else:
        keys = per_sample_keys(key, shape[0], offset)
        # the driver's initial noise: sample i starts from fold_in(k_i, 0)
        z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), shape[1:]))(keys)
        x = process.sigma(t0) * z
    velocity = probability_flow(model, process=process, prediction=config.prediction, cond=cond)
    res = dopri5(lambda t, y, _: velocity(y, t), x, t0, t1, rtol=rtol, atol=atol,
                 max_steps=max_steps, norm=batch_max_rms_norm)
    out = res.y
    if config.final_denoise:
        out = make_denoise(model, process, config.prediction, cond)(out, t1).x0
    return out, ODEInfo(res.num_fevals, res.num_accepted, res.num_rejected, res.success)


def _solve(model, key, shape, x_init, offset, t0, t1, rtol, atol, max_steps, process,
           prediction, cond, final_denoise):
    dyn, static = partition_static((model, process, cond))
    config = _SolveConfig(shape, prediction, x_init is not None, bool(final_denoise))
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    xi = jnp.zeros((), jnp.float32) if x_init is None else jnp.asarray(x_init)
    key = jax.random.PRNGKey(0) if key is None else key
    return _pf_solve(dyn, key, xi, jnp.uint32(offset), f32(t0), f32(t1), f32(rtol), f32(atol),
                     jnp.int32(max_steps), static=static, config=config)


def sample_ode_adaptive(
    model: Callable,
    key: Array | None,
    shape: tuple[int, ...],
    *,
    process: Process,
    prediction: str = "eps",
    t_max: float = 1.0,
    t_min: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    cond: Any = None,
    x_init: Array | None = None,
    sample_offset: int = 0,
    max_steps: int = 10_000,
    final_denoise: bool = False,
    return_info: bool = False,
):
    """Sample by integrating the PF-ODE backward from ``t_max`` to ``t_min`` with dopri5.

    score_sde ``sampling.py:get_ode_sampler`` (RK45, ``rtol = atol = 1e-5``, from ``T`` to
    ``eps``, optional final denoising step). Sample ``i`` starts from
    ``sigma(t_max) * normal(fold_in(fold_in(key, sample_offset + i), 0))``, the initial noise of
    :func:`diffjax.samplers.sample` with the same key, so fixed-grid and adaptive solves of
    the same key start from the same point. One adaptive solve serves the batch, with
    per-sample error control (the max over samples of each sample's RMS error).

    Args:
      model: ``model(x, t, cond) -> prediction``.
      key: PRNG key (ignored, may be ``None``, when ``x_init`` is given).
      shape: ``(B, ...)``.
      process: the noise process.
      prediction: what ``model`` returns.
      t_max: start time (noise end), in ``(0, 1]``.
      t_min: end time (data end), in ``(0, t_max)`` (score_sde: 1e-3 for VP, 1e-5 for VE).
      rtol: relative tolerance.
      atol: absolute tolerance.
      cond: conditioning passed to ``model``.
      x_init: start from this batch at ``t_max`` (e.g. latents from :func:`encode_ode`).
      sample_offset: index of the first sample.
      max_steps: maximum number of step attempts.
      final_denoise: return ``x0_hat(x_{t_min}, t_min)`` instead of ``x_{t_min}``.
      return_info: also return the :class:`ODEInfo` of the solve.

    Returns:
      Samples of shape ``shape`` (and the :class:`ODEInfo` if ``return_info``).
    """
    check_kind(prediction)
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2 or any(d < 1 for d in shape):
        raise ValueError(f"shape must be (batch, ...) with positive sizes; got {shape}")
    _check_times("t_min", t_min, "t_max", t_max)
    _check_tols(rtol, atol, max_steps)
    if x_init is not None and tuple(np.shape(x_init)) != shape:
        raise ValueError(f"x_init has shape {tuple(np.shape(x_init))}, expected shape {shape}")
    if x_init is None and key is None:
        raise ValueError("sample_ode_adaptive needs a PRNG key unless x_init is given")
    x, info = _solve(model, key, shape, x_init, sample_offset, t_max, t_min, rtol, atol,
                     max_steps, process, prediction, cond, final_denoise)
    _warn_if_failed(info, "sample_ode_adaptive")
    return (x, info) if return_info else x


def encode_ode(
    model: Callable,
    x: Array,
    *,
    process: Process,
    prediction: str = "eps",
    t_min: float = 1e-5,
    t_max: float = 1.0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    cond: Any = None,
    max_steps: int = 10_000,
    return_info: bool = False,
):
    """Encode data into PF-ODE latents: integrate forward from ``t_min`` to ``t_max``.

    The deterministic, invertible encoding of Song et al. 2021, sec. 4.3 ("uniquely
    identifiable encoding"). Decode with ``sample_ode_adaptive(..., x_init=latent)`` using the
    same ``t_min``/``t_max``; the round trip is exact up to the solver tolerance.

    Args:
      model: ``model(x, t, cond) -> prediction``.
      x: data, shape ``(B, ...)``, taken as the state at ``t_min``.
      process: the noise process.
      prediction: what ``model`` returns.
      t_min: start time (data end), in ``(0, 1)``.
      t_max: end time (noise end), in ``(t_min, 1]``.
      rtol: relative tolerance.
      atol: absolute tolerance.
      cond: conditioning passed to ``model``.
      max_steps: maximum number of step attempts.
      return_info: also return the :class:`ODEInfo` of the solve.

    Returns:
      Latents ``x_{t_max}`` of the same shape (and the :class:`ODEInfo` if ``return_info``).
    """
    check_kind(prediction)
    shape = _check_batch("x", x)
    _check_times("t_min", t_min, "t_max", t_max)
    _check_tols(rtol, atol, max_steps)
    z, info = _solve(model, None, shape, x, 0, t_min, t_max, rtol, atol, max_steps, process,
                     prediction, cond, False)
    _warn_if_failed(info, "encode_ode")
    return (z, info) if return_info else z
