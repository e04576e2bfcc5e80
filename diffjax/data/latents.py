"""Sharded latent data sets written by ``python -m diffjax encode`` (:mod:`diffjax.run.encode`).

Layout of a latent folder (one per data set; 1.28 M ImageNet images at 32x32x4 float32 are
about 21 GB, so no single file and nothing held in memory):

* ``shard-00000.latents.npy`` ``(n, h, w, c)`` float32, ``shard-00000.labels.npy`` ``(n,)``
  int32 (when the data set is labelled) and, with flips, ``shard-00000.flip.npy`` (the
  latents of the horizontally flipped images). Shard ``i`` holds records
  ``[i * examples_per_shard, (i + 1) * examples_per_shard)`` of the image data set. Each file
  is written under a temporary name and renamed when complete; the ``.latents.npy`` file is
  renamed last, so its presence marks a finished shard (a restart skips it).
* ``latents_index.json``: the shard list, shapes, ``examples_per_shard``, the VAE and its
  ``scaling_factor`` / ``shift_factor``, and per-channel ``mean`` / ``std`` of the stored
  latents (for LightningDiT-style normalisation).

:class:`LatentShardsSource` serves the folder as a grain random-access source, memory-mapping
each shard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INDEX_NAME", "shard_paths", "read_index", "is_latent_folder",
           "LatentShardsSource"]

#: the index file of a latent folder
INDEX_NAME = "latents_index.json"


def shard_paths(folder: str | os.PathLike, i: int) -> dict[str, Path]:
    """The files of shard ``i``: ``latents``, ``labels`` and ``flip``."""
    folder = Path(folder)
    return {k: folder / f"shard-{i:05d}.{k}.npy" for k in ("latents", "labels", "flip")}


def read_index(folder: str | os.PathLike) -> dict:
    """The parsed ``latents_index.json`` of a latent folder."""
    p = Path(folder) / INDEX_NAME
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist: not a finished latent folder (run "
                                "`python -m diffjax encode` until it reports completion)")
    return json.loads(p.read_text())


def is_latent_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by the encode command."""
    return (Path(path) / INDEX_NAME).is_file()


class LatentShardsSource:
    """Random access to a latent folder (see the module docstring).

    Args:
        folder: The folder holding ``latents_index.json`` and the shards.
        flips: ``'none'`` serves the latents of the original images; ``'append'`` serves
            them and then those of the flipped images (2 N records; DiT's flip augmentation on
            pre-extracted latents). Needs a folder encoded with flips.

    Attributes:
        labels: ``int32`` labels of all records (held in memory, small) or None.
        num_classes: ``max(labels) + 1`` or None.
        mean, std: per-channel statistics of the stored latents (from the index).
        scaling_factor, shift_factor: of the VAE that encoded them.
    """

    def __init__(self, folder: str | os.PathLike, *, flips: str = "none"):
        self.folder = Path(folder).expanduser()
        index = read_index(self.folder)
        if flips not in ("none", "append"):
            raise ValueError(f"LatentShardsSource: flips={flips!r}; expected 'none' or 'append'")
        if flips == "append" and not index.get("flip"):
            raise ValueError(f"LatentShardsSource: flips='append' but {self.folder} was "
                             "encoded without flips (encode.flip=False)")
        self.index, self.flips = index, flips
        self.sizes = np.asarray([s["num_examples"] for s in index["shards"]], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self.n = int(self.starts[-1])
        self._lat: dict[tuple[int, str], np.ndarray] = {}
        if index.get("has_labels"):
            self.labels = np.concatenate([np.load(shard_paths(self.folder, i)["labels"])
                                          for i in range(len(self.sizes))]).astype(np.int32)
            if flips == "append":
                self.labels = np.concatenate([self.labels, self.labels])
            self.num_classes = int(self.labels.max()) + 1
        else:
            self.labels, self.num_classes = None, None
        self.mean = np.asarray(index["mean"], np.float32)
        self.std = np.asarray(index["std"], np.float32)
        self.scaling_factor = float(index.get("scaling_factor", 1.0))
        self.shift_factor = float(index.get("shift_factor", 0.0))

    def _shard(self, i: int, kind: str) -> np.ndarray:
        if (i, kind) not in self._lat:
            self._lat[(i, kind)] = np.load(shard_paths(self.folder, i)[kind], mmap_mode="r")
        return self._lat[(i, kind)]

    def __len__(self) -> int:
        return self.n * (2 if self.flips == "append" else 1)

    def __getitem__(self, index) -> dict[str, Any]:
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"LatentShardsSource: index {index} out of range for {len(self)} "
                             "records")
        kind = "latents"
        if i >= self.n:
            i, kind = i - self.n, "flip"
        s = int(np.searchsorted(self.starts, i, side="right") - 1)
        rec = {"image": np.asarray(self._shard(s, kind)[i - self.starts[s]], np.float32)}
        if self.labels is not None:
            rec["label"] = self.labels[int(index) % len(self)]
        return rec

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(mean, std)`` of the stored latents (from the index)."""
        return self.mean, self.std

    def __repr__(self) -> str:
        # no absolute path: grain compares repr(source) on resume, and data may move hosts
        return (f"LatentShardsSource(folder={self.folder.name!r}, n={len(self)}, "
                f"latent_shape={tuple(self.index['latent_shape'])}, flips={self.flips!r})")
