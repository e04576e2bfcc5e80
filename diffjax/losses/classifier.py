"""Noise-aware classifier training for classifier guidance (ADM).

Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis" (arXiv 2105.05233),
section 4: guidance needs ``log p_phi(y | x_t, t)`` at every noise level, so the classifier is
trained on *noised* images ``x_t = q_sample(x0, t)`` with ``t`` drawn like the diffusion loss's
(openai/guided-diffusion ``scripts/classifier_train.py``: ``t`` from the uniform schedule sampler
when ``--noised``, ``t = 0`` on clean images otherwise; ``F.cross_entropy(..., reduction='none')``
per example). Its minimiser is the Bayes noisy posterior ``p(y | x_t, t)``: the cross-entropy
``E_{t, x0, y, eps}[-log p_phi(y | x_t, t)]`` is, for each ``(x_t, t)``, the cross-entropy of
``p_phi(. | x_t, t)`` against the true ``p(. | x_t, t)`` (Gibbs' inequality), which is what
:class:`diffjax.guidance.ClassifierGuidance` needs.

The loss follows the other losses' contract (:mod:`diffjax.losses.diffusion`): pure, per-example
``(B,)``, ``aux`` with ``'t'``, ``'index'``, ``'weight'``, ``'unweighted'``, plus ``'accuracy'``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from diffjax.losses import timesteps as ts_lib
from diffjax.losses.diffusion import as_batch, draw_noised
from diffjax.processes import DiscreteVP, Process

Array = Any

__all__ = ["noisy_classifier_loss", "default_classifier_t_sampler"]


def default_classifier_t_sampler(process: Process, t_max: float | None = None,
                                 eps: float = 1e-5) -> ts_lib.TimeSampler:
    """The diffusion loss's time draw, optionally restricted to ``t <= t_max``.

    :class:`~diffjax.processes.DiscreteVP`: ADM's uniform index ``i ~ U{0..T'-1}`` at
    ``t = (i + 1) / T`` with ``T' = floor(t_max T)`` (``T' = T`` without ``t_max``; guided-diffusion
    ``UniformSampler``); other processes: ``t ~ U(eps, t_max)`` (score_sde's draw).

    Args:
      process: the noise process.
      t_max: largest time drawn, in ``(0, 1]`` (``None``: 1). Restricting the classifier to
        the less noisy times spends its capacity where ``p(y | x_t)`` is far from the prior
        (near ``t = 1`` the posterior is the class prior whatever ``x_t`` is).
      eps: smallest time of the continuous draw.
    """
    if t_max is not None and not 0.0 < float(t_max) <= 1.0:
        raise ValueError(f"t_max must lie in (0, 1]; got {t_max}")
    if isinstance(process, DiscreteVP):
        T = process.num_steps
        top = T if t_max is None else int(float(t_max) * T + 1e-6)
        if top < 1:
            raise ValueError(f"t_max={t_max} is below the first DDPM step 1/T = {1.0 / T}")

        def draw(key, batch):
            # U{0..top-1} with t = (i + 1) / T: the DDPM index convention of the whole library
            ts = ts_lib.uniform_discrete(key, batch, num_steps=top)
            return ts._replace(t=(ts.index.astype(jnp.float32) + 1.0) / T)

        return draw
    return functools.partial(ts_lib.uniform_continuous, eps=eps,
                             t_max=1.0 if t_max is None else float(t_max))


def noisy_classifier_loss(classifier: Callable, key: Array, x0: Array, labels: Array, *,
                          process: Process, t_sampler: ts_lib.TimeSampler | None = None,
                          t_max: float | None = None, noised: bool = True,
                          label_smoothing: float = 0.0, t: Array | None = None,
                          noise: Array | None = None) -> tuple[Array, dict]:
    """Cross-entropy of a time-conditioned classifier on noised data (ADM section 4).

    ``loss_b = w_imp(t_b) * CE(softmax(classifier(x_t, t)), y_b)`` with
    ``x_t = alpha(t) x0 + sigma(t) eps`` (guided-diffusion ``classifier_train.py``:
    ``diffusion.q_sample`` at ``t`` from the schedule sampler, ``F.cross_entropy``), and with
    ``label_smoothing = e`` the target ``(1 - e) onehot(y) + e / K`` (Szegedy et al. 2016,
    sec. 7; not used by ADM, whose default is 0).

    Args:
      classifier: ``classifier(x_t, t) -> (B, K)`` logits with ``t`` of shape ``(B,)`` in
        diffjax time (data at ``t = 0``). A network trained on another time input is wrapped
        with its adapter, e.g. ``diffjax.models.as_denoiser(ADMClassifier(...), 'ddpm_index')``
        (ADM's classifier takes the DDPM index); the same callable then serves
        :class:`diffjax.guidance.LogitsClassifier` at sampling time.
      key: PRNG key (split into a time key and a noise key, as the diffusion losses do).
      x0: clean data ``(B, ...)``.
      labels: int class labels ``(B,)``.
      process: the noise process.
      t_sampler: ``t_sampler(key, B) -> TimeSample``; default
        :func:`default_classifier_t_sampler` (``t`` drawn like the diffusion loss's).
      t_max: restrict the default draw to ``t <= t_max`` (not with ``t_sampler``).
      noised: ``False`` trains on clean data at ``t = 0`` (guided-diffusion ``--noised False``;
        diffjax's ``t = 0`` is clean data, which ``'ddpm_index'`` maps to index ``-1``).
      label_smoothing: ``e`` in ``[0, 1)``.
      t: fixed times (scalar or ``(B,)``) instead of a draw (evaluation per noise level).
      noise: fixed ``eps`` of ``x0``'s shape.

    Returns:
      ``(loss, aux)``: per-example loss ``(B,)``; ``aux`` holds ``'t'``, ``'index'``,
      ``'weight'``, ``'unweighted'`` (the cross-entropy before the importance weight),
      ``'accuracy'`` (per-example top-1 hit, float ``(B,)``: ADM logs its mean) and
      ``'log_probs'`` (``(B, K)``).
    """
    x0 = as_batch(x0)
    B = x0.shape[0]
    labels = jnp.asarray(labels)
    if labels.shape != (B,) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integer class ids of shape (batch,) = ({B},); got "
                         f"{labels.dtype} {labels.shape}")
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1); got {label_smoothing}")
    if t_max is not None and t_sampler is not None:
        raise ValueError("t_max restricts the default time draw; give either t_max or "
                         "t_sampler, not both")
    if not noised:
        if t is not None or t_sampler is not None or t_max is not None:
            raise ValueError("noised=False trains on clean data at t = 0; it takes no t, "
                             "t_sampler or t_max")
        t = jnp.zeros((B,), jnp.float32)
    if t is None and t_sampler is None:
        t_sampler = default_classifier_t_sampler(process, t_max)
    ts, _, x_t = draw_noised(key, x0, process=process, t_sampler=t_sampler, t=t, noise=noise)
    if not noised:
        x_t = x0  # sigma(0) = 0 for every process, but skip the 0 * eps arithmetic anyway
    logits = jnp.asarray(classifier(x_t, ts.t))
    if logits.ndim != 2 or logits.shape[0] != B:
        raise ValueError(f"classifier must return logits of shape (batch, classes) = ({B}, K); "
                         f"got {logits.shape}")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    k = logp.shape[-1]
    target = jax.nn.one_hot(labels, k, dtype=jnp.float32)
    if label_smoothing:
        target = (1.0 - label_smoothing) * target + label_smoothing / k
    ce = -jnp.sum(target * logp, axis=-1)
    acc = (jnp.argmax(logp, axis=-1) == labels).astype(jnp.float32)
    aux = {"t": ts.t, "index": ts.index, "weight": ts.weight, "unweighted": ce,
           "accuracy": acc, "log_probs": logp}
    return ce * ts.weight, aux
