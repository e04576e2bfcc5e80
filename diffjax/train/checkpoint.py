"""Orbax checkpoints of the training state and the data iterator, with safe resume.

A checkpoint at step ``s`` holds three items: ``state`` (the :class:`TrainState` pytree, saved
with each array's sharding), ``data`` (the grain iterator state, JSON) and ``meta`` (free-form
JSON: config, library version). Saves are asynchronous; ``max_to_keep`` and
``save_interval_steps`` are orbax's.

Resume (:meth:`Checkpointer.restore_latest`) tries the newest step first; a step that fails
to restore (a truncated or deleted file, a half-written directory) is reported with a warning
and the previous step is tried, so a crash during a save never loses the run. Orbax writes
into a temporary directory and renames it when complete, so unfinished saves are not listed.
Restoring onto a different device count works: arrays are restored with the shardings of the
*target* abstract state.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpointer"]


class Checkpointer:
    def __init__(self, directory, *, max_to_keep: int | None = 3, save_interval_steps: int = 1,
                 async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "meta"))

    def save(self, step: int, state: Any, data_state: Any = None, meta: dict | None = None,
             force: bool = False) -> bool:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"state": data_state}),
            meta=ocp.args.JsonSave(meta or {}),
        )
        return self.manager.save(int(step), args=args, force=force)

    def wait(self):
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(self, step: int, abstract_state: Any):
        """Restore ``(state, data_state, meta)`` at ``step`` onto ``abstract_state``'s
        shapes, dtypes and shardings (``jax.ShapeDtypeStruct`` leaves with ``sharding``)."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ))
        return out["state"], (out["data"] or {}).get("state"), out["meta"] or {}

    def restore_latest(self, abstract_state: Any):
        """Newest restorable checkpoint as ``(step, state, data_state, meta)``, or ``None``."""
        for step in reversed(self.steps()):
            try:
                state, data_state, meta = self.restore(step, abstract_state)
                jax.block_until_ready(state)
                return step, state, data_state, meta
            except Exception as e:  # corrupt or incomplete: fall back to the previous step
                warnings.warn(f"checkpoint at step {step} in {self.directory} could not be "
                              f"restored ({type(e).__name__}: {str(e)[:200]}); trying the "
                              "previous one", RuntimeWarning, stacklevel=2)
        return None

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: Any) -> Any:
    """``ShapeDtypeStruct`` tree (with shardings) of a concrete state, for restoring."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state)


__all__.append("abstract_like")
