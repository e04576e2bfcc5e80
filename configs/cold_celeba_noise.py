"""Cold Diffusion's "hot" baseline (Bansal et al. 2022, arXiv 2208.09392, sec. 5.2):
generation by undoing Gaussian noise with a restoration network, CelebA 128x128, T = 200.

Command:  python -m diffjax train --config=configs/cold_celeba_noise.py
          --workdir=workdir/cold_celeba_noise --config.data.data_dir=/path/to/tfds
Hardware: the reference's ``celebA_noise_128.py --time_steps 200`` (days on a GPU).
Data:     CelebA (TFDS ``celeb_a``), centre-cropped and resized to 128, x0 in [-1, 1].
Model:    a 6-level DDPM UNet at 128 predicting x0 (the reference uses lucidrains' ConvNeXt
          UNet: this network differs), fed the reference's index s - 1.
Training: D(x0, s; z) = sqrt(abar_s) x0 + sqrt(1 - abar_s) z on the cosine table (lucidrains',
          ``DiscreteVP.cosine(200)``), z ~ N(0, I) per example; L1 on x0; Adam 2e-5,
          EMA 0.995.
Samples:  Algorithm 2 from x_T ~ N(0, I); ``method.noise='fixed'`` keeps z = x_T (the
          reference's ``x0_step_down``), ``'estimated'`` is its ``ddim`` routine (DDIM eta = 0
          with an x0 network).
Paper number: CelebA 128 generation FID of the noise model with Algorithms 1 and 2 (paper
          Table 6; not verified here).
`:smoke` is a tiny UNet on the embedded 8x8 digits, T = 4.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="ddpm_cosine", num_steps=200)  # the network's index range
    c.model = dict(name="unet", image_size=128, ch=128, ch_mult=(1, 1, 2, 2, 4, 4),
                   num_res_blocks=2, attn_resolutions=(16,), dropout=0.0,
                   time_input="ddpm_index", prediction="x0")
    c.method = dict(name="cold", degradation="noise", num_steps=200, loss_type="l1",
                    algorithm="improved", noise="estimated")
    c.data = dict(name="celeb_a", split="train", batch_size=32, image_size=128, flip=True,
                  data_dir="")
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
        c.method.update(num_steps=4)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
