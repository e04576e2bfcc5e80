"""Real image data that ships inside installed packages: nothing downloads.

Why an embedded default data set: diffjax must run its quickstart and tests with no network
(TFDS ships no data; ``tfds.load`` needs TensorFlow and a download). scikit-learn bundles the
UCI optical digits (``sklearn.datasets.load_digits``): 1,797 real 8x8 grey hand-written digits
with labels 0..9, pixel values 0..16, read from a small compressed CSV in the wheel. At 8x8 a
tiny UNet step costs milliseconds on a CPU, so a model trained for a few minutes already draws
recognisable digits: the quickstart learns something *real*, class-conditional included.

scikit-image, when installed, adds ``data.lfw_subset()``: 200 25x25 grey crops from Labeled
Faces in the Wild (the first 100 faces, the last 100 non-faces). It is optional: if it is not
installed :func:`load_faces` raises an ``ImportError`` saying how to get it and
:func:`available` leaves it out.

Both loaders return channels-last ``float32`` images scaled to ``[-1, 1]`` (or ``[0, 1]``) and
``int32`` labels; results are cached, and each call returns fresh copies.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

__all__ = ["load_digits", "load_faces", "available", "DIGITS_MAX"]

#: The digits' pixel values are integers 0..16.
DIGITS_MAX = 16.0


def _scale(x: np.ndarray, max_value: float, zero_one: bool) -> np.ndarray:
    x = np.asarray(x, np.float64) / max_value
    if not zero_one:
        x = 2.0 * x - 1.0
    return x.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:
        raise ImportError(
            "The embedded 'digits' data set needs scikit-learn, which ships it offline "
            "(1,797 8x8 digits). Install it with `pip install scikit-learn`, "
            "or choose another data set."
        ) from e
    d = _sk_load_digits()
    images = np.asarray(d.images, np.float64)  # (1797, 8, 8), values 0..16
    labels = np.asarray(d.target, np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits(*, zero_one: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Loads scikit-learn's bundled hand-written digits (no network).

    Args:
        zero_one: Scale pixels to ``[0, 1]`` instead of ``[-1, 1]``.

    Returns:
        ``(images, labels)``: ``float32`` images ``(1797, 8, 8, 1)`` with ``0 -> -1`` and
        ``16 -> 1`` (or ``0 -> 0``, ``16 -> 1``), and ``int32`` labels ``(1797,)`` in 0..9.

    Raises:
        ImportError: scikit-learn is not installed (the message says how to install it).
    """
    images, labels = _digits_raw()
    return _scale(images[..., None], DIGITS_MAX, zero_one), labels.copy()


@functools.lru_cache(maxsize=1)
def _faces_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from skimage import data as _skdata
    except ImportError as e:
        raise ImportError(
            "The embedded 'faces' data set needs scikit-image, which ships 200 25x25 face/"
            "non-face crops offline. Install it with `pip install scikit-image`, or use "
            "'digits' (scikit-learn) instead."
        ) from e
    images = np.asarray(_skdata.lfw_subset(), np.float64)  # (200, 25, 25) in [0, 1]
    if images.max() > 1.0:  # defensive: older versions might return uint8
        images = images / 255.0
    n = images.shape[0]
    labels = (np.arange(n) < n // 2).astype(np.int32)  # 1 = face (first half), 0 = non-face
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_faces(*, zero_one: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Loads scikit-image's ``lfw_subset`` (optional dependency; no network).

    Args:
        zero_one: Scale pixels to ``[0, 1]`` instead of ``[-1, 1]``.

    Returns:
        ``(images, labels)``: ``float32`` images ``(200, 25, 25, 1)`` and ``int32`` labels
        ``(200,)``: 1 for the 100 faces, 0 for the 100 non-face crops.

    Raises:
        ImportError: scikit-image is not installed (the message says how to install it).
    """
    images, labels = _faces_raw()
    return _scale(images[..., None], 1.0, zero_one), labels.copy()


def available() -> list[str]:
    """Names of the embedded data sets whose package is installed (``'digits'``, ``'faces'``)."""
    out = []
    if importlib.util.find_spec("sklearn") is not None:
        out.append("digits")
    if importlib.util.find_spec("skimage") is not None:
        out.append("faces")
    return out
