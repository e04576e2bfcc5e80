"""Shortcut models (Frans, Hafner, Levine, Abbeel 2024, arXiv 2410.12557) as a method.

One network ``s(x_t, t, d, y)`` conditioned on the step size ``d = 2^-level`` learns flow
matching at the finest level and, by self-consistency (paper eq. 5, Alg. 1), two half steps
as one step at every coarser level; sampling takes ``M`` Euler steps of size ``1/M`` along the
shortcut (Alg. 2), one network evaluation each. The maths is in :mod:`diffjax.losses.shortcut`
and :func:`diffjax.samplers.few_step.shortcut_sample`, in diffjax time on a
:class:`~diffjax.processes.Linear` process (the paper's ``1e-5`` in its ``sigma_min``).

The network sees the paper's time through its adapter (``time_input='sit'``: ``1 - t``) and,
like a SiT network, predicts the paper's velocity; ``negate_output=True`` turns it into
diffjax's ``dx/dt``. Its second scalar input (DiT / ToyMLP ``second_scalar=True``) is the
integer level, fed as ``cond['s']``.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.tree_util as jtu

from diffjax.losses import shortcut as sc
from diffjax.methods.base import Method, Setup, ema_if
from diffjax.processes import Linear
from diffjax.samplers import few_step

__all__ = ["shortcut", "level_cond"]


def level_cond(labels, level):
    """``cond`` of a network with a second scalar input: ``{'s': level, 'y': labels}``."""
    c = {"s": jnp.asarray(level, jnp.float32)}
    if labels is not None:
        c["y"] = labels
    return c


def _apply(network, params, x, t, level, labels):
    """``s(x, t, level, y)`` in diffjax time, diffjax velocity (the loss's and sampler's
    model); labels are dropped by the targets, so no dropout inside the network."""
    return network.bind(params)(x, t, level_cond(labels, level))


def shortcut(setup: Setup, *, denoise_timesteps: int = 128, bootstrap_every: int = 8,
             class_dropout_prob: float = 0.1, bootstrap_cfg: bool = False,
             cfg_scale: float = 1.5, clip: float | None = 4.0, bootstrap_ema: str = "ema",
             bootstrap_ema_decay: float | None = None, sample_steps: int = 1) -> Method:
    """Shortcut-model training (Alg. 1) and sampling (Alg. 2).

    Args:
      setup: a network with a second scalar input on a ``Linear`` process.
      denoise_timesteps: ``M``, the finest level's number of steps (128 in the paper).
      bootstrap_every: one row in this many is a self-consistency (bootstrap) row.
      class_dropout_prob: label dropout of the flow-matching rows (CFG training).
      bootstrap_cfg: bootstrap targets at the flow level use CFG at ``cfg_scale``.
      clip: the reference clips bootstrap velocities to ``[-clip, clip]`` (None: off).
      bootstrap_ema: EMA name of the bootstrap targets' weights (``''``: online weights under
        stop-gradient); ``bootstrap_ema_decay`` defines it here when given.
      sample_steps: Euler steps of the sampler, a power of 2 <= ``denoise_timesteps``.
    """
    if not isinstance(setup.process, Linear):
        raise ValueError("shortcut models need process.name='linear' (the paper's path is "
                         f"Linear with sigma_min=1e-5); got {type(setup.process).__name__}")
    M, every = int(denoise_timesteps), int(bootstrap_every)
    sc.bootstrap_levels(int(setup.batch_size), M, every)  # validates B, M, every now
    num_classes = setup.num_classes
    if bootstrap_cfg and num_classes is None:
        raise ValueError("bootstrap_cfg needs a class-conditional network and labelled data")
    steps = int(sample_steps)
    if steps < 1 or steps > M or steps & (steps - 1):
        raise ValueError(f"sample_steps must be a power of 2 <= denoise_timesteps={M}; got "
                         f"{steps}")
    tkw = dict(process=setup.process, num_classes=num_classes, denoise_timesteps=M,
               bootstrap_every=every, class_dropout_prob=float(class_dropout_prob),
               bootstrap_cfg=bool(bootstrap_cfg), cfg_scale=float(cfg_scale), clip=clip)
    apply_fn = jtu.Partial(_apply, setup.network)

    def loss(params, key, batch, state):
        ema = state.ema[bootstrap_ema] if bootstrap_ema else None
        return sc.shortcut_loss(apply_fn, params, ema, key, batch["image"],
                                setup.labels(batch), **tkw)

    def sample(params, key, n, cond=None, offset=0):
        model = jtu.Partial(_apply, setup.network, params)
        return few_step.shortcut_sample(model, key, (int(n),) + setup.x_shape, steps,
                                        process=setup.process, cond=cond, sample_offset=offset)

    return Method("shortcut", loss, sample, ema_specs=ema_if(bootstrap_ema, bootstrap_ema_decay),
                  reads_emas=(bootstrap_ema,) if bootstrap_ema else (), nfe=steps)
