"""Plain diffusion as a :class:`~diffjax.methods.Method`: a denoising loss and a scan sampler.

Every classic recipe trains this way (DDPM, Ho et al. 2020; improved DDPM, Nichol & Dhariwal
2021; NCSN, Song & Ermon 2019; score SDEs, Song et al. 2021; EDM, Karras et al. 2022; flow
matching / SiT, Lipman et al. 2023, Ma et al. 2024): the loss is one of
:mod:`diffjax.losses` bound to the network, and sampling is
:func:`diffjax.samplers.sample` over a grid with a step, optionally through classifier-free
guidance (Ho & Salimans 2022, eq. 6). iDDPM's importance sampling of ``L_vlb`` (Nichol &
Dhariwal 2021, sec. 3.3, eq. 18) keeps its loss history in ``state.extra['resampler']``.

This module is also the worked example of adding a method (``docs/design.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from diffjax import samplers as S
from diffjax.guidance import ClassifierFreeGuidance
from diffjax.methods.base import Method, Setup, no_extra
from diffjax.samplers.driver import Step

__all__ = ["Sampling", "diffusion", "sampling_model"]


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How plain diffusion samples.

    Attributes:
      grid: time points ``t_0 > ... > t_N`` (:mod:`diffjax.grids`).
      step: a sampler step (:mod:`diffjax.samplers`).
      prediction: what the network predicts (``eps``, ``x0``, ``v``, ``score``, ``velocity``).
      learned_variance: the network also outputs iDDPM's variance interpolation.
      clip_x0: clip ``x0_hat`` to ``[-clip_x0, clip_x0]`` (DDPM's ``clip_denoised``) or None.
      x_init: ``'prior'`` (``sigma(t_0) z``) or ``'uniform'`` (NCSN's start, Song & Ermon 2019:
        ``U[lo, hi]^d`` per sample, ``x_init_range``).
      x_init_range: ``(lo, hi)`` of the uniform start.
      guidance: classifier-free guidance scale, DiT convention (1 = none); traced, so a new
        value does not recompile.
      guidance_channels: ``'all'`` or the number of leading channels guided (DiT's 3).
    """

    grid: Any
    step: Step
    prediction: str = "eps"
    learned_variance: bool = False
    clip_x0: float | None = None
    x_init: str = "prior"
    x_init_range: tuple = (-1.0, 1.0)
    guidance: float = 1.0
    guidance_channels: Any = "all"

    def __post_init__(self):
        if self.x_init not in ("prior", "uniform"):
            raise ValueError(f"x_init must be 'prior' or 'uniform'; got {self.x_init!r}")


def sampling_model(setup: Setup, params, sampling: Sampling, *, guided: bool = True):
    """The bound network a sampler calls, wrapped in classifier-free guidance when
    ``sampling.guidance != 1`` and ``guided`` (a likelihood wants the plain model)."""
    model = setup.network.bind(params)
    if guided and float(sampling.guidance) != 1.0:
        if not setup.num_classes:
            raise ValueError(f"guidance={sampling.guidance} needs a class-conditional network "
                             "(num_classes)")
        ch = sampling.guidance_channels
        model = ClassifierFreeGuidance(model, float(sampling.guidance), (0.0, 1.0), "scale",
                                       int(setup.num_classes), ch if ch == "all" else int(ch),
                                       bool(sampling.learned_variance))
    return model


def diffusion(setup: Setup, *, loss: Callable, sampling: Sampling,
              loss_kwargs: dict | None = None, resampler: Any = None) -> Method:
    """Plain diffusion training and sampling.

    Args:
      setup: the network, process, data shape and label count.
      loss: a per-example loss of :mod:`diffjax.losses` (``ddpm_loss``, ``edm_loss``, ...),
        called as ``loss(model, key, x0, process=, prediction=, cond=, **loss_kwargs)``.
      sampling: the sampler (:class:`Sampling`); ``sampling.prediction`` is also what the
        loss trains the network to predict.
      loss_kwargs: the loss's own keyword arguments (weighting, reductions, ...).
      resampler: iDDPM's :class:`~diffjax.losses.LossSecondMomentResampler` to draw DDPM
        indices from the loss history, or ``None`` (uniform).

    Returns:
      The :class:`~diffjax.methods.Method`.
    """
    net, process = setup.network, setup.process
    kw = dict(loss_kwargs or {})
    prediction = sampling.prediction

    def loss_fn(params, key, batch, state):
        k_loss, k_drop = jax.random.split(key)
        model = net.bind(params, train=True, key=k_drop)
        extra = dict(kw)
        if resampler is not None:  # indices drawn from the current loss history
            extra["t_sampler"] = resampler.time_sampler(state.extra["resampler"])
        return loss(model, k_loss, batch["image"], process=process, prediction=prediction,
                    cond=setup.labels(batch), **extra)

    def sample(params, key, n, cond=None, offset=0):
        shape = (int(n),) + setup.x_shape
        x_init = None
        if sampling.x_init == "uniform":  # one uniform draw per sample key
            lo, hi = sampling.x_init_range
            keys = S.per_sample_keys(jax.random.fold_in(key, 7), shape[0], offset)
            x_init = jax.vmap(lambda k: jax.random.uniform(k, shape[1:], jnp.float32, lo,
                                                           hi))(keys)
        return S.sample(sampling_model(setup, params, sampling), key, shape, sampling.grid,
                        sampling.step, process=process, prediction=prediction, cond=cond,
                        learned_variance=sampling.learned_variance, x_init=x_init,
                        clip_x0=sampling.clip_x0, sample_offset=offset)

    init_extra, update_extra = no_extra, None
    if resampler is not None:
        init_extra = lambda: {"resampler": resampler.init()}

        def update_extra(extra, aux):  # aux holds the global batch: no all-gather needed
            return {**extra, "resampler": resampler.update(extra["resampler"], aux["index"],
                                                           aux["unweighted"])}

    nfe = (len(sampling.grid) - 1) * int(getattr(sampling.step, "nfe", 1))
    nfe *= 2 if float(sampling.guidance) != 1.0 else 1
    return Method("diffusion", loss_fn, sample, init_extra=init_extra, nfe=nfe,
                  update_extra=update_extra)
