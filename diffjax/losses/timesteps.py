"""Training-time samplers: where on ``t in [0, 1]`` (data at 0) each example is noised.

Every sampler has the signature ``sampler(key, batch, **params) -> TimeSample`` with its
parameters keyword-only, so ``functools.partial(uniform_discrete, num_steps=1000)`` is the
``t_sampler(key, batch)`` that the losses in :mod:`diffjax.losses.diffusion` and
:mod:`diffjax.losses.vlb` take. A :class:`TimeSample` holds

* ``t``: per-example diffjax time, shape ``(B,)``, float32;
* ``weight``: per-example importance weight, shape ``(B,)`` (ones except for
  :class:`LossSecondMomentResampler`), to multiply the per-example loss with;
* ``index``: the integer the paper draws (DDPM code index ``i``, with ``t = (i + 1) / T``;
  NCSN label), or ``None`` for continuous samplers.

Each paper's draw, expressed in diffjax time:

========================  ==========================================  ===========================
paper                     draw                                        function
========================  ==========================================  ===========================
DDPM / iDDPM / ADM        ``i ~ U{0..T-1}``, ``t = (i + 1) / T``      ``uniform_discrete``
DDIM                      antithetic pairs ``i``, ``T - 1 - i``       ``antithetic_discrete``
iDDPM ``L_vlb``           ``p_i ~ sqrt(E[L_i^2])``, weighted          ``LossSecondMomentResampler``
score_sde                 ``t ~ U(eps, 1)``, ``eps = 1e-5``           ``uniform_continuous``
EDM                       ``ln sigma ~ N(-1.2, 1.2^2)``               ``edm_lognormal``
EDM ``VELoss``            ``sigma ~ logU(0.02, 100)``                 ``log_uniform_sigma``
SD3 / LightningDiT / SiT  ``t = sigmoid(m + s n)``                    ``logit_normal``
NCSN                      label ``i ~ U{0..L-1}`` (0 = largest)       ``ncsn_levels``
========================  ==========================================  ===========================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from diffjax.adapters import ddpm_index_to_t

Array = Any

__all__ = [
    "TimeSample",
    "TimeSampler",
    "uniform_discrete",
    "antithetic_discrete",
    "uniform_continuous",
    "edm_lognormal",
    "log_uniform_sigma",
    "logit_normal",
    "ncsn_levels",
    "ResamplerState",
    "LossSecondMomentResampler",
]


class TimeSample(NamedTuple):
    """Per-example times drawn for one batch.

    Attributes:
      t: diffjax times, shape ``(B,)``, float32 (data at 0, noise at 1).
      weight: importance weights, shape ``(B,)``; ones unless the sampler is non-uniform
        and unbiased by reweighting (:class:`LossSecondMomentResampler`).
      index: the paper's integer draw (DDPM code index or NCSN label), int32 ``(B,)``, or
        ``None`` for continuous samplers.
    """

    t: Array
    weight: Array
    index: Array | None = None


TimeSampler = Callable[[Array, int], TimeSample]


def _check_batch(batch) -> int:
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int; got {batch!r}")
    return batch


def _check_steps(num_steps, name="num_steps") -> int:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"{name} must be a positive int; got {num_steps!r}")
    return num_steps


def _ones(batch):
    return jnp.ones((batch,), jnp.float32)


def _index_sample(index: Array, num_steps: int) -> TimeSample:
    index = index.astype(jnp.int32)
    return TimeSample(ddpm_index_to_t(index, num_steps), _ones(index.shape[0]), index)


def uniform_discrete(key: Array, batch: int, *, num_steps: int) -> TimeSample:
    """DDPM's ``i ~ U{0..T-1}`` at ``t = (i + 1) / T`` (Ho et al. 2020, Algorithm 1).

    Reference: hojonathanho/diffusion ``run_cifar.py`` (``tf.random_uniform(..., 0, T)``);
    iDDPM ``UniformSampler``.
    """
    _check_batch(batch)
    _check_steps(num_steps)
    return _index_sample(jax.random.randint(key, (batch,), 0, num_steps), num_steps)


def antithetic_discrete(key: Array, batch: int, *, num_steps: int) -> TimeSample:
    """DDIM's antithetic draw: indices ``i`` and ``T - 1 - i`` in the two halves of the batch.

    Reference: ermongroup/ddim ``runners/diffusion.py:train`` (``t = randint(0, T, (n//2+1,))``,
    ``t = cat([t, T - t - 1])[:n]``). Unbiased for a uniform index; lower variance.
    """
    _check_batch(batch)
    _check_steps(num_steps)
    half = jax.random.randint(key, (batch // 2 + 1,), 0, num_steps)
    idx = jnp.concatenate([half, num_steps - 1 - half])[:batch]
    return _index_sample(idx, num_steps)


def uniform_continuous(key: Array, batch: int, *, eps: float = 1e-5,
                       t_max: float = 1.0) -> TimeSample:
    """``t ~ U(eps, t_max)`` (Song et al. 2021, eq. 7; score_sde ``get_sde_loss_fn``, ``eps=1e-5``).

    Use ``eps = 0`` for flow matching with a velocity target (SiT ``Transport``: Linear/GVP
    with a velocity model train on the whole ``[0, 1]``).
    """
    _check_batch(batch)
    if not 0.0 <= eps < t_max:
        raise ValueError(f"need 0 <= eps < t_max; got eps={eps}, t_max={t_max}")
    t = jax.random.uniform(key, (batch,), jnp.float32, minval=eps, maxval=t_max)
    return TimeSample(t, _ones(batch))


def edm_lognormal(key: Array, batch: int, *, process, p_mean: float = -1.2,
                  p_std: float = 1.2) -> TimeSample:
    """EDM's ``ln sigma ~ N(P_mean, P_std^2)`` (Karras et al. 2022, Table 1; NVlabs/edm
    ``training/loss.py:EDMLoss``).

    ``sigma`` is EDM's noise level of ``x / alpha`` (``process.sigma_tilde``) and is mapped to
    diffjax time by ``process.t_from_sigma_tilde``, so any process can be trained with it.
    For :class:`~diffjax.processes.EDM` ``t = sigma / sigma_max`` may exceed 1 for the rare
    ``sigma > sigma_max`` draws (the process is linear, so this is harmless); processes whose
    time is bounded (DiscreteVP) clamp such draws to their largest noise level.
    """
    _check_batch(batch)
    sigma = jnp.exp(p_mean + p_std * jax.random.normal(key, (batch,), jnp.float32))
    return TimeSample(process.t_from_sigma_tilde(sigma), _ones(batch))


def log_uniform_sigma(key: Array, batch: int, *, process, sigma_min: float = 0.02,
                      sigma_max: float = 100.0) -> TimeSample:
    """``sigma ~ logU(sigma_min, sigma_max)`` mapped to ``t`` (EDM ``VELoss``: 0.02, 100).

    For a :class:`~diffjax.processes.VE` process with the same end points this is ``t ~ U(0, 1)``.
    """
    _check_batch(batch)
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
    u = jax.random.uniform(key, (batch,), jnp.float32)
    sigma = sigma_min * jnp.exp(u * jnp.log(sigma_max / sigma_min))
    return TimeSample(process.t_from_sigma_tilde(sigma), _ones(batch))


def logit_normal(key: Array, batch: int, *, mean: float = 0.0, std: float = 1.0) -> TimeSample:
    """``t = sigmoid(mean + std * n)``, ``n ~ N(0, 1)`` (Esser et al. 2024, SD3 logit-normal).

    SD3's time has noise at ``t = 1`` like diffjax's, so ``mean`` is SD3's ``m`` as is.
    LightningDiT/SiT (data at ``t = 1``) sample ``sigmoid(n)``: their location ``m`` is
    ``-m`` here (the default ``mean = 0`` is symmetric and identical in both).
    """
    _check_batch(batch)
    if std <= 0:
        raise ValueError(f"std must be > 0; got {std}")
    n = jax.random.normal(key, (batch,), jnp.float32)
    return TimeSample(jax.nn.sigmoid(mean + std * n), _ones(batch))


def ncsn_levels(key: Array, batch: int, *, num_levels: int = 10) -> TimeSample:
    """NCSN's label ``i ~ U{0..L-1}`` (0 = the largest sigma) at ``t = 1 - i / (L - 1)``.

    With a :class:`~diffjax.processes.VE` process whose ``sigma_max``/``sigma_min`` are NCSN's
    ``sigma_1``/``sigma_L`` (1 and 0.01), ``sigma(t)`` is exactly the geometric level ``i``
    (Song & Ermon 2019, sec. 4.2; ermongroup/ncsn ``anneal_runner.train``). ``index`` is the
    NCSN label (:func:`diffjax.adapters.t_to_ncsn_label`).
    """
    _check_batch(batch)
    _check_steps(num_levels, "num_levels")
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2; got {num_levels}")
    label = jax.random.randint(key, (batch,), 0, num_levels).astype(jnp.int32)
    t = 1.0 - label.astype(jnp.float32) / (num_levels - 1)
    return TimeSample(t, _ones(batch), label)


# ----------------------------------------------------------------------------------------------
# iDDPM importance sampling (Nichol & Dhariwal 2021, sec. 3.3, eq. 18)
# ----------------------------------------------------------------------------------------------


class ResamplerState(NamedTuple):
    """State of :class:`LossSecondMomentResampler` (a pytree: carry it in the train state).

    Attributes:
      history: the last ``K`` losses per index, shape ``(T, K)``; row ``i`` is filled left to
        right, then shifted (oldest value dropped) once full.
      counts: how many values row ``i`` holds, int32 ``(T,)``, saturating at ``K``.
    """

    history: Array
    counts: Array


@struct.dataclass
class LossSecondMomentResampler:
    """iDDPM's importance sampler over DDPM indices, as pure functions of a state.

    Until every index has ``history_per_term`` recorded losses, indices are uniform (weights
    1). Then ``p_i ∝ sqrt(E[L_i^2])`` over the stored losses, mixed with the uniform
    distribution: ``p <- (1 - uniform_prob) p + uniform_prob / T``; each draw carries the
    weight ``1 / (T p_i)`` so that ``E[w L_i] = mean_i L_i`` (unbiased).
    Reference: openai/improved-diffusion ``resample.py:LossSecondMomentResampler``
    (``weights``, ``update_with_all_losses``; ``ScheduleSampler.sample``).

    In data-parallel training gather ``(t_idx, losses)`` from all devices before
    :meth:`update` (the reference's ``update_with_local_losses`` all-gathers).

    Attributes:
      num_steps: ``T``.
      history_per_term: losses kept per index (10).
      uniform_prob: mixing weight of the uniform distribution (0.001).
    """

    num_steps: int = struct.field(pytree_node=False, default=1000)
    history_per_term: int = struct.field(pytree_node=False, default=10)
    uniform_prob: float = 0.001

    def __post_init__(self):
        _check_steps(self.num_steps)
        _check_steps(self.history_per_term, "history_per_term")

    def init(self) -> ResamplerState:
        """Empty history: zeros ``(T, K)`` and zero counts."""
        return ResamplerState(
            jnp.zeros((self.num_steps, self.history_per_term), jnp.float32),
            jnp.zeros((self.num_steps,), jnp.int32),
        )

    def warmed_up(self, state: ResamplerState) -> Array:
        """True once every index holds ``history_per_term`` losses."""
        return jnp.all(state.counts == self.history_per_term)

    def probs(self, state: ResamplerState) -> Array:
        """The sampling distribution ``p``, shape ``(T,)`` (uniform before warm-up)."""
        T = self.num_steps
        w = jnp.sqrt(jnp.mean(jnp.square(state.history), axis=-1))
        total = jnp.sum(w)
        # all-zero history (a degenerate loss): fall back to uniform instead of 0 / 0
        w = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 1.0 / T)
        w = w * (1.0 - self.uniform_prob) + self.uniform_prob / T
        return jnp.where(self.warmed_up(state), w, jnp.full((T,), 1.0 / T, w.dtype))

    def sample(self, state: ResamplerState, key: Array, batch: int) -> tuple[Array, Array]:
        """Draw ``batch`` indices: ``(t_idx int32 (B,), weights (B,) = 1 / (T p[t_idx]))``."""
        _check_batch(batch)
        p = self.probs(state)
        idx = jax.random.choice(key, self.num_steps, (batch,), p=p).astype(jnp.int32)
        return idx, 1.0 / (self.num_steps * p[idx])

    def time_sampler(self, state: ResamplerState) -> TimeSampler:
        """A ``t_sampler(key, batch) -> TimeSample`` drawing from the current ``state``."""

        def sampler(key, batch):
            idx, w = self.sample(state, key, batch)
            ts = _index_sample(idx, self.num_steps)
            return ts._replace(weight=w.astype(jnp.float32))

        return sampler

    def update(self, state: ResamplerState, t_idx: Array, losses: Array) -> ResamplerState:
        """Record per-example (unweighted) losses ``losses`` at indices ``t_idx``, in order.

        Sequential like the reference (a batch may hold an index twice), via ``lax.scan``.
        """
        t_idx = jnp.asarray(t_idx, jnp.int32)
        losses = jnp.asarray(losses, state.history.dtype)
        if t_idx.ndim != 1 or losses.shape != t_idx.shape:
            raise ValueError(
                f"t_idx and losses must both have shape (batch,); got {t_idx.shape} and "
                f"{losses.shape}"
            )
        K = self.history_per_term

        def body(carry, tl):
            hist, counts = carry
            i, loss = tl
            row, c = hist[i], counts[i]
            shifted = jnp.concatenate([row[1:], loss[None]])
            placed = row.at[jnp.minimum(c, K - 1)].set(loss)
            hist = hist.at[i].set(jnp.where(c == K, shifted, placed))
            counts = counts.at[i].set(jnp.minimum(c + 1, K))
            return (hist, counts), None

        (hist, counts), _ = jax.lax.scan(body, (state.history, state.counts), (t_idx, losses))
        return ResamplerState(hist, counts)
