"""diffusers ``AutoencoderKL`` weights <-> :class:`diffjax.models.vae.AutoencoderKL`.

Our module tree mirrors diffusers' (``encoder.down_blocks.i.resnets.j.conv1`` ...), so conversion
is a renaming plus layout changes: torch conv ``(O, I, kh, kw)`` <-> ``(kh, kw, I, O)``, linear
``(O, I)`` <-> ``(I, O)``, GroupNorm ``weight`` <-> ``scale``. Differences in naming:

==================================  ===========================================
ours                                diffusers
==================================  ===========================================
``...down_blocks.i.sampler.conv``   ``...down_blocks.i.downsamplers.0.conv``
``...up_blocks.i.sampler.conv``     ``...up_blocks.i.upsamplers.0.conv``
``...mid_block.attention``          ``...mid_block.attentions.0``
``...to_out``                       ``...to_out.0``
``...normX.norm.scale``             ``...normX.weight``
==================================  ===========================================

Checkpoints saved by older diffusers versions (e.g. the files of ``stabilityai/sd-vae-ft-ema``)
name the attention projections ``query`` / ``key`` / ``value`` / ``proj_attn`` and may store them
as 1x1 convolutions ``(C, C, 1, 1)``; both are accepted.

Weights are read from a local file only (``.safetensors``, torch ``.bin`` / ``.pt``, or
``.npz``) or from a dict of numpy arrays; nothing is downloaded. Put, for example, the
``diffusion_pytorch_model.safetensors`` and ``config.json`` of ``stabilityai/sd-vae-ft-ema``
in a folder and pass the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.vae import AutoencoderKL, VAEConfig, vae_config

__all__ = [
    "vae_config_from_diffusers",
    "read_state_dict",
    "diffusers_vae_key",
    "from_diffusers_vae",
    "to_diffusers_vae",
    "load_diffusers_vae",
]

_OLD_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_DOWN = ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")
_UP = ("UpDecoderBlock2D", "AttnUpDecoderBlock2D")


def vae_config_from_diffusers(config: Mapping[str, Any], **overrides) -> VAEConfig:
    """A :class:`VAEConfig` equivalent to a diffusers ``AutoencoderKL`` config (a dict as in
    its ``config.json``).

    Raises:
      ValueError: an option we do not model (another activation, mismatched attention
        levels, unknown block types).
    """
    c = dict(config)
    if c.get("act_fn", "silu") != "silu":
        raise ValueError(f"act_fn={c['act_fn']!r} is not supported (expected 'silu')")
    boc = tuple(int(x) for x in c.get("block_out_channels", (64,)))
    downs = list(c.get("down_block_types", ["DownEncoderBlock2D"] * len(boc)))
    ups = list(c.get("up_block_types", ["UpDecoderBlock2D"] * len(boc)))
    if len(downs) != len(boc) or len(ups) != len(boc):
        raise ValueError("down_block_types / up_block_types must have one entry per "
                         "block_out_channels level")
    for b in downs:
        if b not in _DOWN:
            raise ValueError(f"down block type {b!r} is not supported; expected one of {_DOWN}")
    for b in ups:
        if b not in _UP:
            raise ValueError(f"up block type {b!r} is not supported; expected one of {_UP}")
    attn_down = [i for i, b in enumerate(downs) if b.startswith("Attn")]
    attn_up = sorted(len(boc) - 1 - i for i, b in enumerate(ups) if b.startswith("Attn"))
    if attn_down != attn_up:
        raise ValueError("attention must sit at the same levels in the encoder and decoder")
    size = c.get("sample_size") or 256
    size = size[0] if isinstance(size, (tuple, list)) else size
    shift = c.get("shift_factor")
    kwargs = dict(
        in_channels=int(c.get("in_channels", 3)), out_channels=int(c.get("out_channels", 3)),
        latent_channels=int(c.get("latent_channels", 4)), block_out_channels=boc,
        layers_per_block=int(c.get("layers_per_block", 1)), attn_levels=tuple(attn_down),
        mid_block_attention=bool(c.get("mid_block_add_attention", True)),
        norm_num_groups=int(c.get("norm_num_groups", 32)),
        use_quant_conv=bool(c.get("use_quant_conv", True)),
        use_post_quant_conv=bool(c.get("use_post_quant_conv", True)),
        scaling_factor=float(c.get("scaling_factor", 0.18215)),
        shift_factor=0.0 if shift is None else float(shift), sample_size=int(size))
    kwargs.update(overrides)
    return VAEConfig(**kwargs)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict from a local ``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` /
    ``.npz`` file, or from the diffusers weight file inside a folder.

    Raises:
      FileNotFoundError: no such file, or a folder without a recognised weight file.
      ValueError: an unknown file extension.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                     "model.safetensors", "vae.safetensors"):
            if (p / name).exists():
                return read_state_dict(p / name)
        raise FileNotFoundError(f"no diffusers weight file (diffusion_pytorch_model.safetensors "
                                f"or .bin) in {p}")
    if not p.exists():
        raise FileNotFoundError(f"VAE weights not found: {p} (diffjax downloads nothing; "
                                "place the file there)")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return dict(load_file(str(p)))
        except TypeError:  # bfloat16 tensors: numpy has no bf16, go through torch
            from safetensors.torch import load_file as load_torch

            return {k: v.float().numpy() for k, v in load_torch(str(p)).items()}
    if suffix in (".bin", ".pt", ".pth", ".ckpt"):
        import torch

        sd = torch.load(str(p), map_location="cpu", weights_only=True)
        if isinstance(sd, Mapping) and "state_dict" in sd:
            sd = sd["state_dict"]
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                for k, v in sd.items()}
    if suffix == ".npz":
        with np.load(p) as f:
            return {k: f[k] for k in f.files}
    raise ValueError(f"unknown weight file extension {suffix!r} for {p}; expected .safetensors, "
                     ".bin, .pt, .pth, .ckpt or .npz")


def _normalise(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Old attention names -> new; 1x1-conv attention weights -> linear; 'vae.' prefix off."""
    out = {}
    for k, v in sd.items():
        v = np.asarray(v)
        if k.startswith("vae."):
            k = k[4:]
        parts = k.split(".")
        if len(parts) >= 2 and parts[-2] in _OLD_ATTN:
            parts = parts[:-2] + _OLD_ATTN[parts[-2]].split(".") + parts[-1:]
            k = ".".join(parts)
        if ".attentions." in k and k.endswith(".weight") and v.ndim == 4:
            v = v[:, :, 0, 0]
        out[k] = v
    return out


def diffusers_vae_key(path: tuple) -> str:
    """The diffusers key of one of our parameter paths, e.g.
    ``('encoder', 'down_blocks', 0, 'sampler', 'conv', 'kernel')`` ->
    ``'encoder.down_blocks.0.downsamplers.0.conv.weight'``."""
    p = [str(x) for x in path]
    out: list[str] = []
    for name in p[:-1]:
        if name == "norm":  # the inner nnx.GroupNorm of our GroupNorm wrapper
            continue
        if name == "sampler":
            out += ["downsamplers" if p[0] == "encoder" else "upsamplers", "0"]
        elif name == "attention":
            out += ["attentions", "0"]
        elif name == "to_out":
            out += ["to_out", "0"]
        else:
            out.append(name)
    return ".".join(out + [_LEAF[p[-1]]])


def _to_ours(v: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel":
        return np.transpose(v, (2, 3, 1, 0)) if v.ndim == 4 else v.T
    return v


def _to_torch(v: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel":
        return np.transpose(v, (3, 2, 0, 1)) if v.ndim == 4 else v.T
    return v


def from_diffusers_vae(model: AutoencoderKL, state_dict: Mapping[str, Any], *,
                       strict: bool = True) -> AutoencoderKL:
    """Load a diffusers ``AutoencoderKL`` state dict into ``model`` (in place; returned).

    Args:
      model: an :class:`AutoencoderKL` of the matching architecture (concrete, or abstract
        from ``nnx.eval_shape``: every parameter is replaced).
      state_dict: ``{key: array}`` (numpy, or anything ``np.asarray`` accepts).
      strict: raise on keys of the state dict that the model does not use.

    Raises:
      KeyError: a parameter missing from the state dict (or, with ``strict``, unused keys).
      ValueError: a shape mismatch (wrong architecture).
    """
    sd = _normalise(state_dict)
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    used = set()
    for path, var in flat.items():
        key = diffusers_vae_key(path)
        if key not in sd:
            raise KeyError(f"parameter {key!r} (ours: {'.'.join(map(str, path))}) is missing "
                           "from the state dict")
        value = _to_ours(sd[key], str(path[-1]))
        if value.shape != var.get_value().shape:
            raise ValueError(f"{key}: shape {value.shape} (after layout change) does not match "
                             f"the model's {var.get_value().shape}; wrong VAE config?")
        var.set_value(jnp.asarray(value, var.get_value().dtype))
        used.add(key)
    unused = sorted(set(sd) - used)
    if strict and unused:
        raise KeyError(f"{len(unused)} state-dict keys unused by the model, e.g. {unused[:5]}")
    nnx.update(model, state)
    return model


def to_diffusers_vae(model: AutoencoderKL) -> dict[str, np.ndarray]:
    """Our parameters as a diffusers ``AutoencoderKL`` state dict (numpy, torch layouts)."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {diffusers_vae_key(path): _to_torch(np.asarray(var.get_value()), str(path[-1]))
            for path, var in flat}


def load_diffusers_vae(source: str | os.PathLike | Mapping[str, Any], *,
                       config: VAEConfig | Mapping[str, Any] | str | None = None,
                       dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                       strict: bool = True) -> AutoencoderKL:
    """A ready :class:`AutoencoderKL` from local diffusers weights.

    Args:
      source: a weight file, a folder holding ``diffusion_pytorch_model.safetensors`` (and
        usually ``config.json``), or a state dict.
      config: a :class:`VAEConfig`, a preset name, a diffusers config dict, or None (read
        ``config.json`` beside the weights; else the ``sd`` preset).
      dtype, param_dtype: the model's compute / parameter dtypes.
      strict: see :func:`from_diffusers_vae`.
    """
    if isinstance(source, Mapping):
        sd = dict(source)
        folder = None
    else:
        sd = read_state_dict(source)
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
    if config is None and folder is not None and (folder / "config.json").exists():
        config = json.loads((folder / "config.json").read_text())
    if config is None:
        cfg = vae_config("sd")
    elif isinstance(config, VAEConfig):
        cfg = config
    elif isinstance(config, str):
        cfg = vae_config(config)
    else:
        cfg = vae_config_from_diffusers(config)
    # built on abstract shapes: no random init (eager init compiles one program per shape)
    model = nnx.eval_shape(lambda: AutoencoderKL(cfg, dtype=dtype, param_dtype=param_dtype,
                                                 rngs=nnx.Rngs(0)))
    return from_diffusers_vae(model, sd, strict=strict)
