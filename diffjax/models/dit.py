"""DiT, SiT and LightningDiT: one Flax NNX transformer backbone with presets.

References:
  * DiT: Peebles & Xie 2022 (arXiv 2212.09748), section 3 and Table 1 (S/B/L/XL x patch
    2/4/8); facebookresearch/DiT ``models.py``. adaLN-Zero block (section 3.2):
    ``shift1, scale1, gate1, shift2, scale2, gate2 = W SiLU(c)``,
    ``x += gate1 * Attn(LN(x) (1 + scale1) + shift1)``, ``x += gate2 * MLP(LN(x) (1 + scale2)
    + shift2)``, ``c = t_emb + y_emb``; learned-sigma output of ``2C`` channels.
  * SiT: Ma et al. 2024 (arXiv 2401.08740); willisma/SiT ``models.py``: the same network fed a
    continuous ``t in [0, 1]`` (data at ``t = 1``), velocity output; the released 256 px model
    computes ``2C`` channels and discards the second half (``discard_sigma``).
  * LightningDiT: Yao et al. 2025 (arXiv 2501.01423); hustvl/LightningDiT
    ``models/lightningdit.py``: SwiGLU, RMSNorm, 2-D RoPE (in addition to the sin-cos table),
    patch 1 on f16d32 latents, learn_sigma off; channel-wise latent normalisation
    (:class:`LatentNorm`).

Layout and contract:
  * Input ``x`` is NHWC ``(B, H, W, C)``; ``t`` is ``(B,)`` (or a scalar) in the *network's*
    own time input (DiT: DDPM index 0..999; SiT: ``t`` with data at 1).
    :func:`as_denoiser` converts diffjax time with :func:`diffjax.adapters.time_input`.
  * ``cond`` is ``None`` (unconditional), an int label array ``(B,)`` (``num_classes`` is the
    null label), or a dict ``{'y': labels, 's': second scalar (B,), 'context': (B, S, Dc),
    'context_mask': (B, S) bool}``. ``'s'`` feeds a second timestep embedder added to the
    conditioning vector (shortcut step size, IMM ``s``); ``'context'`` feeds an un-gated
    cross-attention after each block's self-attention (Lumos/PixArt style).
  * Label dropout at train time: ``model(x, t, y, train=True, rngs=key_or_nnx_Rngs)``.
  * Blocks are a Python list (unrolled), not a scanned stack: XLA's cost analysis counts a
    loop body once, and the converters map ``blocks.N`` one to one.

Parameters carry logical axis names (see :mod:`diffjax.models.layers`); the fixed sin-cos table
is a :class:`~diffjax.models.layers.Buffer` (counted in the parameter total as in the reference,
never trained).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from diffjax.models.denoiser import Denoiser, as_denoiser  # noqa: F401  (re-exported)
from diffjax.models.layers import (
    Attention,
    Buffer,
    CrossAttention,
    DenseGeneral,
    LabelEmbedder,
    Mlp,
    PatchEmbed,
    SwiGLU,
    TimestepEmbedder,
    at_least_float32,
    constrain,
    get_2d_sincos_pos_embed,
    make_norm,
    modulate,
    rope_2d_tables,
    stat_dtype,
)

Array = Any

__all__ = [
    "DiTConfig",
    "DiT",
    "DiTBlock",
    "FinalLayer",
    "PRESETS",
    "dit_config",
    "build",
    "Denoiser",
    "as_denoiser",
    "LatentNorm",
    "load_state_dict",
    "from_converted",
]


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Hyper-parameters of the DiT family (frozen, hashable: part of the graph definition).

    Attributes:
      input_size: latent height = width (32 for 256 px SD-VAE latents).
      patch_size: patch ``p`` (tokens ``(input_size / p)^2``).
      in_channels: latent channels ``C``.
      hidden_size, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP ratio.
      num_classes: classes (0: unconditional, no label embedder).
      class_dropout_prob: label dropout; > 0 adds the null-class row.
      learn_sigma: output ``2C`` channels (prediction and iDDPM variance interpolation).
      discard_sigma: compute ``2C`` but return the first ``C`` (SiT's released model).
      mlp_type: ``'gelu'`` (tanh GELU MLP) or ``'swiglu'`` (hidden ``int(2/3 mlp_ratio d)``).
      norm_type: ``'layernorm'`` (no affine) or ``'rmsnorm'`` (blocks and final layer).
      use_rope: 2-D RoPE on q, k (LightningDiT).
      use_qknorm: RMS qk-norm.
      wo_shift: adaLN without shift (LightningDiT option; 4d modulation).
      second_scalar: add a second timestep embedder for ``cond['s']``.
      context_dim: width of condition tokens for cross-attention (None: no cross-attention).
      norm_eps: eps of the pre-attention and final norms.
      mlp_norm_eps: eps of the pre-MLP norm (None: ``norm_eps``; diffusers' DiT uses 1e-5).
      time_freq_shift: diffusers' ``downscale_freq_shift`` (0 official DiT, 1 diffusers).
      frequency_embedding_size: sinusoidal features of the timestep embedder (256).
      dtype: compute dtype; param_dtype: parameter dtype (fp32).
      precision: ``jax.lax.Precision`` of matmuls (None: backend default).
      remat: rematerialise each block in the backward pass (``nnx.remat``): ``True`` saves
        nothing inside a block (least memory), or the name of a ``jax.checkpoint_policies``
        policy, e.g. ``'dots_with_no_batch_dims_saveable'`` (keep the weight matmuls' outputs,
        recompute attention and elementwise work: most of remat's memory saving for a fraction
        of its recompute cost) or ``'nothing_saveable'``.
      attention_impl: ``jax.nn.dot_product_attention`` implementation (None, 'xla', 'cudnn').
      time_input: default :func:`diffjax.adapters.time_input` kind for :func:`as_denoiser`.
      prediction: what the network predicts in diffjax terms (documentation for samplers).
      negate_output: :func:`as_denoiser` default: flip the sign of the output (SiT velocity is
        ``dx/d tau`` with ``tau = 1 - t``; diffjax's velocity is ``dx/dt``).
    """

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    discard_sigma: bool = False
    mlp_type: str = "gelu"
    norm_type: str = "layernorm"
    use_rope: bool = False
    use_qknorm: bool = False
    wo_shift: bool = False
    second_scalar: bool = False
    context_dim: int | None = None
    norm_eps: float = 1e-6
    mlp_norm_eps: float | None = None
    time_freq_shift: float = 0.0
    frequency_embedding_size: int = 256
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None
    remat: bool | str = False
    attention_impl: str | None = None
    time_input: str = "ddpm_index"
    prediction: str = "eps"
    negate_output: bool = False

    @property
    def out_channels(self) -> int:
        """Channels the final layer computes (``2C`` with learned sigma)."""
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def output_channels(self) -> int:
        """Channels the model returns."""
        return self.in_channels if self.discard_sigma else self.out_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2

    def replace(self, **kw) -> DiTConfig:
        return dataclasses.replace(self, **kw)

    def validate(self) -> DiTConfig:
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size {self.input_size} is not divisible by patch_size "
                             f"{self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                             f"{self.num_heads}")
        if self.mlp_type not in ("gelu", "swiglu"):
            raise ValueError(f"mlp_type must be 'gelu' or 'swiglu'; got {self.mlp_type!r}")
        if self.norm_type not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm_type must be 'layernorm' or 'rmsnorm'; got {self.norm_type!r}")
        if self.discard_sigma and not self.learn_sigma:
            raise ValueError("discard_sigma needs learn_sigma=True")
        if isinstance(self.remat, str) and not hasattr(jax.checkpoint_policies, self.remat):
            raise ValueError(f"remat={self.remat!r} is not a jax.checkpoint_policies name (or "
                             "use True / False)")
        return self


# (depth, hidden, heads) -- DiT Table 1; LightningDiT adds 1p0B / 1p6B.
_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16),
          "1p0B": (24, 1536, 24), "1p6B": (28, 1792, 28)}
_FAMILIES = {
    "DiT": dict(patches=(2, 4, 8), sizes=("S", "B", "L", "XL"), kw=dict()),
    "SiT": dict(patches=(2, 4, 8), sizes=("S", "B", "L", "XL"),
                kw=dict(discard_sigma=True, time_input="sit", prediction="velocity",
                        negate_output=True)),
    "LightningDiT": dict(
        patches=(1, 2), sizes=("B", "L", "XL", "1p0B", "1p6B"),
        kw=dict(input_size=16, in_channels=32, learn_sigma=False, mlp_type="swiglu",
                norm_type="rmsnorm", use_rope=True, time_input="sit", prediction="velocity",
                negate_output=True)),
}

#: preset name ('DiT-XL/2', 'SiT-B/4', 'LightningDiT-XL/1', ...) -> DiTConfig
PRESETS: dict[str, DiTConfig] = {}
for _fam, _spec in _FAMILIES.items():
    for _size in _spec["sizes"]:
        for _p in _spec["patches"]:
            _d, _h, _n = _SIZES[_size]
            PRESETS[f"{_fam}-{_size}/{_p}"] = DiTConfig(
                depth=_d, hidden_size=_h, num_heads=_n, patch_size=_p, **_spec["kw"])


def _canonical(name: str) -> str:
    m = re.fullmatch(r"(DiT|SiT|LightningDiT)[-_](\w+?)[/_](\d+)", name.strip())
    return f"{m.group(1)}-{m.group(2)}/{m.group(3)}" if m else name


def dit_config(name: str, **overrides) -> DiTConfig:
    """The preset configuration ``name`` ('DiT-XL/2' or 'DiT_XL_2'), with overrides.

    Raises:
      ValueError: naming the argument and listing the presets when ``name`` is unknown.
    """
    key = _canonical(name)
    if key not in PRESETS:
        raise ValueError(f"unknown DiT preset name={name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[key].replace(**overrides).validate()


def _zeros():
    return nnx.initializers.zeros_init()


class DiTBlock(nnx.Module):
    """adaLN-Zero transformer block (DiT section 3.2, Fig. 3), with LightningDiT options and an
    optional cross-attention after self-attention."""

    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, precision=cfg.precision,
                  rngs=rngs)
        self.norm1 = make_norm(cfg.norm_type, d, cfg.norm_eps, param_dtype=cfg.param_dtype)
        self.attn = Attention(d, cfg.num_heads, qk_norm=cfg.use_qknorm,
                              implementation=cfg.attention_impl, **kw)
        self.norm2 = make_norm(cfg.norm_type, d, cfg.mlp_norm_eps or cfg.norm_eps,
                               param_dtype=cfg.param_dtype)
        hidden = int(d * cfg.mlp_ratio)
        if cfg.mlp_type == "swiglu":
            self.mlp = SwiGLU(d, int(2 / 3 * hidden), **kw)
        else:
            self.mlp = Mlp(d, hidden, **kw)
        self.cross_attn = (CrossAttention(d, cfg.context_dim, cfg.num_heads,
                                          implementation=cfg.attention_impl, **kw)
                           if cfg.context_dim else None)
        self.n_mod = 4 if cfg.wo_shift else 6
        self.adaLN = DenseGeneral(d, self.n_mod * d, names=("embed", "mlp"),
                                  kernel_init=_zeros(), **kw)

    def __call__(self, x, c, rope=None, context=None, context_mask=None):
        mod = jnp.split(self.adaLN(jax.nn.silu(c)), self.n_mod, axis=-1)
        if self.n_mod == 6:
            shift1, scale1, gate1, shift2, scale2, gate2 = mod
        else:
            (scale1, gate1, scale2, gate2), shift1, shift2 = mod, None, None
        x = x + gate1[:, None, :] * self.attn(modulate(self.norm1(x), shift1, scale1), rope)
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("this model has cross-attention: cond['context'] is required")
            x = x + self.cross_attn(x, context, context_mask)
        x = x + gate2[:, None, :] * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return constrain(x, ("batch", "length", "act_embed"))


class FinalLayer(nnx.Module):
    """Norm -> adaLN modulate(shift, scale) -> Linear(d, p^2 C_out), all zero-initialised."""

    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        d, p = cfg.hidden_size, cfg.patch_size
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, precision=cfg.precision,
                  rngs=rngs)
        self.norm = make_norm(cfg.norm_type, d, cfg.norm_eps, param_dtype=cfg.param_dtype)
        self.adaLN = DenseGeneral(d, 2 * d, names=("embed", "mlp"), kernel_init=_zeros(), **kw)
        self.linear = DenseGeneral(d, p * p * cfg.out_channels, names=("embed", "patch"),
                                   kernel_init=_zeros(), **kw)

    def __call__(self, x, c):
        shift, scale = jnp.split(self.adaLN(jax.nn.silu(c)), 2, axis=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nnx.Module):
    """Diffusion transformer (DiT / SiT / LightningDiT), NHWC in and out.

    Build with a :class:`DiTConfig` (``dit_config('DiT-XL/2')``) or :func:`build`. Initialisation
    follows the reference: xavier-uniform Linears with zero bias, patch embed as a flattened
    Linear, label table and timestep-MLP weights N(0, 0.02), and zeros for every adaLN
    modulation and the final linear (so a fresh model outputs exactly 0).
    """

    def __init__(self, config: DiTConfig, *, rngs: nnx.Rngs):
        cfg = config.validate()
        self.config = cfg
        d = cfg.hidden_size
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, precision=cfg.precision,
                  rngs=rngs)
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d, **kw)
        pos = get_2d_sincos_pos_embed(d, cfg.grid_size)
        self.pos_embed = Buffer(jnp.asarray(pos, cfg.param_dtype), out_sharding=(None, "embed"),
                                eager_sharding=False)
        self.t_embedder = TimestepEmbedder(d, cfg.frequency_embedding_size,
                                           freq_shift=cfg.time_freq_shift, **kw)
        self.s_embedder = (TimestepEmbedder(d, cfg.frequency_embedding_size,
                                            freq_shift=cfg.time_freq_shift, **kw)
                           if cfg.second_scalar else None)
        self.y_embedder = (LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob,
                                         param_dtype=cfg.param_dtype, rngs=rngs)
                           if cfg.num_classes > 0 else None)
        self.blocks = nnx.List([DiTBlock(cfg, rngs=rngs) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg, rngs=rngs)

    # -- input handling --------------------------------------------------------------------

    def _check_inputs(self, x, t):
        cfg = self.config
        want = (cfg.input_size, cfg.input_size, cfg.in_channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (B, {want[0]}, {want[1]}, {want[2]}) (NHWC); "
                             f"got x.shape={tuple(x.shape)}")
        t = at_least_float32(t)
        if t.ndim == 0:
            t = jnp.broadcast_to(t, (x.shape[0],))
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},); got "
                             f"t.shape={t.shape}")
        return t

    def _split_cond(self, cond, batch):
        if isinstance(cond, dict):
            unknown = set(cond) - {"y", "s", "context", "context_mask"}
            if unknown:
                raise ValueError(f"cond has unknown keys {sorted(unknown)}; expected 'y', 's', "
                                 "'context', 'context_mask'")
            y, s = cond.get("y"), cond.get("s")
            ctx, ctx_mask = cond.get("context"), cond.get("context_mask")
        else:
            y, s, ctx, ctx_mask = cond, None, None, None
        if self.y_embedder is not None and y is None:
            raise ValueError("this model is class-conditional: cond (labels) is required; use "
                             f"label {self.config.num_classes} for the null class")
        if y is not None and self.y_embedder is None:
            raise ValueError("cond labels given to an unconditional model (num_classes=0)")
        if y is not None and jnp.shape(y) != (batch,):
            raise ValueError(f"cond labels must have shape ({batch},); got {jnp.shape(y)}")
        if self.s_embedder is not None and s is None:
            raise ValueError("this model has a second scalar embedder: cond['s'] is required")
        if s is not None and self.s_embedder is None:
            raise ValueError("cond['s'] given but the model has second_scalar=False")
        if ctx is not None and self.config.context_dim is None:
            raise ValueError("cond['context'] given but the model has no cross-attention")
        return y, s, ctx, ctx_mask

    # -- forward -----------------------------------------------------------------------------

    def unpatchify(self, x: Array) -> Array:
        """``(B, N, p*p*C)`` tokens -> ``(B, H, W, C)`` image (the reference's
        ``nhwpqc`` order)."""
        cfg = self.config
        p, g, c = cfg.patch_size, cfg.grid_size, cfg.out_channels
        x = x.reshape(x.shape[0], g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(x.shape[0], g * p, g * p, c)

    def __call__(self, x: Array, t: Array, cond: Any = None, *, train: bool = False,
                 rngs: Any = None, force_drop_ids: Array | None = None) -> Array:
        """Forward pass.

        Args:
          x: ``(B, H, W, C)`` latents.
          t: ``(B,)`` or scalar network time input (DiT index / SiT t).
          cond: labels ``(B,)``, a dict (see module docstring) or None.
          train: apply label dropout (needs ``rngs``).
          rngs: ``nnx.Rngs`` (its ``dropout`` stream is used) or a PRNG key.
          force_drop_ids: ``(B,)``, 1 where the label is replaced by the null class.

        Returns:
          ``(B, H, W, output_channels)`` in float32.
        """
        cfg = self.config
        t = self._check_inputs(x, t)
        y, s, ctx, ctx_mask = self._split_cond(cond, x.shape[0])
        h = self.x_embedder(x) + self.pos_embed[...].astype(cfg.dtype)[None]
        h = constrain(h, ("batch", "length", "act_embed"))
        c = self.t_embedder(t)
        if s is not None:
            c = c + self.s_embedder(jnp.broadcast_to(at_least_float32(s), t.shape))
        if self.y_embedder is not None:
            key = rngs.dropout() if isinstance(rngs, nnx.Rngs) else rngs
            c = c + self.y_embedder(y, train=train, key=key,
                                    force_drop_ids=force_drop_ids).astype(c.dtype)
        rope = None
        if cfg.use_rope:
            rope = tuple(jnp.asarray(a) for a in rope_2d_tables(
                cfg.hidden_size // cfg.num_heads, cfg.grid_size))
        if ctx is not None:
            ctx = jnp.asarray(ctx)
        for block in self.blocks:
            if cfg.remat:
                policy = (getattr(jax.checkpoint_policies, cfg.remat)
                          if isinstance(cfg.remat, str) else None)
                h = nnx.remat(lambda blk, h_, c_, r_, x_, m_: blk(h_, c_, r_, x_, m_),
                              policy=policy)(block, h, c, rope, ctx, ctx_mask)
            else:
                h = block(h, c, rope, ctx, ctx_mask)
        # float32 for bf16/fp32 compute, float64 for float64 compute
        out = self.unpatchify(self.final_layer(h, c)).astype(stat_dtype(cfg.dtype))
        if cfg.discard_sigma:
            out = out[..., : cfg.in_channels]
        return out


def build(name_or_config: str | DiTConfig, *, rngs: nnx.Rngs | int = 0, jit: bool = True,
          **overrides) -> DiT:
    """Build a model from a preset name or a config (``build('DiT-XL/2', rngs=0)``).

    With ``jit=True`` (default) the initialisers run as one jitted program (eager NNX init
    dispatches, and on CPU compiles, every initialiser op separately: ~10x slower for small
    models). ``rngs`` is a seed or an ``nnx.Rngs``.
    """
    cfg = (dit_config(name_or_config, **overrides) if isinstance(name_or_config, str)
           else name_or_config.replace(**overrides).validate())
    if not jit:
        return DiT(cfg, rngs=nnx.Rngs(rngs) if isinstance(rngs, int) else rngs)
    key = jax.random.key(rngs) if isinstance(rngs, int) else rngs.params()

    @jax.jit
    def init(k):
        return nnx.split(DiT(cfg, rngs=nnx.Rngs(params=k)))[1]

    graphdef = nnx.split(nnx.eval_shape(lambda: DiT(cfg, rngs=nnx.Rngs(0))))[0]
    return nnx.merge(graphdef, init(key))


def _preset_fn(name):
    def fn(*, rngs: nnx.Rngs | int = 0, **overrides) -> DiT:
        return build(name, rngs=rngs, **overrides)

    fn.__name__ = re.sub(r"[-/]", "_", name)
    fn.__doc__ = f"Build the {name} preset (``{PRESETS[name]}``); keyword overrides allowed."
    return fn


for _name in PRESETS:
    globals()[re.sub(r"[-/]", "_", _name)] = _preset_fn(_name)
    __all__.append(re.sub(r"[-/]", "_", _name))


# ----------------------------------------------------------------------------------------------
# Latent normalisation and loading converted weights
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class LatentNorm:
    """Channel-wise latent normalisation ``z' = (z - mean) / std * multiplier`` (LightningDiT
    ``latent_norm`` with dataset statistics over (N, H, W); SD-VAE style is ``mean = 0,
    std = 1, multiplier = 0.18215``). Decode with :meth:`denormalize` before the VAE decoder."""

    mean: Array
    std: Array
    multiplier: float = 1.0

    @classmethod
    def from_latents(cls, z: Array, multiplier: float = 1.0, eps: float = 0.0) -> LatentNorm:
        """Statistics over all but the channel axis of NHWC latents."""
        z = jnp.asarray(z, jnp.float32)
        return cls(z.mean(axis=(0, 1, 2)), z.std(axis=(0, 1, 2)) + eps, multiplier)

    def normalize(self, z: Array) -> Array:
        m = self.mean.reshape((1,) * (z.ndim - 1) + (-1,))
        s = self.std.reshape((1,) * (z.ndim - 1) + (-1,))
        return (z - m) / s * self.multiplier

    def denormalize(self, z: Array) -> Array:
        m = self.mean.reshape((1,) * (z.ndim - 1) + (-1,))
        s = self.std.reshape((1,) * (z.ndim - 1) + (-1,))
        return z / self.multiplier * s + m


def load_state_dict(model: nnx.Module, flat: dict[str, Any], *, strict: bool = True) -> None:
    """Assign ``{'blocks.0.attn.qkv.kernel': array, ...}`` (a converter's output) in place.

    Every :class:`nnx.Param` must be given (when ``strict``); buffers (the sin-cos table) are
    optional: when missing on an abstract model (``nnx.eval_shape``) they are recomputed. Unknown
    keys and shape mismatches raise ``ValueError`` naming the key.
    """
    flat_state = nnx.to_flat_state(nnx.state(model))
    known = {".".join(str(p) for p in path): var for path, var in flat_state}
    unknown = sorted(set(flat) - set(known))
    if unknown:
        raise ValueError(f"converted weights have keys the model lacks: {unknown[:8]}")
    missing = sorted(k for k, v in known.items() if isinstance(v, nnx.Param) and k not in flat)
    if strict and missing:
        raise ValueError(f"converted weights miss model parameters: {missing[:8]}")
    new = []
    for path, var in flat_state:
        key = ".".join(str(p) for p in path)
        value = var.get_value()
        if key in flat:
            arr = np.asarray(flat[key])
            if arr.shape != tuple(value.shape):
                raise ValueError(f"shape mismatch for {key}: got {arr.shape}, model has "
                                 f"{tuple(value.shape)}")
            var = var.replace(jnp.asarray(arr, value.dtype))
        elif key == "pos_embed" and isinstance(value, jax.ShapeDtypeStruct):
            cfg = model.config
            var = var.replace(jnp.asarray(get_2d_sincos_pos_embed(cfg.hidden_size, cfg.grid_size),
                                          value.dtype))
        new.append((path, var))
    nnx.update(model, nnx.from_flat_state(new))


def from_converted(config: DiTConfig, flat: dict[str, Any]) -> DiT:
    """A model holding converted weights, built without running the random initialisers
    (abstract init with ``nnx.eval_shape``, then :func:`load_state_dict`)."""
    model = nnx.eval_shape(lambda: DiT(config.validate(), rngs=nnx.Rngs(0)))
    load_state_dict(model, flat, strict=True)
    return model
