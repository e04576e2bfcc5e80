"""Video data: a generated bouncing-squares set (offline) and TFDS video sets with frame striding.

* :func:`moving_shapes` draws clips of squares bouncing inside the frame, deterministic from a
  seed, and returns the objects' positions with them (the ground truth that the extension
  experiment scores predicted motion against); :func:`object_position` recovers a square's
  position from a frame (its intensity centroid).
* :class:`TFDSVideoSource` reads ``ucf101`` or ``bair_robot_pushing_small`` (or any TFDS set with
  a video feature) through ``tfds.data_source`` -- no TensorFlow needed -- and cuts one clip of
  ``num_frames`` frames every ``frame_stride`` frames from each record; it plugs into
  :func:`diffjax.data.make_loader` (grain) like any image source, records ``{'image': (F, H, W,
  C) uint8}``.

Video Diffusion Models (Ho et al. 2022, sec. 4) train on 16-frame UCF101 clips at 64x64 and on
BAIR robot pushing (64x64, 1 conditioning frame, 15 generated), frame skip 1.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["moving_shapes", "object_position", "TFDSVideoSource", "VIDEO_KEYS", "clip_starts"]

#: the video feature of the TFDS sets we know (others: pass ``video_key``)
VIDEO_KEYS = {"ucf101": "video", "bair_robot_pushing_small": "image_main", "kinetics": "video"}


def moving_shapes(n: int, *, num_frames: int = 8, size: int = 16, square: int = 4,
                  num_objects: int = 1, max_speed: int = 2, channels: int = 1,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Clips of bright squares bouncing off the walls of a dark frame.

    Each square starts at a uniform integer position with an integer velocity ``(vy, vx)``,
    each component uniform in ``{-max_speed, ..., max_speed} \\ {0}``, and moves by it every
    frame; a square that would leave the frame is reflected off the wall (position and velocity
    component mirrored). Pixels are ``+1`` on a square and ``-1`` elsewhere (the data range
    ``[-1, 1]`` of diffjax), every channel equal.

    Args:
      n: number of clips.
      num_frames: frames per clip.
      size: frame side ``H = W``.
      square: square side in pixels.
      num_objects: squares per clip (overlaps are allowed; pixels stay ``+1``).
      max_speed: largest speed per axis (pixels per frame).
      channels: channels of the frames.
      seed: the clips are a function of all arguments and this seed.

    Returns:
      ``{'videos': (n, F, size, size, channels) float32, 'positions': (n, F, num_objects, 2)
      float32 centres (row, column) in pixels, 'velocities': (n, F, num_objects, 2) the
      velocity leaving each frame}``.
    """
    for name, v, lo in (("n", n, 1), ("num_frames", num_frames, 1), ("square", square, 1),
                        ("num_objects", num_objects, 1), ("max_speed", max_speed, 1),
                        ("channels", channels, 1)):
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}; got {v!r}")
    if size <= square + 2 * max_speed:
        raise ValueError(f"size={size} must exceed square + 2 max_speed = "
                         f"{square + 2 * max_speed} (room to bounce)")
    rng = np.random.default_rng(seed)
    hi = size - square  # top-left corner lives in [0, hi]
    pos = rng.integers(0, hi + 1, size=(n, num_objects, 2))
    speeds = rng.integers(1, max_speed + 1, size=(n, num_objects, 2))
    vel = speeds * rng.choice(np.array([-1, 1]), size=(n, num_objects, 2))
    positions = np.zeros((n, num_frames, num_objects, 2), np.float32)
    velocities = np.zeros_like(positions)
    videos = -np.ones((n, num_frames, size, size, channels), np.float32)
    ii = np.arange(size)
    for f in range(num_frames):
        positions[:, f] = pos + (square - 1) / 2.0
        on = np.zeros((n, size, size), bool)
        for o in range(num_objects):
            rows = (ii[None] >= pos[:, o, :1]) & (ii[None] < pos[:, o, :1] + square)
            cols = (ii[None] >= pos[:, o, 1:]) & (ii[None] < pos[:, o, 1:] + square)
            on |= rows[:, :, None] & cols[:, None, :]
        videos[:, f][on] = 1.0
        nxt = pos + vel
        low, high = nxt < 0, nxt > hi  # reflect off the walls
        nxt = np.where(low, -nxt, np.where(high, 2 * hi - nxt, nxt))
        vel = np.where(low | high, -vel, vel)
        velocities[:, f] = vel
        pos = nxt
    return {"videos": videos, "positions": positions, "velocities": velocities}


def object_position(frames: Any) -> np.ndarray:
    """The intensity centroid ``(row, column)`` of each frame (one square: its centre).

    Args:
      frames: ``(..., H, W, C)`` in ``[-1, 1]`` (values are clipped to it); a frame's weight map
        is ``(x + 1) / 2`` averaged over channels.

    Returns:
      ``(..., 2)`` float64 centroids; ``nan`` for an all-dark frame.
    """
    x = np.asarray(frames, np.float64)
    if x.ndim < 3:
        raise ValueError(f"frames must be (..., H, W, C); got shape {x.shape}")
    w = (np.clip(x, -1.0, 1.0).mean(axis=-1) + 1.0) / 2.0
    h, wd = w.shape[-2:]
    tot = w.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (w * np.arange(h)[:, None]).sum(axis=(-2, -1)) / tot
        c = (w * np.arange(wd)[None, :]).sum(axis=(-2, -1)) / tot
    return np.stack([r, c], axis=-1)


def clip_starts(length: int, num_frames: int, frame_stride: int) -> np.ndarray:
    """First frames of the clips cut from a video of ``length`` frames: a clip spans
    ``(num_frames - 1) * frame_stride + 1`` frames and a new clip starts every
    ``num_frames * frame_stride`` frames (non-overlapping); at least one clip (from frame 0)."""
    span = (num_frames - 1) * frame_stride + 1
    if length < span:
        raise ValueError(f"a video of {length} frames is shorter than one clip of num_frames="
                         f"{num_frames} at frame_stride={frame_stride} ({span} frames)")
    return np.arange(0, length - span + 1, num_frames * frame_stride)


class TFDSVideoSource:
    """Clips of a TFDS video set through ``tfds.data_source`` (no TensorFlow).

    Record ``k`` is the ``k``-th clip: the TFDS records are read in order and each contributes
    :func:`clip_starts` clips (frames ``s, s + frame_stride, ...``). The clip index is built
    from the records' lengths when the source opens (TFDS video sets store fixed or
    per-record frame counts; reading them touches every record once).

    Args:
      name: TFDS name (``'ucf101'``, ``'bair_robot_pushing_small'``, ...).
      split: TFDS split.
      num_frames: frames per clip.
      frame_stride: keep every ``frame_stride``-th frame.
      video_key: the video feature (default from :data:`VIDEO_KEYS`, else ``'video'``).
      label_key: a label feature to pass on (``'label'`` for UCF101), or ``None``.
      data_dir: the TFDS data directory.
      max_records: read only the first records (tests, demos).
    """

    def __init__(self, name: str, split: str = "train", *, num_frames: int = 16,
                 frame_stride: int = 1, video_key: str | None = None,
                 label_key: str | None = None, data_dir: str | os.PathLike | None = None,
                 max_records: int | None = None):
        if num_frames < 1 or frame_stride < 1:
            raise ValueError(f"num_frames and frame_stride must be >= 1; got {num_frames}, "
                             f"{frame_stride}")
        import tensorflow_datasets as tfds

        self.name, self.split = name, split
        self.num_frames, self.frame_stride = int(num_frames), int(frame_stride)
        self.video_key = video_key or VIDEO_KEYS.get(name.split("/")[0], "video")
        self.label_key = label_key
        try:
            self._ds = tfds.data_source(name, split=split, data_dir=data_dir)
        except Exception as e:  # tfds raises assorted errors for unprepared sets
            raise FileNotFoundError(f"TFDS set {name!r} split {split!r} is not prepared under "
                                    f"data_dir={data_dir!r} ({type(e).__name__}: {e})") from e
        n = len(self._ds) if max_records is None else min(len(self._ds), int(max_records))
        index = []
        for r in range(n):
            rec = self._ds[r]
            if self.video_key not in rec:
                raise ValueError(f"TFDS set {name!r} has no video feature {self.video_key!r} "
                                 f"(features: {sorted(rec)}); pass video_key=")
            for s in clip_starts(len(rec[self.video_key]), self.num_frames, self.frame_stride):
                index.append((r, int(s)))
        self._index = np.asarray(index, np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return int(self._index.shape[0])

    def __getitem__(self, index) -> dict[str, Any]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        r, s = self._index[i]
        rec = self._ds[int(r)]
        stop = s + (self.num_frames - 1) * self.frame_stride + 1
        out = {"image": np.asarray(rec[self.video_key][s:stop:self.frame_stride])}
        if self.label_key is not None:
            out["label"] = np.int32(rec[self.label_key])
        return out

    def __repr__(self) -> str:
        return (f"TFDSVideoSource({self.name!r}, split={self.split!r}, clips={len(self)}, "
                f"num_frames={self.num_frames}, frame_stride={self.frame_stride})")
