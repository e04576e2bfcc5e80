"""Drawing the sample set of an evaluation: per-sample seeds, chunking, uint8 quantisation.

A published FID is a property of a *set* of samples, so the set must not depend on how it was
drawn. Sample ``i`` uses the key ``fold_in(key, i)`` and nothing else (:func:`iter_generate`),
so the chunk size and the device count cannot change it. This is the per-seed generation of
EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
whose ``generate.py`` draws image ``i`` from seed ``i``); numbers of DiT (Peebles & Xie 2023)
and SiT (Ma et al. 2024) moved with the GPU count because their per-process seeds did.
Class-conditional models use class-balanced labels ``i mod K``.

Samples in ``[-1, 1]`` become uint8 pixels before any feature is taken, exactly as if they had
been written to PNG (:func:`quantize`): ``'round'`` is ``round((x + 1) * 127.5)`` (EDM's
``x * 127.5 + 128`` truncated, and :func:`diffjax.data.preprocess.to_uint8`); ``'floor'`` is
``floor((x + 1) * 127.5)``, the sample writers of guided-diffusion (ADM; Dhariwal & Nichol
2021) and score_sde (Song et al. 2021). Both clip to 0..255; they differ by half a grey level.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np

__all__ = ["QUANTIZE_MODES", "quantize", "Progress", "iter_generate", "generate"]

#: the quantisation rules :func:`quantize` accepts
QUANTIZE_MODES = ("round", "floor")


def quantize(images, mode: str = "round") -> np.ndarray:
    """Images as uint8 pixels, as if written to PNG (see the module docstring).

    Args:
      images: ``uint8`` (returned unchanged) or floats in ``[-1, 1]`` (clipped).
      mode: ``'round'`` (``round((x + 1) * 127.5)``, EDM) or ``'floor'``
        (``floor((x + 1) * 127.5)``, ADM / score_sde).

    Returns:
      A ``uint8`` array of the same shape.

    Raises:
      ValueError: unknown ``mode``.
      TypeError: integer input other than uint8.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}; got {mode!r}")
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"images must be uint8 or floats in [-1, 1]; got dtype {x.dtype}")
    y = (x.astype(np.float64) + 1.0) * 127.5
    y = np.round(y) if mode == "round" else np.floor(y)
    return np.clip(y, 0, 255).astype(np.uint8)


class Progress:
    """A progress line (``[####....] what 512/50000  41.2/s  ETA 20m03s``) on ``stream``.

    Prints at most every ``every`` seconds, and always at the end.

    Args:
      total: the count at completion.
      what: what is counted (printed after the bar).
      enabled: ``False`` prints nothing.
      every: minimum seconds between lines.
      stream: where to print (default ``sys.stdout``).
      width: characters of the bar.
    """

    def __init__(self, total: int, what: str, *, enabled: bool = True, every: float = 5.0,
                 stream=None, width: int = 24):
        self.total, self.what, self.enabled = total, what, enabled
        self.every, self.width = every, width
        self.stream = sys.stdout if stream is None else stream
        self.t0 = time.perf_counter()
        self.last = -math.inf

    def update(self, done: int):
        """Report that ``done`` of ``total`` are finished."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = int(self.width * done / max(self.total, 1))
        m, s = divmod(int(eta), 60)
        print(f"[{'#' * bar}{'.' * (self.width - bar)}] {self.what} {done}/{self.total}  "
              f"{rate:.1f}/s  ETA {m}m{s:02d}s", file=self.stream, flush=True)


def iter_generate(sample_fn: Callable, num_samples: int, batch_size: int, *, key=None,
                  progress: bool = True) -> Iterable[np.ndarray]:
    """Yield ``num_samples`` samples in chunks of ``batch_size`` (the last one truncated).

    Every chunk is drawn at the full ``batch_size`` (one compiled program; the surplus of the
    last chunk is dropped); the sampling driver shards a chunk over all devices when
    ``batch_size`` divides their number.

    Args:
      sample_fn: ``sample_fn(key, batch_size, offset)`` returning the samples ``offset ..
        offset + batch_size - 1``, sample ``i`` depending only on ``(key, i)`` (pass ``offset``
        to :func:`diffjax.samplers.sample` as ``sample_offset``; labels
        ``(offset + arange(B)) % K``).
      num_samples: how many samples in all.
      batch_size: samples per call of ``sample_fn``.
      key: the PRNG key (default ``jax.random.key(0)``).
      progress: print a progress line.

    Yields:
      numpy arrays of at most ``batch_size`` samples, in index order.

    Raises:
      ValueError: non-positive ``num_samples`` / ``batch_size``, or ``sample_fn`` returning
        another number of samples than asked.
    """
    import jax

    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    key = jax.random.key(0) if key is None else key
    bar = Progress(num_samples, "samples", enabled=progress)
    for offset in range(0, num_samples, batch_size):
        x = np.asarray(sample_fn(key, int(batch_size), int(offset)))
        if x.shape[0] != batch_size:
            raise ValueError(f"sample_fn returned {x.shape[0]} samples for batch_size="
                             f"{batch_size}")
        x = x[:num_samples - offset]
        bar.update(offset + len(x))
        yield x


def generate(sample_fn: Callable, num_samples: int, batch_size: int, *, key=None,
             progress: bool = True) -> np.ndarray:
    """``num_samples`` samples drawn in chunks by :func:`iter_generate`, concatenated.

    The result is the same for every ``batch_size`` and device count. Arguments as for
    :func:`iter_generate`.
    """
    return np.concatenate(list(iter_generate(sample_fn, num_samples, batch_size, key=key,
                                             progress=progress)))
