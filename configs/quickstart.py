"""Quickstart: DDPM (Ho et al. 2020) on the embedded 8x8 digits, the README's main job.

Command:  python -m diffjax train --config=configs/quickstart.py --workdir=workdir/quickstart
Hardware: CPU (2 cores): about 4 minutes (1200 steps at batch 64); any GPU: seconds.
Data:     scikit-learn's 1,797 handwritten 8x8 digits (shipped with the package, no download),
          scaled to [-1, 1]; the last 297 are held out for the quality figure.
Model:    a 2-level DDPM UNet (ch 32, mult (1, 2), attention at 4x4, 701,345 parameters),
          eps-prediction, L_simple, linear betas T = 1000, Adam 1e-3 with warm-up, EMA 0.995.
Samples:  256 digits by DDIM (eta = 0, 50 steps of the 1000-step chain, x0 clipped to [-1, 1])
          from the EMA weights: <workdir>/samples.png (64 of them) and samples.npz.
Quality:  sliced W1 in pixel space from the samples to the held-out digits, beside the same
          figure for real training digits and for a Gaussian fit (<workdir>/quality.json).
Batch:    data.batch_size is the global batch of one step, as in every recipe (the papers'
          numbers); on N hosts each loads batch_size / N (docs/design.md, "One batch size").
Paper number: none at this scale. `:smoke` trains 20 steps in seconds (the test suite's run).
"""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="ddpm_linear", num_steps=1000)
    c.model = dict(name="unet", image_size=8, in_channels=1, ch=32, ch_mult=(1, 2),
                   num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, norm_groups=8,
                   time_input="ddpm_index", prediction="eps")
    c.loss = dict(name="ddpm")
    c.data = dict(name="digits", split="train", batch_size=64, holdout=297)
    c.optim = dict(name="adam", lr=1e-3, warmup_steps=100, grad_clip=1.0)
    c.ema = dict(ema=0.995)
    c.train = dict(num_steps=1200, log_every=100, save_every=400, max_to_keep=2, sample_every=0)
    c.sample = dict(sampler="ddim", step=dict(eta=0.0), grid="discrete", num_steps=50,
                    num_samples=256, ema="ema", clip_x0=1.0)
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        c.train.num_steps = 20
        c.train.log_every = 10
        c.train.save_every = 10
        c.train.sample_every = 10
        c.sample.num_steps = 10
        c.sample.num_samples = 16
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
