"""Consistency distillation (CD) and consistency training (CT, iCT) as methods.

Song, Dhariwal, Chen, Sutskever 2023 ("Consistency Models", arXiv 2303.01469, Alg. 2 and 3)
and Song & Dhariwal 2023 ("Improved Techniques for Training Consistency Models", arXiv
2310.14189). The maths is in :mod:`diffjax.losses.consistency` and
:func:`diffjax.samplers.few_step.consistency_sample`; this module binds a network to it.

The network must be EDM-preconditioned on the :class:`~diffjax.processes.EDM` process
(``Network(precond='edm')``): its raw part is re-wrapped in
:class:`~diffjax.parameterization.ConsistencyPrecond`, whose skip coefficients give the
boundary condition ``f(x, sigma_min) = x`` (paper eq. 3 and Appendix C). CD distils a trained
EDM denoiser (the teacher, which also initialises the student: the paper's fine-tuning); CT
needs no teacher and follows the schedules ``N(k)`` and ``mu(k)`` of the paper's Appendix C
(``schedule='adaptive'``) or iCT's doubling ``N(k)`` with no target EMA (``schedule='ict'``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from diffjax.losses import consistency as cm
from diffjax.methods.base import Method, Setup, ema_if
from diffjax.parameterization import ConsistencyPrecond
from diffjax.processes import EDM
from diffjax.samplers import few_step
from diffjax.train.ema import EMASpec

__all__ = ["consistency_function", "consistency_distillation", "consistency_training",
           "lpips_metric"]


def consistency_function(network, params, *, train: bool = False, key=None):
    """``f_theta``: the raw part of an EDM-preconditioned network re-wrapped in
    :class:`~diffjax.parameterization.ConsistencyPrecond` (``f(x, sigma_min) = x``), as CD/CT
    train and sample it; ``key`` is the dropout key when ``train``. A pytree (traced weights)."""
    process = network.process
    if network.precond != "edm" or not isinstance(process, EDM):
        raise ValueError("consistency models need an EDM-preconditioned network on the EDM "
                         "process (model.precond='edm', process.name='edm'); got precond="
                         f"{network.precond!r} on {type(process).__name__}")
    return ConsistencyPrecond(network.raw(params, train=train, key=key), process,
                              network.sigma_data, sigma_min=process.sigma_min)


def lpips_metric(path: str, *, pooling: str = "avg", resize: bool = True):
    """``(metric(state), init_extra())`` of an LPIPS-VGG16 distance (Zhang et al. 2018), the
    CD/CT metric of Song et al. 2023 on CIFAR-10 / ImageNet-64.

    ``path`` is an LPIPS ``.npz`` (:func:`diffjax.metrics.lpips.save_lpips_npz`; nothing is
    downloaded); ``pooling='avg'`` is what the reference trains with (piq's
    ``replace_pooling=True``), ``'max'`` the ``lpips`` package's; ``resize`` is the reference's
    bilinear resize to 224 below 256 pixels. The weights ride in ``state.extra['lpips']``: jit
    arguments, not 59 MB of constants folded into the compiled step. The file is read once,
    lazily, so building the method for sampling never reads it.
    """
    from flax import nnx

    from diffjax.metrics import lpips as lp

    cache = {}

    def loaded():
        if not cache:
            with jax.ensure_compile_time_eval():  # may first be called inside the trainer's jit
                cache["g"], cache["w"] = nnx.split(lp.load_lpips(path, pooling=pooling))
        return cache

    metric = lambda state: lp.lpips_metric(nnx.merge(loaded()["g"], state.extra["lpips"]),
                                           resize=resize)
    return metric, (lambda: {"lpips": loaded()["w"]})


def _metric(setup: Setup, metric: str, lpips_weights: str, lpips_pooling: str,
            lpips_resize: bool):
    if metric != "lpips":
        return (lambda state: metric), (lambda: {})
    if not lpips_weights:
        raise ValueError("metric='lpips' needs lpips_weights: the path of an LPIPS-VGG16 .npz "
                         "(diffjax.metrics.lpips.save_lpips_npz); diffjax never downloads "
                         "weights")
    if setup.x_shape[-1] != 3:
        raise ValueError(f"metric='lpips' compares RGB images (..., 3); this model's input is "
                         f"{setup.x_shape}")
    return lpips_metric(lpips_weights, pooling=lpips_pooling, resize=bool(lpips_resize))


def _sampler(setup: Setup, sample_ts, sample_grid: int, clip: bool):
    ts = tuple(int(v) for v in sample_ts or (0,))
    if len(ts) > 1 and (any(b <= a for a, b in zip(ts, ts[1:], strict=False))
                        or ts[-1] >= sample_grid):
        raise ValueError(f"sample_ts must increase inside [0, sample_grid - 1 = "
                         f"{sample_grid - 1}]; got {list(ts)}")

    def sample(params, key, n, cond=None, offset=0):
        f = consistency_function(setup.network, params)
        return few_step.consistency_sample(f, key, (int(n),) + setup.x_shape,
                                           process=setup.process, ts=ts, steps=sample_grid,
                                           cond=cond, clip=clip, sample_offset=offset)

    return sample, max(1, len(ts) - 1)


def _common(setup: Setup):
    consistency_function(setup.network, None)  # checks precond and process now
    return setup.process


def consistency_distillation(
        setup: Setup, *, teacher: Callable[[], tuple[Any, Any]], num_scales: int = 18,
        solver: str = "heun", metric: str = "l2", weighting: str = "uniform",
        sigma_data: float = 0.5, target_ema: str = "target", target_decay: float | None = None,
        lpips_weights: str = "", lpips_pooling: str = "avg", lpips_resize: bool = True,
        sample_ts=(0,), sample_grid: int = 40, clip: bool = True) -> Method:
    """Consistency distillation (Song et al. 2023, Alg. 2).

    Args:
      setup: an EDM-preconditioned network on the EDM process.
      teacher: ``() -> (teacher_model_of(params), teacher_params)``: a function binding
        teacher weights into an ``'x0'`` model on the same process, and the weights. Called
        once, lazily (sampling never needs the teacher); the weights also initialise the
        student and ride in ``state.extra['teacher']``.
      num_scales: ``N`` of the Karras discretisation (paper: 18 on CIFAR-10, 40 on ImageNet-64).
      solver: the teacher's ODE step, ``'heun'``, ``'euler'`` or ``'ddim'``.
      metric: ``'l2'``, ``'l1'``, ``'pseudo_huber'`` or ``'lpips'`` (with ``lpips_weights``,
        ``lpips_pooling``, ``lpips_resize``; :func:`lpips_metric`).
      weighting: ``lambda(sigma)`` (``'uniform'`` in the paper).
      sigma_data: the data standard deviation of the EDM scalings.
      target_ema: the EMA name of ``theta^-`` (``''``: ``theta^- = theta``, the paper's
        CIFAR-10 CD).
      target_decay: ``mu`` of that EMA when the method defines it (else the user's EMA).
      sample_ts: ``(0,)`` for one step, else increasing indices into a ``sample_grid``-point
        Karras grid (Alg. 1's multistep sampler).
      clip: clamp samples to ``[-1, 1]`` (the reference).
    """
    process = _common(setup)
    metric_of, lpips_extra = _metric(setup, metric, lpips_weights, lpips_pooling, lpips_resize)
    kw = dict(process=process, weighting=weighting, sigma_data=float(sigma_data))
    cache = {}

    def get_teacher():
        if "t" not in cache:
            # may first be called inside the trainer's jitted init: evaluate eagerly so the
            # cache holds arrays, never tracers of that trace
            with jax.ensure_compile_time_eval():
                bind, params = teacher()
                cache["t"] = bind, jax.tree_util.tree_map(jnp.asarray, params)
        return cache["t"]

    def f_apply(params, x, t, cond, key):
        return consistency_function(setup.network, params, train=True, key=key)(x, t, cond)

    def loss(params, key, batch, state):
        tmodel = get_teacher()[0](state.extra["teacher"])
        tp = state.ema[target_ema] if target_ema else None
        return cm.consistency_loss(f_apply, params, tp, key, batch["image"],
                                   num_scales=int(num_scales), mode="cd", teacher=tmodel,
                                   solver=solver, cond=setup.labels(batch),
                                   metric=metric_of(state), **kw)

    sample, nfe = _sampler(setup, sample_ts, sample_grid, clip)
    return Method("cd", loss, sample,
                  init_extra=lambda: {"teacher": get_teacher()[1], **lpips_extra()},
                  ema_specs=ema_if(target_ema, target_decay),
                  reads_emas=(target_ema,) if target_ema else (), nfe=nfe,
                  init_params=lambda key: get_teacher()[1])


def consistency_training(
        setup: Setup, *, schedule: str = "adaptive", start_scales: int | None = None,
        end_scales: int | None = None, start_ema: float = 0.9, total_steps: int | None = None,
        level_sampling: str = "uniform", p_mean: float = -1.1, p_std: float = 2.0,
        metric: str = "l2", weighting: str = "uniform", sigma_data: float = 0.5,
        target_ema: str = "target", lpips_weights: str = "", lpips_pooling: str = "avg",
        lpips_resize: bool = True, sample_ts=(0,), sample_grid: int = 40,
        clip: bool = True) -> Method:
    """Consistency training (Song et al. 2023, Alg. 3) and improved CT (Song & Dhariwal 2023).

    Args:
      setup: an EDM-preconditioned network on the EDM process.
      schedule: ``'adaptive'``: the original ``N(k)`` and target EMA ``mu(k)`` (paper Appendix
        C; ``start_scales`` s0 = 2, ``end_scales`` s1 = 150, ``start_ema`` mu0 = 0.9);
        ``'ict'``: iCT's doubling ``N(k)`` (s0 = 10, s1 = 1280) with ``theta^- = theta``
        (``target_ema=''``).
      total_steps: ``K`` of the schedules (default: the run's length).
      level_sampling: ``'uniform'`` or iCT's ``'lognormal'`` (``p_mean``, ``p_std``).
      metric, weighting, sigma_data, lpips_*: as :func:`consistency_distillation` (iCT:
        ``metric='pseudo_huber'``, ``weighting='ict'``).
      target_ema: the EMA name of ``theta^-`` that follows ``mu(k)`` (``''``: none).
      sample_ts, sample_grid, clip: the sampler, as :func:`consistency_distillation`.
    """
    process = _common(setup)
    metric_of, lpips_extra = _metric(setup, metric, lpips_weights, lpips_pooling, lpips_resize)
    total = int(total_steps or setup.num_train_steps)
    if schedule == "adaptive":
        s0, s1 = int(start_scales or 2), int(end_scales or 150)
        sched = cm.ct_schedule_fn(total, s0, s1, float(start_ema))
        max_scales = s1 + 1
    elif schedule == "ict":
        if target_ema:
            raise ValueError("schedule='ict' has no target EMA (theta^- = theta); set "
                             f"target_ema='' (got {target_ema!r})")
        sched = cm.ict_schedule_fn(total, int(start_scales or 10), int(end_scales or 1280))
        max_scales = sched.max_scales
    else:
        raise ValueError(f"schedule must be 'adaptive' or 'ict'; got {schedule!r}")
    kw = dict(process=process, weighting=weighting, sigma_data=float(sigma_data),
              level_sampling=level_sampling, p_mean=float(p_mean), p_std=float(p_std),
              max_scales=max_scales)

    def f_apply(params, x, t, cond, key):
        return consistency_function(setup.network, params, train=True, key=key)(x, t, cond)

    def loss(params, key, batch, state):
        tp = state.ema[target_ema] if target_ema else None
        return cm.consistency_loss(f_apply, params, tp, key, batch["image"],
                                   num_scales=sched.num_scales(state.step), mode="ct",
                                   cond=setup.labels(batch), metric=metric_of(state), **kw)

    sample, nfe = _sampler(setup, sample_ts, sample_grid, clip)
    # target_ema = '': theta^- = stopgrad(theta) (mu = 0, improved CT)
    emas = {target_ema: EMASpec(decay_fn=sched.mu)} if target_ema else {}
    return Method("ct", loss, sample, init_extra=lpips_extra, ema_specs=emas,
                  reads_emas=tuple(emas), nfe=nfe)
