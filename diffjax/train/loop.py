"""The training loop: steps, logging, periodic checkpoints, resume and preemption.

:func:`fit` runs ``train_step`` over batches from a resumable data loader, writes one JSON
line of metrics every ``log_every`` steps to ``workdir/metrics.jsonl``, saves a checkpoint
every ``save_every`` steps and at the end, and on SIGTERM (preemption) saves before
returning. Training state and loader state are restored from ``workdir/checkpoints`` when
present (:func:`restore_or_init`; unusable newest checkpoints are moved aside to
``checkpoints/corrupt/``). A step is saved at most once: a preemption save on a periodic save's
step, or of a step already on disk, is a no-op. Too many non-finite steps in a row raise a
``FloatingPointError`` naming the step, after the last good state was checkpointed.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from diffjax.train.checkpoint import Checkpointer

__all__ = ["fit", "restore_or_init", "PreemptionGuard"]


class PreemptionGuard:
    """Sets ``.requested`` on SIGTERM (the signal TPU/GPU schedulers send before preemption)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread: no handler, no preemption save
            self._old = None
        return self

    def _handler(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


def restore_or_init(checkpointer: Checkpointer | None, init_state: Callable[[], Any],
                    loader=None, *, abstract_state: Any = None):
    """Resume from the newest good checkpoint, else build a fresh state. Returns the state.

    Newer checkpoints that fail to restore or fail their integrity check are moved to
    ``corrupt/`` beside them (see :meth:`Checkpointer.restore_latest`), so training continues
    and saves through their step numbers.

    Args:
        checkpointer: where the checkpoints live (``None``: always a fresh state).
        init_state: ``() -> state``, called only when nothing is restored.
        loader: a resumable data loader whose state is restored beside the model's.
        abstract_state: the restore target, a tree of ``jax.ShapeDtypeStruct`` with
            shardings (:func:`diffjax.train.abstract_train_state`), or a ``() -> tree``
            callable. The checkpoint is read straight onto the devices, so resuming needs no
            throwaway concrete state (peak memory as a fresh start). ``None`` builds the
            fresh state first and restores onto its shapes and shardings (twice the memory).

    Raises:
        NoRestorableCheckpointError: checkpoints exist but none restores onto this state.
    """
    if checkpointer is None:
        return init_state()
    if abstract_state is None:
        state = init_state()
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    else:
        state = None
        abstract = abstract_state() if callable(abstract_state) else abstract_state
    found = checkpointer.restore_latest(abstract)
    if found is None:
        return init_state() if state is None else state
    _, state, data_state, _ = found
    if loader is not None and data_state is not None:
        # checkpoints hold the state as JSON text; grain's loaders want the bytes back
        if isinstance(data_state, str) and isinstance(loader.get_state(), bytes):
            data_state = data_state.encode()
        loader.set_state(data_state)
    return state


def _progress(step, num_steps, m, width=24):
    done = int(width * step / max(num_steps, 1))
    return (f"[{'#' * done}{'.' * (width - done)}] step {step}/{num_steps}  loss {m['loss']:.5f}  "
            f"{m['images_per_sec']:.0f} img/s  skipped {m['skipped']}")


def fit(state, train_step: Callable, batches: Iterator, *, num_steps: int,
        to_device: Callable = lambda b: b, checkpointer: Checkpointer | None = None,
        loader=None, save_every: int = 1000, log_every: int = 100, workdir=None,
        meta: dict | None = None, max_nonfinite: int = 20, log_fn: Callable | None = print,
        batch_size: int | None = None, writer=None, callback: Callable | None = None,
        callback_every: int = 0):
    """Train until ``state.step == num_steps`` (steps already done are not repeated).

    Every ``log_every`` steps: a progress line (step, loss, images/s) through ``log_fn``, a JSON
    line in ``workdir/metrics.jsonl`` and, with a ``writer``
    (:class:`diffjax.utils.tensorboard.SummaryWriter`), TensorBoard scalars. Every
    ``callback_every`` steps ``callback(state)`` runs (periodic sample grids).
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0; got {num_steps}")
    log_path = Path(workdir) / "metrics.jsonl" if workdir is not None else None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    step = int(state.step)
    bad_run, t0, history = 0, time.perf_counter(), []

    saved_at = None  # the step this call last saved: a second save of it would be a no-op

    def save(force=False):
        nonlocal saved_at
        if checkpointer is not None and int(state.step) != saved_at:
            data_state = loader.get_state() if loader is not None else None
            if isinstance(data_state, bytes):
                data_state = data_state.decode()
            if checkpointer.save(int(state.step), state, data_state, meta, force=force):
                saved_at = int(state.step)

    with PreemptionGuard() as guard:
        while step < num_steps:
            batch = to_device(next(batches))
            state, metrics = train_step(state, batch)
            step += 1
            finite = float(metrics["finite"])
            bad_run = 0 if finite else bad_run + 1
            if bad_run >= max_nonfinite:
                save(force=True)
                if checkpointer is not None:
                    checkpointer.wait()
                raise FloatingPointError(
                    f"loss or gradients non-finite for {bad_run} consecutive steps (last: step "
                    f"{step}); updates were skipped, the last good state is checkpointed")
            if step % log_every == 0 or step == num_steps:
                m = {k: float(np.asarray(v)) for k, v in metrics.items()}
                done = step % log_every or log_every
                sps = done / max(time.perf_counter() - t0, 1e-9)
                m.update(step=step, skipped=int(state.skipped), steps_per_sec=sps,
                         images_per_sec=sps * (batch_size or 0))
                t0 = time.perf_counter()
                history.append(m)
                if log_path is not None:
                    with log_path.open("a") as f:
                        f.write(json.dumps(m) + "\n")
                if writer is not None:
                    for k in ("loss", "grad_norm", "images_per_sec"):
                        writer.scalar(f"train/{k}", m[k], step)
                    writer.flush()
                if log_fn is not None:
                    log_fn(_progress(step, num_steps, m))
            if callback is not None and callback_every and step % callback_every == 0:
                callback(state)
            if step % save_every == 0 or step == num_steps:
                save(force=step == num_steps)
            if guard.requested:
                save(force=True)
                if log_fn is not None:
                    log_fn(f"SIGTERM: saved step {step}, stopping")
                break
    if checkpointer is not None:
        checkpointer.wait()
    return state, history
