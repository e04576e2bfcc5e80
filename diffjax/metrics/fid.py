"""Fréchet distance, FID / sFID / Inception Score and cached reference statistics.

All statistics are float64 numpy; the matrix square root is scipy's, with the fallback of
pytorch-fid ``calculate_frechet_distance`` (mseitzer/pytorch-fid ``fid_score.py``; identical in
the guided-diffusion evaluator ``FIDStatistics.frechet_distance``):

* ``covmean = sqrtm(sigma1 @ sigma2)``; if it is not finite (near-singular product), retry with
  ``eps * I`` added to both covariances;
* a complex result is accepted only when the imaginary part of its diagonal is within
  ``1e-3`` of zero (then the real part is used), otherwise ``ValueError``.

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium") as papers report it, the FID-50k protocol:
50,000 generated samples against the statistics of the reference set (CIFAR-10: the 50k training
images; ImageNet: the ADM reference batch), pool3 features of the FID Inception
(:mod:`diffjax.metrics.inception`), images uint8-quantised before feature extraction, one fixed
resize path. FID is biased upward at small N (roughly ``+c/N``): numbers are comparable only at
the same N, so always report N (``fid_from_features`` accepts any N >= 2). Inception Score: 50k
samples, 10 splits, mean (and std) over splits. sFID: the same Fréchet distance on the first 7
channels of ``mixed_6/conv`` (17x17x7 = 2023-d), as in the ADM evaluator.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from diffjax.utils.checksum import save_npz_with_checksum, sha256_file, verify_sha256

__all__ = [
    "FeatureStatistics",
    "frechet_distance",
    "compute_statistics",
    "fid_from_features",
    "inception_score",
    "save_statistics",
    "load_statistics",
    "sha256_file",
    "reference_statistics",
]


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """``|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})`` in float64.

    Numerically the pytorch-fid ``calculate_frechet_distance`` (see the module docstring for the
    ``eps`` offset and the imaginary-part check).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different lengths: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"covariances {sigma1.shape}, {sigma2.shape} do not match means "
                         f"{mu1.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular products; we handle it below
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"frechet_distance: singular product; adding {eps} to the diagonal of "
                      "the covariances", RuntimeWarning, stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean and covariance (float64, ``np.cov(rowvar=False)``, i.e. ``N - 1``) of N features."""

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int

    def frechet_distance(self, other: FeatureStatistics, eps: float = 1e-6) -> float:
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma, eps)


def compute_statistics(features) -> FeatureStatistics:
    """Statistics of ``(N, D)`` features (any N >= 2; more dims are flattened)."""
    f = np.asarray(features, np.float64)
    f = f.reshape(len(f), -1)
    if len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors; got {len(f)}")
    return FeatureStatistics(f.mean(axis=0), np.cov(f, rowvar=False), len(f))


def fid_from_features(features1, features2, eps: float = 1e-6) -> float:
    """FID between two feature sets ``(N1, D)`` and ``(N2, D)`` (any N; see FID-50k above).
    Either argument may also be a :class:`FeatureStatistics`."""
    s1 = features1 if isinstance(features1, FeatureStatistics) else compute_statistics(features1)
    s2 = features2 if isinstance(features2, FeatureStatistics) else compute_statistics(features2)
    return s1.frechet_distance(s2, eps)


def inception_score(probs, splits: int = 10, *, from_logits: bool = False):
    """Inception Score ``exp E_x KL(p(y|x) || p(y))`` per split; returns ``(mean, std)``.

    ``probs``: ``(N, C)`` class probabilities (or logits with ``from_logits=True``; the FID
    Inception has 1008 outputs). Splits as in the ADM evaluator / improved-GAN code:
    ``part = probs[i*N//splits : (i+1)*N//splits]``.
    """
    p = np.asarray(probs, np.float64)
    if from_logits:
        p = p - p.max(axis=1, keepdims=True)
        p = np.exp(p)
        p /= p.sum(axis=1, keepdims=True)
    n = len(p)
    if p.ndim != 2 or n < splits:
        raise ValueError(f"probs must be (N, C) with N >= splits={splits}; got {p.shape}")
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        py = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------- cached statistics


def save_statistics(path, stats: FeatureStatistics, **meta) -> str:
    """Write ``path`` (npz: mu, sigma, num_samples, meta strings) and ``path + '.sha256'``;
    returns the checksum."""
    extra = {f"meta_{k}": np.asarray(str(v)) for k, v in meta.items()}
    return save_npz_with_checksum(path, dict(mu=stats.mu, sigma=stats.sigma,
                                             num_samples=np.int64(stats.num_samples), **extra))


def load_statistics(path, sha256: str | None = None) -> FeatureStatistics:
    """Load statistics, verifying ``sha256`` (given, else the ``.sha256`` side file if any).
    Also reads pytorch-fid / ADM style npz files (``mu``, ``sigma``)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"statistics file {path!r} does not exist")
    verify_sha256(path, sha256)
    with np.load(path) as z:
        n = int(z["num_samples"]) if "num_samples" in z else -1
        return FeatureStatistics(z["mu"].astype(np.float64), z["sigma"].astype(np.float64), n)


def reference_statistics(source: Iterable | np.ndarray, feature_fn: Callable | None = None, *,
                         cache_path=None, max_samples: int | None = None,
                         **meta) -> FeatureStatistics:
    """Statistics of a reference set from any data source, cached with a checksum.

    ``source``: an array ``(N, ...)`` or an iterable of batches (arrays, or tuples whose first
    element is the images, e.g. a grain / tfds iterator). ``feature_fn`` maps a batch to
    ``(B, D)`` features (e.g. ``InceptionV3.pool3``); ``None`` means the source already yields
    features. With ``cache_path``: an existing file whose checksum verifies is returned as is;
    otherwise the statistics are computed and written with their ``.sha256``. A corrupted cache
    raises rather than being silently recomputed.
    """
    if cache_path is not None and os.path.exists(cache_path):
        return load_statistics(cache_path)
    batches = [source] if isinstance(source, np.ndarray) else source
    feats, count = [], 0
    for b in batches:
        if isinstance(b, (tuple, list)):
            b = b[0]
        elif isinstance(b, dict):
            b = b["image"]
        f = np.asarray(feature_fn(b) if feature_fn is not None else b, np.float64)
        f = f.reshape(len(f), -1)
        if max_samples is not None:
            f = f[:max_samples - count]
        feats.append(f)
        count += len(f)
        if max_samples is not None and count >= max_samples:
            break
    stats = compute_statistics(np.concatenate(feats))
    if cache_path is not None:
        save_statistics(cache_path, stats, **meta)
    return stats
