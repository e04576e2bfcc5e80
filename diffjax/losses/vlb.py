"""The variational bound of discrete DDPM chains (Ho et al. 2020; Nichol & Dhariwal 2021).

For a :class:`~diffjax.processes.DiscreteVP` with code index ``i in {0..T-1}`` at
``t = (i + 1) / T`` (paper step ``i + 1``), the negative ELBO in bits per dimension is

    L = L_T + sum_{i >= 1} L_i + L_0,
    L_i = KL(q(x_{i-1} | x_i, x0) || p_theta(x_{i-1} | x_i))       (Ho et al. 2020, eq. 5)
    L_0 = -log p_theta(x0 | x_1)  (discretised Gaussian decoder, eq. 13)
    L_T = KL(q(x_T | x0) || N(0, I))

each averaged over dimensions and divided by ``ln 2`` (reference: openai/improved-diffusion
``gaussian_diffusion.py``: ``_vb_terms_bpd``, ``_prior_bpd``, ``calc_bpd_loop``;
``losses.py``: ``normal_kl``, ``approx_standard_normal_cdf``,
``discretized_gaussian_log_likelihood``; hojonathanho/diffusion ``diffusion_utils_2.py``).

Tables (:func:`ddpm_tables`) are computed from the process's ``log alpha_bar`` in the working
dtype (float64 when ``x0`` is float64 and x64 is enabled), exactly as the reference's:
``beta_tilde_i = beta_i (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i)``; its log is *clipped*
(``beta_tilde_0 := beta_tilde_1``); DDPM's ``fixedlarge`` variance is ``beta_i`` except
``sigma_0^2 := beta_tilde_1`` (``log(append(beta_tilde[1], beta[1:]))``, "better decoder
log-likelihood"); iDDPM's ``LEARNED_RANGE`` variance is
``log Sigma = frac log beta + (1 - frac) log beta_tilde_clipped``, ``frac = (v + 1) / 2``.

The same posterior in continuous form is :func:`diffjax.samplers.ddpm.posterior` (evaluated
at ``t = (i + 1) / T``, ``s = i / T``); the tables agree with it to float32 precision.

Losses here follow :mod:`diffjax.losses.diffusion`: ``(per_example_loss (B,), aux)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from diffjax.adapters import ddpm_index_to_t
from diffjax.losses import timesteps as ts_lib
from diffjax.losses.diffusion import (
    as_batch,
    bcast,
    check_output,
    check_pixel_reduce,
    draw_noised,
    reduce_pixels,
)
from diffjax.losses.timesteps import TimeSample
from diffjax.parameterization import check_kind, from_x0_eps, split_learned_variance, to_x0_eps
from diffjax.processes import DiscreteVP

Array = Any

__all__ = [
    "VARIANCES",
    "DECODERS",
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_likelihood",
    "DDPMTables",
    "ddpm_tables",
    "q_posterior",
    "learned_range_log_variance",
    "model_log_variance",
    "MeanVariance",
    "p_mean_variance",
    "vb_terms_bpd",
    "prior_bpd",
    "calc_bpd_loop",
    "hybrid_loss",
    "vlb_loss",
]

VARIANCES = ("small", "large", "learned")
DECODERS = ("discretized", "gaussian")
_LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------
# Densities
# ----------------------------------------------------------------------------------------------


def normal_kl(mean1: Array, logvar1: Array, mean2: Array, logvar2: Array) -> Array:
    """Elementwise ``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` in nats.

    ``0.5 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2))``
    (iDDPM ``losses.py:normal_kl``).
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x: Array) -> Array:
    """``Phi(x) ~ 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (max error ~1.8e-4).

    The reference's approximation (Page 1977), kept so bits/dim match the papers.
    """
    return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Array, *, means: Array, log_scales: Array) -> Array:
    """Log-probability of 8-bit data in ``[-1, 1]`` under a discretised Gaussian, elementwise.

    Bin ``k`` is ``x_k +- 1/255`` with ``x_k = -1 + 2k/255``; the edge bins are open
    (``(-inf, -1 + 1/255]`` and ``[1 - 1/255, inf)``), so the 256 bins sum to one. Logs are
    clamped at ``1e-12`` as the reference (Ho et al. 2020, eq. 13; iDDPM
    ``losses.py:discretized_gaussian_log_likelihood``). ``log_scales`` is the log *std*.
    """
    centered = x - means
    inv_stdv = jnp.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
    log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
    return jnp.where(x < -0.999, log_cdf_plus,
                     jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def gaussian_log_likelihood(x: Array, *, means: Array, log_scales: Array) -> Array:
    """Continuous Gaussian log-density, elementwise (for continuous data; ``log_scales`` = log
    std)."""
    return (-0.5 * math.log(2.0 * math.pi) - log_scales
            - 0.5 * jnp.square(x - means) * jnp.exp(-2.0 * log_scales))


_DECODER_FNS = {"discretized": discretized_gaussian_log_likelihood,
                "gaussian": gaussian_log_likelihood}


def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {choices}")
    return value


# ----------------------------------------------------------------------------------------------
# Tables and the two Gaussians of a step
# ----------------------------------------------------------------------------------------------


class DDPMTables(NamedTuple):
    """Per-index ``(T,)`` tables of a DDPM chain (hojonathanho ``GaussianDiffusion2.__init__``)."""

    log_alpha_bar: Array  # log alpha_bar_i
    log_alpha_bar_prev: Array  # log alpha_bar_{i-1} (0 at i = 0)
    betas: Array
    log_betas: Array  # max of LEARNED_RANGE
    posterior_variance: Array  # beta_tilde (0 at i = 0)
    posterior_log_variance_clipped: Array  # log beta_tilde with i = 0 -> beta_tilde_1
    posterior_mean_coef1: Array  # multiplies x0
    posterior_mean_coef2: Array  # multiplies x_t
    log_variance_large: Array  # DDPM fixedlarge: log(append(beta_tilde[1], beta[1:]))


def _check_discrete(process) -> DiscreteVP:
    if not isinstance(process, DiscreteVP):
        raise ValueError(
            "process must be a DiscreteVP: the variational bound is defined on DDPM's discrete "
            f"chain; got {type(process).__name__}"
        )
    return process


def ddpm_tables(process: DiscreteVP, dtype=jnp.float32) -> DDPMTables:
    """Build the tables of ``process`` in ``dtype`` (traceable; cheap, ``O(T)``).

    For ``T = 1`` there is no ``beta_tilde_1``; the clipped posterior variance then uses
    ``beta_0``.
    """
    _check_discrete(process)
    la = jnp.asarray(process.log_alpha_bar).astype(dtype)
    la_prev = jnp.concatenate([jnp.zeros((1,), dtype), la[:-1]])
    log_alpha = la - la_prev
    betas = -jnp.expm1(log_alpha)
    one_m = -jnp.expm1(la)
    one_m_prev = -jnp.expm1(la_prev)
    post_var = betas * one_m_prev / one_m
    first = post_var[1:2] if la.shape[0] > 1 else betas[:1]
    return DDPMTables(
        log_alpha_bar=la,
        log_alpha_bar_prev=la_prev,
        betas=betas,
        log_betas=jnp.log(betas),
        posterior_variance=post_var,
        posterior_log_variance_clipped=jnp.log(jnp.concatenate([first, post_var[1:]])),
        posterior_mean_coef1=betas * jnp.exp(0.5 * la_prev) / one_m,
        posterior_mean_coef2=one_m_prev * jnp.exp(0.5 * log_alpha) / one_m,
        log_variance_large=jnp.log(jnp.concatenate([first, betas[1:]])),
    )


def _dtype(x):
    return jnp.promote_types(jnp.asarray(x).dtype, jnp.float32)


def _check_index(index, x):
    index = jnp.asarray(index)
    if index.shape != (x.shape[0],) or not jnp.issubdtype(index.dtype, jnp.integer):
        raise ValueError(
            f"index must be an integer array of shape (batch,) = ({x.shape[0]},); got "
            f"{index.dtype}{index.shape}"
        )
    return index


def _at(table, index, x):
    return bcast(table[index], x)


def q_posterior(process: DiscreteVP, x0: Array, x_t: Array, index: Array,
                tables: DDPMTables | None = None) -> tuple[Array, Array, Array]:
    """``q(x_{i-1} | x_i, x0) = N(c1 x0 + c2 x_i, beta_tilde_i)`` (Ho et al. 2020, eq. 6-7).

    Returns ``(mean, variance, log_variance_clipped)``; the variances are ``(B, 1, ...)``.
    """
    tab = ddpm_tables(process, _dtype(x0)) if tables is None else tables
    index = _check_index(index, x0)
    mean = _at(tab.posterior_mean_coef1, index, x0) * x0 + _at(
        tab.posterior_mean_coef2, index, x_t) * x_t
    return (mean, _at(tab.posterior_variance, index, x0),
            _at(tab.posterior_log_variance_clipped, index, x0))


def learned_range_log_variance(process: DiscreteVP, index: Array, v: Array,
                               tables: DDPMTables | None = None) -> Array:
    """iDDPM ``LEARNED_RANGE``: ``frac log beta_i + (1 - frac) log beta_tilde_i`` (clipped),
    ``frac = (v + 1) / 2`` with the raw network output ``v`` (Nichol & Dhariwal 2021, eq. 15)."""
    tab = ddpm_tables(process, _dtype(v)) if tables is None else tables
    index = _check_index(index, v)
    frac = (v + 1.0) / 2.0
    return (frac * _at(tab.log_betas, index, v)
            + (1.0 - frac) * _at(tab.posterior_log_variance_clipped, index, v))


def model_log_variance(process: DiscreteVP, index: Array, x: Array, *, variance: str,
                       v_var: Array | None = None, tables: DDPMTables | None = None) -> Array:
    """``log sigma_i^2`` of ``p_theta(x_{i-1} | x_i)`` for ``variance`` in ``VARIANCES``.

    ``'small'``: ``beta_tilde`` (clipped log); ``'large'``: ``beta`` with DDPM's quirk
    ``sigma_0^2 := beta_tilde_1``; ``'learned'``: :func:`learned_range_log_variance` of
    ``v_var``. Fixed variances come back as ``(B, 1, ...)``, learned as ``x``'s shape.
    """
    _check_choice(variance, VARIANCES, "variance")
    tab = ddpm_tables(process, _dtype(x)) if tables is None else tables
    index = _check_index(index, x)
    if variance == "small":
        return _at(tab.posterior_log_variance_clipped, index, x)
    if variance == "large":
        return _at(tab.log_variance_large, index, x)
    if v_var is None or v_var.shape != x.shape:
        raise ValueError(
            "variance='learned' needs the model's variance output v_var of x's shape "
            f"{x.shape}; got {None if v_var is None else v_var.shape}"
        )
    return learned_range_log_variance(process, index, v_var, tab)


class MeanVariance(NamedTuple):
    """``p_theta(x_{i-1} | x_i)`` and the model's reading of ``(x0, eps)``."""

    mean: Array
    log_variance: Array
    x0: Array
    eps: Array


def p_mean_variance(process: DiscreteVP, out: Array, x_t: Array, index: Array, *,
                    prediction: str = "eps", variance: str = "small",
                    clip_x0: float | None = None,
                    tables: DDPMTables | None = None) -> MeanVariance:
    """Mean and log-variance of the reverse step from a raw model output.

    The mean is the posterior mean at ``x0_hat`` (iDDPM ``p_mean_variance`` with
    ``q_posterior_mean_variance(pred_xstart, x_t)``; for ``'eps'`` it equals Ho et al. 2020,
    eq. 11). With ``variance='learned'`` ``out`` has ``2C`` last-axis channels
    (mean output, ``v``).

    Args:
      process: the DiscreteVP.
      out: model output at ``(x_t, t = (index + 1) / T)``.
      x_t: noised input ``(B, ...)``.
      index: DDPM code indices ``(B,)``.
      prediction: kind of the (mean part of the) output.
      variance: ``'small'``, ``'large'`` or ``'learned'``.
      clip_x0: clip ``x0_hat`` to ``[-clip_x0, clip_x0]`` (reference ``clip_denoised``).
      tables: precomputed :func:`ddpm_tables` (else built in ``x_t``'s dtype).
    """
    check_kind(prediction)
    _check_choice(variance, VARIANCES, "variance")
    tab = ddpm_tables(process, _dtype(x_t)) if tables is None else tables
    index = _check_index(index, x_t)
    v_var = None
    if variance == "learned":
        if out.shape[:-1] != x_t.shape[:-1] or out.shape[-1] != 2 * x_t.shape[-1]:
            raise ValueError(
                "with variance='learned' the model output must have 2C channels on the last "
                f"axis for x of shape {x_t.shape}; got {out.shape}"
            )
        out, v_var = split_learned_variance(out)
    else:
        check_output(out, x_t)
    t = ddpm_index_to_t(index, process.num_steps)
    x0_hat, eps_hat = to_x0_eps(prediction, out, x_t, t, process)
    if clip_x0 is not None:
        x0_hat = jnp.clip(x0_hat, -clip_x0, clip_x0)
    mean = (_at(tab.posterior_mean_coef1, index, x_t) * x0_hat
            + _at(tab.posterior_mean_coef2, index, x_t) * x_t)
    log_var = model_log_variance(process, index, x_t, variance=variance, v_var=v_var, tables=tab)
    return MeanVariance(mean, log_var, x0_hat, eps_hat)


# ----------------------------------------------------------------------------------------------
# Terms of the bound
# ----------------------------------------------------------------------------------------------


def vb_terms_bpd(process: DiscreteVP, x0: Array, x_t: Array, index: Array, model_mean: Array,
                 model_log_variance: Array, *, decoder: str = "discretized",
                 tables: DDPMTables | None = None) -> Array:
    """One term ``L_i`` of the bound in bits/dim, shape ``(B,)`` (iDDPM ``_vb_terms_bpd``).

    ``i >= 1``: ``KL(q(x_{i-1} | x_i, x0) || N(model_mean, exp(model_log_variance)))``;
    ``i = 0``: the decoder NLL ``-log p(x0 | x_1)``, ``decoder='discretized'`` (8-bit data in
    ``[-1, 1]``, the reference) or ``'gaussian'`` (continuous density, for continuous data).
    Both are averaged over non-batch axes and divided by ``ln 2``.
    """
    _check_choice(decoder, DECODERS, "decoder")
    tab = ddpm_tables(process, _dtype(x0)) if tables is None else tables
    index = _check_index(index, x0)
    true_mean, _, true_log_var = q_posterior(process, x0, x_t, index, tab)
    kl = reduce_pixels(normal_kl(true_mean, true_log_var, model_mean, model_log_variance)
                       + jnp.zeros_like(x0), "mean") / _LN2
    ll = _DECODER_FNS[decoder](x0, means=model_mean, log_scales=0.5 * model_log_variance)
    nll = -reduce_pixels(ll + jnp.zeros_like(x0), "mean") / _LN2
    return jnp.where(index == 0, nll, kl)


def prior_bpd(process: DiscreteVP, x0: Array, tables: DDPMTables | None = None) -> Array:
    """``L_T = KL(q(x_T | x0) || N(0, I))`` in bits/dim, shape ``(B,)`` (iDDPM ``_prior_bpd``)."""
    x0 = as_batch(x0)
    tab = ddpm_tables(process, _dtype(x0)) if tables is None else tables
    la_T = tab.log_alpha_bar[-1]
    kl = normal_kl(jnp.exp(0.5 * la_T) * x0, jnp.log(-jnp.expm1(la_T)), 0.0, 0.0)
    return reduce_pixels(kl, "mean") / _LN2


def calc_bpd_loop(model: Callable, key: Array, x0: Array, *, process: DiscreteVP,
                  prediction: str = "eps", variance: str = "large",
                  decoder: str = "discretized", clip_x0: float | None = None, cond: Any = None,
                  noise: Array | None = None) -> tuple[Array, dict]:
    """The full bound ``L_T + sum_i L_i`` in bits/dim for each example (iDDPM ``calc_bpd_loop``).

    All ``T`` terms are evaluated (one ``lax.scan``, one model call per index, a fresh
    ``x_i ~ q(x_i | x0)`` per index), so the result is an unbiased one-sample estimate of the
    bound for each ``x0``. Defaults follow DDPM's CIFAR-10 model (``eps``, ``fixedlarge``,
    discretised decoder, no clipping); iDDPM's learned-sigma models use ``variance='learned'``.

    Args:
      model: ``model(x, t, cond)``; ``2C`` output channels when ``variance='learned'``.
      key: PRNG key; index ``i`` draws its noise from ``fold_in(key, i)``.
      x0: data ``(B, ...)`` (in ``[-1, 1]`` for the discretised decoder).
      process: a DiscreteVP.
      noise: optional fixed noise ``(T, B, ...)`` (row ``i`` is index ``i``'s ``eps``), e.g.
        quadrature nodes.

    Returns:
      ``(total_bpd (B,), aux)`` with ``aux['vb']`` ``(B, T)`` (column ``i`` = ``L_i``, in
      index order; the reference stacks them in reverse), ``aux['prior']`` ``(B,)``,
      ``aux['x0_mse']`` and ``aux['eps_mse']`` ``(B, T)``.
    """
    _check_discrete(process)
    check_kind(prediction)
    _check_choice(variance, VARIANCES, "variance")
    _check_choice(decoder, DECODERS, "decoder")
    x0 = as_batch(x0)
    T, B = process.num_steps, x0.shape[0]
    tab = ddpm_tables(process, _dtype(x0))
    if noise is not None:
        noise = jnp.asarray(noise, x0.dtype)
        if noise.shape != (T,) + x0.shape:
            raise ValueError(f"noise must have shape (T,) + x0.shape = {(T,) + x0.shape}; "
                             f"got {noise.shape}")

    def step(_, xs):
        i, eps = xs
        if eps is None:
            eps = jax.random.normal(jax.random.fold_in(key, i), x0.shape, x0.dtype)
        index = jnp.full((B,), i, jnp.int32)
        la = tab.log_alpha_bar[i]
        x_t = jnp.exp(0.5 * la) * x0 + jnp.sqrt(-jnp.expm1(la)) * eps
        t = jnp.full((B,), ddpm_index_to_t(i, T))
        out = model(x_t, t, cond)
        pmv = p_mean_variance(process, out, x_t, index, prediction=prediction,
                              variance=variance, clip_x0=clip_x0, tables=tab)
        vb = vb_terms_bpd(process, x0, x_t, index, pmv.mean, pmv.log_variance,
                          decoder=decoder, tables=tab)
        x0_mse = reduce_pixels(jnp.square(pmv.x0 - x0), "mean")
        eps_mse = reduce_pixels(jnp.square(pmv.eps - eps), "mean")
        return None, (vb, x0_mse, eps_mse)

    _, (vb, x0_mse, eps_mse) = jax.lax.scan(step, None, (jnp.arange(T), noise))
    prior = prior_bpd(process, x0, tab)
    total = jnp.sum(vb, axis=0) + prior
    return total, {"vb": vb.T, "prior": prior, "x0_mse": x0_mse.T, "eps_mse": eps_mse.T}


# ----------------------------------------------------------------------------------------------
# Training losses
# ----------------------------------------------------------------------------------------------


def _index_draw(process, key, x0, t_sampler, index, noise):
    T = process.num_steps
    if index is not None:
        index = _check_index(index, x0).astype(jnp.int32)
        fixed = TimeSample(ddpm_index_to_t(index, T),
                           jnp.ones((x0.shape[0],), jnp.float32), index)
        t_sampler = lambda k, b: fixed  # noqa: E731
    elif t_sampler is None:
        t_sampler = functools.partial(ts_lib.uniform_discrete, num_steps=T)
    ts, eps, x_t = draw_noised(key, x0, process=process, t_sampler=t_sampler, noise=noise)
    if ts.index is None:
        raise ValueError("t_sampler must return DDPM indices (TimeSample.index) for VLB losses")
    return ts, eps, x_t


def _aux(ts, unweighted, **extra):
    return {"t": ts.t, "index": ts.index, "weight": ts.weight, "unweighted": unweighted, **extra}


def hybrid_loss(model: Callable, key: Array, x0: Array, *, process: DiscreteVP,
                prediction: str = "eps", lam: float = 0.001,
                t_sampler: ts_lib.TimeSampler | None = None, decoder: str = "discretized",
                pixel_reduce: str = "mean", cond: Any = None, index: Array | None = None,
                noise: Array | None = None) -> tuple[Array, dict]:
    """iDDPM's ``L_hybrid = L_simple + lam * L_vlb`` (Nichol & Dhariwal 2021, eq. 16).

    The model outputs ``2C`` channels (mean output of kind ``prediction``, variance ``v``).
    ``L_simple`` is the MSE of the mean output against its true value (``eps`` for an
    ``'eps'`` model), reduced by ``pixel_reduce``; ``L_vlb = T * L_i`` is the single-index
    bound term in bits/dim evaluated with the mean output *stop-gradiented*, so the bound
    trains only the variance. ``lam = 0.001`` equals the reference's
    ``vb * T / 1000`` (``rescale_learned_sigmas=True``); ``lam = 1 / T`` is
    ``rescale_learned_sigmas=False`` (improved-diffusion ``training_losses``, issue #114).

    Returns:
      ``(loss (B,), aux)``; ``aux`` adds ``'mse'`` and ``'vb'`` (``L_i`` in bits/dim).
    """
    _check_discrete(process)
    check_kind(prediction)
    check_pixel_reduce(pixel_reduce)
    x0 = as_batch(x0)
    T = process.num_steps
    ts, eps, x_t = _index_draw(process, key, x0, t_sampler, index, noise)
    out = model(x_t, ts.t, cond)
    if out.shape[:-1] != x0.shape[:-1] or out.shape[-1] != 2 * x0.shape[-1]:
        raise ValueError(
            "hybrid_loss needs a learned-variance model with 2C output channels on the last "
            f"axis for x0 of shape {x0.shape}; got model output shape {out.shape}"
        )
    mean_out, v = split_learned_variance(out)
    truth = from_x0_eps(prediction, x0, eps, x_t, ts.t, process)
    mse = reduce_pixels(jnp.square(mean_out - truth), pixel_reduce)
    tab = ddpm_tables(process, _dtype(x0))
    frozen = jnp.concatenate([jax.lax.stop_gradient(mean_out), v], axis=-1)
    pmv = p_mean_variance(process, frozen, x_t, ts.index, prediction=prediction,
                          variance="learned", tables=tab)
    vb = vb_terms_bpd(process, x0, x_t, ts.index, pmv.mean, pmv.log_variance, decoder=decoder,
                      tables=tab)
    per = mse + lam * T * vb
    return per * ts.weight, _aux(ts, per, mse=mse, vb=vb)


def vlb_loss(model: Callable, key: Array, x0: Array, *, process: DiscreteVP,
             prediction: str = "eps", variance: str = "learned", rescale: bool = True,
             t_sampler: ts_lib.TimeSampler | None = None, decoder: str = "discretized",
             cond: Any = None, index: Array | None = None,
             noise: Array | None = None) -> tuple[Array, dict]:
    """``L_vlb`` estimated from one index: ``T * L_i`` in bits/dim (``rescale=True``).

    iDDPM ``LossType.RESCALED_KL`` (``use_kl=True``); ``rescale=False`` gives ``L_i`` itself
    (DDPM ``loss_type='kl'``, iDDPM ``KL``). Mean and variance both receive gradients. Pair
    with :class:`~diffjax.losses.timesteps.LossSecondMomentResampler` via
    ``t_sampler=resampler.time_sampler(state)``; the returned loss includes the importance
    weight and ``aux['unweighted']`` is what ``resampler.update`` wants.
    """
    _check_discrete(process)
    check_kind(prediction)
    _check_choice(variance, VARIANCES, "variance")
    x0 = as_batch(x0)
    T = process.num_steps
    ts, eps, x_t = _index_draw(process, key, x0, t_sampler, index, noise)
    tab = ddpm_tables(process, _dtype(x0))
    pmv = p_mean_variance(process, model(x_t, ts.t, cond), x_t, ts.index, prediction=prediction,
                          variance=variance, tables=tab)
    vb = vb_terms_bpd(process, x0, x_t, ts.index, pmv.mean, pmv.log_variance, decoder=decoder,
                      tables=tab)
    per = vb * (T if rescale else 1.0)
    return per * ts.weight, _aux(ts, per, vb=vb)
