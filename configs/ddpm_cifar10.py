"""DDPM (Ho, Jain & Abbeel 2020) on CIFAR-10: the paper's unconditional 32x32 recipe.

Command:  python -m diffjax train --config=configs/ddpm_cifar10.py --workdir=workdir/ddpm_cifar10
          then python -m diffjax sample --config=configs/ddpm_cifar10.py
          --workdir=workdir/ddpm_cifar10 --num_samples=50000 for the FID-50K set.
Hardware: the paper trained on a TPU v3-8 for 800k steps (about 10.6 hours at ~21 steps/s,
          the paper's reported speed [mem, unverified]); one modern GPU (A100/H100): about 1-2
          days. Sampling 50k images with 1000 steps: several GPU-hours.
Data:     TFDS ``cifar10`` train split (50k images, needs ``tfds build cifar10`` once; pass
          ``--config.data.data_dir=...`` for a non-default TFDS directory), 32x32x3 in [-1, 1],
          random horizontal flip.
Model:    DDPM UNet ``unet2d16b2`` (ch 128, mult (1, 2, 2, 2), 2 res blocks, attention at 16x16,
          dropout 0.1, 35.7M parameters), eps-prediction, fed the integer index t in 0..999.
Training: L_simple (eps MSE, mean over pixels), linear betas 1e-4..0.02, T = 1000; Adam 2e-4,
          batch 128, 5000 warm-up steps, gradient clipping 1.0, EMA 0.9999, 800k steps.
Samples:  ancestral sampling over all 1000 steps with sigma_t^2 = beta_t (``fixedlarge``, the
          CIFAR-10 default) and x0 clipped to [-1, 1], EMA weights.
Paper number: CIFAR-10 FID 3.17 and IS 9.46 (50k samples vs. training-set statistics; spec
          section 3b); NLL <= 3.75 bits/dim [mem, unverified]. Without EMA expect FID ~8.
`:smoke` swaps in a tiny UNet on the embedded 8x8 digits (no download) for a few steps.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="ddpm_linear", num_steps=1000)
    c.model = dict(name="unet", preset="ddpm_cifar10", time_input="ddpm_index", prediction="eps")
    c.loss = dict(name="ddpm")
    c.data = dict(name="cifar10", split="train", batch_size=128, flip=True, data_dir="")
    c.optim = dict(name="adam", lr=2e-4, warmup_steps=5000, grad_clip=1.0)
    c.ema = dict(ema=0.9999)
    c.train = dict(num_steps=800_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(sampler="ddpm", step=dict(variance="large"), grid="discrete",
                    num_steps=1000, num_samples=256, ema="ema", clip_x0=1.0)
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(name="unet", image_size=8, in_channels=1, ch=16, ch_mult=(1,),
                      num_res_blocks=1, attn_resolutions=(), dropout=0.0, norm_groups=8,
                      time_input="ddpm_index", prediction="eps"),
                      data=dict(name="digits", split="train", flip=True))
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
