"""DiT-XL/2 (Peebles & Xie 2023) on ImageNet 256x256 as SD-VAE latents, class-conditional,
sampled with classifier-free guidance 1.5: the paper's headline model.

Command:  python -m diffjax encode --config=configs/dit_xl2_imagenet256.py
          --workdir=workdir/dit_xl2_imagenet256
          (once: ImageNet -> latent shards), then
          python -m diffjax train --config=configs/dit_xl2_imagenet256.py
          --workdir=workdir/dit_xl2_imagenet256
          (FID-50K set: ``sample ... --num_samples=50000``, ADM evaluation suite.)
Hardware: 7M steps at batch 256 on TPU v3-256 [mem, unverified]; fast-DiT reaches 0.84 step/s
          on one A100 with mixed precision and checkpointing [readme], i.e. months on one GPU:
          this recipe is for a pod (set ``mesh.data``/``mesh.fsdp``), or for fine-tuning.
Data:     latents, not images: the folder ``python -m diffjax encode`` writes (``data.name``,
          default ``data/imagenet256_sdvae_latents``): ImageNet train images
          ADM-centre-cropped to 256, encoded by ``stabilityai/sd-vae-ft-ema`` (its diffusers
          files in ``vae/sd-vae-ft-ema``: ``config.vae``), posterior samples x 0.18215, and the
          flipped images' latents (``encode.flip``); labels in 0..999. An ``.npz`` with
          ``latents`` (N, 32, 32, 4) and ``labels`` made elsewhere works too.
Model:    DiT-XL/2 (depth 28, width 1152, 16 heads, patch 2: 256 tokens, adaLN-Zero, 675M
          parameters, 119 Gflops), 1000 classes + null class (label dropout 0.1), learned
          sigma (8 output channels), fed the integer index t.
Training: DDPM linear betas 1e-4..0.02, T = 1000; L_simple + L_vlb (``hybrid``, lam = 0.001 =
          DiT's un-rescaled vb at T = 1000); AdamW 1e-4 constant, weight decay 0, no warm-up,
          batch 256, EMA 0.9999, 7M steps [mem, unverified].
Samples:  250 respaced ancestral DDPM steps with the learned variance; classifier-free
          guidance scale 1.5 on the first 3 of the 4 latent channels (the reference's
          ``forward_with_cfg`` quirk; the variance channels are never guided), class-balanced
          labels, EMA weights.
Paper number: DiT-XL/2 FID-50K 2.27 (IS 278.24) with CFG 1.5 [readme]; 9.62 without guidance
          [mem, unverified]; 19.47 at 400k steps without guidance [mem, unverified].
`:smoke` encodes 64 embedded digits (32x32) with a tiny random VAE into 8x8x4 latents
          (``encode`` first, then ``--config.data.name=<that folder>``), trains a 1-block DiT on
          them, and decodes its samples to images for the PNG grid and FID.
"""

import ml_collections

from diffjax.run.smoke import latent_smoke, smoke_variant

#: documented default location of the pre-extracted latents (relative to the working directory)
DEFAULT_LATENTS = "data/imagenet256_sdvae_latents"  # the folder `diffjax encode` writes


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long variant (latents path required)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="ddpm_linear", num_steps=1000)
    c.model = dict(name="dit", preset="DiT-XL/2", time_input="ddpm_index", prediction="eps")
    c.loss = dict(name="hybrid", lam=0.001)
    c.data = dict(name=DEFAULT_LATENTS, split="train", batch_size=256, flip=False)
    c.optim = dict(name="adamw", lr=1e-4, weight_decay=0.0)
    c.ema = dict(ema=0.9999)
    c.train = dict(num_steps=7_000_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(sampler="ddpm", step=dict(variance="learned"), grid="discrete",
                    num_steps=250, num_samples=256, ema="ema", learned_variance=True,
                    guidance=1.5, guidance_channels=3)
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
                      time_input="ddpm_index", prediction="eps"))
        # images -> tiny VAE -> latents: 64 embedded digits at 32x32 -> 8x8x4 latents
        latent_smoke(c)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
