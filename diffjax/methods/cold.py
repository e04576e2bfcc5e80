"""Cold Diffusion (Bansal, Borgnia, Chu, Li, Kazemi, Huang, Goldblum, Geiping, Goldstein 2022,
arXiv 2208.09392) as a method.

A restoration network ``R(x_s, s) ~ x0`` is trained with the L1 loss of eq. 2 on images
degraded by a deterministic operator ``D`` (:mod:`diffjax.degradations`); sampling runs
Algorithm 2 (or 1) from a fully degraded image through the scan driver
(:mod:`diffjax.samplers.cold`). The network is any diffjax network fed ``t = s / T``; with
``time_input='ddpm_index'`` on a process of ``T`` steps it sees the reference's 0-based index
``s - 1`` (the process itself is unused: a degradation has no ``alpha`` / ``sigma``).

Generation (``method.sample``) starts, per degradation:

* ``'blur'`` (``discrete=True``), ``'fade'``: a flat image of a colour drawn from a Gaussian
  mixture over per-channel means (``colour_weights`` / ``colour_means`` / ``colour_stds``;
  fit them to the training set with :func:`diffjax.samplers.cold.fit_channel_gmm`, the
  reference's ``--gmm_cluster``), plus ``symmetry_noise`` (``0.002``, its ``--noise``);
* ``'noise'``: a standard normal ``x_T`` (the fixed-noise variant uses it as ``z``);
* the restoration degradations (masks, pixelation, snow) have no data-free start; their
  ``sample`` raises (restore degraded test images with :func:`~diffjax.samplers.cold.
  cold_sample` instead).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from diffjax import degradations as dg
from diffjax.losses.cold import LOSS_TYPES, cold_loss
from diffjax.methods.base import Method, Setup
from diffjax.samplers import cold as cs
from diffjax.samplers.driver import per_sample_keys

__all__ = ["cold"]

#: degradations ``method.sample`` can generate from (a data-free fully degraded start)
GENERATIVE = ("blur", "fade", "noise")


def _apply(network, params, x, t, cond):
    return network.bind(params)(x, t, cond)


def cold(setup: Setup, *, degradation: str = "blur", num_steps: int = 50,
         degradation_kwargs: dict | None = None, loss_type: str = "l1",
         algorithm: str = "improved", noise: str = "fixed", symmetry_noise: float = 0.002,
         colour_weights: Any = (1.0,), colour_means: Any = ((0.0,),),
         colour_stds: Any = ((0.3,),)) -> Method:
    """Cold Diffusion training (eq. 2, L1) and generation (Algorithm 2 or 1).

    Args:
      setup: an image network taking ``(x, t = s / T, cond)`` and returning ``x0_hat``.
      degradation: a key of :data:`diffjax.degradations.DEGRADATIONS`.
      num_steps: ``T`` (the reference's ``--time_steps``: 20 MNIST, 50 CIFAR-10 blur, 200-300
        CelebA / AFHQ 128).
      degradation_kwargs: the degradation's own options, e.g. for blur ``routine``,
        ``kernel_size``, ``kernel_std``, ``padding``, ``discrete`` (``--blur_routine``,
        ``--blur_size``, ``--blur_std``, ``--discrete``).
      loss_type: ``'l1'`` (the paper's) or ``'l2'``.
      algorithm: ``'improved'`` (Algorithm 2, the reference's ``x0_step_down``) or
        ``'naive'`` (Algorithm 1, its ``default``).
      noise: noise degradation only: ``'fixed'`` (``z = x_T``) or ``'estimated'`` (DDIM).
      symmetry_noise: std of the per-pixel noise added to the flat start (the reference's
        ``--noise``; ``0.0`` is perfect symmetry).
      colour_weights, colour_means, colour_stds: the start colours' mixture (``K``
        components over ``C`` channels, diagonal stds); one channel's values broadcast.
    """
    T = int(num_steps)
    if T < 1:
        raise ValueError(f"num_steps must be a positive int (T); got {num_steps!r}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}; got {loss_type!r}")
    cs._check(algorithm, noise)
    if len(setup.x_shape) != 3:
        raise ValueError(f"Cold Diffusion degrades images (H, W, C); got x_shape "
                         f"{setup.x_shape}")
    H, W, C = setup.x_shape
    deg = dg.make_degradation(degradation, T, H, **dict(degradation_kwargs or {}))
    net = setup.network
    if net.time_input == "ddpm_index" and net.num_timesteps != T:
        raise ValueError(f"the network's time input is a DDPM index over {net.num_timesteps} "
                         f"steps but method.num_steps={T}; set process.num_steps={T}")
    if float(symmetry_noise) < 0:
        raise ValueError(f"symmetry_noise must be >= 0; got {symmetry_noise}")
    w = jnp.asarray(colour_weights, jnp.float32).reshape(-1)
    K = w.shape[0]
    mu = jnp.broadcast_to(jnp.asarray(colour_means, jnp.float32).reshape(K, -1), (K, C))
    sd = jnp.broadcast_to(jnp.asarray(colour_stds, jnp.float32).reshape(K, -1), (K, C))
    gmm = cs.ChannelGMM(w / jnp.sum(w), mu, jax.vmap(jnp.diag)(sd))
    noise_level = float(symmetry_noise)

    def loss(params, key, batch, state):
        k_loss, k_drop = jax.random.split(key)
        model = net.bind(params, train=True, key=k_drop)
        return cold_loss(model, k_loss, batch["image"], deg, loss_type=loss_type,
                         cond=setup.labels(batch), aux=batch.get("x_end"))

    def start(key, shape, offset):
        if degradation == "noise":
            keys = per_sample_keys(key, shape[0], offset)
            return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1),
                                                        shape[1:]))(keys)
        if degradation == "blur" and not getattr(deg, "discrete", False):
            raise ValueError("generation from blur needs degradation_kwargs.discrete=True (a "
                             "flat fully blurred image, the reference's --discrete)")
        if degradation not in GENERATIVE:
            raise ValueError(f"degradation {degradation!r} has no data-free start; generation "
                             f"needs one of {GENERATIVE} (restore degraded images with "
                             "diffjax.samplers.cold.cold_sample)")
        return cs.flat_start(gmm, key, shape, noise=noise_level, sample_offset=offset)

    def sample(params, key, n, cond=None, offset=0):
        shape = (int(n),) + setup.x_shape
        x_T = start(key, shape, offset)
        model = jtu.Partial(_apply, net, params)
        return cs.cold_sample(model, key, x_T, deg, algorithm=algorithm, noise=noise,
                              cond=cond, sample_offset=offset)

    # Restoration-only setups (blur without --discrete, masks, pixelation, snow) have no
    # data-free start: no ``sample`` (the trainer then writes no sample grid).
    generative = degradation == "noise" or (
        degradation in GENERATIVE and not (degradation == "blur"
                                           and not getattr(deg, "discrete", False)))
    return Method("cold", loss, sample if generative else None, nfe=T)
