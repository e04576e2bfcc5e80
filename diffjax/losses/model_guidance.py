"""Model guidance, MG (Tang, Bao, Chen, Guo 2025, "Diffusion Models without Classifier-free
Guidance", arXiv 2502.12154).

Convention: t = 0 data, t = 1 noise, ``x_t = (1 - t) x + t eps``, flow target
``u = eps - x`` -- exactly diffjax's :class:`~diffjax.processes.Linear` process and its
``'velocity'`` prediction, so models here are ordinary diffjax velocity models
``model(x, t, labels)``. The guidance window ``t < mg_high`` is in this convention (the
noisiest 25 % get no guidance); flipping time guides the wrong end (spec §8d).

Target (spec §8a; reference ``train.py :: main`` MG block, read through the fork
``Peterande/Diffusion-wo-CFG``): ``u_MG = u + w(t) sg(v_ema(x_t, t, y) - v_ema(x_t, t, null))``
with ``w(t) = (omega - 1) 1[t < mg_high]``, from ``start_step`` on, for rows whose label is
not dropped. The guidance network is the EMA model (the paper writes the online net under
stop-gradient; spec Appendix B #6 follows the code).

Fixed point. With a *fixed* guide that returns the true ``v_c``, ``v_u`` the regression target
has mean ``v_c + (omega - 1)(v_c - v_u)``: CFG at scale ``omega``. But the guide is the model
itself (its EMA), while the null-label rows keep learning ``v_u``; at convergence
``v(c) = v_c + (omega - 1)(v(c) - v_u)``, i.e.
``v(c) = v_u + (v_c - v_u) / (2 - omega)``: CFG at scale ``1 / (2 - omega)`` (1.82 for the
default 1.45), and no fixed point for ``omega >= 2`` (the targets grow without bound). Measured
(``experiments/few_step_learning_checks.py``, 1-D two classes): a trained MG model is within a
few % RMS of CFG at ``1 / (2 - omega)`` and ~23 % away from CFG at ``omega``; with
``omega = 2`` its velocities run away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from diffjax.losses.diffusion import as_batch, bcast

Array = Any

__all__ = ["mg_drop_mask", "mg_targets", "mg_loss"]


def mg_drop_mask(key: Array, batch: int, drop_prob: float = 0.1) -> Array:
    """Rows whose label becomes null: the first ``round_stoch(drop_prob B)`` rows
    (``floor(p B)`` plus one with probability ``frac(p B)``)."""
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"drop_prob must lie in [0, 1]; got {drop_prob!r}")
    n = drop_prob * batch
    lo = int(n // 1)
    extra = jax.random.bernoulli(key, n - lo).astype(jnp.int32)
    return jnp.arange(batch) < lo + extra


def mg_targets(ema_model: Callable, key: Array, x0: Array, labels: Array, *, num_classes: int,
               step: int | Array, omega: float | Array = 1.45, mg_high: float = 0.75,
               start_step: int = 100_000, drop_prob: float = 0.1,
               t: Array | None = None) -> dict:
    """Inputs and targets of one MG batch.

    Args:
      ema_model: EMA velocity model ``ema_model(x_t, t, labels)`` (no gradient flows).
      key: PRNG key (time, noise, stochastic rounding of the drop count).
      x0: data ``(B, ...)``. ``labels``: int ``(B,)``.
      num_classes: the null label id.
      step: the training step (may be traced); MG is off while ``step < start_step``.
      omega: guidance scale ``omega`` (``w = omega - 1``); a ``(B,)`` array for scale-aware
        models.
      mg_high: guidance only where ``t < mg_high``.
      t: optional fixed times ``(B,)`` (default ``U[0, 1]``).

    Returns:
      dict with ``x_t``, ``t``, ``labels`` (nulls in dropped rows), ``target``, ``u`` (plain
      flow target), ``guided`` (bool (B,): rows whose target was guided), ``delta``.
    """
    x0 = as_batch(x0)
    B = x0.shape[0]
    labels = jnp.asarray(labels)
    if labels.shape != (B,):
        raise ValueError(f"labels must have shape ({B},); got {labels.shape}")
    if not 0.0 <= mg_high <= 1.0:
        raise ValueError(f"mg_high must lie in [0, 1]; got {mg_high!r}")
    k_t, k_e, k_d = jax.random.split(key, 3)
    if t is None:
        t = jax.random.uniform(k_t, (B,), x0.dtype)
    eps = jax.random.normal(k_e, x0.shape, x0.dtype)
    x_t = bcast(1.0 - t, x0) * x0 + bcast(t, x0) * eps
    u = eps - x0
    drop = mg_drop_mask(k_d, B, drop_prob)
    y = jnp.where(drop, num_classes, labels)
    v_c = ema_model(x_t, t, labels)
    v_u = ema_model(x_t, t, jnp.full_like(labels, num_classes))
    delta = jax.lax.stop_gradient(v_c - v_u)
    guided = (~drop) & (t < mg_high) & (jnp.asarray(step) >= start_step)
    w = jnp.where(guided, jnp.asarray(omega, x0.dtype) - 1.0, 0.0)
    return {"x_t": x_t, "t": t, "labels": y, "target": u + bcast(w, u) * delta, "u": u,
            "guided": guided, "delta": delta}


def mg_loss(model: Callable, ema_model: Callable, key: Array, x0: Array, labels: Array,
            **kwargs) -> tuple[Array, dict]:
    """MG loss ``mean ||v_theta(x_t, t, y) - u_MG||^2`` per example (spec §8a).

    ``model`` is the online velocity model, ``ema_model`` the EMA one (pass e.g.
    ``functools.partial(apply, ema_params)``); ``kwargs`` go to :func:`mg_targets`.
    """
    tg = mg_targets(ema_model, key, x0, labels, **kwargs)
    pred = model(tg["x_t"], tg["t"], tg["labels"])
    per = jnp.mean((pred - tg["target"]) ** 2, axis=tuple(range(1, pred.ndim)))
    aux = dict(tg)
    aux.update({"index": None, "weight": jnp.ones_like(per), "unweighted": per})
    return per, aux
