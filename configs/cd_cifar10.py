"""Consistency distillation, CD (Song, Dhariwal, Chen, Sutskever 2023, arXiv 2303.01469) on
CIFAR-10, unconditional, distilled from this library's EDM CIFAR-10 run.

Command:  python -m diffjax train --config=configs/edm_cifar10.py --workdir=workdir/edm_cifar10
          (the teacher, first), then
          python -m diffjax train --config=configs/cd_cifar10.py --workdir=workdir/cd_cifar10
Hardware: 800k steps at batch 512; the paper trained on 8 A100s for roughly a week
          [memory, unverified]; one H100: weeks. Sampling: 1 (or 2) network evaluations.
Data:     TFDS ``cifar10`` train split (``tfds build cifar10`` once), 32x32x3 in [-1, 1],
          random horizontal flip.
Model:    the teacher's network (``configs/edm_cifar10.py``: DDPM++ in EDM preconditioning),
          re-wrapped as a consistency function f = c_skip x + c_out F with the boundary
          scalings (c_skip(sigma_min) = 1, c_out(sigma_min) = 0; paper appendix C); the student
          starts from the teacher's EMA weights (the paper's fine-tuning). DEVIATION: the
          paper's CIFAR-10 student/teacher is NCSN++ with Fourier embeddings trained by its own
          EDM code (spec section 2a'); here the student must match the teacher this library
          trains.
Training: EDM process (sigma 0.002 .. 80, rho 7); N = 18 Karras points; Heun teacher step
          (paper eq. 7); target theta^- = theta (no target EMA: the CIFAR-10 reference has none,
          spec Appendix B #2); weighting lambda = 1; metric LPIPS-VGG16 with average pooling
          (the reference's piq ``LPIPS(replace_pooling=True)``) on (x + 1) / 2 resized to 224:
          ``--config.method.lpips_weights=PATH`` to a converted .npz is required
          (``diffjax.metrics.lpips`` says how; nothing is downloaded), or
          ``--config.method.metric=l2`` (the paper's l2 variant used lr 4e-4, spec 2a');
          RAdam lr 4e-4, batch 512, 800k steps, warm-up 10^7 / 512 = 19,531 steps
          [unverified], EMA 0.9999 for evaluation.
Samples:  one step x = f(80 z, 80) (``method.sample_ts = [0]``); two steps with
          ``--config.method.sample_ts='[0, 9, 17]' --config.method.sample_grid=18``
          [unverified indices].
Paper number: CIFAR-10 FID 3.55 at 1 NFE with LPIPS (abstract); 2.93 at 2 NFE
          [memory, unverified]. With l2 expect worse (the paper's l2 ablation is higher).
`:smoke` distils a freshly initialised (untrained) tiny DDPM++ on the embedded 8x8 digits
          (``method.allow_untrained_teacher``): it checks the plumbing only.
"""

import ml_collections

from diffjax.run.smoke import smoke_variant


def get_config(arg=None):
    """The recipe; ``arg='smoke'`` gives the seconds-long, download-free variant."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="edm", sigma_min=0.002, sigma_max=80.0, rho=7.0)
    c.model = dict(name="ncsnpp", preset="ddpmpp_cifar10", ch_mult=(2, 2, 2),
                   dropout=0.13, precond="edm", sigma_data=0.5)
    c.method = dict(name="cd", num_scales=18, solver="heun", weighting="uniform",
                    metric="lpips", lpips_weights="", lpips_pooling="avg", lpips_resize=True,
                    target_ema="", teacher_workdir="workdir/edm_cifar10",
                    teacher_config="configs/edm_cifar10.py", teacher_ema="ema",
                    allow_untrained_teacher=False, sample_ts=(0,), sample_grid=40, clip=True)
    c.loss = dict(name="edm")  # unused: the method brings its loss
    c.data = dict(name="cifar10", split="train", batch_size=512, flip=True, data_dir="")
    c.optim = dict(name="radam", lr=4e-4, warmup_steps=19_531)
    c.ema = dict(ema=0.9999)
    c.train = dict(num_steps=800_000, log_every=1000, save_every=10_000, max_to_keep=3,
                   sample_every=0)
    c.sample = dict(num_samples=256, ema="ema")
    c.mesh = dict(data=-1, fsdp=1)
    if arg == "smoke":
        smoke_variant(c, dict(name="ncsnpp", preset="ddpmpp_cifar10", image_size=8, in_channels=1,
                      nf=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                      precond="edm", sigma_data=0.5),
                      data=dict(name="digits", split="train", flip=True), sample_steps=None)
        c.method.update(teacher_workdir="", teacher_config="", allow_untrained_teacher=True,
                        metric="l2")
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r}; expected 'smoke' or nothing")
    return c
