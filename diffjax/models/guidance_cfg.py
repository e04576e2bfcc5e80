"""Classifier-free guidance exactly as the DiT / SiT / LightningDiT references apply it.

Ho & Salimans 2022 (arXiv 2207.12598), eq. 6, in the DiT convention
(facebookresearch/DiT ``models.py :: DiT.forward_with_cfg``):

    guided = uncond + scale * (cond - uncond)

so ``scale = 1`` is the plain conditional model and ``scale = 0`` the unconditional one (Ho &
Salimans' ``w`` is ``scale - 1``). The conditional and unconditional halves run as **one**
batched forward (labels ``[y, null]``).

Channel quirk (spec_modern.md section 1.2): the references guide only ``model_out[:, :3]`` (a
GLIDE RGB leftover); the other channels -- the 4th latent channel and the learned-variance
channels -- come from each half's own output. ``channels=3`` reproduces that (DiT's FID 2.27
recipe: scale 1.5 on 3 channels); ``channels='all'`` (the default) guides every *prediction*
channel: all channels, or the first half with ``learned_variance=True`` (variance channels are
never guided; they are taken from the conditional half).

``interval=(t_lo, t_hi)`` (diffjax time, data at 0) applies guidance only where
``t_lo <= t <= t_hi`` per sample (guidance interval, Kynkaanniemi et al. 2024; LightningDiT's
``cfg_interval_start = s`` in SiT time is ``t_hi = 1 - s``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

Array = Any

__all__ = ["classifier_free_guidance", "combine_cfg"]


def combine_cfg(cond_out: Array, uncond_out: Array, scale: Array, channels: str | int = "all",
                learned_variance: bool = False) -> Array:
    """Guide the first ``channels`` channels (last axis) of two outputs; the rest are taken from
    ``cond_out``. ``scale`` may be a scalar or per-sample ``(B,)``."""
    c = cond_out.shape[-1]
    if channels == "all":
        k = c // 2 if learned_variance else c
    elif isinstance(channels, int) and 0 < channels <= c:
        k = channels
    else:
        raise ValueError(f"channels must be 'all' or an int in [1, {c}]; got {channels!r}")
    s = jnp.asarray(scale, cond_out.dtype)
    s = s.reshape(s.shape + (1,) * (cond_out.ndim - s.ndim)) if s.ndim else s
    guided = uncond_out[..., :k] + s * (cond_out[..., :k] - uncond_out[..., :k])
    return jnp.concatenate([guided, cond_out[..., k:]], axis=-1) if k < c else guided


def classifier_free_guidance(model: Callable, scale: float = 1.0, *, channels: str | int = "all",
                             null_label: int | None = None, learned_variance: bool = False,
                             interval: tuple[float, float] = (0.0, 1.0)):
    """Wrap a class-conditional network with classifier-free guidance, DiT convention
    (``scale`` = w', 1 = no guidance), one batched forward for both halves.

    ``null_label`` defaults to ``model.null_label`` (set by :func:`as_denoiser`). Returns the
    library's single CFG wrapper, :class:`diffjax.guidance.ClassifierFreeGuidance`.
    """
    from diffjax.guidance import ClassifierFreeGuidance

    if null_label is None:
        null_label = getattr(model, "null_label", None)
        if null_label is None:
            raise ValueError("null_label is required (the model does not expose one)")
    return ClassifierFreeGuidance(model, scale, tuple(float(v) for v in interval), "scale",
                                  int(null_label), channels, bool(learned_variance))
