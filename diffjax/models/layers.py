"""Transformer building blocks shared by the DiT family (DiT, SiT, LightningDiT).

References:
  * Peebles & Xie 2022, "Scalable Diffusion Models with Transformers" (arXiv 2212.09748),
    section 3.2: patchify, adaLN-Zero block, sin-cos positions; facebookresearch/DiT
    ``models.py`` (TimestepEmbedder, LabelEmbedder, ``modulate``, ``get_2d_sincos_pos_embed``).
  * Yao et al. 2025 (arXiv 2501.01423), LightningDiT: SwiGLU FFN (Shazeer 2020), RMSNorm
    (Zhang & Sennrich 2019), 2-D rotary embedding (Su et al. 2021; EVA-02's
    ``VisionRotaryEmbeddingFast`` layout, interleaved pairs).

Logical axis names
------------------
Every parameter carries logical axis names (``nnx.with_partitioning`` metadata, key
``out_sharding``); activations are annotated through :func:`constrain`, which is a no-op unless
an :func:`activation_sharding` context is active. Names used:

==============  ==========================================================================
``embed``       model width ``d`` (rows of most kernels; FSDP usually shards this one)
``mlp``         hidden width of MLP / SwiGLU / adaLN outputs
``heads``       attention heads
``kv``          per-head feature dimension
``vocab``       rows of the label table (classes + null class)
``patch``       flattened patch features (patch-embed input channels, final-layer outputs)
``freq``        sinusoidal frequency features of the timestep embedder
``batch``       activations: batch axis
``length``      activations: token axis
``act_embed``   activations: feature axis
``act_heads``   activations: heads axis
``act_mlp``     activations: MLP hidden axis
==============  ==========================================================================

Sharding
--------
This module holds the library's one names-to-sharding mapper; models (activation constraints)
and :mod:`diffjax.train` (parameter, optimizer-moment and EMA shardings) both use it.

* :func:`logical_to_pspec` maps logical names to a ``PartitionSpec`` with a rules table (as
  big_vision ``sharding_rules`` / MaxText ``logical_axis_rules``); :data:`DEFAULT_RULES` puts
  the batch on ``('data', 'fsdp')`` and the ``embed`` axis of parameters on ``'fsdp'``. Names
  missing from the table, and dimensions the mesh axes do not divide, are replicated.
  :func:`constrain` (activations) uses this alone.
* :func:`logical_to_mesh_sharding` maps a whole tree of parameter-like leaves: the rules
  first; then, for an array the rules leave off the ``fsdp`` mesh axis (no logical names, names
  missing from the table, or names whose dimensions the axis does not divide), FSDP by shape:
  the largest dimension the rules left replicated and the ``fsdp`` axis size divides is split
  over ``fsdp`` (big_vision's "fsdp" rule). Arrays under ``min_size`` elements stay replicated.

Numerics: parameters are stored in ``param_dtype`` (fp32) and cast to the compute ``dtype``
(e.g. bf16) at use; normalisation statistics and softmax are computed in fp32.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Array = Any
Dtype = Any

__all__ = [
    "Buffer",
    "DEFAULT_RULES",
    "activation_sharding",
    "constrain",
    "logical_to_mesh_sharding",
    "logical_to_pspec",
    "at_least_float32",
    "dot_product_attention",
    "stat_dtype",
    "modulate",
    "timestep_embedding",
    "get_2d_sincos_pos_embed",
    "rope_2d_tables",
    "apply_rope",
    "DenseGeneral",
    "PatchEmbed",
    "TimestepEmbedder",
    "LabelEmbedder",
    "LayerNormNoAffine",
    "RMSNorm",
    "make_norm",
    "Attention",
    "CrossAttention",
    "Mlp",
    "SwiGLU",
]


class Buffer(nnx.Variable):
    """A fixed (non-trainable) array that the reference still counts as a parameter.

    DiT registers its sin-cos position table as ``nn.Parameter(requires_grad=False)``, so the
    published 675,129,632 parameters of DiT-XL/2 include it. ``nnx.split(model, nnx.Param,
    ...)`` leaves buffers in the rest state, so optimisers never touch them.
    """


def stat_dtype(dtype: Dtype) -> Any:
    """The dtype of statistics and features for compute ``dtype``: at least float32
    (bfloat16 -> float32, float32 -> float32, float64 -> float64), so low-precision compute keeps
    fp32 normalisation while a float64 network stays float64 throughout."""
    return jnp.result_type(dtype, jnp.float32)


def at_least_float32(x: Array) -> Array:
    """``x`` as an array of at least float32 (integers and bfloat16 -> float32; float64 kept, so
    time inputs are exact at float64 when x64 is enabled and the caller asks for it; Python
    scalars stay float32, as weak types)."""
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(x, jnp.float32))


def _with_names(init, names: Sequence[str | None]):
    # Logical names are not mesh axes: never shard eagerly at creation time.
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


# ----------------------------------------------------------------------------------------------
# Sharding: logical names -> mesh axes
# ----------------------------------------------------------------------------------------------

#: default logical-axis rules: data parallel over ``data`` and FSDP over ``fsdp``.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", None),
    ("heads", None),
    ("kv", None),
    ("vocab", None),
    ("patch", None),
    ("freq", None),
    ("length", None),
    ("act_embed", None),
    ("act_heads", None),
    ("act_mlp", None),
)

_ACTIVATION_CTX: list[tuple[Mesh, dict]] = []


def _rules_dict(rules) -> dict:
    if rules is None:
        return dict(DEFAULT_RULES)
    return dict(rules.items() if isinstance(rules, Mapping) else rules)


def logical_to_pspec(names: Sequence[str | None] | None, rules: Any = None,
                     mesh: Mesh | None = None, shape: Sequence[int] | None = None) -> PartitionSpec:
    """Map logical axis names to a :class:`PartitionSpec` with a rules table.

    Names missing from the rules, rules naming mesh axes the mesh lacks, and (when ``shape``
    is given) dimensions not divisible by the mesh axes' product are replicated, so one rules
    table serves every mesh and every model size. A mesh axis is used at most once.

    Args:
      names: one logical name (or None) per dimension; None means fully replicated.
      rules: ``{logical: mesh_axis | tuple | None}`` or a sequence of pairs
        (default :data:`DEFAULT_RULES`).
      mesh: the target mesh (for the membership and divisibility checks).
      shape: the array shape (for the divisibility check).
    """
    if not names:
        return PartitionSpec()
    table = _rules_dict(rules)
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        axes = table.get(name) if name is not None else None
        if axes is None:
            out.append(None)
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        if mesh is not None:
            axes = tuple(a for a in axes if a in mesh.shape)
        axes = tuple(a for a in axes if a not in used)
        if mesh is not None and shape is not None and axes:
            size = int(np.prod([mesh.shape[a] for a in axes]))
            if shape[i] % size:
                axes = ()
        used.update(axes)
        out.append(None if not axes else (axes[0] if len(axes) == 1 else axes))
    return PartitionSpec(*out)


def _fsdp_by_shape(spec: list, shape: tuple[int, ...], mesh: Mesh, min_size: int,
                   fsdp_axis: str) -> list:
    """Put ``fsdp_axis`` on the largest dimension of ``shape`` still replicated in ``spec`` that
    the axis size divides (ties: the last such dimension), unless ``spec`` already uses the axis,
    the mesh lacks it or it has size 1, or the array has fewer than ``min_size`` elements."""
    n = mesh.shape.get(fsdp_axis, 1)
    used = {a for entry in spec if entry is not None
            for a in ((entry,) if isinstance(entry, str) else entry)}
    if n == 1 or fsdp_axis in used or int(np.prod(shape, dtype=np.int64)) < min_size:
        return spec
    for axis in sorted(range(len(shape)), key=lambda i: (shape[i], i), reverse=True):
        if spec[axis] is None and shape[axis] % n == 0:
            return spec[:axis] + [fsdp_axis] + spec[axis + 1:]
    return spec


def logical_to_mesh_sharding(tree: Any, mesh: Mesh, rules: Any = None, *,
                             min_size: int = 2**12, fsdp_axis: str = "fsdp") -> Any:
    """``NamedSharding`` for every array of a tree: logical names first, FSDP by shape as the
    fallback (see the module docstring).

    For each leaf (an ``nnx.Variable`` or an array; shapes may be abstract):

    1. its logical axis names (``nnx.Variable`` metadata ``out_sharding``) are mapped with
       ``rules`` by :func:`logical_to_pspec` (unnamed leaves start fully replicated);
    2. if that does not use ``fsdp_axis`` and the leaf has at least ``min_size`` elements, the
       largest still-replicated dimension divisible by the ``fsdp_axis`` size is split over it.

    Optimizer states built by optax over an ``nnx.State`` and EMA copies carry the parameters'
    variables and metadata, so mapping them gives exactly the parameters' shardings.

    Args:
      tree: an ``nnx.State`` (concrete or abstract, e.g. from ``nnx.eval_shape`` or
        ``jax.eval_shape``), an optimizer state, or any pytree of arrays.
      mesh: the device mesh, e.g. ``jax.make_mesh((2, 4), ('data', 'fsdp'))``.
      rules: logical -> mesh axis table (default :data:`DEFAULT_RULES`).
      min_size: arrays with fewer elements are never split by the shape fallback.
      fsdp_axis: the mesh axis of the shape fallback (absent from the mesh: no fallback).

    Returns:
      A tree shaped like ``tree`` (variables replaced by variables holding a
      ``NamedSharding``, other leaves by a ``NamedSharding``), usable as
      ``jax.device_put(tree, shardings)`` or as ``out_shardings`` of a jitted init.

    Raises:
      ValueError: a variable's logical names do not match its number of dimensions.
    """

    def one(leaf):
        is_var = isinstance(leaf, nnx.Variable)
        names = leaf.get_metadata().get("out_sharding") if is_var else None
        shape = tuple(getattr(leaf.get_value() if is_var else leaf, "shape", ()))
        if names and len(names) != len(shape):
            raise ValueError(f"logical axis names {tuple(names)} do not match the array shape "
                             f"{shape}")
        spec = list(logical_to_pspec(names, rules, mesh, shape)) if names else []
        spec += [None] * (len(shape) - len(spec))
        spec = _fsdp_by_shape(spec, shape, mesh, min_size, fsdp_axis) if shape else spec
        sharding = NamedSharding(mesh, PartitionSpec(*spec))
        return leaf.replace(sharding) if is_var else sharding

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Any = None):
    """Within this context, :func:`constrain` applies ``with_sharding_constraint`` to
    activations (trace the jitted function inside it)."""
    _ACTIVATION_CTX.append((mesh, _rules_dict(rules)))
    try:
        yield
    finally:
        _ACTIVATION_CTX.pop()


def constrain(x: Array, names: Sequence[str | None]) -> Array:
    """Annotate an activation with logical axis names (no-op outside
    :func:`activation_sharding`)."""
    if not _ACTIVATION_CTX:
        return x
    mesh, rules = _ACTIVATION_CTX[-1]
    spec = logical_to_pspec(names, rules, mesh, x.shape)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


# ----------------------------------------------------------------------------------------------
# Functional pieces
# ----------------------------------------------------------------------------------------------


def _expand_to(v: Array, ndim: int) -> Array:
    """Prepend singleton axes (explicit, so ``jax_numpy_rank_promotion='raise'`` is happy)."""
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


def modulate(x: Array, shift: Array | None, scale: Array) -> Array:
    """adaLN modulation ``x * (1 + scale) + shift`` with per-example ``(B, d)`` shift/scale
    broadcast over tokens (DiT ``modulate``); ``shift=None`` is LightningDiT's ``wo_shift``."""
    out = x * (1 + scale[:, None, :])
    return out if shift is None else out + shift[:, None, :]


def timestep_embedding(t: Array, dim: int, max_period: float = 10000.0,
                       freq_shift: float = 0.0) -> Array:
    """Sinusoidal embedding ``[cos(t w_k), sin(t w_k)]``, ``w_k = max_period^(-k/(half-shift))``.

    GLIDE/DiT ``TimestepEmbedder.timestep_embedding`` (``freq_shift = 0``); diffusers'
    ``Timesteps(flip_sin_to_cos=True, downscale_freq_shift=1)`` used by its DiT port is
    ``freq_shift = 1``. ``t`` has shape ``(B,)`` and may be fractional; output ``(B, dim)`` in
    fp32, or float64 for a float64 ``t`` (:func:`at_least_float32`).
    """
    half = dim // 2
    t = at_least_float32(t)
    k = jnp.arange(half, dtype=t.dtype)
    freqs = jnp.exp(-math.log(max_period) * k / (half - freq_shift))
    args = t[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sin-cos position table ``(grid_size**2, dim)`` in float64 (MAE/DiT).

    Token ``n = i * grid_size + j`` (row ``i``, column ``j``); the first ``dim/2`` features
    encode the column ``j`` and the last ``dim/2`` the row ``i`` (the reference builds its grid
    with ``np.meshgrid(grid_w, grid_h)``, "w goes first"); each half is ``[sin, cos]``.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs hidden size divisible by 4; got {dim}")
    jj, ii = np.meshgrid(np.arange(grid_size), np.arange(grid_size))
    return np.concatenate([_sincos_1d(dim // 2, jj), _sincos_1d(dim // 2, ii)], axis=1)


def rope_2d_tables(head_dim: int, grid_size: int, theta: float = 10000.0):
    """``(cos, sin)`` tables ``(grid_size**2, head_dim)`` of a 2-D rotary embedding.

    LightningDiT / EVA-02 ``VisionRotaryEmbeddingFast(dim=head_dim // 2, pt_seq_len=grid)``:
    "lang" frequencies ``theta^(-2k/(head_dim/2))`` for ``k < head_dim/4``, each repeated for an
    interleaved pair; the first half of the head features rotate with the row index, the second
    half with the column index.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4; got {head_dim}")
    half = head_dim // 2
    freqs = 1.0 / theta ** (np.arange(0, half, 2, dtype=np.float64)[: half // 2] / half)
    pos = np.arange(grid_size, dtype=np.float64)
    f = np.repeat(np.einsum("i,f->if", pos, freqs), 2, axis=-1)  # (G, half)
    rows = np.broadcast_to(f[:, None, :], (grid_size, grid_size, half))
    cols = np.broadcast_to(f[None, :, :], (grid_size, grid_size, half))
    ang = np.concatenate([rows, cols], axis=-1).reshape(grid_size * grid_size, head_dim)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate interleaved feature pairs: ``x * cos + rotate_half(x) * sin`` with
    ``rotate_half((x1, x2)) = (-x2, x1)`` per pair. ``x``: ``(B, N, H, D)``; tables ``(N, D)``."""
    xf = x.astype(stat_dtype(x.dtype))
    pairs = xf.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))
    rot = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    return (xf * c + rot * s).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


def xavier_uniform(n_in: int, n_out: int):
    """Glorot uniform on the kernel flattened to ``(prod(in), prod(out))`` (torch
    ``xavier_uniform_`` on a ``Linear`` weight)."""
    return nnx.initializers.variance_scaling(
        1.0, "fan_avg", "uniform", in_axis=tuple(range(n_in)),
        out_axis=tuple(range(n_in, n_in + n_out)))


class DenseGeneral(nnx.Module):
    """``y = x . W + b`` contracting the last ``len(in_shape)`` axes of ``x``.

    The kernel has shape ``in_shape + out_shape`` (e.g. ``(d, 3, heads, head_dim)`` for a fused
    qkv projection), so each axis can carry its own logical name.
    """

    def __init__(self, in_shape: int | Sequence[int], out_shape: int | Sequence[int], *,
                 names: Sequence[str | None], use_bias: bool = True, kernel_init=None,
                 bias_init=None, dtype: Dtype = jnp.float32,
                 param_dtype: Dtype = jnp.float32, precision: Any = None, rngs: nnx.Rngs):
        self.in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        self.out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
        names = tuple(names)
        if len(names) != len(self.in_shape) + len(self.out_shape):
            raise ValueError(f"names {names} must name every kernel axis "
                             f"{self.in_shape + self.out_shape}")
        kinit = kernel_init or xavier_uniform(len(self.in_shape), len(self.out_shape))
        bias_init = bias_init or nnx.initializers.zeros_init()
        self.kernel = nnx.Param(_with_names(kinit, names)(
            rngs.params(), self.in_shape + self.out_shape, param_dtype))
        self.bias = (nnx.Param(_with_names(bias_init, names[len(self.in_shape):])(
            rngs.params(), self.out_shape, param_dtype)) if use_bias else None)
        self.dtype = dtype
        self.precision = precision

    def __call__(self, x: Array) -> Array:
        n = len(self.in_shape)
        if tuple(x.shape[x.ndim - n:]) != self.in_shape:
            raise ValueError(f"DenseGeneral expects trailing axes {self.in_shape}; got {x.shape}")
        y = jnp.tensordot(x.astype(self.dtype), self.kernel[...].astype(self.dtype), axes=n,
                          precision=self.precision)
        if self.bias is not None:
            y = y + _expand_to(self.bias[...].astype(self.dtype), y.ndim)
        return y


class PatchEmbed(nnx.Module):
    """Patchify: Conv(kernel = stride = p) from ``C`` to ``d`` on NHWC input, written as a
    matmul over ``(p, p, C)`` patches (same MACs as the convolution). Kernel ``(p, p, C, d)``
    (HWIO); init like a Linear on the flattened weight (xavier), bias 0 (DiT)."""

    def __init__(self, patch: int, in_channels: int, dim: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        self.patch = patch
        self.proj = DenseGeneral((patch, patch, in_channels), dim,
                                 names=(None, None, "patch", "embed"), dtype=dtype,
                                 param_dtype=param_dtype, precision=precision, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        b, h, w, c = x.shape
        p = self.patch
        x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, (h // p) * (w // p), p, p, c)
        return self.proj(x)


class TimestepEmbedder(nnx.Module):
    """Scalar -> ``d``: sinusoidal features (256) -> Linear -> SiLU -> Linear (DiT eq. /
    ``TimestepEmbedder``; weights N(0, 0.02), biases 0)."""

    def __init__(self, dim: int, freq_dim: int = 256, *, max_period: float = 10000.0,
                 freq_shift: float = 0.0, dtype=jnp.float32, param_dtype=jnp.float32,
                 precision=None, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        kw = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs,
                  kernel_init=init)
        self.fc1 = DenseGeneral(freq_dim, dim, names=("freq", "embed"), **kw)
        self.fc2 = DenseGeneral(dim, dim, names=("embed", "mlp"), **kw)
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.freq_shift = freq_shift

    def __call__(self, t: Array) -> Array:
        f = timestep_embedding(t, self.freq_dim, self.max_period, self.freq_shift)
        return self.fc2(jax.nn.silu(self.fc1(f)))


class LabelEmbedder(nnx.Module):
    """Class label -> ``d`` with a null class for classifier-free guidance (DiT
    ``LabelEmbedder``). The table has ``num_classes + 1`` rows when ``dropout_prob > 0``; row
    ``num_classes`` is the null class. Init N(0, 0.02)."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float, *,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        rows = num_classes + int(dropout_prob > 0)
        init = _with_names(nnx.initializers.normal(0.02), ("vocab", "embed"))
        self.embedding = nnx.Param(init(rngs.params(), (rows, dim), param_dtype))
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def __call__(self, labels: Array, *, train: bool = False, key: Array | None = None,
                 force_drop_ids: Array | None = None) -> Array:
        labels = jnp.asarray(labels, jnp.int32)
        drop = None
        if train and self.dropout_prob > 0:
            if key is None:
                raise ValueError("label dropout at train time needs rngs= (an nnx.Rngs or a "
                                 "PRNG key)")
            drop = jax.random.uniform(key, labels.shape) < self.dropout_prob
        if force_drop_ids is not None:
            forced = jnp.asarray(force_drop_ids) == 1
            drop = forced if drop is None else (drop | forced)
        if drop is not None:
            labels = jnp.where(drop, self.num_classes, labels)
        return jnp.take(self.embedding[...], labels, axis=0)


class LayerNormNoAffine(nnx.Module):
    """LayerNorm without scale/bias (DiT ``elementwise_affine=False``), statistics in fp32."""

    def __init__(self, eps: float = 1e-6):
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        xf = x.astype(stat_dtype(x.dtype))
        mu = xf.mean(-1, keepdims=True)
        var = jnp.square(xf - mu).mean(-1, keepdims=True)
        return ((xf - mu) * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)


class RMSNorm(nnx.Module):
    """RMSNorm ``x / sqrt(mean(x^2) + eps) * w`` (Zhang & Sennrich 2019; LightningDiT
    ``models/rmsnorm.py``: learnable weight, init 1, computed in fp32)."""

    def __init__(self, dim: int, eps: float = 1e-6, *, param_dtype=jnp.float32,
                 names: Sequence[str | None] = ("embed",), rngs: nnx.Rngs | None = None):
        init = _with_names(nnx.initializers.ones_init(), tuple(names))
        self.weight = nnx.Param(init(jax.random.key(0), (dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        xf = x.astype(stat_dtype(x.dtype))
        y = xf * jax.lax.rsqrt(jnp.square(xf).mean(-1, keepdims=True) + self.eps)
        return (y * _expand_to(self.weight[...].astype(xf.dtype), y.ndim)).astype(x.dtype)


def make_norm(kind: str, dim: int, eps: float, *, param_dtype=jnp.float32,
              names: Sequence[str | None] = ("embed",)):
    """``'layernorm'`` (no affine) or ``'rmsnorm'`` (learnable weight)."""
    if kind == "layernorm":
        return LayerNormNoAffine(eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps, param_dtype=param_dtype, names=names)
    raise ValueError(f"norm_type must be 'layernorm' or 'rmsnorm'; got {kind!r}")


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array | None = None,
                          implementation: str | None = None) -> Array:
    """``softmax(q k^T / sqrt(d)) v`` over ``(B, N, H, D)`` inputs (Vaswani et al. 2017, Eq. 1).

    ``jax.nn.dot_product_attention`` computes the logits and softmax in float32 whatever the
    input dtype; float64 inputs take this float64 einsum path instead, so a float64 network
    stays exact. Other dtypes (bf16, fp32) go to ``jax.nn.dot_product_attention`` unchanged.
    """
    if q.dtype != jnp.float64:
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


def _attend(q, k, v, mask, implementation):
    return dot_product_attention(q, k, v, mask=mask, implementation=implementation)


class Attention(nnx.Module):
    """Multi-head self-attention with a fused qkv projection (timm ``Attention``, qkv bias).

    qkv kernel ``(d, 3, heads, head_dim)`` -- the row order of the reference's ``qkv.weight``
    reshaped ``(3, heads, head_dim)``; output kernel ``(heads, head_dim, d)``. Optional
    RMS qk-norm and 2-D RoPE (LightningDiT). Attention is ``jax.nn.dot_product_attention``
    (cuDNN flash attention on GPU when ``implementation='cudnn'``), scale ``head_dim^-1/2``.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, qk_norm: bool = False,
                 dtype=jnp.float32, param_dtype=jnp.float32, precision=None,
                 implementation: str | None = None, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        hd = dim // num_heads
        kw = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.qkv = DenseGeneral(dim, (3, num_heads, hd), names=("embed", None, "heads", "kv"),
                                use_bias=qkv_bias, **kw)
        self.proj = DenseGeneral((num_heads, hd), dim, names=("heads", "kv", "embed"), **kw)
        self.q_norm = RMSNorm(hd, names=("kv",), param_dtype=param_dtype) if qk_norm else None
        self.k_norm = RMSNorm(hd, names=("kv",), param_dtype=param_dtype) if qk_norm else None
        self.implementation = implementation

    def __call__(self, x: Array, rope: tuple[Array, Array] | None = None) -> Array:
        qkv = self.qkv(x)  # (B, N, 3, H, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        names = ("batch", "length", "act_heads", None)
        q, k, v = constrain(q, names), constrain(k, names), constrain(v, names)
        out = _attend(q, k, v, None, self.implementation)
        return self.proj(out)


class CrossAttention(nnx.Module):
    """Multi-head cross-attention from tokens to condition tokens (PixArt / Lumos
    ``MultiHeadCrossAttention``): q from ``x``, fused k/v from the context; the output
    projection is zero-initialised, so a new block starts as the identity."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, precision=None, implementation: str | None = None,
                 rngs: nnx.Rngs):
        hd = dim // num_heads
        kw = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.q = DenseGeneral(dim, (num_heads, hd), names=("embed", "heads", "kv"), **kw)
        self.kv = DenseGeneral(context_dim, (2, num_heads, hd),
                               names=("embed", None, "heads", "kv"), **kw)
        self.proj = DenseGeneral((num_heads, hd), dim, names=("heads", "kv", "embed"),
                                 kernel_init=nnx.initializers.zeros_init(), **kw)
        self.implementation = implementation

    def __call__(self, x: Array, context: Array, mask: Array | None = None) -> Array:
        q = self.q(x)
        kv = self.kv(context)
        m = None
        if mask is not None:  # (B, S) bool -> (B, 1, 1, S)
            m = jnp.asarray(mask, bool)[:, None, None, :]
        out = _attend(q, kv[:, :, 0], kv[:, :, 1], m, self.implementation)
        return self.proj(out)


class Mlp(nnx.Module):
    """``fc2(GELU_tanh(fc1(x)))`` (timm ``Mlp`` with ``GELU(approximate='tanh')``)."""

    def __init__(self, dim: int, hidden: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 precision=None, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.fc1 = DenseGeneral(dim, hidden, names=("embed", "mlp"), **kw)
        self.fc2 = DenseGeneral(hidden, dim, names=("mlp", "embed"), **kw)

    def __call__(self, x: Array) -> Array:
        h = constrain(jax.nn.gelu(self.fc1(x), approximate=True), ("batch", "length", "act_mlp"))
        return self.fc2(h)


class SwiGLU(nnx.Module):
    """SwiGLU FFN ``w3(SiLU(x W1) * (x W2))`` (Shazeer 2020; LightningDiT ``SwiGLUFFN`` with
    fused ``w12``: kernel ``(d, 2, hidden)``, index 0 is the SiLU-gated half)."""

    def __init__(self, dim: int, hidden: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 precision=None, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.w12 = DenseGeneral(dim, (2, hidden), names=("embed", None, "mlp"), **kw)
        self.w3 = DenseGeneral(hidden, dim, names=("mlp", "embed"), **kw)

    def __call__(self, x: Array) -> Array:
        h = self.w12(x)
        h = jax.nn.silu(h[..., 0, :]) * h[..., 1, :]
        return self.w3(constrain(h, ("batch", "length", "act_mlp")))
