"""Adapters between diffjax's time convention and each paper's own.

diffjax: ``t in [0, 1]``, data at 0, noise at 1, ``x_t = alpha(t) x0 + sigma(t) eps``.
The papers differ:

==================  ==========================================  =============================
paper               its variable                                adapter
==================  ==========================================  =============================
DDPM/iDDPM/DDIM/    code index ``i in {0..T-1}``, ``i=0`` is     ``ddpm_index_to_t``,
ADM/DiT             one step of noise                            ``t_to_ddpm_index``
EDM, consistency    sigma (``x = y + sigma n``)                  ``sigma_to_t``, ``t_to_sigma``
SiT, shortcut       ``t = 1`` is data                           ``flip_time``,
                    (velocity ``dx/dt_paper = -dx/dt``)          ``FlippedVelocity``
NCSN                label ``i = 0`` is the *largest* sigma       ``ncsn_label_to_t``
score_sde VP net    ``999 t``                                    ``time_input('vp_999t')``
==================  ==========================================  =============================

:func:`with_time_input` wraps a network that expects one of these inputs into the
``model(x, t, cond)`` contract the samplers and losses use. :class:`FlippedVelocity` and
:class:`FixedLevel` are pytrees (``flax.struct.dataclass``): a sampler given them traces the
wrapped model's weights instead of baking them into its program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import struct

from diffjax.processes import Process

Array = Any

__all__ = [
    "ddpm_index_to_t",
    "t_to_ddpm_index",
    "sigma_to_t",
    "t_to_sigma",
    "flip_time",
    "ncsn_label_to_t",
    "t_to_ncsn_label",
    "time_input",
    "with_time_input",
    "sit_velocity",
    "FlippedVelocity",
    "FixedLevel",
]


def ddpm_index_to_t(i: Array, num_timesteps: int) -> Array:
    """DDPM code index ``i`` (0-based; paper ``t = i + 1``) -> ``t = (i + 1) / T``."""
    return (jnp.asarray(i, jnp.float32) + 1.0) / num_timesteps


def t_to_ddpm_index(t: Array, num_timesteps: int) -> Array:
    """Inverse of :func:`ddpm_index_to_t` (rounded to the nearest index, int32)."""
    return jnp.round(jnp.asarray(t, jnp.float32) * num_timesteps - 1.0).astype(jnp.int32)


def sigma_to_t(process: Process, sigma: Array) -> Array:
    """EDM/consistency sigma (of ``x / alpha``) -> ``t``; ``sigma = 0`` -> ``t = 0``."""
    return process.t_from_sigma_tilde(sigma)


def t_to_sigma(process: Process, t: Array) -> Array:
    """``t`` -> EDM sigma ``sigma(t) / alpha(t)``."""
    return process.sigma_tilde(t)


def flip_time(t: Array) -> Array:
    """SiT / shortcut time (data at 1) <-> diffjax time (data at 0): ``1 - t``."""
    return 1.0 - jnp.asarray(t, jnp.float32)


def ncsn_label_to_t(label: Array, num_levels: int) -> Array:
    """NCSN label ``i`` (0 = largest sigma) -> ``t`` of a :class:`~diffjax.processes.VE`
    process with ``sigma_max = sigma_1`` and ``sigma_min = sigma_L`` (geometric levels)."""
    return 1.0 - jnp.asarray(label, jnp.float32) / (num_levels - 1)


def t_to_ncsn_label(t: Array, num_levels: int) -> Array:
    return jnp.round((1.0 - jnp.asarray(t, jnp.float32)) * (num_levels - 1)).astype(jnp.int32)


def time_input(kind: str, process: Process | None = None,
               num_timesteps: int = 1000) -> Callable[[Array], Array]:
    """The conversion from our ``t`` to what a reference network was trained on.

    Kinds: ``'t'`` (identity), ``'ddpm_index'`` (DDPM/DDIM/DiT integer index, as float),
    ``'iddpm_rescaled'`` (index * 1000 / T, iDDPM ``rescale_timesteps``), ``'vp_999t'``
    (score_sde continuous VP), ``'sigma'`` (score_sde VE / NCSN++), ``'edm_cnoise'``
    (EDM ``c_noise = ln(sigma) / 4``), ``'ve_cnoise'`` (EDM VE precond ``ln(sigma / 2)``),
    ``'sit'`` (``1 - t``), ``'imm_1000t'`` (IMM ``1000 t``).
    """
    needs_process = {"sigma", "edm_cnoise", "ve_cnoise"}
    if kind in needs_process and process is None:
        raise ValueError(f"time_input kind {kind!r} needs the process")
    table = {
        "t": lambda t: t,
        "ddpm_index": lambda t: jnp.round(t * num_timesteps - 1.0),
        "iddpm_rescaled": lambda t: jnp.round(t * num_timesteps - 1.0) * (1000.0 / num_timesteps),
        "vp_999t": lambda t: 999.0 * t,
        "sigma": lambda t: process.sigma_tilde(t),
        "edm_cnoise": lambda t: 0.25 * jnp.log(process.sigma_tilde(t)),
        "ve_cnoise": lambda t: jnp.log(0.5 * process.sigma_tilde(t)),
        "sit": lambda t: 1.0 - t,
        "imm_1000t": lambda t: 1000.0 * t,
    }
    if kind not in table:
        raise ValueError(f"unknown time_input kind {kind!r}; expected one of {sorted(table)}")
    return table[kind]


def with_time_input(net: Callable, kind: str, process: Process | None = None,
                    num_timesteps: int = 1000) -> Callable:
    """Wrap ``net(x, time_value, cond)`` into ``model(x, t, cond)`` with our ``t``."""
    conv = time_input(kind, process, num_timesteps)

    def model(x, t, cond=None):
        return net(x, conv(jnp.asarray(t, jnp.float32)), cond)

    return model


def sit_velocity(net: Callable) -> Callable:
    """Wrap a SiT/flow velocity network ``v(x, t_sit, cond)`` (data at ``t_sit = 1``) as a
    diffjax ``'velocity'`` model: ``u(x, t) = -v(x, 1 - t, cond)`` (``dt = -dt_sit``)."""
    return FlippedVelocity(net)


@struct.dataclass
class FlippedVelocity:
    """A velocity network of a paper whose data sit at ``t' = 1`` (SiT, shortcut models) as a
    diffjax velocity: ``u(x, t, *args) = -v(x, 1 - t, *args)``, since ``t' = 1 - t`` and so
    ``dx/dt = -dx/dt'``. Extra inputs (a shortcut model's step level, labels) pass through;
    with none, ``cond = None`` is passed (``u(x, t)`` is ``-v(x, 1 - t, None)``).
    """

    net: Callable

    def __call__(self, x, t, *args):
        return -self.net(x, flip_time(t), *(args or (None,)))


@struct.dataclass
class FixedLevel:
    """A step-size-conditioned model ``model(x, t, level, cond)`` (shortcut models: step size
    ``d = 2^-level``) at one fixed integer ``level``, as ``model(x, t, cond)``. ``level`` is
    static (it fixes the number of sampling steps, hence the program)."""

    model: Callable
    level: int = struct.field(pytree_node=False, default=0)

    def __call__(self, x, t, cond=None):
        t = jnp.asarray(t)
        return self.model(x, t, jnp.full(t.shape, self.level, jnp.int32), cond)
