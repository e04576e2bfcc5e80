"""Image files of samples: PNG writing (through Pillow), density heat maps and sample grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["save_png", "density_image", "image_grid"]


def save_png(path, image) -> Path:
    """Write ``image`` as an 8-bit PNG (with Pillow), creating the parent folders.

    Args:
      path: the file to write.
      image: ``(H, W)`` or ``(H, W, 1)`` grey, or ``(H, W, 3)`` RGB; ``uint8``, or floats in
        ``[0, 1]`` (scaled by 255, rounded and clipped).

    Returns:
      ``path`` as a :class:`~pathlib.Path`.

    Raises:
      ValueError: another shape.
    """
    from PIL import Image

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if not (img.ndim == 2 or img.ndim == 3 and img.shape[2] == 3):
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3); got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG")
    return path


def density_image(points, size: int = 256, lim: float = 1.2) -> np.ndarray:
    """A log-density heat map of 2-D points on ``[-lim, lim]^2`` as an ``(size, size)`` image."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2); got {p.shape}")
    h, _, _ = np.histogram2d(-p[:, 1], p[:, 0], bins=size, range=[[-lim, lim], [-lim, lim]])
    h = np.log1p(h)
    return h / max(h.max(), 1e-12)


def image_grid(images, ncols: int | None = None, pad: int = 1, value_range=(-1.0, 1.0),
               zoom: int | None = None) -> np.ndarray:
    """Tile ``(N, H, W, C)`` images (C = 1 or 3, values in ``value_range``) into one image in
    [0, 1] with ``pad`` pixels of white between tiles; small images are enlarged ``zoom``
    times by pixel repetition (default: to at least 32 pixels)."""
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1 or 3); got shape {x.shape}")
    zoom = zoom or max(1, 32 // max(x.shape[1], 1))
    if zoom > 1:
        x = x.repeat(zoom, axis=1).repeat(zoom, axis=2)
    lo, hi = value_range
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    n, h, w, c = x.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    out = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, q = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        out[top:top + h, left:left + w] = x[i]
    return out[..., 0] if c == 1 else out
