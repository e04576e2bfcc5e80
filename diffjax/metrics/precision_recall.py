"""Improved precision and recall (Kynkäänniemi et al. 2019, arXiv 1904.06991), k = 3.

Each set is a union of hyperspheres: around every feature vector, a ball whose radius is the
distance to its k-th nearest neighbour within its own set (the point itself excluded). Precision:
the fraction of generated samples inside the real manifold; recall: the fraction of real samples
inside the generated manifold. As in the ADM evaluator (``ManifoldEstimator``), a point lies in
the manifold when ``d(x, y)^2 <= radius(y)^2`` for some y. Distances in float64 numpy, in row
blocks (memory ``O(block * N)``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["manifold_radii", "in_manifold", "precision_recall"]


def _sqdist(a, b):
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def manifold_radii(features, k: int = 3, block: int = 2048) -> np.ndarray:
    """Squared distance of each row to its k-th nearest other row, ``(N,)``."""
    f = np.asarray(features, np.float64).reshape(len(features), -1)
    if not 1 <= k < len(f):
        raise ValueError(f"k={k} needs at least k + 1 = {k + 1} points; got {len(f)}")
    out = np.empty(len(f))
    for s in range(0, len(f), block):
        d = _sqdist(f[s:s + block], f)
        # the k+1-th smallest includes the point itself at distance 0
        out[s:s + block] = np.partition(d, k, axis=1)[:, k]
    return out


def in_manifold(query, manifold, radii, block: int = 2048) -> np.ndarray:
    """Boolean ``(Q,)``: is each query row inside some ball of ``manifold`` (squared ``radii``)."""
    q = np.asarray(query, np.float64).reshape(len(query), -1)
    m = np.asarray(manifold, np.float64).reshape(len(manifold), -1)
    out = np.empty(len(q), bool)
    for s in range(0, len(q), block):
        d = _sqdist(q[s:s + block], m)
        out[s:s + block] = (d <= radii[None, :]).any(axis=1)
    return out


def precision_recall(real_features, fake_features, k: int = 3, block: int = 2048):
    """``(precision, recall)`` of generated ``fake_features`` against ``real_features``."""
    real = np.asarray(real_features, np.float64).reshape(len(real_features), -1)
    fake = np.asarray(fake_features, np.float64).reshape(len(fake_features), -1)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: {real.shape[1]} vs {fake.shape[1]}")
    r_real = manifold_radii(real, k, block)
    r_fake = manifold_radii(fake, k, block)
    precision = float(in_manifold(fake, real, r_real, block).mean())
    recall = float(in_manifold(real, fake, r_fake, block).mean())
    return precision, recall
