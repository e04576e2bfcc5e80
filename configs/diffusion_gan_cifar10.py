"""Diffusion-GAN (Wang, Zheng, He, Chen & Zhou, ICLR 2023) on CIFAR-10 around a DCGAN generator.

Command:  python -m diffjax train --config=configs/diffusion_gan_cifar10.py
          --workdir=workdir/diffusion_gan_cifar10
Hardware: the paper's Diffusion-StyleGAN2 CIFAR-10 run used 4 GPUs for 50M images (``--kimg
          50000``); this DCGAN-sized recipe: about a day on one modern GPU [estimate].
Data:     TFDS ``cifar10`` train split (needs ``tfds build cifar10`` once), 32x32x3 in [-1, 1].
Model:    a DCGAN-like generator z (64) -> 32x32x3 (``dcgan``); the paper's number is for
          StyleGAN2, the documented generator slot (any G(z) with ``nz`` plugs in). Discriminator:
          a timestep-conditioned conv net D(y, t).
Training: instance-noise diffusion of real and fake images (linear betas 1e-4..2e-2 over T
          steps, noise_std 0.05), timestep pool with ``priority`` sampling, T adapted in
          [10, 1000] every 4 steps towards r_d = 0.6 (ada_kimg 100); non-saturating losses, R1
          gamma 0.01 every 16 steps (scaled by 16); Adam (0, 0.99) lr 0.0025 for both networks
          (StyleGAN2's CIFAR settings); EMA 0.999; G step then D step in each iteration.
Samples:  one generator call per image, EMA weights.
Paper number: Diffusion-StyleGAN2 CIFAR-10 FID 3.19 (the paper's README); not expected with
          this generator. `:smoke` trains a tiny generator on the embedded 8x8 digits.
"""

import ml_collections


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="dcgan", nz=64, image_size=32, in_channels=3, ch=128)
    c.method = dict(name="diffusion_gan", beta_start=1e-4, beta_end=2e-2, t_min=10, t_max=1000,
                    noise_std=0.05, ts_dist="priority", d_target=0.6, ada_interval=4,
                    ada_kimg=100.0, r1_gamma=0.01, lazy_reg=16, lr_g=0.0025, lr_d=0.0025,
                    beta1=0.0, beta2=0.99, ema_decay=0.999, d_width=64, d_depth=3)
    c.data = dict(name="cifar10", split="train", batch_size=64, flip=True, data_dir="")
    c.train = dict(num_steps=781_250, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(num_samples=256, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        c.model = dict(name="dcgan", nz=8, image_size=8, in_channels=1, ch=8, groups=4)
        c.method.update(d_width=8, d_depth=1, lazy_reg=2, t_max=20)
        c.data = dict(name="digits", split="train", batch_size=8, flip=False)
        c.train = dict(num_steps=4, log_every=2, save_every=4, max_to_keep=1, sample_every=0)
        c.sample.num_samples = 4
        c.mesh = dict(data=1, fsdp=1)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
