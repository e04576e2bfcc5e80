"""The sample-quality metrics on features, sample files made elsewhere, and the report.

Image metrics (:func:`evaluate_images`), all against a :class:`~diffjax.evaluation.
ReferenceFeatures`:

* FID: the Frechet distance of the pool3 Gaussians (Heusel et al. 2017, "GANs Trained by a
  Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"; :func:`diffjax.metrics.
  frechet_distance`). Biased upward at small N (roughly ``+c/N``), so a number is comparable
  only at the same N (papers report N = 50,000, "FID-50k"); the report always states N.
* IS: the Inception Score ``exp E_x KL(p(y|x) || p(y))`` over 10 splits, mean and std
  (Salimans et al. 2016, "Improved Techniques for Training GANs").
* sFID: the same Frechet distance on the 2023-d spatial features (Nash et al. 2021,
  "Generating Images with Sparse Representations").
* improved precision / recall with k = 3 on pool3 (Kynkaanniemi et al. 2019, "Improved
  Precision and Recall Metric for Assessing Generative Models").

Point metrics for low-dimensional data (:func:`evaluate_points`, :mod:`diffjax.metrics.toy`):
sliced Wasserstein-1, MMD (Gretton et al. 2012, "A Kernel Two-Sample Test") and the energy
distance (Szekely & Rizzo 2013).

:func:`load_samples` reads samples made by another program (a folder of PNG/JPEG files, or the
``.npz`` of the ADM evaluator); :func:`write_report` writes ``eval.json`` and ``eval.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffjax.evaluation.features import IMAGE_METRICS, FeatureSpace, extract_features
from diffjax.evaluation.reference import ReferenceFeatures, load_reference, reference_features
from diffjax.metrics.fid import compute_statistics, inception_score

__all__ = ["POINT_METRICS", "evaluate_images", "evaluate_points", "load_samples",
           "write_report"]

#: metric names for low-dimensional points
POINT_METRICS = ("sw1", "mmd", "energy")


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
        precomputed features (a dict from :func:`~diffjax.evaluation.extract_features`).
      reference: a :class:`~diffjax.evaluation.ReferenceFeatures`, a path of a cached /
        ``mu``-``sigma`` npz, or an image array (featurised here, not cached).
      metrics: a subset of :data:`~diffjax.evaluation.IMAGE_METRICS`.
      features: the feature space (the same one the reference was computed in).
      is_splits: Inception Score splits (10 in the papers).
      pr_k: the k of improved precision/recall (3 in the papers).
      quantize_mode: how float images become uint8 (:func:`~diffjax.evaluation.quantize`).
      progress: print progress lines.

    Returns:
      ``{'num_samples', 'num_reference', 'features', 'comparable_to_papers', 'fid', 'is',
      'is_std', 'sfid', 'precision', 'recall'}`` (the requested ones).

    Raises:
      ValueError: unknown metrics, a metric the feature space cannot give (``is`` needs logits,
        ``sfid`` spatial features), ``sfid`` against a reference without spatial statistics,
        ``pr`` against a statistics-only reference.
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
    """Metrics of low-dimensional ``samples`` against ``reference``.

    ``sw1`` (sliced Wasserstein-1) uses all points; ``mmd`` (unbiased MMD^2, RBF kernel with
    the median heuristic) and ``energy`` (energy distance) use at most ``max_kernel_points``
    of each set (a seeded subsample: they are ``O(N^2)`` in memory).

    Args:
      samples: ``(N, D)`` points.
      reference: ``(M, D)`` points.
      metrics: a subset of :data:`POINT_METRICS`.
      max_kernel_points: the kernel metrics' subsample size.
      seed: the subsample's seed (equal sets of equal size keep equal subsamples).

    Returns:
      ``{'num_samples', 'num_reference', 'sw1', 'mmd', 'energy'}`` (the requested ones).

    Raises:
      ValueError: unknown metrics, or sets of different dimension.
    """
    from diffjax.metrics.toy import energy_distance, mmd, sliced_wasserstein

    metrics = _check_metrics(metrics, POINT_METRICS, "point")
    x = np.asarray(samples, np.float64).reshape(len(samples), -1)
    y = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} dims, reference {y.shape[1]}")

    def sub(a):  # a fresh generator per set: equal sets of equal size keep equal subsamples
        if len(a) <= max_kernel_points:
            return a
        return a[np.random.default_rng(seed).choice(len(a), max_kernel_points, replace=False)]

    xs, ys = sub(x), sub(y)
    out: dict[str, Any] = {"num_samples": len(x), "num_reference": len(y)}
    if "sw1" in metrics:
        out["sw1"] = float(sliced_wasserstein(x, y))
    if "mmd" in metrics:
        out["mmd"] = mmd(xs, ys)
    if "energy" in metrics:
        out["energy"] = energy_distance(xs, ys)
    return out


# ---------------------------------------------------------------- files


def load_samples(path) -> np.ndarray:
    """Samples made elsewhere, from a folder of PNG/JPEG files or an ``.npz`` / ``.npy``.

    * folder: every ``*.png``/``*.jpg``/``*.jpeg`` below it (sorted by path), decoded with
      Pillow by :func:`diffjax.data.sources.read_image` as uint8 with the channels as stored
      (grey stays grey; alpha is dropped, not composited); all must have one shape.
    * ``.npz``: the array under ``samples`` (diffjax's ``samples.npz``) or ``arr_0`` (ADM /
      ``np.savez`` without names); ``.npy``: the array.

      - ``uint8`` ``(N, H, W, C)`` or ``(N, H, W)``: pixels 0..255 (returned as ``(N, H, W, C)``).
      - floating ``(N, H, W, C)``: read as ``[-1, 1]`` (diffjax's convention); quantised later,
        values outside are clipped. An array whose maximum exceeds 1.5 is refused (0..255 stored
        as floats: cast it to uint8 first).
      - floating ``(N, D)``: low-dimensional points, returned as float64.

    Args:
      path: the folder or file.

    Returns:
      uint8 ``(N, H, W, C)``, float32 ``(N, H, W, C)`` in ``[-1, 1]``, or float64 ``(N, D)``.

    Raises:
      FileNotFoundError: no such path / no images in the folder.
      ValueError: an npz without ``samples``/``arr_0``, a bad dtype or shape (NCHW arrays are
        refused with a hint), images of different shapes, a file that cannot be decoded (the
        message names it).
    """
    from diffjax.data.sources import IMAGE_EXTENSIONS, read_image

    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"images={os.fspath(path)!r} does not exist (a folder of "
                                "PNG/JPEG files or an .npz/.npy)")
    if p.is_dir():
        files = sorted(q for q in p.rglob("*")
                       if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
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
    """Write ``<name>.json`` and ``<name>.md`` to ``workdir``.

    The JSON is ``{'metrics': results, 'protocol': protocol}``; the Markdown a metric / value
    table, then the protocol (N, feature space and weights, sampler and steps, guidance,
    reference set...), and a warning when ``protocol['comparable_to_papers']`` is ``False``.

    Args:
      workdir: the folder (created if missing).
      results: the metrics (numbers go in the table).
      protocol: how they were obtained.
      name: the files' stem.

    Returns:
      ``(json_path, markdown_path)``.
    """
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
