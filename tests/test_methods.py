"""``diffjax.methods``: one contract for every training method, built from configs by the run
layer, trained by the one step, sampled through the one driver."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from diffjax import methods as M
from diffjax import train as T
from diffjax.run import build as B


def _points(tmp_path, classes=0, n=256):
    """A labelled (or not) 2-D point set from a 4-component mixture, as an ``.npz`` source."""
    rng = np.random.default_rng(0)
    lab = np.arange(n) % 4
    centres = np.array([[-0.6, -0.3], [0.5, 0.4], [0.0, 0.8], [0.5, -0.6]])
    x = (centres[lab] + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    path = tmp_path / f"points{classes}.npz"
    kw = dict(latents=x)
    if classes:
        kw["labels"] = (lab % classes).astype(np.int32)
    np.savez(path, **kw)
    return str(path)


def _config(data, process, method=None, batch=16, **model_kw):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name=process)
    c.model = dict(name="mlp", dim=2, width=16, depth=1, **model_kw)
    c.loss = dict(name="flow_matching" if process == "linear" else "edm")
    if method is not None:
        c.method = method
    c.data = dict(name=data, batch_size=batch)
    c.optim = dict(name="adam", lr=1e-3, warmup_steps=0)
    c.ema = dict(ema=0.9)
    c.train = dict(num_steps=3, log_every=1, save_every=3, max_to_keep=1, sample_every=0)
    c.sample = dict(num_samples=8, sampler="heun", num_steps=4)
    c.mesh = dict(data=-1, fsdp=1)
    return c


CASES = {
    "diffusion": (dict(precond="edm"), "edm", None, 0),
    "ct": (dict(precond="edm"), "edm", dict(name="ct", sample_ts=(0, 9, 17), sample_grid=18), 0),
    "ict": (dict(precond="edm"), "edm", dict(name="ct", schedule="ict", target_ema="",
                                             total_steps=64,
                                             level_sampling="lognormal", weighting="ict",
                                             metric="pseudo_huber"), 0),
    "shortcut": (dict(second_scalar=True, time_input="sit", negate_output=True), "linear",
                 dict(name="shortcut", denoise_timesteps=8, bootstrap_every=4, sample_steps=4),
                 0),
    "imm": (dict(second_scalar=True), "linear", dict(name="imm", group_size=4, sample_steps=2),
            0),
    "mg": (dict(prediction="velocity", num_classes=4), "linear",
           dict(name="mg", start_step=0, sample_steps=4), 4),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_method_trains_with_one_step_and_samples_through_the_driver(name, tmp_path):
    """Each method: the standard step around ``loss(params, key, batch, state)`` trains
    (finite, parameters move), EMAs the method reads exist, and its sampler gives the same
    samples at any chunk size (sample ``i`` depends only on ``(key, i)``) and on one device."""
    model_kw, process, method, classes = CASES[name]
    cfg = _config(_points(tmp_path, classes), process, method, **model_kw)
    built = B.build(cfg)
    m = built.method
    assert set(m.reads_emas) <= set(built.ema_specs)
    state = built.init_state()
    step = jax.jit(T.make_train_step(m.loss, built.optimizer, built.ema_specs, 16,
                                     loss_takes_state=True, update_extra=m.update_extra))
    it = iter(built.data.loader)
    before = jax.tree_util.tree_leaves(state.params)[0].copy()
    for _ in range(2):
        b = {k: jnp.asarray(v) for k, v in next(it).items()
             if k == "image" or (k == "label" and classes)}
        state, metrics = step(state, b)
        assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    assert float(jnp.abs(jax.tree_util.tree_leaves(state.params)[0] - before).max()) > 0
    key = jax.random.key(3)
    labels = (jnp.arange(8) % classes).astype(jnp.int32) if classes else None
    whole = np.asarray(m.sample(state.params, key, 8, labels, 0))
    halves = [np.asarray(m.sample(state.params, key, 4, None if labels is None else
                                  labels[o:o + 4], o)) for o in (0, 4)]
    assert whole.shape == (8, 2) and np.all(np.isfinite(whole))
    np.testing.assert_allclose(np.concatenate(halves), whole, rtol=1e-5, atol=1e-5)
    assert np.abs(whole[:4] - whole[4:]).max() > 1e-3  # distinct samples


def test_build_method_errors_name_the_key(tmp_path):
    pts = _points(tmp_path)
    edm = dict(precond="edm")
    bad = [
        (dict(name="nope"), edm, "edm", "config.method.name"),
        (dict(name="ct", bogus=1), edm, "edm", r"unknown config.method keys \['bogus'\]"),
        (dict(name="cd", target_ema="teach", allow_untrained_teacher=True), edm, "edm",
         "config.ema lacks"),
        (dict(name="cd", target_decay=0.9), edm, "edm", "teacher_workdir"),
        (dict(name="cd", target_decay=0.9, allow_untrained_teacher=True, metric="lpips",
              target_ema=""), edm, "edm", "lpips_weights"),
        (dict(name="ct", metric="lpips", lpips_weights="x.npz"), edm, "edm", "RGB images"),
        (dict(name="ct", sample_ts=(0, 20), sample_grid=18), edm, "edm", "sample_ts"),
        (dict(name="ct"), {}, "edm", "EDM-preconditioned"),
        (dict(name="imm"), edm, "edm", "process.name='linear'"),
        (dict(name="shortcut"), dict(second_scalar=True), "linear", "bootstrap"),
        (dict(name="mg"), dict(second_scalar=True), "linear", "class-conditional"),
        (dict(name="shortcut", denoise_timesteps=8, bootstrap_every=4, sample_steps=3),
         dict(second_scalar=True), "linear", "sample_steps"),
    ]
    for method, model_kw, process, match in bad:
        with pytest.raises(ValueError, match=match):
            B.build(_config(pts, process, method, **model_kw))
    c = _config(pts, "edm", dict(name="ct"), precond="edm")
    c.ema = dict(target=0.9)  # CT defines its target EMA by mu(k): one definition only
    with pytest.raises(ValueError, match=r"config.ema defines \['target'\]"):
        B.build(c)
    c4 = _config(_points(tmp_path, 4), "linear", dict(name="mg", omega=2.0),
                 prediction="velocity", num_classes=4)
    with pytest.raises(ValueError, match=r"1 / \(2 - omega\)"):
        B.build(c4)


def test_ct_specs_and_cd_teacher_in_memory(tmp_path):
    """CT's target EMA follows the reference's mu(0) = mu0^2; CD starts from the teacher, whose
    weights ride in ``state.extra`` (jit arguments, not constants)."""
    pts = _points(tmp_path)
    built = B.build(_config(pts, "edm", dict(name="ct", start_scales=2, end_scales=150,
                                             start_ema=0.9), precond="edm"))
    m = built.method
    assert set(m.ema_specs) == {"target"} and m.init_params is None and m.nfe == 1
    assert abs(float(T.ema_decay(m.ema_specs["target"], 0, 16)) - 0.81) < 1e-6
    net = built.setup.network
    teacher = net.init(jax.random.key(5))
    cfg = _config(pts, "edm", dict(name="cd", target_decay=0.95, sample_ts=(0, 9, 17),
                                   sample_grid=18), precond="edm")
    m = B.build(cfg, teacher=(net.bind, teacher)).method
    assert m.nfe == 2 and m.ema_specs["target"].decay == 0.95
    for a, b, c in zip(jax.tree_util.tree_leaves(m.init_params(jax.random.key(0))),
                       jax.tree_util.tree_leaves(teacher),
                       jax.tree_util.tree_leaves(m.init_extra()["teacher"]), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, b)


def test_consistency_distillation_through_the_trainer_carries_the_teacher(tmp_path):
    """``config.method`` through the ``train`` command: CD's teacher rides in ``state.extra``
    (checkpointed), the student starts from it, and sampling restores the same layout."""
    from diffjax.run.build import restore
    from diffjax.run.train import train

    c = _config(_points(tmp_path), "edm", dict(name="cd", num_scales=18, target_decay=0.95,
                                               allow_untrained_teacher=True, clip=False),
                precond="edm", sigma_data=0.5)
    out = train(c, tmp_path / "w")
    assert out["end_step"] == 3 and all(np.isfinite(h["loss"]) for h in out["history"])
    _, state = restore(c, tmp_path / "w")
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(
        jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(
            state.extra["teacher"]), strict=True)]
    assert 0.0 < max(moved) < 0.1  # the student started at the teacher, took 3 small steps
    x = np.load(tmp_path / "w" / "samples.npz")["samples"]
    assert x.shape == (8, 2) and np.all(np.isfinite(x))


def test_a_new_method_is_a_factory(tmp_path):
    """The recipe of docs/design.md: a factory over ``Setup`` returning a ``Method`` trains
    through the standard step (here: plain diffusion with a half-weighted loss)."""
    built = B.build(_config(_points(tmp_path), "edm", precond="edm"))
    base = built.method

    def half(setup: M.Setup, **kw):
        inner = M.diffusion(setup, **kw)
        loss = lambda p, k, b, s: jax.tree_util.tree_map(lambda v: v, (
            0.5 * inner.loss(p, k, b, s)[0], inner.loss(p, k, b, s)[1]))
        return inner._replace(name="half", loss=loss)

    sampling = B.build_sampling(built.config, built.setup.process)
    m = half(built.setup, loss=B.LOSSES["edm"], sampling=sampling)
    state = built.init_state()
    b = {"image": jnp.asarray(next(iter(built.data.loader))["image"])}
    full = base.loss(state.params, jax.random.key(0), b, state)[0]
    np.testing.assert_allclose(m.loss(state.params, jax.random.key(0), b, state)[0],
                               0.5 * full, rtol=1e-6)
