"""NCSN (Song & Ermon 2019) on CIFAR-10: multi-scale denoising score matching and annealed
Langevin dynamics.

Command:  python -m diffjax train --config=configs/ncsn_cifar10.py --workdir=workdir/ncsn_cifar10
          (IS/FID set: python -m diffjax sample ... --num_samples=50000).
Hardware: the paper's 200k steps took about a day on one GPU of its time [mem, unverified];
          one A100/H100: well under a day. Sampling costs 1000 network evaluations per batch
          (10 levels x 100 Langevin steps).
Data:     TFDS ``cifar10`` train split (``tfds build cifar10`` once; ``data.data_dir`` for a
          custom TFDS directory), 32x32x3 in [-1, 1], random horizontal flip. (The paper uses
          [0, 1] data; the noise levels 1 .. 0.01 are kept as published.)
Model:    the paper's RefineNet (CondRefineNetDilated, ngf 128) is not in diffjax; the NCSN++
          score network (``ncsnpp`` preset ``ncsnpp_cifar10``: Fourier features of log sigma,
          output divided by sigma) stands in, so this is the NCSN *objective and sampler* with a
          newer network, not a bit-for-bit reproduction.
Training: L = 10 geometric levels sigma = 1 .. 0.01 (``ve`` process with sigma_max 1,
          sigma_min 0.01), label i ~ U{0..9}, loss sigma_i^2 * 1/2 ||s + (x~ - x)/sigma_i^2||^2
          (sum over pixels); Adam 1e-3, batch 128, no EMA, no clipping, 200k steps.
Samples:  annealed Langevin dynamics, 100 steps per level with step 2e-5 * (sigma_i / 0.01)^2,
          started from uniform noise on the data range, no final denoising.
Paper number: CIFAR-10 Inception score 8.87 and FID 25.32 (spec section 6b: [mem, unverified]).
`:smoke` swaps in a tiny NCSN++ on the embedded 8x8 digits (no download) for a few steps.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="ve", sigma_min=0.01, sigma_max=1.0)
    c.model = dict(name="ncsnpp", preset="ncsnpp_cifar10", time_input="sigma",
                   prediction="score")
    c.loss = dict(name="ncsn", num_levels=10, anneal_power=2.0)
    c.data = dict(name="cifar10", split="train", batch_size=128, flip=True, data_dir="")
    c.optim = dict(name="adam", lr=1e-3)
    c.ema = dict()
    c.train = dict(num_steps=200_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(sampler="annealed_langevin",
                    step=dict(step_size=2e-5, sigma_last=0.01, n_steps_each=100),
                    grid="uniform", num_steps=9, t_min=0.0, x_init="uniform",
                    x_init_range=(-1.0, 1.0), num_samples=256)
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(name="ncsnpp", preset="ncsnpp_cifar10", image_size=8, in_channels=1,
                      nf=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                      time_input="sigma", prediction="score"),
                      data=dict(name="digits", split="train", flip=True), sample_steps=None)
        c.sample.step.n_steps_each = 2
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
