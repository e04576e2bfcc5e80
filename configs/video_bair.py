"""Video Diffusion Models (Ho et al. 2022, arXiv 2204.03458, sec. 4.2): BAIR robot pushing,
64x64, video prediction from one conditioning frame to 16 frames.

Command:  python -m diffjax train --config=configs/video_bair.py --workdir=workdir/video_bair
Hardware: the paper trained on TPU-v4 pods [memory, unverified]; one H100: days for the full
          run. CPU: the `:smoke` variant only.
Data:     TFDS ``bair_robot_pushing_small`` (``image_main``, 30 frames of 64x64x3 per record),
          clips of 16 frames at frame stride 1 (``diffjax.data.video.TFDSVideoSource``), in
          [-1, 1]; prepare the TFDS set first (``data.data_dir``).
Model:    ``unet3d`` preset ``vdm_16x64`` (the factorised space-time UNet: 1x3x3 convs, spatial
          attention at 8, 16, 32 px each followed by temporal attention with T5 relative
          position buckets; base width 256, multipliers (1, 2, 4, 8), 2 blocks, heads of 64
          channels) [preset recalled from the paper's appendix, unverified].
Training: eps-prediction, L_simple, cosine noise schedule (the paper's is continuous-time;
          this recipe uses the 1000-step discrete cosine table), Adam 3e-4, batch 128 (global),
          EMA 0.9999 [unverified]; no image frames (BAIR is video-only).
Samples:  unconditional clips by 256 ancestral (DDPM) steps from the EMA weights. Video
          prediction (condition on frame 1, generate 2..16) is
          ``diffjax.methods.video.conditional_sample`` with ``frame_mask(16, first=1)`` and
          reconstruction guidance (``w_r`` > 1; the paper's Langevin predictor-corrector is
          ``diffjax.samplers.PredictorCorrector``).
Paper number: FVD 66.92 (Langevin PC) / 68.19 (ancestral) [memory, unverified]; FVD needs the
          I3D network's weights, which this machine does not have.
`:smoke` trains a tiny 3D UNet on generated bouncing squares (8 frames of 16x16) for 4 steps.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="ddpm_cosine", num_steps=1000)
    c.model = dict(name="unet3d", preset="vdm_16x64", time_input="ddpm_index",
                   prediction="eps")
    c.method = dict(name="video", prediction="eps", image_frames=0, sampler="ddpm",
                    sample_steps=256)
    c.data = dict(name="video:bair_robot_pushing_small", split="train", batch_size=128,
                  data_dir="")
    c.optim = dict(name="adam", lr=3e-4, warmup_steps=1000, grad_clip=1.0)
    c.ema = dict(ema=0.9999)
    c.train = dict(num_steps=200_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(num_samples=64, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        # one resolution level (no resampling) keeps the 3-D network's compile short
        smoke_variant(c, dict(name="unet3d", preset="tiny", frame_size=16, in_channels=1,
                              ch_mult=(1,), attn_resolutions=(16,), time_input="ddpm_index",
                              prediction="eps"),
                      data=dict(name="video:moving_shapes", split="train"), batch_size=4,
                      sample_steps=None)
        c.method.sample_steps = 4
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
