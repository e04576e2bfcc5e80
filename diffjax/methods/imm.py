"""Inductive moment matching (Zhou, Ermon, Song 2025, arXiv 2503.07565) as a method.

A network ``g(x_t, t, s)`` defines the one-step map ``f_{s,t}(x_t)`` (paper eq. 12) from time
``t`` to an earlier ``s`` on the OT flow path (diffjax's :class:`~diffjax.processes.Linear`);
training matches the distributions of ``f_{s,t}(x_t)`` and ``f_{s,r}(x_r)`` for ``s < r < t``
with a Laplace-kernel MMD over groups of particles (Alg. 1), and sampling pushes noise through
a few maps (the pushforward sampler). The maths is in :mod:`diffjax.losses.imm` and
:func:`diffjax.samplers.few_step.imm_sample`; the network's time inputs are ``1000 t`` and
``cond['s'] = 1000 s`` (``time_input='t'``, :func:`~diffjax.losses.imm.imm_precond`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from diffjax.losses import imm as imm_lib
from diffjax.methods.base import Method, Setup, ema_if
from diffjax.methods.shortcut import level_cond
from diffjax.processes import Linear
from diffjax.samplers import few_step

__all__ = ["imm"]


def _g(network, kind, temb, sigma_data, time_scale, params, x, t, s, cond, *, train=False,
       key=None):
    model = network.bind(params, train=train, key=key)
    raw = lambda x_in, c_t, c_s, y: model(x_in, c_t, level_cond(y, c_s))
    return imm_lib.imm_precond(raw, kind, temb, sigma_data, time_scale)(x, t, s, cond)


def imm(setup: Setup, *, group_size: int = 4, kind: str = "euler_fm", temb: str = "identity",
        k: int = 12, a: float = 1.0, b: float = 4.0, T: float = 0.994, eps_t: float = 0.0,
        sigma_data: float = 0.5, time_scale: float = 1000.0, target_ema: str | None = None,
        target_decay: float | None = None, sample_steps: int = 1,
        sample_grid: str = "uniform", mid_eta=None, cfg_scale: float | None = None) -> Method:
    """IMM training (Alg. 1) and pushforward sampling.

    Args:
      setup: a network with a second scalar input on the ``Linear`` process.
      group_size: particles ``M`` per group (the batch must divide).
      kind: the map's parameterisation, ``'euler_fm'``, ``'simple_edm'`` or ``'identity'``.
      temb: ``'identity'`` feeds ``s``; ``'stride'`` feeds ``t - s``.
      k, a, b: ``r(s, t)`` by the paper's ``eta`` decrement ``(eta_max - eta_min) / 2^k``
        and the weighting ``w(s, t)`` (eq. 13; ``a``, ``b``).
      T, eps_t: the time range ``[eps_t, T]``.
      sigma_data, time_scale: the preconditioning's ``sigma_d`` and time multiplier (1000).
      target_ema: EMA name of ``theta^-`` (``None``: online weights under stop-gradient, as
        the paper's recipes); ``target_decay`` defines it here when given.
      sample_steps, sample_grid, mid_eta: the pushforward sampler's steps and time grid
        (``'uniform'``, ``'edm'``, ``'mid_eta'``).
      cfg_scale: classifier-free guidance on ``g`` for a class-conditional network.
    """
    if not isinstance(setup.process, Linear):
        raise ValueError("IMM needs process.name='linear' (the OT flow path); got "
                         f"{type(setup.process).__name__}")
    lkw = dict(group_size=int(group_size), kind=kind, k=int(k), a=float(a), b=float(b),
               T=float(T), eps_t=float(eps_t), sigma_data=float(sigma_data))
    if int(setup.batch_size) % lkw["group_size"]:
        raise ValueError(f"the batch size {setup.batch_size} must be divisible by "
                         f"group_size={group_size}")
    if cfg_scale is not None and not setup.num_classes:
        raise ValueError("cfg_scale needs a class-conditional network and labelled data")
    skw = dict(num_steps=int(sample_steps), kind=kind, T=float(T), eps_t=float(eps_t),
               grid=sample_grid, mid_eta=mid_eta, sigma_data=float(sigma_data))
    few_step.imm_time_grid(skw["num_steps"], skw["T"], skw["eps_t"], sample_grid,
                           mid_eta=mid_eta)  # validates
    static = (setup.network, kind, temb, float(sigma_data), float(time_scale))

    def loss(params, key, batch, state):
        k_loss, k_drop = jax.random.split(key)
        # the same dropout key for y_t and y_r, as for the consistency target
        apply_fn = lambda p, x, t, s, c: _g(*static, p, x, t, s, c, train=True, key=k_drop)
        tp = state.ema[target_ema] if target_ema else None
        return imm_lib.imm_loss(apply_fn, params, k_loss, batch["image"], target_params=tp,
                                cond=setup.labels(batch), **lkw)

    def sample(params, key, n, cond=None, offset=0):
        null = None
        if cfg_scale is not None:
            null = jnp.full_like(jnp.asarray(cond), setup.num_classes)
        return few_step.imm_sample(jtu.Partial(_g, *static, params), key,
                                   (int(n),) + setup.x_shape, cond=cond, null_cond=null,
                                   cfg_scale=None if cfg_scale is None else float(cfg_scale),
                                   sample_offset=offset, **skw)

    nfe = skw["num_steps"] * (2 if cfg_scale is not None else 1)
    return Method("imm", loss, sample, ema_specs=ema_if(target_ema, target_decay),
                  reads_emas=(target_ema,) if target_ema else (), nfe=nfe)
