"""CPU learning checks of the few-step methods, each in its setting, with its pass criteria.

Each check runs in the setting below, through the library's losses, methods and samplers (the
methods built from their configs by :func:`diffjax.run.build.build`), and is scored by the pass
criteria given with it:

* **Consistency models (2c.4).** 8 Gaussians on a ring of radius 2 (std 0.05; ``sigma_data``
  = the data's per-coordinate std, ~1.414), MLP 3 x 256 (:class:`diffjax.models.ToyMLP`) inside
  :class:`diffjax.parameterization.ConsistencyPrecond`, Adam 1e-3, batch 512. CD (Song et al.
  2023, Alg. 2) from the *analytic* teacher (the mixture's exact denoiser on the EDM process),
  N = 18, Heun, target EMA 0.95, 5,000 steps; CT (Alg. 3; s0 = 2, s1 = 150, mu0 = 0.9),
  10,000 steps; improved CT beside it. Pass: >= 90 % of one-step samples within 0.25 of a mode
  and all 8 modes hit; SW1 of one-step samples falls >= 5x from the untrained network's; 2-step
  (ts [0, 9, 17] of 18) no worse than 1-step + 10 %; CT within 2x of CD.
* **Shortcut models (3c.2).** The same ring; MLP 3 x 256 with t- and d-embeddings, batch 256
  (32 bootstrap rows >= 7 levels), M = 128, 20,000 Adam steps; bootstrap targets from the 0.999
  EMA (the reference) and, beside it, from the online weights. Pass: 1-step samples hit all 8
  modes with >= 85 % within 0.25 and sliced-W2(1 step) <= 2 x sliced-W2(128 steps), while one
  Euler step of a naive flow model trained alike is >= 5x worse.
* **IMM (4c.3).** 8 Gaussians scaled to std ~ sigma_d = 0.5 (radius 0.7), MLP with (t, s)
  embeddings, euler_fm, M = 4 particles per group, batch 256, k = 12, a = 1, b = 4, Adam 1e-3,
  10,000 steps. Pass: the loss falls >= 10x from its start and stays finite; RBF-MMD^2 (bw 0.5)
  of 1-step samples to the data <= 0.05 and 4-step <= 1-step; all modes hit. Ablation: M = 1
  (a consistency-style loss) should be noticeably worse.
* **Model guidance (8c.1).** 1-D two classes, means -1 / +1, std 0.5; a small MLP trained with
  the MG target (omega = 1.45, the paper's, t < 0.75) for 2,000 steps. The spec's pass: the
  learned conditional velocity within 5 % RMS of the CFG-guided velocity v_u + lambda (v_c -
  v_u) (exact, closed form) and the class mean of its unguided Euler samples within 5 % of
  m = 1 of CFG(lambda) sampling with the exact velocities -- scored twice: with the spec's
  lambda = omega, and with lambda = 1 / (2 - omega), the fixed point of training with the model
  as its own guide (:mod:`diffjax.losses.model_guidance`, "Fixed point"). The spec's omega = 2
  has no fixed point (the velocities run away; an earlier run of this check showed it).

Adam has a constant learning rate everywhere (the spec's "Adam 1e-3"). Samples (unclipped) come
from an evaluation EMA (0.999) of the weights, as the references sample; the online weights'
one-step figure is reported beside it. Writes
``experiments/results/few_step_learning_checks_cpu.md`` and ``.json``.

Usage: python experiments/few_step_learning_checks.py [--tiny] [--only cm,shortcut,imm,mg]
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import diffjax as dj
from diffjax import train as T
from diffjax.guidance import ClassifierFreeGuidance
from diffjax.losses import consistency as cm
from diffjax.methods import consistency_function
from diffjax.metrics import toy as toy_metrics
from diffjax.parameterization import convert
from diffjax.processes import EDM, Linear
from diffjax.run.build import Built, build, build_method, build_network, build_process
from diffjax.samplers import few_step

RESULTS = Path(__file__).resolve().parent / "results"
# every check is scored on an evaluation EMA of the weights, as the references sample (the
# shortcut reference's rate; the CM / IMM references use >= 0.9999 over far longer runs); the
# online weights' one-step figure is reported beside it
EVAL_EMA = 0.999
LR = 1e-3  # Adam, constant rate, in every check


# ----------------------------------------------------------------------------------------------
# shared pieces
# ----------------------------------------------------------------------------------------------


def ring(radius, std=0.05, modes=8, process=None):
    ang = 2 * np.pi * np.arange(modes) / modes
    means = radius * np.stack([np.cos(ang), np.sin(ang)], 1)
    return dj.analytic.GaussianMixture.create(np.ones(modes), means, std,
                                              process or Linear()), means


def setup(config, batch_size, dim) -> Built:
    """The run layer's :class:`~diffjax.run.build.Built` of a method's ``config`` for in-memory
    data of dimension ``dim`` (no data set is opened; labelled when the network is
    class-conditional): ``config`` completed with the batch and the constant-rate Adam
    :data:`LR` of every check."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.data = dict(name="in-memory toy data", batch_size=int(batch_size))
    c.optim = dict(name="adam", lr=LR)
    labelled = bool(c.model.get("num_classes", 0))
    return build(c, data=False, x_shape=(dim,), has_label=labelled)


def network_of(config):
    """The :class:`~diffjax.models.Network` of ``config.model`` on ``config.process`` (the
    checks that write their own loss)."""
    return build_network(config.model, build_process(config.process))


def fit(loss_fn, init_params, specs, draw, steps, batch, seed=0, init_extra=None,
        update_extra=None, optimizer=None):
    """Constant-rate Adam :data:`LR` (or ``optimizer``) through the library's train step; fresh
    draws every step; an ``'eval'`` EMA (:data:`EVAL_EMA`) beside the method's own. Returns
    ``(initial params, state, seconds, losses)``."""
    specs = {"eval": T.EMASpec(decay=EVAL_EMA), **specs}
    opt = optimizer or T.make_optimizer("adam", LR)
    params0 = init_params(jax.random.key(seed))
    state = T.create_train_state(lambda key: params0, opt, seed=seed, ema_names=tuple(specs),
                                 init_extra=init_extra)
    step = T.make_train_step(loss_fn, opt, specs, batch, loss_takes_state=True,
                             update_extra=update_extra)

    def body(st, k):
        st, met = step(st, draw(k, batch))
        return st, met["loss"]

    run = jax.jit(lambda st, keys: jax.lax.scan(body, st, keys), donate_argnums=0)
    t0, losses, done = time.perf_counter(), [], 0
    key = jax.random.key(seed + 100)
    while done < steps:
        n = min(1000, steps - done)
        state, ls = run(state, jax.random.split(jax.random.fold_in(key, done), n))
        losses.append(np.asarray(ls))
        done += n
    jax.block_until_ready(state.params)
    return params0, state, time.perf_counter() - t0, np.concatenate(losses)


def fit_method(built: Built, draw, steps, seed=0):
    """:func:`fit` of ``built``: its method's loss, initial parameters and extra state, its
    EMAs and its optimizer."""
    m = built.method
    return fit(m.loss, m.init_params or built.setup.network.init, built.ema_specs, draw, steps,
               built.setup.batch_size, seed, init_extra=m.init_extra,
               update_extra=m.update_extra, optimizer=built.optimizer)


def coverage(x, means, radius=0.25):
    d = np.linalg.norm(np.asarray(x)[:, None] - means[None], axis=-1)
    near = d.min(1) <= radius
    return float(near.mean()), int(np.unique(d.argmin(1)[near]).size)


def unlabelled(gmm):
    return lambda k, n: {"image": gmm.sample_data(k, n)}


def toy_config(process, width, depth, **model_kw):
    c = ml_collections.ConfigDict()
    c.process = dict(name=process)
    c.model = dict(name="mlp", dim=model_kw.pop("dim", 2), width=width, depth=depth, **model_kw)
    c.train = dict(num_steps=1)
    return c


# ----------------------------------------------------------------------------------------------
# 2c.4 consistency models
# ----------------------------------------------------------------------------------------------


def consistency_fn(network):
    """``f_theta(params, x, t, cond, dropout_key)`` as the library's CD/CT methods build it
    (:func:`diffjax.methods.consistency_function`)."""
    def f(params, x, t, cond=None, key=None):
        return consistency_function(network, params, train=key is not None, key=key)(x, t, cond)
    return f


def check_cm(tiny):
    radius = 2.0
    gmm, means = ring(radius, process=EDM())
    sd = float(np.sqrt(radius**2 / 2 + 0.05**2))  # per-coordinate std of the ring
    n = 1000 if tiny else 10_000
    ref = np.asarray(jax.jit(gmm.sample_data, static_argnums=1)(jax.random.key(123), 20 * n))
    c = toy_config("edm", 32 if tiny else 256, 1 if tiny else 3, precond="edm", sigma_data=sd)
    network, batch = network_of(c), 64 if tiny else 512
    process = network.process
    f = consistency_fn(network)

    def evaluate(params):
        model = consistency_function(network, params)  # a pytree: the weights are traced
        key = jax.random.key(7)
        x1 = few_step.consistency_sample(model, key, (n, 2), process=process, clip=False,
                                         mesh=None)
        x2 = few_step.consistency_sample(model, key, (n, 2), process=process, ts=(0, 9, 17),
                                         steps=18, clip=False, mesh=None)
        cov, hit = coverage(x1, means)
        sw = lambda x: dj.analytic.sliced_wasserstein(np.asarray(x), ref)
        return dict(coverage=cov, modes_hit=hit, sw1_1=sw(x1), sw1_2=sw(x2))

    # where along sigma a model is consistent: |f_theta(x_s, s) - f*(x_s, s)| against the exact
    # consistency function f* (the mixture's PF-ODE, 200 Heun steps on a Karras grid from s to
    # sigma_min with the exact denoiser); CT's target propagates from sigma_min upwards
    probe = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 80.0)
    m_probe = 500 if tiny else 2000
    xs, fstar = [], []
    for i, sig in enumerate(probe):
        k1, k2 = jax.random.split(jax.random.key(50 + i))
        x_s = gmm.sample_data(k1, m_probe) + sig * jax.random.normal(k2, (m_probe, 2))
        a, b = sig ** (1 / 7), process.sigma_min ** (1 / 7)
        grid = (a + np.linspace(0, 1, 201) * (b - a)) ** 7 / process.sigma_max
        xs.append(x_s)
        fstar.append(dj.sample(gmm, jax.random.key(0), x_s.shape, jnp.asarray(grid),
                               dj.samplers.Heun(), process=process, prediction="x0",
                               x_init=x_s, mesh=None))

    def consistency_error(params):
        return [float(np.median(np.linalg.norm(np.asarray(
            f(params, x, jnp.full((len(x),), sig / process.sigma_max)) - fs), axis=-1)))
            for sig, x, fs in zip(probe, xs, fstar, strict=True)]

    plan = [("CD, analytic teacher, N = 18, mu = 0.95", "cd", 40 if tiny else 5000),
            ("CT, s0 = 2, s1 = 150, mu0 = 0.9", "ct", 40 if tiny else 10_000),
            ("iCT (N 10 -> 1280, log-normal, 1/dsigma, pseudo-Huber)", "ict",
             80 if tiny else 10_000)]
    rows = []
    for label, kind, steps in plan:
        if kind == "cd":
            specs = {"target": T.EMASpec(decay=0.95)}
        elif kind == "ct":
            sched = cm.ct_schedule_fn(steps, 2, 150, 0.9)
            specs = {"target": T.EMASpec(decay_fn=sched.mu)}
        else:
            sched = cm.ict_schedule_fn(steps, 10, 160 if tiny else 1280)
            specs = {}

        def loss_fn(params, key, b, state, kind=kind, sched=None if kind == "cd" else sched):
            kw = dict(process=process, metric="l2")
            if kind == "cd":
                return cm.consistency_loss(f, params, state.ema["target"], key, b["image"],
                                           num_scales=18, mode="cd", teacher=gmm,
                                           solver="heun", **kw)
            if kind == "ct":
                return cm.consistency_loss(f, params, state.ema["target"], key, b["image"],
                                           num_scales=sched.num_scales(state.step), mode="ct",
                                           **kw)
            kw.update(metric="pseudo_huber", weighting="ict", level_sampling="lognormal",
                      max_scales=sched.max_scales)
            return cm.consistency_loss(f, params, None, key, b["image"],
                                       num_scales=sched.num_scales(state.step), mode="ct", **kw)

        params0, state, secs, _ = fit(loss_fn, network.init, specs, unlabelled(gmm), steps,
                                      batch)
        r0, r = evaluate(params0), evaluate(state.ema["eval"])
        rows.append(dict(method=label, steps=steps, train_s=secs, sw1_init=r0["sw1_1"], **r,
                         sw1_1_online=evaluate(state.params)["sw1_1"],
                         err_by_sigma=consistency_error(state.ema["eval"])))
        print(rows[-1], flush=True)
    cd = rows[0]
    for r in rows:
        r["checks"] = {
            "coverage >= 0.9": r["coverage"] >= 0.9,
            "8 modes hit": r["modes_hit"] == 8,
            "SW1 drop >= 5x": r["sw1_init"] / r["sw1_1"] >= 5.0,
            "2-step <= 1-step + 10%": r["sw1_2"] <= 1.1 * r["sw1_1"],
        }
        if r is not cd:
            r["checks"]["SW1 <= 2x CD"] = r["sw1_1"] <= 2.0 * cd["sw1_1"]
    table = ["| method | steps | within 0.25 | modes hit | SW1 untrained | SW1 1 step | "
             "SW1 2 steps | SW1 1 step, online weights | train s | checks |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        table.append(f"| {r['method']} | {r['steps']} | {r['coverage']:.3f} | {r['modes_hit']} "
                     f"| {r['sw1_init']:.3f} | {r['sw1_1']:.4f} | {r['sw1_2']:.4f} | "
                     f"{r['sw1_1_online']:.4f} | {r['train_s']:.0f} | "
                     f"{_verdicts(r['checks'])} |")
    table += ["", "Median distance |f_theta(x_s, s) - f*(x_s, s)| to the exact consistency "
              "function (the mixture's PF-ODE solved to sigma_min), by noise level s (x_s = x + "
              "s z):", "",
              "| method | " + " | ".join(f"s = {v:g}" for v in probe) + " |",
              "| --- |" + " ---: |" * len(probe)]
    for r in rows:
        table.append(f"| {r['method']} | "
                     + " | ".join(f"{v:.3f}" for v in r["err_by_sigma"]) + " |")
    return dict(title="Consistency models (spec 2c.4): ring radius 2, MLP 3 x 256, batch 512",
                rows=rows, table=table)


def _verdicts(checks):
    return ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items())


# ----------------------------------------------------------------------------------------------
# 3c.2 shortcut models
# ----------------------------------------------------------------------------------------------


def check_shortcut(tiny):
    gmm, means = ring(2.0)
    n = 1000 if tiny else 10_000
    ref = np.asarray(jax.jit(gmm.sample_data, static_argnums=1)(jax.random.key(123), 20 * n))
    steps, B = (30, 64) if tiny else (20_000, 256)
    width, depth = (32, 1) if tiny else (256, 3)
    sw2 = lambda x: dj.analytic.sliced_wasserstein(np.asarray(x), ref, p=2)
    rows, key = [], jax.random.key(7)
    # the naive flow model: flow matching with the same network (d input unused) and steps
    network = network_of(toy_config("linear", width, depth, prediction="velocity"))
    lossf = lambda p, k, b, st: dj.losses.flow_matching_loss(
        network.bind(p), k, b["image"], process=network.process, prediction="velocity")
    _, st, secs, _ = fit(lossf, network.init, {}, unlabelled(gmm), steps, B)
    x = dj.sample(network.bind(st.ema["eval"]), key, (n, 2), dj.uniform_grid(1),
                  dj.samplers.Euler(), process=network.process, prediction="velocity",
                  mesh=None)
    naive = sw2(x)
    rows.append(dict(method="naive flow model, 1 Euler step", steps=steps, train_s=secs,
                     sw2_1=naive, coverage=coverage(x, means)[0], modes_hit=coverage(x, means)[1]))
    print(rows[-1], flush=True)
    for label, ema in (("shortcut, bootstrap targets from the 0.999 EMA (reference)", "boot"),
                       ("shortcut, bootstrap targets from the online weights", "")):
        c = toy_config("linear", width, depth, second_scalar=True, time_input="sit")
        c.method = dict(name="shortcut", denoise_timesteps=128, bootstrap_every=8,
                        bootstrap_ema=ema, **({"bootstrap_ema_decay": 0.999} if ema else {}))
        built = setup(c, B, 2)
        _, st, secs, _ = fit_method(built, unlabelled(gmm), steps)
        out = {}
        for k_steps in (1, 2, 4, 128):
            c2 = ml_collections.ConfigDict(built.config.to_dict())
            c2.method.sample_steps = k_steps
            m2 = build_method(c2, built.setup)
            # (every sampler runs in the library's jitted scan driver)
            out[k_steps] = np.asarray(m2.sample(st.ema["eval"], key, n, None))
            if k_steps == 1:
                online = sw2(m2.sample(st.params, key, n, None))
        cov, hit = coverage(out[1], means)
        r = dict(method=label, steps=steps, train_s=secs, coverage=cov, modes_hit=hit,
                 **{f"sw2_{k}": sw2(v) for k, v in out.items()}, sw2_1_online=online)
        r["checks"] = {"8 modes hit": hit == 8, "within 0.25 >= 0.85": cov >= 0.85,
                       "SW2(1) <= 2 x SW2(128)": r["sw2_1"] <= 2 * r["sw2_128"],
                       "naive 1-step >= 5x worse": naive >= 5 * r["sw2_1"]}
        rows.append(r)
        print(rows[-1], flush=True)
    table = ["| model | steps | within 0.25 (1 step) | modes hit | SW2 1 step | SW2 2 | SW2 4 | "
             "SW2 128 | SW2 1 step, online weights | train s | checks |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        f = lambda k, r=r: f"{r[k]:.4f}" if k in r else ""
        table.append(f"| {r['method']} | {r['steps']} | {r['coverage']:.3f} | "
                     f"{r['modes_hit']} | {f('sw2_1')} | {f('sw2_2')} | {f('sw2_4')} | "
                     f"{f('sw2_128')} | {f('sw2_1_online')} | "
                     f"{r['train_s']:.0f} | {_verdicts(r.get('checks', {}))} |")
    return dict(title="Shortcut models (spec 3c.2): ring radius 2, MLP 3 x 256, batch 256, "
                      "M = 128", rows=rows, table=table)


# ----------------------------------------------------------------------------------------------
# 4c.3 IMM
# ----------------------------------------------------------------------------------------------


def check_imm(tiny):
    gmm, means = ring(0.7)  # per-coordinate std ~0.5 = sigma_d
    n = 1000 if tiny else 4000  # the MMD is O(n^2) in memory
    ref = np.asarray(jax.jit(gmm.sample_data, static_argnums=1)(jax.random.key(123), n))
    steps, B = (30, 64) if tiny else (10_000, 256)
    width, depth = (32, 1) if tiny else (256, 3)
    rows, key = [], jax.random.key(7)
    for label, M in (("IMM, M = 4 particles per group", 4),
                     ("ablation: M = 1 (consistency-style loss)", 1)):
        c = toy_config("linear", width, depth, second_scalar=True, time_input="t",
                       time_scale=1.0)
        c.method = dict(name="imm", group_size=M, kind="euler_fm", k=12, a=1.0, b=4.0, T=0.994)
        built = setup(c, B, 2)
        _, st, secs, losses = fit_method(built, unlabelled(gmm), steps)
        first = float(np.mean(losses[: max(1, len(losses) // 100)]))
        last = float(np.mean(losses[-max(1, len(losses) // 10):]))
        out = {}
        for k_steps in (1, 2, 4):
            c2 = ml_collections.ConfigDict(built.config.to_dict())
            c2.method.sample_steps = k_steps
            m2 = build_method(c2, built.setup)
            smp = lambda p, k, m2=m2: m2.sample(p, k, n, None)  # the jitted scan driver
            out[k_steps] = np.asarray(smp(st.ema["eval"], key))
            if k_steps == 1:
                online = toy_metrics.mmd(np.asarray(smp(st.params, key)), ref, bandwidth=0.5)
        mmd = {k: toy_metrics.mmd(v, ref, bandwidth=0.5) for k, v in out.items()}
        cov, hit = coverage(out[1], means)
        r = dict(method=label, steps=steps, train_s=secs, loss_first=first, loss_last=last,
                 finite=bool(np.all(np.isfinite(losses))), coverage=cov, modes_hit=hit,
                 **{f"mmd_{k}": v for k, v in mmd.items()}, mmd_1_online=online)
        if M > 1:
            r["checks"] = {"loss falls >= 10x, finite": r["finite"] and first >= 10 * last,
                           "MMD2(1 step) <= 0.05": mmd[1] <= 0.05,
                           "MMD2(4) <= MMD2(1)": mmd[4] <= mmd[1], "8 modes hit": hit == 8}
        rows.append(r)
        print(rows[-1], flush=True)
    rows[1]["checks"] = {"M = 1 worse than M = 4 (1 step)": rows[1]["mmd_1"] > rows[0]["mmd_1"]}
    table = ["| model | steps | loss first 1% -> last 10% | MMD2 1 step | 2 steps | 4 steps | "
             "1 step, online weights | modes hit | train s | checks |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        table.append(f"| {r['method']} | {r['steps']} | {r['loss_first']:.4g} -> "
                     f"{r['loss_last']:.4g} | {r['mmd_1']:.4f} | {r['mmd_2']:.4f} | "
                     f"{r['mmd_4']:.4f} | {r['mmd_1_online']:.4f} | {r['modes_hit']} | "
                     f"{r['train_s']:.0f} | "
                     f"{_verdicts(r['checks'])} |")
    return dict(title="IMM (spec 4c.3): ring radius 0.7 (std ~0.5), euler_fm, k = 12, a = 1, "
                      "b = 4, batch 256; RBF-MMD^2 (bandwidth 0.5) of samples to the data",
                rows=rows, table=table)


# ----------------------------------------------------------------------------------------------
# 8c.1 model guidance
# ----------------------------------------------------------------------------------------------


def check_mg(tiny):
    m_, std, omega, null = 1.0, 0.5, 1.45, 2
    proc = Linear()
    comps = [dj.analytic.Gaussian.create([v], [[std**2]], proc) for v in (-m_, m_)]
    mix = dj.analytic.GaussianMixture.create([0.5, 0.5], [[-m_], [m_]], [std, std], proc)

    def exact_v(x, t, y):
        to_v = lambda g: convert(g(x, t), x, t, proc, "x0", "velocity")
        vc = jnp.where((y == 0)[:, None], to_v(comps[0]), to_v(comps[1]))
        return jnp.where((y == null)[:, None], to_v(mix), vc)

    def draw(k, n):
        kc, kz = jax.random.split(k)
        y = jax.random.bernoulli(kc, 0.5, (n,)).astype(jnp.int32)
        return {"image": (2.0 * y - 1.0)[:, None] * m_ + std * jax.random.normal(kz, (n, 1)),
                "label": y}

    steps, B = (30, 64) if tiny else (2000, 256)
    c = toy_config("linear", 32 if tiny else 128, 1 if tiny else 3, dim=1, num_classes=2,
                   prediction="velocity")
    c.ema = dict(ema=0.99)
    c.method = dict(name="mg", omega=omega, mg_high=0.75, start_step=steps // 4, drop_prob=0.1,
                    guide_ema="ema", sampler="euler", sample_steps=100, sample_t_last=0.01)
    built = setup(c, B, 1)  # EMAs: config.ema's guide (0.99) and fit's 'eval'
    mth = built.method
    _, st, secs, _ = fit_method(built, draw, steps)
    # the learned conditional velocity on the training distribution inside the window
    # (t in [0.05, 0.75): below 0.05 every velocity is dominated by the 1/t of the data term)
    n = 2000 if tiny else 20_000
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    b = draw(k1, n)
    t = jax.random.uniform(k2, (n,), minval=0.05, maxval=0.75)
    x_t = (1 - t)[:, None] * b["image"] + t[:, None] * jax.random.normal(k3, (n, 1))
    vc, vu = exact_v(x_t, t, b["label"]), exact_v(x_t, t, jnp.full((n,), null))
    v_learn = built.setup.network.bind(st.ema["ema"])(x_t, t, b["label"])
    y = jnp.ones((n,), jnp.int32)
    x_mg = mth.sample(st.ema["ema"], jax.random.key(9), n, y)
    mean_mg = float(np.mean(np.asarray(x_mg)))
    exact = jax.tree_util.Partial(lambda x, t, cond=None: exact_v(x, t, cond))
    rows = []
    for label, lam in ((f"lambda = omega = {omega} (the spec's v*)", omega),
                       (f"lambda = 1 / (2 - omega) = {1 / (2 - omega):.3f} (fixed point)",
                        1.0 / (2.0 - omega))):
        v_star = vu + lam * (vc - vu)
        rel = float(jnp.sqrt(jnp.mean((v_learn - v_star) ** 2) / jnp.mean(v_star**2)))
        cfg = ClassifierFreeGuidance(exact, lam, interval=(0.0, 0.75), null_label=null)
        x_cfg = dj.sample(cfg, jax.random.key(9), (n, 1), dj.uniform_grid(100),
                          dj.samplers.Euler(), process=proc, prediction="velocity", cond=y,
                          mesh=None)
        mean_cfg = float(np.mean(np.asarray(x_cfg)))
        r = dict(method=label, lam=lam, steps=steps, train_s=secs, rel_rms=rel,
                 mean_mg=mean_mg, mean_cfg=mean_cfg)
        r["checks"] = {"RMS(v - v*) <= 5% RMS(v*)": rel <= 0.05,
                       "|mean_MG - mean_CFG| < 0.05 m": abs(mean_mg - mean_cfg) < 0.05 * m_}
        rows.append(r)
        print(r, flush=True)
    table = ["| compared with CFG at | steps | RMS(v_MG - v*) / RMS(v*) | class-1 mean: MG "
             "unguided | CFG(lambda), exact velocities | train s | checks |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        table.append(f"| {r['method']} | {steps} | {r['rel_rms']:.4f} | {r['mean_mg']:.4f} | "
                     f"{r['mean_cfg']:.4f} | {secs:.0f} | {_verdicts(r['checks'])} |")
    return dict(title=f"Model guidance (spec 8c.1): 1-D classes -1 / +1, std 0.5, omega = "
                      f"{omega}, guidance on t < 0.75, MLP 3 x 128, guide EMA 0.99",
                rows=rows, table=table)


CHECKS = {"cm": check_cm, "shortcut": check_shortcut, "imm": check_imm, "mg": check_mg}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="seconds: a smoke test of the script")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {list(CHECKS)}")
    ap.add_argument("--out", default=str(RESULTS / "few_step_learning_checks_cpu"))
    args = ap.parse_args(argv)
    names = [w for w in args.only.split(",") if w] or list(CHECKS)
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise ValueError(f"--only: unknown checks {unknown}; expected some of {list(CHECKS)}")
    out_json = Path(args.out + ".json")
    results = {}
    if args.only and out_json.exists():  # rerunning a subset keeps the others' results
        results = json.loads(out_json.read_text()).get("checks", {})
    for name in names:
        print(f"== {name}", flush=True)
        results[name] = CHECKS[name](args.tiny)
    lines = ["# Few-step learning checks of the spec (CPU)", "",
             f"{datetime.date.today().isoformat()}, jax {jax.__version__}"
             f"{' (--tiny: NOT the checks)' if args.tiny else ''}. Script: "
             "`experiments/few_step_learning_checks.py` (its docstring gives each setting and "
             "the spec's pass criteria). Adam 1e-3 constant; samples (unclipped) from an "
             f"evaluation EMA {EVAL_EMA} of the weights (MG: its guide EMA 0.99), as the "
             "references sample; the online weights' one-step figure beside it.", ""]
    for name in CHECKS:
        if name in results:
            lines += [f"## {results[name]['title']}", "", *results[name]["table"], ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out + ".md").write_text(text)
    out_json.write_text(json.dumps(dict(checks=results), indent=2,
                                   default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    return results


if __name__ == "__main__":
    main()
