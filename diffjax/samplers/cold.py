"""Cold Diffusion sampling (Bansal et al. 2022, arXiv 2208.09392, Algorithms 1 and 2).

With a restoration network ``R(x_s, s) ~ x0`` and a degradation ``D`` (:mod:`diffjax.
degradations`), one step from ``s`` to ``s - 1`` is

* Algorithm 1 (naive, the reference's ``sampling_routine='default'``):
  ``x_{s-1} = D(R(x_s, s), s - 1)``;
* Algorithm 2 (improved, the reference's ``'x0_step_down'``):
  ``x_{s-1} = x_s - D(x0_hat, s) + D(x0_hat, s - 1)`` with ``x0_hat = R(x_s, s)``.

For a degradation linear in ``s`` (``D(x, s) = x + s e``) the two ``D`` terms differ by ``e``
whatever ``x0_hat`` is, so Algorithm 2 recovers ``x0`` exactly for any ``R`` (paper sec. 3.3);
for smooth ``D`` it is first-order robust to errors of ``R``.

For the noise degradation ``D(x, s; z) = sqrt(abar_s) x + sqrt(1 - abar_s) z`` the reference
has two variants (its README): ``noise='fixed'`` keeps ``z`` fixed to the starting sample
``x_T`` (``x0_step_down``), ``noise='estimated'`` uses ``z_hat = (x_s - sqrt(abar_s) x0_hat) /
sqrt(1 - abar_s)`` (``get_x2_bar_from_xt``, its ``ddim`` routine), for which ``D(x0_hat, s) =
x_s`` and the step is DDIM with ``eta = 0`` (Song et al. 2021, eq. 12).

Steps run through the one scan driver (:func:`diffjax.samplers.sample`) on the grid
``t_n = (s_start - n) / T``; the network sees ``t = s / T`` (see :mod:`diffjax.degradations`
for the index convention) and returns ``x0_hat`` (read through ``ctx.raw``: no noise process
is involved). Generation (paper sec. 5.1) starts from a fully degraded image: for blur, a flat
image whose per-channel colour is drawn from a GMM fitted to the training set's channel means
(:func:`fit_channel_gmm`), plus small noise (``0.002``) that breaks the symmetry of the flat
start.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffjax.processes import Linear
from diffjax.samplers.driver import Step, per_sample_keys
from diffjax.samplers.driver import sample as _driver_sample

Array = Any

__all__ = ["ColdStep", "cold_grid", "cold_sample", "ChannelGMM", "fit_channel_gmm",
           "flat_start", "ALGORITHMS", "NOISE_VARIANTS"]

ALGORITHMS = ("naive", "improved")
NOISE_VARIANTS = ("fixed", "estimated")

#: the driver needs a process argument; cold steps never read it (no alpha / sigma exist)
_UNUSED_PROCESS = Linear()


@struct.dataclass
class ColdStep(Step):
    """One Cold Diffusion step from ``s = round(t T)`` to ``s' = round(s_next T)``.

    Attributes:
      degradation: the operator ``D(x0, s, aux)`` (a pytree: its tables are traced).
      algorithm: ``'improved'`` (Algorithm 2) or ``'naive'`` (Algorithm 1).
      noise: for degradations with an end point ``z`` (:class:`~diffjax.degradations.
        Interpolate`): ``'fixed'`` (``z`` = the start ``x_T``) or ``'estimated'`` (DDIM).
      aux: the degradation's auxiliary input (mask centres, colours, animorphosis end
        images); ``None`` to use the start ``x_T`` when the degradation needs one.
    """

    degradation: Any
    algorithm: str = struct.field(pytree_node=False, default="improved")
    noise: str = struct.field(pytree_node=False, default="fixed")
    aux: Any = None

    def init(self, x, grid):
        # the fixed-noise variant's z is the starting sample itself (the reference passes
        # ``noise = img`` as x_end)
        return x

    def __call__(self, ctx, x, t, s, state):
        deg = self.degradation
        T = deg.num_steps
        s_cur = jnp.round(t * T).astype(jnp.int32)
        s_nxt = jnp.round(s * T).astype(jnp.int32)
        x0_hat = ctx.raw(x, t).astype(x.dtype)
        aux = self.aux
        if deg.needs_aux and aux is None:
            if self.noise == "estimated":
                a, sg = deg.coefficients(s_cur, x.shape[0])
                a = a.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
                sg = sg.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
                aux = (x - a * x0_hat) / sg
            else:
                aux = state
        if self.algorithm == "naive":
            x_next = deg(x0_hat, s_nxt, aux)
        else:
            x_next = x - deg(x0_hat, s_cur, aux) + deg(x0_hat, s_nxt, aux)
        return x_next, state


def _check(algorithm, noise):
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}; got {algorithm!r}")
    if noise not in NOISE_VARIANTS:
        raise ValueError(f"noise must be one of {NOISE_VARIANTS}; got {noise!r}")


def cold_grid(num_steps: int, s_start: int | None = None) -> np.ndarray:
    """``t_n = (s_start - n) / T`` for ``n = 0..s_start`` (float64; the driver casts)."""
    s0 = num_steps if s_start is None else int(s_start)
    if not 1 <= s0 <= num_steps:
        raise ValueError(f"s_start must lie in 1..T={num_steps}; got {s_start}")
    return np.arange(s0, -1, -1, dtype=np.float64) / num_steps


def cold_sample(model, key, x_start, degradation, *, algorithm: str = "improved",
                noise: str = "fixed", aux: Any = None, s_start: int | None = None,
                cond: Any = None, sample_offset: int = 0, mesh: Any = "auto",
                return_trajectory: bool = False):
    """Restore ``x_start`` (degraded by ``s_start`` steps, default ``T``) to ``s = 0``.

    Args:
      model: ``R(x, t, cond) -> x0_hat``, ``t = s / T`` of shape ``(B,)`` (a pytree such as a
        :class:`~diffjax.models.Denoiser`, so its weights are traced).
      key: PRNG key (cold steps are deterministic; kept for the driver's contract).
      x_start: ``(B, H, W, C)``, e.g. ``D(x0, s_start)`` or :func:`flat_start`.
      degradation: the ``D`` the network was trained with.
      algorithm: ``'improved'`` (Algorithm 2) or ``'naive'`` (Algorithm 1).
      noise: ``'fixed'`` or ``'estimated'`` (noise degradation only; see :class:`ColdStep`).
      aux: the degradation's auxiliary input, if it needs one and it is not ``x_start``.
      s_start: the number of degradation steps of ``x_start`` (default ``T``).
      cond, sample_offset, mesh, return_trajectory: as :func:`diffjax.samplers.sample`.
    """
    _check(algorithm, noise)
    grid = cold_grid(degradation.num_steps, s_start)
    step = ColdStep(degradation, algorithm, noise, aux)
    return _driver_sample(model, key, tuple(x_start.shape), grid, step,
                          process=_UNUSED_PROCESS, prediction="x0", cond=cond, x_init=x_start,
                          sample_offset=sample_offset, mesh=mesh,
                          return_trajectory=return_trajectory)


@struct.dataclass
class ChannelGMM:
    """A Gaussian mixture over per-channel image means (``K`` components, ``C`` channels)."""

    weights: Array  # (K,)
    means: Array  # (K, C)
    chol: Array  # (K, C, C) Cholesky factors of the covariances

    def sample(self, keys: Array) -> Array:
        """One colour ``(C,)`` per key (keys ``(B,)``): ``(B, C)``."""

        def one(k):
            kc, kz = jax.random.split(k)
            comp = jax.random.categorical(kc, jnp.log(self.weights))
            z = jax.random.normal(kz, self.means.shape[1:])
            return self.means[comp] + self.chol[comp] @ z

        return jax.vmap(one)(keys)


def fit_channel_gmm(images, n_components: int = 1, seed: int = 0) -> ChannelGMM:
    """Fit the GMM of the reference's ``--gmm_cluster`` to the per-channel spatial means of
    ``images`` (``(N, H, W, C)``), the colours a fully blurred image can take (scikit-learn's
    ``GaussianMixture``, full covariances)."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(images, np.float64)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C); got shape {x.shape}")
    if not isinstance(n_components, int) or n_components < 1 or n_components > x.shape[0]:
        raise ValueError(f"n_components must be an int in 1..N={x.shape[0]}; got "
                         f"{n_components!r}")
    means = x.mean(axis=(1, 2))
    g = GaussianMixture(n_components, covariance_type="full", random_state=seed,
                        reg_covar=1e-6).fit(means)
    chol = np.linalg.cholesky(g.covariances_)
    return ChannelGMM(jnp.asarray(g.weights_, jnp.float32), jnp.asarray(g.means_, jnp.float32),
                      jnp.asarray(chol, jnp.float32))


@functools.partial(jax.jit, static_argnames=("shape",))
def flat_start(gmm: ChannelGMM, key, shape: tuple, *, noise: float = 0.002,
               sample_offset: int = 0) -> Array:
    """The generation start: a flat image of a GMM colour per sample plus ``noise * N(0, 1)``
    per pixel (the reference's ``--noise``; ``0`` keeps perfect symmetry). Sample ``i``
    depends only on ``(key, sample_offset + i)``."""
    keys = per_sample_keys(key, shape[0], sample_offset)
    kc = jax.vmap(jax.random.fold_in, (0, None))(keys, 1)
    kn = jax.vmap(jax.random.fold_in, (0, None))(keys, 2)
    colour = gmm.sample(kc)  # (B, C)
    flat = jnp.broadcast_to(colour[:, None, None, :], shape)
    z = jax.vmap(lambda k: jax.random.normal(k, shape[1:]))(kn)
    return flat + noise * z
