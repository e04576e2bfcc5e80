"""Cold Diffusion (Bansal et al. 2022, arXiv 2208.09392): unconditional generation by
deblurring, CelebA 128x128, T = 300 (paper sec. 5.1).

Command:  python -m diffjax train --config=configs/cold_celeba_blur.py
          --workdir=workdir/cold_celeba_blur --config.data.data_dir=/path/to/tfds
Hardware: the reference's README command (``--discrete --time_steps 300 --blur_size 27
          --blur_std 0.01 --blur_routine Exponential``) trains for days on a GPU; sampling
          takes 300 network evaluations and 2 x 300 cumulative 27x27 blurs per step.
Data:     CelebA (TFDS ``celeb_a``), centre-cropped and resized to 128, x0 in [-1, 1].
Model:    a 6-level DDPM UNet at 128 (``ddpm_256`` widths; the reference uses lucidrains'
          ConvNeXt UNet: this network differs) predicting x0, fed the reference's index s - 1.
Training: D = 300 cumulative 27x27 Gaussian blurs with std exp(0.01 i), circular padding;
          ``discrete``: D(x0, T) is the flat per-channel mean and degraded inputs are
          quantised to 8 bits; L1; Adam 2e-5, EMA 0.995.
Samples:  Algorithm 2 from a flat image whose colour is drawn from a 1-component GMM over the
          training set's per-channel means (``--gmm_cluster 1``) plus 0.002 noise (``--noise
          0.002``, broken symmetry). The colour statistics below are placeholders: fit them with
          ``diffjax.samplers.cold.fit_channel_gmm`` on the training images and set
          ``method.colour_means`` / ``colour_stds`` / ``colour_weights``.
Paper number: CelebA 128 generation FID, perfect vs broken symmetry (paper Table 5; not
          verified here).
`:smoke` is a tiny UNet on the embedded 8x8 digits, T = 4.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="ddpm_linear", num_steps=300)  # only the network's index range
    c.model = dict(name="unet", image_size=128, ch=128, ch_mult=(1, 1, 2, 2, 4, 4),
                   num_res_blocks=2, attn_resolutions=(16,), dropout=0.0,
                   time_input="ddpm_index", prediction="x0")
    c.method = dict(name="cold", degradation="blur", num_steps=300,
                    degradation_kwargs=dict(routine="exponential", kernel_size=27,
                                            kernel_std=0.01, padding="circular", discrete=True),
                    loss_type="l1", algorithm="improved", symmetry_noise=0.002,
                    colour_weights=(1.0,), colour_means=((0.0,),), colour_stds=((0.3,),))
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
        c.method.update(num_steps=4, degradation_kwargs=dict(
            routine="exponential", kernel_size=3, kernel_std=0.5, discrete=True))
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
