"""Frechet Video Distance with a pluggable video feature network, and per-frame FID.

FVD (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video", arXiv 1812.01717,
sec. 3) is the Frechet distance between Gaussians fitted to features of real and generated
clips; the paper's features are the logits-layer activations of an I3D network (Carreira &
Zisserman 2017) trained on Kinetics-400. Video Diffusion Models (Ho et al. 2022) report FVD on
BAIR and Kinetics and per-frame FID on UCF101 / text-to-video.

Status: the feature network is an argument (``feature_fn``: ``(B, F, H, W, C)`` in ``[-1, 1]``
-> ``(B, D)``). **The I3D network itself is not implemented in diffjax yet**, and no package on
this machine ships its weights, so no number computed here is comparable with published FVDs.
:func:`frame_difference_features` is an offline stand-in (pixel statistics of frames and of
frame differences) for tests and demos, labelled as such.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from diffjax.metrics.fid import fid_from_features

__all__ = ["frechet_video_distance", "per_frame_fid", "frame_difference_features"]


def _features(videos, feature_fn: Callable, batch_size: int, name: str) -> np.ndarray:
    v = np.asarray(videos, np.float32)
    if v.ndim != 5:
        raise ValueError(f"{name} must be videos (N, F, H, W, C); got shape {v.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    out = [np.asarray(feature_fn(v[i:i + batch_size]), np.float64)
           for i in range(0, len(v), batch_size)]
    f = np.concatenate(out)
    if f.ndim != 2 or len(f) != len(v):
        raise ValueError(f"feature_fn must map (B, F, H, W, C) to (B, D); got {f.shape} for "
                         f"{len(v)} videos")
    return f


def frechet_video_distance(videos_a, videos_b, feature_fn: Callable, *,
                           batch_size: int = 16) -> float:
    """FVD (Unterthiner et al. 2018, eq. 1 with video features): the Frechet distance between
    the feature statistics of two sets of clips.

    Args:
      videos_a / videos_b: ``(N, F, H, W, C)`` clips in ``[-1, 1]``.
      feature_fn: ``(B, F, H, W, C) -> (B, D)`` (I3D logits for the published protocol).
      batch_size: clips per ``feature_fn`` call.
    """
    return fid_from_features(_features(videos_a, feature_fn, batch_size, "videos_a"),
                             _features(videos_b, feature_fn, batch_size, "videos_b"))


def per_frame_fid(videos_a, videos_b, frame_feature_fn: Callable, *,
                  batch_size: int = 64) -> float:
    """FID over all frames of the clips, each frame an image (``frame_feature_fn``:
    ``(B, H, W, C) -> (B, D)``, Inception pool3 for the published protocol)."""
    a, b = np.asarray(videos_a, np.float32), np.asarray(videos_b, np.float32)
    for name, v in (("videos_a", a), ("videos_b", b)):
        if v.ndim != 5:
            raise ValueError(f"{name} must be videos (N, F, H, W, C); got shape {v.shape}")

    def as_clips(v):  # frames as one-frame clips, to reuse the batching and checks
        return v.reshape((-1, 1) + v.shape[2:])

    return frechet_video_distance(as_clips(a), as_clips(b),
                                  lambda x: frame_feature_fn(x[:, 0]), batch_size=batch_size)


def frame_difference_features(videos) -> np.ndarray:
    """Offline stand-in features (NOT comparable with FVD): per clip, the mean and standard
    deviation of each frame's pixels and of each frame-to-frame difference, ``(N, 4F - 2)``."""
    v = np.asarray(videos, np.float64)
    if v.ndim != 5:
        raise ValueError(f"videos must be (N, F, H, W, C); got shape {v.shape}")
    d = np.diff(v, axis=1)
    ax = (2, 3, 4)
    return np.concatenate([v.mean(ax), v.std(ax), d.mean(ax), d.std(ax)], axis=1)
