"""Score SDE (Song et al. 2021), VE SDE with NCSN++ (continuous) on CIFAR-10.

Command:  python -m diffjax train --config=configs/score_sde_ve_cifar10.py
          --workdir=workdir/score_sde_ve_cifar10 (FID set: ``sample ... --num_samples=50000``).
Hardware: score_sde trains 1.3M steps; on the TPU v3 pods of the paper that is a few days
          [mem, unverified]; one A100/H100: roughly a week. Sampling: 1000 PC steps = 2000
          network evaluations per batch.
Data:     TFDS ``cifar10`` train split (``tfds build cifar10`` once; ``data.data_dir`` for a
          custom TFDS directory), 32x32x3 in [-1, 1], random horizontal flip.
Model:    NCSN++ (``ncsnpp`` preset ``ncsnpp_cifar10``: nf 128, mult (1, 2, 2, 2), 4 BigGAN res
          blocks, FIR resampling, residual input pyramid, attention at 16, dropout 0.1, Fourier
          features of log sigma, output divided by sigma): a score network fed sigma_t.
Training: VE SDE sigma 0.01 .. 50, t ~ U(1e-5, 1), 1/2 ||sigma_t s + z||^2 summed over pixels
          (``reduce_mean=False``); Adam 2e-4, 5000 warm-up steps, gradient clipping 1,
          batch 128, EMA 0.999, 1.3M steps.
Samples:  predictor-corrector: reverse-diffusion predictor + one Langevin corrector step with
          snr 0.16 (batch-averaged norms, as score_sde), 1000 uniform steps from t = 1 to 1e-5.
Paper number: VE NCSN++ cont. CIFAR-10 FID 2.38, IS 9.83 (score_sde README, spec section 7b);
          the deep variant (``--config.model.preset=ncsnpp_deep_cifar10``) 2.20 / 9.89.
`:smoke` swaps in a tiny NCSN++ on the embedded 8x8 digits (no download) for a few steps.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="ve", sigma_min=0.01, sigma_max=50.0)
    c.model = dict(name="ncsnpp", preset="ncsnpp_cifar10", time_input="sigma",
                   prediction="score")
    c.loss = dict(name="score_sde", reduce_mean=False, eps=1e-5)
    c.data = dict(name="cifar10", split="train", batch_size=128, flip=True, data_dir="")
    c.optim = dict(name="adam", lr=2e-4, warmup_steps=5000, grad_clip=1.0)
    c.ema = dict(ema=0.999)
    c.train = dict(num_steps=1_300_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(sampler="pc", predictor="reverse_diffusion", corrector="langevin",
                    snr=0.16, corrector_steps=1, grid="uniform", num_steps=1000, t_min=1e-5,
                    num_samples=256, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(name="ncsnpp", preset="ncsnpp_cifar10", image_size=8, in_channels=1,
                      nf=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                      time_input="sigma", prediction="score"),
                      data=dict(name="digits", split="train", flip=True))
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
