"""Video Diffusion Models (Ho et al. 2022, arXiv 2204.03458, sec. 4.1): unconditional UCF101,
16 frames of 64x64, with joint image-video training.

Command:  python -m diffjax train --config=configs/video_ucf101.py --workdir=workdir/video_ucf101
Hardware: the paper trained on TPU-v4 pods [memory, unverified]; one H100: days. CPU: the
          `:smoke` variant only.
Data:     TFDS ``ucf101`` (``video`` feature), clips of 16 frames at frame stride 1
          (``diffjax.data.video.TFDSVideoSource``), in [-1, 1]. NOT DONE: the frames must be
          resized to 64x64 (TFDS stores 256x256 in ``ucf101/ucf101_1_256``); the loader does
          not resize clips yet, so prepare a 64x64 variant or add a resize transform.
Model:    ``unet3d`` preset ``vdm_16x64`` (see ``configs/video_bair.py``) [unverified].
Training: eps-prediction, L_simple, cosine schedule (1000-step discrete table in place of the
          paper's continuous one), Adam 3e-4, batch 128, EMA 0.9999 [unverified]; joint
          training with 4 independent image frames appended to each 16-frame clip
          (``method.image_frames``; the paper compares 0, 4 and 8).
Samples:  256 ancestral steps from the EMA weights.
Paper number: UCF101 IS 57.00 +- 0.62, FID 295 +- 3 [memory, unverified]; the metrics need the
          C3D / I3D networks' weights, which this machine does not have.
`:smoke` trains a tiny 3D UNet on generated bouncing squares with 2 image frames per clip.
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
    c.method = dict(name="video", prediction="eps", image_frames=4, sampler="ddpm",
                    sample_steps=256)
    c.data = dict(name="video:ucf101", split="train", batch_size=128, data_dir="")
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
        c.method.image_frames = 2
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
