"""Per-example preprocessing in plain NumPy: scaling, flips, centre crops, resizing, latents.

These are pure functions on one example (``(H, W, C)`` arrays, channels last) so that they run
inside grain's per-record transforms without touching JAX (an eager ``jax.image.resize`` per
record would dispatch, and compile for every new shape, on the input thread). The grain
wrappers that apply them to records live in :mod:`diffjax.data.pipeline`.

Conventions:

* Pixels: ``uint8`` 0..255 becomes ``float32`` in ``[-1, 1]`` via ``x / 127.5 - 1`` (DDPM,
  ADM, EDM), or ``[0, 1]`` via ``x / 255`` (score_sde's VE models) with ``zero_one=True``.
* Resize: separable convolution with a resampling kernel; when shrinking, the kernel is
  stretched by the shrink factor (antialiasing), weights are renormalised at the borders. The
  maths is that of ``jax.image.scale_and_translate`` with ``antialias=True`` (and is tested
  against ``jax.image.resize``); ``method='cubic'`` (Keys, a = -0.5) is the default and is
  close to PIL's antialiased BICUBIC that ADM's ``center_crop_arr`` ends with; ``'area'``
  averages exactly over integer shrink factors (box kernel).
* Latents: channel-wise normalisation with one mean and std per channel computed over
  ``(N, H, W)`` of the whole training set, as LightningDiT ("Reconstruction vs. Generation",
  Yao et al., 2025) does for its VA-VAE latents before training.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "to_float",
    "to_uint8",
    "random_flip",
    "center_crop",
    "resize",
    "center_crop_resize",
    "RESIZE_METHODS",
    "latent_channel_stats",
    "normalize_latents",
    "denormalize_latents",
]


def to_float(image: np.ndarray, *, zero_one: bool = False) -> np.ndarray:
    """Scales ``uint8`` pixels to ``float32`` in ``[-1, 1]`` (or ``[0, 1]``).

    Floating-point input is assumed already scaled and is only cast to ``float32``.

    Args:
        image: ``uint8`` array of any shape (or an already-scaled float array).
        zero_one: Map 0..255 to ``[0, 1]`` (``x / 255``) instead of ``[-1, 1]``
            (``x / 127.5 - 1``).

    Returns:
        ``float32`` array of the same shape.
    """
    x = np.asarray(image)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if x.dtype != np.uint8:
        raise TypeError(f"to_float expects uint8 pixels or floats; got dtype {x.dtype}")
    x = x.astype(np.float32)
    return x / np.float32(255.0) if zero_one else x / np.float32(127.5) - np.float32(1.0)


def to_uint8(image: np.ndarray, *, zero_one: bool = False) -> np.ndarray:
    """Inverse of :func:`to_float`: floats in ``[-1, 1]`` (or ``[0, 1]``) to rounded ``uint8``.

    Args:
        image: Float array.
        zero_one: The input is in ``[0, 1]`` rather than ``[-1, 1]``.

    Returns:
        ``uint8`` array of the same shape (values clipped to 0..255).
    """
    x = np.asarray(image, np.float32)
    x = x * 255.0 if zero_one else (x + 1.0) * 127.5
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def random_flip(image: np.ndarray, rng: np.random.Generator, *, p: float = 0.5) -> np.ndarray:
    """Flips an ``(H, W, C)`` image left-right with probability ``p``.

    Args:
        image: Array whose second-to-last axis is the width.
        rng: NumPy generator (in the pipeline: grain's per-record generator, so the draw is a
            function of ``(seed, record position)`` and replays exactly on resume).
        p: Flip probability.

    Returns:
        The flipped image (a copy) or the input.
    """
    if rng.random() < p:
        return np.ascontiguousarray(np.asarray(image)[..., ::-1, :])
    return image


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def center_crop(image: np.ndarray, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Crops the centre of an ``(H, W, C)`` image.

    Args:
        image: Image, channels last.
        size: Output ``(h, w)`` or side ``s``; ``None`` takes the largest centred square
            (side ``min(H, W)``). The offset is ``(H - h) // 2``, ``(W - w) // 2``.

    Returns:
        The cropped view.

    Raises:
        ValueError: The crop is larger than the image.
    """
    x = np.asarray(image)
    H, W = x.shape[0], x.shape[1]
    h, w = (min(H, W), min(H, W)) if size is None else _hw(size)
    if h > H or w > W:
        raise ValueError(f"center_crop: crop {(h, w)} is larger than the image {(H, W)}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[top : top + h, left : left + w]


def _box(d: np.ndarray) -> np.ndarray:
    return ((d >= -0.5) & (d < 0.5)).astype(np.float64)


def _triangle(d: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(d))


def _keys_cubic(d: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(d)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


def _lanczos3(d: np.ndarray) -> np.ndarray:
    return np.where(np.abs(d) < 3.0, np.sinc(d) * np.sinc(d / 3.0), 0.0)


#: Resampling kernels for :func:`resize` (``'bilinear'``/``'bicubic'`` are aliases).
RESIZE_METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "area": _box,
    "nearest": _box,
    "linear": _triangle,
    "bilinear": _triangle,
    "cubic": _keys_cubic,
    "bicubic": _keys_cubic,
    "lanczos3": _lanczos3,
}


def _weight_matrix(n_in: int, n_out: int, method: str, antialias: bool) -> np.ndarray:
    """``(n_out, n_in)`` resampling matrix; rows sum to one."""
    kernel = RESIZE_METHODS[method]
    scale = n_out / n_in
    stretch = max(1.0 / scale, 1.0) if (antialias and method != "nearest") else 1.0
    centres = (np.arange(n_out) + 0.5) / scale - 0.5  # output pixel centres in input coords
    w = kernel((np.arange(n_in)[None, :] - centres[:, None]) / stretch)
    total = w.sum(axis=1, keepdims=True)
    return w / np.where(np.abs(total) > 1e-12, total, 1.0)


def resize(
    image: np.ndarray,
    size: int | tuple[int, int],
    *,
    method: str = "cubic",
    antialias: bool = True,
) -> np.ndarray:
    """Resizes an ``(H, W, C)`` (or ``(H, W)``) image to ``size`` with a separable kernel.

    See the module docstring for the method. ``uint8`` input gives ``uint8`` output (rounded,
    clipped); float input gives ``float32``.

    Args:
        image: Image, channels last.
        size: Output ``(h, w)`` or side ``s``.
        method: One of :data:`RESIZE_METHODS`: ``'cubic'`` (default), ``'linear'``,
            ``'area'`` (box average), ``'nearest'``, ``'lanczos3'``.
        antialias: Stretch the kernel by the shrink factor when downsampling.

    Returns:
        The resized image.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method={method!r}; valid: {sorted(RESIZE_METHODS)}")
    x = np.asarray(image)
    h, w = _hw(size)
    H, W = x.shape[0], x.shape[1]
    if (h, w) == (H, W):
        return x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    y = x.astype(np.float64)
    if h != H:
        y = np.tensordot(_weight_matrix(H, h, method, antialias), y, axes=(1, 0))
    if w != W:
        y = np.moveaxis(
            np.tensordot(_weight_matrix(W, w, method, antialias), np.moveaxis(y, 1, 0), (1, 0)),
            0,
            1,
        )
    if x.dtype == np.uint8:
        return np.clip(np.round(y), 0, 255).astype(np.uint8)
    return y.astype(np.float32)


def center_crop_resize(
    image: np.ndarray, size: int | tuple[int, int], *, method: str = "cubic"
) -> np.ndarray:
    """Takes the largest centred crop with the aspect ratio of ``size``, then resizes to it.

    For a square ``size`` this is the usual "centre square crop, then resize" (as ADM's
    ``center_crop_arr`` up to its resampling details).

    Args:
        image: Image ``(H, W, C)``.
        size: Output ``(h, w)`` or side ``s``.
        method: Resize method (see :func:`resize`).

    Returns:
        The image at ``size``.
    """
    x = np.asarray(image)
    h, w = _hw(size)
    H, W = x.shape[0], x.shape[1]
    if H * w >= W * h:  # too tall: keep the full width
        ch, cw = max(1, round(W * h / w)), W
    else:  # too wide: keep the full height
        ch, cw = H, max(1, round(H * w / h))
    return resize(center_crop(x, (min(ch, H), min(cw, W))), (h, w), method=method)


def latent_channel_stats(
    latents: np.ndarray, *, chunk_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of channels-last latents over ``(N, H, W)``.

    Two passes in float64 over chunks of ``chunk_size`` examples, so a memory-mapped
    ``.npy`` of a whole data set's latents never has to fit in memory twice.

    Args:
        latents: Array ``(N, ..., C)`` (e.g. ``(N, h, w, C)``).
        chunk_size: Examples per chunk.

    Returns:
        ``(mean, std)``, each ``float32`` of shape ``(C,)`` (population std).
    """
    x = latents
    n = x.shape[0]
    if n == 0:
        raise ValueError("latent_channel_stats: no latents")
    c = x.shape[-1]
    count = 0
    total = np.zeros(c)
    for i in range(0, n, chunk_size):
        chunk = np.asarray(x[i : i + chunk_size], np.float64).reshape(-1, c)
        total += chunk.sum(axis=0)
        count += chunk.shape[0]
    mean = total / count
    sq = np.zeros(c)
    for i in range(0, n, chunk_size):
        chunk = np.asarray(x[i : i + chunk_size], np.float64).reshape(-1, c)
        sq += ((chunk - mean) ** 2).sum(axis=0)
    return mean.astype(np.float32), np.sqrt(sq / count).astype(np.float32)


def normalize_latents(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, *, scale: float = 1.0
) -> np.ndarray:
    """``(x - mean) / std * scale`` per channel (channels last); ``float32``.

    Args:
        x: Latents ``(..., C)``.
        mean: Per-channel mean ``(C,)`` (from :func:`latent_channel_stats`).
        std: Per-channel std ``(C,)``.
        scale: Extra multiplier (LightningDiT's ``latent_multiplier``; 1 by default).

    Returns:
        Normalised latents.
    """
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return ((np.asarray(x, np.float32) - m) / s * np.float32(scale)).astype(np.float32)


def denormalize_latents(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, *, scale: float = 1.0
) -> np.ndarray:
    """Inverse of :func:`normalize_latents`: ``x / scale * std + mean``."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return (np.asarray(x, np.float32) / np.float32(scale) * s + m).astype(np.float32)
