"""Orbax checkpoints of the training state and the data iterator, with safe, self-healing resume.

A checkpoint at step ``s`` holds four items: ``state`` (the :class:`TrainState` pytree, saved
with each array's sharding), ``data`` (the grain iterator state, JSON), ``meta`` (free-form
JSON: config, library version) and ``integrity`` (JSON: a SHA-256 over every leaf of
``state``, see :func:`state_digest`). Saves are asynchronous; ``max_to_keep`` and
``save_interval_steps`` are orbax's. Saving a step that already exists is a no-op.

Resume (:meth:`Checkpointer.restore_latest`) tries the newest step first. A step is bad when
one of its metadata files is missing or is not valid JSON (``bad-metadata``), when it fails to
restore (``restore-error``: a truncated data file), when its recomputed digest differs from the
saved one (``hash-mismatch``: bytes overwritten in place) or when a floating leaf is not finite
(``non-finite``). A bad step is moved aside, never deleted, to ``corrupt/<step>-<reason>``,
orbax is told it is gone, one warning line names it, and the previous step is tried; training
then continues and saves through the bad step's number as usual. A step that merely fails to
restore is moved only once an older step restores (a changed model config makes every step
fail: nothing is moved and :class:`NoRestorableCheckpointError` is raised). Orbax writes into
a temporary directory and renames it when complete, so unfinished saves are not listed.
Checkpoints written before the ``integrity`` item existed restore with the finite check only.
Restoring onto a different device count works: arrays are restored with the shardings of the
*target* abstract state.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "NoRestorableCheckpointError", "abstract_like", "state_digest"]

_DIGEST_FORMAT = 1
# JSON files every complete step has (orbax 0.12 layout), and others that must parse if present
_REQUIRED_JSON = ("_CHECKPOINT_METADATA", "state/_METADATA", "data/metadata", "meta/metadata")
_OPTIONAL_JSON = ("integrity/metadata", "state/_sharding", "state/array_metadatas/process_*")
# loggers that orbax, tensorstore's Python bindings and absl write to while a restore fails
_NOISY_LOGGERS = ("absl", "orbax", "jax", "tensorstore")


class NoRestorableCheckpointError(RuntimeError):
    """Checkpoints exist but none restores onto the given abstract state."""


def _host_leaves(tree: Any) -> list[np.ndarray]:
    """The leaves of ``tree`` as host numpy arrays (typed PRNG keys as their raw key data)."""
    leaves = []
    for x in jax.tree_util.tree_leaves(tree):
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        leaves.append(x)
    return [np.asarray(x) for x in jax.device_get(leaves)]


def state_digest(tree: Any) -> str:
    """SHA-256 (hex) over every leaf of ``tree`` in tree order: index, dtype, shape and bytes.

    Independent of sharding and device count (each leaf is hashed as its full global array).
    Costs one device-to-host copy of the tree plus about 0.7 s per GB of hashing.
    """
    return _digest(_host_leaves(tree))


def _digest(leaves: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for i, a in enumerate(leaves):
        h.update(f"{i}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


def _all_finite(leaves: list[np.ndarray]) -> bool:
    for a in leaves:
        if a.dtype.kind in "fc" or "float" in a.dtype.name:  # incl. ml_dtypes (bfloat16, fp8)
            if not np.isfinite(a.astype(np.float32) if a.dtype.kind not in "fc" else a).all():
                return False
    return True


@contextlib.contextmanager
def _quiet():
    """Silence orbax/absl logging and Python warnings while a possibly corrupt step loads."""
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    hook, sys.unraisablehook = sys.unraisablehook, lambda _: None
    stderr, sys.stderr = sys.stderr, io.StringIO()  # tracebacks printed by storage callbacks
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.unraisablehook, sys.stderr = hook, stderr
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class Checkpointer:
    """Orbax checkpoint manager for ``(state, data_state, meta)`` with integrity and healing.

    Args:
        directory: where the numbered step directories live (created when missing).
        max_to_keep: newest checkpoints kept (``None``: all).
        save_interval_steps: orbax saves only steps that many apart unless forced.
        async_save: write in the background (the host copy is taken before :meth:`save`
            returns, so the state may be donated right after).
        verify: hash the state at save and check it (and that it is finite) at restore.
    """

    def __init__(self, directory, *, max_to_keep: int | None = 3, save_interval_steps: int = 1,
                 async_save: bool = True, verify: bool = True):
        self.directory = Path(directory).absolute()
        self.verify = verify
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True,
            enable_async_checkpointing=async_save)
        with _quiet():  # a garbled step's metadata is reported by restore_latest, once
            self.manager = ocp.CheckpointManager(
                self.directory, options=options,
                item_names=("state", "data", "meta", "integrity"))

    def save(self, step: int, state: Any, data_state: Any = None, meta: dict | None = None,
             force: bool = False) -> bool:
        """Save ``state`` at ``step``; returns whether a save was started.

        A step that already exists (or is being written) is left as it is and ``False`` is
        returned, so a preemption save landing on a periodic save's step is harmless.
        Without ``force`` orbax's ``save_interval_steps`` decides. The integrity digest is
        computed here, on the caller's thread, only for steps that are actually saved.
        """
        step = int(step)
        if step in self.manager.all_steps():
            return False
        if not force and not self.manager.should_save(step):
            return False
        items = dict(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"state": data_state}),
            meta=ocp.args.JsonSave(meta or {}),
        )
        if self.verify:
            items["integrity"] = ocp.args.JsonSave(
                {"format": _DIGEST_FORMAT, "algorithm": "sha256", "state": state_digest(state)})
        return self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self):
        """Block until the pending asynchronous save is on disk."""
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        """The saved steps orbax knows, ascending."""
        return sorted(self.manager.all_steps())

    def _step_dir(self, step: int) -> Path:
        return self.directory / str(int(step))

    def _restore_items(self, step: int, abstract_state: Any):
        items = dict(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        )
        if (self._step_dir(step) / "integrity").exists():
            items["integrity"] = ocp.args.JsonRestore()
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        record = out["integrity"] if "integrity" in items else None
        return out["state"], (out["data"] or {}).get("state"), out["meta"] or {}, record

    def restore(self, step: int, abstract_state: Any):
        """Restore ``(state, data_state, meta)`` at ``step`` onto ``abstract_state``'s
        shapes, dtypes and shardings (``jax.ShapeDtypeStruct`` leaves with ``sharding``).
        No integrity or finite check (:meth:`restore_latest` does both)."""
        return self._restore_items(step, abstract_state)[:3]

    def _check_files(self, step: int) -> str | None:
        """The step's metadata files exist and parse (orbax restores some steps without
        them, but such a step is damaged: other readers of it would fail)."""
        root = self._step_dir(step)
        paths = [root / p for p in _REQUIRED_JSON]
        if any(not p.is_file() for p in paths):
            return "missing " + ", ".join(str(p.relative_to(root)) for p in paths
                                          if not p.is_file())
        for pattern in _OPTIONAL_JSON:
            paths += sorted(root.glob(pattern))
        for p in paths:
            try:
                json.loads(p.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as e:
                return f"{p.relative_to(root)} does not parse ({_one_line(e, 80)})"
        return None

    def _check(self, state: Any, record: dict | None) -> str | None:
        if not self.verify:
            return None
        leaves = _host_leaves(state)
        if record is not None and record.get("state") is not None:
            if record.get("format") != _DIGEST_FORMAT or record["state"] != _digest(leaves):
                return "hash-mismatch"
        if not _all_finite(leaves):
            return "non-finite"
        return None

    def _try(self, step: int, abstract_state: Any):
        """``(result, None, None)`` or ``(None, reason, detail)`` for one step, quietly."""
        problem = self._check_files(step)
        if problem is not None:
            return None, "bad-metadata", problem
        with _quiet():
            try:
                state, data_state, meta, record = self._restore_items(step, abstract_state)
                jax.block_until_ready(state)
                reason = self._check(state, record)
            except Exception as e:  # noqa: BLE001 - any failure makes the step unusable
                # a failed read leaves futures of a closed event loop behind: collect them now,
                # not later as "Exception ignored" tracebacks on stderr
                gc.collect()
                return None, "restore-error", _one_line(e)
        if reason is not None:
            detail = ("saved digest differs from the restored bytes" if reason == "hash-mismatch"
                      else "a floating leaf holds NaN or inf")
            return None, reason, detail
        return (state, data_state, meta), None, None

    def quarantine(self, step: int, reason: str) -> Path | None:
        """Move step ``step`` to ``corrupt/<step>-<reason>`` (never deleted) and make orbax
        forget it. Returns the new location (``None`` on non-primary processes)."""
        self.manager.wait_until_finished()
        dest = None
        if jax.process_index() == 0:
            corrupt = self.directory / "corrupt"
            corrupt.mkdir(parents=True, exist_ok=True)
            dest = corrupt / f"{int(step)}-{reason}"
            n = 1
            while dest.exists():
                n += 1
                dest = corrupt / f"{int(step)}-{reason}-{n}"
            shutil.move(str(self._step_dir(step)), str(dest))
        with _quiet():
            self.manager.reload()
        return dest

    def restore_latest(self, abstract_state: Any, *, heal: bool = True):
        """Newest good checkpoint as ``(step, state, data_state, meta)``, or ``None`` when there
        is no checkpoint.

        Bad steps newer than it are reported (one warning line each) and, with ``heal``, moved
        to ``corrupt/<step>-<reason>``. A step that fails the integrity or finite check is bad
        on its own; one that fails to restore is moved only once an older step restores.

        Raises:
            NoRestorableCheckpointError: checkpoints exist but none restores (e.g. the model
                config changed); steps that merely failed to restore are left in place.
        """
        failed: list[tuple[int, str, str]] = []
        found = None
        for step in reversed(self.steps()):
            result, reason, detail = self._try(step, abstract_state)
            if result is not None:
                found = (step, *result)
                break
            failed.append((step, reason, detail))
        if failed:
            with _quiet():  # what the failed reads left behind, collected without tracebacks
                gc.collect()
        for step, reason, detail in failed:
            definite = reason != "restore-error" or found is not None
            where = ""
            if heal and definite:
                dest = self.quarantine(step, reason)
                where = f"; moved to {dest}" if dest is not None else ""
            warnings.warn(f"checkpoint at step {step} in {self.directory} is unusable "
                          f"({reason}: {detail}){where}; trying the previous one",
                          RuntimeWarning, stacklevel=2)
        if found is None and failed and any(r == "restore-error" for _, r, _ in failed):
            raise NoRestorableCheckpointError(
                f"none of the checkpoints {sorted(s for s, _, _ in failed)} in {self.directory} "
                "restores onto this state (a changed model or optimizer config, or every step "
                "corrupt); fix the config, or move the step directories aside to start afresh")
        return found

    def close(self):
        """Wait for the pending save and release orbax's resources."""
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: Any) -> Any:
    """``ShapeDtypeStruct`` tree (with shardings) of a concrete state, for restoring."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state)
