"""One wrapper from any diffjax network to the sampler/loss contract ``model(x, t, cond)``.

Every diffjax network is called as ``net(x, t_input, cond, train=False, rngs=None)`` in its
own time units (DDPM index, ``999 t``, sigma, SiT time, ...). :class:`Denoiser` holds the
split NNX model (``graphdef`` static, ``state`` a pytree of arrays) and converts diffjax time
(data at ``t = 0``) with :func:`diffjax.adapters.time_input`, so :func:`diffjax.sample` traces
the weights instead of baking them into the compiled program. Pass it *into* jitted code as
an argument (it is a pytree); ``jax.jit(denoiser)`` itself is not meaningful.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx, struct

from diffjax import adapters

__all__ = ["Denoiser", "as_denoiser"]


@struct.dataclass
class Denoiser:
    """``(x, t, cond) -> prediction`` over a split NNX model.

    Attributes:
      graphdef: the NNX graph definition (static).
      state: the model's state (weights and buffers; traced).
      time_input: :func:`diffjax.adapters.time_input` kind.
      process: the diffjax process (needed by sigma-based kinds), a pytree child.
      num_timesteps: ``T`` of DDPM-index kinds.
      negate_output: flip the sign (a SiT velocity, data at ``t = 1``, into diffjax's).
      null_label: the label of the unconditional class (classifier-free guidance), if any.
    """

    graphdef: Any = struct.field(pytree_node=False)
    state: Any
    time_input: str = struct.field(pytree_node=False, default="t")
    process: Any = None
    num_timesteps: int = struct.field(pytree_node=False, default=1000)
    negate_output: bool = struct.field(pytree_node=False, default=False)
    null_label: int | None = struct.field(pytree_node=False, default=None)

    def __call__(self, x, t, cond: Any = None):
        net = nnx.merge(self.graphdef, self.state)
        conv = adapters.time_input(self.time_input, self.process, self.num_timesteps)
        out = net(x, conv(jnp.asarray(t, jnp.float32)), cond).astype(x.dtype)
        return -out if self.negate_output else out


def as_denoiser(model: nnx.Module, time_input: str | None = None, *, process: Any = None,
                num_timesteps: int = 1000, negate_output: bool | None = None) -> Denoiser:
    """Wrap a diffjax network (UNet, ADM, NCSN++, DiT/SiT, ToyMLP) as a :class:`Denoiser`.

    Defaults come from the model's ``config`` when it has one (DiT/SiT presets set
    ``time_input`` and ``negate_output``); otherwise ``time_input='t'``.
    """
    cfg = getattr(model, "config", None)
    if time_input is None:
        time_input = getattr(cfg, "time_input", "t")
    adapters.time_input(time_input, process, num_timesteps)  # validate early
    if negate_output is None:
        negate_output = bool(getattr(cfg, "negate_output", False))
    num_classes = getattr(cfg, "num_classes", 0) or 0
    graphdef, state = nnx.split(model)
    return Denoiser(graphdef, state, time_input, process, num_timesteps, negate_output,
                    num_classes if num_classes > 0 else None)
