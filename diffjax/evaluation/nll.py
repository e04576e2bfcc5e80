"""Likelihood evaluation of a model on data: negative log-likelihood in bits per dimension.

Two different quantities, chosen by the process (they bound the likelihood in different ways
and are **not** comparable to each other):

* :class:`~diffjax.processes.DiscreteVP` (DDPM / iDDPM): the discrete variational bound
  ``L_T + sum_t L_t`` with the discretised Gaussian decoder over all ``T`` terms (Ho et al.
  2020, "Denoising Diffusion Probabilistic Models", eq. 5 and 13; Nichol & Dhariwal 2021,
  "Improved Denoising Diffusion Probabilistic Models", whose ``calc_bpd_loop`` this is:
  :func:`diffjax.losses.vlb.calc_bpd_loop`). It upper-bounds the NLL of the 8-bit data.
* continuous-time processes: the probability-flow ODE likelihood (Song et al. 2021,
  "Score-Based Generative Modeling through Stochastic Differential Equations", appendix D.2;
  :func:`diffjax.likelihood.log_likelihood`) with the Hutchinson divergence estimate. Images
  are uniformly dequantised (``(k + U) / 256``) and 7 bits are added, the offset of 8-bit data
  scaled to ``[-1, 1]`` (:func:`diffjax.likelihood.logp_to_bits_per_dim`), so the number
  upper-bounds the discrete NLL of the 8-bit data, as in score_sde.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["evaluate_bits_per_dim"]


def evaluate_bits_per_dim(model: Callable, x, *, process, prediction: str = "eps", key=None,
                          learned_variance: bool = False, cond=None, batch_size: int = 64,
                          image_data: bool = True, clip_x0: float | None = None) -> dict:
    """Negative log-likelihood of ``model`` on data ``x``, in bits per dimension.

    The discrete VLB for :class:`~diffjax.processes.DiscreteVP`, the PF-ODE likelihood for
    continuous processes (see the module docstring). The randomness of datapoint ``i`` (the
    VLB's noise, the dequantisation noise and the Hutchinson probe) is drawn from
    ``fold_in(key, i)`` only, so the result does not depend on ``batch_size``.

    Args:
      model: ``model(x, t, cond) -> prediction``; must treat datapoints independently.
      x: data ``(N, ...)``: images in ``[-1, 1]`` (8-bit values ``2 k / 255 - 1``), or points
        with ``image_data=False``.
      process: the noise process the model was trained with.
      prediction: what ``model`` returns.
      key: PRNG key (default ``jax.random.key(0)``).
      learned_variance: (VLB) the model also outputs the iDDPM variance interpolation
        (``variance='learned'``); otherwise DDPM's fixed ``'large'`` variance ``beta_t``.
      cond: conditioning ``(N, ...)`` or ``None``.
      batch_size: datapoints per compiled call.
      image_data: (PF-ODE) dequantise and add the 7-bit offset; ``False`` (points) uses ``x``
        as is, with no offset.
      clip_x0: (VLB) clip the predicted ``x0`` to ``[-clip_x0, clip_x0]``.

    Returns:
      ``{'bpd': mean, 'bpd_sem': standard error of the mean (NaN for one datapoint),
      'bpd_method': 'vlb' | 'pf_ode', 'bpd_num': N}``.

    Raises:
      ValueError: ``x`` is not a non-empty batch.
    """
    import jax
    import jax.numpy as jnp

    from diffjax import likelihood as LK
    from diffjax.losses.vlb import calc_bpd_loop
    from diffjax.processes import DiscreteVP
    from diffjax.samplers.driver import per_sample_keys

    x = np.asarray(x, np.float32)
    if x.ndim < 2 or len(x) < 1:
        raise ValueError(f"x must be a non-empty batch (N, ...); got shape {x.shape}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    key = jax.random.key(0) if key is None else key
    dims = int(np.prod(x.shape[1:]))
    discrete = isinstance(process, DiscreteVP)
    variance = "learned" if learned_variance else "large"

    def one_vlb(k, xi, ci):  # one datapoint, as a batch of one
        ci = jax.tree_util.tree_map(lambda a: a[None], ci)
        return calc_bpd_loop(model, k, xi[None], process=process, prediction=prediction,
                             cond=ci, clip_x0=clip_x0, variance=variance)[0][0]

    vlb = jax.jit(jax.vmap(one_vlb))
    dequantize = jax.jit(jax.vmap(
        lambda k, xi: LK.uniform_dequantize(jax.random.fold_in(k, 1), xi, centered=True)))
    offset = LK.OFFSET_CENTERED if image_data else 0.0
    vals = []
    for s in range(0, len(x), batch_size):
        xb = jnp.asarray(x[s:s + batch_size])
        cb = None if cond is None else jax.tree_util.tree_map(
            lambda a, s=s: jnp.asarray(np.asarray(a)[s:s + batch_size]), cond)
        keys = per_sample_keys(key, len(xb), s)
        if discrete:
            vals.append(np.asarray(vlb(keys, xb, cb)))
            continue
        xd = dequantize(keys, xb) if image_data else xb
        # log_likelihood draws datapoint s + i's probe from fold_in(key, s + i)
        res = LK.log_likelihood(model, xd, key, process=process, prediction=prediction,
                                cond=cb, sample_offset=s)
        vals.append(np.asarray(LK.logp_to_bits_per_dim(res.logp, dims, offset)))
    v = np.concatenate(vals).astype(np.float64)
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"bpd": float(v.mean()), "bpd_sem": sem, "bpd_method": "vlb" if discrete else
            "pf_ode", "bpd_num": len(v)}
