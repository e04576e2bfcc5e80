"""The DDPM UNet (Ho et al. 2020) and the generic convolutional UNet it shares with ADM.

Paper: Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models", arXiv 2006.11239.
Reference: hojonathanho/diffusion ``diffusion_tf/models/unet.py`` (``model``), configs in
``scripts/run_cifar.py`` (``unet2d16b2``: ch 128, ch_mult (1, 2, 2, 2), 2 res blocks, attention
at 16x16, dropout 0.1) and ``scripts/run_celebahq.py`` / ``run_lsun.py`` (256 px: ch_mult
(1, 1, 2, 2, 4, 4), dropout 0). The layout of blocks matches diffusers' ``UNet2DModel``, so its
checkpoints convert one to one (:mod:`diffjax.convert.unet`).

:class:`UNet` is general enough for the iDDPM/ADM networks too (AdaGN ``scale_shift``, BigGAN
``resblock_updown``, heads of ``num_head_channels``, class embedding, learned variance); see
:mod:`diffjax.models.adm` for those presets.

Calling convention: ``net(x, t_input, y=None, train=False, rngs=None)`` with ``x`` NHWC,
``t_input`` of shape ``(B,)`` in the network's own time units (DDPM: the integer index as a
float; wrap with :func:`as_denoiser` to take diffjax time), ``y`` int labels ``(B,)``.
Dropout is active only with ``train=True`` and ``rngs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.layers import at_least_float32
from diffjax.models.layers_unet import (
    AXES,
    AttnBlock,
    Conv,
    Denoiser,
    Downsample,
    GroupNorm,
    ResBlock,
    TimeEmbedding,
    Upsample,
    as_denoiser,
    part,
    timestep_embedding,
)

Array = Any

__all__ = ["UNet", "UNET_PRESETS", "unet_from_preset", "unet_config", "num_params", "as_denoiser",
           "Denoiser"]


def num_params(model_or_state: Any) -> int:
    """Number of trainable parameters (``nnx.Param`` leaves) of a module or its abstract
    (``nnx.eval_shape``) version."""
    state = (nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module)
             else model_or_state)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state)))


class _Level(nnx.Module):
    """One resolution of the UNet: residual blocks, optional attention after each, and an
    optional resampler (diffusers ``down_blocks[i]`` / ``up_blocks[i]``)."""

    def __init__(self, res: list, attn: list, resample: Any):
        self.res = nnx.List(res)
        self.attn = nnx.List(attn)
        self.resample = resample


class _Mid(nnx.Module):
    def __init__(self, res1, attn, res2):
        self.res1, self.attn, self.res2 = res1, attn, res2


class UNet(nnx.Module):
    """Convolutional UNet of DDPM (defaults: the CIFAR-10 ``unet2d16b2``, 35,746,307 params).

    Args:
      image_size: training resolution; attention sits at the levels whose resolution (for this
        size) is in ``attn_resolutions``. Inputs of other sizes divisible by
        ``2 ** (len(ch_mult) - 1)`` are accepted.
      in_channels / out_channels: image channels (``out_channels`` defaults to
        ``in_channels``, doubled by ``learn_sigma``: iDDPM's ``(eps, v)`` output).
      ch: base width; level ``i`` has ``int(ch * ch_mult[i])`` channels.
      num_res_blocks: residual blocks per level on the way down (``+1`` on the way up).
      attn_resolutions: resolutions with self-attention.
      dropout: dropout rate inside residual blocks.
      num_heads / num_head_channels: attention heads (``num_head_channels`` wins: ADM's 64).
      num_classes: adds a class embedding to the time embedding (labels ``y`` required).
      scale_shift: ADM's adaptive group norm ``norm(h) * (1 + s) + b``.
      resblock_updown: BigGAN-style resampling residual blocks instead of (conv) resamplers.
      conv_resample: resamplers use a conv (else nearest/avg-pool).
      downsample_padding: ``'same'`` (TF ``SAME``, (0, 1): DDPM) or ``1`` ((1, 1): iDDPM/ADM).
      norm_groups / norm_eps: group norm (DDPM: 32 groups, eps 1e-6 as TF's ``group_norm``;
        ADM: eps 1e-5).
      flip_sin_to_cos / freq_shift: sinusoidal time features (DDPM: ``False``, 1; ADM:
        ``True``, 0).
      dtype / param_dtype: compute / parameter dtypes.
      remat: rematerialise each residual block in the backward pass (``nnx.remat``).
      encoder_only: build only the down path and middle block (ADM classifier trunk).
      rngs: parameter initialisation.
    """

    def __init__(self, *, image_size: int = 32, in_channels: int = 3,
                 out_channels: int | None = None, ch: int = 128,
                 ch_mult: Sequence[float] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1, num_heads: int = 1,
                 num_head_channels: int | None = None, num_classes: int | None = None,
                 scale_shift: bool = False, resblock_updown: bool = False,
                 conv_resample: bool = True, downsample_padding: Any = "same",
                 norm_groups: int = 32, norm_eps: float = 1e-6, flip_sin_to_cos: bool = False,
                 freq_shift: float = 1.0, learn_sigma: bool = False, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, remat: bool = False, encoder_only: bool = False,
                 rngs: nnx.Rngs):
        if not ch_mult:
            raise ValueError("ch_mult must be a non-empty sequence")
        nlev = len(ch_mult)
        self.factor = 2 ** (nlev - 1)
        if image_size % self.factor:
            raise ValueError(f"image_size={image_size} is not divisible by the down-sampling "
                             f"factor {self.factor} (len(ch_mult)={nlev})")
        out_channels = out_channels or in_channels
        if learn_sigma:
            out_channels *= 2
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size, self.ch = image_size, ch
        self.flip_sin_to_cos, self.freq_shift = flip_sin_to_cos, float(freq_shift)
        self.num_classes, self.remat, self.dtype = num_classes, remat, dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        temb = 4 * ch
        rb = dict(dropout=dropout, scale_shift=scale_shift, groups=norm_groups, eps=norm_eps, **kw)
        at = dict(num_heads=num_heads, num_head_channels=num_head_channels, groups=norm_groups,
                  eps=norm_eps, **kw)

        self.time_embed = TimeEmbedding(ch, temb, **kw)
        self.class_embed = None if num_classes is None else nnx.Embed(
            num_classes, temb, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
            embedding_init=part(nnx.initializers.normal(1.0), AXES["embed"]))
        self.conv_in = Conv(in_channels, int(ch * ch_mult[0]), 3, **kw)

        chans = [int(ch * m) for m in ch_mult]
        hs = [chans[0]]
        cur, res = chans[0], image_size
        down = []
        for i, c in enumerate(chans):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(cur, c, temb, **rb))
                cur = c
                if res in attn_resolutions:
                    attns.append(AttnBlock(c, **at))
                hs.append(c)
            sampler = None
            if i != nlev - 1:
                sampler = (ResBlock(c, c, temb, down=True, **rb) if resblock_updown else
                           Downsample(c, with_conv=conv_resample, padding=downsample_padding, **kw))
                hs.append(c)
                res //= 2
            down.append(_Level(blocks, attns, sampler))
        self.down = nnx.List(down)
        self.mid = _Mid(ResBlock(cur, cur, temb, **rb), AttnBlock(cur, **at),
                        ResBlock(cur, cur, temb, **rb))
        self.encoder_only = encoder_only
        self.out_features = cur
        if encoder_only:  # ADM's EncoderUNetModel: down path + middle block only
            self.up = nnx.List([])
            self.norm_out = self.conv_out = None
            return
        up = []
        for i, c in reversed(list(enumerate(chans))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(cur + hs.pop(), c, temb, **rb))
                cur = c
                if res in attn_resolutions:
                    attns.append(AttnBlock(c, **at))
            sampler = None
            if i != 0:
                sampler = (ResBlock(c, c, temb, up=True, **rb) if resblock_updown else
                           Upsample(c, with_conv=conv_resample, **kw))
                res *= 2
            up.append(_Level(blocks, attns, sampler))
        assert not hs
        self.up = nnx.List(up)
        self.norm_out = GroupNorm(cur, norm_groups, norm_eps, **kw)
        self.conv_out = Conv(cur, out_channels, 3, init_scale=0.0, **kw)

    # ------------------------------------------------------------------------------------
    def _check(self, x: Array, t: Array, y: Array | None):
        if x.ndim != 4:
            raise ValueError(f"x must be NHWC (B, H, W, C); got shape {tuple(x.shape)}")
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"x has {x.shape[-1]} channels (last axis, NHWC); the model expects "
                             f"in_channels={self.in_channels}")
        if x.shape[1] % self.factor or x.shape[2] % self.factor:
            raise ValueError(f"x resolution {x.shape[1]}x{x.shape[2]} is not divisible by the "
                             f"down-sampling factor {self.factor}")
        t = at_least_float32(t)
        if t.ndim == 0:
            t = jnp.broadcast_to(t, (x.shape[0],))
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},); got {tuple(t.shape)}")
        if self.num_classes is not None and y is None:
            raise ValueError("y (class labels) is required: the model has num_classes="
                             f"{self.num_classes}")
        return t

    def _res(self, blk, h, emb, train, rngs):
        if not self.remat:
            return blk(h, emb, train=train, rngs=rngs)
        return nnx.remat(lambda b, h_, e_, r_: b(h_, e_, train=train, rngs=r_))(blk, h, emb, rngs)

    def _resample(self, sampler, h, emb, train, rngs):
        if isinstance(sampler, ResBlock):
            return self._res(sampler, h, emb, train, rngs)
        return sampler(h)

    def embed(self, t: Array, y: Array | None) -> Array:
        """Time (+ class) embedding, shape ``(B, 4 ch)``."""
        e = timestep_embedding(t, self.ch, flip_sin_to_cos=self.flip_sin_to_cos,
                               freq_shift=self.freq_shift)
        emb = self.time_embed(e.astype(self.dtype))
        if self.class_embed is not None and y is not None:
            emb = emb + self.class_embed(jnp.asarray(y, jnp.int32))
        return emb

    def encode(self, x, emb, train=False, rngs=None):
        """Down path and middle block; returns ``(h, skips)``."""
        h = self.conv_in(x.astype(self.dtype))
        hs = [h]
        for lvl in self.down:
            for j, blk in enumerate(lvl.res):
                h = self._res(blk, h, emb, train, rngs)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
                hs.append(h)
            if lvl.resample is not None:
                h = self._resample(lvl.resample, h, emb, train, rngs)
                hs.append(h)
        h = self._res(self.mid.res1, h, emb, train, rngs)
        h = self.mid.attn(h)
        h = self._res(self.mid.res2, h, emb, train, rngs)
        return h, hs

    def __call__(self, x: Array, t: Array, y: Array | None = None, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> Array:
        if self.encoder_only:
            raise ValueError("this UNet was built with encoder_only=True; call encode()")
        t = self._check(x, t, y)
        emb = self.embed(t, y)
        h, hs = self.encode(x, emb, train, rngs)
        for lvl in self.up:
            for j, blk in enumerate(lvl.res):
                h = jnp.concatenate([h, hs.pop().astype(h.dtype)], axis=-1)
                h = self._res(blk, h, emb, train, rngs)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if lvl.resample is not None:
                h = self._resample(lvl.resample, h, emb, train, rngs)
        h = self.conv_out(jax.nn.silu(self.norm_out(h)))
        return h


#: DDPM presets (hojonathanho/diffusion ``scripts/run_*.py``).
UNET_PRESETS: dict[str, dict] = {
    # CIFAR-10 unet2d16b2: 35,746,307 parameters.
    "ddpm_cifar10": dict(image_size=32, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                         attn_resolutions=(16,), dropout=0.1),
    # CelebA-HQ / LSUN 256x256 (dropout 0; the paper quotes 114M parameters).
    "ddpm_256": dict(image_size=256, ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                     attn_resolutions=(16,), dropout=0.0),
}


def unet_config(preset: str, **overrides) -> dict:
    """The keyword arguments of a preset (see :data:`UNET_PRESETS`), with overrides."""
    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(UNET_PRESETS)}")
    return {**UNET_PRESETS[preset], **overrides}


def unet_from_preset(preset: str, *, rngs: nnx.Rngs, **overrides) -> UNet:
    """Build a DDPM UNet preset, e.g. ``unet_from_preset('ddpm_cifar10', rngs=nnx.Rngs(0))``.
    For sizes only, use ``nnx.eval_shape(lambda: unet_from_preset(..., rngs=nnx.Rngs(0)))``."""
    return UNet(**unet_config(preset, **overrides), rngs=rngs)
