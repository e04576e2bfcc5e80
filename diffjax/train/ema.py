"""Exponential moving averages of parameters: fixed decay and EDM's half-life form.

* Fixed decay (DDPM, DiT, score_sde): ``ema <- d ema + (1 - d) theta`` after every step; DDPM
  uses ``d = 0`` on the first step (EMA starts at theta, ``tpu_utils.make_ema``).
* EDM half-life (Karras et al. 2022, ``training_loop.py``): ``beta = 0.5 ** (batch /
  max(halflife_nimg, 1e-8))`` with the ramp-up ``halflife_nimg = min(halflife, ramp * nimg)``
  (``nimg`` images seen so far), so early EMAs track the weights closely.
* A decay schedule ``decay_fn(step) -> mu`` (traced): consistency training's target rate
  ``mu(k)`` (Song et al. 2023, appendix C; :func:`diffjax.losses.consistency.ct_schedule_fn`),
  applied as given from the first step on.

Several EMAs are kept at once as a dict ``name -> params``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["EMASpec", "ema_decay", "update_emas"]


@struct.dataclass
class EMASpec:
    """One EMA: ``decay`` (fixed), ``halflife_kimg`` (EDM, with an optional ramp) or
    ``decay_fn`` (a schedule ``step -> decay`` of the traced 0-based step, e.g. CT's
    ``mu(k)``; it must be hashable, as a module-level function or ``functools.partial``)."""

    decay: float | None = struct.field(pytree_node=False, default=None)
    halflife_kimg: float | None = struct.field(pytree_node=False, default=None)
    rampup_ratio: float | None = struct.field(pytree_node=False, default=None)
    decay_fn: Callable[[Any], Any] | None = struct.field(pytree_node=False, default=None)

    def __post_init__(self):
        given = sum(v is not None for v in (self.decay, self.halflife_kimg, self.decay_fn))
        if given != 1:
            raise ValueError("an EMA needs exactly one of decay=, halflife_kimg= or decay_fn=")
        if self.decay_fn is not None and not callable(self.decay_fn):
            raise ValueError(f"decay_fn must be callable (step -> decay); got {self.decay_fn!r}")
        if self.decay is not None and not 0.0 <= self.decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1); got {self.decay}")


def ema_decay(spec: EMASpec, step: Any, batch_size: int) -> jax.Array:
    """The decay to apply after optimizer step ``step`` (0-based), as a traced scalar."""
    if spec.decay_fn is not None:
        return jnp.asarray(spec.decay_fn(jnp.asarray(step, jnp.int32)), jnp.float32)
    step = jnp.asarray(step, jnp.float32)
    if spec.decay is not None:
        return jnp.where(step == 0, 0.0, spec.decay)
    halflife = spec.halflife_kimg * 1000.0
    if spec.rampup_ratio is not None:
        nimg = (step + 1.0) * batch_size
        halflife = jnp.minimum(halflife, spec.rampup_ratio * nimg)
    return 0.5 ** (batch_size / jnp.maximum(halflife, 1e-8))


def update_emas(emas: Mapping[str, Any], params: Any, specs: Mapping[str, EMASpec], step: Any,
                batch_size: int) -> dict:
    """Update every EMA in ``emas`` towards ``params`` (fp32 arithmetic)."""
    out = dict(emas)
    for name, spec in specs.items():
        if name not in emas:
            raise ValueError(f"no EMA named {name!r} in the state (has {sorted(emas)})")
        d = ema_decay(spec, step, batch_size)
        out[name] = jax.tree_util.tree_map(
            lambda e, p, d=d: (d * e.astype(jnp.float32)
                               + (1.0 - d) * p.astype(jnp.float32)).astype(e.dtype),
            emas[name], params)
    return out
