"""Sohl-Dickstein et al. (2015), the first diffusion model, as a :class:`Method`.

Sohl-Dickstein, Weiss, Maheswaranathan, Ganguli, "Deep Unsupervised Learning using
Nonequilibrium Thermodynamics", ICML 2015 (arXiv 1503.03585).

* Training maximises the bound K (paper eq. 14, Appendix B) of
  :func:`diffjax.losses.sohl_dickstein.sohl_dickstein_bound`; the per-example loss is ``-K`` in
  bits. By default every KL term ``t = 2..T`` is evaluated for every example (cheap at
  ``T = 40`` on 2-D data; ``timesteps='one'`` draws one ``t`` per example instead).
* The reverse kernel's mean and diagonal covariance come from
  :class:`~diffjax.models.sohl_dickstein.SohlDicksteinMLP` (MLP + temporal bump readout),
  which also holds the forward schedule ``beta_{2..T}``, learned by gradient ascent on K as in
  paper sec. 2.4.1 (``beta_1`` fixed).
* Sampling is ancestral (paper eq. 5, Fig. 1 bottom row): ``x^T ~ N(0, I)``, then
  ``x^{t-1} ~ p(x^{t-1}|x^t)`` for ``t = T..2`` and the fixed last step ``p(x^0|x^1) =
  N(sqrt(1 - beta_1) x^1, beta_1 I)`` (Appendix B.2's edge treatment, which makes K a bound
  for this very chain), through the one scan driver (:func:`diffjax.samplers.sample`) with
  the step :class:`SohlDicksteinStep`. Paper step ``t`` sits at diffjax time ``t / T``.

The model ignores ``setup.process`` (its schedule is its own, possibly learned); the process is
only handed to the driver. Out of scope here (not done): the paper's binomial diffusion (binary
heartbeat), the MNIST / CIFAR-10 / bark / dead-leaves image models (multi-scale convolutional
network), and posterior sampling (inpainting, denoising; paper sec. 2.5, Fig. 5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from flax import nnx, struct

from diffjax.losses import sohl_dickstein as sdl
from diffjax.methods.base import Method, Setup
from diffjax.models.sohl_dickstein import SohlDicksteinMLP, reverse_kernel
from diffjax.samplers.driver import Step
from diffjax.samplers.driver import sample as drive

__all__ = ["sohl_dickstein", "SohlDicksteinStep", "sohl_dickstein_sample", "model_betas",
           "kernel_fn"]


def _module(network, params):
    states = (params,) if network.rest is None else (params, network.rest)
    return nnx.merge(network.graphdef, *states)


def model_betas(network, params):
    """The forward variances ``beta_1..beta_T`` held by a :class:`SohlDicksteinMLP`."""
    return _module(network, params).betas()


def kernel_fn(network, params, betas):
    """``(x^t (B, D), t (B,) paper index) -> (mu, var)`` of ``p(x^{t-1}|x^t)``."""
    net = network.raw(params)
    T = int(betas.shape[0])

    def kernel(x, t):
        out = net(x, jnp.asarray(t, jnp.float32))
        return reverse_kernel(out, x, betas[jnp.asarray(t, jnp.int32) - 1][:, None], T)

    return kernel


def _apply(network, params, x, t, cond=None):
    """The network at diffjax time ``t`` (paper index ``t T``)."""
    return network.raw(params)(x, t * network.num_timesteps, cond)


@struct.dataclass
class SohlDicksteinStep(Step):
    """One ancestral step ``x^t -> x^{t-1}`` of the learned reverse chain (paper eq. 5).

    Attributes:
      betas: ``(T,)`` forward variances (traced); the step at diffjax time ``t`` is paper step
        ``round(t T)``; paper step 1 is the fixed ``N(sqrt(1 - beta_1) x^1, beta_1 I)``.
    """

    betas: jax.Array

    def prior_std(self, process, t0):
        """The prior is ``N(0, I)`` whatever the process (paper eq. 3 with ``pi = N(0, I)``)."""
        return jnp.ones((), jnp.float32)

    def __call__(self, ctx, x, t, s, state):
        T = self.betas.shape[0]
        k = jnp.round(t * T).astype(jnp.int32)
        beta = jnp.broadcast_to(self.betas[k - 1], (x.shape[0], 1))
        mu, var = reverse_kernel(ctx.raw(x, t), x, beta, T)
        edge = k == 1
        mu = jnp.where(edge, jnp.sqrt(1.0 - beta) * x, mu)
        var = jnp.where(edge, beta, var)
        return mu + jnp.sqrt(var) * ctx.normal(x), state


def _check_setup(setup: Setup) -> SohlDicksteinMLP:
    net = setup.network.abstract
    if not isinstance(net, SohlDicksteinMLP):
        raise ValueError("method 'sohl_dickstein' needs model.name='sohl_dickstein' (the MLP "
                         f"with temporal readout); got {type(net).__name__}")
    if setup.x_shape != (net.dim,):
        raise ValueError(f"method 'sohl_dickstein' models flat vectors: data examples of shape "
                         f"{setup.x_shape} but model.dim={net.dim}")
    if setup.network.num_timesteps != net.num_steps:
        raise ValueError(f"process num_steps={setup.network.num_timesteps} differs from "
                         f"model.num_steps={net.num_steps}; set both to the same T")
    return net


def sohl_dickstein_sample(network, params, key, n: int, *, process, offset: int = 0,
                          return_trajectory: bool = False):
    """Ancestral samples of the reverse chain through the scan driver.

    Args:
      network: a :class:`~diffjax.models.Network` over a :class:`SohlDicksteinMLP`.
      params: its parameters.
      key: PRNG key (sample ``i`` depends only on ``(key, offset + i)``).
      n: number of samples.
      process: handed to the driver (unused by the step).
      offset: index of the first sample.
      return_trajectory: also return ``x^{T-1}, ..., x^0`` stacked, shape ``(T, n, D)``.

    Returns:
      ``x^0 (n, D)`` (and the trajectory).
    """
    T = int(network.num_timesteps)
    dim = int(network.abstract.dim)
    betas = model_betas(network, params)
    grid = np.arange(T, -1, -1, dtype=np.float64) / T
    model = jtu.Partial(_apply, network, params)
    return drive(model, key, (int(n), dim), grid, SohlDicksteinStep(betas), process=process,
                 sample_offset=offset, return_trajectory=return_trajectory)


def sohl_dickstein(setup: Setup, *, timesteps: str = "all") -> Method:
    """Train by maximising K (paper eq. 14) and sample ancestrally (paper eq. 5).

    Args:
      setup: a :class:`SohlDicksteinMLP` network on flat data ``(D,)``, the process's
        ``num_steps`` equal to the model's ``num_steps``.
      timesteps: ``'all'`` (every KL term, per example) or ``'one'`` (one uniform ``t`` per
        example, ``(T - 1) KL_t``).

    Returns:
      The :class:`Method`; its loss is ``-K`` in bits per example, ``aux['K_bits']`` is K.
    """
    net = _check_setup(setup)
    if timesteps not in ("all", "one"):
        raise ValueError(f"timesteps must be 'all' or 'one'; got {timesteps!r}")
    network = setup.network

    def loss(params, key, batch, state):
        x0 = batch["image"].reshape(batch["image"].shape[0], -1)
        betas = model_betas(network, params)
        K, _ = sdl.sohl_dickstein_bound(kernel_fn(network, params, betas), betas, x0, key,
                                        timesteps=timesteps)
        K_bits = sdl.nats_to_bits(K)
        return -K_bits, {"K_bits": K_bits}

    def sample(params, key, n, cond=None, offset=0):
        return sohl_dickstein_sample(network, params, key, n, process=setup.process,
                                     offset=offset)

    return Method("sohl_dickstein", loss, sample, nfe=net.num_steps - 1)
