"""Adversarial losses as pure functions: non-saturating and hinge GAN losses, R1, lazy reg.

All losses take discriminator *logits* and return per-example values (shape ``(B,)``); the
caller averages. The two families:

* Non-saturating (Goodfellow et al. 2014, sec. 3; the form StyleGAN2 and DDGAN train):
  ``L_D = softplus(-D(x_real)) + softplus(D(x_fake))`` (``-log sigmoid`` of the logit on real,
  ``-log(1 - sigmoid)`` on fake) and ``L_G = softplus(-D(x_fake))``.
* Hinge (Lim & Ye 2017; Miyato et al. 2018, eq. 16-17): ``L_D = relu(1 - D(x_real)) +
  relu(1 + D(x_fake))``, ``L_G = -D(x_fake)``.

R1 (Mescheder, Geiger & Nowozin 2018, eq. 9) penalises the discriminator's gradient on real
data, ``(gamma / 2) E ||grad_x D(x)||^2``; :func:`r1_penalty` returns the per-example squared
norm, computed exactly with ``jax.vjp`` (one backward pass through ``D``, which is then
differentiated again by the caller's ``jax.grad``). Lazy regularisation (Karras et al. 2020,
StyleGAN2 sec. 3.1) applies the penalty only every ``k`` steps, multiplied by ``k`` so that its
expected strength is unchanged; :func:`lazy_weight` gives that weight as a traced scalar.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["d_loss_nonsaturating", "g_loss_nonsaturating", "d_loss_hinge", "g_loss_hinge",
           "r1_penalty", "lazy_weight", "D_LOSSES", "G_LOSSES"]


def _logits(x, name):
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be per-example logits of shape (B,); got {x.shape}")
    return x


def d_loss_nonsaturating(real_logits, fake_logits) -> jax.Array:
    """``softplus(-D(real)) + softplus(D(fake))`` per example (the binary cross-entropy of the
    discriminator on logits; Goodfellow et al. 2014, eq. 1)."""
    real, fake = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    return jax.nn.softplus(-real) + jax.nn.softplus(fake)


def g_loss_nonsaturating(fake_logits) -> jax.Array:
    """``softplus(-D(fake))``: the non-saturating generator loss ``-log sigmoid(D(G(z)))``
    (Goodfellow et al. 2014, sec. 3), whose gradient does not vanish when D wins."""
    return jax.nn.softplus(-_logits(fake_logits, "fake_logits"))


def d_loss_hinge(real_logits, fake_logits) -> jax.Array:
    """``relu(1 - D(real)) + relu(1 + D(fake))`` (Miyato et al. 2018, eq. 16)."""
    real, fake = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    return jax.nn.relu(1.0 - real) + jax.nn.relu(1.0 + fake)


def g_loss_hinge(fake_logits) -> jax.Array:
    """``-D(fake)`` (Miyato et al. 2018, eq. 17)."""
    return -_logits(fake_logits, "fake_logits")


#: ``loss=`` names of the GAN methods -> discriminator / generator loss
D_LOSSES = {"nonsaturating": d_loss_nonsaturating, "hinge": d_loss_hinge}
G_LOSSES = {"nonsaturating": g_loss_nonsaturating, "hinge": g_loss_hinge}


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], x_real: jax.Array) -> jax.Array:
    """Per-example ``||grad_x D(x)||^2`` at the real data (Mescheder et al. 2018, eq. 9).

    ``d_fn(x) -> (B,)`` must treat examples independently (no batch statistics), so the
    gradient of ``sum_i D(x_i)`` with respect to ``x_i`` is example ``i``'s own gradient; one
    ``vjp`` with a cotangent of ones gives all of them. The result is differentiable, so
    ``jax.grad`` of ``(gamma / 2) * mean(r1_penalty(...))`` with respect to D's parameters is
    the exact R1 gradient (double backward), not a finite-difference surrogate.

    Args:
      d_fn: the discriminator as a function of its (real) input only.
      x_real: the real batch ``(B, ...)`` (the gradient is taken at these points).

    Returns:
      ``(B,)`` squared gradient norms (multiply by ``gamma / 2`` and average for R1).
    """
    x_real = jnp.asarray(x_real)
    logits, vjp = jax.vjp(d_fn, x_real)
    if logits.shape != x_real.shape[:1]:
        raise ValueError(f"d_fn must return per-example logits of shape {x_real.shape[:1]}; "
                         f"got {logits.shape}")
    (grad,) = vjp(jnp.ones_like(logits))
    return jnp.sum(jnp.square(grad).reshape(grad.shape[0], -1), axis=-1)


def lazy_weight(step, every: int, *, scale_by_interval: bool = True) -> jax.Array:
    """The weight of a lazily applied regulariser at (0-based) ``step``.

    ``every`` (>= 1) is the interval ``k``: the weight is 0 except on steps with ``step % k
    == 0``, where it is ``k`` (StyleGAN2's lazy regularisation, Karras et al. 2020 sec. 3.1,
    which keeps the penalty's expected strength) or 1 with ``scale_by_interval=False`` (what
    the DDGAN reference code does with ``--lazy_reg``). ``every = 1`` is the penalty on every
    step with weight 1.
    """
    every = int(every)
    if every < 1:
        raise ValueError(f"every (the lazy-regularisation interval) must be >= 1; got {every}")
    due = jnp.asarray(step, jnp.int32) % every == 0
    return jnp.where(due, float(every) if scale_by_interval else 1.0, 0.0).astype(jnp.float32)
