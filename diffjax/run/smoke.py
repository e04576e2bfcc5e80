"""The ``:smoke`` variant of a recipe: the one helper config files import."""

from __future__ import annotations

__all__ = ["smoke_variant"]


def smoke_variant(config, model: dict, data: dict | None = None, *, batch_size: int = 16,
                  sample_steps: int | None = 4):
    """Shrink a recipe config in place to its seconds-long ``:smoke`` variant.

    ``model``: the tiny network; ``data``: a replacement data section (e.g. the embedded
    digits), else the recipe's own with ``batch_size``. Training: 4 steps, no warm-up, a
    checkpoint at the end, one device; sampling: ``sample_steps`` steps, 4 samples.
    """
    config.model = model
    if data is not None:
        config.data = data
    config.data.batch_size = batch_size
    config.optim.warmup_steps = 0
    config.train = dict(num_steps=4, log_every=2, save_every=4, max_to_keep=1, sample_every=0)
    if sample_steps is not None:
        config.sample.num_steps = sample_steps
    config.sample.num_samples = 4
    config.mesh = dict(data=1, fsdp=1)
    return config
