"""Adaptive Dormand–Prince 5(4) ("dopri5") ODE integrator in pure JAX.

The solver is one ``lax.while_loop`` over step attempts, so it is jit-compatible, its
compile time does not depend on the number of steps, and the tolerances, the end points and
``max_steps`` may be traced values (changing them never recompiles a jitted caller).

Method (Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae", J. Comput. Appl.
Math. 6(1); tableau as in Hairer, Nørsett & Wanner, *Solving ODEs I*, sec. II.5, Table 5.2):

* seven stages, the fifth-order solution is propagated (local extrapolation) and the
  embedded fourth-order solution only estimates the error;
* FSAL ("first same as last"): the seventh stage is ``f(t + h, y_new)``, reused as the first
  stage of the next step, so an accepted or rejected step costs six new evaluations;
* error norm: ``|| err_i / (atol + rtol * max(|y_i|, |y_new_i|)) ||`` with an RMS norm by
  default (Hairer et al. eq. II.4.11); the step is accepted when the norm is ``<= 1``;
* step-size control: ``h_new = h * clip(safety * norm^(-1/5), min_factor, max_factor)``
  (exponent ``1 / (q + 1)`` with ``q = 4``, the order of the error estimate), never growing
  right after a rejection;
* starting step: the algorithm of Hairer et al. sec. II.4 ("Starting step size"), two
  evaluations of ``f``.

This is the solver score_sde runs through ``scipy.integrate.solve_ivp(method='RK45')`` for
its PF-ODE sampler and likelihood (``sampling.py:get_ode_sampler``,
``likelihood.py:get_likelihood_fn``); the implementation here is written from the formulas
above.

The state ``y`` may be any pytree of floating arrays (a flat array is the one-leaf case);
time runs forwards (``t1 > t0``) or backwards (``t1 < t0``). Time is held in the dtype of the
state (float32 unless x64 is enabled).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction as _F
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = Any

__all__ = ["ODEResult", "dopri5", "rms_norm", "batch_max_rms_norm", "DOPRI5_TABLEAU"]

# --------------------------------------------------------------------------------------------
# Butcher tableau (exact rationals, converted once to Python floats)
# --------------------------------------------------------------------------------------------

_C_EXACT = (_F(0), _F(1, 5), _F(3, 10), _F(4, 5), _F(8, 9), _F(1), _F(1))
_A_EXACT = (
    (),
    (_F(1, 5),),
    (_F(3, 40), _F(9, 40)),
    (_F(44, 45), _F(-56, 15), _F(32, 9)),
    (_F(19372, 6561), _F(-25360, 2187), _F(64448, 6561), _F(-212, 729)),
    (_F(9017, 3168), _F(-355, 33), _F(46732, 5247), _F(49, 176), _F(-5103, 18656)),
    (_F(35, 384), _F(0), _F(500, 1113), _F(125, 192), _F(-2187, 6784), _F(11, 84)),
)
#: fifth-order weights (identical to the last row of A: that is what makes FSAL work)
_B5_EXACT = (_F(35, 384), _F(0), _F(500, 1113), _F(125, 192), _F(-2187, 6784), _F(11, 84), _F(0))
#: embedded fourth-order weights
_B4_EXACT = (
    _F(5179, 57600), _F(0), _F(7571, 16695), _F(393, 640), _F(-92097, 339200), _F(187, 2100),
    _F(1, 40),
)

#: ``(c, A, b5, b4)`` of Dormand–Prince 5(4) as Python floats (for tests and inspection).
DOPRI5_TABLEAU = (
    tuple(float(c) for c in _C_EXACT),
    tuple(tuple(float(a) for a in row) for row in _A_EXACT),
    tuple(float(b) for b in _B5_EXACT),
    tuple(float(b) for b in _B4_EXACT),
)
_C = DOPRI5_TABLEAU[0]
_A = DOPRI5_TABLEAU[1]
#: error weights b5 - b4 (computed exactly, then rounded)
_E = tuple(float(b5 - b4) for b5, b4 in zip(_B5_EXACT, _B4_EXACT, strict=True))

_ERROR_EXPONENT = -1.0 / 5.0  # -1 / (q + 1), q = 4 (order of the embedded estimate)


class ODEResult(NamedTuple):
    """What :func:`dopri5` returns.

    Attributes:
      y: the state at ``t`` (same pytree structure as ``y0``).
      t: the time reached; equals ``t1`` exactly when ``success``.
      num_fevals: evaluations of ``fun`` (int32).
      num_accepted: accepted steps (int32).
      num_rejected: rejected step attempts (int32).
      success: ``t1`` was reached within ``max_steps`` attempts without the step size
        collapsing (bool scalar).
    """

    y: Any
    t: Array
    num_fevals: Array
    num_accepted: Array
    num_rejected: Array
    success: Array


# --------------------------------------------------------------------------------------------
# Norms of the scaled error (a pytree shaped like the state)
# --------------------------------------------------------------------------------------------


def rms_norm(tree: Any) -> Array:
    """Root-mean-square over every element of every leaf (Hairer et al. eq. II.4.11)."""
    leaves = jax.tree_util.tree_leaves(tree)
    total = sum(jnp.sum(jnp.square(leaf)) for leaf in leaves)
    count = sum(leaf.size for leaf in leaves)
    return jnp.sqrt(total / max(count, 1))


def batch_max_rms_norm(tree: Any) -> Array:
    """Max over the leading (batch) axis of the per-example RMS over all leaves.

    Every leaf must have the batch as its first axis. With this norm each example of a batch
    meets the tolerance on its own (up to the usual heuristics of error control), whatever the
    batch size; the plain :func:`rms_norm` of a batch is an average that lets one hard example
    be under-resolved when it is surrounded by easy ones.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    batch = leaves[0].shape[0] if leaves[0].ndim else 1
    total = 0.0
    count = 0
    for leaf in leaves:
        if leaf.ndim == 0 or leaf.shape[0] != batch:
            raise ValueError(
                "batch_max_rms_norm needs every state leaf to have the batch axis first; "
                f"got leaf shapes {[tuple(l.shape) for l in leaves]}"
            )
        total = total + jnp.sum(jnp.square(leaf.reshape(batch, -1)), axis=1)
        count += leaf.size // batch
    return jnp.max(jnp.sqrt(total / max(count, 1)))


# --------------------------------------------------------------------------------------------
# The solver
# --------------------------------------------------------------------------------------------


def _lincomb(y, h, coefs, ks):
    """``y + h * sum_j coefs[j] * ks[j]`` leafwise (zero coefficients skipped)."""
    out = []
    for i, yl in enumerate(y):
        acc = None
        for c, k in zip(coefs, ks, strict=True):
            if c != 0.0:
                term = c * k[i]
                acc = term if acc is None else acc + term
        out.append(yl if acc is None else yl + (h * acc).astype(yl.dtype))
    return out


def _concrete_float(v):
    try:
        return float(v)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def dopri5(
    fun: Callable[[Array, Any, Any], Any],
    y0: Any,
    t0: Array,
    t1: Array,
    args: Any = None,
    *,
    rtol: Array = 1e-5,
    atol: Array = 1e-5,
    first_step: Array | None = None,
    max_steps: Array = 10_000,
    safety: float = 0.9,
    min_factor: float = 0.2,
    max_factor: float = 10.0,
    norm: Callable[[Any], Array] | None = None,
) -> ODEResult:
    """Integrate ``dy/dt = fun(t, y, args)`` from ``t0`` to ``t1`` with adaptive dopri5.

    Args:
      fun: the vector field ``fun(t, y, args) -> dy/dt``, with ``t`` a scalar and the output a
        pytree shaped like ``y``.
      y0: initial state, a pytree of floating arrays.
      t0: initial time (scalar; may be traced).
      t1: final time (scalar; may be traced); ``t1 < t0`` integrates backwards.
      args: extra pytree passed through to ``fun`` (traced under ``jit``).
      rtol: relative tolerance (may be traced).
      atol: absolute tolerance (may be traced).
      first_step: initial ``|h|``; ``None`` selects it automatically (Hairer et al. II.4).
      max_steps: maximum number of step attempts, accepted plus rejected (may be traced).
      safety: safety factor of the step-size update (0.9 as in Hairer's DOPRI5, scipy).
      min_factor: smallest factor by which the step may shrink in one update (``<= 1``).
      max_factor: largest factor by which the step may grow in one update (``>= 1``).
      norm: the error norm applied to the scaled error pytree; default :func:`rms_norm`.
        :func:`batch_max_rms_norm` gives per-example error control on a batched state.

    Returns:
      An :class:`ODEResult`: final state and time, evaluation and step counts, success flag.
      Under ``jit`` a failure (``max_steps`` exhausted, step size underflow, non-finite
      vector field) is only reported through ``success``; ``y`` is then the state at ``t``.
    """
    leaves, treedef = jax.tree_util.tree_flatten(y0)
    if not leaves:
        raise ValueError("y0 must contain at least one array")
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    for leaf in leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise ValueError(f"every leaf of y0 must be floating point; got dtype {leaf.dtype}")
    if not (0.0 < safety <= 1.0):
        raise ValueError(f"safety must lie in (0, 1]; got {safety}")
    if not (0.0 < min_factor <= 1.0 <= max_factor):
        raise ValueError(
            f"need 0 < min_factor <= 1 <= max_factor; got min_factor={min_factor}, "
            f"max_factor={max_factor}"
        )
    for name, tol in (("rtol", rtol), ("atol", atol)):
        v = _concrete_float(tol)
        if v is not None and not v > 0.0:
            raise ValueError(f"{name} must be positive; got {tol}")
    norm = rms_norm if norm is None else norm

    tdtype = jnp.result_type(*[leaf.dtype for leaf in leaves])
    if jnp.issubdtype(tdtype, jnp.complexfloating):
        tdtype = jnp.finfo(tdtype).dtype
    t0 = jnp.asarray(t0, tdtype)
    t1 = jnp.asarray(t1, tdtype)
    if t0.ndim or t1.ndim:
        raise ValueError(f"t0 and t1 must be scalars; got shapes {t0.shape}, {t1.shape}")
    rtol = jnp.asarray(rtol, tdtype)
    atol = jnp.asarray(atol, tdtype)
    max_steps = jnp.asarray(max_steps, jnp.int32)
    direction = jnp.where(t1 >= t0, 1.0, -1.0).astype(tdtype)
    span = jnp.abs(t1 - t0)
    feps = jnp.finfo(tdtype).eps

    def f(t, y):
        out = jax.tree_util.tree_leaves(fun(t, jax.tree_util.tree_unflatten(treedef, y), args))
        if len(out) != len(y):
            raise ValueError("fun(t, y, args) must return a pytree with the structure of y")
        return [o.astype(yl.dtype) for o, yl in zip(out, y, strict=True)]

    def scaled_norm(v, ya, yb):
        scaled = [
            vl / (atol + rtol * jnp.maximum(jnp.abs(al), jnp.abs(bl)))
            for vl, al, bl in zip(v, ya, yb, strict=True)
        ]
        return norm(jax.tree_util.tree_unflatten(treedef, scaled)).astype(tdtype)

    f0 = f(t0, leaves)
    nfe0 = 1

    if first_step is None:
        # Hairer, Nørsett & Wanner, sec. II.4, "Starting step size" (a)-(f).
        d0 = scaled_norm(leaves, leaves, leaves)
        d1 = scaled_norm(f0, leaves, leaves)
        h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-30))
        h0 = jnp.minimum(h0, span).astype(tdtype)
        y_probe = _lincomb(leaves, direction * h0, (1.0,), (f0,))
        f_probe = f(t0 + direction * h0, y_probe)
        diff = [a - b for a, b in zip(f_probe, f0, strict=True)]
        d2 = scaled_norm(diff, leaves, leaves) / jnp.maximum(h0, jnp.finfo(tdtype).tiny)
        dmax = jnp.maximum(d1, d2)
        h1 = jnp.where(
            dmax <= 1e-15,
            jnp.maximum(1e-6, h0 * 1e-3),
            (0.01 / jnp.maximum(dmax, 1e-15)) ** (-_ERROR_EXPONENT),
        )
        h_init = jnp.minimum(jnp.minimum(100.0 * h0, h1), span)
        nfe0 += 1
    else:
        h_init = jnp.minimum(jnp.abs(jnp.asarray(first_step, tdtype)), span)
    h_init = jnp.where(jnp.isfinite(h_init), h_init, span).astype(tdtype)

    zero = jnp.zeros((), jnp.int32)
    # carry: t, y, f(t, y), |h|, nfe, accepted, rejected, last attempt rejected, failed
    init = (t0, leaves, f0, h_init, zero + nfe0, zero, zero, jnp.array(False), jnp.array(False))

    def cond(carry):
        t, _, _, h, _, n_acc, n_rej, _, failed = carry
        remaining = direction * (t1 - t)
        return (remaining > 0) & (n_acc + n_rej < max_steps) & ~failed

    def body(carry):
        t, y, k1, h_abs, nfe, n_acc, n_rej, prev_rej, _ = carry
        remaining = direction * (t1 - t)
        last = h_abs >= remaining
        h_abs = jnp.minimum(h_abs, remaining)
        h = direction * h_abs
        t_new = jnp.where(last, t1, t + h)
        ks = [k1]
        for i in range(1, 7):
            yi = _lincomb(y, h, _A[i], ks)
            ti = t_new if i == 6 else t + _C[i] * h
            ks.append(f(ti, yi))
        y_new = yi  # stage 7 sits at the fifth-order solution (b5 = last row of A)
        err = _lincomb([jnp.zeros_like(leaf) for leaf in y], h, _E, ks)
        err_norm = scaled_norm(err, y, y_new)
        err_norm = jnp.where(jnp.isfinite(err_norm), err_norm, jnp.inf)
        accept = err_norm <= 1.0

        factor = safety * jnp.where(err_norm > 0, err_norm, 1.0) ** _ERROR_EXPONENT
        factor = jnp.where(err_norm > 0, factor, max_factor)
        factor = jnp.clip(factor, min_factor, max_factor)
        # no growth right after a rejection, never growth on a rejection
        factor = jnp.where(accept & ~prev_rej, factor, jnp.minimum(factor, 1.0))
        h_next = (h_abs * factor).astype(tdtype)

        t_out = jnp.where(accept, t_new, t)
        y_out = [jnp.where(accept, a, b) for a, b in zip(y_new, y, strict=True)]
        f_out = [jnp.where(accept, a, b) for a, b in zip(ks[6], k1, strict=True)]
        # the step size has collapsed below the resolution of t: give up (reported)
        failed = h_next <= 4.0 * feps * jnp.abs(t_out)
        failed = failed & (direction * (t1 - t_out) > 0)
        return (
            t_out, y_out, f_out, h_next, nfe + 6,
            n_acc + accept.astype(jnp.int32), n_rej + (~accept).astype(jnp.int32),
            ~accept, failed,
        )

    t, y, _, _, nfe, n_acc, n_rej, _, failed = jax.lax.while_loop(cond, body, init)
    success = (t == t1) & ~failed
    return ODEResult(jax.tree_util.tree_unflatten(treedef, y), t, nfe, n_acc, n_rej, success)
