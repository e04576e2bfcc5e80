"""Building blocks shared by diffjax's convolutional UNets (DDPM, iDDPM/ADM, NCSN++/DDPM++).

All modules are Flax NNX, NHWC, with parameters in ``param_dtype`` (fp32) and activations
in a separate compute ``dtype`` (e.g. bf16). Group normalisation always runs in fp32 (ADM's
``GroupNorm32``; guided-diffusion issue #50 traces fp16 NaNs to it) and casts back.

References (read for facts only):

* Ho et al. 2020, DDPM (arXiv 2006.11239): hojonathanho/diffusion ``diffusion_tf/models/unet.py``
  (``resnet_block``, ``attn_block``, ``get_timestep_embedding``).
* Nichol & Dhariwal 2021 and Dhariwal & Nichol 2021 (arXiv 2102.09672, 2105.05233):
  openai/guided-diffusion ``guided_diffusion/unet.py`` (``ResBlock`` with ``use_scale_shift_norm``
  and ``up``/``down``, ``AttentionBlock``, ``AttentionPool2d``, ``timestep_embedding``).
* Song et al. 2021, Score SDE (arXiv 2011.13456): yang-song/score_sde ``models/layerspp.py``
  (``ResnetBlockBigGANpp``, ``AttnBlockpp``, ``GaussianFourierProjection``) and
  ``up_or_down_sampling.py`` (FIR ``upsample_2d`` / ``downsample_2d``).

Logical axis names (``nnx.with_partitioning`` metadata ``out_sharding``, created with
``eager_sharding=False`` so models build without a mesh; map them to mesh axes with rules,
e.g. ``nnx.get_partition_spec`` + ``flax.linen.logical_to_mesh_axes``):

=========================  ==========================================
parameter                  logical axes
=========================  ==========================================
conv kernel (kh,kw,i,o)    ``(None, None, 'channels_in', 'channels_out')``
dense kernel (i,o)         ``('channels_in', 'channels_out')``
conv/dense bias (o,)       ``('channels_out',)``
norm scale/bias (C,)       ``('channels',)``
class embedding (K, D)     ``('vocab', 'embed')``
attention-pool pos. emb.   ``(None, 'embed')``
=========================  ==========================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.denoiser import Denoiser, as_denoiser  # noqa: F401  (re-exported)
from diffjax.models.layers import at_least_float32, dot_product_attention, stat_dtype

Array = Any
Dtype = Any
INV_SQRT2 = 1.0 / math.sqrt(2.0)

__all__ = [
    "AXES",
    "conv_init",
    "dense_init",
    "timestep_embedding",
    "GroupNorm",
    "Conv",
    "Dense",
    "TimeEmbedding",
    "ResBlock",
    "AttnBlock",
    "Downsample",
    "Upsample",
    "AttentionPool2d",
    "FourierFeatures",
    "fir_upsample_2d",
    "fir_downsample_2d",
    "default_groups",
    "Denoiser",
    "as_denoiser",
]

#: logical axis names used on UNet parameters (see the module docstring)
AXES = {
    "conv": (None, None, "channels_in", "channels_out"),
    "dense": ("channels_in", "channels_out"),
    "bias": ("channels_out",),
    "norm": ("channels",),
    "embed": ("vocab", "embed"),
    "pos": (None, "embed"),
}


def part(init, names):
    return nnx.with_partitioning(init, names, eager_sharding=False)


def _vs(scale: float):
    # DDPM/score_sde ``default_init``: variance scaling, fan_avg, uniform; scale 0 -> 1e-10
    # (the reference's trick for a near-zero init that still has a direction).
    return nnx.initializers.variance_scaling(max(scale, 1e-10), "fan_avg", "uniform")


def conv_init(scale: float = 1.0):
    """Conv kernel initialiser with logical axes (``scale=0`` is DDPM's zero-ish init)."""
    return part(_vs(scale), AXES["conv"])


def dense_init(scale: float = 1.0):
    """Dense kernel initialiser with logical axes."""
    return part(_vs(scale), AXES["dense"])


def default_groups(channels: int) -> int:
    """score_sde's group count ``min(C // 4, 32)``."""
    return min(channels // 4, 32)


def timestep_embedding(t: Array, dim: int, *, flip_sin_to_cos: bool = False,
                       freq_shift: float = 1.0, max_period: float = 10000.0) -> Array:
    """Sinusoidal embedding of (possibly fractional) time values.

    ``freq_k = exp(-ln(max_period) * k / (dim/2 - freq_shift))``; output ``[sin, cos]`` or
    ``[cos, sin]`` when ``flip_sin_to_cos``. DDPM (and score_sde's positional embedding) use
    ``freq_shift=1, flip=False``; ADM/iDDPM use ``freq_shift=0, flip=True``. Odd ``dim`` is
    zero-padded.

    Args:
      t: shape ``(B,)``.
      dim: embedding width.
    """
    t = at_least_float32(t).reshape(-1)  # float64 stays float64 (exact float64 networks)
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=t.dtype) / (half - freq_shift))
    args = t[:, None] * freqs[None, :]
    emb = [jnp.cos(args), jnp.sin(args)] if flip_sin_to_cos else [jnp.sin(args), jnp.cos(args)]
    emb = jnp.concatenate(emb, axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class GroupNorm(nnx.Module):
    """Group normalisation computed in at least fp32 (float64 for a float64 ``dtype``), output
    cast to ``dtype`` (ADM ``GroupNorm32``)."""

    def __init__(self, channels: int, groups: int | None = 32, eps: float = 1e-5, *,
                 dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        groups = default_groups(channels) if groups is None else groups
        if groups < 1 or channels % groups:
            raise ValueError(f"GroupNorm: channels={channels} is not divisible by groups={groups}")
        self.dtype = dtype
        self.gn = nnx.GroupNorm(
            channels, num_groups=groups, epsilon=eps, dtype=stat_dtype(dtype),
            param_dtype=param_dtype,
            use_fast_variance=False, rngs=rngs,
            scale_init=part(nnx.initializers.ones_init(), AXES["norm"]),
            bias_init=part(nnx.initializers.zeros_init(), AXES["norm"]))

    def __call__(self, x: Array) -> Array:
        return self.gn(x.astype(stat_dtype(self.dtype))).astype(self.dtype)


def Conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: Any = None, *,
         init_scale: float = 1.0, use_bias: bool = True, dtype: Dtype = jnp.float32,
         param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> nnx.Conv:
    """2-D convolution, NHWC. ``padding=None`` is symmetric ``kernel // 2``."""
    if padding is None:
        padding = ((kernel // 2, kernel // 2),) * 2
    return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding=padding, use_bias=use_bias,
                    dtype=dtype, param_dtype=param_dtype, kernel_init=conv_init(init_scale),
                    bias_init=part(nnx.initializers.zeros_init(), AXES["bias"]), rngs=rngs)


def Dense(cin: int, cout: int, *, init_scale: float = 1.0, dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> nnx.Linear:
    """Dense layer (also the 1x1 "NIN" convolutions of DDPM and score_sde)."""
    return nnx.Linear(cin, cout, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=dense_init(init_scale),
                      bias_init=part(nnx.initializers.zeros_init(), AXES["bias"]), rngs=rngs)


class TimeEmbedding(nnx.Module):
    """``Dense(din -> d) -> SiLU -> Dense(d -> d)`` (DDPM ``temb``; ADM ``time_embed``)."""

    def __init__(self, din: int, dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.linear_1 = Dense(din, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear_2 = Dense(dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, e: Array) -> Array:
        return self.linear_2(jax.nn.silu(self.linear_1(e)))


class FourierFeatures(nnx.Module):
    """Gaussian Fourier features of ``log(sigma)`` (score_sde ``GaussianFourierProjection``).

    ``W ~ N(0, scale^2)`` is fixed (not trained): stored as an ``nnx.Variable`` of type
    :class:`FourierWeight`, not an ``nnx.Param``; output ``[sin(2 pi x W), cos(2 pi x W)]``.
    """

    def __init__(self, size: int, scale: float = 16.0, *, rngs: nnx.Rngs):
        self.W = FourierWeight(jax.random.normal(rngs.params(), (size,), jnp.float32) * scale)

    def __call__(self, x: Array) -> Array:
        x = at_least_float32(x)
        proj = x[:, None] * self.W[...].astype(x.dtype)[None, :] * (2 * np.pi)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class FourierWeight(nnx.Variable):
    """A fixed (non-trainable) buffer: the random Fourier frequencies."""


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------


def _nearest_up(x: Array) -> Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _avg_down(x: Array) -> Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _fir_kernel(k: Sequence[float], gain: float) -> np.ndarray:
    k = np.asarray(k, np.float64)
    k = np.outer(k, k)
    return k / k.sum() * gain  # float64; cast to the input's dtype at use


def _upfirdn(x: Array, k: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> Array:
    """upfirdn2d (zero-insert by ``up``, pad, FIR filter, keep every ``down``-th), depthwise."""
    c = x.shape[-1]
    kk = jnp.asarray(np.flip(k, (0, 1)).copy(), x.dtype)[:, :, None, None]
    kk = jnp.tile(kk, (1, 1, 1, c))
    p0, p1 = pad
    return jax.lax.conv_general_dilated(
        x, kk, window_strides=(down, down), padding=((p0, p1 + up - 1), (p0, p1 + up - 1)),
        lhs_dilation=(up, up), dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def fir_upsample_2d(x: Array, kernel: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Array:
    """FIR upsampling of score_sde/StyleGAN2 ``upsample_2d`` (NHWC)."""
    k = _fir_kernel(kernel, factor ** 2)
    p = k.shape[0] - factor
    return _upfirdn(x, k, factor, 1, ((p + 1) // 2 + factor - 1, p // 2))


def fir_downsample_2d(x: Array, kernel: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Array:
    """FIR downsampling of score_sde/StyleGAN2 ``downsample_2d`` (NHWC)."""
    k = _fir_kernel(kernel, 1.0)
    p = k.shape[0] - factor
    return _upfirdn(x, k, 1, factor, ((p + 1) // 2, p // 2))


class Downsample(nnx.Module):
    """2x down-sampling.

    ``with_conv``: a 3x3 stride-2 conv; ``padding='same'`` pads (0, 1) as TF's ``SAME`` (DDPM,
    diffusers ``downsample_padding=0``), ``padding=1`` pads (1, 1) (iDDPM/ADM, diffusers
    default). Without conv: 2x2 average pooling, or FIR when ``fir_kernel`` is given (and with
    a conv, score_sde's fused FIR conv is replaced by FIR-blur then a stride-1 3x3 conv: same
    parameters, documented simplification).
    """

    def __init__(self, cin: int, cout: int | None = None, *, with_conv: bool = True,
                 padding: Any = 1, fir_kernel: Sequence[float] | None = None,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        cout = cout or cin
        self.with_conv, self.fir_kernel = with_conv, (tuple(fir_kernel) if fir_kernel else None)
        conv = None
        if with_conv:
            if self.fir_kernel:
                conv = Conv(cin, cout, 3, 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            else:
                pad = "SAME" if padding in ("same", 0) else ((padding, padding),) * 2
                conv = Conv(cin, cout, 3, 2, pad, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv = conv
        if not with_conv and cout != cin:
            raise ValueError("Downsample without conv cannot change the channel count")

    def __call__(self, x: Array) -> Array:
        if self.fir_kernel:
            x = fir_downsample_2d(x, self.fir_kernel)
            return self.conv(x) if self.conv is not None else x
        return self.conv(x) if self.conv is not None else _avg_down(x)


class Upsample(nnx.Module):
    """2x up-sampling: nearest (or FIR) then an optional 3x3 conv."""

    def __init__(self, cin: int, cout: int | None = None, *, with_conv: bool = True,
                 fir_kernel: Sequence[float] | None = None, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        cout = cout or cin
        self.fir_kernel = tuple(fir_kernel) if fir_kernel else None
        self.conv = (Conv(cin, cout, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                     if with_conv else None)

    def __call__(self, x: Array) -> Array:
        x = fir_upsample_2d(x, self.fir_kernel) if self.fir_kernel else _nearest_up(x)
        return self.conv(x) if self.conv is not None else x


# --------------------------------------------------------------------------------------------
# Residual and attention blocks
# --------------------------------------------------------------------------------------------


class ResBlock(nnx.Module):
    """Pre-activation residual block with time conditioning.

    ``h = conv1(act(norm1(x)))``; ``h += Dense(act(emb))`` (DDPM) or, with ``scale_shift``,
    ``h = norm2(h) * (1 + scale) + shift`` (ADM's AdaGN); ``h = conv2(dropout(act(norm2 h)))``;
    output ``skip(x) + h`` (divided by sqrt(2) with ``skip_rescale``, score_sde). ``up``/``down``
    resample inside the block, after ``act(norm1)`` and on the skip path (BigGAN / ADM
    ``resblock_updown``; nearest/avg-pool, or FIR with ``fir_kernel``). ``skip`` is a 1x1 conv
    when channels change (or, with ``shortcut_on_resample``, also when resampling: score_sde's
    BigGAN++ block).
    """

    def __init__(self, cin: int, cout: int | None = None, temb_dim: int | None = None, *,
                 dropout: float = 0.0, scale_shift: bool = False, up: bool = False,
                 down: bool = False, groups: int | None = 32, eps: float = 1e-5,
                 skip_rescale: bool = False, fir_kernel: Sequence[float] | None = None,
                 shortcut_on_resample: bool = False, zero_init_out: bool = True,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        cout = cout or cin
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.scale_shift, self.up, self.down = scale_shift, up, down
        self.skip_rescale = skip_rescale
        self.fir_kernel = tuple(fir_kernel) if fir_kernel else None
        self.norm1 = GroupNorm(cin, groups, eps, **kw)
        self.conv1 = Conv(cin, cout, 3, **kw)
        self.temb = (Dense(temb_dim, 2 * cout if scale_shift else cout, **kw)
                     if temb_dim is not None else None)
        self.norm2 = GroupNorm(cout, groups, eps, **kw)
        self.dropout = nnx.Dropout(dropout)
        self.conv2 = Conv(cout, cout, 3, init_scale=0.0 if zero_init_out else 1.0, **kw)
        need_skip = cin != cout or (shortcut_on_resample and (up or down))
        self.skip = Conv(cin, cout, 1, **kw) if need_skip else None
        self.dtype = dtype

    def _resample(self, x):
        if self.up:
            return fir_upsample_2d(x, self.fir_kernel) if self.fir_kernel else _nearest_up(x)
        if self.down:
            return fir_downsample_2d(x, self.fir_kernel) if self.fir_kernel else _avg_down(x)
        return x

    def __call__(self, x: Array, emb: Array | None, *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> Array:
        h = jax.nn.silu(self.norm1(x))
        if self.up or self.down:
            h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)
        e = None
        if self.temb is not None and emb is not None:
            e = self.temb(jax.nn.silu(emb)).astype(h.dtype)[:, None, None, :]
        if self.scale_shift and e is not None:
            scale, shift = jnp.split(e, 2, axis=-1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            if e is not None:
                h = h + e
            h = self.norm2(h)
        h = jax.nn.silu(h)
        h = self.dropout(h, deterministic=not train, rngs=rngs)
        h = self.conv2(h)
        if self.skip is not None:
            x = self.skip(x)
        out = x.astype(h.dtype) + h
        return out * INV_SQRT2 if self.skip_rescale else out


class AttnBlock(nnx.Module):
    """Spatial self-attention: ``x + proj(attn(q, k, v))`` over the ``H*W`` tokens of
    ``norm(x)`` (DDPM ``attn_block``, ADM ``AttentionBlock``, score_sde ``AttnBlockpp``).

    Heads: ``num_head_channels`` (ADM's 64 channels per head) wins over ``num_heads``.
    Attention runs through ``jax.nn.dot_product_attention``. ``q, k, v, proj`` are separate
    Dense layers (equal to DDPM's NIN layers; ADM's fused ``qkv`` conv splits into them).
    """

    def __init__(self, channels: int, *, num_heads: int = 1, num_head_channels: int | None = None,
                 groups: int | None = 32, eps: float = 1e-5, skip_rescale: bool = False,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if num_head_channels:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels "
                                 f"{num_head_channels}")
            num_heads = channels // num_head_channels
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.num_heads, self.skip_rescale = num_heads, skip_rescale
        self.norm = GroupNorm(channels, groups, eps, **kw)
        self.q = Dense(channels, channels, **kw)
        self.k = Dense(channels, channels, **kw)
        self.v = Dense(channels, channels, **kw)
        self.proj = Dense(channels, channels, init_scale=0.0, **kw)

    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        n = self.num_heads
        h = self.norm(x).reshape(b, hh * ww, c)
        q, k, v = (m(h).reshape(b, hh * ww, n, c // n) for m in (self.q, self.k, self.v))
        o = dot_product_attention(q, k, v).reshape(b, hh * ww, c)
        out = x + self.proj(o).reshape(b, hh, ww, c).astype(x.dtype)
        return out * INV_SQRT2 if self.skip_rescale else out


class AttentionPool2d(nnx.Module):
    """ADM's attention pooling (guided-diffusion ``AttentionPool2d``, CLIP-style).

    Tokens are ``[mean(x), x_1..x_HW]`` plus a learned positional embedding; multi-head
    attention (``channels // num_head_channels`` heads); the output is the projected first
    token, shape ``(B, out_dim)``.
    """

    def __init__(self, spatial: int, channels: int, num_head_channels: int, out_dim: int, *,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.spatial, self.num_heads = spatial, channels // num_head_channels
        pos = jax.random.normal(rngs.params(), (spatial * spatial + 1, channels), param_dtype)
        self.pos_emb = nnx.Param(pos / channels ** 0.5, out_sharding=AXES["pos"],
                                 eager_sharding=False)
        self.qkv = Dense(channels, 3 * channels, **kw)
        self.proj = Dense(channels, out_dim, **kw)
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        if hh != self.spatial or ww != self.spatial:
            raise ValueError(f"AttentionPool2d expects {self.spatial}x{self.spatial} features; "
                             f"got {hh}x{ww}")
        n = self.num_heads
        t = x.reshape(b, hh * ww, c)
        t = jnp.concatenate([t.mean(axis=1, keepdims=True), t], axis=1)
        t = t + self.pos_emb[...].astype(t.dtype)[None]
        q, k, v = jnp.split(self.qkv(t), 3, axis=-1)
        q, k, v = (a.reshape(b, hh * ww + 1, n, c // n) for a in (q, k, v))
        o = dot_product_attention(q, k, v).reshape(b, hh * ww + 1, c)
        return self.proj(o[:, 0])
