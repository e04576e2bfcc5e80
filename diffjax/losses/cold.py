"""Cold Diffusion's restoration loss (Bansal et al. 2022, arXiv 2208.09392, eq. 2).

``min_theta E_{x0, s} || R_theta(D(x0, s), s) - x0 ||`` with the L1 norm (the reference's
``loss_type='l1'`` default; ``'l2'`` optional). The step is drawn as the reference's
``forward`` does: a 0-based index ``t ~ U{0, ..., T-1}`` that means ``s = t + 1`` degradation
steps (``q_sample`` applies kernels ``0..t``) and is fed to the network as ``t``. In diffjax
time the network gets ``s / T``; with ``time_input='ddpm_index'`` and ``num_timesteps=T`` that
is the reference's ``t`` again.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffjax.degradations import quantize_8bit

__all__ = ["cold_loss", "LOSS_TYPES"]

LOSS_TYPES = ("l1", "l2")


def cold_loss(model, key, x0, degradation, *, loss_type: str = "l1", cond: Any = None,
              aux: Any = None):
    """Per-example restoration loss.

    Args:
      model: ``R(x_s, t, cond) -> x0_hat`` with ``t = s / T`` of shape ``(B,)``.
      key: PRNG key (the step draw, and ``aux`` when the degradation draws it).
      x0: clean batch ``(B, H, W, C)``.
      degradation: a :mod:`diffjax.degradations` operator ``D(x0, s, aux)``.
      loss_type: ``'l1'`` (mean absolute error, the paper's) or ``'l2'`` (mean squared error).
      cond: passed to the model.
      aux: the degradation's auxiliary input (animorphosis' other images); drawn with
        ``degradation.draw_aux`` when ``None`` and the degradation needs one.

    Returns:
      ``(loss (B,), aux_dict)`` with the drawn ``'s'`` and ``'t'``. With a ``discrete``
      degradation the degraded input is quantised to 8 bits, as the reference's ``q_sample``.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}; got {loss_type!r}")
    T = degradation.num_steps
    B = x0.shape[0]
    k_t, k_aux = jax.random.split(key)
    s = jax.random.randint(k_t, (B,), 0, T) + 1  # the reference's t ~ U{0..T-1}, s = t + 1
    if aux is None and degradation.needs_aux:
        aux = degradation.draw_aux(k_aux, x0)
    x_s = degradation(x0, s, aux)
    if getattr(degradation, "discrete", False):
        x_s = quantize_8bit(x_s)
    x_s = jax.lax.stop_gradient(x_s)
    t = s.astype(jnp.float32) / T
    pred = model(x_s, t, cond)
    err = pred - x0
    per = jnp.abs(err) if loss_type == "l1" else err**2
    loss = jnp.mean(per.reshape(B, -1), axis=1)
    return loss, {"s": s, "t": t}
