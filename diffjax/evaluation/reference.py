"""Reference-set statistics for the image metrics, cached on disk with a sha256 checksum.

FID (Heusel et al. 2017) and sFID (Nash et al. 2021) compare the Gaussian statistics (mean and
covariance) of the samples' features with those of a reference set taken through the same
feature path; improved precision/recall (Kynkaanniemi et al. 2019, "Improved Precision and
Recall Metric for Assessing Generative Models") needs the reference features themselves. The
usual references are, for CIFAR-10, the 50,000 training images and, for ImageNet, the ADM
reference batch (``VIRTUAL_imagenet256_labeled.npz`` of Dhariwal & Nichol 2021, or its
precomputed ``mu``/``sigma``).

Computing them is expensive, so :func:`reference_features` writes them once to an ``.npz``
(readable as a plain ``mu``/``sigma`` statistics file by pytorch-fid and
:func:`diffjax.metrics.load_statistics`) with a ``.sha256`` side file
(:mod:`diffjax.utils.checksum`). A cache is reused only if its checksum matches and it was made
in the same feature space: a corrupted or foreign cache raises instead of silently changing a
metric.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from diffjax.evaluation.features import FeatureSpace, extract_features, iter_batches
from diffjax.metrics.fid import FeatureStatistics, compute_statistics
from diffjax.utils.checksum import save_npz_with_checksum, verify_sha256

__all__ = ["ReferenceFeatures", "save_reference", "load_reference", "reference_features"]


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
        """The number of reference images the statistics were computed from."""
        return self.stats.num_samples


def save_reference(path, ref: ReferenceFeatures) -> str:
    """Write ``ref`` to ``path`` with its sha256 in ``path + '.sha256'``.

    The npz holds ``mu``, ``sigma``, ``num_samples`` (as pytorch-fid and
    :func:`diffjax.metrics.load_statistics` read them), ``mu_s``/``sigma_s`` (as the ADM
    evaluator names the spatial statistics), ``features`` and ``meta_<key>`` strings.

    Args:
      path: the ``.npz`` path.
      ref: the reference.

    Returns:
      The hex sha256 digest of the file.
    """
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
    """Read a reference written by :func:`save_reference`, or any npz with ``mu``/``sigma``.

    pytorch-fid statistics files and the ADM reference batches (with ``mu_s``/``sigma_s``)
    qualify. The checksum (``sha256``, else the ``.sha256`` side file) must match.

    Args:
      path: the ``.npz`` path.
      space: the feature space's name; a cache made in another space is refused.
      sha256: the expected digest (overrides the side file).

    Returns:
      The reference (``meta['source']`` defaults to ``path``).

    Raises:
      FileNotFoundError: no such file.
      ValueError: checksum mismatch, another feature space, no ``mu``/``sigma``.
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
    """Reference statistics of ``images`` in ``space``, cached at ``cache_path``.

    An existing cache is verified and reused (``images`` is then not read); one of another
    feature space or a corrupted one raises instead of being silently recomputed.

    Args:
      images: an array or an iterable of batches
        (:func:`~diffjax.evaluation.features.iter_batches`).
      space: the feature space.
      cache_path: the ``.npz`` cache (``None``: no cache).
      max_samples: use at most this many images (the first ones).
      max_pr: keep at most this many pool3 features for precision/recall.
      quantize_mode: how float images become uint8 (:func:`~diffjax.evaluation.quantize`).
      source: what the images are, stored in ``meta['source']``.
      progress: print a progress line.
      total: the number of images, for the progress line.

    Returns:
      The reference.
    """
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
    """The first ``n`` images of an array or of an iterable of batches."""
    if hasattr(images, "shape"):
        return images[:n]

    def gen():
        left = n
        for b in iter_batches(images, n):
            if left <= 0:
                return
            yield b[:left]
            left -= len(b[:left])

    return gen()
