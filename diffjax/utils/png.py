"""Minimal PNG writer (zlib + struct only), so sample grids need no imaging dependency."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["save_png", "density_image", "image_grid"]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def save_png(path, image) -> Path:
    """Write ``image`` (``(H, W)`` grey or ``(H, W, 3)`` RGB; uint8, or floats in [0, 1]) as PNG."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        color = 0
    elif img.ndim == 3 and img.shape[2] == 3:
        color = 2
    else:
        raise ValueError(f"image must be (H, W) or (H, W, 3); got shape {img.shape}")
    h, w = img.shape[:2]
    raw = b"".join(b"\x00" + img[i].tobytes() for i in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
           + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
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
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = x[i]
    return out[..., 0] if c == 1 else out
