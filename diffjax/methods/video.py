"""Video Diffusion Models (Ho et al. 2022, arXiv 2204.03458) as a method, and conditional video
sampling: extension, interpolation and autoregressive extension.

Training (sec. 3): the denoising loss of plain diffusion on clips ``(B, F, H, W, C)``, with
**joint image-video training**: ``image_frames = k`` independent images (frames drawn from other
clips of the batch at random times) are appended to every clip, and the network's temporal
attention is masked for them (``cond['is_image']``, :class:`~diffjax.models.unet3d.UNet3D`). The
paper trains with 0, 4 or 8 image frames per 16-frame video (Table 4: more image frames, better
sample quality).

Sampling through the one driver on 5-D ``x``: any step of :mod:`diffjax.samplers` (DDIM,
ancestral DDPM, a predictor-corrector with a Langevin corrector as the paper's PC sampler).
Conditioning on given frames ``x^a`` (``known`` and a frame ``mask``) with an unconditional
joint model, two ways (sec. 3.1):

* **reconstruction guidance** (eq. 7, :class:`diffjax.guidance.ReconstructionGuidance`):
  ``x~^b = x^b - (w_r alpha_t / 2) grad_{z_t} ||x^a - x^a_hat(z_t)||^2``, ``w_r > 1`` best;
* **replacement** (the baseline, :class:`diffjax.guidance.Inpaint`): the known frames of
  ``z_s`` are replaced by a fresh draw of ``q(z_s | x^a)`` after every step.

:func:`frame_mask` builds the masks of extension (the first frames known) and interpolation
(every ``k``-th frame known); :func:`extend_autoregressive` makes clips longer than the model's
window block by block, each block conditioned on the last frames of the previous one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import guidance as G
from diffjax import losses as L
from diffjax import samplers as S
from diffjax.grids import discrete_grid, uniform_grid
from diffjax.methods.base import Method, Setup
from diffjax.processes import DiscreteVP, space_timesteps

__all__ = ["video", "joint_batch", "frame_mask", "conditional_sample", "extend_autoregressive",
           "video_grid", "CONDITIONINGS"]

#: how given frames condition the sampler
CONDITIONINGS = ("reconstruction", "replacement")


def video_grid(process, num_steps: int, t_min: float = 1e-3):
    """``num_steps`` respaced DDPM indices for a discrete process, else a uniform grid on
    ``[t_min, 1]``."""
    if isinstance(process, DiscreteVP):
        T = process.num_steps
        idx = range(T) if num_steps == T else space_timesteps(T, str(int(num_steps)))
        return discrete_grid(idx, T)
    return uniform_grid(int(num_steps), 1.0, float(t_min))


def joint_batch(key, videos: jnp.ndarray, image_frames: int):
    """Joint image-video batch (Ho et al. 2022, sec. 3): append ``image_frames`` independent
    images to every clip.

    Image ``j`` of clip ``b`` is frame ``f`` of clip ``b'`` with ``b' != b`` and ``f`` uniform
    (``b'`` uniform among the other clips; with a batch of one clip it is the clip itself, at a
    random time).

    Args:
      key: PRNG key.
      videos: ``(B, F, H, W, C)``.
      image_frames: images appended per clip (``0``: the clips unchanged).

    Returns:
      ``(x, is_image)``: ``(B, F + k, H, W, C)`` and ``(B, F + k)`` booleans (``True`` on the
      appended images).
    """
    b, f = videos.shape[:2]
    k = int(image_frames)
    if k < 0:
        raise ValueError(f"image_frames must be >= 0; got {image_frames}")
    is_video = jnp.zeros((b, f), bool)
    if k == 0:
        return videos, is_video
    kb, kf = jax.random.split(key)
    shift = jax.random.randint(kb, (b, k), 1, max(b, 2)) if b > 1 else jnp.zeros((b, k), int)
    src = (jnp.arange(b)[:, None] + shift) % b  # another clip of the batch
    fr = jax.random.randint(kf, (b, k), 0, f)
    images = videos[src, fr]  # (B, k, H, W, C)
    return (jnp.concatenate([videos, images], axis=1),
            jnp.concatenate([is_video, jnp.ones((b, k), bool)], axis=1))


def video(setup: Setup, *, prediction: str = "eps", image_frames: int = 0,
          sampler: str = "ddim", sample_steps: int = 50, step: dict | None = None,
          t_min: float = 1e-3, clip_x0: float | None = 1.0) -> Method:
    """Video diffusion training (joint image-video) and unconditional sampling.

    Args:
      setup: a video network (``x_shape = (F, H, W, C)``) such as
        :class:`~diffjax.models.unet3d.UNet3D`, taking ``cond={'is_image': ...}``.
      prediction: what the network predicts (``eps`` in the paper's UCF101/BAIR runs).
      image_frames: independent images appended per clip in training (paper: 0, 4, 8).
      sampler: a :data:`diffjax.samplers.SAMPLERS` name (``'ddim'``, ``'ddpm'`` ancestral, ...).
      sample_steps: sampler steps.
      step: keyword arguments of the step (``{'eta': 0.0}``).
      t_min: last time of a continuous grid.
      clip_x0: clip ``x0_hat`` to ``[-clip_x0, clip_x0]`` while sampling (``None``: off).
    """
    if len(setup.x_shape) != 4:
        raise ValueError(f"the video method needs clips (F, H, W, C); the data have examples of "
                         f"shape {setup.x_shape}")
    if int(image_frames) < 0:
        raise ValueError(f"image_frames must be >= 0; got {image_frames}")
    net, process = setup.network, setup.process
    the_step = S.get_step(sampler, **dict(step or {}))
    grid = video_grid(process, int(sample_steps), t_min)

    def loss(params, key, batch, state):
        k_mix, k_loss, k_drop = jax.random.split(key, 3)
        x0, is_image = joint_batch(k_mix, batch["image"], image_frames)
        model = net.bind(params, train=True, key=k_drop)
        cond = {"is_image": is_image}
        if isinstance(process, DiscreteVP):
            return L.ddpm_loss(model, k_loss, x0, process=process, prediction=prediction,
                               cond=cond)
        return L.denoising_loss(model, k_loss, x0, process=process, prediction=prediction,
                                cond=cond)

    def sample(params, key, n, cond=None, offset=0):
        shape = (int(n),) + setup.x_shape
        return S.sample(net.bind(params), key, shape, grid, the_step, process=process,
                        prediction=prediction, clip_x0=clip_x0, sample_offset=offset)

    nfe = (len(grid) - 1) * int(getattr(the_step, "nfe", 1))
    return Method("video", loss, sample, nfe=nfe)


def frame_mask(num_frames: int, *, first: int = 0, every: int = 0) -> np.ndarray:
    """``(F, 1, 1, 1)`` float mask of the known frames: the ``first`` frames (extension) and
    every ``every``-th frame from frame 0 (interpolation)."""
    if first < 0 or every < 0 or (first == 0 and every == 0):
        raise ValueError(f"give first >= 1 (extension) and/or every >= 1 (interpolation); got "
                         f"first={first}, every={every}")
    m = np.arange(num_frames) < first
    if every:
        m |= np.arange(num_frames) % every == 0
    return m.astype(np.float32)[:, None, None, None]


def conditional_sample(model, key, known, mask, *, process, grid, step, prediction: str = "eps",
                       conditioning: str = "reconstruction", w_r: float = 2.0,
                       clip_x0: float | None = None, sample_offset: int = 0):
    """Samples of ``p(x^b | x^a)`` from an unconditional video model (Ho et al. 2022, sec. 3.1).

    Args:
      model: ``(x, t, cond) -> prediction`` on ``(B, F, H, W, C)``.
      key: PRNG key (sample ``i`` depends on ``(key, sample_offset + i)``).
      known: ``x^a`` ``(B, F, H, W, C)`` (values of unknown frames ignored).
      mask: known frames, broadcastable to ``known`` (:func:`frame_mask`).
      process / grid / step / prediction: the sampler.
      conditioning: ``'reconstruction'`` (eq. 7, weight ``w_r``) or ``'replacement'``.
      clip_x0: clip ``x0_hat`` (``None``: off).

    Returns:
      ``(B, F, H, W, C)`` samples; with replacement the known frames end at ``x^a`` (the grid's
      last ``sigma`` permitting), with reconstruction guidance they are set to ``x^a`` in
      ``x0_hat`` at every step.
    """
    known = jnp.asarray(known, jnp.float32)
    if known.ndim != 5:
        raise ValueError(f"known must be (B, F, H, W, C); got shape {tuple(known.shape)}")
    if conditioning == "reconstruction":
        guided = G.ReconstructionGuidance(model, process, known, mask, float(w_r),
                                          prediction_in=prediction)
        return S.sample(guided, key, known.shape, grid, step, process=process, prediction="x0",
                        clip_x0=clip_x0, sample_offset=sample_offset)
    if conditioning == "replacement":
        return S.sample(model, key, known.shape, grid, G.inpainting(step, known, mask),
                        process=process, prediction=prediction, clip_x0=clip_x0,
                        sample_offset=sample_offset)
    raise ValueError(f"conditioning must be one of {CONDITIONINGS}; got {conditioning!r}")


def extend_autoregressive(model, key, first_frames, total_frames: int, *, window: int,
                          overlap: int, **kw) -> jnp.ndarray:
    """Block-autoregressive extension (Ho et al. 2022, sec. 3.1 and 4.3): a clip longer than the
    model's ``window`` is generated block by block; each block of ``window`` frames is
    conditioned on the last ``overlap`` frames generated so far, and contributes its
    ``window - overlap`` new frames.

    Args:
      model: the unconditional video model.
      key: PRNG key (block ``j`` uses ``fold_in(key, j)``).
      first_frames: ``(B, overlap, H, W, C)``: the frames to extend.
      total_frames: length of the result (``>= overlap``).
      window: frames the model generates at once.
      overlap: conditioning frames per block (``1 <= overlap < window``).
      kw: :func:`conditional_sample` arguments (process, grid, step, conditioning, w_r...).

    Returns:
      ``(B, total_frames, H, W, C)``, starting with ``first_frames``.
    """
    x = jnp.asarray(first_frames, jnp.float32)
    if not 1 <= overlap < window:
        raise ValueError(f"need 1 <= overlap < window; got overlap={overlap}, window={window}")
    if x.ndim != 5 or x.shape[1] != overlap:
        raise ValueError(f"first_frames must be (B, overlap={overlap}, H, W, C); got "
                         f"{tuple(x.shape)}")
    if total_frames < overlap:
        raise ValueError(f"total_frames={total_frames} < overlap={overlap}")
    mask = frame_mask(window, first=overlap)
    block = 0
    while x.shape[1] < total_frames:
        pad = jnp.zeros((x.shape[0], window - overlap) + x.shape[2:], x.dtype)
        known = jnp.concatenate([x[:, -overlap:], pad], axis=1)
        out = conditional_sample(model, jax.random.fold_in(key, block), known, mask, **kw)
        x = jnp.concatenate([x, out[:, overlap:]], axis=1)
        block += 1
    return x[:, :total_frames]
