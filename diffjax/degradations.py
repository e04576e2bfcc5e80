"""Cold Diffusion's degradation operators (Bansal et al. 2022, arXiv 2208.09392, sec. 3-4).

A degradation ``D(x0, s)`` maps a clean batch ``x0`` (``(B, H, W, C)``, data in ``[-1, 1]``) to
its degraded version after ``s`` steps, ``s in {0, 1, ..., T}`` (``D(x0, 0) = x0``). It is
deterministic given an optional auxiliary input ``aux`` fixed per sample (the Gaussian noise
``z`` of the noise degradation, the other data set's image of animorphosis, the centre of a
random mask, a fade colour). A degradation is *not* a Gaussian process: none of these objects
has an ``alpha(t)`` / ``sigma(t)``; the samplers of :mod:`diffjax.samplers.cold` only call
``D``.

Index convention. ``s`` counts degradation steps: ``s = 1`` is one application (one blur
kernel, one mask factor). The reference code draws a 0-based index ``t in {0..T-1}`` that
means ``t + 1`` steps and feeds ``t`` to the network; diffjax keeps ``s = t + 1`` and feeds the
network ``t = s / T`` in diffjax time, which a network with ``time_input='ddpm_index'`` and
``num_timesteps=T`` turns back into the reference's ``s - 1``.

Every degradation is a ``flax.struct.dataclass`` (its tables are traced leaves, its integers
static) with ``__call__(x0, s, aux=None)`` where ``s`` is an int scalar or ``(B,)`` array and
``needs_aux`` / ``draw_aux(key, x0)`` describe its auxiliary input. All are pure and jit-able.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = Any

__all__ = ["BLUR_ROUTINES", "gaussian_kernel_1d", "blur_stds", "Blur", "GaussianMask",
           "SquareMask", "Pixelate", "Fade", "Snow", "Interpolate", "gaussian_noise",
           "animorphosis", "quantize_8bit", "DEGRADATIONS", "make_degradation"]

#: the reference's blur kernel schedules (``get_kernels``); ``'cifar10'`` is its
#: ``Special_6_routine``
BLUR_ROUTINES = ("incremental", "constant", "exponential", "cifar10")


def _per_sample(s: Array, batch: int) -> Array:
    s = jnp.asarray(s)
    return jnp.broadcast_to(s.astype(jnp.int32), (batch,))


def _bcast(v: Array, x: Array) -> Array:
    """A per-sample ``(B,)`` value broadcast against ``x`` (``(B, ...)``)."""
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def _check_steps(num_steps) -> int:
    if not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool) \
            or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int (T); got {num_steps!r}")
    return int(num_steps)


def quantize_8bit(x: Array) -> Array:
    """The reference's ``--discrete`` quantisation of degraded training images: map ``[-1, 1]``
    to ``[0, 255]``, truncate (its ``.int()``), map back."""
    u = (x + 1.0) * 0.5 * 255.0
    return jnp.trunc(u) / 255.0 * 2.0 - 1.0


# ----------------------------------------------------------------------------------------------
# Blur
# ----------------------------------------------------------------------------------------------


def gaussian_kernel_1d(size: int, std: float) -> np.ndarray:
    """The normalised 1-D Gaussian taps ``exp(-(i - size // 2)^2 / (2 std^2))`` (float64);
    the reference's 2-D kernel is the outer product of two of these (torchgeometry's
    ``get_gaussian_kernel2d``, which the reference uses)."""
    x = np.arange(size, dtype=np.float64) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    g = np.exp(-(x**2) / (2.0 * float(std) ** 2))
    return g / g.sum()


def blur_stds(routine: str, num_steps: int, kernel_std: float) -> np.ndarray:
    """The std of kernel ``i = 0..T-1`` (kernel ``i`` is applied at step ``s = i + 1``).

    ``'incremental'``: ``kernel_std (i + 1)``; ``'constant'``: ``kernel_std``;
    ``'exponential'``: ``exp(kernel_std i)``; ``'cifar10'`` (the reference's
    ``Special_6_routine``): ``i / 100 + 0.35`` (its size is fixed to 11 and padding to reflect).
    """
    i = np.arange(_check_steps(num_steps), dtype=np.float64)
    table = {"incremental": lambda: kernel_std * (i + 1), "constant": lambda: kernel_std + 0 * i,
             "exponential": lambda: np.exp(kernel_std * i), "cifar10": lambda: i / 100 + 0.35}
    if routine not in table:
        raise ValueError(f"unknown blur routine {routine!r}; expected one of {BLUR_ROUTINES}")
    stds = table[routine]()
    if np.any(stds <= 0):
        raise ValueError(f"kernel_std must give positive stds; got kernel_std={kernel_std}")
    return stds


def _depthwise_conv(x: Array, k1: Array, padding: str) -> Array:
    """``x`` (B, H, W, C) convolved with the separable kernel ``k1 k1^T`` per channel, after
    padding by ``size // 2`` (``'circular'`` wraps, ``'reflect'`` mirrors without repeating
    the edge, as torch's padding modes)."""
    r = k1.shape[0] // 2
    mode = {"circular": "wrap", "reflect": "reflect"}[padding]
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode=mode)
    C = x.shape[-1]
    k2 = jnp.outer(k1, k1).astype(x.dtype)
    w = jnp.tile(k2[:, :, None, None], (1, 1, 1, C))  # HWIO with I = 1 (depthwise)
    return jax.lax.conv_general_dilated(
        xp, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=C, precision=jax.lax.Precision.HIGHEST)


@struct.dataclass
class Blur:
    """Cumulative Gaussian blur ``D(x0, s) = G_s * ... * G_1 * x0`` (paper sec. 4.1; the
    reference's ``q_sample`` applies kernels ``0..t`` for its index ``t = s - 1``).

    Build with :meth:`make`. ``discrete`` (the reference's ``--discrete``, used for
    generation) replaces the fully blurred image ``D(x0, T)`` by its per-channel spatial mean,
    a flat image; the loss then also quantises the degraded inputs to 8 bits.
    """

    kernels: Array  # (T, size) separable taps of each step's kernel
    padding: str = struct.field(pytree_node=False, default="circular")
    discrete: bool = struct.field(pytree_node=False, default=False)
    needs_aux: bool = struct.field(pytree_node=False, default=False)

    @classmethod
    def make(cls, num_steps: int, *, routine: str = "incremental", kernel_size: int = 3,
             kernel_std: float = 0.1, padding: str | None = None, discrete: bool = False):
        """The reference's ``get_kernels`` for ``blur_routine`` = ``routine``.

        Args:
          num_steps: ``T``.
          routine: a key of :data:`BLUR_ROUTINES` (its ``*_reflect`` variants are
            ``padding='reflect'``).
          kernel_size: odd kernel width (``'cifar10'`` forces 11).
          kernel_std: the schedule's parameter (``blur_std`` in the reference's scripts).
          padding: ``'circular'`` (the reference's default) or ``'reflect'``; default circular,
            reflect for ``'cifar10'``.
          discrete: flat per-channel mean at ``s = T`` (generation).
        """
        if routine == "cifar10":
            kernel_size = 11
            padding = padding or "reflect"
        padding = padding or "circular"
        if padding not in ("circular", "reflect"):
            raise ValueError(f"padding must be 'circular' or 'reflect'; got {padding!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int; got {kernel_size!r}")
        stds = blur_stds(routine, num_steps, float(kernel_std))
        k = np.stack([gaussian_kernel_1d(kernel_size, sd) for sd in stds])
        return cls(jnp.asarray(k, jnp.float32), padding, bool(discrete))

    @property
    def num_steps(self) -> int:
        return self.kernels.shape[0]

    def __call__(self, x0: Array, s: Array, aux: Array = None) -> Array:
        sb = _per_sample(s, x0.shape[0])
        if self.padding == "reflect" and self.kernels.shape[1] // 2 >= min(x0.shape[1:3]):
            raise ValueError(f"reflect padding needs kernel_size // 2 < the image size; got "
                             f"kernel size {self.kernels.shape[1]}, image {x0.shape[1:3]}")
        kernels = self.kernels.astype(x0.dtype)

        def body(i, x):
            # per-sample step counts: apply kernel i only where i < s (one pass serves a batch
            # of mixed s, as the reference's stack of all blurs does)
            y = _depthwise_conv(x, kernels[i], self.padding)
            return jnp.where(_bcast(i < sb, x), y, x)

        # the loop stops at max(s) (a while loop): sampling calls D with small s often
        x = jax.lax.fori_loop(0, jnp.max(sb), body, x0)
        if self.discrete:
            flat = jnp.broadcast_to(jnp.mean(x, axis=(1, 2), keepdims=True), x.shape)
            x = jnp.where(_bcast(sb == self.num_steps, x), flat, x)
        return x

    def draw_aux(self, key, x0):
        return None


# ----------------------------------------------------------------------------------------------
# Masks (inpainting)
# ----------------------------------------------------------------------------------------------


def _centre_default(h: int, w: int) -> tuple[float, float]:
    # the reference crops its (N + 1)^2 kernel at [1:, 1:]: the peak sits at N/2 - 1
    return (h // 2 - 1.0, w // 2 - 1.0)


@struct.dataclass
class GaussianMask:
    """Gaussian-weighted growing mask ``D(x0, s) = x0 prod_{i < s} (1 - exp(-|p - c|^2 /
    (2 std_i^2)))`` (paper sec. 4.2; the reference's ``get_fade_kernel``: one minus a
    peak-normalised Gaussian, multiplied in cumulatively), ``std_i = kernel_std (i +
    initial_mask)``.

    The centre ``c`` is fixed (the reference's ``'Incremental'``, at ``(H/2 - 1, W/2 - 1)``)
    unless ``random_centre`` (its ``'Random_Incremental'``: a uniform integer centre in
    ``0..H`` x ``0..W`` per image, passed as ``aux`` of shape ``(B, 2)``).
    """

    stds: Array  # (T,)
    random_centre: bool = struct.field(pytree_node=False, default=False)

    @classmethod
    def make(cls, num_steps: int, *, kernel_std: float = 0.1, initial_mask: int = 11,
             random_centre: bool = False):
        T = _check_steps(num_steps)
        if kernel_std <= 0:
            raise ValueError(f"kernel_std must be > 0; got {kernel_std}")
        stds = kernel_std * (np.arange(T, dtype=np.float64) + initial_mask)
        if np.any(stds <= 0):
            raise ValueError(f"initial_mask must make every std positive; got {initial_mask}")
        return cls(jnp.asarray(stds, jnp.float32), bool(random_centre))

    @property
    def num_steps(self) -> int:
        return self.stds.shape[0]

    @property
    def needs_aux(self) -> bool:
        return self.random_centre

    def draw_aux(self, key, x0):
        if not self.random_centre:
            return None
        h, w = x0.shape[1:3]
        return jax.random.randint(key, (x0.shape[0], 2), 0, jnp.array([h + 1, w + 1]))

    def mask(self, shape: tuple, s: Array, aux: Array = None) -> Array:
        """The multiplicative mask ``(B, H, W, 1)`` after ``s`` steps."""
        B, h, w = shape[0], shape[1], shape[2]
        sb = _per_sample(s, B)
        if self.random_centre:
            if aux is None:
                raise ValueError("GaussianMask(random_centre=True) needs aux, the (B, 2) "
                                 "mask centres (draw_aux)")
            c = jnp.asarray(aux, jnp.float32).reshape(B, 2)
        else:
            c = jnp.broadcast_to(jnp.asarray(_centre_default(h, w), jnp.float32), (B, 2))
        yy = jnp.arange(h, dtype=jnp.float32)[None, :, None] - c[:, 0, None, None]
        xx = jnp.arange(w, dtype=jnp.float32)[None, None, :] - c[:, 1, None, None]
        d2 = yy**2 + xx**2  # (B, H, W)
        stds = self.stds
        m = 1.0 - jnp.exp(-d2[None] / (2.0 * stds[:, None, None, None] ** 2))  # (T, B, H, W)
        active = jnp.arange(stds.shape[0])[:, None] < sb[None, :]  # (T, B)
        m = jnp.where(active[:, :, None, None], m, 1.0)
        return jnp.prod(m, axis=0)[..., None]

    def __call__(self, x0: Array, s: Array, aux: Array = None) -> Array:
        return x0 * self.mask(x0.shape, s, aux).astype(x0.dtype)


@struct.dataclass
class SquareMask:
    """A growing square mask: after ``s`` steps the centred square of side
    ``round(s size / T)`` (``size`` defaults to the image side) is set to ``fill``.

    The paper's inpainting figures use Gaussian masks (:class:`GaussianMask`); this is its
    square variant, with the same fixed centre convention (``aux``: ``(B, 2)`` top-left
    corners of a random placement, else centred).
    """

    num_steps: int = struct.field(pytree_node=False)
    size: int | None = struct.field(pytree_node=False, default=None)
    fill: float = 0.0
    needs_aux: bool = struct.field(pytree_node=False, default=False)

    def draw_aux(self, key, x0):
        return None

    def __call__(self, x0: Array, s: Array, aux: Array = None) -> Array:
        B, h, w = x0.shape[:3]
        sb = _per_sample(s, B)
        full = self.size or min(h, w)
        side = jnp.round(sb.astype(jnp.float32) * full / self.num_steps).astype(jnp.int32)
        top = (h - side) // 2
        left = (w - side) // 2
        if aux is not None:
            top, left = aux[:, 0].astype(jnp.int32), aux[:, 1].astype(jnp.int32)
        ys = jnp.arange(h)[None, :, None]
        xs = jnp.arange(w)[None, None, :]
        inside = ((ys >= top[:, None, None]) & (ys < (top + side)[:, None, None])
                  & (xs >= left[:, None, None]) & (xs < (left + side)[:, None, None]))
        return jnp.where(inside[..., None], jnp.asarray(self.fill, x0.dtype), x0)


# ----------------------------------------------------------------------------------------------
# Pixelation (super-resolution), fading, snow
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class Pixelate:
    """Pixelation (paper sec. 4.3, super-resolution): ``D(x0, s)`` averages ``2^s x 2^s``
    blocks and repeats each mean over its block (nearest-neighbour upsampling).

    This is the reference's ``Incremental_area_factor_2`` routine (area downsampling by 2 per
    step, nearest upsampling); its default ``Incremental_factor_2`` uses bicubic instead.
    Block means nest, so ``s`` steps equal one block mean of side ``2^s`` exactly.
    """

    num_steps: int = struct.field(pytree_node=False)
    needs_aux: bool = struct.field(pytree_node=False, default=False)

    def draw_aux(self, key, x0):
        return None

    def __call__(self, x0: Array, s: Array, aux: Array = None) -> Array:
        B, h, w, C = x0.shape
        f = 2**self.num_steps
        if h % f or w % f:
            raise ValueError(f"Pixelate(num_steps={self.num_steps}) needs image sides divisible "
                             f"by 2^T = {f}; got {(h, w)}")
        sb = _per_sample(s, B)
        out = x0
        for level in range(1, self.num_steps + 1):
            b = 2**level
            m = x0.reshape(B, h // b, b, w // b, b, C).mean(axis=(2, 4))
            up = jnp.repeat(jnp.repeat(m, b, axis=1), b, axis=2)
            out = jnp.where(_bcast(sb == level, x0), up, out)
        return out


@struct.dataclass
class Fade:
    """Fading to a colour: ``D(x0, s) = f_s x0 + (1 - f_s) c``.

    ``f_s = 1 - s / T`` (``'linear'``: linear in ``s``, so Algorithm 2 is exact for it; paper
    sec. 3.3), or the reference's naive defading ``prod_{i < s} (1 - start (i + 1))``
    (``'incremental'``; ``c = 0``, fading to black). ``colour``: a scalar or ``(C,)``, or per
    image as ``aux`` ``(B, C)`` (the reference's random-colour fade).
    """

    factors: Array  # (T + 1,): f_0 = 1, ..., f_T
    colour: Array = 0.0
    needs_aux: bool = struct.field(pytree_node=False, default=False)

    @classmethod
    def make(cls, num_steps: int, *, schedule: str = "linear", colour=0.0,
             start_fade_factor: float = 0.1):
        T = _check_steps(num_steps)
        if schedule == "linear":
            f = 1.0 - np.arange(T + 1, dtype=np.float64) / T
        elif schedule == "incremental":
            f = np.concatenate([[1.0], np.cumprod(1.0 - start_fade_factor * np.arange(1, T + 1))])
        else:
            raise ValueError(f"unknown fade schedule {schedule!r}; expected 'linear' or "
                             "'incremental'")
        return cls(jnp.asarray(f, jnp.float32), jnp.asarray(colour, jnp.float32))

    @property
    def num_steps(self) -> int:
        return self.factors.shape[0] - 1

    def draw_aux(self, key, x0):
        return None

    def __call__(self, x0: Array, s: Array, aux: Array = None) -> Array:
        f = _bcast(self.factors.astype(x0.dtype)[_per_sample(s, x0.shape[0])], x0)
        c = self.colour if aux is None else aux.reshape(x0.shape[0], 1, 1, -1)
        c = jnp.asarray(c, x0.dtype)
        return f * x0 + (1.0 - f) * c


def snow_layers(num_steps: int, image_size: int, *, flakes_per_step: int = 4,
                streak: int = 3, seed: int = 0) -> np.ndarray:
    """A deterministic procedural snow layer per step, ``(T, H, W)`` in ``[0, 1]``.

    Each step adds ``flakes_per_step * H W / 64`` flakes at random pixels (seeded NumPy), each a
    short diagonal streak of length ``streak`` with Gaussian falloff, like wind-blown snow.
    The reference uses imgaug/ImageNet-C's ``snow`` (motion-blurred noise layers, brightness
    changes); this layer is simpler and differs from it.
    """
    T = _check_steps(num_steps)
    rng = np.random.default_rng(seed)
    n = max(1, int(round(flakes_per_step * image_size * image_size / 64)))
    out = np.zeros((T, image_size, image_size))
    for i in range(T):
        layer = np.zeros((image_size, image_size))
        ys, xs = rng.integers(0, image_size, n), rng.integers(0, image_size, n)
        bright = rng.uniform(0.6, 1.0, n)
        for d in range(streak):
            layer[(ys + d) % image_size, (xs + d) % image_size] = np.maximum(
                layer[(ys + d) % image_size, (xs + d) % image_size],
                bright * math.exp(-0.5 * d * d))
        out[i] = layer
    return out


@struct.dataclass
class Snow:
    """Snowification (paper sec. 4.4): ``D(x0, s) = x0 + S_s (1 - x0)`` with the accumulated
    snow cover ``S_s = 1 - prod_{i < s} (1 - L_i)`` of the per-step layers ``L_i`` of
    :func:`snow_layers` (white is ``1`` in ``[-1, 1]`` data). Procedural and deterministic:
    it differs from the reference's imgaug snow (see :func:`snow_layers`)."""

    layers: Array  # (T, H, W)
    needs_aux: bool = struct.field(pytree_node=False, default=False)

    @classmethod
    def make(cls, num_steps: int, image_size: int, **kw):
        return cls(jnp.asarray(snow_layers(num_steps, image_size, **kw), jnp.float32))

    @property
    def num_steps(self) -> int:
        return self.layers.shape[0]

    def draw_aux(self, key, x0):
        return None

    def __call__(self, x0: Array, s: Array, aux: Array = None) -> Array:
        if tuple(x0.shape[1:3]) != tuple(self.layers.shape[1:]):
            raise ValueError(f"Snow layers are {self.layers.shape[1:]}; images are "
                             f"{x0.shape[1:3]}")
        sb = _per_sample(s, x0.shape[0])
        active = jnp.arange(self.num_steps)[:, None] < sb[None, :]  # (T, B)
        keep = jnp.where(active[:, :, None, None], 1.0 - self.layers[:, None], 1.0)
        cover = (1.0 - jnp.prod(keep, axis=0))[..., None].astype(x0.dtype)
        return x0 + cover * (1.0 - x0)


# ----------------------------------------------------------------------------------------------
# Interpolation toward a fixed end point: Gaussian noise ("hot" diffusion) and animorphosis
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class Interpolate:
    """``D(x0, s; z) = sqrt(abar_s) x0 + sqrt(1 - abar_s) z`` with ``z = aux`` fixed per
    sample (the reference's ``q_sample(x_start, x_end, t)``; paper sec. 5.2 and 4.5).

    ``z`` Gaussian is the noise degradation (the reference's ``denoising-diffusion-pytorch``),
    ``z`` an image of another data set is animorphosis (``demixing-diffusion-pytorch``). The
    coefficients at ``s`` are ``process.alpha(s / T)``, ``process.sigma(s / T)`` of a diffjax
    :class:`~diffjax.processes.DiscreteVP` (the reference uses the cosine table, which is
    ``DiscreteVP.cosine(T)``), so ``s = 0`` gives ``x0``.
    """

    process: Any
    noise: bool = struct.field(pytree_node=False, default=True)
    needs_aux: bool = struct.field(pytree_node=False, default=True)

    @property
    def num_steps(self) -> int:
        return self.process.num_steps

    def coefficients(self, s: Array, batch: int) -> tuple[Array, Array]:
        # s / T in the default float type (float64 under x64, as a grid point is)
        t = _per_sample(s, batch).astype(jnp.result_type(float)) / self.num_steps
        return self.process.alpha(t), self.process.sigma(t)

    def draw_aux(self, key, x0):
        if not self.noise:
            raise ValueError("animorphosis needs the other data set's images as aux "
                             "(batch['x_end']); they cannot be drawn")
        return jax.random.normal(key, x0.shape, x0.dtype)

    def __call__(self, x0: Array, s: Array, aux: Array = None) -> Array:
        if aux is None:
            raise ValueError("Interpolate needs aux, the end point z (noise or an image) shaped "
                             "like x0")
        a, sg = self.coefficients(s, x0.shape[0])
        return _bcast(a.astype(x0.dtype), x0) * x0 + _bcast(sg.astype(x0.dtype), x0) * aux


def gaussian_noise(num_steps: int) -> Interpolate:
    """The noise degradation on the reference's cosine schedule (``DiscreteVP.cosine(T)``)."""
    from diffjax.processes import DiscreteVP

    return Interpolate(DiscreteVP.cosine(_check_steps(num_steps)), noise=True)


def animorphosis(num_steps: int) -> Interpolate:
    """Animorphosis: mixing toward an image of another data set on the cosine schedule."""
    from diffjax.processes import DiscreteVP

    return Interpolate(DiscreteVP.cosine(_check_steps(num_steps)), noise=False)


#: ``name`` -> builder ``(num_steps, image_size, **kwargs) -> degradation`` (configs)
DEGRADATIONS = {
    "blur": lambda T, size, **kw: Blur.make(T, **kw),
    "gaussian_mask": lambda T, size, **kw: GaussianMask.make(T, **kw),
    "square_mask": lambda T, size, **kw: SquareMask(T, **kw),
    "pixelate": lambda T, size, **kw: Pixelate(T, **kw),
    "fade": lambda T, size, **kw: Fade.make(T, **kw),
    "snow": lambda T, size, **kw: Snow.make(T, size, **kw),
    "noise": lambda T, size, **kw: gaussian_noise(T, **kw),
}


def make_degradation(name: str, num_steps: int, image_size: int, **kwargs):
    """Build a degradation by name (:data:`DEGRADATIONS`); errors name the bad argument."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; expected one of {sorted(DEGRADATIONS)}")
    try:
        return DEGRADATIONS[name](_check_steps(num_steps), int(image_size), **kwargs)
    except TypeError as e:
        raise ValueError(f"degradation {name!r}: bad keyword arguments {sorted(kwargs)} ({e})") \
            from e
