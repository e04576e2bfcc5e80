"""EDM (Karras et al. 2022) on CIFAR-10, unconditional, DDPM++ architecture (config F).

Command:  python -m diffjax train --config=configs/edm_cifar10.py --workdir=workdir/edm_cifar10
          (FID set: ``sample ... --num_samples=50000``; EDM reports the minimum over 3 seeds).
Hardware: 200 Mimg at batch 512 (390,625 steps); the paper: about 2 days on 8 V100s
          [mem, unverified]; one A100/H100: roughly 4-6 days. Sampling: 35 network evaluations.
Data:     TFDS ``cifar10`` train split (``tfds build cifar10`` once; ``data.data_dir`` for a
          custom TFDS directory), 32x32x3 in [-1, 1], random horizontal flip instead of EDM's
          non-leaking augmentation pipeline (p = 0.12, not in diffjax: expect a slightly worse
          FID than 1.97).
Model:    DDPM++ (``ncsnpp`` preset ``ddpmpp_cifar10`` with EDM's mult (2, 2, 2), 4 blocks,
          attention at 16, dropout 0.13, positional embedding) inside ``EDMPrecond``
          (sigma_data 0.5): D = c_skip x + c_out F(c_in x, c_noise), c_noise = ln(sigma) / 4.
Training: EDM process (sigma 0.002 .. 80); ln sigma ~ N(-1.2, 1.2^2); loss
          lambda(sigma) ||D - y||^2 summed over pixels; Adam 1e-3 (betas 0.9, 0.999, eps 1e-8)
          with a linear ramp-up over 10 Mimg (19,531 steps), batch 512, EMA half-life 500 kimg
          with ramp-up ratio 0.05.
Samples:  Heun's 2nd-order deterministic sampler, 18 Karras steps (rho 7): 35 NFE.
Paper number: CIFAR-10 unconditional FID 1.97 at 35 NFE (EDM README, spec section 8b;
          re-trainings report 2.04-2.08).
`:smoke` swaps in a tiny DDPM++ on the embedded 8x8 digits (no download) for a few steps.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="edm", sigma_min=0.002, sigma_max=80.0, rho=7.0)
    c.model = dict(name="ncsnpp", preset="ddpmpp_cifar10", ch_mult=(2, 2, 2),
                   dropout=0.13, precond="edm", sigma_data=0.5)
    c.loss = dict(name="edm", sigma_data=0.5, p_mean=-1.2, p_std=1.2)
    c.data = dict(name="cifar10", split="train", batch_size=512, flip=True, data_dir="")
    c.optim = dict(name="adam", lr=1e-3, warmup_steps=19_531, b1=0.9, b2=0.999, eps=1e-8)
    c.ema = dict(ema=dict(halflife_kimg=500.0, rampup_ratio=0.05))
    c.train = dict(num_steps=390_625, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(sampler="heun", grid="karras", num_steps=18, num_samples=256, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(name="ncsnpp", preset="ddpmpp_cifar10", image_size=8, in_channels=1,
                      nf=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                      precond="edm", sigma_data=0.5),
                      data=dict(name="digits", split="train", flip=True), sample_steps=3)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
