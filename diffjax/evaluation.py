"""Sample-quality evaluation that papers can be compared against (the ``eval`` command's engine).

This module is configuration-free: it draws samples through any ``sample_fn``, turns images
into features with a named *feature space*, computes the metrics against a cached reference and
writes ``eval.json`` / ``eval.md``. :func:`diffjax.experiment.evaluate` wires it to configs.

FID-50k protocol (the number image papers report; spec_classic.md 13.2, spec_modern.md 1.4):

1. **Samples.** N = 50,000 samples (FID is biased upward at small N, roughly ``+c/N``, so a
   number is comparable only at the same N; the report always states N). Sample ``i`` uses the
   key ``fold_in(key, i)`` (:func:`generate`), so the set does not depend on the chunk size or
   the device count (EDM's per-seed generation; SiT/DiT numbers moved with the GPU count
   because theirs did). Class-conditional models: class-balanced labels ``i mod K``.
2. **Quantisation.** Samples in ``[-1, 1]`` become uint8 pixels before any feature is taken,
   exactly as if they had been written as PNGs. ``quantize='round'`` (default):
   ``round((x + 1) * 127.5)``, EDM's ``x * 127.5 + 128`` truncated and
   :func:`diffjax.data.preprocess.to_uint8`; ``'floor'``: ``floor((x + 1) * 127.5)``, the
   guided-diffusion (ADM) / score_sde sample writers. Both clip to 0..255; they differ by half a
   grey level.
3. **Features.** The FID Inception (TF ``inception-2015-12-05`` as ported by pytorch-fid,
   :mod:`diffjax.metrics.inception`): uint8 / 255, bilinear resize to 299 (pytorch-fid's
   ``align_corners=False`` path by default, ``resize='tf1'`` for the TF graph's own resize),
   ``2 x - 1``; ``pool3`` (2048-d) for FID and precision/recall, the 1008 ``logits`` for the
   Inception Score, the first 7 channels of ``mixed_6/conv`` (17x17x7 = 2023-d) for sFID.
4. **Reference.** Statistics of the reference set through the same path: CIFAR-10 the 50k
   training images, ImageNet the ADM reference batch (``VIRTUAL_imagenet256_labeled.npz``, or
   its precomputed ``mu``/``sigma``). Cached with a sha256 side file (:func:`reference_features`).
5. **Metrics.** FID = Fréchet distance of the pool3 Gaussians
   (:func:`diffjax.metrics.frechet_distance`); IS over 10 splits (mean and std); sFID likewise on
   the spatial features; improved precision/recall with k = 3 on pool3 (Kynkäänniemi et al.
   2019). 2-D data: sliced Wasserstein-1, MMD, energy distance (:mod:`diffjax.metrics.toy`).

What cannot be checked offline: the real FID Inception weights are not shipped (diffjax never
downloads; :func:`diffjax.metrics.inception.load_inception` reads the converted pytorch-fid file
you supply), so neither the numbers with the real weights nor their parity with the original TF
graph (ADM / TTUR evaluators) are tested here. What is tested is the network itself: it matches
pytorch-fid's ``InceptionV3`` on seeded random weights (``tests/fixtures/inception_parity.npz``).

Feature spaces (:func:`feature_space`), and whether their numbers can be compared to papers:

* ``'inception'`` — the real FID Inception from ``inception_weights`` (a converted ``.npz``):
  comparable (pytorch-fid preprocessing; within rounding of the TF evaluators).
* ``'random_init'`` — the same network with seeded random (He-normal) weights: exercises the
  whole pipeline offline; numbers are **not** comparable to anything published.
* ``'pixels'`` — the uint8 pixels scaled to ``[0, 1]``, flattened: a Fréchet distance of the
  pixel Gaussians ("FID in pixel space"); not comparable to papers; no IS, no sFID.
* ``'digits'`` — for the embedded 8x8 digits: the 10 log-odds of a logistic-regression digit
  classifier fitted on the (quantised) embedded digits (:mod:`diffjax.metrics.classifier_score`):
  FID / precision-recall in that 10-d space and the IS formula with its class probabilities.
  A cheap, honest offline figure for the quickstart; not comparable to papers.

Likelihood (:func:`bits_per_dim`): the discrete VLB of DDPM / iDDPM (``calc_bpd_loop``,
discretised decoder, all T terms) for :class:`~diffjax.processes.DiscreteVP` models, and the
PF-ODE likelihood (score_sde: uniform dequantisation, offset 7 bits for data in ``[-1, 1]``)
for continuous-time models. The two are bounds of different kinds and are not comparable.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffjax.metrics.fid import (
    FeatureStatistics,
    compute_statistics,
    inception_score,
)
from diffjax.utils.checksum import save_npz_with_checksum, verify_sha256

__all__ = [
    "IMAGE_METRICS",
    "POINT_METRICS",
    "FeatureSpace",
    "ReferenceFeatures",
    "quantize",
    "Progress",
    "generate",
    "iter_generate",
    "feature_space",
    "jax_features",
    "inception_features",
    "random_inception_variables",
    "extract_features",
    "reference_features",
    "save_reference",
    "load_reference",
    "evaluate_images",
    "evaluate_points",
    "bits_per_dim",
    "load_samples",
    "write_report",
]

#: metric names for images (``pr`` gives ``precision`` and ``recall``; ``is`` gives ``is`` and
#: ``is_std``)
IMAGE_METRICS = ("fid", "is", "sfid", "pr")
#: metric names for low-dimensional points
POINT_METRICS = ("sw1", "mmd", "energy")

_QUANTIZE = ("round", "floor")


# ---------------------------------------------------------------- small pieces


def quantize(images, mode: str = "round") -> np.ndarray:
    """Images as uint8 pixels, as if written to PNG (step 2 of the module docstring).

    Args:
      images: ``uint8`` (returned unchanged) or floats in ``[-1, 1]`` (clipped).
      mode: ``'round'`` (``round((x + 1) * 127.5)``, EDM) or ``'floor'`` (ADM / score_sde).

    Raises:
      ValueError: unknown ``mode``; TypeError: integer input other than uint8.
    """
    if mode not in _QUANTIZE:
        raise ValueError(f"quantize must be one of {_QUANTIZE}; got {mode!r}")
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

    Prints at most every ``every`` seconds (and at the end); ``enabled=False`` is silent.
    """

    def __init__(self, total: int, what: str, *, enabled: bool = True, every: float = 5.0,
                 stream=None, width: int = 24):
        self.total, self.what, self.enabled = total, what, enabled
        self.every, self.width = every, width
        self.stream = sys.stdout if stream is None else stream
        self.t0 = time.perf_counter()
        self.last = -math.inf

    def update(self, done: int):
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


# ---------------------------------------------------------------- generation


def iter_generate(sample_fn: Callable, num_samples: int, batch_size: int, *, key=None,
                  progress: bool = True) -> Iterable[np.ndarray]:
    """Yield ``num_samples`` samples in chunks of ``batch_size`` (the last one truncated).

    ``sample_fn(key, batch_size, offset)`` must return the samples ``offset .. offset +
    batch_size - 1`` with sample ``i`` depending only on ``(key, i)`` (pass ``offset`` to
    :func:`diffjax.samplers.sample` as ``sample_offset``; labels ``(offset + arange(B)) % K``).
    Every chunk is drawn at the full ``batch_size`` (one compiled program; the surplus of the
    last chunk is dropped), and the driver shards a chunk over all devices when ``batch_size``
    divides their number.
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
    """``num_samples`` samples drawn in chunks (see :func:`iter_generate`), concatenated.
    The result is the same for every ``batch_size`` and device count."""
    return np.concatenate(list(iter_generate(sample_fn, num_samples, batch_size, key=key,
                                             progress=progress)))


# ---------------------------------------------------------------- feature spaces


@dataclass
class FeatureSpace:
    """A named map from uint8 NHWC image batches to features.

    Attributes:
      name: short name, stored with cached reference features (a cache made in another space
        is refused).
      description: what the features are, for the report.
      comparable: whether FID / IS numbers in this space can be compared to papers.
      fn: ``fn(uint8 (B, H, W, C)) -> {'pool3': (B, D), 'logits'?: (B, K), 'spatial'?: (B, S)}``.
      outputs: the keys ``fn`` returns.
      batch_size: the batch :func:`extract_features` feeds ``fn`` (the last one is padded to it,
        so ``fn`` sees one shape).
    """

    name: str
    description: str
    comparable: bool
    fn: Callable[[np.ndarray], dict]
    outputs: tuple = ("pool3",)
    batch_size: int = 200

    def metrics(self) -> tuple:
        """The image metrics this space can give."""
        out = ["fid", "pr"]
        if "logits" in self.outputs:
            out.append("is")
        if "spatial" in self.outputs:
            out.append("sfid")
        return tuple(m for m in IMAGE_METRICS if m in out)


def random_inception_variables(seed: int = 0) -> dict:
    """Seeded random variables of the FID Inception (numpy, no compile): conv / dense kernels
    ``N(0, 2 / fan_in)`` (He et al. 2015, so ReLU activations keep their scale through the 94
    convolutions), BatchNorm identity (scale 1, bias 0, mean 0, var 1). NOT the FID weights."""
    import jax

    from diffjax.metrics.inception import abstract_variables

    rng = np.random.default_rng(seed)

    def leaf(path, a):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(a.shape[:-1]))
            return (rng.standard_normal(a.shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        if name in ("scale", "var"):
            return np.ones(a.shape, np.float32)
        return np.zeros(a.shape, np.float32)

    return jax.tree_util.tree_map_with_path(leaf, abstract_variables())


def jax_features(forward: Callable, variables, *, name: str, description: str,
                 comparable: bool, outputs: tuple = ("pool3",), batch_size: int = 200,
                 mesh: Any = "auto") -> FeatureSpace:
    """A jitted JAX feature network as a :class:`FeatureSpace`.

    ``forward(variables, uint8 (B, H, W, C)) -> {'pool3': ..., ...}`` is jitted once; the
    variables are replicated and each batch is sharded over a 1-D ``('data',)`` mesh of all
    devices when its size divides their number (``mesh='auto'``; ``None``: no sharding; or a
    mesh with a ``'data'`` axis). uint8 goes to the devices (4x less transfer than floats).
    """
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    apply = jax.jit(forward)
    if mesh == "auto":
        devices = jax.devices()
        mesh = Mesh(np.asarray(devices), ("data",)) if len(devices) > 1 else None
    if mesh is not None:
        variables = jax.device_put(variables, NamedSharding(mesh, P()))
    else:
        variables = jax.device_put(variables)

    def fn(images):
        x = np.asarray(images)
        if mesh is not None and len(x) % mesh.shape["data"] == 0:
            x = jax.device_put(x, NamedSharding(mesh, P("data")))
        return {k: np.asarray(v) for k, v in apply(variables, x).items()}

    return FeatureSpace(name, description, comparable, fn, tuple(outputs), batch_size)


def inception_features(variables, *, name: str, description: str, comparable: bool,
                       resize: str = "pytorch", input_size: int = 299, batch_size: int = 200,
                       mesh: Any = "auto") -> FeatureSpace:
    """The FID Inception as a :class:`FeatureSpace` (:func:`jax_features`): uint8 in,
    ``/ 255``, grey repeated to RGB, bilinear resize, ``2 x - 1``; pool3, logits and the
    2023-d spatial features out. ``input_size`` other than 299 is for cheap pipeline tests
    only (FID is defined at 299)."""
    import jax.numpy as jnp

    from diffjax.metrics.inception import InceptionV3, resize_bilinear

    if input_size < 75:
        raise ValueError(f"input_size must be >= 75 (the Inception's smallest input); got "
                         f"{input_size}")
    module = InceptionV3()

    def forward(v, x):
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"images must be (B, H, W, 1 or 3); got shape {x.shape}")
        x = x.astype(jnp.float32) / 255.0
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        x = resize_bilinear(x, input_size, resize)
        out = module.apply(v, 2.0 * x - 1.0)
        sp = out["spatial"][..., :7]  # the ADM evaluator's mixed_6/conv[..., :7]
        return {"pool3": out["pool3"], "logits": out["logits"],
                "spatial": sp.reshape(sp.shape[0], -1)}

    return jax_features(forward, variables, name=name, description=description,
                        comparable=comparable, outputs=("pool3", "logits", "spatial"),
                        batch_size=batch_size, mesh=mesh)


def _pixel_fn(images):
    x = np.asarray(images)
    return {"pool3": x.reshape(len(x), -1).astype(np.float32) / 255.0}


@functools.lru_cache(maxsize=2)
def _digit_classifier(quantize_mode: str):
    from diffjax.data.embedded import load_digits
    from diffjax.metrics.classifier_score import fit_classifier

    images, labels = load_digits()
    # fitted on the digits as the samples are seen: quantised to uint8, then back to [-1, 1]
    x = quantize(images, quantize_mode).astype(np.float32) / 127.5 - 1.0
    return fit_classifier(x, labels)


def _digits_space(quantize_mode: str, batch_size: int) -> FeatureSpace:
    clf = _digit_classifier(quantize_mode)

    def fn(images):
        x = np.asarray(images)
        if x.shape[1:] != (8, 8, 1):
            raise ValueError(f"features='digits' needs 8x8 grey images (B, 8, 8, 1); got shape "
                             f"{x.shape}")
        logits = clf.decision_function(x.reshape(len(x), -1).astype(np.float64) / 127.5 - 1.0)
        return {"pool3": logits, "logits": logits}

    return FeatureSpace(
        "digits", "digit-classifier logits (logistic regression fitted on the 1,797 embedded "
        "8x8 digits, 10-d); NOT comparable to papers", False, fn, ("pool3", "logits"),
        batch_size)


FEATURES = ("inception", "random_init", "pixels", "digits")


def feature_space(name: str = "inception", *, inception_weights=None, seed: int = 0,
                  resize: str = "pytorch", input_size: int = 299, batch_size: int = 200,
                  quantize_mode: str = "round", mesh: Any = "auto") -> FeatureSpace:
    """The feature space ``name`` (see the module docstring).

    Args:
      name: ``'inception'`` (needs ``inception_weights``), ``'random_init'``, ``'pixels'`` or
        ``'digits'``.
      inception_weights: path of the converted FID Inception ``.npz`` (with its ``.sha256``).
      seed: the random-init weights' seed.
      resize: Inception resize path, ``'pytorch'`` (pytorch-fid) or ``'tf1'`` (TF graph).
      input_size: Inception input size (299 for FID; smaller only for tests).
      batch_size: feature batch size.
      quantize_mode: the quantisation the digit classifier is fitted under.
      mesh: Inception sharding (``'auto'``, ``None`` or a mesh with a ``'data'`` axis).

    Raises:
      ValueError: unknown ``name``, or ``'inception'`` without ``inception_weights`` (the message
        says how to get them and names the offline alternatives).
    """
    if name == "inception":
        if inception_weights is None:
            raise ValueError(
                "FID / IS / sFID need the FID Inception weights: set inception_weights (config "
                "key eval.inception_weights) to the converted pytorch-fid .npz (see "
                "diffjax.metrics.inception.convert_pytorch_fid_weights; diffjax never "
                "downloads). Offline alternatives whose numbers are NOT comparable to papers: "
                "features='random_init', 'pixels', or 'digits' for the embedded digits.")
        from diffjax.metrics.inception import load_inception

        net = load_inception(inception_weights)
        return inception_features(
            net.variables, name="inception", comparable=input_size == 299,
            description=f"FID Inception pool3 (pytorch-fid weights {os.fspath(inception_weights)}, "
                        f"resize {resize})", resize=resize, input_size=input_size,
            batch_size=batch_size, mesh=mesh)
    if name == "random_init":
        return inception_features(
            random_inception_variables(seed), name=f"random_init(seed={seed},size={input_size})",
            comparable=False, description=f"Inception-v3 with seeded RANDOM weights (seed {seed}, "
            f"input {input_size}px): NOT comparable to papers", resize=resize,
            input_size=input_size, batch_size=batch_size, mesh=mesh)
    if name == "pixels":
        return FeatureSpace("pixels", "raw pixels in [0, 1] (Frechet distance of pixel "
                            "Gaussians); NOT comparable to papers", False, _pixel_fn,
                            ("pool3",), batch_size)
    if name == "digits":
        return _digits_space(quantize_mode, batch_size)
    raise ValueError(f"unknown features {name!r}; expected one of {FEATURES}")


def _batches(images, batch_size: int) -> Iterable[np.ndarray]:
    """Batches from an array, or from an iterable of arrays / ``(images, ...)`` tuples /
    ``{'image': ...}`` dicts."""
    if isinstance(images, np.ndarray) or hasattr(images, "__array__") and hasattr(images, "shape"):
        x = np.asarray(images)
        for s in range(0, len(x), batch_size):
            yield x[s:s + batch_size]
        return
    for b in images:
        if isinstance(b, (tuple, list)):
            b = b[0]
        elif isinstance(b, dict):
            b = b["image"]
        yield np.asarray(b)


def extract_features(images, space: FeatureSpace, *, quantize_mode: str = "round",
                     progress: bool = True, total: int | None = None) -> dict:
    """Features of all ``images`` in ``space``: ``{'pool3': (N, D), ...}`` (float64 numpy).

    ``images``: an ``(N, H, W, C)`` array or an iterable of batches (uint8, or floats in
    ``[-1, 1]``: quantised first with ``quantize_mode``). Batches are regrouped to
    ``space.batch_size`` and the last one is padded with copies of its final image (one shape,
    one compile; the padding's features are dropped).
    """
    bs = space.batch_size
    out: dict[str, list] = {}
    pending: list[np.ndarray] = []
    count = 0
    if total is None and hasattr(images, "shape"):
        total = len(images)
    bar = Progress(total or 0, f"features ({space.name})", enabled=progress and bool(total))

    def run(chunk):
        nonlocal count
        n = len(chunk)
        if n < bs:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, axis=0)])
        for k, v in space.fn(chunk).items():
            out.setdefault(k, []).append(np.asarray(v, np.float64)[:n].reshape(n, -1))
        count += n
        bar.update(count)

    buf = 0
    for b in _batches(images, bs):
        b = quantize(b, quantize_mode)
        if b.ndim == 3:  # (N, H, W) grey
            b = b[..., None]
        pending.append(b)
        buf += len(b)
        while buf >= bs:
            allb = np.concatenate(pending)
            run(allb[:bs])
            pending, buf = [allb[bs:]], buf - bs
    if buf:
        run(np.concatenate(pending))
    if not count:
        raise ValueError("images is empty: no features to extract")
    return {k: np.concatenate(v) for k, v in out.items()}


# ---------------------------------------------------------------- reference


@dataclass
class ReferenceFeatures:
    """What the metrics need of the reference set.

    Attributes:
      stats: pool3 statistics (FID).
      spatial: spatial statistics (sFID) or ``None``.
      features: pool3 features for precision/recall (possibly a subsample) or ``None`` (a
        statistics-only reference, e.g. a pytorch-fid / ADM ``mu``/``sigma`` file).
      meta: feature space, source and counts (strings).
    """

    stats: FeatureStatistics
    spatial: FeatureStatistics | None = None
    features: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return self.stats.num_samples


def save_reference(path, ref: ReferenceFeatures) -> str:
    """Write ``ref`` to ``path`` (npz: ``mu``, ``sigma``, ``num_samples`` as pytorch-fid and
    :func:`diffjax.metrics.load_statistics` read them; ``mu_s``/``sigma_s`` as the ADM evaluator;
    ``features``; ``meta_*``) and its sha256 to ``path + '.sha256'``; returns the digest."""
    arrays = dict(mu=ref.stats.mu, sigma=ref.stats.sigma,
                  num_samples=np.int64(ref.stats.num_samples))
    if ref.spatial is not None:
        arrays.update(mu_s=ref.spatial.mu, sigma_s=ref.spatial.sigma)
    if ref.features is not None:
        arrays["features"] = np.asarray(ref.features, np.float32)
    arrays.update({f"meta_{k}": np.asarray(str(v)) for k, v in ref.meta.items()})
    return save_npz_with_checksum(path, arrays)


def load_reference(path, *, space: str | None = None, sha256: str | None = None
                   ) -> ReferenceFeatures:
    """Read a reference written by :func:`save_reference`, or any npz with ``mu``/``sigma``
    (pytorch-fid, ADM: ``mu_s``/``sigma_s`` too). The checksum (``sha256`` or the ``.sha256``
    side file) must match; with ``space`` a cache made in another feature space is refused.

    Raises:
      FileNotFoundError, ValueError (checksum mismatch, other feature space, no ``mu``).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"reference file {path!r} does not exist")
    verify_sha256(path, sha256, what="reference",
                  hint="delete it (and its .sha256) to recompute")
    with np.load(path) as z:
        if "mu" not in z or "sigma" not in z:
            raise ValueError(f"reference {path!r} has no 'mu'/'sigma' arrays (keys: "
                             f"{sorted(z.files)})")
        meta = {k[5:]: str(z[k]) for k in z.files if k.startswith("meta_")}
        n = int(z["num_samples"]) if "num_samples" in z else -1
        stats = FeatureStatistics(z["mu"].astype(np.float64), z["sigma"].astype(np.float64), n)
        spatial = (FeatureStatistics(z["mu_s"].astype(np.float64),
                                     z["sigma_s"].astype(np.float64), n)
                   if "mu_s" in z else None)
        feats = z["features"].astype(np.float64) if "features" in z else None
    if space is not None and meta.get("features", space) != space:
        raise ValueError(f"reference {path!r} was computed with features "
                         f"{meta['features']!r}, not {space!r}; use another cache path")
    meta.setdefault("source", path)
    return ReferenceFeatures(stats, spatial, feats, meta)


def reference_features(images, space: FeatureSpace, *, cache_path=None,
                       max_samples: int | None = None, max_pr: int = 50_000,
                       quantize_mode: str = "round", source: str = "", progress: bool = True,
                       total: int | None = None) -> ReferenceFeatures:
    """Reference statistics (and up to ``max_pr`` pool3 features for precision/recall) of
    ``images`` (an array or iterable of batches) in ``space``, cached at ``cache_path`` with a
    checksum. An existing cache is verified and reused; one of another feature space or a
    corrupted one raises instead of being silently recomputed."""
    if cache_path is not None and os.path.exists(cache_path):
        return load_reference(cache_path, space=space.name)
    if max_samples is not None:
        images = _take(images, max_samples)
        total = min(total or max_samples, max_samples)
    f = extract_features(images, space, quantize_mode=quantize_mode, progress=progress,
                         total=total)
    pool = f["pool3"]
    ref = ReferenceFeatures(
        compute_statistics(pool),
        compute_statistics(f["spatial"]) if "spatial" in f else None,
        pool[:max_pr],
        {"features": space.name, "source": source, "num_samples": len(pool),
         "quantize": quantize_mode})
    if cache_path is not None:
        save_reference(cache_path, ref)
    return ref


def _take(images, n):
    if hasattr(images, "shape"):
        return images[:n]

    def gen():
        left = n
        for b in _batches(images, n):
            if left <= 0:
                return
            yield b[:left]
            left -= len(b[:left])

    return gen()


# ---------------------------------------------------------------- metrics


def _check_metrics(metrics, allowed, what):
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in allowed]
    if bad:
        raise ValueError(f"unknown {what} metric(s) {bad}; expected a subset of {allowed}")
    return metrics


def evaluate_images(images, *, reference, metrics: Sequence[str] = IMAGE_METRICS,
                    features: FeatureSpace, is_splits: int = 10, pr_k: int = 3,
                    quantize_mode: str = "round", progress: bool = True) -> dict:
    """Image metrics of ``images`` against ``reference``.

    Args:
      images: ``(N, H, W, C)`` uint8 / float ``[-1, 1]`` array, an iterable of batches, or
        precomputed features (a dict from :func:`extract_features`).
      reference: a :class:`ReferenceFeatures`, a path of a cached / ``mu``-``sigma`` npz, or an
        image array (featurised here, not cached).
      metrics: a subset of :data:`IMAGE_METRICS`.
      features: the feature space (the same one the reference was computed in).
      is_splits: Inception Score splits (10 in the papers).
      pr_k: the k of improved precision/recall (3 in the papers).

    Returns:
      ``{'num_samples', 'num_reference', 'features', 'comparable_to_papers', 'fid', 'is',
      'is_std', 'sfid', 'precision', 'recall'}`` (the requested ones).

    Raises:
      ValueError: unknown metrics, a metric the feature space cannot give (``is`` needs logits,
      ``sfid`` spatial features), ``pr`` against a statistics-only reference.
    """
    from diffjax.metrics.precision_recall import precision_recall

    metrics = _check_metrics(metrics, IMAGE_METRICS, "image")
    missing = [m for m in metrics if m not in features.metrics()]
    if missing:
        raise ValueError(f"metrics {missing} are not available in feature space "
                         f"{features.name!r} (it gives {features.metrics()})")
    if isinstance(reference, (str, os.PathLike)):
        reference = load_reference(reference, space=features.name)
    elif not isinstance(reference, ReferenceFeatures):
        reference = reference_features(reference, features, quantize_mode=quantize_mode,
                                       progress=progress)
    f = images if isinstance(images, dict) else extract_features(
        images, features, quantize_mode=quantize_mode, progress=progress)
    n = len(f["pool3"])
    out: dict[str, Any] = {"num_samples": n, "num_reference": reference.num_samples,
                           "features": features.name,
                           "comparable_to_papers": bool(features.comparable)}
    if "fid" in metrics:
        out["fid"] = compute_statistics(f["pool3"]).frechet_distance(reference.stats)
    if "is" in metrics:
        out["is"], out["is_std"] = inception_score(f["logits"], is_splits, from_logits=True)
    if "sfid" in metrics:
        if reference.spatial is None:
            raise ValueError("sfid: the reference has no spatial statistics (mu_s/sigma_s)")
        out["sfid"] = compute_statistics(f["spatial"]).frechet_distance(reference.spatial)
    if "pr" in metrics:
        if reference.features is None:
            raise ValueError("pr: the reference holds statistics only (no features); compute it "
                             "from images to get precision/recall")
        out["precision"], out["recall"] = precision_recall(reference.features, f["pool3"], pr_k)
    return out


def evaluate_points(samples, reference, metrics: Sequence[str] = POINT_METRICS, *,
                    max_kernel_points: int = 2000, seed: int = 0) -> dict:
    """Metrics of low-dimensional ``samples (N, D)`` against ``reference (M, D)``: ``sw1``
    (sliced Wasserstein-1, all points), ``mmd`` (unbiased, RBF with the median heuristic) and
    ``energy`` (energy distance). The kernel metrics use at most ``max_kernel_points`` of each
    set (seeded subsample; they are ``O(N^2)`` in memory)."""
    from diffjax.metrics.toy import energy_distance, mmd, sliced_wasserstein

    metrics = _check_metrics(metrics, POINT_METRICS, "point")
    x = np.asarray(samples, np.float64).reshape(len(samples), -1)
    y = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} dims, reference {y.shape[1]}")
    # a fresh generator per set: equal sets of equal size keep equal subsamples
    sub = lambda a: a[np.random.default_rng(seed).choice(len(a), max_kernel_points,
                                                         replace=False)] \
        if len(a) > max_kernel_points else a
    xs, ys = sub(x), sub(y)
    out: dict[str, Any] = {"num_samples": len(x), "num_reference": len(y)}
    if "sw1" in metrics:
        out["sw1"] = float(sliced_wasserstein(x, y))
    if "mmd" in metrics:
        out["mmd"] = mmd(xs, ys)
    if "energy" in metrics:
        out["energy"] = energy_distance(xs, ys)
    return out


def bits_per_dim(model: Callable, x, *, process, prediction: str = "eps", key=None,
                 learned_variance: bool = False, cond=None, batch_size: int = 64,
                 image_data: bool = True, clip_x0: float | None = None) -> dict:
    """Negative log-likelihood in bits/dim of data ``x`` (``(N, ...)``, images in ``[-1, 1]``).

    * :class:`~diffjax.processes.DiscreteVP` (DDPM / iDDPM): the discrete VLB ``L_T + sum L_t``
      with the discretised decoder (Ho et al. 2020 eq. 5 and 13; Nichol & Dhariwal 2021,
      ``calc_bpd_loop``), variance ``'learned'`` with ``learned_variance`` else DDPM's
      ``'large'`` (fixed ``beta_t``).
    * continuous processes: the PF-ODE likelihood (Song et al. 2021, appendix D.2) with the
      Hutchinson divergence; images are uniformly dequantised and 7 bits are added
      (score_sde's offset for ``[-1, 1]`` data); ``image_data=False`` (points) uses ``x`` as is
      with no offset.

    Returns ``{'bpd': mean, 'bpd_sem': standard error, 'bpd_method': 'vlb' | 'pf_ode',
    'bpd_num': N}``. Datapoint ``i``'s randomness depends only on ``(key, i)``.
    """
    import jax
    import jax.numpy as jnp

    from diffjax import likelihood as LK
    from diffjax.losses.vlb import calc_bpd_loop
    from diffjax.processes import DiscreteVP

    x = np.asarray(x, np.float32)
    if x.ndim < 2 or len(x) < 1:
        raise ValueError(f"x must be a non-empty batch (N, ...); got shape {x.shape}")
    key = jax.random.key(0) if key is None else key
    dims = int(np.prod(x.shape[1:]))
    vals = []
    if isinstance(process, DiscreteVP):
        method = "vlb"
        fn = jax.jit(lambda k, xb, c: calc_bpd_loop(
            model, k, xb, process=process, prediction=prediction, cond=c, clip_x0=clip_x0,
            variance="learned" if learned_variance else "large")[0])
    else:
        method = "pf_ode"
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size]
        cb = None if cond is None else jnp.asarray(np.asarray(cond)[s:s + batch_size])
        k = jax.random.fold_in(key, s)
        if method == "vlb":
            vals.append(np.asarray(fn(k, jnp.asarray(xb), cb)))
            continue
        if image_data:
            xd = LK.uniform_dequantize(jax.random.fold_in(key, 10**9 + s), jnp.asarray(xb),
                                       centered=True)
        else:
            xd = jnp.asarray(xb)
        res = LK.log_likelihood(model, xd, key, process=process, prediction=prediction,
                                cond=cb, sample_offset=s)
        vals.append(np.asarray(LK.bits_per_dim(res.logp, dims, 7.0 if image_data else 0.0)))
    v = np.concatenate(vals).astype(np.float64)
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"bpd": float(v.mean()), "bpd_sem": sem, "bpd_method": method, "bpd_num": len(v)}


# ---------------------------------------------------------------- files


_IMAGE_EXT = (".png", ".jpg", ".jpeg")


def load_samples(path) -> np.ndarray:
    """Samples made elsewhere, from a folder of PNG/JPEG files or an ``.npz`` / ``.npy``.

    * folder: every ``*.png``/``*.jpg``/``*.jpeg`` below it (sorted by path), read as uint8
      with the channels as stored (alpha dropped); all must have one shape.
    * ``.npz``: the array under ``samples`` (diffjax's ``samples.npz``) or ``arr_0`` (ADM /
      ``np.savez`` without names); ``.npy``: the array.
      - ``uint8`` ``(N, H, W, C)`` or ``(N, H, W)``: pixels 0..255 (returned as ``(N, H, W, C)``).
      - floating ``(N, H, W, C)``: read as ``[-1, 1]`` (diffjax's convention); quantised later,
        values outside are clipped. An array whose maximum exceeds 1.5 is refused (0..255 stored
        as floats: cast it to uint8 first).
      - floating ``(N, D)``: low-dimensional points, returned as float64.

    Raises:
      FileNotFoundError: no such path / no images in the folder; ValueError: an npz without
      ``samples``/``arr_0``, a bad dtype or shape (NCHW arrays are refused with a hint), images
      of different shapes.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"images={os.fspath(path)!r} does not exist (a folder of "
                                "PNG/JPEG files or an .npz/.npy)")
    if p.is_dir():
        from diffjax.data.sources import read_image

        files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in _IMAGE_EXT)
        if not files:
            raise FileNotFoundError(f"images={os.fspath(path)!r}: no .png/.jpg/.jpeg files in "
                                    "this folder")
        imgs = [read_image(q, channels=None) for q in files]
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise ValueError(f"images={os.fspath(path)!r}: the images have different shapes "
                             f"{sorted(shapes)[:4]}; resize them to one size first")
        return np.stack(imgs)
    if p.suffix == ".npy":
        x = np.load(p)
    elif p.suffix == ".npz":
        with np.load(p) as z:
            key = "samples" if "samples" in z.files else "arr_0" if "arr_0" in z.files else None
            if key is None:
                raise ValueError(f"images={os.fspath(path)!r}: the npz has no 'samples' or "
                                 f"'arr_0' array (keys: {sorted(z.files)})")
            x = z[key]
    else:
        raise ValueError(f"images={os.fspath(path)!r}: expected a folder, .npz or .npy")
    return _check_samples(x, os.fspath(path))


def _check_samples(x, where):
    if x.ndim == 2 and np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float64)
    if x.dtype == np.uint8 and x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{where}: expected images (N, H, W, C) or points (N, D); got shape "
                         f"{x.shape}")
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        raise ValueError(f"{where}: shape {x.shape} looks channels-first (NCHW); store NHWC "
                         "(x.transpose(0, 2, 3, 1))")
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"{where}: images need 1 or 3 channels; got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where}: images must be uint8 (0..255) or floats in [-1, 1]; got "
                         f"dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{where}: the images contain NaN or inf")
    if x.size and float(np.max(np.abs(x))) > 1.5:
        raise ValueError(f"{where}: float images must lie in [-1, 1]; the maximum |x| is "
                         f"{float(np.max(np.abs(x))):.4g} (0..255 stored as floats? cast to "
                         "uint8)")
    return x.astype(np.float32)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


_LABELS = {"fid": "FID", "is": "Inception Score (mean over splits)", "is_std":
           "Inception Score (std over splits)", "sfid": "sFID", "precision": "precision (k=3)",
           "recall": "recall (k=3)", "sw1": "sliced Wasserstein-1", "mmd": "MMD^2 (RBF, unbiased)",
           "energy": "energy distance", "loss": "held-out denoising loss",
           "bpd": "NLL (bits/dim)", "bpd_sem": "NLL standard error (bits/dim)"}


def write_report(workdir, results: dict, protocol: dict, *, name: str = "eval") -> tuple:
    """Write ``<name>.json`` (``{'metrics': results, 'protocol': protocol}``) and ``<name>.md``
    (a metric / value table, then the protocol: N, feature space and weights, sampler and
    steps, guidance, reference set...) to ``workdir``; returns both paths."""
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / f"{name}.json"
    js.write_text(json.dumps({"metrics": results, "protocol": protocol}, indent=2, default=str))
    lines = ["# Evaluation", "", "| metric | value |", "|---|---|"]
    for k, v in results.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lines.append(f"| {_LABELS.get(k, k)} | {_fmt(v)} |")
    lines += ["", "Protocol:", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in protocol.items()]
    if protocol.get("comparable_to_papers") is False:
        lines += ["", "**These numbers are NOT comparable to published FID / IS values** "
                  "(feature space: " + str(protocol.get("features", "?")) + ")."]
    md = out / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    return js, md
