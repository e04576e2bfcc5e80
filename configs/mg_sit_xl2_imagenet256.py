"""Model guidance, MG: "Diffusion Models without Classifier-free Guidance" (Tang, Bao, Chen, Guo
2025, arXiv 2502.12154), SiT-XL/2 on ImageNet 256x256 as SD-VAE latents, class-conditional.

Command:  python -m diffjax train --config=configs/mg_sit_xl2_imagenet256.py
          --workdir=workdir/mg_sit_xl2 [--config.data.name=/path/to/latents.npz]
Hardware: SiT-XL/2 (119 Gflops per image) at batch 256; the paper's step count is not in the
          stored sources (``train.num_steps`` below is a placeholder [unverified]); about
          2-3 steps/s on one H100 [estimate, unverified]. Sampling: 250 network evaluations
          (no CFG: one pass per step).
Data:     pre-extracted latents: an ``.npz`` with ``latents`` (N, 32, 32, 4) float32
          (``stabilityai/sd-vae-ft-ema`` x 0.18215; encode flipped copies for the reference's
          random flip) and ``labels`` (N,) in 0..999; default
          ``data/imagenet256_sdvae_latents`` (an encode folder; an ``.npz`` works too).
Model:    SiT-XL/2 (depth 28, width 1152, 16 heads, patch 2), 1000 classes + a null row, no
          learned sigma, fed SiT time (data at t = 1) and negated to a diffjax velocity.
          Labels are dropped by the MG loss itself (the reference sets the model's
          class_dropout to 0 and drops manually): the network's own dropout never runs.
Training: linear path x_t = (1 - t) x + t eps, target u = eps - x; after ``start_step`` =
          100k, rows whose label is kept get u + (omega - 1) sg(v_ema(x_t, y) - v_ema(x_t, null))
          for t < 0.75 (omega = 1.45, EMA network as the guide: spec Appendix B #6);
          round_stoch(0.1 B) rows get the null label and the plain target; AdamW lr 1e-4,
          weight decay 0, batch 256, EMA 0.9999 (spec section 8a). The model is its own
          guide, so it converges to CFG at scale 1 / (2 - omega) = 1.82, not 1.45
          (``diffjax.losses.model_guidance``, measured in
          ``experiments/results/few_step_learning_checks_cpu.md``).
Samples:  Euler-Maruyama, 250 steps on linspace(1, 0.04) then a noiseless last step to 0,
          diffusion g^2 = 2 t (``EulerMaruyama(diffusion='sigma')``), guidance scale 1.
Paper number: ImageNet 256 FID-50K 1.34 without CFG (reference README; 1.39 on one node).
`:smoke` is a 1-block class-conditional SiT on 8x8x4 latents; ``encode`` makes them from 64
          embedded digits with a tiny random VAE (or pass a small ``.npz`` with
          --config.data.name); samples are decoded by that VAE.
Latents:  ``python -m diffjax encode`` writes the latent folder from ``encode.data`` with the
          VAE of ``config.vae`` (diffusers ``AutoencoderKL`` files in ``vae.weights``); sample
          and eval decode with it.
"""

import ml_collections

from diffjax.run.smoke import latent_smoke, smoke_variant

DEFAULT_LATENTS = "data/imagenet256_sdvae_latents"  # the folder `diffjax encode` writes


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long variant (latents path required)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="linear")
    c.model = dict(name="dit", preset="SiT-XL/2", num_classes=1000, class_dropout_prob=0.1,
                   learn_sigma=False, discard_sigma=False, time_input="sit",
                   prediction="velocity", negate_output=True)
    c.method = dict(name="mg", omega=1.45, mg_high=0.75, start_step=100_000, drop_prob=0.1,
                    guide_ema="ema", sampler="euler_maruyama", sample_steps=250,
                    sample_t_last=0.04)
    c.loss = dict(name="flow_matching")  # unused: the method brings its loss
    c.data = dict(name=DEFAULT_LATENTS, split="train", batch_size=256, flip=False)
    c.optim = dict(name="adamw", lr=1e-4, weight_decay=0.0)
    c.ema = dict(ema=0.9999)
    c.train = dict(num_steps=1_000_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(num_samples=256, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    # the VAE (`python -m diffjax encode` encodes the images with it; sample / eval decode
    # the latents with it): place diffusers' AutoencoderKL files (config.json +
    # diffusion_pytorch_model.safetensors) in the folder vae.weights; nothing is downloaded
    c.vae = dict(preset="sd", weights="vae/sd-vae-ft-ema", chunk_size=32)
    c.encode = dict(data="imagenet2012", split="train", image_size=256, batch_size=32,
                    examples_per_shard=10_000, flip=True, posterior="sample", output="")
    if arg == "smoke":
        smoke_variant(c, dict(name="dit", preset="SiT-S/2", input_size=8, in_channels=4,
                      hidden_size=32, depth=1, num_heads=2, num_classes=10,
                      class_dropout_prob=0.1, learn_sigma=False, discard_sigma=False,
                      time_input="sit", prediction="velocity", negate_output=True),
                      sample_steps=None)
        c.method.update(start_step=2, sample_steps=3)
        # images -> tiny VAE -> latents: 64 embedded digits at 32x32 -> 8x8x4 latents
        latent_smoke(c)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
