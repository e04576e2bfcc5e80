"""LightningDiT-XL/1: "Reconstruction vs. Generation: Taming Optimization Dilemma in Latent
Diffusion Models" (Yao, Yang, Wang 2025, arXiv 2501.01423), ImageNet 256x256 as f16d32 VA-VAE
latents, class-conditional rectified flow.

Command:  python -m diffjax encode --config=configs/lightningdit_xl1_imagenet256.py
          --workdir=workdir/lightningdit
          python -m diffjax train --config=configs/lightningdit_xl1_imagenet256.py
          --workdir=workdir/lightningdit
Hardware: LightningDiT-XL/1 (256 tokens of width 1152, 28 blocks): 64 epochs of ImageNet at
          batch 1024 in the paper [mem, unverified]; days on an 8-GPU node.
Data:     the latent folder of ``python -m diffjax encode``: ImageNet train images
          ADM-centre-cropped to 256, encoded (posterior mean) by the VA-VAE f16d32 (16x16x32
          latents). The VA-VAE checkpoint is published in the original LDM key layout; diffjax
          converts diffusers ``AutoencoderKL`` files only, so convert it to diffusers' layout
          first (diffusers' own LDM-to-diffusers script) and put the folder in
          ``vae/vavae-f16d32``. The paper normalises latents per channel with their
          statistics (``latents_index.json`` holds them; not yet applied by the loader).
Model:    LightningDiT-XL/1 (depth 28, width 1152, 16 heads, patch 1; SwiGLU FFN, RMSNorm,
          2-D RoPE, no learned sigma), 1000 classes + null class (label dropout 0.1), fed SiT
          time and negated to a diffjax velocity.
Training: rectified flow x_t = (1 - t) x + t eps, velocity target eps - x, AdamW lr 2e-4,
          beta2 0.95, batch 1024, EMA 0.9999 [mem, unverified].
          NOT YET in this recipe (documented gaps): logit-normal t (the loss takes a
          ``t_sampler`` callable, which a config cannot name yet: t ~ U(0, 1) here), the
          velocity-direction cosine loss term, the sampling timestep shift and the CFG interval.
Samples:  Euler 250 steps (the paper's sampler is Euler with timestep shift 0.3 and CFG 6.7
          restricted to an interval [mem, unverified]); here CFG is applied at every step.
Paper number: FID-50K 1.35 at 800 epochs, 2.17 at 64 epochs [mem, unverified].
`:smoke` encodes 64 embedded digits with a tiny random VAE (the f16d32 layout in miniature:
          attention at the lowest level, 8 latent channels), trains a 1-block LightningDiT
          (SwiGLU, RMSNorm, RoPE) on the 8x8x8 latents, samples and decodes them.
"""

import ml_collections

from diffjax.run.smoke import latent_smoke, smoke_variant

#: the latent folder written by the encode command (relative to the current directory)
DEFAULT_LATENTS = "data/imagenet256_vavae_f16d32_latents"


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="linear")
    c.model = dict(name="dit", preset="LightningDiT-XL/1", time_input="sit",
                   prediction="velocity", negate_output=True)
    c.loss = dict(name="flow_matching")  # velocity: model.prediction
    c.data = dict(name=DEFAULT_LATENTS, split="train", batch_size=1024, flip=False)
    c.optim = dict(name="adamw", lr=2e-4, b2=0.95, weight_decay=0.0)
    c.ema = dict(ema=0.9999)
    c.train = dict(num_steps=80_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(sampler="euler", grid="uniform", num_steps=250, num_samples=256,
                    ema="ema", guidance=6.7, guidance_channels="all")
    c.mesh = dict(data=-1, fsdp=1)
    # the VAE: diffusers-layout AutoencoderKL files of the VA-VAE in vae.weights (see Data)
    c.vae = dict(preset="f16d32", weights="vae/vavae-f16d32", chunk_size=32)
    c.encode = dict(data="imagenet2012", split="train", image_size=256, batch_size=32,
                    examples_per_shard=10_000, flip=True, posterior="mean", output="")
    if arg == "smoke":
        smoke_variant(c, dict(name="dit", preset="LightningDiT-B/1", input_size=8,
                      in_channels=8, patch_size=2, hidden_size=32, depth=1, num_heads=2,
                      num_classes=10, time_input="sit", prediction="velocity",
                      negate_output=True))
        c.sample.guidance = 1.5
        # images -> tiny VAE -> latents: 64 embedded digits at 32x32 -> 8x8x8 latents
        latent_smoke(c, "tiny_f16")
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
