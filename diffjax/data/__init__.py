"""Data: toy 2-D sets, embedded real images, sources (TFDS / folders / latents), grain loaders.

Quick use::

    from diffjax import data
    src = data.get_source('digits')                      # 1,797 real 8x8 digits, offline
    loader = data.make_loader(src, batch_size=128, seed=0)
    batch = next(loader)          # {'image': (128, 8, 8, 1) float32 in [-1, 1], 'label': (128,)}
    state = loader.get_state()    # bytes; save beside the checkpoint, later loader.set_state(state)

    x = data.toy.gmm_small(10_000, seed=0)              # (10000, 2) float32

Modules: :mod:`~diffjax.data.toy`, :mod:`~diffjax.data.embedded`,
:mod:`~diffjax.data.sources`, :mod:`~diffjax.data.preprocess`,
:mod:`~diffjax.data.pipeline` (imported on first use, as it pulls in grain).
"""

from diffjax.data import embedded, preprocess, sources, toy
from diffjax.data.embedded import load_digits, load_faces
from diffjax.data.preprocess import (
    center_crop,
    center_crop_resize,
    denormalize_latents,
    latent_channel_stats,
    normalize_latents,
    random_flip,
    resize,
    to_float,
    to_uint8,
)
from diffjax.data.sources import (
    ArraySource,
    DataSource,
    ImageFolderSource,
    ResizedSource,
    LatentsSource,
    TFDSSource,
    get_source,
    read_image,
)
from diffjax.data.toy import TOY_DATASETS, sample_toy

_PIPELINE_NAMES = (
    "Loader",
    "make_loader",
    "default_transforms",
    "shard_batch",
    "ScaleImage",
    "CenterCropResize",
    "RandomFlip",
    "NormalizeLatents",
    "MapImage",
    "FinalizeRecord",
)

__all__ = [
    "embedded",
    "preprocess",
    "sources",
    "toy",
    "pipeline",
    "load_digits",
    "load_faces",
    "center_crop",
    "center_crop_resize",
    "denormalize_latents",
    "latent_channel_stats",
    "normalize_latents",
    "random_flip",
    "resize",
    "to_float",
    "to_uint8",
    "ArraySource",
    "DataSource",
    "ImageFolderSource",
    "ResizedSource",
    "LatentsSource",
    "TFDSSource",
    "get_source",
    "read_image",
    "TOY_DATASETS",
    "sample_toy",
    *_PIPELINE_NAMES,
]


def __getattr__(name):
    if name == "pipeline" or name in _PIPELINE_NAMES:
        import importlib

        pipeline = importlib.import_module("diffjax.data.pipeline")
        return pipeline if name == "pipeline" else getattr(pipeline, name)
    raise AttributeError(f"module 'diffjax.data' has no attribute {name!r}")
