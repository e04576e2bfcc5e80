"""The ``:smoke`` variant of a recipe: the one helper config files import."""

from __future__ import annotations

__all__ = ["smoke_variant", "latent_smoke"]


def smoke_variant(config, model: dict, data: dict | None = None, *, batch_size: int = 16,
                  sample_steps: int | None = 4):
    """Shrink a recipe config in place to its seconds-long ``:smoke`` variant.

    ``model``: the tiny network; ``data``: a replacement data section (e.g. the embedded
    digits), else the recipe's own with ``batch_size`` (``data.batch_size``: the global batch,
    split over hosts by the loader). Training: 4 steps, no warm-up, a
    checkpoint at the end, one device; sampling: ``sample_steps`` steps, 4 samples.

    EMAs are shortened to an average over ~100 steps (decay 0.99; EDM's half-life to the same
    number of steps at the smoke batch): a recipe's 0.9999 averages over 10,000 steps, so a
    user who lengthens the smoke to a few hundred steps on their own images would otherwise
    sample weights still at their initialisation, i.e. noise.
    """
    config.model = model
    if data is not None:
        config.data = data
    config.data.batch_size = batch_size
    config.optim.warmup_steps = 0
    for name, spec in (config.get("ema") or {}).items():
        if isinstance(spec, (int, float)):
            config.ema[name] = min(float(spec), 0.99)
        elif spec.get("halflife_kimg") is not None:  # 69 steps' half-life = decay 0.99
            config.ema[name].halflife_kimg = 0.069 * batch_size
    config.train = dict(num_steps=4, log_every=2, save_every=4, max_to_keep=1, sample_every=0)
    if sample_steps is not None:
        config.sample.num_steps = sample_steps
    config.sample.num_samples = 4
    config.mesh = dict(data=1, fsdp=1)
    return config


def latent_smoke(config, vae_preset: str = "tiny"):
    """The latent recipes' smoke data path: 64 embedded digits at 32x32 -> a tiny random
    VAE (``vae_preset``: ``tiny`` gives 8x8x4 latents, ``tiny_f16`` 8x8x8) -> latent shards
    written by ``python -m diffjax encode``; sample and eval decode through the same VAE."""
    config.vae = dict(preset=vae_preset, in_channels=1, out_channels=1, weights="", seed=0)
    config.encode = dict(data="digits", split="train", image_size=32, batch_size=2,
                         examples_per_shard=32, flip=False, posterior="mean", output="",
                         max_examples=64)
    return config
