"""Shortcut model (Frans, Hafner, Levine, Abbeel 2024, arXiv 2410.12557), DiT-B/2 on CelebA-HQ
256x256 as SD-VAE latents, unconditional.

Command:  python -m diffjax train --config=configs/shortcut_dit_b_celebahq256.py
          --workdir=workdir/shortcut_celebahq256 [--config.data.name=/path/to/latents.npz]
Hardware: 410k steps at batch 64 (the reference trained on a TPU v3-8 / v4 [memory,
          unverified]); DiT-B/2 is about 23 Gflops per image: roughly 2-3 days on one H100.
          Sampling: 1, 4 or 128 network evaluations.
Data:     pre-extracted latents, NOT images: an ``.npz`` with ``latents`` (N, 32, 32, 4) float32
          (``stabilityai/sd-vae-ft-mse`` encodings of CelebA-HQ 256, multiplied by 0.18215;
          spec section 3a) and no labels; default ``data/celebahq256_sdvae_latents.npz``.
Model:    DiT-B/2 (depth 12, width 768, 12 heads, patch 2) with a second timestep embedder for
          the step size, fed the integer level log2(1/d) (the reference's encoding, spec
          Appendix B #4); t fed in [0, 1] (``time_input = 'sit'``: data at t = 1);
          c = t_emb + d_emb; no learned sigma; bf16 compute, fp32 parameters.
Training: x_t = (1 - (1 - 1e-5) t) x0 + t x1; M = 128 (7 levels); every 8th row a bootstrap
          (self-consistency) row with deterministic level allocation, targets from the EMA
          network, clipped to [-4, 4]; flow rows at level 7 (d = 1/128, spec Appendix B #3);
          plain MSE; AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.1, constant lr, no
          warm-up, batch 64, 410k steps, EMA 0.999 (bootstrap targets and evaluation).
Samples:  ``method.sample_steps`` Euler steps on the shortcut (1, 4 or 128).
Paper number: CelebA-HQ 256 FID 6.9 / 13.8 / 20.5 at 128 / 4 / 1 steps with the authors' FID
          statistics (reference README, spec section 3b).
`:smoke` is a 1-block DiT on 8x8x4 latents with M = 8; pass a small ``.npz`` (``latents``
          (N, 8, 8, 4)) with --config.data.name.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant

DEFAULT_LATENTS = "data/celebahq256_sdvae_latents.npz"


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long variant (latents path required)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="linear", sigma_min=1e-5)  # the paper's path: sigma = 1e-5 + (1 - 1e-5) t
    c.model = dict(name="dit", preset="DiT-B/2", num_classes=0, class_dropout_prob=0.0,
                   learn_sigma=False, second_scalar=True, time_input="sit", negate_output=True,
                   dtype="bfloat16")
    c.method = dict(name="shortcut", denoise_timesteps=128, bootstrap_every=8,
                    class_dropout_prob=0.1, bootstrap_cfg=False, clip=4.0, bootstrap_ema="ema",
                    sample_steps=1)
    c.loss = dict(name="flow_matching")  # unused: the method brings its loss
    c.data = dict(name=DEFAULT_LATENTS, split="train", batch_size=64, flip=False)
    c.optim = dict(name="adamw", lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.1)
    c.ema = dict(ema=0.999)
    c.train = dict(num_steps=410_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(num_samples=256, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(name="dit", preset="DiT-S/2", input_size=8, in_channels=4,
                      hidden_size=32, depth=1, num_heads=2, num_classes=0,
                      class_dropout_prob=0.0, learn_sigma=False, second_scalar=True,
                      time_input="sit", negate_output=True), sample_steps=None)
        c.method.update(denoise_timesteps=8, bootstrap_every=4, sample_steps=2)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
