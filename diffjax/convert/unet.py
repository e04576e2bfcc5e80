"""Convert diffusers ``UNet2DModel`` weights into :class:`diffjax.models.unet.UNet`.

diffusers' ``UNet2DModel`` (``diffusers/models/unets/unet_2d.py``) follows the DDPM layout:
``down_blocks[i].{resnets, attentions, downsamplers}``, ``mid_block``,
``up_blocks[i].{resnets, attentions, upsamplers}``. Our :class:`~diffjax.models.unet.UNet`
mirrors it, so conversion is a renaming plus layout changes (torch conv ``(O, I, kh, kw)`` ->
``(kh, kw, I, O)``; linear ``(O, I)`` -> ``(I, O)``). Supported block types:
``DownBlock2D``/``AttnDownBlock2D``/``ResnetDownsampleBlock2D`` and the matching up blocks,
``downsample_type``/``upsample_type`` ``'conv'`` or ``'resnet'`` (ADM's BigGAN up/down),
``resnet_time_scale_shift`` ``'default'`` or ``'scale_shift'`` (ADM's AdaGN),
``time_embedding_type='positional'``, ``num_class_embeds`` (class embedding).

Usage::

    cfg = unet_config_from_diffusers(torch_model.config)
    sd = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    net = load_diffusers_unet(sd, cfg)          # a ready UNet
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.unet import UNet

__all__ = ["unet_config_from_diffusers", "diffusers_key", "convert_diffusers_unet",
           "load_diffusers_unet"]

_DOWN = {"DownBlock2D": False, "AttnDownBlock2D": True, "ResnetDownsampleBlock2D": False}
_UP = {"UpBlock2D": False, "AttnUpBlock2D": True, "ResnetUpsampleBlock2D": False}


def unet_config_from_diffusers(config: Mapping[str, Any], **overrides) -> dict:
    """Keyword arguments for :class:`UNet` equivalent to a diffusers ``UNet2DModel`` config.

    Raises ``ValueError`` for options we do not model (Fourier time embedding, skip blocks,
    per-level layer counts, ...)."""
    c = dict(config)
    if c.get("time_embedding_type", "positional") != "positional":
        raise ValueError(f"time_embedding_type={c['time_embedding_type']!r} is not supported")
    if c.get("center_input_sample"):
        raise ValueError("center_input_sample=True is not supported")
    if c.get("class_embed_type") not in (None,):
        raise ValueError(f"class_embed_type={c['class_embed_type']!r} is not supported")
    if c.get("time_embedding_dim") not in (None, 4 * c["block_out_channels"][0]):
        raise ValueError("time_embedding_dim must be 4 * block_out_channels[0]")
    if c.get("mid_block_scale_factor", 1) != 1 or c.get("add_attention", True) is not True:
        raise ValueError("mid_block_scale_factor != 1 / add_attention=False are not supported")
    if c.get("act_fn", "silu") != "silu":
        raise ValueError(f"act_fn={c['act_fn']!r} is not supported")
    if c.get("attn_norm_num_groups") not in (None, c.get("norm_num_groups", 32)):
        raise ValueError("attn_norm_num_groups must equal norm_num_groups")
    if (c.get("resnet_time_scale_shift") == "scale_shift"
            and c.get("attn_norm_num_groups") is None):
        # diffusers then builds the mid-block attention without a group norm
        raise ValueError("with resnet_time_scale_shift='scale_shift' set attn_norm_num_groups="
                         "norm_num_groups (diffusers otherwise drops the mid attention's norm)")
    boc = list(c["block_out_channels"])
    downs, ups = list(c["down_block_types"]), list(c["up_block_types"])
    for b in downs:
        if b not in _DOWN:
            raise ValueError(f"down block type {b!r} not supported; expected one of {list(_DOWN)}")
    for b in ups:
        if b not in _UP:
            raise ValueError(f"up block type {b!r} not supported; expected one of {list(_UP)}")
    attn_down = [_DOWN[b] for b in downs]
    attn_up = [_UP[b] for b in ups][::-1]
    if attn_down != attn_up:
        raise ValueError("attention must sit at the same levels on the way down and up")
    size = c.get("sample_size") or 32
    size = size[0] if isinstance(size, (tuple, list)) else size
    ds = c.get("downsample_type", "conv")
    us = c.get("upsample_type", "conv")
    # ResnetDownsample/UpsampleBlock2D always resample with resnets
    updown_d = [ds == "resnet" or b == "ResnetDownsampleBlock2D" for b in downs[:-1]]
    updown_u = [us == "resnet" or b == "ResnetUpsampleBlock2D" for b in ups[:-1]]
    if len(set(updown_d + updown_u)) > 1:
        raise ValueError("mixed conv / resnet resampling across levels is not supported")
    hd = c.get("attention_head_dim")
    cfg = dict(
        image_size=int(size), in_channels=c.get("in_channels", 3),
        out_channels=c.get("out_channels", 3), ch=boc[0],
        ch_mult=tuple(b / boc[0] if b % boc[0] else b // boc[0] for b in boc),
        num_res_blocks=c.get("layers_per_block", 2),
        attn_resolutions=tuple(size // 2 ** i for i, a in enumerate(attn_down) if a),
        dropout=c.get("dropout", 0.0), num_heads=1, num_head_channels=hd,
        num_classes=c.get("num_class_embeds"),
        scale_shift=c.get("resnet_time_scale_shift", "default") == "scale_shift",
        resblock_updown=bool(updown_d and updown_d[0]),
        downsample_padding="same" if c.get("downsample_padding", 1) == 0 else c.get(
            "downsample_padding", 1),
        norm_groups=c.get("norm_num_groups", 32), norm_eps=c.get("norm_eps", 1e-5),
        flip_sin_to_cos=c.get("flip_sin_to_cos", True), freq_shift=c.get("freq_shift", 0),
    )
    cfg.update(overrides)
    return cfg


_RES = {"norm1": "norm1", "conv1": "conv1", "temb": "time_emb_proj", "norm2": "norm2",
        "conv2": "conv2", "skip": "conv_shortcut"}
_ATT = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj": "to_out.0"}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}


def diffusers_key(path: tuple) -> str:
    """The diffusers ``state_dict`` key of one of our parameter paths, e.g.
    ``('down', 1, 'attn', 0, 'q', 'kernel')`` -> ``'down_blocks.1.attentions.0.to_q.weight'``."""
    p = [str(x) for x in path]
    leaf = _LEAF[p[-1]]
    body = [x for x in p[:-1] if x != "gn"]  # our GroupNorm wrapper's inner module
    out: list[str] = []
    i = 0
    top = {"conv_in": "conv_in", "conv_out": "conv_out", "norm_out": "conv_norm_out",
           "time_embed": "time_embedding", "class_embed": "class_embedding"}
    head = body[0]
    if head in top:
        out.append(top[head])
        out += body[1:]
    elif head in ("down", "up"):
        lvl = body[1]
        out.append(f"{'down' if head == 'down' else 'up'}_blocks.{lvl}")
        kind = body[2]
        if kind == "res":
            out += [f"resnets.{body[3]}", _RES[body[4]]]
            i = 5
        elif kind == "attn":
            out += [f"attentions.{body[3]}", _ATT[body[4]]]
            i = 5
        elif kind == "resample":
            out.append("downsamplers.0" if head == "down" else "upsamplers.0")
            if body[3] == "conv":
                out.append("conv")
                i = 4
            else:
                out.append(_RES[body[3]])
                i = 4
        out += body[i:]
    elif head == "mid":
        sub = {"res1": ("resnets.0", _RES), "res2": ("resnets.1", _RES), "attn": ("attentions.0", _ATT)}
        name, table = sub[body[1]]
        out += ["mid_block", name, table[body[2]]]
        out += body[3:]
    else:
        raise KeyError(f"no diffusers name for parameter path {path}")
    return ".".join(out + [leaf])


def _to_jax(key: str, arr: np.ndarray, ours_shape: tuple) -> np.ndarray:
    a = np.asarray(arr, np.float32)
    if a.ndim == 4:
        a = a.transpose(2, 3, 1, 0)
    elif a.ndim == 2 and not key.endswith("class_embedding.weight"):
        a = a.T
    if a.shape != tuple(ours_shape):
        raise ValueError(f"{key}: converted shape {a.shape} != expected {tuple(ours_shape)}")
    return a


def convert_diffusers_unet(state_dict: Mapping[str, np.ndarray], model: UNet) -> UNet:
    """Load a diffusers ``UNet2DModel`` state dict (numpy arrays) into ``model``.

    ``model`` may be abstract (``nnx.eval_shape``): only its structure and shapes are used,
    and a new, concrete module is returned (no initialisation compute). Every parameter must be
    found and every key of ``state_dict`` used; a mismatch raises ``ValueError``."""
    graphdef, state = nnx.split(model)
    flat = list(nnx.to_flat_state(state))
    used = set()
    new = []
    for path, var in flat:
        if not isinstance(var, nnx.Param):
            raise ValueError(f"unexpected non-parameter state at {path}")
        key = diffusers_key(path)
        if key not in state_dict:
            raise ValueError(f"state_dict has no {key!r} (for our parameter {path})")
        val = _to_jax(key, state_dict[key], var.shape)
        used.add(key)
        new.append((path, var.replace(jnp.asarray(val, var.dtype))))
    extra = sorted(set(state_dict) - used)
    if extra:
        raise ValueError(f"unused state_dict keys: {extra[:10]}{' ...' if len(extra) > 10 else ''}")
    return nnx.merge(graphdef, nnx.from_flat_state(new))


def load_diffusers_unet(state_dict: Mapping[str, np.ndarray], config: Mapping[str, Any], *,
                        dtype: Any = jnp.float32) -> UNet:
    """Build a :class:`UNet` from our config (``unet_config_from_diffusers``) and load the
    diffusers weights into it (the model is built abstractly, so this is fast)."""
    abstract = nnx.eval_shape(lambda: UNet(**dict(config), dtype=dtype, rngs=nnx.Rngs(0)))
    return convert_diffusers_unet(state_dict, abstract)
