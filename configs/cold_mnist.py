"""Cold Diffusion (Bansal et al. 2022, arXiv 2208.09392): deblurring MNIST, T = 20.

Command:  python -m diffjax train --config=configs/cold_mnist.py --workdir=workdir/cold_mnist
          --config.data.data_dir=/path/to/tfds
Hardware: the reference trains 700k steps at batch 32 (one GPU); a CPU run of a few thousand
          steps already deblurs (see experiments/cold_diffusion_digits.py on 16x16 digits).
Data:     MNIST train (TFDS), 28x28x1, x0 in [-1, 1].
Model:    a 3-level DDPM UNet (28 -> 14 -> 7) predicting x0, fed the reference's index s - 1
          (``time_input='ddpm_index'`` over the process's T = 20 points, otherwise unused).
Training: the README's MNIST command: ``--blur_routine Constant --blur_size 11 --blur_std 7.0
          --time_steps 20``: 20 cumulative 11x11 Gaussian blurs of std 7, circular padding; L1;
          Adam 2e-5, EMA 0.995.
Samples:  restoration only (no ``--discrete`` in that command): ``method.sample`` raises;
          restore with ``diffjax.samplers.cold.cold_sample``.
Paper number: deblurring MNIST, Table 1 of the paper (not verified here).
`:smoke` is a tiny UNet on the embedded 8x8 digits, T = 4, flat-start generation on.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="ddpm_linear", num_steps=20)
    c.model = dict(name="unet", image_size=28, in_channels=1, ch=64, ch_mult=(1, 2, 2),
                   num_res_blocks=2, attn_resolutions=(7,), dropout=0.0, norm_groups=32,
                   time_input="ddpm_index", prediction="x0")
    c.method = dict(name="cold", degradation="blur", num_steps=20,
                    degradation_kwargs=dict(routine="constant", kernel_size=11, kernel_std=7.0,
                                            padding="circular"),
                    loss_type="l1", algorithm="improved", colour_means=((-0.74,),))
    c.data = dict(name="mnist", split="train", batch_size=64, data_dir="")
    c.optim = dict(name="adam", lr=2e-5, warmup_steps=0, grad_clip=1.0)
    c.ema = dict(ema=0.995)
    c.train = dict(num_steps=700_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(num_samples=64, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(name="unet", image_size=8, in_channels=1, ch=16, ch_mult=(1,),
                      num_res_blocks=1, attn_resolutions=(), dropout=0.0, norm_groups=8,
                      time_input="ddpm_index", prediction="x0"),
                      data=dict(name="digits", split="train"), sample_steps=None)
        c.process.num_steps = 4
        c.method.update(num_steps=4, degradation_kwargs=dict(
            routine="constant", kernel_size=3, kernel_std=7.0, discrete=True))
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
