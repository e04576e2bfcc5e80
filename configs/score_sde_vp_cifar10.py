"""Score SDE (Song et al. 2021), VP SDE with DDPM++ (continuous) on CIFAR-10.

Command:  python -m diffjax train --config=configs/score_sde_vp_cifar10.py
          --workdir=workdir/score_sde_vp_cifar10 (FID set: ``sample ... --num_samples=50000``).
Hardware: score_sde trains 1.3M steps; on the TPU v3 pods of the paper that is a few days
          [mem, unverified]; one A100/H100: roughly a week. Sampling: 1000 steps per batch.
Data:     TFDS ``cifar10`` train split (``tfds build cifar10`` once; ``data.data_dir`` for a
          custom TFDS directory), 32x32x3 in [-1, 1], random horizontal flip.
Model:    DDPM++ (``ncsnpp`` preset ``ddpmpp_cifar10``: nf 128, mult (1, 2, 2, 2), 4 BigGAN res
          blocks, attention at 16, dropout 0.1, positional embedding of 999 t), an
          eps-network: score = -net(x, 999 t) / sigma_t.
Training: VP SDE (beta 0.1 .. 20), t ~ U(1e-5, 1), ||sigma_t s + z||^2 averaged over pixels
          (``reduce_mean=True``, as the VP DDPM++ config); Adam 2e-4, 5000 warm-up steps,
          gradient clipping 1, batch 128, EMA 0.9999, 1.3M steps.
Samples:  the config's PC sampler: Euler-Maruyama predictor, no corrector, 1000 uniform steps
          from t = 1 to 1e-3 (score_sde ``configs/vp/cifar10_ddpmpp_continuous.py``).
Paper number: VP DDPM++ cont. CIFAR-10 FID 2.55, IS 9.58 (score_sde README, spec section 7b);
          the deep variant (``--config.model.preset=ddpmpp_deep_cifar10``) 2.41.
`:smoke` swaps in a tiny DDPM++ on the embedded 8x8 digits (no download) for a few steps.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="vp", beta_min=0.1, beta_max=20.0)
    c.model = dict(name="ncsnpp", preset="ddpmpp_cifar10", time_input="vp_999t",
                   prediction="eps")
    c.loss = dict(name="score_sde", reduce_mean=True, eps=1e-5)
    c.data = dict(name="cifar10", split="train", batch_size=128, flip=True, data_dir="")
    c.optim = dict(name="adam", lr=2e-4, warmup_steps=5000, grad_clip=1.0)
    c.ema = dict(ema=0.9999)
    c.train = dict(num_steps=1_300_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(sampler="pc", predictor="euler_maruyama", corrector="none",
                    grid="uniform", num_steps=1000, t_min=1e-3, num_samples=256, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(name="ncsnpp", preset="ddpmpp_cifar10", image_size=8, in_channels=1,
                      nf=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                      time_input="vp_999t", prediction="eps"),
                      data=dict(name="digits", split="train", flip=True))
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
