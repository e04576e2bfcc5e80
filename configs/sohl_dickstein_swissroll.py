"""Sohl-Dickstein et al. 2015 ("Deep Unsupervised Learning using Nonequilibrium
Thermodynamics", ICML 2015): the 2-D swiss roll of its Fig. 1, trained by maximising the bound
K (eq. 14).

Command:  python -m diffjax train --config=configs/sohl_dickstein_swissroll.py --workdir=workdir/sd
Hardware: CPU (1 core): a few minutes (4000 steps at batch 256; every one of the 39 KL terms
          per example); any GPU: seconds.
Data:     diffjax's swiss roll (``toy:swiss_roll``: centred, unit variance per coordinate on
          average, 100,000 points).
Model:    T = 40 steps; the paper's baseline schedule beta_t = 1/linspace(T, 2, T)_t with
          beta_1 fixed and beta_{2..T} learned through a 10-bump temporal perturbation (paper
          sec. 2.4.1); the reverse kernel's mean and diagonal variance from an MLP (2 x 128,
          tanh) read out through 10 Gaussian bump functions of t (the authors' code's temporal
          readout).
Optimiser: Adam 1e-3 (the reference code uses RMSProp; diffjax's optimisers are the Adam
          family), gradient clipping 1.0, no EMA.
Samples:  ancestral sampling of the learned reverse chain (40 steps, the last one the fixed
          forward kernel), 2,000 points: <workdir>/samples.png (a density image) and .npz.
Paper number: K = 2.35 bits and K - L_null = 4.45 bits on the paper's own scaling of the roll
          (Table 1); experiments/sohl_dickstein_swissroll.py compares (the K - L_null column is
          the scale-free one). `:smoke` trains 4 steps in seconds.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="sohl_dickstein", num_steps=40)
    c.model = dict(name="sohl_dickstein", dim=2, hidden=(128, 128), num_steps=40,
                   n_temporal_basis=10, learn_beta=True)
    c.method = dict(name="sohl_dickstein", timesteps="all")
    c.data = dict(name="toy:swiss_roll", split="train", batch_size=256)
    c.optim = dict(name="adam", lr=1e-3, warmup_steps=0, grad_clip=1.0)
    c.ema = {}
    c.train = dict(num_steps=4000, log_every=200, save_every=2000, max_to_keep=1,
                   sample_every=0)
    c.sample = dict(num_samples=2000, num_steps=40)
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(c.model, hidden=(16,)), batch_size=16, sample_steps=None)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
