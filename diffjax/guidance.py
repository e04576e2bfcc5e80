"""Guidance and conditioning as *wrappers*: of the model (``model(x, t, cond)``) or of a sampler
step (:class:`diffjax.samplers.Step`). No sampler is copied; every wrapper is a pytree
(``flax.struct.dataclass``) whose float fields (scales, intervals, known data, masks) are traced
leaves, so changing them never recompiles :func:`diffjax.samplers.sample`.

Notation: ``x_t = alpha(t) x0 + sigma(t) eps`` with ``eps ~ N(0, I)``, data at ``t = 0`` and
noise at ``t = 1``.

* :class:`ClassifierGuidance` -- ADM classifier guidance in score form (Dhariwal & Nichol 2021,
  Alg. 2 / eq. 14): ``eps' = eps - sigma_t s grad_x log p(y | x_t, t)`` (``sqrt(1 - abar)`` is
  ``sigma_t`` for VP); returned in the model's own prediction kind.
  :class:`ClassifierMeanShift` -- the ancestral form (Alg. 1): ``mu' = mu + Sigma s grad``.
  Classifiers: :class:`MixtureClassifier` (exact, Bayes), :class:`LogitsClassifier` (any
  logits network, e.g. ``as_denoiser(ADMClassifier(...), 'ddpm_index')``).
* :class:`ClassifierFreeGuidance` -- Ho & Salimans 2022 eq. 6 for any model with a null
  condition (null label id or ``None``), both weight conventions, guidance interval, channel
  subset; the library's single classifier-free guidance implementation.
  :func:`classifier_free_guidance` builds it in the DiT convention (null label read from the
  model) and :func:`combine_cfg` is its channel-wise combination.
* :class:`Inpaint` / :func:`inpainting` / :func:`colorization` -- Score SDE (Song et al. 2021,
  appendix I.2, ``controllable_generation.py``) replacement of the known part after every step.
* :class:`ReconstructionGuidance` -- Video Diffusion Models (Ho et al. 2022) eq. 7.
* :class:`SRConditioned` / :func:`sr_pairs` -- SR3 / ADM-upsampler style super-resolution
  conditioning by channel concatenation.
* :class:`MixtureClassOracle` -- an exact class-conditional mixture denoiser with a null label
  (the ground truth that the guidance tests compare to).

Classifier-free guidance conventions and reference quirks
---------------------------------------------------------
* **Scale conventions.** Ho & Salimans 2022 (arXiv 2207.12598) eq. 6 writes
  ``guided = (1 + w) cond - w uncond`` (``w = 0``: the conditional model). DiT / SiT /
  LightningDiT (facebookresearch/DiT ``models.py :: DiT.forward_with_cfg``) write
  ``guided = uncond + scale (cond - uncond)``, so ``scale = 1 + w`` (``scale = 1``: the
  conditional model, ``scale = 0``: the unconditional one). ``convention='w'`` /
  ``convention='scale'`` select them; :func:`cfg_scale` converts.
* **One batched forward.** With a null class id, the conditional and unconditional halves run
  as one forward on labels ``[y, null]`` (as ``forward_with_cfg``).
* **Guided channels.** The DiT/SiT references guide only ``model_out[:, :3]`` (a leftover of
  GLIDE's RGB models); every other channel -- the 4th latent channel and the learned-variance
  channels -- comes from each half's own output, and the returned conditional half keeps the
  conditional values. ``channels=3`` reproduces that (DiT's FID 2.27 recipe: scale 1.5 on 3
  channels). ``channels='all'`` (the default) guides every *prediction* channel: all channels,
  or only the first half with ``learned_variance=True``; the learned-variance channels are never
  guided, they are taken from the conditional half.
* **Guidance interval** (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval
  improves sample and distribution quality"). ``interval=(t_lo, t_hi)`` in diffjax time (data at
  0) guides only the samples with ``t_lo <= t <= t_hi``; elsewhere the output is exactly the
  conditional model's. LightningDiT's ``cfg_interval_start = s`` in SiT time (data at 1) is
  ``t_hi = 1 - s`` here.
* **Traced scale.** The weight and the interval are pytree leaves: changing them does not
  recompile :func:`diffjax.samplers.sample`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffjax.parameterization import check_kind, from_x0_eps, to_x0_eps
from diffjax.processes import Process, broadcast_t
from diffjax.samplers.ddpm import posterior
from diffjax.samplers.driver import Step

Array = Any

__all__ = [
    "ClassifierGuidance",
    "ClassifierMeanShift",
    "MixtureClassifier",
    "LogitsClassifier",
    "MixtureClassOracle",
    "ClassifierFreeGuidance",
    "classifier_free_guidance",
    "combine_cfg",
    "cfg_scale",
    "Inpaint",
    "inpainting",
    "colorization",
    "colorization_matrix",
    "ReconstructionGuidance",
    "SRConditioned",
    "area_downsample",
    "upsample",
    "sr_pairs",
]

_LOG2PI = float(np.log(2.0 * np.pi))


def _tb(t: Array, x: Array) -> Array:
    t = jnp.asarray(t, jnp.float32)
    return jnp.broadcast_to(t, (x.shape[0],)) if t.ndim == 0 else t


def _with_labels(cond: Any, labels: Array) -> Any:
    return {**cond, "y": labels} if isinstance(cond, dict) else labels


def _labels(cond: Any) -> Array:
    y = cond.get("y") if isinstance(cond, dict) else cond
    if y is None:
        raise ValueError("cond must hold the class labels (an int array (B,) or cond['y'])")
    return jnp.asarray(y, jnp.int32)


# ----------------------------------------------------------------------------------------------
# Classifiers: log p(y | x_t, t) callables
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class MixtureClassifier:
    """The exact (Bayes) noisy classifier of a labelled mixture: class = component.

    ``log p(y | x_t) = log w_y + log N(x_t; alpha mu_y, alpha^2 v_y + sigma^2) - log p_t(x_t)``
    (Bayes' rule over the mixture's components; the log of
    :meth:`diffjax.analytic.GaussianMixture.responsibilities`, computed as a ``log_softmax`` so
    its gradient stays finite far from a component). Hence
    ``grad log p(y | x_t) = score(x_t | y) - score(x_t)`` exactly.

    Called as ``clf(x, t, cond) -> (B,)`` with labels ``cond`` (or ``cond['y']``).
    """

    gmm: Any  # diffjax.analytic.GaussianMixture

    def log_joint(self, x: Array, t: Array) -> Array:
        """``log w_k + log N_k(x_t)``, shape ``(B, K)``."""
        g = self.gmm
        xf = x.reshape(x.shape[0], -1)
        tb = _tb(t, x)
        a = g.process.alpha(tb)[:, None, None]
        s = g.process.sigma(tb)[:, None, None]
        var = a**2 * g.variances[None] + s**2
        diff = xf[:, None, :] - a * g.means[None]
        logn = -0.5 * jnp.sum(diff**2 / var + jnp.log(var) + _LOG2PI, axis=-1)
        return g.log_weights[None] + logn

    def log_probs(self, x: Array, t: Array) -> Array:
        """``log p(k | x_t)`` for every class, shape ``(B, K)``."""
        return jax.nn.log_softmax(self.log_joint(x, t), axis=-1)

    def __call__(self, x: Array, t: Array, cond: Any) -> Array:
        y = _labels(cond)
        return jnp.take_along_axis(self.log_probs(x, t), y[:, None], axis=1)[:, 0]


@struct.dataclass
class LogitsClassifier:
    """``log p(y | x_t, t) = log_softmax(logits(x, t, cond))[y]`` for any logits network.

    ``logits`` is a pytree callable ``(x, t, cond) -> (B, K)`` in diffjax time, e.g. ADM's noisy
    classifier ``diffjax.models.as_denoiser(ADMClassifier(...), 'ddpm_index')`` (the time
    conversion replaces guided-diffusion's ``SpacedDiffusion`` timestep map: the classifier
    always sees the *original* training timestep). The labels are taken from ``cond``
    (or ``cond['y']``); ``cond`` is passed on unchanged.
    """

    logits: Callable

    def __call__(self, x: Array, t: Array, cond: Any) -> Array:
        y = _labels(cond)
        logp = jax.nn.log_softmax(self.logits(x, _tb(t, x), cond).astype(jnp.float32), axis=-1)
        return jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]


def _classifier_grad(classifier: Callable, x: Array, t: Array, cond: Any) -> Array:
    """``grad_x log p(y | x_t, t)`` per sample (the samples are independent, so the gradient of
    the batch sum is the per-sample gradient)."""
    return jax.grad(lambda xx: jnp.sum(classifier(xx, t, cond)))(x)


# ----------------------------------------------------------------------------------------------
# Classifier guidance (ADM)
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class ClassifierGuidance:
    """ADM classifier guidance in score form (Dhariwal & Nichol 2021, Alg. 2, eq. 14).

    ``eps' = eps - sigma_t * s * grad_x log p(y | x_t, t)`` (``sigma_t = sqrt(1 - abar_t)`` for
    VP; guided-diffusion ``condition_score``), i.e. the score gains ``s * grad log p(y | x_t)``;
    ``x0' = (x_t - sigma_t eps') / alpha_t = x0 + (sigma_t^2 / alpha_t) s grad``. The result is
    returned in the wrapped model's own prediction kind, so it plugs into every sampler (DDIM,
    ODE, ancestral, SDE). The gradient is taken at ``x_t`` (as ADM's ``cond_fn``).

    With the Bayes classifier (:class:`MixtureClassifier`), scale 1 turns the unconditional
    model into the exact class-conditional one, and scale ``s`` equals classifier-free guidance
    with scale ``s`` (Ho & Salimans' ``w = s - 1``); ``tests/test_guidance.py`` checks both.

    Attributes:
      model: ``(x, t, cond) -> prediction`` (usually unconditional; ``cond`` is passed to it).
      classifier: ``(x, t, cond) -> (B,)`` log-probabilities of the labels held in ``cond``.
      process: the noise process.
      scale: guidance scale ``s`` (traced).
      prediction: the model's prediction kind (static).
    """

    model: Callable
    classifier: Callable
    process: Process
    scale: Any = 1.0
    prediction: str = struct.field(pytree_node=False, default="eps")

    def __post_init__(self):
        check_kind(self.prediction)

    def __call__(self, x: Array, t: Array, cond: Any = None) -> Array:
        t = _tb(t, x)
        out = self.model(x, t, cond)
        x0, eps = to_x0_eps(self.prediction, out, x, t, self.process)
        g = _classifier_grad(self.classifier, x, t, cond)
        tt = broadcast_t(t, x)
        a, sig = self.process.alpha(tt), self.process.sigma(tt)
        s = jnp.asarray(self.scale, x.dtype)
        eps_g = eps - sig * s * g
        x0_g = x0 + (sig**2 / a) * s * g
        return from_x0_eps(self.prediction, x0_g, eps_g, x, t, self.process)


class _StepWrapper(Step):
    """A step that wraps ``self.step``: its state and cost are the wrapped step's."""

    @property
    def nfe(self) -> int:
        return self.step.nfe

    def init(self, x, grid):
        return self.step.init(x, grid)


@struct.dataclass
class ClassifierMeanShift(_StepWrapper):
    """ADM Alg. 1 (guided-diffusion ``condition_mean``) as a wrapper of an ancestral step:
    ``x_s = mu + Sigma * s * grad_x log p(y | x_t, t) + sqrt(Sigma) z``.

    The wrapped step (``DDPMAncestral('small' | 'large')``) draws ``mu + sqrt(Sigma) z``; this
    adds ``Sigma * s * grad`` with the same ``Sigma`` (the gradient at ``x_t``, not at ``mu``).

    Equivalence with the score form (:class:`ClassifierGuidance`): shifting ``x0`` by
    ``(sigma_t^2 / alpha_t) s g`` moves the posterior mean by
    ``c_x0 sigma_t^2 / alpha_t s g = (alpha_s / alpha_t) sigma_{t|s}^2 s g
    = Sigma_large s g / alpha_{t|s}`` (``c_x0 = alpha_s sigma_{t|s}^2 / sigma_t^2``), i.e. the
    mean-shift form with ``Sigma = beta`` up to ``1 / sqrt(1 - beta) = 1 + O(beta)``; with
    ``Sigma = beta tilde`` they differ by ``O(beta)`` per step, and both converge to the same
    guided reverse SDE as the steps shrink (score form: drift gains ``g^2 s grad``).

    Attributes:
      step: the ancestral step to wrap (``DDPMAncestral`` with variance ``'small'``/``'large'``).
      classifier: ``(x, t, cond) -> (B,)`` log-probabilities (see :class:`MixtureClassifier`).
      cond: the labels given to the classifier (the step does not see the model's ``cond``).
      scale: ``s`` (traced).
    """

    step: Step
    classifier: Callable
    cond: Any
    scale: Any = 1.0

    def __post_init__(self):
        variance = getattr(self.step, "variance", None)
        if variance not in ("small", "large"):
            raise ValueError("step must be an ancestral step with a fixed variance "
                             f"(DDPMAncestral('small' | 'large')); got {self.step!r}")

    def __call__(self, ctx, x, t, s, state):
        x_next, state = self.step(ctx, x, t, s, state)
        _, _, var_small, var_large = posterior(ctx.process, t, s)
        var = var_small if self.step.variance == "small" else var_large
        g = _classifier_grad(self.classifier, x, _tb(t, x), self.cond)
        return x_next + var * jnp.asarray(self.scale, x.dtype) * g, state


# ----------------------------------------------------------------------------------------------
# Exact class-conditional oracle (the ground truth for guidance tests)
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class MixtureClassOracle:
    """Exact ``'x0'`` denoiser of a labelled mixture: ``cond = k < K`` gives component ``k``'s
    posterior mean ``mu_k + alpha v_k / (alpha^2 v_k + sigma^2) (x - alpha mu_k)``; the null label
    ``K`` (``null_label``) gives the whole mixture's (as a network trained with label dropout
    would at its optimum)."""

    gmm: Any  # diffjax.analytic.GaussianMixture
    prediction = "x0"

    @property
    def null_label(self) -> int:
        return int(self.gmm.means.shape[0])

    def __call__(self, x: Array, t: Array, cond: Any = None) -> Array:
        g = self.gmm
        y = _labels(cond)
        k = g.means.shape[0]
        xf = x.reshape(x.shape[0], -1)
        tb = _tb(t, x)
        a, s = g.process.alpha(tb)[:, None], g.process.sigma(tb)[:, None]
        yc = jnp.clip(y, 0, k - 1)
        mu, v = g.means[yc], g.variances[yc]
        comp = mu + a * v / (a**2 * v + s**2) * (xf - a * mu)
        full = g(x, tb).reshape(xf.shape)
        return jnp.where((y < k)[:, None], comp, full).reshape(x.shape)


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance
# ----------------------------------------------------------------------------------------------

_CONVENTIONS = ("scale", "w")


def cfg_scale(weight: Any, convention: str) -> Any:
    """The DiT-convention scale ``w'`` of ``guided = uncond + w' (cond - uncond)``.

    ``convention='scale'``: ``weight`` is ``w'`` itself (DiT / lucidrains ``cond_scale``; 1 = the
    conditional model, 0 = the unconditional one). ``convention='w'``: Ho & Salimans 2022 eq. 6,
    ``guided = (1 + w) cond - w uncond``, so ``w' = 1 + w`` (``w = 0`` = conditional model).

    Args:
      weight: the guidance weight in ``convention`` (a float or a traced array).
      convention: ``'scale'`` or ``'w'``.

    Returns:
      ``w'`` (same type as ``weight``).
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; expected one of {_CONVENTIONS}")
    return weight if convention == "scale" else 1.0 + weight


def _traced(v: Any) -> Any:
    """A Python int becomes a float: the sampler traces float leaves but keys its compile cache
    on int leaves, so an int scale would recompile on every change."""
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _check_channels(channels: Any) -> None:
    if isinstance(channels, bool) or not (
            channels == "all" or (isinstance(channels, int) and channels > 0)):
        raise ValueError(f"channels must be 'all' or a positive int; got {channels!r}")


def combine_cfg(cond_out: Array, uncond_out: Array, scale: Array, channels: str | int = "all",
                learned_variance: bool = False) -> Array:
    """Combine the conditional and unconditional outputs channel-wise (Ho & Salimans 2022, eq. 6
    in the DiT convention): ``uncond + scale (cond - uncond)`` on the first ``k`` channels of the
    last axis, the conditional values on the others.

    ``k`` is ``channels`` for an int (DiT/SiT guide ``k = 3``), or for ``channels='all'`` every
    channel, or the first half (the prediction; the second half is the learned variance, never
    guided) when ``learned_variance`` is true.

    Args:
      cond_out: conditional output ``(B, ..., C)``.
      uncond_out: unconditional output, same shape.
      scale: DiT-convention scale ``w'`` (see :func:`cfg_scale`), a scalar or per-sample ``(B,)``.
      channels: ``'all'`` or the number of leading channels to guide, in ``[1, C]``.
      learned_variance: whether the last half of the channels is a learned variance.

    Returns:
      The guided output, shape of ``cond_out``.
    """
    _check_channels(channels)
    c = cond_out.shape[-1]
    if channels == "all":
        k = c // 2 if learned_variance else c
    elif channels <= c:
        k = channels
    else:
        raise ValueError(f"channels must be 'all' or an int in [1, {c}]; got {channels!r}")
    s = jnp.asarray(scale, cond_out.dtype)
    s = s.reshape(s.shape + (1,) * (cond_out.ndim - s.ndim)) if s.ndim else s
    guided = uncond_out[..., :k] + s * (cond_out[..., :k] - uncond_out[..., :k])
    return jnp.concatenate([guided, cond_out[..., k:]], axis=-1) if k < c else guided


@struct.dataclass
class ClassifierFreeGuidance:
    """Classifier-free guidance for any model with a null condition (Ho & Salimans 2022, eq. 6).

    ``guided = uncond + w' (cond - uncond)`` with ``w' = cfg_scale(weight, convention)``:
    ``convention='scale'`` takes ``weight = w'`` (DiT), ``convention='w'`` takes Ho & Salimans'
    ``w`` (``w' = 1 + w``). Implied distribution ``p(x | c) p(c | x)^w``: with the Bayes classifier
    this is :class:`ClassifierGuidance` with scale ``w'``.

    Null conventions:
      * ``null_label=int`` -- labels (``cond`` or ``cond['y']``, int ``(B,)``) with a null class
        id; both halves run as **one** batched forward (``[y, null]``, as DiT's
        ``forward_with_cfg``) and are combined by :func:`combine_cfg`.
      * ``null_label=None`` -- the unconditional branch is ``model(x, t, None)``; two forwards
        (a batch cannot mix ``None`` with a condition).

    ``interval=(lo, hi)``: guidance only where ``lo <= t <= hi`` per sample; elsewhere the output
    is exactly the conditional model's (Kynkaanniemi et al. 2024). ``channels``: ``'all'`` or the
    number of leading channels (last axis) guided; the rest come from the conditional half
    (:func:`combine_cfg`; ``learned_variance`` never guides the variance channels). See the
    module docstring for the DiT/SiT channel quirk.

    Attributes:
      model: ``(x, t, cond) -> prediction``, trained with a null condition.
      weight: the guidance weight in ``convention`` (traced: no recompilation).
      interval: ``(t_lo, t_hi)`` in diffjax time (traced).
      convention: ``'scale'`` (DiT ``w'``) or ``'w'`` (Ho & Salimans), static.
      null_label: the null class id, or ``None`` for ``cond=None`` (static).
      channels: ``'all'`` or the number of guided leading channels (static).
      learned_variance: the last half of the channels is a learned variance (static).
    """

    model: Callable
    weight: Any = 1.0
    interval: Any = (0.0, 1.0)
    convention: str = struct.field(pytree_node=False, default="scale")
    null_label: int | None = struct.field(pytree_node=False, default=None)
    channels: Any = struct.field(pytree_node=False, default="all")
    learned_variance: bool = struct.field(pytree_node=False, default=False)

    def __post_init__(self):
        cfg_scale(0.0, self.convention)  # validates the convention
        _check_channels(self.channels)
        if len(self.interval) != 2:
            raise ValueError(f"interval must be (t_lo, t_hi); got {self.interval!r}")
        # frozen dataclass: normalise the traced fields in place
        object.__setattr__(self, "weight", _traced(self.weight))
        if isinstance(self.interval, (tuple, list)):
            object.__setattr__(self, "interval", tuple(_traced(v) for v in self.interval))

    @property
    def prediction(self):
        return getattr(self.model, "prediction", None)

    def __call__(self, x: Array, t: Array, cond: Any = None) -> Array:
        scale = cfg_scale(jnp.asarray(self.weight, jnp.float32), self.convention)
        t = _tb(t, x)
        b = x.shape[0]
        if self.null_label is not None:
            # one batched forward: labels [y, null] (as DiT's forward_with_cfg)
            y = _labels(cond)
            both = jax.tree.map(lambda a: jnp.concatenate([a, a], axis=0), cond)
            both = _with_labels(both, jnp.concatenate([y, jnp.full_like(y, self.null_label)]))
            out = self.model(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0),
                             both)
            cond_out, uncond_out = out[:b], out[b:]
        else:
            cond_out = self.model(x, t, cond)
            uncond_out = self.model(x, t, None)
        guided = combine_cfg(cond_out, uncond_out, scale, self.channels, self.learned_variance)
        lo, hi = self.interval
        inside = ((t >= lo) & (t <= hi)).reshape((b,) + (1,) * (x.ndim - 1))
        # outside the interval: exactly the conditional output (``u + 1 (c - u)`` is not
        # bit-identical to ``c`` in floating point)
        return jnp.where(inside, guided, cond_out)


def classifier_free_guidance(model: Callable, scale: Any = 1.0, *, channels: str | int = "all",
                             null_label: int | None = None, learned_variance: bool = False,
                             interval: tuple[float, float] = (0.0, 1.0)) -> ClassifierFreeGuidance:
    """Classifier-free guidance in the DiT convention, as one :class:`ClassifierFreeGuidance`.

    ``guided = uncond + scale (cond - uncond)`` (Ho & Salimans 2022, eq. 6 with
    ``scale = 1 + w``; ``scale = 1`` is the conditional model), both halves in one batched
    forward on labels ``[y, null]``.

    Args:
      model: a class-conditional network ``(x, t, labels) -> prediction`` with a null class.
      scale: the DiT scale ``w'`` (a traced leaf of the result: changing it with
        ``cfg.replace(weight=...)`` does not recompile the sampler).
      channels: ``'all'`` or the number of leading channels to guide (``3`` reproduces DiT/SiT).
      null_label: the null class id; defaults to ``model.null_label`` (set by
        :func:`diffjax.models.as_denoiser`).
      learned_variance: the last half of the channels is a learned variance (never guided).
      interval: ``(t_lo, t_hi)`` in diffjax time where guidance applies (Kynkaanniemi et al.
        2024).

    Returns:
      ``ClassifierFreeGuidance(model, scale, interval, 'scale', null_label, channels,
      learned_variance)``.
    """
    if null_label is None:
        null_label = getattr(model, "null_label", None)
        if null_label is None:
            raise ValueError("null_label is required (the model does not expose one)")
    return ClassifierFreeGuidance(model, scale, tuple(interval), "scale", int(null_label),
                                  channels, bool(learned_variance))


# ----------------------------------------------------------------------------------------------
# Inpainting and colourisation (Score SDE), as a step wrapper
# ----------------------------------------------------------------------------------------------


def _broadcast_to_x(a: Array, x_shape: tuple, name: str) -> Array:
    """Left-pad ``a`` with unit axes and broadcast it to ``x_shape`` (explicit, so it works under
    ``jax_numpy_rank_promotion='raise'``); a clear error names the argument otherwise."""
    a = jnp.asarray(a, jnp.float32)
    shp = tuple(a.shape)
    if len(shp) > len(x_shape):
        raise ValueError(f"{name} of shape {shp} has more axes than the samples {tuple(x_shape)}")
    padded = (1,) * (len(x_shape) - len(shp)) + shp
    if any(p not in (1, d) for p, d in zip(padded, x_shape, strict=True)):
        raise ValueError(f"{name} of shape {shp} does not broadcast to the samples' shape "
                         f"{tuple(x_shape)}")
    return jnp.broadcast_to(a.reshape(padded), x_shape)


def colorization_matrix() -> np.ndarray:
    """Score SDE's orthogonal 3x3 colour transform (``controllable_generation.py``
    ``get_pc_colorizer``): ``x_dec = x @ M`` puts ``(r + g + b) / sqrt(3)`` (gray, up to
    ``sqrt(3)``) in the first decoupled channel; the other two columns span the colour
    differences. Built from its definition (not copied): ``M = [1/sqrt3 (1,1,1);
    (-2,1,1)/sqrt6; (0,1,-1)/sqrt2]`` as columns, so ``M M^T = I``."""
    c0 = np.ones(3) / np.sqrt(3.0)
    c1 = np.array([-2.0, 1.0, 1.0]) / np.sqrt(6.0)
    c2 = np.array([0.0, 1.0, -1.0]) / np.sqrt(2.0)
    return np.stack([c0, c1, c2], axis=1).astype(np.float32)


@struct.dataclass
class Inpaint(_StepWrapper):
    """Replacement conditioning (Song et al. 2021, Score SDE appendix I.2,
    ``controllable_generation.py :: get_pc_inpainter``) around any sampler step.

    After the wrapped step moves ``x_t -> x_s``, the known part is replaced by a fresh sample of
    ``q(x_s | y)``: ``x_s <- (1 - m) x_s + m (alpha(s) y + sigma(s) z)`` (in the decoupled space
    ``x M`` when ``transform`` is set: colourisation). On the final step (``s = 0`` for VP-like
    grids) the known part is ``y`` exactly. This is the "replacement" baseline of Video Diffusion
    Models section 3.1: it under-conditions the unknown part (use
    :class:`ReconstructionGuidance` for a better conditional).

    Attributes:
      step: the wrapped sampler step.
      known: ``y``, broadcastable to the samples (``(B, ...)`` or one image without batch).
      mask: 1 where known, 0 elsewhere; any shape broadcastable to the samples (e.g. ``(H, W, 1)``).
      transform: ``None`` or a 3x3 orthogonal matrix applied on the last axis before replacing.
    """

    step: Step
    known: Array
    mask: Array
    transform: Any = None

    def __call__(self, ctx, x, t, s, state):
        x_next, state = self.step(ctx, x, t, s, state)
        m = _broadcast_to_x(self.mask, x.shape, "mask")
        y = _broadcast_to_x(self.known, x.shape, "known")
        z = ctx.normal(x, salt=0x1A1A)
        known_s = ctx.process.alpha(s) * y + ctx.process.sigma(s) * z
        if self.transform is None:
            return x_next * (1.0 - m) + known_s * m, state
        M = jnp.asarray(self.transform, x.dtype)
        dec = x_next @ M  # y and the mask already live in the decoupled space
        dec = dec * (1.0 - m) + known_s * m
        return dec @ M.T, state


def inpainting(step: Step, known: Array, mask: Array) -> Inpaint:
    """:class:`Inpaint` with the shapes checked now: ``mask`` and ``known`` must broadcast
    against each other (a ``ValueError`` names ``mask`` otherwise); both are checked against the
    samples' shape when the sampler traces the step."""
    known = jnp.asarray(known, jnp.float32)
    mask = jnp.asarray(mask, jnp.float32)
    try:
        np.broadcast_shapes(tuple(known.shape), tuple(mask.shape))
    except ValueError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast against known of "
                         f"shape {tuple(known.shape)}") from None
    return Inpaint(step, known, mask)


def colorization(step: Step, gray: Array) -> Inpaint:
    """Colourisation as replacement in the decoupled colour space (Score SDE
    ``get_pc_colorizer``): the first channel of ``x @ M`` (:func:`colorization_matrix`) is
    ``sqrt(3) * gray`` with ``gray = (r + g + b) / 3``; the two colour channels are generated.

    Args:
      step: the sampler step to wrap.
      gray: gray images ``(B, H, W)`` or ``(B, H, W, 1)`` (the channel mean).
    """
    gray = jnp.asarray(gray, jnp.float32)
    if gray.ndim >= 1 and gray.shape[-1] != 1:
        gray = gray[..., None]
    known = jnp.concatenate([np.sqrt(3.0) * gray, jnp.zeros(gray.shape[:-1] + (2,))], axis=-1)
    mask = jnp.asarray([1.0, 0.0, 0.0], jnp.float32)
    return Inpaint(step, known, mask, jnp.asarray(colorization_matrix()))


# ----------------------------------------------------------------------------------------------
# Reconstruction guidance (Video Diffusion Models, eq. 7)
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class ReconstructionGuidance:
    """Reconstruction-guided ``x0`` (Ho et al. 2022, Video Diffusion Models, eq. 7):

    ``x~0 = x^0 - (w_r alpha_t / 2) grad_{x_t} || m (x^a - x^0(x_t)) ||^2``, then the known block
    is set to ``x^a``: ``x~0 <- m x^a + (1 - m) x~0``.

    The gradient is taken with respect to ``x_t`` *through the network* (``jax.vjp`` of
    ``x_t -> x^0``): it is ``-2 J^T m (x^a - x^0)``. Derived from
    ``q(x^a | x_t) ~ N(x^0^a, sigma_t^2 / alpha_t^2 I)``; weights ``w_r > 1`` work best (Ho et
    al. 2022, sec. 3.1; on an exact Gaussian video model, ``w_r = 2`` roughly halves the
    conditional-mean error of :class:`Inpaint`). Returns ``'x0'`` (sample with
    ``prediction='x0'``); the sampler then moves the whole vector (the known block is not
    re-noised, unlike :class:`Inpaint`).

    Attributes:
      model: ``(x, t, cond) -> prediction`` (an unconditional joint model).
      process: the noise process.
      known: ``x^a`` broadcastable to the samples (values outside the mask are ignored).
      mask: 1 on the conditioning block, any shape broadcastable to the samples.
      weight: ``w_r`` (traced).
      prediction: the wrapped model's prediction kind (static).
    """

    model: Callable
    process: Process
    known: Array
    mask: Array
    weight: Any = 1.0
    prediction_in: str = struct.field(pytree_node=False, default="eps")
    prediction = "x0"

    def __post_init__(self):
        check_kind(self.prediction_in)

    def __call__(self, x: Array, t: Array, cond: Any = None) -> Array:
        t = _tb(t, x)
        m = _broadcast_to_x(self.mask, x.shape, "mask").astype(x.dtype)
        xa = _broadcast_to_x(self.known, x.shape, "known").astype(x.dtype)

        def x0_of(xx):
            out = self.model(xx, t, cond)
            return to_x0_eps(self.prediction_in, out, xx, t, self.process)[0]

        x0, vjp = jax.vjp(x0_of, x)
        (grad,) = vjp(2.0 * m * (x0 - xa))  # grad_x || m (x^a - x^0(x)) ||^2
        a = self.process.alpha(broadcast_t(t, x))
        x0_g = x0 - (jnp.asarray(self.weight, x.dtype) * a / 2.0) * grad
        return m * xa + (1.0 - m) * x0_g


# ----------------------------------------------------------------------------------------------
# Super-resolution conditioning (SR3 / ADM upsampler)
# ----------------------------------------------------------------------------------------------


def area_downsample(x: Array, factor: int) -> Array:
    """Average-pool NHWC images by an integer ``factor`` (area / box downsampling)."""
    b, h, w, c = x.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"factor must divide the image size {h}x{w}; got {factor}")
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def upsample(low: Array, size: tuple[int, int], method: str = "bilinear") -> Array:
    """Resize NHWC ``low`` to spatial ``size`` (``jax.image.resize``; ADM's upsampler uses
    ``F.interpolate(mode='bilinear')``, SR3 bicubic)."""
    b, _, _, c = low.shape
    return jax.image.resize(low, (b, int(size[0]), int(size[1]), c), method=method)


def sr_pairs(batch: Array, factor: int, *, upsampled: bool = False,
             method: str = "bilinear") -> tuple[Array, Array]:
    """``(low, high)`` super-resolution training pairs from a batch of NHWC images: ``low`` is the
    area downsample by ``factor`` (upsampled back to the high resolution with ``method`` if
    ``upsampled``), ``high`` the batch itself."""
    high = jnp.asarray(batch)
    low = area_downsample(high, factor)
    if upsampled:
        low = upsample(low, high.shape[1:3], method)
    return low, high


@struct.dataclass
class SRConditioned:
    """Super-resolution conditioning by channel concatenation (SR3, Saharia et al. 2021, sec. 2;
    ADM's ``SuperResModel``): ``model(concat([x_t, upsample(low)], -1), t, rest)``.

    ``cond`` is the low-resolution NHWC batch, or a dict with ``cond['low']`` (the other entries,
    e.g. ``'y'``, are passed on as ``rest``; ``None`` if nothing is left). The network must take
    ``C + C_low`` input channels and output the prediction for ``C``.
    """

    model: Callable
    method: str = struct.field(pytree_node=False, default="bilinear")

    @property
    def prediction(self):
        return getattr(self.model, "prediction", None)

    def __call__(self, x: Array, t: Array, cond: Any = None) -> Array:
        if isinstance(cond, dict):
            if "low" not in cond:
                raise ValueError("cond must hold the low-resolution images in cond['low']")
            low = cond["low"]
            rest = {k: v for k, v in cond.items() if k != "low"} or None
        else:
            low, rest = cond, None
        if low is None or jnp.ndim(low) != 4:
            raise ValueError("cond (low-resolution images) must be an NHWC batch")
        up = upsample(jnp.asarray(low, x.dtype), x.shape[1:3], self.method)
        return self.model(jnp.concatenate([x, up], axis=-1), t, rest)
