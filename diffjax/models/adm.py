"""iDDPM / ADM UNets and ADM's noisy classifier.

Papers: Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models" (arXiv
2102.09672); Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis" (arXiv
2105.05233). References: openai/improved-diffusion and openai/guided-diffusion
``guided_diffusion/unet.py`` (``UNetModel``, ``EncoderUNetModel``, ``AttentionPool2d``) and
``script_util.py`` (``create_model``, ``create_classifier``, channel multipliers per size), with
the flags of guided-diffusion's README for the released models.

The ADM changes over DDPM, all options of :class:`diffjax.models.unet.UNet`: adaptive group
norm (``scale_shift``), attention at 32/16/8 with 64 channels per head, BigGAN residual
up/down-sampling (``resblock_updown``), class embedding added to the time embedding, learned
variance output (``2C`` channels), sinusoidal features ``[cos, sin]`` with ``freq_shift=0``,
symmetric padding of strided convs, group-norm eps 1e-5. Attention ``qkv`` is stored as separate
``q``/``k``/``v`` Dense layers (a guided-diffusion ``qkv`` conv splits into them; the legacy
head order interleaves ``[q_h, k_h, v_h]`` per head).

Time input: the integer index ``0..T-1`` (``time_input('ddpm_index')``), or ``index * 1000/T``
for iDDPM's ``rescale_timesteps`` (``'iddpm_rescaled'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.models.layers import stat_dtype
from diffjax.models.layers_unet import AttentionPool2d, GroupNorm
from diffjax.models.unet import UNet

Array = Any

__all__ = ["ADMUNet", "ADMClassifier", "ADM_PRESETS", "CLASSIFIER_PRESETS", "adm_from_preset",
           "classifier_from_preset", "adm_config"]

_ADM_DEFAULTS = dict(scale_shift=True, downsample_padding=1, norm_groups=32, norm_eps=1e-5,
                     flip_sin_to_cos=True, freq_shift=0.0)


class ADMUNet(UNet):
    """ADM / iDDPM UNet: :class:`~diffjax.models.unet.UNet` with ADM's defaults
    (ImageNet 64x64 class-conditional model: ch 192, mult (1, 2, 3, 4), 3 blocks, attention at
    32/16/8 with 64 channels per head, BigGAN up/down, learned variance, 1000 classes).

    Called as ``net(x, t_index, y=labels, train=False, rngs=None)``; returns ``(B, H, W, 2C)``
    with ``learn_sigma`` (``[eps, v]``, as ``diffjax.sample(..., learned_variance=True)``
    expects).
    """

    def __init__(self, *, image_size: int = 64, in_channels: int = 3, ch: int = 192,
                 ch_mult: Sequence[float] = (1, 2, 3, 4), num_res_blocks: int = 3,
                 attn_resolutions: Sequence[int] = (32, 16, 8), dropout: float = 0.1,
                 num_heads: int = 1, num_head_channels: int | None = 64,
                 num_classes: int | None = 1000, learn_sigma: bool = True,
                 resblock_updown: bool = True, rngs: nnx.Rngs, **kwargs):
        cfg = {**_ADM_DEFAULTS, **kwargs}
        super().__init__(image_size=image_size, in_channels=in_channels, ch=ch, ch_mult=ch_mult,
                         num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
                         dropout=dropout, num_heads=num_heads,
                         num_head_channels=num_head_channels, num_classes=num_classes,
                         learn_sigma=learn_sigma, resblock_updown=resblock_updown, rngs=rngs,
                         **cfg)


class ADMClassifier(nnx.Module):
    """ADM's noise-aware classifier (guided-diffusion ``EncoderUNetModel``, ``pool='attention'``).

    The UNet's down path and middle block (time-conditioned, no class embedding), then
    ``GroupNorm -> SiLU -> AttentionPool2d`` to ``num_classes`` logits. Defaults: the 64x64
    classifier of ``classifier_defaults`` (width 128, depth 2, attention 32/16/8, 64 channels
    per head, scale-shift norm, BigGAN up/down).

    Called as ``clf(x, t_index, train=False, rngs=None) -> (B, num_classes)`` logits (fp32);
    ``x`` must be ``image_size`` square (the pooling's positional embedding is fixed).
    """

    def __init__(self, *, image_size: int = 64, in_channels: int = 3, num_classes: int = 1000,
                 ch: int = 128, ch_mult: Sequence[float] = (1, 2, 3, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (32, 16, 8), num_head_channels: int = 64,
                 dropout: float = 0.0, resblock_updown: bool = True, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, remat: bool = False, rngs: nnx.Rngs, **kwargs):
        cfg = {**_ADM_DEFAULTS, **kwargs}
        self.encoder = UNet(image_size=image_size, in_channels=in_channels, ch=ch, ch_mult=ch_mult,
                            num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
                            dropout=dropout, num_head_channels=num_head_channels,
                            resblock_updown=resblock_updown, dtype=dtype,
                            param_dtype=param_dtype, remat=remat, encoder_only=True, rngs=rngs,
                            **cfg)
        c = self.encoder.out_features
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = GroupNorm(c, cfg["norm_groups"], cfg["norm_eps"], **kw)
        self.pool = AttentionPool2d(image_size // self.encoder.factor, c, num_head_channels,
                                    num_classes, **kw)
        self.image_size, self.num_classes = image_size, num_classes

    def __call__(self, x: Array, t: Array, y: Array | None = None, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> Array:
        enc = self.encoder
        t = enc._check(x, t, None)
        if x.shape[1] != self.image_size or x.shape[2] != self.image_size:
            raise ValueError(f"x must be {self.image_size}x{self.image_size} (image_size); got "
                             f"{x.shape[1]}x{x.shape[2]}")
        h, _ = enc.encode(x, enc.embed(t, None), train, rngs)
        h = jax.nn.silu(self.norm(h))
        return self.pool(h).astype(stat_dtype(enc.dtype))


#: iDDPM / ADM presets (kwargs of :class:`ADMUNet`).
ADM_PRESETS: dict[str, dict] = {
    # improved-diffusion README, CIFAR-10: --num_channels 128 --num_res_blocks 3
    # --learn_sigma True --dropout 0.3; defaults: attention 16,8 with 4 heads, scale-shift norm,
    # conv resampling, unconditional.
    "iddpm_cifar10": dict(image_size=32, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=3,
                          attn_resolutions=(16, 8), num_heads=4, num_head_channels=None,
                          dropout=0.3, num_classes=None, resblock_updown=False),
    # improved-diffusion ImageNet-64 (unconditional): ch 128, 3 blocks, attention 16,8.
    "iddpm_imagenet64": dict(image_size=64, ch=128, ch_mult=(1, 2, 3, 4), num_res_blocks=3,
                             attn_resolutions=(16, 8), num_heads=4, num_head_channels=None,
                             dropout=0.0, num_classes=None, resblock_updown=False),
    # guided-diffusion README (64x64 class-conditional, dropout 0.1).
    "adm_imagenet64": dict(image_size=64, ch=192, ch_mult=(1, 2, 3, 4), num_res_blocks=3,
                           attn_resolutions=(32, 16, 8), num_head_channels=64, dropout=0.1,
                           num_classes=1000),
    # 128x128 class-conditional: --num_channels 256 --num_heads 4 --num_res_blocks 2.
    "adm_imagenet128": dict(image_size=128, ch=256, ch_mult=(1, 1, 2, 3, 4), num_res_blocks=2,
                            attn_resolutions=(32, 16, 8), num_heads=4, num_head_channels=None,
                            dropout=0.0, num_classes=1000),
    # 256x256 class-conditional: --num_channels 256 --num_head_channels 64 --num_res_blocks 2.
    "adm_imagenet256": dict(image_size=256, ch=256, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                            attn_resolutions=(32, 16, 8), num_head_channels=64, dropout=0.0,
                            num_classes=1000),
    "adm_imagenet256_uncond": dict(image_size=256, ch=256, ch_mult=(1, 1, 2, 2, 4, 4),
                                   num_res_blocks=2, attn_resolutions=(32, 16, 8),
                                   num_head_channels=64, dropout=0.0, num_classes=None),
}

#: ADM classifier presets (``create_classifier``: width 128, depth 2, attention 32,16,8).
CLASSIFIER_PRESETS: dict[str, dict] = {
    "adm_classifier64": dict(image_size=64, ch_mult=(1, 2, 3, 4)),
    "adm_classifier128": dict(image_size=128, ch_mult=(1, 1, 2, 3, 4)),
    "adm_classifier256": dict(image_size=256, ch_mult=(1, 1, 2, 2, 4, 4)),
}


def adm_config(preset: str, **overrides) -> dict:
    """The kwargs of an :data:`ADM_PRESETS` entry, with overrides."""
    if preset not in ADM_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(ADM_PRESETS)}")
    return {**ADM_PRESETS[preset], **overrides}


def adm_from_preset(preset: str, *, rngs: nnx.Rngs, **overrides) -> ADMUNet:
    """Build an ADM/iDDPM preset (use ``nnx.eval_shape`` for sizes only)."""
    return ADMUNet(**adm_config(preset, **overrides), rngs=rngs)


def classifier_from_preset(preset: str, *, rngs: nnx.Rngs, **overrides) -> ADMClassifier:
    """Build an ADM classifier preset."""
    if preset not in CLASSIFIER_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of "
                         f"{sorted(CLASSIFIER_PRESETS)}")
    return ADMClassifier(**{**CLASSIFIER_PRESETS[preset], **overrides}, rngs=rngs)
