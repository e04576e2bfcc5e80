"""NCSN++ / DDPM++ (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations", arXiv 2011.13456).

Reference: yang-song/score_sde (JAX/Flax) and score_sde_pytorch ``models/ncsnpp.py``,
``models/layerspp.py``, ``models/up_or_down_sampling.py``; CIFAR-10 configs
``configs/ve/cifar10_ncsnpp_continuous.py`` (NCSN++: Fourier features of ``log sigma``, FIR
kernel (1, 3, 3, 1), BigGAN residual blocks, ``progressive_input='residual'``,
``scale_by_sigma``) and ``configs/vp/cifar10_ddpmpp_continuous.py`` (DDPM++: positional
features of ``999 t``, no FIR, no progressive paths). Both: nf 128, ch_mult (1, 2, 2, 2),
4 residual blocks (8 in the "deep" variants), attention at 16, dropout 0.1, skip rescaling by
``1/sqrt(2)``, zero-ish init of output layers (``init_scale=0``).

Options implemented: ``resblock_type`` ``'biggan'``/``'ddpm'``; ``progressive`` (output side)
``'none'``/``'output_skip'``/``'residual'``; ``progressive_input`` ``'none'``/``'input_skip'``/
``'residual'``; ``progressive_combine`` ``'sum'``/``'cat'``; ``embedding_type``
``'fourier'``/``'positional'``.

Documented simplification: score_sde's *fused* FIR convolutions (``up_or_down_sampling.Conv2d``
with ``up``/``down``: a transposed/strided 3x3 conv with the FIR filter folded in), used only by
the resampling layers *with* a conv when ``fir=True`` (the progressive ``'residual'`` pyramids and
``resblock_type='ddpm'`` resamplers), are replaced by FIR resampling followed by a stride-1 3x3
conv: the same parameters (count and shapes), a slightly different function. The FIR
resampling without conv (inside BigGAN blocks, ``input_skip``/``output_skip`` pyramids) is exact
(``upfirdn2d`` with the reference's padding).

Time input: ``'sigma'`` for Fourier models (``time_input('sigma')``: the VE sigma; the network
takes its log and, with ``scale_by_sigma``, divides its output by it), ``'vp_999t'`` for
DDPM++ (positional features of ``999 t``).

Second time input (``second_scalar=True``), for two-time networks such as IMM's one-step
sampler ``G_theta(x_t, c_noise(t), c_noise(s))`` (Zhou, Ermon, Song 2025, "Inductive Moment
Matching", arXiv 2503.07565, §4 / spec 4a): ``cond`` is then a dict ``{'s': (B,), 'y': ...}``
exactly as for :class:`diffjax.models.dit.DiT` and :class:`diffjax.models.mlp.ToyMLP` with
``second_scalar``. ``s`` goes through the same feature map as ``t`` (positional features of the
value as given, or Fourier features of its log, so there ``s`` must be positive like ``t``; IMM
itself uses the positional one) into its *own* embedding MLP
``Dense(-> 4 nf) -> SiLU -> Dense(4 nf -> 4 nf)``, and the two MLP outputs are summed; every
residual block then applies ``SiLU`` to the sum before its own Dense. This is IMM's
``SongUNet`` with ``s_embed=True`` (``training/unets.py``: ``map_noise_s``, ``map_layer0_s``,
``map_layer1_s``; ``emb = silu(map_layer1(silu(map_layer0(pe(t)))) + map_layer1_s(silu(
map_layer0_s(pe(s)))))``, as reproduced in the third-party ``IMM-Training`` code; the official
lumalabs/imm network file is not in the stored sources). Score_sde's blocks apply the SiLU to
the embedding themselves (``Dense_0(act(temb))``), so summing before the blocks is the same
function. With ``second_scalar=False`` nothing is added: parameters, initialisation and outputs
are those of the plain network, and the s-embedder is built last so that even with
``second_scalar=True`` every shared parameter initialises as in the plain network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.models.layers import at_least_float32, stat_dtype
from diffjax.models.layers_unet import (
    INV_SQRT2,
    AttnBlock,
    Conv,
    Downsample,
    FourierFeatures,
    GroupNorm,
    ResBlock,
    TimeEmbedding,
    Upsample,
    timestep_embedding,
)

Array = Any

__all__ = ["NCSNpp", "NCSNPP_PRESETS", "ncsnpp_from_preset"]


class _Combine(nnx.Module):
    def __init__(self, d1, d2, method, **kw):
        self.conv = Conv(d1, d2, 1, **kw)
        self.method = method

    def __call__(self, x, y):
        h = self.conv(x)
        return jnp.concatenate([h, y], axis=-1) if self.method == "cat" else h + y


class NCSNpp(nnx.Module):
    """NCSN++ / DDPM++ score network (defaults: VE NCSN++ CIFAR-10 continuous).

    Called as ``net(x, time_value, cond=None, train=False, rngs=None)`` with ``time_value``
    the sigma (Fourier) or the positional time (``999 t`` for DDPM++), shape ``(B,)``. The
    network is unconditional: class labels in ``cond`` (an array, or ``cond['y']``) are
    ignored, as before. With ``second_scalar=True``, ``cond`` must be a dict with ``'s'``
    (``(B,)`` or a scalar, in the same units as ``time_value``; see the module docstring).

    Args:
      image_size, in_channels: data shape (NHWC).
      nf, ch_mult, num_res_blocks, attn_resolutions, dropout: widths and depth.
      resamp_with_conv, fir, fir_kernel: resampling (see module docstring).
      skip_rescale: divide residual sums by sqrt(2).
      resblock_type: ``'biggan'`` (resampling residual blocks) or ``'ddpm'``.
      progressive, progressive_input, progressive_combine: the multi-scale skip options.
      embedding_type, fourier_scale: ``'fourier'`` (of ``log sigma``) or ``'positional'``.
      scale_by_sigma: divide the output by the input sigma (VE models).
      centered: data already in [-1, 1] (else ``x -> 2x - 1`` first).
      second_scalar: add a second time embedder for ``cond['s']`` (IMM's ``s_embed``; see the
        module docstring). Default False: the plain score_sde network.
      dtype, param_dtype, remat, rngs: as :class:`diffjax.models.unet.UNet`.
    """

    def __init__(self, *, image_size: int = 32, in_channels: int = 3, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1,
                 resamp_with_conv: bool = True, fir: bool = True,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True,
                 resblock_type: str = "biggan", progressive: str = "none",
                 progressive_input: str = "residual", progressive_combine: str = "sum",
                 embedding_type: str = "fourier", fourier_scale: float = 16.0,
                 scale_by_sigma: bool = True, centered: bool = True,
                 second_scalar: bool = False, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, remat: bool = False, rngs: nnx.Rngs):
        checks = dict(resblock_type=(resblock_type, ("biggan", "ddpm")),
                      progressive=(progressive, ("none", "output_skip", "residual")),
                      progressive_input=(progressive_input, ("none", "input_skip", "residual")),
                      progressive_combine=(progressive_combine, ("sum", "cat")),
                      embedding_type=(embedding_type, ("fourier", "positional")))
        for name, (val, ok) in checks.items():
            if val not in ok:
                raise ValueError(f"{name}={val!r}; expected one of {ok}")
        nlev = len(ch_mult)
        self.factor = 2 ** (nlev - 1)
        if image_size % self.factor:
            raise ValueError(f"image_size={image_size} is not divisible by the down-sampling "
                             f"factor {self.factor}")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        fk = tuple(fir_kernel) if fir else None
        self.in_channels, self.nf, self.nlev, self.nrb = in_channels, nf, nlev, num_res_blocks
        self.resblock_type, self.progressive, self.progressive_input = (
            resblock_type, progressive, progressive_input)
        self.skip_rescale, self.embedding_type = skip_rescale, embedding_type
        self.scale_by_sigma, self.centered, self.dtype, self.remat = (
            scale_by_sigma, centered, dtype, remat)
        temb = 4 * nf
        self.fourier = (FourierFeatures(nf, fourier_scale, rngs=rngs)
                        if embedding_type == "fourier" else None)
        self.time_embed = TimeEmbedding(2 * nf if embedding_type == "fourier" else nf, temb, **kw)

        def res(cin, cout=None, up=False, down=False):
            return ResBlock(cin, cout, temb, dropout=dropout, up=up, down=down, groups=None,
                            eps=1e-6, skip_rescale=skip_rescale, fir_kernel=fk,
                            shortcut_on_resample=resblock_type == "biggan", **kw)

        def attn(c):
            return AttnBlock(c, groups=None, eps=1e-6, skip_rescale=skip_rescale, **kw)

        def norm(c):
            return GroupNorm(c, None, 1e-6, **kw)

        m: list = []
        resolutions = [image_size // 2 ** i for i in range(nlev)]
        c = in_channels
        pyr_in = in_channels
        m.append(Conv(c, nf, 3, **kw))
        hs_c = [nf]
        cin = nf
        for i in range(nlev):
            for _ in range(num_res_blocks):
                cout = nf * ch_mult[i]
                m.append(res(cin, cout))
                cin = cout
                if resolutions[i] in attn_resolutions:
                    m.append(attn(cin))
                hs_c.append(cin)
            if i != nlev - 1:
                if resblock_type == "ddpm":
                    m.append(Downsample(cin, with_conv=resamp_with_conv, padding="same",
                                        fir_kernel=fk, **kw))
                else:
                    m.append(res(cin, down=True))
                if progressive_input == "input_skip":
                    m.append(Downsample(pyr_in, with_conv=False, padding="same", fir_kernel=fk,
                                        **kw))
                    m.append(_Combine(pyr_in, cin, progressive_combine, **kw))
                    if progressive_combine == "cat":
                        cin *= 2
                elif progressive_input == "residual":
                    m.append(Downsample(pyr_in, cin, with_conv=True, padding="same", fir_kernel=fk,
                                        **kw))
                    pyr_in = cin
                hs_c.append(cin)
        cin = hs_c[-1]
        m += [res(cin), attn(cin), res(cin)]
        pyr_ch = 0
        for i in reversed(range(nlev)):
            for _ in range(num_res_blocks + 1):
                cout = nf * ch_mult[i]
                m.append(res(cin + hs_c.pop(), cout))
                cin = cout
            if resolutions[i] in attn_resolutions:
                m.append(attn(cin))
            if progressive != "none":
                if i == nlev - 1:
                    m.append(norm(cin))
                    if progressive == "output_skip":
                        m.append(Conv(cin, c, 3, init_scale=0.0, **kw))
                        pyr_ch = c
                    else:
                        m.append(Conv(cin, cin, 3, **kw))
                        pyr_ch = cin
                else:
                    if progressive == "output_skip":
                        m.append(Upsample(pyr_ch, with_conv=False, fir_kernel=fk, **kw))
                        m.append(norm(cin))
                        m.append(Conv(cin, c, 3, init_scale=0.0, **kw))
                        pyr_ch = c
                    else:
                        m.append(Upsample(pyr_ch, cin, with_conv=True, fir_kernel=fk, **kw))
                        pyr_ch = cin
            if i != 0:
                if resblock_type == "ddpm":
                    m.append(Upsample(cin, with_conv=resamp_with_conv, fir_kernel=fk, **kw))
                else:
                    m.append(res(cin, up=True))
        assert not hs_c
        if progressive != "output_skip":
            m.append(norm(cin))
            m.append(Conv(cin, c, 3, init_scale=0.0, **kw))
        self.modules = nnx.List(m)
        self.attn_levels = tuple(resolutions[i] in attn_resolutions for i in range(nlev))
        # IMM's s-embedder (module docstring): its own features (a separate random Fourier
        # table, as IMM's map_noise_s) and MLP. Built after everything else so the rng stream,
        # hence every shared parameter's initial value, is that of the plain network.
        self.second_scalar = bool(second_scalar)
        self.fourier_s = (FourierFeatures(nf, fourier_scale, rngs=rngs)
                          if second_scalar and embedding_type == "fourier" else None)
        self.s_embed = (TimeEmbedding(2 * nf if embedding_type == "fourier" else nf, temb, **kw)
                        if second_scalar else None)

    def _res(self, blk, h, emb, train, rngs):
        if not self.remat:
            return blk(h, emb, train=train, rngs=rngs)
        return nnx.remat(lambda b, h_, e_, r_: b(h_, e_, train=train, rngs=r_))(blk, h, emb, rngs)

    def _features(self, v: Array, fourier: FourierFeatures | None) -> Array:
        """Time features of ``v`` (B,): Fourier of ``log v`` or positional of ``v``."""
        if self.embedding_type == "fourier":
            return fourier(jnp.log(v))
        return timestep_embedding(v, self.nf, flip_sin_to_cos=False, freq_shift=1.0)

    def _second(self, cond: Any, batch: int) -> Array | None:
        """``cond['s']`` as ``(B,)`` float32 (None without ``second_scalar``), with the
        DiT/ToyMLP ``second_scalar`` checks."""
        if isinstance(cond, dict):
            unknown = set(cond) - {"y", "s"}
            if unknown:
                raise ValueError(f"cond has unknown keys {sorted(unknown)}; NCSNpp reads 's' "
                                 "(second_scalar) and ignores 'y' (unconditional)")
            s = cond.get("s")
        else:
            s = None
        if self.second_scalar and s is None:
            raise ValueError("this NCSNpp has second_scalar=True: cond must be a dict with "
                             "'s' (B,)")
        if s is not None and not self.second_scalar:
            raise ValueError("cond['s'] given but the NCSNpp has second_scalar=False")
        if s is None:
            return None
        s = at_least_float32(s)
        if s.ndim == 0:
            s = jnp.broadcast_to(s, (batch,))
        if s.shape != (batch,):
            raise ValueError(f"cond['s'] must be a scalar or have shape ({batch},); got "
                             f"{s.shape}")
        return s

    def __call__(self, x: Array, t: Array, cond: Any = None, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> Array:
        """Forward pass.

        Args:
          x: ``(B, H, W, in_channels)``.
          t: ``(B,)`` or scalar time input (sigma for Fourier models, else the positional
            time value).
          cond: None, labels (ignored), or a dict ``{'s': (B,), 'y': ...}`` (``'s'`` required
            exactly when ``second_scalar``).
          train, rngs: dropout switch and its ``nnx.Rngs``.

        Returns:
          ``(B, H, W, in_channels)`` float32.
        """
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"x must be NHWC with in_channels={self.in_channels} channels; got "
                             f"shape {tuple(x.shape)}")
        if x.shape[1] % self.factor or x.shape[2] % self.factor:
            raise ValueError(f"x resolution {x.shape[1]}x{x.shape[2]} is not divisible by the "
                             f"down-sampling factor {self.factor}")
        t = at_least_float32(t).reshape(-1)
        t = jnp.broadcast_to(t, (x.shape[0],))
        s = self._second(cond, x.shape[0])
        m = self.modules
        k = 0
        emb = self.time_embed(self._features(t, self.fourier).astype(self.dtype))
        if s is not None:
            # IMM: emb_t + emb_s, each after its own MLP; the blocks apply the SiLU
            emb = emb + self.s_embed(self._features(s, self.fourier_s).astype(self.dtype))
        if not self.centered:
            x = 2 * x - 1.0
        x = x.astype(self.dtype)
        pyr = x if self.progressive_input != "none" else None
        hs = [m[k](x)]
        k += 1
        for i in range(self.nlev):
            for _ in range(self.nrb):
                h = self._res(m[k], hs[-1], emb, train, rngs)
                k += 1
                if self.attn_levels[i]:
                    h = m[k](h)
                    k += 1
                hs.append(h)
            if i != self.nlev - 1:
                if self.resblock_type == "ddpm":
                    h = m[k](hs[-1])
                else:
                    h = self._res(m[k], hs[-1], emb, train, rngs)
                k += 1
                if self.progressive_input == "input_skip":
                    pyr = m[k](pyr)
                    h = m[k + 1](pyr, h)
                    k += 2
                elif self.progressive_input == "residual":
                    pyr = m[k](pyr)
                    k += 1
                    pyr = (pyr + h) * INV_SQRT2 if self.skip_rescale else pyr + h
                    h = pyr
                hs.append(h)
        h = self._res(m[k], hs[-1], emb, train, rngs)
        h = m[k + 1](h)
        h = self._res(m[k + 2], h, emb, train, rngs)
        k += 3
        pyramid = None
        for i in reversed(range(self.nlev)):
            for _ in range(self.nrb + 1):
                h = self._res(m[k], jnp.concatenate([h, hs.pop()], axis=-1), emb, train, rngs)
                k += 1
            if self.attn_levels[i]:
                h = m[k](h)
                k += 1
            if self.progressive != "none":
                if i == self.nlev - 1:
                    pyramid = m[k + 1](jax.nn.silu(m[k](h)))
                    k += 2
                elif self.progressive == "output_skip":
                    pyramid = m[k](pyramid)
                    pyramid = pyramid + m[k + 2](jax.nn.silu(m[k + 1](h)))
                    k += 3
                else:
                    pyramid = m[k](pyramid)
                    k += 1
                    pyramid = (pyramid + h) * INV_SQRT2 if self.skip_rescale else pyramid + h
                    h = pyramid
            if i != 0:
                if self.resblock_type == "ddpm":
                    h = m[k](h)
                else:
                    h = self._res(m[k], h, emb, train, rngs)
                k += 1
        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = m[k + 1](jax.nn.silu(m[k](h)))
            k += 2
        assert k == len(m)
        h = h.astype(stat_dtype(self.dtype))  # float32, or float64 for a float64 network
        if self.scale_by_sigma:
            h = h / t.reshape(-1, 1, 1, 1)
        return h


_NCSNPP_VE = dict(image_size=32, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4,
                  attn_resolutions=(16,), dropout=0.1, fir=True, resblock_type="biggan",
                  progressive="none", progressive_input="residual", progressive_combine="sum",
                  embedding_type="fourier", fourier_scale=16.0, scale_by_sigma=True)
_DDPMPP_VP = dict(image_size=32, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4,
                  attn_resolutions=(16,), dropout=0.1, fir=False, resblock_type="biggan",
                  progressive="none", progressive_input="none", progressive_combine="sum",
                  embedding_type="positional", scale_by_sigma=False)

#: score_sde CIFAR-10 presets (``configs/ve/cifar10_ncsnpp_continuous.py``,
#: ``configs/vp/cifar10_ddpmpp_continuous.py`` and their ``_deep`` variants).
NCSNPP_PRESETS: dict[str, dict] = {
    "ncsnpp_cifar10": _NCSNPP_VE,
    "ncsnpp_deep_cifar10": {**_NCSNPP_VE, "num_res_blocks": 8},
    "ddpmpp_cifar10": _DDPMPP_VP,
    "ddpmpp_deep_cifar10": {**_DDPMPP_VP, "num_res_blocks": 8},
}


def ncsnpp_from_preset(preset: str, *, rngs: nnx.Rngs, **overrides) -> NCSNpp:
    """Build an NCSN++/DDPM++ preset (``nnx.eval_shape`` for sizes only)."""
    if preset not in NCSNPP_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(NCSNPP_PRESETS)}")
    return NCSNpp(**{**NCSNPP_PRESETS[preset], **overrides}, rngs=rngs)
