"""Inductive Moment Matching, IMM (Zhou, Ermon, Song 2025, arXiv 2503.07565), DiT-XL/2 on
ImageNet 256x256 as SD-VAE latents, class-conditional: the 8-step, FID 1.99 model.

Command:  python -m diffjax train --config=configs/imm_imagenet256.py
          --workdir=workdir/imm_imagenet256 [--config.data.name=/path/to/latents.npz]
Hardware: DiT-XL/2 (119 Gflops per image); the paper's budget is not in the stored sources
          [unverified]: plan on a multi-host pod (``mesh.data``, ``--distributed``). Sampling:
          8 steps x 2 (CFG) = 16 network evaluations.
Data:     pre-extracted latents: an ``.npz`` with ``latents`` (N, 32, 32, 4) and ``labels``
          (N,) in 0..999; IMM normalises SD-VAE latents per channel with
          raw_mean = (0.86488, -0.27787343, 0.21616915, 0.3738409), raw_std = (4.85503674,
          5.31922414, 3.93725398, 3.9870003), then multiplies by 0.5 (spec 1.3): store them
          normalised. Default ``data/imagenet256_imm_latents``.
Model:    DiT-XL/2 with a second timestep embedder (c = t_emb + s_emb + y_emb), 1000 classes
          + a null class (label dropout 0.1), no learned sigma. The null class is a label row
          (DEVIATION: the reference feeds a zero one-hot vector).
Training: OT-FM path, sigma_d = 0.5, T = 0.994, eps_t = 0; "euler_fm" parameterisation
          (the ImageNet config); "stride" embedding (t - s fed) with a = 2 (the 1.99 checkpoint,
          reference README); M = 4, k = 12, b = 4 [3rd-party x2 / unverified]; y_r from the
          online network under stop-gradient; AdamW lr 1e-4, batch 4096, 1.2M steps, EMA 0.9999
          [all unverified].
Samples:  pushforward, 8 uniform steps from T to 0, CFG 1.5 on the network output before the
          Euler map (``IMMPrecond.cfg_forward``).
Paper number: ImageNet 256 FID 1.99 at 8 steps with CFG 1.5 (abstract); 8.05 / 3.99 / 2.51 at
          1 / 2 / 4 steps [memory, unverified].
`:smoke` is a 1-block class-conditional DiT on 8x8x4 latents; ``encode`` makes them from 64
          embedded digits with a tiny random VAE (or pass a small ``.npz`` with
          --config.data.name); samples are decoded by that VAE.
Latents:  ``python -m diffjax encode`` writes the latent folder from ``encode.data`` with the
          VAE of ``config.vae`` (diffusers ``AutoencoderKL`` files in ``vae.weights``); sample
          and eval decode with it.
"""

import ml_collections

from diffjax.run.smoke import latent_smoke, smoke_variant

DEFAULT_LATENTS = "data/imagenet256_imm_latents"  # the folder `diffjax encode` writes


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long variant (latents path required)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="linear")
    c.model = dict(name="dit", preset="DiT-XL/2", num_classes=1000, class_dropout_prob=0.1,
                   learn_sigma=False, second_scalar=True, time_input="t")
    c.method = dict(name="imm", group_size=4, kind="euler_fm", temb="stride", k=12, a=2.0,
                    b=4.0, T=0.994, eps_t=0.0, sigma_data=0.5, time_scale=1000.0,
                    target_ema="", sample_steps=8, sample_grid="uniform", cfg_scale=1.5)
    c.loss = dict(name="flow_matching")  # unused: the method brings its loss
    c.data = dict(name=DEFAULT_LATENTS, split="train", batch_size=4096, flip=False)
    c.optim = dict(name="adamw", lr=1e-4, weight_decay=0.0)
    c.ema = dict(ema=0.9999)
    c.train = dict(num_steps=1_200_000, log_every=1000, save_every=10_000, max_to_keep=3,
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
        smoke_variant(c, dict(name="dit", preset="DiT-S/2", input_size=8, in_channels=4,
                      hidden_size=32, depth=1, num_heads=2, num_classes=10,
                      class_dropout_prob=0.1, learn_sigma=False, second_scalar=True,
                      time_input="t"), sample_steps=None)
        c.method.update(sample_steps=2)
        # images -> tiny VAE -> latents: 64 embedded digits at 32x32 -> 8x8x4 latents
        latent_smoke(c)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
