"""SiT-XL/2: "Exploring Flow and Diffusion-based Generative Models with Scalable Interpolant
Transformers" (Ma et al. 2024, arXiv 2401.08740), ImageNet 256x256 as SD-VAE latents,
class-conditional; linear interpolant, velocity prediction, SDE sampling with CFG 1.5.

Command:  python -m diffjax encode --config=configs/sit_xl2_imagenet256.py --workdir=workdir/sit
          python -m diffjax train --config=configs/sit_xl2_imagenet256.py --workdir=workdir/sit
          python -m diffjax eval --config=configs/sit_xl2_imagenet256.py --workdir=workdir/sit
          --config.eval.num_samples=50000 --config.eval.inception_weights=...
Hardware: SiT-XL/2 is DiT-XL/2's network (119 Gflops per image): 7M steps at batch 256 on a
          TPU pod in the paper [mem, unverified]; months on one GPU.
Data:     the latent folder of ``python -m diffjax encode`` (``data.name``): ImageNet train
          images ADM-centre-cropped to 256, encoded by ``stabilityai/sd-vae-ft-ema`` (put its
          diffusers files in ``vae/sd-vae-ft-ema``), posterior samples x 0.18215.
Model:    SiT-XL/2 (depth 28, width 1152, 16 heads, patch 2), 1000 classes + null class
          (label dropout 0.1), no learned sigma, fed SiT time (data at t = 1) and negated to a
          diffjax velocity (diffjax time has data at 0).
Training: linear interpolant x_t = (1 - t) x + t eps (diffjax time), velocity target
          eps - x, t ~ U(0, 1), mean-squared error (SiT section 3, "velocity" model);
          AdamW lr 1e-4 constant, weight decay 0, batch 256, EMA 0.9999.
Samples:  SDE: Euler-Maruyama, 250 steps to t = 0.04 then a noiseless last step, diffusion
          coefficient w_t = sigma_t ("sigma", SiT's default; ``sample.step.diffusion`` takes
          SiT's other choices ``constant``, ``linear``, ``decreasing``,
          ``increasing-decreasing`` and ``sbdm``), CFG 1.5 on the first 3 latent channels.
          ODE: ``--config.sample.sampler=heun --config.sample.num_steps=125`` (250
          evaluations); SiT's adaptive dopri5 is not a diffjax sampler yet.
Paper number: SiT-XL/2 FID-50K 2.06 with CFG 1.5 (SDE), 2.15 (ODE) [mem, unverified]; 8.6
          (SDE) / 9.35 (ODE) without guidance [mem, unverified].
`:smoke` encodes 64 embedded digits with a tiny random VAE, trains a 1-block SiT on the 8x8x4
          latents, samples and decodes them.
"""

import ml_collections

from diffjax.run.smoke import latent_smoke, smoke_variant

#: the latent folder written by the encode command (relative to the current directory)
DEFAULT_LATENTS = "data/imagenet256_sdvae_latents"


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="linear")
    c.model = dict(name="dit", preset="SiT-XL/2", num_classes=1000, class_dropout_prob=0.1,
                   learn_sigma=False, discard_sigma=False, time_input="sit",
                   prediction="velocity", negate_output=True)
    c.loss = dict(name="flow_matching")  # velocity: model.prediction
    c.data = dict(name=DEFAULT_LATENTS, split="train", batch_size=256, flip=False)
    c.optim = dict(name="adamw", lr=1e-4, weight_decay=0.0)
    c.ema = dict(ema=0.9999)
    c.train = dict(num_steps=7_000_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(sampler="euler_maruyama", step=dict(diffusion="sigma"), grid="uniform",
                    t_min=0.04, num_steps=250, num_samples=256, ema="ema", guidance=1.5,
                    guidance_channels=3)
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
                      time_input="sit", prediction="velocity", negate_output=True))
        # images -> tiny VAE -> latents: 64 embedded digits at 32x32 -> 8x8x4 latents
        latent_smoke(c)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
