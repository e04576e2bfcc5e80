"""Training system: EMAs, non-finite guard, sharding invariance, exact resume, corrupt
checkpoints, restoring onto another device count, preemption."""

import math
import os
import signal
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax import train as T

BATCH = 64


def _pairs(a, b):
    """The leaves of two trees, pairwise (the trees must have as many leaves)."""
    return zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)


def mlp_init(key, width=32):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (2 + 16, width)) / math.sqrt(18.0),
        "b1": jnp.zeros((width,)),
        "w2": jax.random.normal(k2, (width, width)) / math.sqrt(width),
        "b2": jnp.zeros((width,)),
        "w3": jax.random.normal(k3, (width, 2)) * 0.01,
        "b3": jnp.zeros((2,)),
    }


def mlp_apply(p, x, t, cond=None):
    f = jnp.exp(-math.log(1e3) * jnp.arange(8) / 8.0)
    arg = t[:, None] * 1e3 * f[None]
    e = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], -1)
    h = jax.nn.silu(jnp.concatenate([x, e], -1) @ p["w1"] + p["b1"][None])
    h = jax.nn.silu(h @ p["w2"] + p["b2"][None])
    return h @ p["w3"] + p["b3"][None]


PROC = dj.DiscreteVP.linear(1000)


def loss_fn(params, key, batch):
    model = jax.tree_util.Partial(mlp_apply, params)
    return dj.losses.ddpm_loss(model, key, batch["image"], process=PROC)


class ArrayLoader:
    """A resumable deterministic loader over a fixed array (batch i is a function of i)."""

    def __init__(self, data, batch):
        self.data, self.batch, self.i = data, batch, 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng(self.i)
        self.i += 1
        return {"image": self.data[rng.integers(0, len(self.data), self.batch)]}

    def get_state(self):
        return str(self.i)

    def set_state(self, s):
        self.i = int(s)


DATA = np.asarray(dj.analytic.GaussianMixture.create(
    [0.3, 0.5, 0.2], [(-0.6, -0.3), (0.5, 0.4), (0.0, 0.8)], [0.1, 0.15, 0.05], PROC
).sample_data(jax.random.key(0), 4096))
OPT = T.make_optimizer("adam", 1e-3, warmup_steps=5, grad_clip=1.0)
EMAS = {"ema": T.EMASpec(decay=0.99), "edm": T.EMASpec(halflife_kimg=0.5, rampup_ratio=0.05)}


def make(mesh):
    state = T.create_train_state(mlp_init, OPT, seed=1, ema_names=tuple(EMAS), mesh=mesh)
    step = T.make_train_step(loss_fn, OPT, EMAS, BATCH)
    if mesh is None:
        return state, T.jit_train_step(step), (lambda b: b)
    sh = T.state_shardings(state, mesh)
    return state, T.jit_train_step(step, sh, T.batch_sharding(mesh, 2)), (
        lambda b: T.shard_batch(b, mesh))


def test_ema_formulas():
    fixed = T.EMASpec(decay=0.999)
    assert float(T.ema_decay(fixed, 0, 128)) == 0.0  # DDPM: EMA starts at the weights
    assert abs(float(T.ema_decay(fixed, 5, 128)) - 0.999) < 1e-7
    edm = T.EMASpec(halflife_kimg=500.0, rampup_ratio=0.05)
    # ramp-up: after 10 steps of 512 images the half-life is 0.05 * 5120 = 256 images
    np.testing.assert_allclose(float(T.ema_decay(edm, 9, 512)), 0.5 ** (512 / 256.0), rtol=1e-6)
    # long after the ramp: 0.5 ** (512 / 500k)
    np.testing.assert_allclose(float(T.ema_decay(edm, 10**6, 512)), 0.5 ** (512 / 5e5), rtol=1e-6)
    ema = T.update_emas({"a": {"w": jnp.zeros(3)}}, {"w": jnp.ones(3)}, {"a": fixed}, 3, 1)
    np.testing.assert_allclose(ema["a"]["w"], 0.001, rtol=1e-4)  # 1 - 0.999 in float32
    with pytest.raises(ValueError, match="exactly one"):
        T.EMASpec()
    with pytest.raises(ValueError, match="optimizer"):
        T.make_optimizer("sgdx")
    with pytest.raises(ValueError, match=r"warmup_steps \(100\) must be smaller"):
        T.make_optimizer("adam", 1e-3, warmup_steps=100, schedule="cosine", total_steps=100)


def test_training_learns_and_skips_nonfinite_updates():
    state, step, put = make(None)
    loader = ArrayLoader(DATA, BATCH)
    first = None
    for _ in range(300):
        state, m = step(state, put(next(loader)))
        first = float(m["loss"]) if first is None else first
    assert float(m["loss"]) < 0.7 * first  # it learns
    before = jax.tree_util.tree_map(np.asarray, state)
    bad = {"image": np.full((BATCH, 2), np.nan, np.float32)}
    state, m = step(state, bad)
    assert float(m["finite"]) == 0.0 and int(state.skipped) == 1
    for a, b in _pairs(before.params, state.params):
        np.testing.assert_array_equal(a, np.asarray(b))
    # the EMAs moved towards the weights but are distinct from them
    d = [float(np.abs(np.asarray(e) - np.asarray(p)).max()) for e, p in
         _pairs(state.ema["ema"], state.params)]
    assert 0 < max(d) < 1.0


def test_nan_loss_stops_with_clear_error(tmp_path):
    state, step, put = make(None)
    bad = iter(lambda: {"image": np.full((BATCH, 2), np.nan, np.float32)}, None)
    with pytest.raises(FloatingPointError, match="non-finite for 3 consecutive steps"):
        T.fit(state, step, bad, num_steps=10, max_nonfinite=3, log_fn=None,
              checkpointer=T.Checkpointer(tmp_path / "ck"))


def test_one_device_and_eight_devices_agree():
    """Same losses and parameters on 1 device and on a (data=4, fsdp=2) mesh of 8."""
    runs = []
    for mesh in (T.make_mesh(devices=jax.devices()[:1]), T.make_mesh(data=4, fsdp=2)):
        state, step, put = make(mesh)
        loader = ArrayLoader(DATA, BATCH)
        losses = []
        for _ in range(20):
            state, m = step(state, put(next(loader)))
            losses.append(float(m["loss"]))
        runs.append((np.asarray(losses), jax.tree_util.tree_map(np.asarray, state.params)))
    assert jax.device_count() == 8
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-6)
    for a, b in _pairs(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _run(workdir, num_steps, mesh=None, stop_after=None):
    state0, step, put = make(mesh)
    loader = ArrayLoader(DATA, BATCH)
    ck = T.Checkpointer(Path(workdir) / "checkpoints", max_to_keep=3)
    state = T.restore_or_init(ck, lambda: state0, loader)
    state, hist = T.fit(state, step, loader, num_steps=stop_after or num_steps, to_device=put,
                        checkpointer=ck, loader=loader, save_every=5, log_every=1,
                        workdir=workdir, log_fn=None)
    ck.close()
    return state, [h["loss"] for h in hist]


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
    full_state, full = _run(tmp_path / "a", 20)
    _, first = _run(tmp_path / "b", 20, stop_after=10)
    resumed_state, rest = _run(tmp_path / "b", 20)
    assert len(rest) == 10
    np.testing.assert_array_equal(np.asarray(first + rest), np.asarray(full))
    for a, b in _pairs(full_state, resumed_state):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_corrupt_checkpoint_falls_back_with_warning(tmp_path):
    _run(tmp_path, 15)
    ck_dir = tmp_path / "checkpoints"
    assert sorted(int(p.name) for p in ck_dir.iterdir() if p.name.isdigit()) == [5, 10, 15]
    # corrupt the newest checkpoint: truncate every file of its state item
    for f in (ck_dir / "15" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    state0, _, _ = make(None)
    ck = T.Checkpointer(ck_dir)
    with pytest.warns(RuntimeWarning, match="step 15"):
        step, state, data_state, _ = ck.restore_latest(T.abstract_like(state0))
    assert step == 10 and int(state.step) == 10 and data_state == "10"
    ck.close()


def test_restore_onto_a_different_device_count(tmp_path):
    mesh8 = T.make_mesh(data=4, fsdp=2)
    saved, _ = _run(tmp_path, 5, mesh=mesh8)
    state1, _, _ = make(T.make_mesh(devices=jax.devices()[:1]))
    ck = T.Checkpointer(tmp_path / "checkpoints")
    step, restored, _, _ = ck.restore_latest(T.abstract_like(state1))
    ck.close()
    assert step == 5 and len(jax.tree_util.tree_leaves(restored)[0].sharding.device_set) == 1
    for a, b in _pairs(saved, restored):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sigterm_saves_before_stopping(tmp_path):
    state0, step, put = make(None)
    loader = ArrayLoader(DATA, BATCH)
    ck = T.Checkpointer(tmp_path / "ck", save_interval_steps=1)
    calls = {"n": 0}

    def batches():
        while True:
            calls["n"] += 1
            if calls["n"] == 7:
                os.kill(os.getpid(), signal.SIGTERM)
            yield next(loader)

    assert threading.current_thread() is threading.main_thread()
    state, _ = T.fit(state0, step, batches(), num_steps=1000, checkpointer=ck, loader=loader,
                     save_every=10**6, log_every=10**6, log_fn=None)
    assert int(state.step) == 7 and ck.steps() == [7]
    ck.close()


def test_gradient_accumulation_matches_the_large_batch_step():
    """optax.MultiSteps over k micro-batches = one step on their union (mean losses)."""
    data = {"image": DATA[:2 * BATCH]}
    halves = [{"image": DATA[:BATCH]}, {"image": DATA[BATCH:2 * BATCH]}]
    def deterministic(p, key, batch):
        model = jax.tree_util.Partial(mlp_apply, p)
        n = batch["image"].shape[0]
        t = jnp.full((n,), 0.3)
        eps = jnp.ones_like(batch["image"]) * 0.5
        return dj.losses.ddpm_loss(model, key, batch["image"], process=PROC, t=t, noise=eps)

    big = T.make_optimizer("adam", 1e-2)
    acc = T.make_optimizer("adam", 1e-2, accumulate=2)
    s_big = T.create_train_state(mlp_init, big, seed=1, ema_names=())
    s_acc = T.create_train_state(mlp_init, acc, seed=1, ema_names=())
    s_big, _ = jax.jit(T.make_train_step(deterministic, big))(s_big, data)
    step_acc = jax.jit(T.make_train_step(deterministic, acc))
    for h in halves:
        s_acc, _ = step_acc(s_acc, h)
    for a, b in _pairs(s_big.params, s_acc.params):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # and the accumulated parameters did move
    s0 = T.create_train_state(mlp_init, acc, seed=1, ema_names=())
    assert not np.allclose(np.asarray(s0.params["w3"]), np.asarray(s_acc.params["w3"]))


def test_logical_axis_names_shard_parameters_and_moments():
    """A DiT's parameters are sharded from their logical names (``embed -> fsdp``), optimizer
    moments and EMAs exactly like their parameters, and a (data=2, fsdp=4) run matches 1 device."""
    from flax import nnx

    from diffjax.models import DiT, dit_config
    from diffjax.models.layers import logical_to_pspec

    cfg = dit_config("DiT-S/2", input_size=4, in_channels=2, hidden_size=32, depth=1, num_heads=2,
                     num_classes=3, learn_sigma=False)
    init = lambda key: nnx.state(DiT(cfg, rngs=nnx.Rngs(key)), nnx.Param)
    graphdef, _, rest = nnx.split(DiT(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    opt = T.make_optimizer("adamw", 1e-3)
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 2))
    y = jnp.arange(8) % 3

    def dit_loss(params, key, batch):
        net = nnx.merge(graphdef, params, rest)
        model = lambda xt, t, c=None: net(xt, t * 1000.0, c)
        return dj.losses.ddpm_loss(model, key, batch["image"], process=PROC, cond=batch["label"])

    runs = []
    for mesh in (T.make_mesh(devices=jax.devices()[:1]), T.make_mesh(data=2, fsdp=4)):
        state = T.create_train_state(init, opt, seed=0, ema_names=("ema",), mesh=mesh)
        sh = T.state_shardings(state, mesh)
        is_var = lambda v: isinstance(v, nnx.Variable)
        params = jax.tree_util.tree_leaves(state.params, is_leaf=is_var)
        if mesh.shape["fsdp"] == 4:
            sharded = 0
            for v in params:
                # every DiT parameter here is either below 4096 elements or has an ``embed``
                # axis of width 32: the rules alone decide (no shape fallback)
                want = logical_to_pspec(v.get_metadata()["out_sharding"], None, mesh, v.shape)
                assert v.get_value().sharding.spec == want
                sharded += "fsdp" in jax.tree_util.tree_leaves(tuple(want))
            assert sharded >= 6  # every kernel with an `embed` axis of width 32
            moments = [v for v in jax.tree_util.tree_leaves(state.opt_state, is_leaf=is_var)
                       if is_var(v)]
            assert len(moments) == 2 * len(params)  # Adam's mu and nu, in parameter order
            copies = moments[:len(params)], moments[len(params):], jax.tree_util.tree_leaves(
                state.ema["ema"], is_leaf=is_var)
            for copy in copies:
                for p, m in zip(params, copy, strict=True):
                    assert m.get_value().sharding == p.get_value().sharding
        batch_sh = {"image": T.batch_sharding(mesh, 4), "label": T.batch_sharding(mesh, 1)}
        step = T.jit_train_step(T.make_train_step(dit_loss, opt, {"ema": T.EMASpec(decay=0.9)}, 8),
                                sh, batch_sh)
        losses = []
        for i in range(3):
            state, m = step(state, T.shard_batch({"image": np.asarray(x * (1 + 0.1 * i)),
                                                  "label": np.asarray(y)}, mesh))
            losses.append(float(m["loss"]))
        runs.append((losses, jax.tree_util.tree_map(np.asarray, state.params)))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
    for a, b in _pairs(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_one_mapper_logical_rules_first_then_fsdp_by_shape():
    """``logical_to_mesh_sharding`` (the mapper ``state_shardings`` uses): logical names through
    the rules first; an array the rules leave off ``fsdp`` (no names, names not in the rules,
    an ``embed`` the axis does not divide) is split along its largest still-replicated dimension
    divisible by the ``fsdp`` size; small arrays, scalars and ``fsdp = 1`` stay replicated."""
    from flax import nnx

    from diffjax.models.layers import logical_to_mesh_sharding

    P = jax.sharding.PartitionSpec

    def param(shape, names=None):
        value = jnp.zeros(shape)
        if names is None:
            return nnx.Param(value)
        return nnx.Param(value, out_sharding=names, eager_sharding=False)

    tree = {
        "by_name": param((64, 96), ("embed", "mlp")),  # rules: embed -> fsdp
        "by_name_t": param((96, 64), ("mlp", "embed")),
        "unknown_names": param((3, 3, 64, 128), (None, None, "channels_in", "channels_out")),
        "ties_last": param((128, 128), ("channels_in", "channels_out")),
        "embed_indivisible": param((66, 128), ("embed", "mlp")),  # 66 % 4: falls back to mlp
        "unnamed": param((48, 256)),
        "plain_array": jnp.zeros((256, 48)),
        "small": param((16, 16), ("channels_in", "channels_out")),  # 256 < 4096 elements
        "indivisible": param((4099, 3)),
        "scalar": jnp.zeros(()),
    }
    want = {
        "by_name": P("fsdp", None), "by_name_t": P(None, "fsdp"),
        "unknown_names": P(None, None, None, "fsdp"), "ties_last": P(None, "fsdp"),
        "embed_indivisible": P(None, "fsdp"), "unnamed": P(None, "fsdp"),
        "plain_array": P("fsdp", None), "small": P(), "indivisible": P(), "scalar": P(),
    }
    is_var = lambda v: isinstance(v, nnx.Variable)

    def spec(sh):  # the PartitionSpec without trailing Nones (P(None, None) replicates as P())
        sh = sh.get_value() if is_var(sh) else sh
        entries = list(sh if isinstance(sh, P) else sh.spec)
        while entries and entries[-1] is None:
            entries.pop()
        return tuple(entries)

    mesh = T.make_mesh(data=2, fsdp=4)
    got = logical_to_mesh_sharding(tree, mesh)
    for name, w in want.items():
        assert spec(got[name]) == spec(w), (name, spec(got[name]))
    # a Variable keeps its wrapper and metadata (so optax moments and EMAs map the same way)
    assert is_var(got["by_name"]) and got["by_name"].get_metadata()["out_sharding"] == (
        "embed", "mlp")
    # abstract shapes give the same answer (create_train_state maps eval_shape's output)
    abstract = jax.eval_shape(lambda: tree["plain_array"])
    assert tuple(logical_to_mesh_sharding(abstract, mesh).spec) == ("fsdp", None)
    # rules that put another name on fsdp: no second fsdp dimension, no fallback
    rules = {"mlp": "fsdp"}
    assert spec(logical_to_mesh_sharding(tree, mesh, rules)["by_name"]) == (None, "fsdp")
    # min_size lowers the threshold; fsdp = 1 replicates everything
    assert spec(logical_to_mesh_sharding(tree, mesh, min_size=1)["small"]) == (None, "fsdp")
    flat = logical_to_mesh_sharding(tree, T.make_mesh(data=8, fsdp=1))
    assert all((v.get_value() if is_var(v) else v).is_fully_replicated
               for v in jax.tree_util.tree_leaves(flat, is_leaf=is_var))
    with pytest.raises(ValueError, match="do not match"):
        logical_to_mesh_sharding({"bad": param((4, 4), ("embed",))}, mesh)
    # the train state uses exactly this mapper for parameters, moments and EMAs
    opt = T.make_optimizer("adam", 1e-3)
    init = lambda key: {"w": nnx.Param(jnp.zeros((3, 3, 64, 128)),
                                       out_sharding=(None, None, "channels_in", "channels_out"),
                                       eager_sharding=False)}
    state = T.create_train_state(init, opt, ema_names=("ema",), mesh=mesh)
    for v in (state.params["w"], state.ema["ema"]["w"]):
        assert tuple(v.get_value().sharding.spec) == (None, None, None, "fsdp")


def test_importance_sampler_state_is_carried_by_the_train_step():
    """iDDPM's loss-second-moment sampler inside the jitted step: with losses that depend on the
    index only, its history holds exactly those losses and the sampling distribution becomes
    p_i ∝ sqrt(E[L_i^2]) mixed with uniform (Nichol & Dhariwal 2021, eq. 18)."""
    num, hist = 4, 3
    rs = dj.losses.LossSecondMomentResampler(num, history_per_term=hist, uniform_prob=0.1)
    level = jnp.array([1.0, 2.0, 3.0, 6.0])  # L_i, known in closed form

    def loss_fn(params, key, batch, state):
        ts = rs.time_sampler(state.extra["resampler"])(key, 16)
        unweighted = level[ts.index] * params["w"] ** 2  # w = 1 at init and 0 lr: fixed
        return ts.weight * unweighted, {"index": ts.index, "unweighted": unweighted}

    def update(extra, aux):
        return {"resampler": rs.update(extra["resampler"], aux["index"], aux["unweighted"])}

    opt = T.make_optimizer("adam", 0.0)
    state = T.create_train_state(lambda k: {"w": jnp.ones(())}, opt, ema_names=(),
                                 init_extra=lambda: {"resampler": rs.init()})
    step = jax.jit(T.make_train_step(loss_fn, opt, {}, 16, loss_takes_state=True,
                                     update_extra=update))
    for _ in range(12):
        state, m = step(state, {})
    r = state.extra["resampler"]
    assert rs.warmed_up(r)
    np.testing.assert_allclose(np.asarray(r.history), np.repeat(level[:, None], hist, 1))
    p = np.asarray(rs.probs(r))
    np.testing.assert_allclose(p, 0.9 * np.asarray(level) / 12.0 + 0.1 / num, rtol=1e-6)
    # a skipped (non-finite) step leaves the history untouched
    nan_aux = {"index": jnp.zeros(16, jnp.int32), "unweighted": jnp.zeros(16)}
    bad = T.make_train_step(lambda *a: (jnp.full((16,), jnp.nan), nan_aux),
                            opt, {}, 16, loss_takes_state=True, update_extra=update)
    state2, m = jax.jit(bad)(state, {})
    assert float(m["finite"]) == 0.0
    np.testing.assert_array_equal(np.asarray(state2.extra["resampler"].history),
                                  np.asarray(r.history))
