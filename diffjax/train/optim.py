"""Optimizers from keyword arguments (no config objects in the library core).

``make_optimizer(name='adam'|'adamw'|'radam', lr=..., warmup_steps=..., schedule='constant'|
'cosine', total_steps=..., grad_clip=..., weight_decay=..., b1, b2, eps, accumulate=k)``
returns an ``optax.GradientTransformation``: clip by global norm (score_sde / DDPM clip 1.0),
the optimizer with a linear warm-up (DDPM 5000 steps) then constant or cosine decay, and
``optax.MultiSteps`` for gradient accumulation over ``k`` micro-batches.
"""

from __future__ import annotations

import optax

__all__ = ["make_optimizer", "make_schedule"]


def make_schedule(lr: float, warmup_steps: int = 0, schedule: str = "constant",
                  total_steps: int | None = None, end_lr_ratio: float = 0.0):
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}; expected 'constant' or 'cosine'")
    if schedule == "cosine":
        if not total_steps:
            raise ValueError("schedule='cosine' needs total_steps")
        if warmup_steps >= total_steps:
            # optax would fail later with "positive decay_steps"; name the arguments instead
            raise ValueError(f"schedule='cosine': warmup_steps ({warmup_steps}) must be smaller "
                             f"than total_steps ({total_steps})")
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup_steps, 1), total_steps,
                                                  end_value=lr * end_lr_ratio)
    if warmup_steps > 0:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup_steps), optax.constant_schedule(lr)],
            [warmup_steps])
    return optax.constant_schedule(lr)


def make_optimizer(name: str = "adam", lr: float = 1e-4, *, warmup_steps: int = 0,
                   schedule: str = "constant", total_steps: int | None = None,
                   grad_clip: float | None = None, weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8, accumulate: int = 1):
    sched = make_schedule(lr, warmup_steps, schedule, total_steps)
    if name == "adam":
        opt = optax.adam(sched, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        opt = optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    elif name == "radam":
        opt = optax.radam(sched, b1=b1, b2=b2, eps=eps)
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected 'adam', 'adamw' or 'radam'")
    if grad_clip:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    if accumulate > 1:
        opt = optax.MultiSteps(opt, every_k_schedule=accumulate)
    return opt
