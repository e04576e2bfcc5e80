"""Sample-quality metrics: FID / sFID / IS with the FID Inception, improved precision/recall,
LPIPS, and metrics for low-dimensional toy data. Everything except :mod:`.inception` and
:mod:`.lpips` is numpy/scipy.

The networks (Flax) are imported lazily: ``diffjax.metrics.inception`` / :func:`load_inception`
and ``diffjax.metrics.lpips`` / :func:`load_lpips`, :class:`LPIPS`, :func:`lpips_metric`.
"""

from diffjax.metrics import classifier_score, fid, precision_recall, toy
from diffjax.metrics.classifier_score import fit_classifier
from diffjax.metrics.fid import (
    FeatureStatistics,
    compute_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    load_statistics,
    reference_statistics,
    save_statistics,
)
from diffjax.metrics.precision_recall import precision_recall as improved_precision_recall
from diffjax.metrics.toy import energy_distance, exact_log_prob, exact_nll, mmd, sliced_wasserstein

__all__ = [
    "classifier_score", "fid", "precision_recall", "toy", "inception", "fit_classifier",
    "FeatureStatistics", "compute_statistics", "fid_from_features", "frechet_distance",
    "inception_score", "load_statistics", "reference_statistics", "save_statistics",
    "improved_precision_recall", "energy_distance", "exact_log_prob", "exact_nll", "mmd",
    "sliced_wasserstein", "load_inception",
    "lpips", "LPIPS", "load_lpips", "lpips_metric",
]


def __getattr__(name):
    if name in ("inception", "load_inception"):
        import importlib

        mod = importlib.import_module("diffjax.metrics.inception")  # sets the attribute
        return mod if name == "inception" else mod.load_inception
    if name in ("lpips", "LPIPS", "load_lpips", "lpips_metric"):
        import importlib

        mod = importlib.import_module("diffjax.metrics.lpips")  # sets the attribute
        return mod if name == "lpips" else getattr(mod, name)
    raise AttributeError(f"module 'diffjax.metrics' has no attribute {name!r}")
