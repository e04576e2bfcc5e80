"""The factorised space-time 3D UNet of Video Diffusion Models (Ho et al. 2022, sec. 3).

Paper: Ho, Salimans, Gritsenko, Chan, Norouzi, Fleet, "Video Diffusion Models",
arXiv 2204.03458, section 3 and figure 1. A video ``x`` of shape ``(B, F, H, W, C)`` (frames on
the first axis after the batch) goes through the image UNet of :mod:`diffjax.models.unet` with

* every 2-D 3x3 convolution turned into a space-only ``1x3x3`` 3-D convolution: the 2-D conv
  applied to each frame (we run the 2-D blocks on ``(B F, H, W, C)``, which *is* a ``1x3x3``
  conv, with no copy of the blocks);
* every spatial attention block attending within a frame (over ``H W`` tokens), as in 2-D;
* after every spatial attention block, a **temporal attention block** attending over the ``F``
  frames at each spatial location, with a learned relative position bias (the paper's
  "relative position embeddings"; we use the T5 bucketed bias of Raffel et al. 2020, sec. 2.1,
  one scalar per head and bucket of ``j - i``). Nothing in the network depends on absolute frame
  positions, so it takes any number of frames.

Joint image-video training (Ho et al. 2022, sec. 3, "joint training"): independent images are
appended to a video as extra frames and the temporal attention is masked so that they do not
mix with the video or with each other. ``is_image`` (``(B, F)`` booleans, ``cond['is_image']``)
marks them. Two treatments of an image frame, ``image_frames=``:

* ``'skip'`` (default): the temporal block is the identity on an image frame (its residual
  branch is dropped). An image then goes through exactly the 2-D UNet whose weights are the 3-D
  network's spatial weights (:func:`spatial_unet` builds it), so the image model that joint
  training teaches is literally the network's image path. A clip of one frame has no temporal
  context and is treated as an image.
* ``'identity_attention'``: the paper's wording, the attention matrix of an image frame is the
  identity, so the block adds ``proj(v(norm(x)))`` of the frame's own features (a per-pixel
  map); frames stay independent but an image no longer equals the 2-D UNet's output.

Per-frame group normalisation. The 2-D blocks normalise each frame separately (statistics over
``H, W`` and the channel group, not over frames): with statistics shared across frames an image
frame would change its neighbours' outputs, which joint training forbids.

Logical axes: activations are annotated ``('batch', 'frames', 'height', 'width', 'channels')``
(:func:`diffjax.models.layers.constrain`, a no-op outside a sharding context); parameters carry
the 2-D UNet's names, and the relative position bias ``('buckets', 'heads')``.

Calling convention: ``net(x, t_input, cond=None, train=False, rngs=None)``, ``x`` of shape
``(B, F, H, W, C)``, ``t_input`` ``(B,)`` (one noise level per clip), ``cond`` ``None``, class
labels ``(B,)``, or a dict with optional ``'y'`` and ``'is_image'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.layers import constrain
from diffjax.models.layers_unet import Dense, GroupNorm, ResBlock
from diffjax.models.unet import UNet

Array = Any

__all__ = ["UNet3D", "TemporalAttention", "relative_position_bucket", "UNET3D_PRESETS",
           "unet3d_config", "unet3d_from_preset", "spatial_unet", "IMAGE_FRAME_MODES"]

#: how a temporal attention block treats an image frame (see the module docstring)
IMAGE_FRAME_MODES = ("skip", "identity_attention")
#: logical names of a video activation
VIDEO_AXES = ("batch", "frames", "height", "width", "channels")


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int = 32,
                             max_distance: int = 32) -> np.ndarray:
    """T5's bidirectional relative position buckets (Raffel et al. 2020, sec. 2.1).

    Half of the buckets hold ``j - i > 0`` and half ``j - i <= 0``; within a half, the first
    ``num_buckets // 4`` distances get one bucket each and larger distances share
    logarithmically wider buckets up to ``max_distance`` (farther ones share the last bucket).

    Args:
      relative_position: integer array of ``j - i`` (key position minus query position).
      num_buckets: total buckets (even, >= 4).
      max_distance: distance at which the logarithmic buckets end.

    Returns:
      Bucket indices in ``[0, num_buckets)``, same shape (NumPy: frame counts are static).
    """
    if num_buckets < 4 or num_buckets % 2:
        raise ValueError(f"num_buckets must be an even integer >= 4; got {num_buckets}")
    half = num_buckets // 2
    max_exact = half // 2
    if max_distance <= max_exact:
        raise ValueError(f"max_distance must exceed num_buckets // 4 = {max_exact}; got "
                         f"{max_distance}")
    rp = np.asarray(relative_position, np.int64)
    out = (rp > 0).astype(np.int64) * half
    n = np.abs(rp)
    # log-spaced buckets beyond max_exact; np.maximum avoids log(0) where the exact branch wins
    large = max_exact + (np.log(np.maximum(n, 1) / max_exact) / np.log(max_distance / max_exact)
                         * (half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return out + np.where(n < max_exact, n, large)


def _video_frames(is_image: Array | None, b: int, f: int) -> Array:
    """``(B, F)`` float: 1 for video frames, 0 for image frames (a 1-frame clip is an image)."""
    if is_image is None:
        return jnp.full((b, f), 0.0 if f == 1 else 1.0, jnp.float32)
    is_image = jnp.asarray(is_image)
    if is_image.shape != (b, f):
        raise ValueError(f"is_image must have shape (B, F) = ({b}, {f}); got "
                         f"{tuple(is_image.shape)}")
    video = 1.0 - is_image.astype(jnp.float32)
    return video if f > 1 else jnp.zeros_like(video)


class TemporalAttention(nnx.Module):
    """Temporal self-attention over the frames at each spatial location (Ho et al. 2022,
    sec. 3): ``x + proj(attn(q, k, v) )`` with logits ``q_i . k_j / sqrt(d) + b_h(bucket(j -
    i))`` (T5 relative bias, :func:`relative_position_bucket`) over ``norm(x)``.

    Image frames (``is_image``) neither attend to nor are attended by any other frame; with
    ``image_frames='skip'`` their residual branch is dropped (the block is the identity there),
    with ``'identity_attention'`` they attend only to themselves.

    Args:
      channels: feature channels.
      num_heads / num_head_channels: heads (``num_head_channels`` wins, as in 2-D).
      num_buckets / max_distance: the relative position buckets.
      groups / eps: the (per-frame) group norm.
      image_frames: one of :data:`IMAGE_FRAME_MODES`.
    """

    def __init__(self, channels: int, *, num_heads: int = 1, num_head_channels: int | None = None,
                 num_buckets: int = 32, max_distance: int = 32, groups: int | None = 32,
                 eps: float = 1e-5, image_frames: str = "skip", dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        if image_frames not in IMAGE_FRAME_MODES:
            raise ValueError(f"image_frames must be one of {IMAGE_FRAME_MODES}; got "
                             f"{image_frames!r}")
        if num_head_channels:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels "
                                 f"{num_head_channels}")
            num_heads = channels // num_head_channels
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        relative_position_bucket(np.zeros(1), num_buckets, max_distance)  # validates
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.num_heads, self.image_frames = num_heads, image_frames
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.norm = GroupNorm(channels, groups, eps, **kw)
        self.q = Dense(channels, channels, **kw)
        self.k = Dense(channels, channels, **kw)
        self.v = Dense(channels, channels, **kw)
        # zero output projection: a fresh temporal block is the identity (the 3-D network
        # starts as the per-frame image network, as DDPM's zero-initialised output convs)
        self.proj = Dense(channels, channels, init_scale=0.0, **kw)
        init = nnx.with_partitioning(nnx.initializers.normal(0.02), ("buckets", "heads"))
        self.rel_bias = nnx.Param(init(rngs.params(), (num_buckets, num_heads), param_dtype),
                                  eager_sharding=False)

    def bias(self, num_frames: int) -> Array:
        """The ``(heads, F, F)`` additive logit bias ``b_h(bucket(j - i))``."""
        pos = np.arange(num_frames)
        idx = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets,
                                       self.max_distance)
        return jnp.transpose(self.rel_bias[...][jnp.asarray(idx)], (2, 0, 1))

    def __call__(self, x: Array, is_image: Array | None = None) -> Array:
        b, f, hh, ww, c = x.shape
        n = self.num_heads
        video = _video_frames(is_image, b, f)  # (B, F)
        h = self.norm(x.reshape(b * f, hh, ww, c)).reshape(b, f, hh, ww, c)
        # tokens: the F frames of each (b, y, x) location
        h = jnp.transpose(h, (0, 2, 3, 1, 4)).reshape(b * hh * ww, f, c)
        q, k, v = (m(h).reshape(b * hh * ww, f, n, c // n) for m in (self.q, self.k, self.v))
        # frame i may attend to j when i == j or both are video frames
        allowed = (video[:, :, None] * video[:, None, :] > 0) | jnp.eye(f, dtype=bool)[None]
        mask = jnp.broadcast_to(allowed[:, None, None], (b, hh * ww, 1, f, f))
        mask = mask.reshape(b * hh * ww, 1, f, f)
        bias = self.bias(f)[None].astype(q.dtype)
        o = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
        o = self.proj(o.reshape(b * hh * ww, f, c)).reshape(b, hh, ww, f, c)
        o = jnp.transpose(o, (0, 3, 1, 2, 4)).astype(x.dtype)
        if self.image_frames == "skip":
            o = o * video.astype(o.dtype)[:, :, None, None, None]
        return x + o


def _attn_channels(blk) -> int:
    return int(blk.q.in_features)


class UNet3D(nnx.Module):
    """Video Diffusion Models' 3D UNet (Ho et al. 2022, sec. 3, fig. 1) around the 2-D
    :class:`~diffjax.models.unet.UNet`.

    ``self.spatial`` *is* a 2-D UNet (its parameters are exactly a 2-D UNet's: convert with
    :func:`spatial_unet`); ``self.temporal_down`` / ``temporal_mid`` / ``temporal_up`` hold one
    :class:`TemporalAttention` after each of its attention blocks.

    Args:
      frame_size: frame resolution ``H = W`` the attention resolutions refer to.
      in_channels / out_channels / ch / ch_mult / num_res_blocks / attn_resolutions / dropout /
        num_heads / num_head_channels / num_classes / norm_groups / norm_eps / dtype /
        param_dtype / remat: as the 2-D :class:`~diffjax.models.unet.UNet`.
      num_buckets / max_distance: the temporal relative position buckets (T5-style).
      image_frames: how temporal blocks treat image frames (:data:`IMAGE_FRAME_MODES`).
      unet_kwargs: further 2-D UNet options (``scale_shift``, ``resblock_updown``, ...).
      rngs: parameter initialisation.
    """

    def __init__(self, *, frame_size: int = 64, in_channels: int = 3,
                 out_channels: int | None = None, ch: int = 128,
                 ch_mult: Sequence[float] = (1, 2, 4, 8), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (8, 16, 32), dropout: float = 0.1,
                 num_heads: int = 1, num_head_channels: int | None = 64,
                 num_classes: int | None = None, norm_groups: int = 32, norm_eps: float = 1e-6,
                 num_buckets: int = 32, max_distance: int = 32, image_frames: str = "skip",
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, remat: bool = False,
                 unet_kwargs: dict | None = None, rngs: nnx.Rngs):
        self.spatial = UNet(image_size=frame_size, in_channels=in_channels,
                            out_channels=out_channels, ch=ch, ch_mult=tuple(ch_mult),
                            num_res_blocks=num_res_blocks, attn_resolutions=tuple(attn_resolutions),
                            dropout=dropout, num_heads=num_heads,
                            num_head_channels=num_head_channels, num_classes=num_classes,
                            norm_groups=norm_groups, norm_eps=norm_eps, dtype=dtype,
                            param_dtype=param_dtype, remat=remat, **(unet_kwargs or {}),
                            rngs=rngs)
        self.frame_size, self.in_channels = frame_size, in_channels
        self.out_channels, self.num_classes = self.spatial.out_channels, num_classes
        self.remat, self.dtype = remat, dtype
        tk = dict(num_heads=num_heads, num_head_channels=num_head_channels,
                  num_buckets=num_buckets, max_distance=max_distance, groups=norm_groups,
                  eps=norm_eps, image_frames=image_frames, dtype=dtype, param_dtype=param_dtype,
                  rngs=rngs)

        def temporal(levels):
            return nnx.List([nnx.List([TemporalAttention(_attn_channels(a), **tk)
                                       for a in lvl.attn]) for lvl in levels])

        self.temporal_down = temporal(self.spatial.down)
        self.temporal_mid = TemporalAttention(_attn_channels(self.spatial.mid.attn), **tk)
        self.temporal_up = temporal(self.spatial.up)

    # ------------------------------------------------------------------------------------
    def _split(self, cond):
        if isinstance(cond, dict):
            unknown = sorted(set(cond) - {"y", "is_image"})
            if unknown:
                raise ValueError(f"cond keys {unknown} unknown; UNet3D takes 'y' and 'is_image'")
            return cond.get("y"), cond.get("is_image")
        return cond, None

    def _res(self, blk, h, emb, train, rngs):
        if not self.remat:
            return blk(h, emb, train=train, rngs=rngs)
        return nnx.remat(lambda b_, h_, e_, r_: b_(h_, e_, train=train, rngs=r_))(blk, h, emb,
                                                                                  rngs)

    def _resample(self, sampler, h, emb, train, rngs):
        if isinstance(sampler, ResBlock):
            return self._res(sampler, h, emb, train, rngs)
        return sampler(h)

    def __call__(self, x: Array, t: Array, cond: Any = None, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> Array:
        if x.ndim != 5:
            raise ValueError(f"x must be a video batch (B, F, H, W, C); got shape "
                             f"{tuple(x.shape)}")
        b, f, hh, ww, c = x.shape
        y, is_image = self._split(cond)
        sp = self.spatial
        t = sp._check(x[:, 0], t, y)  # the 2-D checks on one frame: channels, sizes, t, y

        def frames(h):  # (B F, h, w, c) -> (B, F, h, w, c), annotated for sharding
            return constrain(h.reshape((b, f) + h.shape[1:]), VIDEO_AXES)

        def temporal(blk, h):
            return blk(frames(h), is_image).reshape((b * f,) + h.shape[1:])

        # one noise level per clip: the embedding is repeated for every frame
        emb = jnp.repeat(sp.embed(t, y), f, axis=0)
        h = sp.conv_in(x.reshape(b * f, hh, ww, c).astype(self.dtype))
        hs = [h]
        for lvl, tlvl in zip(sp.down, self.temporal_down, strict=True):
            for j, blk in enumerate(lvl.res):
                h = self._res(blk, h, emb, train, rngs)
                if len(lvl.attn):
                    h = temporal(tlvl[j], lvl.attn[j](h))
                hs.append(h)
            if lvl.resample is not None:
                h = self._resample(lvl.resample, h, emb, train, rngs)
                hs.append(h)
        h = self._res(sp.mid.res1, h, emb, train, rngs)
        h = temporal(self.temporal_mid, sp.mid.attn(h))
        h = self._res(sp.mid.res2, h, emb, train, rngs)
        for lvl, tlvl in zip(sp.up, self.temporal_up, strict=True):
            for j, blk in enumerate(lvl.res):
                h = jnp.concatenate([h, hs.pop().astype(h.dtype)], axis=-1)
                h = self._res(blk, h, emb, train, rngs)
                if len(lvl.attn):
                    h = temporal(tlvl[j], lvl.attn[j](h))
            if lvl.resample is not None:
                h = self._resample(lvl.resample, h, emb, train, rngs)
        h = sp.conv_out(jax.nn.silu(sp.norm_out(h)))
        return frames(h)


def spatial_unet(model: UNet3D) -> UNet:
    """The 2-D :class:`~diffjax.models.unet.UNet` with the 3-D network's spatial weights (the
    same module object, shared: no copy). With ``image_frames='skip'``, ``model`` on image
    frames (or one frame) computes exactly this network frame by frame."""
    return model.spatial


#: Ho et al. 2022 (Appendix A) shapes. The numbers below are recalled from the paper's
#: hyper-parameter table and not re-checked against it here (no access to the text on this
#: machine): verify before quoting parameter counts.
UNET3D_PRESETS: dict[str, dict] = {
    # unconditional UCF101 / the text-to-video base model: 16 x 64 x 64 frames
    "vdm_16x64": dict(frame_size=64, ch=256, ch_mult=(1, 2, 4, 8), num_res_blocks=2,
                      attn_resolutions=(8, 16, 32), num_head_channels=64, dropout=0.1),
    # spatial super-resolution stage 64 -> 128 px (the low-resolution video enters as extra
    # input channels, SR3-style: in_channels = 3 + 3)
    "vdm_sr_128": dict(frame_size=128, in_channels=6, out_channels=3, ch=128,
                       ch_mult=(1, 2, 4, 8, 16), num_res_blocks=2, attn_resolutions=(8, 16, 32),
                       num_head_channels=64, dropout=0.0),
    # temporal extension / interpolation stage: 64 x 64 frames, the same UNet as the base
    # model (frame-count agnostic; the conditioning frames come by reconstruction guidance)
    "vdm_temporal_64": dict(frame_size=64, ch=256, ch_mult=(1, 2, 4, 8), num_res_blocks=2,
                            attn_resolutions=(8, 16, 32), num_head_channels=64, dropout=0.1),
    # tests and CPU demos
    "tiny": dict(frame_size=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                 num_head_channels=None, num_heads=2, dropout=0.0, norm_groups=8),
}


def unet3d_config(preset: str, **overrides) -> dict:
    """The keyword arguments of a preset (:data:`UNET3D_PRESETS`), with overrides."""
    if preset not in UNET3D_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(UNET3D_PRESETS)}")
    return {**UNET3D_PRESETS[preset], **overrides}


def unet3d_from_preset(preset: str, *, rngs: nnx.Rngs, **overrides) -> UNet3D:
    """Build a 3D UNet preset, e.g. ``unet3d_from_preset('tiny', rngs=nnx.Rngs(0))``."""
    return UNet3D(**unet3d_config(preset, **overrides), rngs=rngs)
