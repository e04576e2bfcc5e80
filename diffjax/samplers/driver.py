"""The sampler driver: one jitted ``lax.scan`` over a precomputed time grid.

Design: every sampler is this one driver plus a small step object, so keys, sharding, tracing
and compile-time guarantees are written once.

* A **model** is any callable ``model(x, t, cond) -> prediction`` with ``t`` of shape
  ``(B,)`` in diffjax time; ``prediction`` names what it returns (``'eps'``, ``'x0'``,
  ``'v'``, ``'score'``, ``'velocity'``). Networks, exact oracles (:mod:`diffjax.analytic`)
  and guidance wrappers all look the same.
* A **step** is a small pytree (``flax.struct.dataclass``) with the method
  ``step(ctx, x, t, s, state) -> (x_next, state)`` that moves the batch from time ``t`` to
  ``s``. Its float fields (eta, churn, snr, ...) are leaves, hence traced. Diffusion steps use
  ``ctx.denoise`` (the prediction as ``(x0, eps)``); few-step maps whose network output is not
  a denoiser (a shortcut velocity at a fixed step size, IMM's ``G(x_t, t, s)``) use
  ``ctx.raw(x, *times)``, the model's own output.
* The **driver** scans the step over consecutive grid points, so compile time does not
  depend on the number of steps.

What is traced and what is static. The driver splits the model, step, process and
conditioning pytrees into array leaves (jax/numpy arrays and Python floats: traced) and
everything else (functions, ints, strings, graph definitions: static, part of the compile
key). So a guidance scale or eta held as a float in a pytree (``flax.struct.dataclass``,
``jax.tree_util.Partial``) never recompiles; a plain Python closure's captured values are
constants of the compiled program instead.

Randomness. Sample ``i`` uses the key ``fold_in(key, sample_offset + i)``: its initial noise
``z`` is drawn from ``fold_in(k_i, 0)`` (the start is ``step.prior_std(process, t_0) z``,
``sigma(t_0) z`` unless the step says otherwise) and step ``n``'s noise from
``fold_in(k_i, n + 1)``. No
draw depends on the batch size or the device count (as EDM's ``StackedRandomGenerator``).

Dtypes (the policy, written once). The sampler state ``x`` and the time grid share one
float dtype: ``x_init``'s (promoted to at least float32), or ``dtype`` (default float32) when
sampling from noise. So float64 flows end to end when ``jax_enable_x64`` is on and ``x_init``
is float64 (or ``dtype=jnp.float64``), and float32 runs are unchanged. Predictions are cast to
the state's dtype (a float64 oracle in a float32 run, or a bfloat16 network, cannot change
the scan carry's type); the noise is always drawn in float32 and then cast, so a float64 run
sees the same draws as a float32 one.

Sharding. With more than one device and a batch divisible by the device count, the batch
axis is sharded over a 1-D ``('data',)`` mesh of all devices (``jax.jit`` +
``NamedSharding``); pass ``mesh=`` to choose another.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from diffjax.grids import validate_grid
from diffjax.parameterization import (
    Prediction,
    check_kind,
    split_learned_variance,
    to_x0_eps,
)
from diffjax.processes import Process

Array = Any

__all__ = ["StepContext", "Step", "sample", "lower_sample", "make_denoise", "make_raw",
           "trace_count", "per_sample_keys"]

_TRACES = {"count": 0}


def trace_count() -> int:
    """How many times :func:`sample`'s program has been traced in this process: the driver's
    own compile counter (benchmarks report it; tests check that new parameter values do not
    retrace, without wrapping the model)."""
    return _TRACES["count"]


class StepContext(NamedTuple):
    """What a step sees besides ``(x, t, s, state)``.

    Attributes:
      denoise: ``denoise(x, t_scalar) -> Prediction`` (x0, eps and optional variance output).
      process: the noise process.
      keys: per-sample PRNG keys of this step, shape ``(B,)`` (typed) or ``(B, 2)``.
      index: step index ``n`` (int32 scalar, 0 for the first step).
      num_steps: number of steps ``N`` of the grid (static int).
      is_last: ``n == N - 1`` (bool scalar).
      raw: ``raw(x, *times) -> model(x, *times_b, cond)``, the model's own output, each time
        (scalar or ``(B,)``) broadcast to ``(B,)``: for steps whose model is not a denoiser of
        ``(x, t)`` (e.g. IMM's ``g(x, t, s, cond)``).
    """

    denoise: Callable[[Array, Array], Prediction]
    process: Process
    keys: Array
    index: Array
    num_steps: int
    is_last: Array
    raw: Callable[..., Array]

    def normal(self, x: Array, salt: int = 0) -> Array:
        """Per-sample standard normal draws shaped like ``x``; ``salt`` separates several
        draws within one step."""
        keys = self.keys if salt == 0 else jax.vmap(jax.random.fold_in, (0, None))(self.keys, salt)
        z = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], jnp.float32))(keys)
        return z.astype(x.dtype)  # float32 draws: the same noise in float32 and float64 runs


class Step:
    """Base class of sampler steps (documentation of the protocol; subclasses are
    ``flax.struct.dataclass`` pytrees)."""

    #: network evaluations per step (documentation; the last step may use fewer)
    nfe: int = 1

    def init(self, x: Array, grid: Array) -> Any:
        """Initial step state (e.g. a multistep solver's history)."""
        return ()

    def prior_std(self, process: Process, t0: Array) -> Array:
        """Standard deviation of the initial draw at ``t_0`` (``x = prior_std z``):
        ``sigma(t_0)``, the marginal's noise part. IMM overrides it (``sigma_d``)."""
        return process.sigma(t0)

    def __call__(self, ctx: StepContext, x: Array, t: Array, s: Array, state: Any):
        raise NotImplementedError


def make_denoise(model: Callable, process: Process, prediction: str, cond: Any = None,
                 learned_variance: bool = False, clip_x0: Any = None):
    """Build ``denoise(x, t) -> Prediction`` from a raw model and its prediction kind.

    ``clip_x0``: if given (a float bound, e.g. 1.0 for data in [-1, 1]), ``x0_hat`` is clipped
    to ``[-clip_x0, clip_x0]`` and ``eps_hat`` recomputed from it (DDPM/iDDPM's
    ``clip_denoised``).
    """
    check_kind(prediction)

    def denoise(x, t):
        t = jnp.asarray(t, state_dtype(x))
        tb = jnp.broadcast_to(t, (x.shape[0],)) if t.ndim == 0 else t
        out = model(x, tb, cond)
        v_var = None
        if learned_variance:
            out, v_var = split_learned_variance(out)
        x0, eps = to_x0_eps(prediction, out, x, tb, process)
        if clip_x0 is not None:
            x0 = jnp.clip(x0, -clip_x0, clip_x0)
            tt = tb.reshape((-1,) + (1,) * (x.ndim - 1))
            eps = (x - process.alpha(tt) * x0) / process.sigma(tt)
        # the dtype policy: predictions in the state's dtype (scan carries keep their type)
        return Prediction(x0.astype(x.dtype), eps.astype(x.dtype), v_var)

    return denoise


def state_dtype(x: Array):
    """The float dtype of a sampler state and its time: ``x``'s dtype promoted to at least
    float32 (canonical: float32 unless ``jax_enable_x64`` is on)."""
    dt = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    return jax.dtypes.canonicalize_dtype(jnp.promote_types(dt, jnp.float32))


def make_raw(model: Callable, cond: Any = None):
    """Build ``raw(x, *times) -> model(x, *times_b, cond)`` with each time broadcast to
    ``(B,)`` (the model's own output, for :attr:`StepContext.raw`)."""

    def raw(x, *times):
        tb = []
        for t in times:
            t = jnp.asarray(t, state_dtype(x))
            tb.append(jnp.broadcast_to(t, (x.shape[0],)) if t.ndim == 0 else t)
        return model(x, *tb, cond)

    return raw


# ----------------------------------------------------------------------------------------------
# Splitting pytrees into traced leaves and a hashable static part
# ----------------------------------------------------------------------------------------------


def _is_dynamic(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, complex)) and not isinstance(
        leaf, bool
    )


def _node_key(treedef):
    """Structural key with every node's type and aux data.

    ``PyTreeDef.__eq__`` alone is not enough: in jax 0.10 two dataclass nodes of different
    classes with the same fields compare equal (``Euler()`` == ``Heun()``), which would make
    the compile cache hand one step's program to the other.
    """
    nd = treedef.node_data()
    return (None if nd is None else (nd[0], _Hashable(nd[1])),
            tuple(_node_key(c) for c in treedef.children()))


@dataclasses.dataclass(frozen=True)
class _Static:
    treedef: Any
    static_leaves: tuple

    @functools.cached_property
    def _key(self):
        return (_node_key(self.treedef), self.static_leaves)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key


def partition_static(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dyn = [leaf if _is_dynamic(leaf) else None for leaf in leaves]
    static = tuple(None if _is_dynamic(leaf) else _Hashable(leaf) for leaf in leaves)
    return dyn, _Static(treedef, static)


def _structural_hash(v) -> int:
    """A hash consistent with ``==`` for static parts: lists and dicts (rebuilt on every flatten,
    e.g. the key lists in an ``nnx.State``'s node data) hash by content, so equal static parts
    hit the compile cache; other unhashable values hash by identity."""
    if isinstance(v, (list, tuple)):
        return hash((type(v).__name__,) + tuple(_structural_hash(x) for x in v))
    if isinstance(v, dict):
        return hash(("dict",) + tuple((_structural_hash(k), _structural_hash(x))
                                      for k, x in v.items()))
    try:
        return hash(v)
    except TypeError:
        return id(v)


class _Hashable:
    """Wraps a static leaf; equal leaves hash equally (:func:`_structural_hash`)."""

    __slots__ = ("v",)

    def __init__(self, v):
        self.v = v

    def __hash__(self):
        return _structural_hash(self.v)

    def __eq__(self, other):
        if not isinstance(other, _Hashable):
            return False
        if self.v is other.v:
            return True
        try:
            return bool(self.v == other.v)
        except Exception:
            return False


def combine_static(dyn, static: _Static):
    leaves = [d if s is None else s.v for d, s in zip(dyn, static.static_leaves)]
    return jax.tree_util.tree_unflatten(static.treedef, leaves)


# ----------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------


def per_sample_keys(key: Array, batch: int, offset: Any = 0) -> Array:
    """``fold_in(key, offset + i)`` for ``i < batch``: the key of each sample."""
    ids = jnp.asarray(offset, jnp.uint32) + jnp.arange(batch, dtype=jnp.uint32)
    return jax.vmap(jax.random.fold_in, (None, 0))(key, ids)


@dataclasses.dataclass(frozen=True)
class _Config:
    shape: tuple
    prediction: str
    learned_variance: bool
    mesh: Any
    return_trajectory: bool
    has_x_init: bool
    dtype: Any


def _constrain(x, mesh):
    if mesh is None:
        return x
    spec = P("data", *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


@functools.partial(jax.jit, static_argnames=("static", "config"))
def _run(dyn, key, grid, x_init, offset, *, static: _Static, config: _Config):
    _TRACES["count"] += 1
    model, step, process, cond, clip_x0 = combine_static(dyn, static)
    shape = config.shape
    num_steps = grid.shape[0] - 1
    keys = per_sample_keys(key, shape[0], offset)
    if config.has_x_init:
        x = x_init.astype(config.dtype)
    else:
        z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), shape[1:],
                                                 jnp.float32))(keys)
        x = (step.prior_std(process, grid[0]) * z.astype(config.dtype)).astype(config.dtype)
    x = _constrain(x, config.mesh)
    denoise = make_denoise(model, process, config.prediction, cond, config.learned_variance,
                           clip_x0)
    raw = make_raw(model, cond)
    state0 = step.init(x, grid)

    def body(carry, inp):
        x, state = carry
        n, t, s = inp
        step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, n + 1)
        ctx = StepContext(denoise, process, step_keys, n, num_steps, n == num_steps - 1, raw)
        x_next, state = step(ctx, x, t, s, state)
        x_next = _constrain(x_next.astype(x.dtype), config.mesh)
        return (x_next, state), (x_next if config.return_trajectory else None)

    xs = (jnp.arange(num_steps, dtype=jnp.int32), grid[:-1], grid[1:])
    (x, _), traj = jax.lax.scan(body, (x, state0), xs)
    return (x, traj) if config.return_trajectory else x


def _onto_mesh(tree, mesh: Mesh):
    """Replicate on ``mesh`` the arrays *committed* to other devices (parameters left on a
    training mesh of one device or an FSDP layout); ``jit`` would refuse to mix them with a
    batch sharded over ``mesh``. Uncommitted arrays are left for ``jit`` to place."""
    devices = set(mesh.devices.flat)
    replicated = NamedSharding(mesh, P())

    def one(x):
        if isinstance(x, jax.Array) and x.committed and set(x.sharding.device_set) != devices:
            return jax.device_put(x, replicated)
        return x

    return jax.tree_util.tree_map(one, tree)


def _default_mesh(batch: int):
    devices = jax.devices()
    if len(devices) > 1 and batch % len(devices) == 0:
        return Mesh(np.asarray(devices), ("data",))
    return None


def sample(
    model: Callable,
    key: Array,
    shape: tuple[int, ...],
    grid: Array,
    step: Step,
    *,
    process: Process,
    prediction: str = "eps",
    cond: Any = None,
    x_init: Array | None = None,
    learned_variance: bool = False,
    clip_x0: float | None = None,
    sample_offset: int = 0,
    mesh: Mesh | None | str = "auto",
    return_trajectory: bool = False,
    dtype: Any = None,
):
    """Draw samples by running ``step`` over ``grid`` in one jitted ``lax.scan``.

    Args:
      model: ``model(x, t, cond) -> prediction`` (``t`` has shape ``(B,)``). Make it a pytree
        (e.g. ``jax.tree_util.Partial(apply, params)``) so its arrays are traced, not baked in.
      key: a PRNG key; sample ``i`` depends only on ``(key, sample_offset + i)``.
      shape: ``(B, ...)`` shape of the batch of samples.
      grid: time points ``t_0 > ... > t_N`` in [0, 1] (see :mod:`diffjax.grids`); an
        increasing grid runs a deterministic step forward (DDIM inversion).
      step: a sampler step, e.g. ``DDIM(eta=0.)``, ``Heun()``, ``EDMStochastic(...)``.
      process: the noise process the model was trained with.
      prediction: what ``model`` returns (``'eps'``, ``'x0'``, ``'v'``, ``'score'``,
        ``'velocity'``).
      cond: conditioning passed through to ``model`` (labels, masks, ...).
      x_init: start from this batch instead of ``sigma(t_0) * z``.
      learned_variance: the model outputs ``2C`` channels (prediction and iDDPM's variance
        interpolation ``v``).
      clip_x0: clip ``x0_hat`` to ``[-clip_x0, clip_x0]`` (DDPM's ``clip_denoised``).
      sample_offset: index of the first sample (to continue a sequence of batches).
      mesh: ``'auto'`` (all devices when the batch divides), ``None`` (no sharding) or a mesh
        with a ``'data'`` axis.
      return_trajectory: also return the stacked states after each step, shape ``(N, *shape)``.
      dtype: float dtype of the state and the time grid. Default: ``x_init``'s dtype (promoted
        to at least float32) or float32 without ``x_init``. ``jnp.float64`` needs
        ``jax_enable_x64``.

    Returns:
      The final batch (and the trajectory if asked).
    """
    args, kwargs = _prepare(model, key, shape, grid, step, process, prediction, cond, x_init,
                            learned_variance, clip_x0, sample_offset, mesh, return_trajectory,
                            dtype)
    return _run(*args, **kwargs)


def lower_sample(model, key, shape, grid, step, *, process, prediction="eps", cond=None,
                 x_init=None, learned_variance=False, clip_x0=None, sample_offset=0,
                 mesh="auto", return_trajectory=False, dtype=None):
    """``jax.jit(...).lower`` of exactly what :func:`sample` would run (for compile-time and
    HLO inspection; ``.compile()`` the result to time compilation)."""
    args, kwargs = _prepare(model, key, shape, grid, step, process, prediction, cond, x_init,
                            learned_variance, clip_x0, sample_offset, mesh, return_trajectory,
                            dtype)
    return _run.lower(*args, **kwargs)


def _prepare(model, key, shape, grid, step, process, prediction, cond, x_init, learned_variance,
             clip_x0, sample_offset, mesh, return_trajectory, dtype=None):
    if not callable(model):
        raise TypeError(f"model must be callable model(x, t, cond); got {type(model).__name__}")
    if not isinstance(step, Step):
        raise TypeError(
            f"step must be a diffjax sampler step (e.g. diffjax.samplers.DDIM()); got {step!r}"
        )
    check_kind(prediction)
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2 or any(d < 1 for d in shape):
        raise ValueError(f"shape must be (batch, ...) with positive sizes; got {shape}")
    g = validate_grid(grid)
    if x_init is not None and tuple(x_init.shape) != shape:
        raise ValueError(f"x_init has shape {tuple(x_init.shape)}, expected shape {shape}")
    if x_init is None and g[1] > g[0]:
        raise ValueError("an increasing grid (inversion) needs x_init, the data to invert")
    if mesh == "auto":
        mesh = _default_mesh(shape[0])
    elif mesh is not None and shape[0] % mesh.shape["data"]:
        raise ValueError(f"batch {shape[0]} is not divisible by the mesh's data axis {mesh.shape}")
    dyn, static = partition_static((model, step, process, cond, clip_x0))
    if mesh is not None:
        dyn = _onto_mesh(dyn, mesh)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {dtype}")
        if dtype == np.float64 and not jax.config.jax_enable_x64:
            raise ValueError("dtype=float64 needs jax_enable_x64 "
                             "(e.g. `with jax.enable_x64(True):`)")
    elif x_init is not None:
        dtype = state_dtype(jnp.asarray(x_init))
    else:
        dtype = np.dtype(np.float32)
    config = _Config(shape, prediction, bool(learned_variance), mesh, bool(return_trajectory),
                     x_init is not None, np.dtype(dtype))
    grid = jnp.asarray(grid, dtype)
    xi = jnp.zeros((), dtype) if x_init is None else jnp.asarray(x_init)
    return (dyn, key, grid, xi, jnp.uint32(sample_offset)), dict(static=static, config=config)
