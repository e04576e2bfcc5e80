"""The one bridge from a diffjax network to the sampler/loss contract ``model(x, t, cond)``.

Every diffjax network is called as ``net(x, t_input, cond, train=False, rngs=None)`` in its
own time units (DDPM index, ``999 t``, sigma, SiT time, ...). Two objects carry it across:

* :class:`Denoiser`, a pytree over the split NNX model (``graphdef`` static, parameters and
  other state traced) that converts diffjax time (data at ``t = 0``) with
  :func:`diffjax.adapters.time_input`, so :func:`diffjax.sample` traces the weights instead of
  baking them into the compiled program, and a second call with new weights does not recompile.
  Pass it *into* jitted code as an argument; ``jax.jit(denoiser)`` itself is not meaningful.
* :class:`Network`, an architecture with its conventions (time input, sign, EDM
  preconditioning, Karras et al. 2022 Table 1): it initialises parameters and binds them into a
  :class:`Denoiser` (wrapped in :class:`~diffjax.parameterization.EDMPrecond` when
  preconditioned), for sampling or, with a dropout key, for training. Training methods
  (:mod:`diffjax.methods`) receive a :class:`Network`, never a config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx, struct

from diffjax import adapters
from diffjax.models.layers import at_least_float32
from diffjax.parameterization import EDMPrecond

__all__ = ["Denoiser", "Network", "as_denoiser", "PRECONDS"]

#: ``Network.precond`` values: EDM's preconditioning coefficients (Karras et al. 2022, Table 1)
PRECONDS = ("edm", "vp", "ve")


@struct.dataclass
class Denoiser:
    """``(x, t, cond) -> prediction`` over a split NNX model.

    Attributes:
      graphdef: the NNX graph definition (static).
      state: the model's parameters (or its whole state; traced).
      time_input: :func:`diffjax.adapters.time_input` kind.
      process: the diffjax process (needed by sigma-based kinds), a pytree child.
      num_timesteps: ``T`` of DDPM-index kinds.
      negate_output: flip the sign (a SiT velocity, data at ``t = 1``, into diffjax's).
      null_label: the label of the unconditional class (classifier-free guidance), if any.
      rest: non-parameter state (fixed tables, RNG counters) merged with ``state``, or ``None``.
      train: call the network in training mode (dropout on, drawn from ``dropout_key``).
      dropout_key: the PRNG key of the dropout masks when ``train``.
    """

    graphdef: Any = struct.field(pytree_node=False)
    state: Any
    time_input: str = struct.field(pytree_node=False, default="t")
    process: Any = None
    num_timesteps: int = struct.field(pytree_node=False, default=1000)
    negate_output: bool = struct.field(pytree_node=False, default=False)
    null_label: int | None = struct.field(pytree_node=False, default=None)
    rest: Any = None
    train: bool = struct.field(pytree_node=False, default=False)
    dropout_key: Any = None

    def __call__(self, x, t, cond: Any = None):
        return self.raw(x, adapters.time_input(self.time_input, self.process, self.num_timesteps)(
            at_least_float32(t)), cond)

    def raw(self, x, time_value, cond: Any = None):
        """The network on its own time input (what a preconditioner feeds it)."""
        states = (self.state,) if self.rest is None else (self.state, self.rest)
        net = nnx.merge(self.graphdef, *states)
        kw = dict(train=True, rngs=nnx.Rngs(dropout=self.dropout_key)) if self.train else {}
        out = net(x, time_value, cond, **kw).astype(x.dtype)
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
    graphdef, state = nnx.split(model)
    return Denoiser(graphdef, state, time_input, process, num_timesteps, negate_output,
                    num_classes_of(model))


def num_classes_of(model) -> int | None:
    """Classes of a class-conditional network (``None`` when unconditional)."""
    n = getattr(getattr(model, "config", None), "num_classes", None)
    if n is None:
        n = getattr(model, "num_classes", None)
    return int(n) if n else None


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """An architecture with its conventions: builds, initialises and binds parameters.

    Attributes:
      build: ``rngs -> nnx.Module``; called abstractly once (``nnx.eval_shape``) for the graph,
        concretely by :meth:`init`.
      process: the diffjax process the network is trained on.
      time_input: what the network is fed (:func:`diffjax.adapters.time_input`); unused with
        ``precond``, which feeds ``c_noise``.
      num_timesteps: ``T`` of the DDPM-index time inputs (default: the process's, else 1000).
      negate_output: flip the output's sign.
      precond: ``None`` or a key of :data:`PRECONDS`: the bound model is then
        ``EDMPrecond(raw)``, an ``'x0'`` model (Karras et al. 2022, eq. 7 and Table 1).
      sigma_data: the data standard deviation of the preconditioning.
    """

    build: Callable[[nnx.Rngs], nnx.Module]
    process: Any
    time_input: str = "t"
    num_timesteps: int | None = None
    negate_output: bool = False
    precond: str | None = None
    sigma_data: float = 0.5

    def __post_init__(self):
        if self.precond not in (None,) + PRECONDS:
            raise ValueError(f"unknown precond {self.precond!r}; expected one of {PRECONDS} "
                             "or None")
        if self.num_timesteps is None:
            object.__setattr__(self, "num_timesteps",
                               int(getattr(self.process, "num_steps", 1000)))
        adapters.time_input(self.time_input, self.process, self.num_timesteps)  # validates
        abstract = nnx.eval_shape(lambda: self.build(nnx.Rngs(0)))
        graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
        if jax.tree_util.tree_leaves(rest):
            # non-parameter state (fixed tables, RNG counters) must be concrete: build it once
            rest = nnx.state(self.build(nnx.Rngs(0)), nnx.Not(nnx.Param))
        else:
            rest = None
        object.__setattr__(self, "abstract", abstract)
        object.__setattr__(self, "graphdef", graphdef)
        object.__setattr__(self, "rest", rest)

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional network (its null label is this number), else None."""
        return num_classes_of(self.abstract)

    def init(self, key) -> Any:
        """Fresh parameters (an ``nnx.State`` of the ``nnx.Param`` leaves) from ``key``."""
        return nnx.state(self.build(nnx.Rngs(key)), nnx.Param)

    def raw(self, params, *, train: bool = False, key=None) -> Denoiser:
        """The network on its own time input: ``net(x, time_value, cond)`` (what a
        preconditioner wraps); ``key`` draws the dropout masks when ``train``."""
        return Denoiser(self.graphdef, params, "t", None, self.num_timesteps,
                        self.negate_output, self.num_classes, self.rest, bool(train),
                        key if train else None)

    def bind(self, params, *, train: bool = False, key=None):
        """``model(x, t, cond)`` in diffjax time: a :class:`Denoiser` pytree, or
        ``EDMPrecond(raw)`` with ``precond`` (both traced, so a sampler compiles once)."""
        if self.precond:
            return EDMPrecond(self.raw(params, train=train, key=key), self.process,
                              self.sigma_data, coeffs=self.precond)
        return Denoiser(self.graphdef, params, self.time_input, self.process,
                        self.num_timesteps, self.negate_output, self.num_classes, self.rest,
                        bool(train), key if train else None)
