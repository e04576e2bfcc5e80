"""Denoising losses: one mechanism (:func:`denoising_loss`) and paper-named wrappers.

Every loss here is a pure function

    loss_fn(model, key, x0, *, process, ..., cond=None) -> (per_example_loss, aux)

* ``model(x_t, t, cond)`` returns a prediction of the declared kind (``prediction``:
  ``'eps'``, ``'x0'``, ``'v'``, ``'score'``, ``'velocity'``) with ``t`` of shape ``(B,)`` in
  diffjax time (``x_t = alpha(t) x0 + sigma(t) eps``, data at ``t = 0``).
* ``per_example_loss`` has shape ``(B,)``: the reduction over the batch is the caller's
  (``jnp.mean`` reproduces every reference; EDM's ``loss.sum() / batch`` is the same). It
  already includes the time-sampler's importance weight.
* ``aux`` is a dict with ``'t'`` (B,), ``'index'`` (the sampler's integer draw or ``None``),
  ``'weight'`` (importance weight, B) and ``'unweighted'`` (the loss before the importance
  weight: what :meth:`~diffjax.losses.timesteps.LossSecondMomentResampler.update` wants).

One recipe covers the papers: draw ``t`` (a time sampler of :mod:`.timesteps`) and ``eps``,
noise ``x0``, express the model output and the truth in a common ``target`` space with
:mod:`diffjax.parameterization`, square, reduce over non-batch axes (``pixel_reduce``) and
weight by ``weighting(t, process)``:

==============  ===========  ============  =====================  =================================
loss            target       reduction     weight                 t sampler
==============  ===========  ============  =====================  =================================
DDPM L_simple   eps          mean          1                      uniform index
DDIM            eps          sum           1                      antithetic index
NCSN            score        half_sum      sigma^anneal_power     NCSN label
score_sde       score        half_sum      sigma^2 or g(t)^2      U(1e-5, 1)
EDM             x0           sum           (s^2+sd^2)/(s sd)^2    log-normal sigma
flow / SiT      velocity     mean          1                      U(0, 1) or logit-normal
==============  ===========  ============  =====================  =================================

``pixel_reduce`` is explicit because the reference repositories differ (the optimum is the
same; only the loss scale, hence the effective learning rate, changes): ``'mean'`` (DDPM
``meanflat``), ``'sum'`` (DDIM, EDM), ``'half_sum'`` (NCSN, score_sde ``reduce_mean=False``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from diffjax.losses import timesteps as ts_lib
from diffjax.losses.timesteps import TimeSample
from diffjax.parameterization import check_kind, from_x0_eps, to_x0_eps
from diffjax.processes import DiscreteVP, Process

Array = Any
Weighting = Callable[[Array, Process], Array]

__all__ = [
    "PIXEL_REDUCTIONS",
    "reduce_pixels",
    "draw_noised",
    "denoising_loss",
    "sigma_power_weighting",
    "diffusion_sq_weighting",
    "edm_lambda",
    "edm_weighting",
    "ddpm_loss",
    "ddim_loss",
    "ncsn_loss",
    "score_sde_loss",
    "edm_loss",
    "flow_matching_loss",
]

PIXEL_REDUCTIONS = ("mean", "sum", "half_sum")


# ----------------------------------------------------------------------------------------------
# Shared pieces (also used by diffjax.losses.vlb)
# ----------------------------------------------------------------------------------------------


def check_pixel_reduce(pixel_reduce: str) -> str:
    if pixel_reduce not in PIXEL_REDUCTIONS:
        raise ValueError(
            f"unknown pixel_reduce {pixel_reduce!r}; expected one of {PIXEL_REDUCTIONS}"
        )
    return pixel_reduce


def reduce_pixels(x: Array, pixel_reduce: str = "mean") -> Array:
    """Reduce ``x`` of shape ``(B, ...)`` over its non-batch axes to ``(B,)``.

    ``'mean'`` (DDPM/iDDPM ``mean_flat``), ``'sum'`` (DDIM, EDM) or ``'half_sum'``
    (``0.5 * sum``: NCSN, score_sde with ``reduce_mean=False``).
    """
    check_pixel_reduce(pixel_reduce)
    axes = tuple(range(1, x.ndim))
    if pixel_reduce == "mean":
        return jnp.mean(x, axis=axes)
    s = jnp.sum(x, axis=axes)
    return 0.5 * s if pixel_reduce == "half_sum" else s


def as_batch(x0: Array, name: str = "x0") -> Array:
    """``x0`` as a floating array of shape ``(B, ...)`` with at least one non-batch axis."""
    x0 = jnp.asarray(x0)
    if x0.ndim < 2 or x0.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (batch, ...) with at least one non-batch axis "
            f"(use (B, 1) for scalar data); got shape {x0.shape}"
        )
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.float32)
    return x0


def bcast(v: Array, x: Array) -> Array:
    """Reshape a per-example ``(B,)`` array to broadcast against ``x`` of shape ``(B, ...)``."""
    return jnp.reshape(v, (v.shape[0],) + (1,) * (x.ndim - 1))


def draw_noised(key: Array, x0: Array, *, process: Process,
                t_sampler: ts_lib.TimeSampler | None, t: Array | None = None,
                noise: Array | None = None) -> tuple[TimeSample, Array, Array]:
    """Draw ``(TimeSample, eps, x_t)`` for a batch: the random part shared by all losses.

    ``key`` is split once into a time key and a noise key, so two losses called with the
    same key see the same ``t`` and ``eps`` (common random numbers).

    Args:
      key: PRNG key.
      x0: clean data ``(B, ...)``.
      process: the noise process.
      t_sampler: ``t_sampler(key, B) -> TimeSample``; ignored if ``t`` is given.
      t: optional fixed times, scalar or ``(B,)`` (weights 1, no index).
      noise: optional fixed ``eps`` of ``x0``'s shape.
    """
    B = x0.shape[0]
    k_t, k_eps = jax.random.split(key)
    if t is not None:
        t = jnp.asarray(t, jnp.float32)
        if t.ndim == 0:
            t = jnp.full((B,), t)
        if t.shape != (B,):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({B},); got {t.shape}")
        ts = TimeSample(t, jnp.ones((B,), jnp.float32), None)
    else:
        if t_sampler is None:
            raise ValueError("t_sampler is required when no fixed t is given")
        ts = t_sampler(k_t, B)
        if not isinstance(ts, TimeSample) or jnp.shape(ts.t) != (B,):
            raise ValueError(
                "t_sampler(key, batch) must return a TimeSample with t of shape (batch,)"
            )
    if noise is None:
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    else:
        eps = jnp.asarray(noise, x0.dtype)
        if eps.shape != x0.shape:
            raise ValueError(f"noise must have x0's shape {x0.shape}; got {eps.shape}")
    x_t = process.marginal(x0, ts.t, eps)
    return ts, eps, x_t


def check_output(out: Array, x0: Array, what: str = "model output") -> Array:
    if out.shape != x0.shape:
        raise ValueError(
            f"{what} must have x0's shape {x0.shape}; got {out.shape} (learned-variance models "
            "with 2C output channels go through diffjax.losses.vlb.hybrid_loss)"
        )
    return out


def in_target_space(out: Array, x_t: Array, t: Array, process: Process, prediction: str,
                    target: str) -> Array:
    """Express a ``prediction``-kind output as a ``target``-kind quantity (identity if equal)."""
    if prediction == target:
        return out
    x0_hat, eps_hat = to_x0_eps(prediction, out, x_t, t, process)
    return from_x0_eps(target, x0_hat, eps_hat, x_t, t, process)


def _aux(ts: TimeSample, unweighted: Array) -> dict:
    return {"t": ts.t, "index": ts.index, "weight": ts.weight, "unweighted": unweighted}


# ----------------------------------------------------------------------------------------------
# The one mechanism
# ----------------------------------------------------------------------------------------------


def denoising_loss(model: Callable, key: Array, x0: Array, *, process: Process, prediction: str,
                   t_sampler: ts_lib.TimeSampler | None = None, target: str = "eps",
                   weighting: Weighting | float | None = None, pixel_reduce: str = "mean",
                   cond: Any = None, t: Array | None = None,
                   noise: Array | None = None) -> tuple[Array, dict]:
    """Weighted regression of the model onto ``target`` at a random noise level.

    ``loss_b = w_imp(t_b) * weighting(t_b) * reduce_pixels((T(model) - T*)^2)`` where ``T``
    maps the model's ``prediction`` to the ``target`` kind and ``T*`` is the target of the
    true ``(x0, eps)`` (Kingma et al. 2021, sec. 5 and Kingma & Gao 2023, eq. 2: every
    diffusion loss is a weighted denoising loss; the weightings differ by a change of target).

    Args:
      model: ``model(x_t, t, cond) -> prediction`` of ``x0``'s shape.
      key: PRNG key (split into a time key and a noise key, see :func:`draw_noised`).
      x0: clean data ``(B, ...)``.
      process: the noise process.
      prediction: what ``model`` returns.
      t_sampler: ``t_sampler(key, B) -> TimeSample`` (:mod:`diffjax.losses.timesteps`).
      target: the kind the squared error is measured in.
      weighting: ``weighting(t, process) -> (B,)``, a constant, or ``None`` (1).
      pixel_reduce: ``'mean'``, ``'sum'`` or ``'half_sum'`` over non-batch axes.
      cond: conditioning passed to the model.
      t: fixed times (scalar or ``(B,)``) instead of ``t_sampler`` (evaluation per level).
      noise: fixed ``eps`` instead of a draw.

    Returns:
      ``(loss, aux)``: per-example loss ``(B,)`` and the aux dict of the module docstring.
    """
    check_kind(prediction)
    check_kind(target)
    check_pixel_reduce(pixel_reduce)
    x0 = as_batch(x0)
    ts, eps, x_t = draw_noised(key, x0, process=process, t_sampler=t_sampler, t=t, noise=noise)
    out = check_output(model(x_t, ts.t, cond), x0)
    pred = in_target_space(out, x_t, ts.t, process, prediction, target)
    truth = from_x0_eps(target, x0, eps, x_t, ts.t, process)
    per = reduce_pixels(jnp.square(pred - truth), pixel_reduce)
    if weighting is not None:
        w = weighting(ts.t, process) if callable(weighting) else weighting
        per = per * w
    return per * ts.weight, _aux(ts, per)


# ----------------------------------------------------------------------------------------------
# Weightings
# ----------------------------------------------------------------------------------------------


def sigma_power_weighting(power: float) -> Weighting:
    """``lambda(t) = sigma(t)^power`` (NCSN ``anneal_power``; score_sde ``lambda = sigma^2``)."""
    return lambda t, process: process.sigma(t) ** power


def diffusion_sq_weighting(t: Array, process: Process) -> Array:
    """``lambda(t) = g(t)^2`` (score_sde ``likelihood_weighting``; Song et al. 2021b, thm. 1)."""
    return process.diffusion_sq(t)


def edm_lambda(sigma: Array, sigma_data: float = 0.5) -> Array:
    """EDM's loss weight ``lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2`` (Karras et al.
    2022, Table 1); with ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``, ``lambda c_out^2 = 1``."""
    sigma = jnp.asarray(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_weighting(sigma_data: float = 0.5) -> Weighting:
    """:func:`edm_lambda` of EDM's ``sigma = sigma(t) / alpha(t)`` (any process)."""
    return lambda t, process: edm_lambda(process.sigma_tilde(t), sigma_data)


# ----------------------------------------------------------------------------------------------
# Paper-named wrappers
# ----------------------------------------------------------------------------------------------


def _num_steps(process, who):
    if not isinstance(process, DiscreteVP):
        raise ValueError(
            f"{who} draws DDPM indices and needs a DiscreteVP process (or pass t_sampler); got "
            f"{type(process).__name__}"
        )
    return process.num_steps


def ddpm_loss(model, key, x0, *, process, prediction="eps", pixel_reduce="mean",
              antithetic=False, t_sampler=None, cond=None, t=None, noise=None):
    """DDPM's ``L_simple = E ||eps - eps_theta(x_t, t)||^2`` (Ho et al. 2020, eq. 14).

    Reference: hojonathanho/diffusion ``GaussianDiffusion2.training_losses`` (``loss_type='mse'``:
    ``meanflat`` of the squared error, ``t ~ U{0..T-1}``). The error is measured on ``eps``
    whatever the model predicts. ``antithetic=True`` and ``pixel_reduce='sum'`` give DDIM's
    ``noise_estimation_loss`` (:func:`ddim_loss`).

    Args:
      process: a :class:`~diffjax.processes.DiscreteVP` (unless ``t_sampler`` is given).
      antithetic: draw index pairs ``i``, ``T - 1 - i`` (DDIM).
      (others as :func:`denoising_loss`)
    """
    if t_sampler is None and t is None:
        T = _num_steps(process, "ddpm_loss")
        fn = ts_lib.antithetic_discrete if antithetic else ts_lib.uniform_discrete
        t_sampler = functools.partial(fn, num_steps=T)
    return denoising_loss(model, key, x0, process=process, prediction=prediction,
                          t_sampler=t_sampler, target="eps", pixel_reduce=pixel_reduce,
                          cond=cond, t=t, noise=noise)


def ddim_loss(model, key, x0, *, process, prediction="eps", pixel_reduce="sum", cond=None,
              t=None, noise=None):
    """DDIM's training loss (Song et al. 2021a): L_simple with a per-example *sum* over pixels
    and antithetic indices (ermongroup/ddim ``functions/losses.py:noise_estimation_loss``)."""
    return ddpm_loss(model, key, x0, process=process, prediction=prediction,
                     pixel_reduce=pixel_reduce, antithetic=True, cond=cond, t=t, noise=noise)


def ncsn_loss(model, key, x0, *, process, prediction="score", num_levels=10, anneal_power=2.0,
              pixel_reduce="half_sum", t_sampler=None, cond=None, t=None, noise=None):
    """NCSN's multi-scale denoising score matching (Song & Ermon 2019, eq. 5-6).

    ``loss = sigma_i^anneal_power * 1/2 ||s_theta(x~, sigma_i) + (x~ - x) / sigma_i^2||^2``
    (sum over pixels) with the label ``i ~ U{0..L-1}``; reference ermongroup/ncsn
    ``losses/dsm.py:anneal_dsm_score_estimation`` (``anneal_power = 2``). NCSN's geometric
    levels ``sigma_1 = 1 .. sigma_L = 0.01`` are ``process = VE(sigma_min=0.01, sigma_max=1.0)``
    with ``num_levels = 10`` (label 0 at ``t = 1``, :func:`~.timesteps.ncsn_levels`).
    ``sigma`` in the weight is ``process.sigma(t)``.
    """
    if t_sampler is None:
        t_sampler = functools.partial(ts_lib.ncsn_levels, num_levels=num_levels)
    return denoising_loss(model, key, x0, process=process, prediction=prediction,
                          t_sampler=t_sampler, target="score",
                          weighting=sigma_power_weighting(anneal_power),
                          pixel_reduce=pixel_reduce, cond=cond, t=t, noise=noise)


def score_sde_loss(model, key, x0, *, process, prediction="score", likelihood_weighting=False,
                   reduce_mean=False, pixel_reduce=None, eps=1e-5, t_sampler=None, cond=None,
                   t=None, noise=None):
    """Continuous denoising score matching of Song et al. 2021 (eq. 7).

    Default (``likelihood_weighting=False``, ``lambda = sigma_t^2``):
    ``||sigma_t s_theta(x_t, t) + z||^2``; likelihood weighting (Song et al. 2021b):
    ``g(t)^2 ||s_theta + z / sigma_t||^2`` with ``g^2 = process.diffusion_sq``. ``t ~ U(eps, 1)``.
    Reference: yang-song/score_sde ``losses.py:get_sde_loss_fn``. Its ``reduce_mean`` flag
    picks the pixel reduction: ``False`` (CIFAR-10 default) = ``0.5 * sum``, ``True`` = mean
    (no 1/2). ``pixel_reduce`` may be given instead of ``reduce_mean`` (not both).
    """
    if pixel_reduce is None:
        pixel_reduce = "mean" if reduce_mean else "half_sum"
    elif reduce_mean:
        raise ValueError("give either reduce_mean or pixel_reduce, not both")
    if t_sampler is None:
        t_sampler = functools.partial(ts_lib.uniform_continuous, eps=eps)
    weighting = diffusion_sq_weighting if likelihood_weighting else sigma_power_weighting(2.0)
    return denoising_loss(model, key, x0, process=process, prediction=prediction,
                          t_sampler=t_sampler, target="score", weighting=weighting,
                          pixel_reduce=pixel_reduce, cond=cond, t=t, noise=noise)


def edm_loss(model, key, x0, *, process, prediction="x0", sigma_data=0.5, p_mean=-1.2, p_std=1.2,
             pixel_reduce="sum", t_sampler=None, weighting=None, cond=None, t=None, noise=None):
    """EDM's loss ``lambda(sigma) ||D(y + n; sigma) - y||^2`` (Karras et al. 2022, eq. 8, Table 1).

    ``ln sigma ~ N(P_mean, P_std^2)``, ``lambda = (sigma^2 + sd^2) / (sigma sd)^2``, summed over
    pixels (NVlabs/edm ``training/loss.py:EDMLoss``; the loop divides the batch sum by the
    batch size). ``model`` is an ``'x0'`` model, typically
    :class:`~diffjax.parameterization.EDMPrecond`; then the loss equals
    ``||F_theta - (y - c_skip x) / c_out||^2`` because ``lambda c_out^2 = 1``. For a VP
    process the same loss acts on EDM's scaled view ``x / alpha`` with ``sigma = sigma/alpha``.
    EDM's ``VELoss`` / ``VPLoss`` baselines (``lambda = 1 / sigma^2``): pass ``t_sampler`` (e.g.
    :func:`~.timesteps.log_uniform_sigma`) and ``weighting=lambda t, p: p.sigma_tilde(t) ** -2``.
    """
    if t_sampler is None:
        t_sampler = functools.partial(ts_lib.edm_lognormal, process=process, p_mean=p_mean,
                                      p_std=p_std)
    if weighting is None:
        weighting = edm_weighting(sigma_data)
    return denoising_loss(model, key, x0, process=process, prediction=prediction,
                          t_sampler=t_sampler, target="x0", weighting=weighting,
                          pixel_reduce=pixel_reduce, cond=cond, t=t, noise=noise)


def flow_matching_loss(model, key, x0, *, process, prediction="velocity", t_sampler=None,
                       pixel_reduce="mean", cond=None, t=None, noise=None):
    """Flow matching / SiT velocity loss ``||v_theta(x_t, t) - (alpha_dot x0 + sigma_dot eps)||^2``.

    (Lipman et al. 2023; Liu et al. 2023; Ma et al. 2024, SiT ``Transport.training_losses``,
    mean over dims.) For :class:`~diffjax.processes.Linear` the target is ``eps - x0``. The
    velocity is in diffjax time (data at 0): a SiT-convention network (data at ``t = 1``)
    predicts ``-v`` at ``1 - t``: wrap it as ``lambda x, t, c: -net(x, flip_time(t), c)``
    (:func:`diffjax.adapters.flip_time`); the loss value is unchanged. Default ``t ~ U(0, 1)``;
    pass ``functools.partial(timesteps.logit_normal, mean=0., std=1.)`` for SD3/LightningDiT.
    """
    if t_sampler is None:
        t_sampler = functools.partial(ts_lib.uniform_continuous, eps=0.0)
    return denoising_loss(model, key, x0, process=process, prediction=prediction,
                          t_sampler=t_sampler, target="velocity", pixel_reduce=pixel_reduce,
                          cond=cond, t=t, noise=noise)
