"""Consistency distillation, CD (Song, Dhariwal, Chen, Sutskever 2023, arXiv 2303.01469) on
ImageNet 64x64, class-conditional, from an EDM-preconditioned ADM teacher.

Command:  python -m diffjax train --config=configs/cd_imagenet64.py --workdir=workdir/cd_imagenet64
          --config.method.teacher_workdir=<EDM ADM run> --config.method.teacher_config=<its config>
Hardware: 600k steps at batch 2048; the paper used 64 A100s [memory, unverified]; on one
          H100 this is months: use a pod (``mesh.data``) or shorten. Sampling: 1 or 2 NFE.
Data:     TFDS ``imagenet_resized/64x64`` (manual ImageNet download first), labels 0..999.
Teacher:  an EDM-preconditioned ADM ImageNet-64 run of this same network (not shipped as a
          config here; the paper distils EDM's released ImageNet-64 model, teacher dropout 0.1).
          The student starts from the teacher's EMA weights.
Model:    ADM UNet (``adm_imagenet64``: 192 channels, mult (1, 2, 3, 4), 3 res blocks, 64-channel
          heads, attention at 32/16/8, 1000 classes) with dropout 0 (spec 2a') and a C-channel
          output (no learned variance), in the consistency boundary parameterisation.
Training: EDM process (sigma 0.002 .. 80, rho 7); N = 40; Heun teacher step; target EMA
          mu = 0.95; metric LPIPS-VGG16 with average pooling (``method.lpips_weights``
          required, see ``cd_cifar10``; the paper also reports ``metric=l2``);
          Adam lr 8e-6, batch 2048, 600k steps, evaluation EMAs 0.999 / 0.9999 / 0.9999432.
Samples:  one step; two steps ts = [0, 22, 39] of a 40-point grid (the LPIPS model's indices;
          ``--config.method.sample_ts='[0, 22, 39]'``).
Paper number: ImageNet-64 FID 6.20 at 1 NFE with LPIPS (abstract); 4.70 at 2 NFE
          [memory, unverified]; the l2 model's numbers are higher [memory, unverified].
`:smoke` distils a freshly initialised (untrained) tiny class-conditional ADM on the embedded
          8x8 digits (``method.allow_untrained_teacher``): it checks the plumbing only.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="edm", sigma_min=0.002, sigma_max=80.0, rho=7.0)
    c.model = dict(name="adm", preset="adm_imagenet64", dropout=0.0, learn_sigma=False,
                   precond="edm", sigma_data=0.5)
    c.method = dict(name="cd", num_scales=40, solver="heun", weighting="uniform",
                    metric="lpips", lpips_weights="", lpips_pooling="avg", lpips_resize=True,
                    target_ema="target", target_decay=0.95, teacher_workdir="",
                    teacher_config="", teacher_ema="ema", allow_untrained_teacher=False,
                    sample_ts=(0,), sample_grid=40, clip=True)
    c.loss = dict(name="edm")  # unused: the method brings its loss
    c.data = dict(name="imagenet_resized/64x64", split="train", batch_size=2048, flip=False,
                  data_dir="")
    c.optim = dict(name="adam", lr=8e-6)
    c.ema = dict(ema=0.9999, ema_999=0.999, ema_9999432=0.9999432)
    c.train = dict(num_steps=600_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(num_samples=256, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(name="adm", image_size=8, in_channels=1, ch=32, ch_mult=(1, 2),
                      num_res_blocks=1, attn_resolutions=(), num_head_channels=8, dropout=0.0,
                      num_classes=10, learn_sigma=False, precond="edm", sigma_data=0.5),
                      data=dict(name="digits", split="train", flip=False), sample_steps=None)
        c.ema = dict(ema=0.9999)
        c.method.update(allow_untrained_teacher=True, num_scales=8, sample_ts=(0, 3, 7),
                        sample_grid=8, metric="l2")
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
