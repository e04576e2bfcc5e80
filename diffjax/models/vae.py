"""AutoencoderKL (the latent-diffusion VAE) in Flax NNX.

The KL-regularised autoencoder of Rombach et al. 2022, "High-Resolution Image Synthesis with
Latent Diffusion Models" (arXiv 2112.10752), section 3.1 and appendix G: a convolutional encoder
maps an image ``x`` in ``[-1, 1]`` to the mean and log-variance of a diagonal Gaussian
posterior ``q(z | x)`` (eq. in appendix G: a slight KL penalty towards ``N(0, I)``), and a
convolutional decoder maps ``z`` back to pixels. Diffusion models train on the *scaled* latent
``(z - shift_factor) * scaling_factor`` (section 4.3.2: ``scaling_factor`` rescales the latent to
unit variance; 0.18215 for the SD VAE).

The module layout and every numerical detail follow diffusers' ``AutoencoderKL`` so that its
checkpoints convert by renaming (:mod:`diffjax.convert.vae`):

* GroupNorm with 32 groups and ``eps = 1e-6``; SiLU; ResNet blocks
  ``norm1 -> silu -> conv1 -> norm2 -> silu -> conv2`` plus a 1x1 ``conv_shortcut`` when the
  width changes;
* stride-2 downsampling *after padding one row at the bottom and one column at the right*
  (asymmetric: a symmetric "SAME" padding gives different numbers);
* nearest-neighbour 2x upsampling followed by a 3x3 convolution;
* single-head self-attention of width ``C`` (scale ``1/sqrt(C)``) in the middle blocks and,
  for layouts such as LDM's ``attn_resolutions=[16]``, after each ResNet of chosen levels;
* the decoder has ``layers_per_block + 1`` ResNets a level, the encoder ``layers_per_block``;
* 1x1 ``quant_conv`` / ``post_quant_conv`` around the latent; log-variance clamped to
  ``[-30, 20]``.

Presets (:data:`VAE_PRESETS`):

============  ========================================================================
``sd``        the Stable Diffusion VAE, ``sd-vae-ft-ema`` / ``sd-vae-ft-mse`` layout: f8,
              4 latent channels, ``block_out_channels=(128, 256, 512, 512)``, 2 ResNets a
              level, ``scaling_factor=0.18215`` (83.65 M parameters)
``f16d32``    the VA-VAE of LightningDiT (Yao et al. 2025, arXiv 2501.01423, section 3;
              an LDM ``AutoencoderKL`` with ``ch=128, ch_mult=(1, 1, 2, 2, 4)``,
              ``attn_resolutions=[16]``, ``z_channels=embed_dim=32``): f16, 32 channels.
              LightningDiT normalises its latents with per-channel statistics, so
              ``scaling_factor=1``.
``tiny``      f4, 4 channels, widths (16, 32, 32), one ResNet a level: for tests and ``:smoke``
``tiny_f16``  f4, 8 channels, attention at the last level: the f16d32 layout in miniature
============  ========================================================================

Dtype policy (as every diffjax network): parameters live in ``param_dtype``, convolutions and
matmuls run in ``dtype``; group norms and the attention softmax run in
``promote_types(dtype, float32)`` (float32 for bf16 compute, float64 when float64 is asked for,
so the model is exact at float64 for parity tests).

Logical axis names on parameters are those of the UNet family
(:data:`diffjax.models.layers_unet.AXES`): conv kernels ``(None, None, 'channels_in',
'channels_out')``, dense kernels ``('channels_in', 'channels_out')``, biases
``('channels_out',)``, norm parameters ``('channels',)``; the rules table leaves them
replicated and :func:`diffjax.models.layers.logical_to_mesh_sharding` shards the large ones by
shape (FSDP). Encoding and decoding shard over the batch.

Images are NHWC in ``[-1, 1]``; latents are NHWC.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from diffjax.models.layers_unet import AXES

Array = Any
Dtype = Any

__all__ = [
    "VAEConfig",
    "VAE_PRESETS",
    "vae_config",
    "DiagonalGaussian",
    "AutoencoderKL",
    "vae_from_preset",
]


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture of an :class:`AutoencoderKL` (diffusers ``AutoencoderKL`` config names).

    Attributes:
      in_channels: image channels.
      out_channels: decoded image channels.
      latent_channels: channels of ``z``.
      block_out_channels: width of each encoder level (the decoder mirrors it); the spatial
        downsampling factor is ``2 ** (len(block_out_channels) - 1)``.
      layers_per_block: ResNets per encoder level (the decoder uses one more).
      attn_levels: encoder level indices (0 = full resolution) whose ResNets are each followed
        by self-attention (diffusers ``AttnDownEncoderBlock2D``); the decoder mirrors them.
      mid_block_attention: self-attention between the two middle ResNets.
      norm_num_groups: GroupNorm groups.
      norm_eps: GroupNorm epsilon.
      use_quant_conv: 1x1 conv on the posterior moments.
      use_post_quant_conv: 1x1 conv on ``z`` before decoding.
      scaling_factor: latents seen by the diffusion model are
        ``(z - shift_factor) * scaling_factor``.
      shift_factor: see ``scaling_factor`` (0 for the SD VAE).
      sample_size: nominal image size (documentation only; any multiple of the factor works).
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    attn_levels: tuple[int, ...] = ()
    mid_block_attention: bool = True
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    sample_size: int = 256

    @property
    def downsample_factor(self) -> int:
        """Spatial reduction of the encoder."""
        return 2 ** (len(self.block_out_channels) - 1)

    def __post_init__(self):
        boc = tuple(int(c) for c in self.block_out_channels)
        object.__setattr__(self, "block_out_channels", boc)
        object.__setattr__(self, "attn_levels", tuple(int(i) for i in self.attn_levels))
        if not boc:
            raise ValueError("block_out_channels must name at least one level")
        for c in boc:
            if c % self.norm_num_groups:
                raise ValueError(f"block_out_channels {boc}: every width must be divisible by "
                                 f"norm_num_groups={self.norm_num_groups}")
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block must be >= 1, got {self.layers_per_block}")
        for i in self.attn_levels:
            if not 0 <= i < len(boc):
                raise ValueError(f"attn_levels {self.attn_levels}: level {i} outside "
                                 f"0..{len(boc) - 1}")
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {self.latent_channels}")


#: named architectures (see the module docstring)
VAE_PRESETS: dict[str, VAEConfig] = {
    "sd": VAEConfig(),
    "f16d32": VAEConfig(latent_channels=32, block_out_channels=(128, 128, 256, 256, 512),
                        layers_per_block=2, attn_levels=(4,), scaling_factor=1.0),
    "tiny": VAEConfig(latent_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1,
                      norm_num_groups=8, scaling_factor=1.0, sample_size=32),
    "tiny_f16": VAEConfig(latent_channels=8, block_out_channels=(8, 16, 16), layers_per_block=1,
                          attn_levels=(2,), norm_num_groups=4, scaling_factor=1.0,
                          sample_size=32),
}
VAE_PRESETS["sd-vae-ft-ema"] = VAE_PRESETS["sd"]
VAE_PRESETS["sd-vae-ft-mse"] = VAE_PRESETS["sd"]


def vae_config(preset: str | VAEConfig = "sd", **overrides) -> VAEConfig:
    """A :class:`VAEConfig` from a preset name (or a config) with field overrides.

    Raises:
      ValueError: unknown preset or field.
    """
    if isinstance(preset, VAEConfig):
        base = preset
    elif preset in VAE_PRESETS:
        base = VAE_PRESETS[preset]
    else:
        raise ValueError(f"unknown VAE preset {preset!r}; expected one of {sorted(VAE_PRESETS)}")
    fields = {f.name for f in dataclasses.fields(VAEConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown VAEConfig field(s) {bad}; expected some of {sorted(fields)}")
    return dataclasses.replace(base, **overrides)


# ----------------------------------------------------------------------------------------------
# Posterior
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class DiagonalGaussian:
    """The posterior ``q(z | x) = N(mean, diag(exp(logvar)))`` (LDM appendix G).

    ``logvar`` is clamped to ``[-30, 20]`` at construction (as the reference does) so that
    ``exp`` neither under- nor overflows.
    """

    mean: Array
    logvar: Array

    @classmethod
    def from_moments(cls, moments: Array) -> DiagonalGaussian:
        """Split ``(..., 2 C)`` moments into mean (first half) and log-variance."""
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean=mean, logvar=jnp.clip(logvar, -30.0, 20.0))

    @property
    def std(self) -> Array:
        return jnp.exp(0.5 * self.logvar)

    @property
    def var(self) -> Array:
        return jnp.exp(self.logvar)

    def mode(self) -> Array:
        """The posterior mode (= mean)."""
        return self.mean

    def sample(self, key: Array) -> Array:
        """``z = mean + std * eps``, ``eps ~ N(0, I)`` (reparameterised)."""
        eps = jax.random.normal(key, self.mean.shape, self.mean.dtype)
        return self.mean + self.std * eps

    def kl(self, other: DiagonalGaussian | None = None) -> Array:
        """``KL(self || other)`` per example, summed over all non-batch axes.

        With ``other=None`` the prior ``N(0, I)``:
        ``0.5 * sum(mean^2 + var - 1 - logvar)``.
        """
        axes = tuple(range(1, self.mean.ndim))
        if other is None:
            return 0.5 * jnp.sum(self.mean ** 2 + self.var - 1.0 - self.logvar, axis=axes)
        return 0.5 * jnp.sum((self.mean - other.mean) ** 2 / other.var + self.var / other.var
                             - 1.0 - self.logvar + other.logvar, axis=axes)

    def nll(self, z: Array) -> Array:
        """``-log q(z | x)`` per example."""
        axes = tuple(range(1, self.mean.ndim))
        return 0.5 * jnp.sum(math.log(2.0 * math.pi) + self.logvar
                             + (z - self.mean) ** 2 / self.var, axis=axes)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


def _part(init, names):
    return nnx.with_partitioning(init, names, eager_sharding=False)


def _stat_dtype(dtype) -> Any:
    # statistics in at least fp32 (bf16 group norms drift), in fp64 when fp64 is asked for
    return jnp.promote_types(dtype, jnp.float32)


class GroupNorm(nnx.Module):
    """GroupNorm with statistics in ``promote_types(dtype, float32)``; output in ``dtype``."""

    def __init__(self, channels: int, groups: int, eps: float, *, dtype, param_dtype,
                 rngs: nnx.Rngs):
        self.dtype = dtype
        self.norm = nnx.GroupNorm(
            channels, num_groups=groups, epsilon=eps, dtype=_stat_dtype(dtype),
            param_dtype=param_dtype, use_fast_variance=False, rngs=rngs,
            scale_init=_part(nnx.initializers.ones_init(), AXES["norm"]),
            bias_init=_part(nnx.initializers.zeros_init(), AXES["norm"]))

    def __call__(self, x: Array) -> Array:
        return self.norm(x.astype(_stat_dtype(self.dtype))).astype(self.dtype)


def _conv(cin: int, cout: int, kernel: int, *, stride: int = 1, padding: Any = "SAME", dtype,
          param_dtype, rngs: nnx.Rngs) -> nnx.Conv:
    # torch's default Conv2d init (kaiming-uniform, a=sqrt(5)) = variance scaling 1/3, fan_in
    init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding=padding,
                    dtype=dtype, param_dtype=param_dtype, kernel_init=_part(init, AXES["conv"]),
                    bias_init=_part(nnx.initializers.zeros_init(), AXES["bias"]), rngs=rngs)


def _dense(cin: int, cout: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    return nnx.Linear(cin, cout, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=_part(init, AXES["dense"]),
                      bias_init=_part(nnx.initializers.zeros_init(), AXES["bias"]), rngs=rngs)


class ResnetBlock(nnx.Module):
    """``x + conv2(silu(norm2(conv1(silu(norm1(x))))))`` with a 1x1 shortcut on width change
    (diffusers ``ResnetBlock2D`` without time embedding; LDM ``ResnetBlock``)."""

    def __init__(self, cin: int, cout: int, cfg: VAEConfig, *, dtype, param_dtype,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.norm1 = GroupNorm(cin, g, eps, **kw)
        self.conv1 = _conv(cin, cout, 3, **kw)
        self.norm2 = GroupNorm(cout, g, eps, **kw)
        self.conv2 = _conv(cout, cout, 3, **kw)
        self.conv_shortcut = _conv(cin, cout, 1, **kw) if cin != cout else None

    def __call__(self, x: Array) -> Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class AttnBlock(nnx.Module):
    """Single-head spatial self-attention with a residual (LDM ``AttnBlock``; diffusers
    ``Attention(heads=1, dim_head=C, residual_connection=True)``): softmax of
    ``q k^T / sqrt(C)`` over all ``H W`` positions."""

    def __init__(self, channels: int, cfg: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.group_norm = GroupNorm(channels, cfg.norm_num_groups, cfg.norm_eps, **kw)
        self.to_q = _dense(channels, channels, **kw)
        self.to_k = _dense(channels, channels, **kw)
        self.to_v = _dense(channels, channels, **kw)
        self.to_out = _dense(channels, channels, **kw)

    def __call__(self, x: Array) -> Array:
        b, h, w, c = x.shape
        y = self.group_norm(x).reshape(b, h * w, c)
        q, k, v = self.to_q(y), self.to_k(y), self.to_v(y)
        logits = jnp.einsum("bqc,bkc->bqk", q, k).astype(_stat_dtype(self.dtype))
        attn = jax.nn.softmax(logits / math.sqrt(c), axis=-1).astype(v.dtype)
        y = self.to_out(jnp.einsum("bqk,bkc->bqc", attn, v))
        return x + y.reshape(b, h, w, c)


class Downsample(nnx.Module):
    """3x3 stride-2 conv after padding one row at the bottom and one column at the right."""

    def __init__(self, channels: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, 3, stride=2, padding=((0, 1), (0, 1)),
                          dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 conv."""

    def __init__(self, channels: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class Level(nnx.Module):
    """One encoder or decoder level: ResNets (each followed by attention at attention levels)
    and an optional resampler (``downsamplers.0`` / ``upsamplers.0`` in diffusers)."""

    def __init__(self, cin: int, cout: int, n: int, attn: bool, resample: str | None,
                 cfg: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([ResnetBlock(cin if i == 0 else cout, cout, cfg, **kw)
                                 for i in range(n)])
        self.attentions = nnx.List([AttnBlock(cout, cfg, **kw) for _ in range(n)] if attn
                                   else [])
        if resample == "down":
            self.sampler = Downsample(cout, **kw)
        elif resample == "up":
            self.sampler = Upsample(cout, **kw)
        else:
            self.sampler = None

    def __call__(self, x: Array) -> Array:
        for i, res in enumerate(self.resnets):
            x = res(x)
            if len(self.attentions):
                x = self.attentions[i](x)
        if self.sampler is not None:
            x = self.sampler(x)
        return x


class MidBlock(nnx.Module):
    """ResNet, (attention), ResNet at the lowest resolution."""

    def __init__(self, channels: int, cfg: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([ResnetBlock(channels, channels, cfg, **kw) for _ in range(2)])
        self.attention = AttnBlock(channels, cfg, **kw) if cfg.mid_block_attention else None

    def __call__(self, x: Array) -> Array:
        x = self.resnets[0](x)
        if self.attention is not None:
            x = self.attention(x)
        return self.resnets[1](x)


class Encoder(nnx.Module):
    """Image ``(B, H, W, in)`` -> posterior moments ``(B, H/f, W/f, 2 latent)``."""

    def __init__(self, cfg: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        boc = cfg.block_out_channels
        self.dtype = dtype
        self.conv_in = _conv(cfg.in_channels, boc[0], 3, **kw)
        levels, cin = [], boc[0]
        for i, cout in enumerate(boc):
            last = i == len(boc) - 1
            levels.append(Level(cin, cout, cfg.layers_per_block, i in cfg.attn_levels,
                                None if last else "down", cfg, **kw))
            cin = cout
        self.down_blocks = nnx.List(levels)
        self.mid_block = MidBlock(boc[-1], cfg, **kw)
        self.conv_norm_out = GroupNorm(boc[-1], cfg.norm_num_groups, cfg.norm_eps, **kw)
        self.conv_out = _conv(boc[-1], 2 * cfg.latent_channels, 3, **kw)

    def __call__(self, x: Array) -> Array:
        h = self.conv_in(x.astype(self.dtype))
        for level in self.down_blocks:
            h = level(h)
        h = self.mid_block(h)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(h)))


class Decoder(nnx.Module):
    """Latent ``(B, h, w, latent)`` -> image ``(B, h f, w f, out)``."""

    def __init__(self, cfg: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        boc = tuple(reversed(cfg.block_out_channels))
        n = len(boc)
        self.dtype = dtype
        self.conv_in = _conv(cfg.latent_channels, boc[0], 3, **kw)
        self.mid_block = MidBlock(boc[0], cfg, **kw)
        levels, cin = [], boc[0]
        for i, cout in enumerate(boc):
            enc_level = n - 1 - i
            levels.append(Level(cin, cout, cfg.layers_per_block + 1, enc_level in cfg.attn_levels,
                                None if i == n - 1 else "up", cfg, **kw))
            cin = cout
        self.up_blocks = nnx.List(levels)
        self.conv_norm_out = GroupNorm(boc[-1], cfg.norm_num_groups, cfg.norm_eps, **kw)
        self.conv_out = _conv(boc[-1], cfg.out_channels, 3, **kw)

    def __call__(self, z: Array) -> Array:
        h = self.conv_in(z.astype(self.dtype))
        h = self.mid_block(h)
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(h)))


# ----------------------------------------------------------------------------------------------
# The autoencoder
# ----------------------------------------------------------------------------------------------


def _chunked(fn, x: Array, chunk_size: int | None) -> Array:
    # lax.map with batch_size: one compiled body of `chunk_size` examples, remainder included,
    # so peak memory is that of one chunk whatever the batch.
    if chunk_size is None or x.shape[0] <= chunk_size:
        return fn(x)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    return jax.lax.map(lambda xi: fn(xi[None])[0], x, batch_size=int(chunk_size))


class AutoencoderKL(nnx.Module):
    """The KL autoencoder (Rombach et al. 2022, section 3.1) with diffusers' module layout.

    Args:
      cfg: the architecture (:class:`VAEConfig`, or a preset via :func:`vae_from_preset`).
      dtype: compute dtype (e.g. ``jnp.bfloat16``; ``jnp.float64`` with x64 on for parity).
      param_dtype: parameter dtype.
      rngs: parameter initialisation keys.

    Example::

        vae = vae_from_preset("sd", seed=0)
        z = vae.encode_latents(images)             # scaled latents for the diffusion model
        images = vae.decode_latents(z)             # back to [-1, 1] pixels
    """

    def __init__(self, cfg: VAEConfig, *, dtype: Dtype = jnp.float32,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        if not isinstance(cfg, VAEConfig):
            raise TypeError(f"cfg must be a VAEConfig, got {type(cfg).__name__}")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.cfg = cfg
        self.dtype = dtype
        self.encoder = Encoder(cfg, **kw)
        self.decoder = Decoder(cfg, **kw)
        lc = cfg.latent_channels
        self.quant_conv = _conv(2 * lc, 2 * lc, 1, **kw) if cfg.use_quant_conv else None
        self.post_quant_conv = _conv(lc, lc, 1, **kw) if cfg.use_post_quant_conv else None

    # -- raw maps ----------------------------------------------------------------------------
    def _check(self, x: Array, channels: int, what: str, factor: int = 1) -> None:
        if x.ndim != 4 or x.shape[-1] != channels:
            raise ValueError(f"{what} must be NHWC with {channels} channels, got shape "
                             f"{tuple(x.shape)}")
        if factor > 1 and (x.shape[1] % factor or x.shape[2] % factor):
            raise ValueError(f"{what}: height and width must be multiples of the downsampling "
                             f"factor {factor}, got {tuple(x.shape[1:3])}")

    def moments(self, x: Array) -> Array:
        """Posterior moments ``(B, h, w, 2 latent)`` of images ``x`` in ``[-1, 1]``."""
        self._check(x, self.cfg.in_channels, "images", self.cfg.downsample_factor)
        m = self.encoder(x)
        return self.quant_conv(m) if self.quant_conv is not None else m

    def encode(self, x: Array, *, chunk_size: int | None = None) -> DiagonalGaussian:
        """The posterior ``q(z | x)``; ``chunk_size`` encodes that many images at a time."""
        self._check(x, self.cfg.in_channels, "images", self.cfg.downsample_factor)
        return DiagonalGaussian.from_moments(_chunked(self.moments, x, chunk_size))

    def _decode(self, z: Array) -> Array:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z.astype(self.dtype))
        return self.decoder(z)

    def decode(self, z: Array, *, chunk_size: int | None = None) -> Array:
        """Unscaled latents ``z`` -> images (``[-1, 1]`` nominal range, not clipped)."""
        self._check(z, self.cfg.latent_channels, "latents")
        return _chunked(self._decode, z, chunk_size)

    def __call__(self, x: Array, *, key: Array | None = None) -> tuple[Array, DiagonalGaussian]:
        """Reconstruction of ``x`` (from a posterior sample when ``key`` is given, else the
        mode) and the posterior."""
        post = self.encode(x)
        z = post.sample(key) if key is not None else post.mode()
        return self.decode(z), post

    # -- latents as the diffusion model sees them ----------------------------------------------
    def scale(self, z: Array) -> Array:
        """``(z - shift_factor) * scaling_factor``."""
        return (z - self.cfg.shift_factor) * self.cfg.scaling_factor

    def unscale(self, latents: Array) -> Array:
        """Inverse of :meth:`scale`."""
        return latents / self.cfg.scaling_factor + self.cfg.shift_factor

    def encode_latents(self, x: Array, *, key: Array | None = None,
                       chunk_size: int | None = None) -> Array:
        """Scaled latents of images: the posterior mean (``key=None``) or a sample."""
        post = self.encode(x, chunk_size=chunk_size)
        return self.scale(post.sample(key) if key is not None else post.mode())

    def decode_latents(self, latents: Array, *, chunk_size: int | None = None) -> Array:
        """Scaled latents -> images in ``[-1, 1]`` (clipped)."""
        return jnp.clip(self.decode(self.unscale(latents), chunk_size=chunk_size), -1.0, 1.0)


def vae_from_preset(preset: str | VAEConfig = "sd", *, seed: int = 0,
                    dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                    **overrides) -> AutoencoderKL:
    """An :class:`AutoencoderKL` with random weights from a preset (see :data:`VAE_PRESETS`).

    Initialised under one ``jax.jit`` (eager NNX initialisation compiles one small program per
    parameter shape, which costs minutes on a slow CPU).
    """
    cfg = vae_config(preset, **overrides)

    def make():
        return AutoencoderKL(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))

    graphdef, _ = nnx.split(nnx.eval_shape(make))
    state = jax.jit(lambda: nnx.state(make()))()
    return nnx.merge(graphdef, state)


def latent_shape(cfg: VAEConfig, image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(h, w, latent_channels)`` of an ``(H, W, C)`` image."""
    f = cfg.downsample_factor
    return (int(image_shape[0]) // f, int(image_shape[1]) // f, cfg.latent_channels)


__all__.append("latent_shape")
