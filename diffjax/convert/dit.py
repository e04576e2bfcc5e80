"""PyTorch DiT checkpoints -> diffjax DiT parameters (no torch import needed).

Two layouts are read, both as ``{key: numpy array}`` dicts (``{k: v.numpy() for k, v in
torch.load(path).items()}``):

* **official** -- facebookresearch/DiT ``models.py`` ``state_dict`` (also willisma/SiT, and
  hustvl/LightningDiT's SwiGLU / RMSNorm variants):
  ``x_embedder.proj.{weight,bias}``, ``pos_embed``, ``t_embedder.mlp.{0,2}.*``,
  ``y_embedder.embedding_table.weight``, ``blocks.N.attn.qkv.*``, ``blocks.N.attn.proj.*``,
  ``blocks.N.mlp.fc1/fc2.*`` (or ``mlp.w12/w3.*``), ``blocks.N.norm{1,2}.weight`` (RMSNorm),
  ``blocks.N.adaLN_modulation.1.*``, ``final_layer.linear.*``,
  ``final_layer.adaLN_modulation.1.*``. Training checkpoints ``{'model', 'ema', 'opt'}`` are
  unwrapped to ``'ema'`` (``which='model'`` to choose), and ``module.`` prefixes are dropped.
* **diffusers** -- ``DiTTransformer2DModel``: ``pos_embed.proj.*``,
  ``transformer_blocks.N.norm1.emb.{timestep_embedder.linear_{1,2},class_embedder.embedding_table}``,
  ``transformer_blocks.N.norm1.linear.*``, ``transformer_blocks.N.attn1.to_{q,k,v}.*``,
  ``attn1.to_out.0.*``, ``ff.net.0.proj.*``, ``ff.net.2.*``, ``proj_out_{1,2}.*``. diffusers keeps a
  copy of the timestep/label embedders in every block (the forward uses block 0's for the final
  layer); ours are shared, so the copies must agree (checked). Build the model with
  :func:`config_from_diffusers` (``time_freq_shift = 1``: diffusers' ``Timesteps`` uses
  ``downscale_freq_shift=1``; pre-MLP LayerNorm eps = ``norm_eps`` = 1e-5).

Layout maps (torch ``Linear.weight`` is ``(out, in)``; ours ``(in, out...)``):
  conv ``(d, C, p, p)`` -> ``(p, p, C, d)``; qkv ``(3d, d)`` -> ``(d, 3, H, hd)``;
  proj ``(d, d)`` -> ``(H, hd, d)``; SwiGLU ``w12 (2h, d)`` -> ``(d, 2, h)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from diffjax.models.dit import DiTConfig

__all__ = ["from_official", "from_diffusers", "config_from_diffusers", "detect_layout"]


def _np(v) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor slipped through: convert without importing torch
        v = v.detach().cpu().numpy()
    return np.asarray(v, np.float32)


def _unwrap(sd: Mapping[str, Any], which: str) -> dict[str, np.ndarray]:
    if which in sd and isinstance(sd[which], Mapping):
        sd = sd[which]
    elif "model" in sd and isinstance(sd["model"], Mapping):
        sd = sd["model"]
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): _np(v) for k, v in sd.items()}


def detect_layout(state_dict: Mapping[str, Any]) -> str:
    """``'official'`` or ``'diffusers'`` from the key names."""
    keys = set(state_dict)
    if any(k.startswith("transformer_blocks.") for k in keys):
        return "diffusers"
    if any(k.startswith("blocks.") for k in keys) or "x_embedder.proj.weight" in keys:
        return "official"
    raise ValueError("state_dict is neither the official DiT layout nor diffusers' "
                     "DiTTransformer2DModel layout")


def _dense(w, b=None, out_shape=None, in_shape=None):
    """torch Linear (out, in) -> kernel (in..., out...)."""
    w = _np(w)
    k = w.T
    if in_shape is not None:
        k = k.reshape(tuple(in_shape) + k.shape[1:])
    if out_shape is not None:
        k = k.reshape(k.shape[: k.ndim - 1] + tuple(out_shape))
    out = {"kernel": k}
    if b is not None:
        out["bias"] = _np(b).reshape(out_shape) if out_shape is not None else _np(b)
    return out


def _put(dst: dict, prefix: str, parts: dict):
    for k, v in parts.items():
        dst[f"{prefix}.{k}"] = v


def _pop(sd: dict, key: str):
    if key not in sd:
        raise ValueError(f"state_dict is missing {key!r}")
    return sd.pop(key)


def from_official(state_dict: Mapping[str, Any], config: DiTConfig, *,
                  which: str = "ema", strict: bool = True) -> dict[str, np.ndarray]:
    """facebookresearch/DiT (SiT, LightningDiT) ``state_dict`` -> ``{our key: array}``.

    Args:
      state_dict: the checkpoint's tensors as numpy arrays (torch tensors accepted).
      config: the :class:`~diffjax.models.DiTConfig` of the target model (heads, patch, ...).
      which: sub-dict to use for training checkpoints ('ema' or 'model').
      strict: raise on keys that were not consumed.

    Returns:
      A flat dict for :func:`diffjax.models.load_state_dict`.
    """
    sd = _unwrap(state_dict, which)
    d, h = config.hidden_size, config.num_heads
    hd = d // h
    out: dict[str, np.ndarray] = {}
    w = _pop(sd, "x_embedder.proj.weight")  # (d, C, p, p)
    out["x_embedder.proj.kernel"] = w.transpose(2, 3, 1, 0)
    out["x_embedder.proj.bias"] = _pop(sd, "x_embedder.proj.bias")
    if "pos_embed" in sd:
        pe = sd.pop("pos_embed")
        out["pos_embed"] = pe.reshape(pe.shape[-2:])
    for i in (0, 2):
        _put(out, f"t_embedder.fc{1 if i == 0 else 2}",
             _dense(_pop(sd, f"t_embedder.mlp.{i}.weight"), _pop(sd, f"t_embedder.mlp.{i}.bias")))
    if "y_embedder.embedding_table.weight" in sd:
        out["y_embedder.embedding"] = sd.pop("y_embedder.embedding_table.weight")
    for n in range(config.depth):
        p, q = f"blocks.{n}", f"blocks.{n}"
        _put(out, f"{q}.attn.qkv", _dense(_pop(sd, f"{p}.attn.qkv.weight"),
                                          sd.pop(f"{p}.attn.qkv.bias", None), (3, h, hd)))
        _put(out, f"{q}.attn.proj", _dense(_pop(sd, f"{p}.attn.proj.weight"),
                                           _pop(sd, f"{p}.attn.proj.bias"), in_shape=(h, hd)))
        for nm in ("q_norm", "k_norm"):
            if f"{p}.attn.{nm}.weight" in sd:
                out[f"{q}.attn.{nm}.weight"] = sd.pop(f"{p}.attn.{nm}.weight")
        if f"{p}.mlp.w12.weight" in sd:
            hid = sd[f"{p}.mlp.w12.weight"].shape[0] // 2
            _put(out, f"{q}.mlp.w12", _dense(sd.pop(f"{p}.mlp.w12.weight"),
                                             sd.pop(f"{p}.mlp.w12.bias"), (2, hid)))
            _put(out, f"{q}.mlp.w3", _dense(sd.pop(f"{p}.mlp.w3.weight"),
                                            sd.pop(f"{p}.mlp.w3.bias")))
        else:
            for fc in ("fc1", "fc2"):
                _put(out, f"{q}.mlp.{fc}", _dense(_pop(sd, f"{p}.mlp.{fc}.weight"),
                                                  _pop(sd, f"{p}.mlp.{fc}.bias")))
        for nm in ("norm1", "norm2"):
            if f"{p}.{nm}.weight" in sd:
                out[f"{q}.{nm}.weight"] = sd.pop(f"{p}.{nm}.weight")
        _put(out, f"{q}.adaLN", _dense(_pop(sd, f"{p}.adaLN_modulation.1.weight"),
                                       _pop(sd, f"{p}.adaLN_modulation.1.bias")))
    _put(out, "final_layer.linear", _dense(_pop(sd, "final_layer.linear.weight"),
                                           _pop(sd, "final_layer.linear.bias")))
    _put(out, "final_layer.adaLN", _dense(_pop(sd, "final_layer.adaLN_modulation.1.weight"),
                                          _pop(sd, "final_layer.adaLN_modulation.1.bias")))
    if "final_layer.norm_final.weight" in sd:
        out["final_layer.norm.weight"] = sd.pop("final_layer.norm_final.weight")
    sd = {k: v for k, v in sd.items() if not k.startswith("feat_rope.")}  # RoPE tables
    if strict and sd:
        raise ValueError(f"unconverted keys (depth={config.depth} right?): {sorted(sd)[:8]}")
    return out


def config_from_diffusers(diffusers_config: Mapping[str, Any], **overrides) -> DiTConfig:
    """Our :class:`DiTConfig` for a ``DiTTransformer2DModel`` config dict."""
    c = dict(diffusers_config)
    heads, hd = int(c["num_attention_heads"]), int(c["attention_head_dim"])
    cin = int(c.get("in_channels", 4))
    cout = int(c.get("out_channels") or cin)
    if c.get("norm_type", "ada_norm_zero") != "ada_norm_zero":
        raise ValueError("only norm_type='ada_norm_zero' DiT models are supported")
    if cout not in (cin, 2 * cin):
        raise ValueError(f"out_channels {cout} must be in_channels or 2*in_channels")
    kw = dict(input_size=int(c["sample_size"]), patch_size=int(c["patch_size"]),
              in_channels=cin, hidden_size=heads * hd, depth=int(c["num_layers"]),
              num_heads=heads, num_classes=int(c.get("num_embeds_ada_norm") or 1000),
              class_dropout_prob=0.1, learn_sigma=cout == 2 * cin, norm_eps=1e-6,
              mlp_norm_eps=float(c.get("norm_eps", 1e-5)), time_freq_shift=1.0)
    kw.update(overrides)
    return DiTConfig(**kw).validate()


def from_diffusers(state_dict: Mapping[str, Any], config: DiTConfig, *,
                   check_shared: bool = True, strict: bool = True) -> dict[str, np.ndarray]:
    """diffusers ``DiTTransformer2DModel.state_dict()`` -> ``{our key: array}``.

    Args:
      state_dict: tensors as numpy arrays.
      config: target config, normally :func:`config_from_diffusers` of the model's config.
      check_shared: verify every block's copy of the timestep/label embedders equals block 0's
        (they are one module in the official model and in ours).
      strict: raise on keys that were not consumed.
    """
    sd = {k: _np(v) for k, v in state_dict.items()}
    d, h = config.hidden_size, config.num_heads
    hd = d // h
    out: dict[str, np.ndarray] = {}
    out["x_embedder.proj.kernel"] = _pop(sd, "pos_embed.proj.weight").transpose(2, 3, 1, 0)
    out["x_embedder.proj.bias"] = _pop(sd, "pos_embed.proj.bias")
    emb = "transformer_blocks.0.norm1.emb."
    _put(out, "t_embedder.fc1", _dense(sd[emb + "timestep_embedder.linear_1.weight"],
                                       sd[emb + "timestep_embedder.linear_1.bias"]))
    _put(out, "t_embedder.fc2", _dense(sd[emb + "timestep_embedder.linear_2.weight"],
                                       sd[emb + "timestep_embedder.linear_2.bias"]))
    out["y_embedder.embedding"] = sd[emb + "class_embedder.embedding_table.weight"]
    for n in range(config.depth):
        p = f"transformer_blocks.{n}"
        shared = [k for k in list(sd) if k.startswith(f"{p}.norm1.emb.")]
        for k in shared:
            v = sd.pop(k)
            ref = emb + k[len(f"{p}.norm1.emb."):]
            if check_shared and n > 0 and not np.array_equal(v, _np(state_dict[ref])):
                raise ValueError(f"{k} differs from {ref}: diffusers keeps a copy of "
                                 "the embedders per block; ours are shared")
        _put(out, f"blocks.{n}.adaLN", _dense(_pop(sd, f"{p}.norm1.linear.weight"),
                                              _pop(sd, f"{p}.norm1.linear.bias")))
        ws = [_np(_pop(sd, f"{p}.attn1.to_{c}.weight")).T.reshape(d, h, hd) for c in "qkv"]
        bs = [_np(_pop(sd, f"{p}.attn1.to_{c}.bias")).reshape(h, hd) for c in "qkv"]
        out[f"blocks.{n}.attn.qkv.kernel"] = np.stack(ws, axis=1)
        out[f"blocks.{n}.attn.qkv.bias"] = np.stack(bs, axis=0)
        _put(out, f"blocks.{n}.attn.proj", _dense(_pop(sd, f"{p}.attn1.to_out.0.weight"),
                                                  _pop(sd, f"{p}.attn1.to_out.0.bias"),
                                                  in_shape=(h, hd)))
        _put(out, f"blocks.{n}.mlp.fc1", _dense(_pop(sd, f"{p}.ff.net.0.proj.weight"),
                                                _pop(sd, f"{p}.ff.net.0.proj.bias")))
        _put(out, f"blocks.{n}.mlp.fc2", _dense(_pop(sd, f"{p}.ff.net.2.weight"),
                                                _pop(sd, f"{p}.ff.net.2.bias")))
    _put(out, "final_layer.adaLN", _dense(_pop(sd, "proj_out_1.weight"),
                                          _pop(sd, "proj_out_1.bias")))
    _put(out, "final_layer.linear", _dense(_pop(sd, "proj_out_2.weight"),
                                           _pop(sd, "proj_out_2.bias")))
    sd.pop("pos_embed.pos_embed", None)
    if strict and sd:
        raise ValueError(f"unconverted keys (depth={config.depth} right?): {sorted(sd)[:8]}")
    return out
