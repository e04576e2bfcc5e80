"""Small generators and discriminators for the adversarial methods (DDGAN, Diffusion-GAN).

Generators follow the diffjax call ``net(x, t, cond)`` so a :class:`~diffjax.models.Network`
binds them like any denoiser; the latent rides in ``cond['z']``:

* :class:`ConvGenerator`: DDGAN's conditional generator ``G(x_{t+1}, t, z) -> x0`` (Xiao et
  al. 2022, sec. 3.3 and App. C) at toy scale: a small U-Net whose residual blocks add a
  sinusoidal time embedding and inject ``z`` by adaptive group normalisation (AdaGN,
  ``GN(h) * gamma(w) + beta(w)`` with ``w`` the output of a ``n_mlp``-layer mapping network of
  the pixel-normalised ``z``, as StyleGAN's mapping network), with a ``tanh`` output. The
  paper's generator is NCSN++ with the same AdaGN z-injection (ch 128, mult (1, 2, 2, 2), 2 res
  blocks, ``nz = 100``, ``z_emb_dim = 256``, ``n_mlp = 4`` on CIFAR-10); that preset is a slot
  not filled here: it needs AdaGN in :class:`~diffjax.models.NCSNpp`'s residual blocks.
* :class:`DCGANGenerator`: a DCGAN-like ``z -> image`` generator (Radford et al. 2016) for
  Diffusion-GAN demos; it is called ``net(z, t, cond)`` with ``t`` ignored. Diffusion-GAN's
  paper uses StyleGAN2 (Karras et al. 2020) here; a StyleGAN2 port is the documented slot:
  any ``nnx.Module`` with this call works with :func:`diffjax.methods.diffusion_gan`.
* :class:`MLPGenerator`: both kinds for 2-D toy data (``conditional=True``: ``G(x_{t+1}, t,
  z)``; ``False``: ``G(z)``).

Discriminators return per-example logits ``(B,)``, see each example independently (no batch
statistics, so :func:`diffjax.losses.gan.r1_penalty` is exact) and are called ``D(x, t,
x_cond=None)``: DDGAN's ``D(x_t, t, x_{t+1})`` concatenates the pair on channels and embeds
``t``; Diffusion-GAN's ``D(y, t)`` has no ``x_cond``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.models.layers import timestep_embedding

__all__ = ["MLPGenerator", "MLPDiscriminator", "ConvGenerator", "DCGANGenerator",
           "ConvDiscriminator", "MappingNetwork", "AdaGroupNorm", "discriminator_for"]


def _lrelu(x):
    return jax.nn.leaky_relu(x, 0.2)


def _z(cond, batch, nz):
    z = cond.get("z") if isinstance(cond, dict) else None
    if z is None:
        raise ValueError(f"a generator needs its latent as cond['z'] of shape ({batch}, {nz})")
    if z.shape != (batch, nz):
        raise ValueError(f"cond['z'] must have shape ({batch}, {nz}); got {z.shape}")
    return z


class MappingNetwork(nnx.Module):
    """``z -> w``: pixel norm, then ``n_mlp`` (Linear, LeakyReLU 0.2) layers (the DDGAN
    generator's ``z_transform``, after StyleGAN's mapping network)."""

    def __init__(self, nz: int, z_emb_dim: int, n_mlp: int, *, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(nz if i == 0 else z_emb_dim, z_emb_dim, rngs=rngs)
                                for i in range(n_mlp)])

    def __call__(self, z):
        h = z * jax.lax.rsqrt(jnp.mean(jnp.square(z), axis=-1, keepdims=True) + 1e-8)
        for layer in self.layers:
            h = _lrelu(layer(h))
        return h


class AdaGroupNorm(nnx.Module):
    """Adaptive group norm: ``GroupNorm(h) * gamma(w) + beta(w)``, ``gamma`` initialised at 1
    and ``beta`` at 0 through the bias of one linear map (DDGAN's ``AdaptiveGroupNorm``)."""

    def __init__(self, channels: int, w_dim: int, groups: int, *, rngs: nnx.Rngs):
        self.norm = nnx.GroupNorm(channels, num_groups=groups, use_scale=False, use_bias=False,
                                  rngs=rngs)
        bias = jnp.concatenate([jnp.ones((channels,)), jnp.zeros((channels,))])
        self.style = nnx.Linear(w_dim, 2 * channels, rngs=rngs,
                                bias_init=lambda *_: bias)

    def __call__(self, h, w):
        gamma, beta = jnp.split(self.style(w)[:, None, None, :], 2, axis=-1)
        return self.norm(h) * gamma + beta


class _AdaResBlock(nnx.Module):
    def __init__(self, cin, cout, temb_dim, w_dim, groups, *, rngs):
        self.n1 = AdaGroupNorm(cin, w_dim, min(groups, cin), rngs=rngs)
        self.c1 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
        self.t = nnx.Linear(temb_dim, cout, rngs=rngs)
        self.n2 = AdaGroupNorm(cout, w_dim, min(groups, cout), rngs=rngs)
        self.c2 = nnx.Conv(cout, cout, (3, 3), rngs=rngs)
        self.skip = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None

    def __call__(self, x, temb, w):
        h = self.c1(_lrelu(self.n1(x, w)))
        h = h + self.t(temb)[:, None, None, :]
        h = self.c2(_lrelu(self.n2(h, w)))
        return (x if self.skip is None else self.skip(x)) + h / math.sqrt(2.0)


class ConvGenerator(nnx.Module):
    """DDGAN's conditional generator ``G(x_{t+1}, t, z) -> x0`` at toy scale (see the module
    docstring). ``t`` is the chain index fed as a number (the paper's positional embedding).

    Args: image_size, in_channels, nz (latent size), ch, ch_mult (one level per entry, 2x
    average-pool down / nearest up between levels), z_emb_dim, n_mlp (mapping layers),
    time_dim, groups (group-norm groups), tanh (squash the output to [-1, 1]).
    """

    def __init__(self, image_size: int = 32, in_channels: int = 3, nz: int = 100, ch: int = 32,
                 ch_mult: tuple = (1, 2), z_emb_dim: int = 128, n_mlp: int = 3,
                 time_dim: int = 64, groups: int = 8, tanh: bool = True, *, rngs: nnx.Rngs):
        if image_size % (2 ** (len(ch_mult) - 1)):
            raise ValueError(f"image_size={image_size} must be divisible by 2^(len(ch_mult)-1)")
        self.image_size, self.in_channels, self.nz = image_size, in_channels, nz
        self.time_dim, self.tanh = time_dim, bool(tanh)
        self.mapping = MappingNetwork(nz, z_emb_dim, n_mlp, rngs=rngs)
        self.temb = nnx.Linear(time_dim, 4 * time_dim, rngs=rngs)
        td = 4 * time_dim
        self.conv_in = nnx.Conv(in_channels, ch, (3, 3), rngs=rngs)
        chans = [ch * m for m in ch_mult]
        down, c = [], ch
        for co in chans:
            down.append(_AdaResBlock(c, co, td, z_emb_dim, groups, rngs=rngs))
            c = co
        self.down = nnx.List(down)
        self.mid = _AdaResBlock(c, c, td, z_emb_dim, groups, rngs=rngs)
        up = []
        for co in reversed(chans):
            up.append(_AdaResBlock(c + co, co, td, z_emb_dim, groups, rngs=rngs))
            c = co
        self.up = nnx.List(up)
        self.norm_out = nnx.GroupNorm(c, num_groups=min(groups, c), rngs=rngs)
        self.conv_out = nnx.Conv(c, in_channels, (3, 3), rngs=rngs)

    def __call__(self, x, t, cond: Any = None, *, train: bool = False, rngs: Any = None):
        """``x`` ``(B, H, W, C)`` the noisier image, ``t`` ``(B,)`` the chain index,
        ``cond['z']`` ``(B, nz)``; returns the ``x0`` prediction."""
        B = x.shape[0]
        w = self.mapping(_z(cond, B, self.nz))
        temb = self.temb(timestep_embedding(jnp.broadcast_to(t, (B,)), self.time_dim))
        temb = _lrelu(temb)
        h = self.conv_in(x)
        skips = []
        for i, blk in enumerate(self.down):
            h = blk(h, temb, w)
            skips.append(h)
            if i < len(self.down) - 1:
                h = nnx.avg_pool(h, (2, 2), (2, 2))
        h = self.mid(h, temb, w)
        for blk in self.up:
            s = skips.pop()
            if h.shape[1] != s.shape[1]:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = blk(jnp.concatenate([h, s], axis=-1), temb, w)
        out = self.conv_out(_lrelu(self.norm_out(h)))
        return jnp.tanh(out) if self.tanh else out


class DCGANGenerator(nnx.Module):
    """``z -> image``: Linear to ``(s/4, s/4, 2 ch)``, two (nearest 2x up, 3x3 conv, group
    norm, LeakyReLU) stages, a 3x3 conv and ``tanh`` (DCGAN's shape, Radford et al. 2016).
    Called ``net(z, t, cond)``; ``t`` and ``cond`` are ignored (an unconditional GAN)."""

    def __init__(self, nz: int = 64, image_size: int = 32, in_channels: int = 3, ch: int = 64,
                 groups: int = 8, *, rngs: nnx.Rngs):
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4; got {image_size}")
        self.nz, self.image_size, self.in_channels, self.ch = nz, image_size, in_channels, ch
        s = image_size // 4
        self.fc = nnx.Linear(nz, s * s * 2 * ch, rngs=rngs)
        self.c1 = nnx.Conv(2 * ch, ch, (3, 3), rngs=rngs)
        self.n1 = nnx.GroupNorm(ch, num_groups=min(groups, ch), rngs=rngs)
        self.c2 = nnx.Conv(ch, ch, (3, 3), rngs=rngs)
        self.n2 = nnx.GroupNorm(ch, num_groups=min(groups, ch), rngs=rngs)
        self.out = nnx.Conv(ch, in_channels, (3, 3), rngs=rngs)

    def __call__(self, z, t=None, cond: Any = None, *, train: bool = False, rngs: Any = None):
        if z.ndim != 2 or z.shape[1] != self.nz:
            raise ValueError(f"z must have shape (batch, {self.nz}); got {z.shape}")
        s = self.image_size // 4
        h = _lrelu(self.fc(z)).reshape(z.shape[0], s, s, 2 * self.ch)
        for conv, norm in ((self.c1, self.n1), (self.c2, self.n2)):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = _lrelu(norm(conv(h)))
        return jnp.tanh(self.out(h))


class MLPGenerator(nnx.Module):
    """A toy generator for vectors of size ``dim``. ``conditional=True``: ``G(x_{t+1}, t, z)
    -> x0`` (DDGAN, ``z`` in ``cond['z']``); ``False``: ``G(z)`` called ``net(z, t, cond)``
    with ``t``/``cond`` ignored (a plain or Diffusion-GAN generator)."""

    def __init__(self, dim: int = 2, nz: int = 8, width: int = 128, depth: int = 3,
                 time_dim: int = 32, conditional: bool = True, *, rngs: nnx.Rngs):
        self.dim, self.nz, self.time_dim = dim, nz, time_dim
        self.conditional = bool(conditional)
        in_dim = (dim + time_dim + nz) if conditional else nz
        self.layers = nnx.List([nnx.Linear(in_dim if i == 0 else width, width, rngs=rngs)
                                for i in range(depth)])
        self.out = nnx.Linear(width, dim, rngs=rngs)

    def __call__(self, x, t=None, cond: Any = None, *, train: bool = False, rngs: Any = None):
        if self.conditional:
            if x.ndim != 2 or x.shape[1] != self.dim:
                raise ValueError(f"x must have shape (batch, {self.dim}); got {x.shape}")
            B = x.shape[0]
            temb = timestep_embedding(jnp.broadcast_to(t, (B,)), self.time_dim)
            h = jnp.concatenate([x, temb, _z(cond, B, self.nz)], axis=-1)
        else:
            if x.ndim != 2 or x.shape[1] != self.nz:
                raise ValueError(f"z must have shape (batch, {self.nz}); got {x.shape}")
            h = x
        for layer in self.layers:
            h = _lrelu(layer(h))
        return self.out(h)


class MLPDiscriminator(nnx.Module):
    """``D(x, t, x_cond) -> (B,)`` logits for vectors: concat(x, [x_cond], [t embedding]) ->
    ``depth`` (Linear, LeakyReLU 0.2) -> Linear. ``cond_dim`` is ``x_cond``'s size (0: none);
    ``time_conditioned=False`` ignores ``t`` (a plain GAN's D)."""

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 3, cond_dim: int = 0,
                 time_dim: int = 32, time_conditioned: bool = True, *, rngs: nnx.Rngs):
        self.dim, self.cond_dim, self.time_dim = dim, cond_dim, time_dim
        self.time_conditioned = bool(time_conditioned)
        in_dim = dim + cond_dim + (time_dim if time_conditioned else 0)
        self.layers = nnx.List([nnx.Linear(in_dim if i == 0 else width, width, rngs=rngs)
                                for i in range(depth)])
        self.out = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, x, t, x_cond=None):
        parts = [x]
        if self.cond_dim:
            parts.append(x_cond)
        if self.time_conditioned:
            parts.append(timestep_embedding(jnp.broadcast_to(t, x.shape[:1]), self.time_dim))
        h = jnp.concatenate(parts, axis=-1)
        for layer in self.layers:
            h = _lrelu(layer(h))
        return self.out(h)[:, 0]


class ConvDiscriminator(nnx.Module):
    """``D(x, t, x_cond) -> (B,)`` logits for images: concat(x, [x_cond]) on channels -> 3x3
    conv -> ``len(ch_mult)`` (conv, add projected t embedding, LeakyReLU, conv, LeakyReLU, 2x
    average pool) stages -> sum over pixels -> Linear (a small version of DDGAN's time-dependent
    discriminator). No normalisation layers: examples never interact."""

    def __init__(self, in_channels: int = 3, cond_channels: int = 0, ch: int = 32,
                 ch_mult: tuple = (1, 2), time_dim: int = 64, time_conditioned: bool = True,
                 *, rngs: nnx.Rngs):
        self.cond_channels, self.time_dim = cond_channels, time_dim
        self.time_conditioned = bool(time_conditioned)
        self.conv_in = nnx.Conv(in_channels + cond_channels, ch, (3, 3), rngs=rngs)
        c, c1, c2, tp = ch, [], [], []
        for m in ch_mult:
            co = ch * m
            c1.append(nnx.Conv(c, co, (3, 3), rngs=rngs))
            c2.append(nnx.Conv(co, co, (3, 3), rngs=rngs))
            tp.append(nnx.Linear(time_dim, co, rngs=rngs))
            c = co
        self.c1, self.c2, self.tproj = nnx.List(c1), nnx.List(c2), nnx.List(tp)
        self.out = nnx.Linear(c, 1, rngs=rngs)

    def __call__(self, x, t, x_cond=None):
        h = jnp.concatenate([x, x_cond], axis=-1) if self.cond_channels else x
        h = _lrelu(self.conv_in(h))
        temb = (timestep_embedding(jnp.broadcast_to(t, x.shape[:1]), self.time_dim)
                if self.time_conditioned else None)
        for conv1, conv2, tp in zip(self.c1, self.c2, self.tproj, strict=True):
            h = conv1(h)
            if temb is not None:
                h = h + tp(temb)[:, None, None, :]
            h = _lrelu(conv2(_lrelu(h)))
            if h.shape[1] > 1 and h.shape[1] % 2 == 0:
                h = nnx.avg_pool(h, (2, 2), (2, 2))
        return self.out(jnp.sum(h, axis=(1, 2)))[:, 0]


def discriminator_for(x_shape: tuple, *, width: int, depth: int, pair: bool,
                      time_conditioned: bool = True, rngs: nnx.Rngs) -> nnx.Module:
    """The toy/small discriminator for examples of ``x_shape``: :class:`MLPDiscriminator` for
    vectors ``(d,)``, :class:`ConvDiscriminator` (``depth`` levels of ``width * 2^i``
    channels, capped at 4x) for images ``(H, W, C)``; ``pair`` adds the DDGAN ``x_{t+1}``
    input of the same shape."""
    if len(x_shape) == 1:
        d = int(x_shape[0])
        return MLPDiscriminator(d, width, depth, cond_dim=d if pair else 0,
                                time_conditioned=time_conditioned, rngs=rngs)
    if len(x_shape) == 3:
        c = int(x_shape[-1])
        mult = tuple(min(2 ** i, 4) for i in range(depth))
        return ConvDiscriminator(c, c if pair else 0, width, mult,
                                 time_conditioned=time_conditioned, rngs=rngs)
    raise ValueError(f"no discriminator for examples of shape {x_shape}; expected (d,) or "
                     "(H, W, C)")
