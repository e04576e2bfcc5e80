"""Checkpoints: corrupt newest steps are moved aside and the run heals; content hashes catch
overwritten bytes; saving a step twice is a no-op (also from fit's SIGTERM path)."""

import json
import os
import signal
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import train as T

OPT = T.make_optimizer("adam", 1e-3)
BATCH = 8


def init_params(key):
    # random (incompressible) so the largest data file of a step is well over 4 KB
    return {"w": jax.random.normal(key, (64, 64)), "b": jnp.zeros((64,))}


def loss_fn(params, key, batch):
    per_example = jnp.mean((batch["image"] @ params["w"] + params["b"][None]) ** 2, axis=1)
    return per_example, {}


STEP = T.jit_train_step(T.make_train_step(loss_fn, OPT, {}, BATCH))


def init_state():
    return T.create_train_state(init_params, OPT, seed=0)


class Loader:
    """Deterministic resumable batches: batch i is a function of i."""

    def __init__(self):
        self.i = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        return {"image": np.random.default_rng(self.i).normal(size=(BATCH, 64)).astype("f4")}

    def get_state(self):
        return str(self.i)

    def set_state(self, s):
        self.i = int(s)


def run(ck_dir, num_steps, batches=None):
    """Resume (or start) and train to ``num_steps``, saving every 5 steps."""
    ck = T.Checkpointer(ck_dir, max_to_keep=3)
    loader = Loader()
    state = T.restore_or_init(ck, init_state, loader)
    start = int(state.step)
    state, _ = T.fit(state, STEP, batches or loader, num_steps=num_steps, checkpointer=ck,
                     loader=loader, save_every=5, log_every=10**6, log_fn=None)
    ck.close()
    return start, state


def _largest_file(step_dir):
    return max((f for f in step_dir.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)


def truncate(step_dir):
    f = _largest_file(step_dir)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def delete_metadata(step_dir):
    (step_dir / "state" / "_METADATA").unlink()


def garble_json(step_dir):
    f = step_dir / "_CHECKPOINT_METADATA"
    f.write_text(f.read_text()[:-20] + "}{garbled")


def overwrite_4k(step_dir):
    f = _largest_file(step_dir)
    b = bytearray(f.read_bytes())
    assert len(b) > 4096 + 64
    off = (len(b) - 4096) // 2
    b[off:off + 4096] = np.random.default_rng(0).bytes(4096)
    f.write_bytes(bytes(b))
    assert f.stat().st_size == len(b)


CORRUPTIONS = {  # kind -> (corrupt a step directory, reasons it may be reported with)
    "truncate": (truncate, {"restore-error", "hash-mismatch"}),
    "delete_metadata": (delete_metadata, {"bad-metadata"}),
    "garble_json": (garble_json, {"bad-metadata"}),
    "overwrite_4k": (overwrite_4k, {"hash-mismatch", "restore-error"}),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_newest_step_is_moved_aside_and_training_continues(tmp_path, kind):
    ck_dir = tmp_path / "checkpoints"
    run(ck_dir, 15)
    corrupt, reasons = CORRUPTIONS[kind]
    corrupt(ck_dir / "15")
    with pytest.warns(RuntimeWarning, match="step 15") as record:
        start, state = run(ck_dir, 20)
    assert start == 10  # resumed from the previous good step
    assert len([w for w in record if "step 15" in str(w.message)]) == 1  # one line per step
    moved = [p.name for p in (ck_dir / "corrupt").iterdir()]
    assert len(moved) == 1 and moved[0].startswith("15-")
    assert moved[0][3:] in reasons
    # the bad step is kept (moved, not deleted), and training saved through its number
    assert any((ck_dir / "corrupt" / moved[0]).rglob("*"))
    ck = T.Checkpointer(ck_dir, max_to_keep=3)
    assert ck.steps() == [10, 15, 20]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        step, restored, data_state, _ = ck.restore_latest(T.abstract_like(state))
    assert step == 20 and int(restored.step) == 20 and data_state == "20"
    ck.close()


def test_retraining_to_a_bad_final_step_saves_it_and_matches_an_uninterrupted_run(tmp_path):
    """The final (forced) save lands on the bad step's number: it must not collide with it."""
    _, straight = run(tmp_path / "a", 15)
    run(tmp_path / "b" / "ck", 15)
    truncate(tmp_path / "b" / "ck" / "15")
    with pytest.warns(RuntimeWarning, match="step 15"):
        start, healed = run(tmp_path / "b" / "ck", 15)
    assert start == 10 and T.Checkpointer(tmp_path / "b" / "ck").steps() == [5, 10, 15]
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(healed),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_digest_mismatch_is_detected(tmp_path):
    """Bytes that still decode but differ from what was saved: caught by the content hash."""
    ck = T.Checkpointer(tmp_path, max_to_keep=None)
    state = init_state()
    ck.save(1, state)
    ck.save(2, jax.tree_util.tree_map(lambda x: x + 1, state))
    ck.close()
    f = tmp_path / "2" / "integrity" / "metadata"
    rec = json.loads(f.read_text())
    assert rec["state"] == T.state_digest(jax.tree_util.tree_map(lambda x: x + 1, state))
    rec["state"] = T.state_digest(state)  # valid JSON, wrong digest
    f.write_text(json.dumps(rec))
    ck = T.Checkpointer(tmp_path, max_to_keep=None)
    with pytest.warns(RuntimeWarning, match="hash-mismatch"):
        step, restored, _, _ = ck.restore_latest(T.abstract_like(state))
    assert step == 1 and ck.steps() == [1]
    assert (tmp_path / "corrupt" / "2-hash-mismatch" / "integrity").is_dir()
    ck.close()


def test_non_finite_state_is_unusable(tmp_path):
    ck = T.Checkpointer(tmp_path)
    state = init_state()
    ck.save(1, state)
    bad = state.replace(params={**state.params, "b": state.params["b"].at[3].set(jnp.nan)})
    ck.save(2, bad)
    ck.close()
    ck = T.Checkpointer(tmp_path)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        step, _, _, _ = ck.restore_latest(T.abstract_like(state))
    assert step == 1 and (tmp_path / "corrupt" / "2-non-finite").is_dir()
    ck.close()


def test_a_step_moved_aside_twice_keeps_both_copies(tmp_path):
    ck = T.Checkpointer(tmp_path)
    state = init_state()
    ck.save(1, state)
    for _ in range(2):
        ck.save(2, state)
        ck.wait()
        delete_metadata(tmp_path / "2")
        with pytest.warns(RuntimeWarning, match="step 2"):
            assert ck.restore_latest(T.abstract_like(state))[0] == 1
    assert sorted(p.name for p in (tmp_path / "corrupt").iterdir()) == [
        "2-bad-metadata", "2-bad-metadata-2"]
    ck.close()


def test_a_changed_model_moves_nothing_and_raises(tmp_path):
    """Every step failing to restore is a config change, not corruption: nothing is moved."""
    run(tmp_path, 10)
    wider = T.create_train_state(lambda k: {"w": jnp.zeros((64, 32)), "b": jnp.zeros((32,))},
                                 OPT, seed=0)
    ck = T.Checkpointer(tmp_path)
    with pytest.warns(RuntimeWarning), pytest.raises(T.NoRestorableCheckpointError):
        ck.restore_latest(T.abstract_like(wider))
    assert ck.steps() == [5, 10] and not (tmp_path / "corrupt").exists()
    ck.close()


def test_saving_an_existing_step_is_a_no_op(tmp_path):
    ck = T.Checkpointer(tmp_path)
    state = init_state()
    assert ck.save(3, state, "a")
    changed = jax.tree_util.tree_map(lambda x: x + 1, state)
    assert ck.save(3, changed, "b") is False  # in flight or on disk: left as it is
    ck.wait()
    assert ck.save(3, changed, "b", force=True) is False
    step, restored, data_state, _ = ck.restore_latest(T.abstract_like(state))
    assert step == 3 and data_state == "a"
    np.testing.assert_array_equal(np.asarray(restored.params["w"]),
                                  np.asarray(state.params["w"]))
    ck.close()


def test_sigterm_on_a_save_step_saves_once(tmp_path):
    loader = Loader()
    calls = {"n": 0}

    def batches():
        while True:
            calls["n"] += 1
            if calls["n"] == 10:  # the periodic save of step 10 and the preemption save meet
                os.kill(os.getpid(), signal.SIGTERM)
            yield next(loader)

    ck = T.Checkpointer(Path(tmp_path))
    state, _ = T.fit(init_state(), STEP, batches(), num_steps=100, checkpointer=ck,
                     loader=loader, save_every=5, log_every=10**6, log_fn=None)
    assert int(state.step) == 10 and ck.steps() == [5, 10]
    ck.close()
    # a resumed run whose first step lands on a step already on disk saves nothing twice
    ck = T.Checkpointer(Path(tmp_path))
    ck.save(10, state, force=True)
    ck.close()
