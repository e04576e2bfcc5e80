"""The contract every training method satisfies: :class:`Method` and what a factory gets.

A method is a small ``NamedTuple`` of pure functions built by a factory, in the style of optax's
``GradientTransformation`` (an ``init``/``update`` pair closed over the hyper-parameters): the
trainer, the checkpointer, the samplers and the evaluation only ever see these fields, so plain
diffusion, consistency models, shortcut models, IMM and model guidance train, resume, sample
and evaluate through one code path. A factory takes a :class:`Setup` (what the data and the
network are) and typed keyword arguments (the method's hyper-parameters, named as in its
paper), never a config object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from diffjax.models.denoiser import Network
from diffjax.train.ema import EMASpec

__all__ = ["Method", "Setup", "no_extra"]


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every method factory needs to know about the problem.

    Attributes:
      network: the architecture and its conventions (:class:`~diffjax.models.Network`):
        ``init(key)``, ``bind(params, train=..., key=...)``.
      process: the diffjax noise process (``network.process`` unless given).
      x_shape: one example's shape, e.g. ``(32, 32, 3)`` or ``(2,)``.
      num_classes: classes of a class-conditional network (labels ``0..K-1``, null label
        ``K``), or ``None`` when unconditional.
      batch_size: the global training batch (methods that split it check it now).
      num_train_steps: the length of the run (schedules such as CT's ``N(k)`` depend on it).
    """

    network: Network
    x_shape: tuple
    num_classes: int | None = None
    batch_size: int = 1
    num_train_steps: int = 1
    process: Any = None

    def __post_init__(self):
        if self.process is None:
            object.__setattr__(self, "process", self.network.process)
        object.__setattr__(self, "x_shape", tuple(int(d) for d in self.x_shape))

    def labels(self, batch: Mapping) -> Any:
        """The batch's labels for a class-conditional network, else ``None``."""
        return batch.get("label") if self.num_classes else None


def no_extra() -> dict:
    """``init_extra`` of a method that keeps no state besides parameters and EMAs."""
    return {}


class Method(NamedTuple):
    """A training method: pure functions the trainer, sampler and evaluation call.

    Attributes:
      name: the method's name (``'diffusion'``, ``'cd'``, ``'ct'``, ``'shortcut'``, ...).
      loss: ``(params, key, batch, state) -> (per_example_loss (B,), aux)``: the one loss
        signature. ``batch`` is ``{'image': x (B, *x_shape), 'label': (B,) when labelled}``;
        ``state`` is the pre-update :class:`~diffjax.train.TrainState` (``state.ema[name]`` as
        a target or guide, ``state.step`` for schedules, ``state.extra`` for method state).
      sample: ``(params, key, n, cond=None, offset=0) -> (n, *x_shape)`` through the one scan
        driver: sample ``i`` depends only on ``(key, offset + i)`` (same set at any chunk size
        and device count); ``cond`` the labels of a class-conditional model.
      init_extra: ``() -> dict`` of arrays carried in ``state.extra`` (iDDPM's loss history,
        CD's teacher, LPIPS weights): jit arguments and checkpointed, never constants.
      ema_specs: the EMAs the method defines (name -> :class:`~diffjax.train.EMASpec`).
      reads_emas: EMA names the loss reads from ``state.ema`` (the trainer checks that they
        exist, defined here or by the user).
      nfe: network evaluations per sample of ``sample``.
      init_params: ``key -> params`` replacing the network's initialisation (CD starts from
        its teacher), or ``None``.
      update_extra: ``(extra, aux) -> extra`` after a finite step (iDDPM's importance
        sampler), or ``None``.
      train_step: an own ``(state, batch) -> (state, metrics)`` for methods that update
        several networks (GANs), or ``None`` for the standard step around ``loss``.
      optimizer: an own optax transformation whose ``init`` builds ``state.opt_state`` (GANs:
        one optimizer per network, read by their ``train_step``), or ``None`` for the run's
        ``config.optim``.
    """

    name: str
    loss: Callable
    sample: Callable
    init_extra: Callable[[], dict] = no_extra
    ema_specs: Mapping[str, EMASpec] = {}
    reads_emas: tuple = ()
    nfe: int = 1
    init_params: Callable | None = None
    update_extra: Callable | None = None
    train_step: Callable | None = None
    optimizer: Any = None


def ema_if(name: str | None, decay: float | EMASpec | None) -> dict:
    """``{name: EMASpec}`` when a method defines the EMA ``name`` itself (``decay`` given), else
    ``{}`` (the user defines it, or the method reads none)."""
    if not name or decay is None:
        return {}
    return {name: decay if isinstance(decay, EMASpec) else EMASpec(decay=float(decay))}


__all__.append("ema_if")
