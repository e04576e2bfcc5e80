"""Consistency models (§2), shortcut models (§3), IMM (§4) and model guidance (§8), and the
few-step samplers through the scan driver.

Closed-form oracles only (Gaussian data); no training. Tolerances are stated next to each
check: float64 reproductions of closed-form numbers (the vectors below were computed in float64
from the papers' formulas), float32 identities at a few ulps, Monte-Carlo moments at 4-5
standard errors.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _scripts import load_script

import diffjax as dj
from diffjax.grids import karras_sigma
from diffjax.losses import consistency as cm
from diffjax.losses import imm
from diffjax.losses import model_guidance as mg
from diffjax.losses import shortcut as sc
from diffjax.parameterization import (
    ConsistencyPrecond,
    consistency_coeffs,
    convert,
    imm_coeffs,
    imm_map,
)
from diffjax.processes import EDM, Linear
from diffjax.samplers import few_step

S = 0.5  # data std of the Gaussian oracle (x ~ N(0, 0.25))
SMIN, SMAX = 0.002, 80.0


# ---------------------------------------------------------------------------------------------
# tiny MLP used for differentiability checks
# ---------------------------------------------------------------------------------------------


def _mlp_init(key, d_in, d_out, width=16):
    k1, k2 = jax.random.split(key)
    return {"w1": 0.3 * jax.random.normal(k1, (d_in, width)), "b1": jnp.zeros((width,)),
            "w2": 0.3 * jax.random.normal(k2, (width, d_out)), "b2": jnp.zeros((d_out,))}


def _mlp(p, h):
    return jnp.tanh(h @ p["w1"] + p["b1"][None]) @ p["w2"] + p["b2"][None]


def _finite_grads(g):
    return all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(g))


# ---------------------------------------------------------------------------------------------
# §2 consistency models
# ---------------------------------------------------------------------------------------------


def test_boundary_condition_and_coefficients():
    # exact at sigma_min; float64-computed values at sigma_max (float32: rtol 1e-5)
    c_skip, c_out, _, _ = consistency_coeffs(jnp.float32(SMIN))
    assert float(c_skip) == 1.0 and float(c_out) == 0.0
    c_skip, c_out, _, _ = consistency_coeffs(jnp.float32(SMAX))
    np.testing.assert_allclose([c_skip, c_out], [3.906e-5, 0.499978], rtol=1e-3)
    net = lambda x, c, cond: 7.0 + 3.0 * x  # any raw network
    f = ConsistencyPrecond(net, EDM())
    x = jax.random.normal(jax.random.key(0), (4, 3))
    np.testing.assert_array_equal(f(x, jnp.full((4,), SMIN / SMAX), None), x)


@pytest.mark.parametrize("setting, vectors", [
    ((800_000, 2, 150, 0.9), [(0, 0.81, 2), (1000, 0.958732, 6), (100_000, 0.996032, 54),
                              (400_000, 0.998014, 107), (800_000, 0.998596, 151)]),
    ((800_000, 2, 200, 0.95), [(0, 0.9025, 2), (1000, 0.985452, 8), (100_000, 0.998556, 72),
                               (400_000, 0.999278, 143), (800_000, 0.999487, 201)]),
])
def test_ct_schedule_vectors(setting, vectors):
    # reference-code semantics (mu divides by N - 1); vectors printed to 6 decimals
    K, s0, s1, mu0 = setting
    for k, mu, n in vectors:
        got_mu, got_n = cm.ct_schedule(k, K, s0, s1, mu0)
        assert got_n == n
        assert abs(got_mu - mu) <= 6e-7


def _f_star(x, sigma):
    return x * jnp.sqrt(S**2 + SMIN**2) / jnp.sqrt(S**2 + sigma**2)


def _numpy_cd_errors(N):
    i = np.arange(N) / (N - 1)
    a, b = SMAX ** (1 / 7), SMIN ** (1 / 7)
    sg = (a + i * (b - a)) ** 7
    t, t2 = sg[:-1], sg[1:]
    D = lambda x, s: S**2 * x / (S**2 + s**2)
    x = np.ones_like(t)
    d = (x - D(x, t)) / t
    xe = x + (t2 - t) * d
    x2 = x + (t2 - t) * 0.5 * (d + (xe - D(xe, t2)) / t2)
    fs = lambda x, s: x * np.sqrt(S**2 + SMIN**2) / np.sqrt(S**2 + s**2)
    return np.max(np.abs(fs(x2, t2) - fs(x, t)) / np.abs(fs(x, t)))


@pytest.mark.parametrize("N, spec_err", [(18, 2.0e-2), (40, 1.6e-3), (80, 2.0e-4), (160, 2.4e-5)])
def test_cd_target_gaussian_oracle(N, spec_err):
    """CD's one-step error of the exact f* under Heun. The relative error is a difference of
    nearly equal numbers (2e-5 at N=160), so float32 cannot resolve it to 1e-6 of itself: the
    reproduction runs in float64 (``jax.enable_x64``) against an independent numpy float64
    computation (rtol 1e-6), and against float64 values printed to 2 significant digits
    (rtol 2.5%: their rounding is <= 1.8%)."""
    with jax.enable_x64(True):
        teacher = lambda x, t, cond: S**2 * x / (S**2 + (SMAX * t[:, None]) ** 2)
        n = jnp.arange(N - 1)
        sig, sig2 = karras_sigma(n, N), karras_sigma(n + 1, N)
        assert sig.dtype == jnp.float64
        x = jnp.ones((N - 1, 1), jnp.float64)
        x2 = cm.cd_target(teacher, x, sig, sig2, process=EDM(), solver="heun")
        err = jnp.abs(_f_star(x2, sig2[:, None]) - _f_star(x, sig[:, None])) / jnp.abs(
            _f_star(x, sig[:, None]))
        err = float(jnp.max(err))
    np.testing.assert_allclose(err, _numpy_cd_errors(N), rtol=1e-6)
    np.testing.assert_allclose(err, spec_err, rtol=0.025)
    # the same through the float32 library oracle (analytic.Gaussian on the EDM process):
    # float32 resolves the error only to ~1e-7 absolute
    g = dj.analytic.Gaussian.create([0.0], [[S**2]], EDM())
    n = jnp.arange(N - 1)
    sig, sig2 = karras_sigma(n, N), karras_sigma(n + 1, N)
    x = jnp.ones((N - 1, 1))
    x2 = cm.cd_target(g, x, sig, sig2, process=EDM())
    err32 = float(jnp.max(jnp.abs(_f_star(x2, sig2[:, None]) / _f_star(x, sig[:, None]) - 1)))
    assert abs(err32 - err) <= 2e-6 + 1e-3 * err


def test_cd_loss_with_exact_f_is_below_squared_error_and_ct_target():
    N = 18
    g = dj.analytic.Gaussian.create([0.0], [[S**2]], EDM())
    apply = lambda p, x, t, cond, k: _f_star(x, SMAX * t[:, None])
    x0 = S * jax.random.normal(jax.random.key(1), (512, 1))
    loss, aux = cm.consistency_loss(apply, None, None, jax.random.key(2), x0, num_scales=N,
                                    teacher=g, mode="cd", metric="l2")
    # |F2 - F1| <= err_max |F1| row-wise and F1 = f*(x_t, t) ~ N(0, s^2 + s_min^2), so the mean
    # loss is <= err_max^2 E[F1^2] = (2.0e-2)^2 * 0.25 (30% margin for the MC average)
    assert loss.shape == (512,) and float(jnp.mean(loss)) <= 1.3 * 2.0e-2**2 * S**2
    assert float(jnp.mean(loss)) > 0.0
    # CT target is x + t2 z
    z = jax.random.normal(jax.random.key(3), x0.shape)
    np.testing.assert_allclose(cm.ct_target(x0, z, jnp.full((512,), 0.3)), x0 + 0.3 * z)
    # Euler and DDIM coincide on the EDM process
    sig, sig2 = jnp.full((512,), 5.0), jnp.full((512,), 2.0)
    e = cm.teacher_step(g, x0 + 5.0, sig, sig2, solver="euler")
    d = cm.teacher_step(g, x0 + 5.0, sig, sig2, solver="ddim")
    np.testing.assert_allclose(e, d, rtol=1e-5, atol=1e-5)


def test_same_dropout_key_and_ema_target():
    seen = []

    def apply(p, x, t, cond, k):
        seen.append((p, k))
        return p * x

    x0 = jnp.ones((8, 2))
    cm.consistency_loss(apply, 2.0, 3.0, jax.random.key(0), x0, mode="ct", num_scales=10)
    (p1, k1), (p2, k2) = seen
    assert float(p1) == 2.0 and float(p2) == 3.0
    np.testing.assert_array_equal(jax.random.key_data(k1), jax.random.key_data(k2))


@pytest.mark.parametrize("mode, metric", [("cd", "l2"), ("ct", "l1"), ("ct", "pseudo_huber"),
                                          ("cd", "lpips_like")])
def test_consistency_loss_differentiable(mode, metric):
    params = _mlp_init(jax.random.key(0), 3, 2)
    net = lambda x, c, cond, p: _mlp(p, jnp.concatenate([x, c[:, None]], axis=1))

    def apply(p, x, t, cond, k):
        return ConsistencyPrecond(functools.partial(net, p=p), EDM())(x, t, cond)

    if metric == "lpips_like":  # a metric hook: distance in a fixed feature space
        metric = lambda a, b: jnp.sum((jnp.tanh(a) - jnp.tanh(b)) ** 2, axis=1)
    teacher = dj.analytic.Gaussian.create([0.0, 0.0], np.eye(2) * S**2, EDM())
    x0 = S * jax.random.normal(jax.random.key(1), (16, 2))
    ema = jax.tree_util.tree_map(lambda v: 0.9 * v, params)

    def obj(p):
        return jnp.mean(cm.consistency_loss(apply, p, ema, jax.random.key(2), x0, mode=mode,
                                            teacher=teacher, metric=metric,
                                            num_scales=jnp.int32(18))[0])

    v, g = jax.jit(jax.value_and_grad(obj))(params)
    assert np.isfinite(float(v)) and _finite_grads(g)


def test_consistency_bad_inputs():
    apply = lambda p, x, t, cond, k: x
    x0 = jnp.ones((4, 2))
    with pytest.raises(ValueError, match="mode"):
        cm.consistency_loss(apply, None, None, jax.random.key(0), x0, mode="xx")
    with pytest.raises(ValueError, match="teacher"):
        cm.consistency_loss(apply, None, None, jax.random.key(0), x0, mode="cd")
    with pytest.raises(ValueError, match="process"):
        cm.consistency_loss(apply, None, None, jax.random.key(0), x0, mode="ct", process=Linear())
    with pytest.raises(ValueError, match="num_scales"):
        cm.consistency_loss(apply, None, None, jax.random.key(0), x0, mode="ct", num_scales=1)
    with pytest.raises(ValueError, match="metric"):
        cm.consistency_loss(apply, None, None, jax.random.key(0), x0, mode="ct", metric="l3")
    with pytest.raises(ValueError, match="solver"):
        cm.teacher_step(apply, x0, jnp.ones(4), jnp.ones(4), solver="rk4")
    with pytest.raises(ValueError, match="x0"):
        cm.consistency_loss(apply, None, None, jax.random.key(0), jnp.ones(4), mode="ct")
    with pytest.raises(ValueError, match="total_steps"):
        cm.ct_schedule(0, 0)
    with pytest.raises(ValueError, match="ts"):
        few_step.consistency_sample(apply, jax.random.key(0), (2, 1), ts=[5, 3], steps=40)


def test_consistency_sampling_with_exact_f():
    # one step with f* maps sigma_max z to N(0, s^2 + s_min^2) * s_max^2/(s^2 + s_max^2):
    # std 0.499990 (== 0.5 to 1e-5); MC error of std at n=100k: 0.5/sqrt(2n) = 1.1e-3
    model = lambda x, t, cond: _f_star(x, SMAX * t[:, None])
    n = 100_000
    x = few_step.consistency_sample(model, jax.random.key(0), (n, 1), clip=False)
    assert abs(float(jnp.mean(x))) < 5 * S / np.sqrt(n)
    assert abs(float(jnp.std(x)) - S) < 5 * S / np.sqrt(2 * n)
    # multistep [0, 22, 39] of 40 (ImageNet CD): exact std sqrt(s^2 + s_min^2)
    x = few_step.consistency_sample(model, jax.random.key(1), (n, 1), ts=(0, 22, 39), steps=40,
                                    clip=False)
    assert abs(float(jnp.std(x)) - S) < 5 * S / np.sqrt(2 * n)
    xc = few_step.consistency_sample(model, jax.random.key(0), (64, 1))
    assert float(jnp.max(jnp.abs(xc))) <= 1.0


# ---------------------------------------------------------------------------------------------
# §3 shortcut models: diffjax time (data at t = 0) on Linear(sigma_min=1e-5). The exact
# oracles are written in the paper's time t' = 1 - t (data at t' = 1): s* = dx/dt' = -u*.
# ---------------------------------------------------------------------------------------------


def _sig_sc(t):
    return jnp.sqrt((1.0 - t) ** 2 + t**2 * S**2)


def _s_star(x, t, level):
    """Exact shortcut of N(0, s^2) data on the linear path, paper time (t' = 1 is data): the
    flow map from t' to t' + d is x -> x sigma(t' + d) / sigma(t'), so s* = (that - x) / d."""
    d = 2.0 ** (-level.astype(x.dtype))
    t, d = t[:, None], d[:, None]
    return x * (_sig_sc(t + d) / _sig_sc(t) - 1.0) / d


def _v_star(x, t):
    t = t[:, None]
    return x * (t * S**2 - (1.0 - t)) / _sig_sc(t) ** 2


def _u_star(x, t, level):
    """The same shortcut in diffjax time and velocity (dtype-preserving, for float64)."""
    return -_s_star(x, 1.0 - t, level)


def test_shortcut_level_allocation():
    lv, per = sc.bootstrap_levels(256, 128, 8)
    assert per == 4 and lv.shape == (32,)
    np.testing.assert_array_equal(lv, np.r_[np.repeat(np.arange(6, -1, -1), 4), [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="batch_size"):
        sc.bootstrap_levels(32, 128, 8)  # 4 bootstrap rows < 7 levels
    with pytest.raises(ValueError, match="bootstrap_every"):
        sc.bootstrap_levels(100, 128, 8)
    with pytest.raises(ValueError, match="denoise_timesteps"):
        sc.bootstrap_levels(256, 100, 8)
    with pytest.raises(ValueError, match="Linear"):
        sc.shortcut_targets(lambda *a: a[1], None, jax.random.key(0), jnp.ones((256, 1)),
                            process=EDM())


def test_shortcut_path_is_linear_with_sigma_min():
    """The paper's x_t' = (1 - (1 - eps) t') x_noise + t' x_data is Linear(sigma_min=eps) at
    t = 1 - t', and its velocity is minus the paper's flow target x_data - (1 - eps) x_noise."""
    proc, eps = sc.SHORTCUT_PROCESS, 1e-5
    assert isinstance(proc, Linear) and proc.sigma_min == eps
    tp = jnp.linspace(0.0, 1.0, 129)
    x, z = jax.random.normal(jax.random.key(0), (2, 129, 3))
    np.testing.assert_allclose(proc.marginal(x, 1.0 - tp, z),
                               (1 - (1 - eps) * tp)[:, None] * z + tp[:, None] * x,
                               rtol=1e-6, atol=1e-6)
    t = (1.0 - tp)[:, None]
    u = proc.alpha_dot(t) * x + proc.sigma_dot(t) * z
    np.testing.assert_allclose(u, -(x - (1 - eps) * z), rtol=1e-6, atol=1e-7)


def test_shortcut_bootstrap_targets_match_exact_shortcut():
    # with the exact u* as u_ema, (u1 + u2)/2 = u*(x, t, 2 d_half) for any x_t.
    # u* = -x (sigma(t'+d)/sigma(t') - 1)/d loses ~log2(1/d) bits to cancellation, so the
    # identity is checked in float64 (to 1e-9) ...
    apply = lambda p, x, t, lv, y: _u_star(x, t, lv)
    with jax.enable_x64(True):
        x1 = S * jax.random.normal(jax.random.key(0), (256, 3), jnp.float64)
        tg = jax.jit(lambda x: sc.shortcut_targets(apply, None, jax.random.key(1), x,
                                                   clip=None))(x1)
        bb = 32
        assert tg["target"].dtype == jnp.float64
        exact = _u_star(tg["x_t"][:bb], tg["t"][:bb], tg["d_level"][:bb])
        np.testing.assert_allclose(tg["target"][:bb], exact, rtol=1e-9, atol=1e-12)
    # ... and in float32 against u* in float64 at the same inputs: the cancellation costs
    # ~1/d ulps of |x| (d >= 1/64, |x_t| < 5): atol 64 * 5 * 1.2e-7 * 4
    tg = jax.jit(lambda x: sc.shortcut_targets(apply, None, jax.random.key(1), x,
                                               clip=None))(x1.astype(jnp.float32))
    xt, t, lv = (np.asarray(tg[k][:bb], np.float64) for k in ("x_t", "t", "d_level"))
    d = 2.0 ** -lv[:, None]
    sg = lambda u: np.sqrt((1 - u) ** 2 + u**2 * S**2)
    exact = -xt * (sg(1 - t[:, None] + d) / sg(1 - t[:, None]) - 1) / d
    np.testing.assert_allclose(tg["target"][:bb], exact, atol=64 * 5 * 1.2e-7 * 4)
    # bootstrap times are on the row's grid {d, 2d, ..., 1}; flow rows on {1/128, ..., 1}
    assert float(jnp.max(jnp.abs(tg["t"][:bb] * 2.0 ** tg["d_level"][:bb] % 1))) == 0.0
    assert float(jnp.min(tg["t"])) > 0.0 and float(jnp.max(tg["t"])) == 1.0
    assert int(tg["d_level"][bb]) == 7 and float(jnp.max(tg["t"][bb:] * 128 % 1)) == 0.0
    # flow rows: x_t = (1 - t) x + (t + eps (1 - t)) z, target u = (1 - eps) z - x, with the
    # reference's draws (noise key = 3rd split of the key, rows 0..B-bb-1 of the batch)
    z = jax.random.normal(jax.random.split(jax.random.key(1), 3)[2], x1.shape)
    x32, tf = x1.astype(jnp.float32)[: 256 - bb], tg["t"][bb:, None]
    np.testing.assert_allclose(tg["x_t"][bb:], (1 - tf) * x32 + (tf + 1e-5 * (1 - tf)) * z[:224],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tg["target"][bb:], (1 - 1e-5) * z[:224] - x32, rtol=1e-6,
                               atol=1e-6)
    assert tg["target"].shape == x1.shape and tg["labels"] is None
    # the exact shortcut is self-consistent and tends to v* as d -> 0 (float64 closed form)
    with jax.enable_x64(True):
        x = jnp.linspace(-1.0, 1.0, 5)[:, None]
        t = jnp.full((5,), 0.25)
        full = _s_star(x, t, jnp.full((5,), 2))
        b1 = _s_star(x, t, jnp.full((5,), 3))
        b2 = _s_star(x + 0.125 * b1, t + 0.125, jnp.full((5,), 3))
        np.testing.assert_allclose(full, 0.5 * (b1 + b2), atol=1e-14)
        np.testing.assert_allclose(_s_star(x, t, jnp.full((5,), 30)), _v_star(x, t), atol=1e-8)


def test_shortcut_bootstrap_cfg_rows():
    # model output 1 for a real label, 0 for the null label: the first B_b // L bootstrap rows
    # get the guided 0 + 1.5 (1 - 0), the other bootstrap rows 1.
    num_classes = 10
    apply = lambda p, x, t, lv, y: jnp.broadcast_to((y != num_classes)[:, None] * 1.0, x.shape)
    x1 = jnp.zeros((256, 2))
    labels = jnp.arange(256) % num_classes
    tg = sc.shortcut_targets(apply, None, jax.random.key(0), x1, labels, num_classes=num_classes,
                             bootstrap_cfg=True, cfg_scale=1.5)
    np.testing.assert_allclose(tg["target"][:4], 1.5)
    np.testing.assert_allclose(tg["target"][4:32], 1.0)
    np.testing.assert_array_equal(tg["labels"][:32], labels[:32])  # never dropped
    assert bool(jnp.any(tg["labels"][32:] == num_classes))


def _paper_time_shortcut(apply_fn, params, key, x1, labels, num_classes, M, every, w, eps=1e-5,
                         clip=4.0, drop_prob=0.1):
    """The reference's get_targets + loss written in the paper's time (data at t' = 1, path
    (1 - (1 - eps) t') x0 + t' x1, s = dx/dt'), as diffjax computed it before moving to diffjax
    time: the independent check of the new loss."""
    B, L = x1.shape[0], int(np.log2(M))
    bb = B // every
    per = bb // L
    lv = jnp.asarray(np.r_[np.repeat(L - 1 - np.arange(L), per), np.zeros(bb - per * L)],
                     jnp.int32)
    label_key, time_key, noise_key = jax.random.split(key, 3)
    cl = lambda v: jnp.clip(v, -clip, clip)
    sections = 2**lv
    t_b = jax.random.randint(time_key, (bb,), 0, sections).astype(jnp.float32) / sections
    xb0 = jax.random.normal(noise_key, x1[:bb].shape)
    x_t_b = (1 - (1 - eps) * t_b[:, None]) * xb0 + t_b[:, None] * x1[:bb]
    half = 1.0 / 2.0 ** lv.astype(jnp.float32) / 2.0

    def s_fn(x, t):
        c = apply_fn(params, x, t, lv + 1, labels[:bb])
        u = apply_fn(params, x[:per], t[:per], lv[:per] + 1, jnp.full((per,), num_classes))
        return jnp.concatenate([u + w * (c[:per] - u), c[per:]], axis=0)

    b1 = s_fn(x_t_b, t_b)
    b2 = s_fn(cl(x_t_b + half[:, None] * b1), t_b + half)
    tgt_b = cl(0.5 * (b1 + b2))
    t_f = jax.random.randint(time_key, (B,), 0, M).astype(jnp.float32) / M
    x0 = jax.random.normal(noise_key, x1.shape)
    x_t_f = (1 - (1 - eps) * t_f[:, None]) * x0 + t_f[:, None] * x1
    v = x1 - (1 - eps) * x0
    drop = jax.random.bernoulli(label_key, drop_prob, (B,))
    y = jnp.concatenate([labels[:bb], jnp.where(drop, num_classes, labels)[: B - bb]])
    x_t = jnp.concatenate([x_t_b, x_t_f[: B - bb]])
    t = jnp.concatenate([t_b, t_f[: B - bb]])
    lvl = jnp.concatenate([lv, jnp.full((B - bb,), L, jnp.int32)])
    target = jnp.concatenate([tgt_b, v[: B - bb]])
    loss = jnp.mean((apply_fn(params, x_t, t, lvl, y) - target) ** 2, axis=1)
    return loss, dict(x_t=x_t, t=t, d_level=lvl, target=target, labels=y)


def test_shortcut_loss_equals_the_paper_time_computation():
    """Same inputs, same keys: the diffjax-time loss on Linear(sigma_min=1e-5) with the network
    behind adapters.FlippedVelocity equals the paper-time computation (targets negated, times
    flipped, the loss itself unchanged), with bootstrap CFG and label dropout on."""
    params = _mlp_init(jax.random.key(0), 4, 2)
    paper = lambda p, x, tp, lv, y: _mlp(p, jnp.concatenate(
        [x, tp[:, None], lv[:, None].astype(x.dtype) / 7.0 + 0.1 * (y == 3)[:, None]], axis=1))
    apply = lambda p, x, t, lv, y: dj.adapters.FlippedVelocity(functools.partial(paper, p))(
        x, t, lv, y)
    x1 = 1.5 * jax.random.normal(jax.random.key(1), (128, 2))
    labels = jnp.arange(128) % 3
    kw = dict(num_classes=3, denoise_timesteps=8, bootstrap_every=4)
    ema = jax.tree_util.tree_map(lambda v: 0.9 * v, params)
    loss, aux = jax.jit(lambda p, e: sc.shortcut_loss(apply, p, e, jax.random.key(2), x1, labels,
                                                      bootstrap_cfg=True, cfg_scale=1.5, **kw))(
        params, ema)
    old_targets = jax.jit(lambda p: _paper_time_shortcut(paper, p, jax.random.key(2), x1, labels,
                                                         3, 8, 4, 1.5))
    _, old = old_targets(ema)  # the targets at the EMA weights ...
    want = jnp.mean((paper(params, old["x_t"], old["t"], old["d_level"], old["labels"])
                     - old["target"]) ** 2, axis=1)  # ... the prediction at the online ones
    np.testing.assert_array_equal(aux["t"], 1.0 - old["t"])
    np.testing.assert_array_equal(aux["d_level"], old["d_level"])
    np.testing.assert_array_equal(aux["labels"], old["labels"])
    np.testing.assert_allclose(aux["x_t"], old["x_t"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(aux["target"], -old["target"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-7)
    assert int(jnp.sum(aux["is_bootstrap"])) == 32 and float(jnp.mean(loss)) > 0.0


def test_shortcut_sampler_closed_forms():
    n = 4096
    key = jax.random.key(0)
    x0 = jax.random.normal(jax.random.key(0), (n, 1))
    u_model = dj.adapters.FlippedVelocity(_s_star_model)
    # one exact shortcut step: x1 = x0 sigma(1)/sigma(0) = s x0, exactly N(0, s^2)
    x = few_step.shortcut_sample(u_model, key, (n, 1), 1, x_init=x0)
    np.testing.assert_allclose(x, S * x0, rtol=1e-6, atol=1e-7)
    # one Euler step with the exact velocity: closed form x0 + v*(x0, 0) = 0 (collapse)
    vmodel = dj.adapters.FlippedVelocity(lambda x, t, lv, y: _v_star(x, t))
    x = few_step.shortcut_sample(vmodel, key, (n, 1), 1, x_init=x0)
    np.testing.assert_allclose(x, 0.0, atol=1e-7)
    # 128 Euler steps with v*: linear in x0, x = x0 prod_i (1 + c(t_i)/M) with
    # c(t) = (t s^2 - (1-t))/sigma(t)^2 (closed form, float64): 0.49425 vs the exact 0.5
    M = 128
    tt = np.arange(M) / M
    c = (tt * S**2 - (1 - tt)) / ((1 - tt) ** 2 + tt**2 * S**2)
    ratio = np.prod(1 + c / M)
    x = few_step.shortcut_sample(vmodel, key, (n, 1), M, x_init=x0)
    np.testing.assert_allclose(x, ratio * x0, rtol=2e-5, atol=1e-6)
    assert abs(ratio - S) < 0.012
    # at the flow level the shortcut model is the diffjax velocity of the Linear process
    g = dj.analytic.Gaussian.create([0.0], [[S**2]], Linear())
    u = sc.shortcut_as_velocity(vmodel, 7)
    tt = jnp.full((n,), 0.3)
    np.testing.assert_allclose(u(x0, tt), convert(g(x0, tt), x0, tt, Linear(), "x0", "velocity"),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="num_steps"):
        few_step.shortcut_sample(vmodel, jax.random.key(0), (2, 1), 3)


def _s_star_model(x, t, lv, y):
    return _s_star(x, t, lv)


def test_shortcut_loss_differentiable():
    params = _mlp_init(jax.random.key(0), 4, 2)
    apply = lambda p, x, t, lv, y: _mlp(
        p, jnp.concatenate([x, t[:, None], lv[:, None].astype(x.dtype) / 7.0], axis=1))
    x1 = S * jax.random.normal(jax.random.key(1), (64, 2))
    labels = jnp.arange(64) % 3
    obj = lambda p: jnp.mean(sc.shortcut_loss(apply, p, params, jax.random.key(2), x1, labels,
                                              num_classes=3, denoise_timesteps=8)[0])
    v, g = jax.jit(jax.value_and_grad(obj))(params)
    assert np.isfinite(float(v)) and _finite_grads(g)


# ---------------------------------------------------------------------------------------------
# §4 IMM
# ---------------------------------------------------------------------------------------------


def test_imm_vectors():
    # float64 vectors of r(s, t) and w(t) (printed to 6 significant digits; float32 rtol 1e-5)
    t = jnp.array([0.1, 0.5, 0.9, 0.994])
    np.testing.assert_allclose(imm.imm_mapping_r(jnp.zeros(4), t, k=12),
                               [0.066001, 0.48968, 0.899594, 0.993999], rtol=1e-5)
    np.testing.assert_allclose(imm.imm_mapping_r(jnp.zeros(4), t, k=15),
                               [0.095886, 0.498733, 0.899949, 0.994], rtol=1e-5)
    assert abs(0.994 / 0.006 - 165.67) < 5e-3 and abs(165.6667 / 4096 - 0.040446) < 1e-6
    tw = jnp.array([0.05, 0.2, 0.5, 0.8, 0.95])
    np.testing.assert_allclose(imm.imm_weight(tw, a=1, b=4),
                               [2.90326, 5.68651, 3.92806, 1.83613, 1.16307], rtol=1e-5)
    # (the a=2 row is printed to 5 decimals: half a unit of the last digit, atol 5e-6)
    np.testing.assert_allclose(imm.imm_weight(tw, a=2, b=4),
                               [2.7581, 4.54921, 1.96403, 0.36723, 0.05815], rtol=1e-5, atol=5e-6)
    # r never goes below s
    np.testing.assert_allclose(imm.imm_mapping_r(jnp.array([0.3]), jnp.array([0.3001])), 0.3)


def test_imm_maps():
    key = jax.random.key(0)
    x = jax.random.normal(key, (6, 3))
    e = 0.5 * jax.random.normal(jax.random.key(1), (6, 3))
    t = jnp.linspace(0.2, 0.9, 6)
    s = 0.5 * t
    G = jax.random.normal(jax.random.key(2), (6, 3))
    x_t = (1 - t)[:, None] * x + t[:, None] * e
    np.testing.assert_array_equal(imm_map("euler_fm", G, x_t, t, t), x_t)
    np.testing.assert_allclose(imm.ddim_interpolant(x_t, x, t, s),
                               (1 - s)[:, None] * x + s[:, None] * e, rtol=1e-5, atol=1e-6)
    # identity kind = DDIM with G as x_hat; simple_edm / identity at s = t are the identity too
    np.testing.assert_allclose(imm_map("identity", G, x_t, t, s),
                               imm.ddim_interpolant(x_t, G, t, s), rtol=1e-6)
    for kind in ("identity", "simple_edm"):
        np.testing.assert_allclose(imm_map(kind, G, x_t, t, t), x_t, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        imm_coeffs("edm", t, s)


def test_mmd_estimator():
    mmd = jax.jit(imm.mmd_v_statistic)
    a = jax.random.normal(jax.random.key(0), (4, 5))
    b = jax.random.normal(jax.random.key(1), (4, 5)) + 1.0
    w = jnp.float32(2.0)
    m = mmd(a, b, w)
    assert float(m) >= 0.0 and float(mmd(a, a, w)) == 0.0
    np.testing.assert_allclose(m, mmd(b, a, w), rtol=1e-6)
    g = jax.jit(jax.grad(imm.mmd_v_statistic))(a, b, w)
    # a small step along -grad lowers the MMD (particles move toward the y_r cloud), and the
    # gradient matches a central finite difference (float32: rtol 2e-2)
    assert float(mmd(a - 0.05 * g, b, w)) < float(m)
    dirn = jax.random.normal(jax.random.key(2), a.shape)
    h = 1e-2
    fd = (mmd(a + h * dirn, b, w) - mmd(a - h * dirn, b, w)) / (
        2 * h)
    np.testing.assert_allclose(fd, jnp.sum(g * dirn), rtol=2e-2)


def test_imm_loss_and_sampler():
    params = _mlp_init(jax.random.key(0), 4, 2)
    net = lambda p, x, ct, cs, cond: _mlp(p, jnp.concatenate(
        [x, ct[:, None] / 1000.0, cs[:, None] / 1000.0], axis=1))
    g = lambda p: imm.imm_precond(functools.partial(net, p), "euler_fm")
    apply = lambda p, x, t, s, cond: g(p)(x, t, s, cond)
    x0 = S * jax.random.normal(jax.random.key(1), (32, 2))
    obj = lambda p: jnp.mean(imm.imm_loss(apply, p, jax.random.key(2), x0, group_size=4)[0])
    v, gr = jax.jit(jax.value_and_grad(obj))(params)
    assert np.isfinite(float(v)) and _finite_grads(gr)
    loss, aux = jax.jit(lambda p: imm.imm_loss(apply, p, jax.random.key(2), x0,
                                               group_size=4))(params)
    assert loss.shape == (32,) and bool(jnp.all(aux["s"] <= aux["r"]))
    assert bool(jnp.all(aux["r"] < aux["t"]))
    with pytest.raises(ValueError, match="group_size"):
        imm.imm_loss(apply, params, jax.random.key(2), x0, group_size=5)
    # pushforward with CFG on G: G = 1 (cond) / 0 (null) -> guided G = w
    gfake = lambda x, t, s, cond: jnp.broadcast_to(cond, x.shape)
    out = few_step.imm_sample(gfake, jax.random.key(0), (3, 2), num_steps=1,
                              cond=jnp.float32(1.0), null_cond=jnp.float32(0.0), cfg_scale=1.5)
    x_T = 0.5 * _draws(jax.random.key(0), 3, (2,), draw=0)
    np.testing.assert_allclose(out, x_T - 0.994 * 0.5 * 1.5, rtol=1e-6)
    np.testing.assert_allclose(few_step.imm_time_grid(2, kind="mid_eta", mid_eta=[1.4]),
                               [0.994, 1.4 / 2.4, 0.0])
    # 'edm' grid: Karras rho = 7 in eta = t / (1 - t) between eta(T) and eta(eps_t)
    e = lambda t: t / (1 - t)
    eta = (e(0.994) ** (1 / 7) + np.arange(4) / 3 * (e(0.1) ** (1 / 7) - e(0.994) ** (1 / 7))) ** 7
    np.testing.assert_allclose(few_step.imm_time_grid(3, eps_t=0.1, kind="edm"),
                               eta / (1 + eta), rtol=1e-12)
    np.testing.assert_allclose(imm.eta_of_t(jnp.float32(0.75)), 3.0, rtol=1e-6)
    np.testing.assert_allclose(imm.imm_log_snr(jnp.float32(0.2)), 2 * np.log(4.0), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Few-step samplers through the driver: per-sample keys (any device count, any chunking), no
# retrace for new weights, and each paper's algorithm written as a loop in the test
# ---------------------------------------------------------------------------------------------


def _draws(key, n, shape, offset=0, draw=0):
    """The driver's documented draws: sample i's key is k_i = fold_in(key, offset + i); its
    initial noise is normal(fold_in(k_i, 0)) and step n's noise normal(fold_in(k_i, n + 1))."""
    return jnp.stack([jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, offset + i),
                                                           draw), shape) for i in range(n)])


def _cm_net(p, x, c_noise, cond):
    return _mlp(p, jnp.concatenate([x, c_noise[:, None]], axis=1))


def _paper_shortcut_net(p, x, tp, lv, y):
    return _mlp(p, jnp.concatenate([x, tp[:, None], lv[:, None].astype(x.dtype) / 7.0], axis=1))


def _imm_net(p, x, t, s, cond):
    return _mlp(p, jnp.concatenate([x, t[:, None], s[:, None], cond[:, None]], axis=1))


def _cm_f(net, p):
    return ConsistencyPrecond(jax.tree_util.Partial(net, p), EDM())


def _sc_u(net, p):
    return dj.adapters.FlippedVelocity(jax.tree_util.Partial(net, p))


def _labels(n, offset):
    return (jnp.arange(offset, offset + n) % 3).astype(jnp.float32)


def _run_sampler(name, params, key, n, offset=0, mesh="auto", nets=None):
    cm_net, sc_net, imm_net = nets or (_cm_net, _paper_shortcut_net, _imm_net)
    kw = dict(sample_offset=offset, mesh=mesh)
    if name == "consistency_onestep":
        return few_step.consistency_sample(_cm_f(cm_net, params["cm"]), key, (n, 2), **kw)
    if name == "consistency_multistep":
        return few_step.consistency_sample(_cm_f(cm_net, params["cm"]), key, (n, 2),
                                           ts=(0, 5, 9), steps=10, clip=False, **kw)
    if name == "shortcut":
        return few_step.shortcut_sample(_sc_u(sc_net, params["sc"]), key, (n, 2), 4, **kw)
    return few_step.imm_sample(jax.tree_util.Partial(imm_net, params["imm"]), key, (n, 2),
                               num_steps=2, kind="simple_edm", cond=_labels(n, offset),
                               null_cond=jnp.full((n,), 3.0), cfg_scale=1.5, **kw)


FEW_STEP_SAMPLERS = ["consistency_onestep", "consistency_multistep", "shortcut", "imm"]


def _few_step_params(seed):
    k = jax.random.split(jax.random.key(seed), 3)
    return {"cm": _mlp_init(k[0], 3, 2), "sc": _mlp_init(k[1], 4, 2),
            "imm": _mlp_init(k[2], 5, 2)}


@pytest.mark.parametrize("name", FEW_STEP_SAMPLERS)
def test_few_step_samples_do_not_depend_on_devices_or_chunks(name):
    params, key = _few_step_params(0), jax.random.key(7)
    one = _run_sampler(name, params, key, 8, mesh=None)
    sharded = _run_sampler(name, params, key, 8)  # 8 fake devices: one sample each
    assert len(sharded.sharding.device_set) == len(jax.devices()) == 8
    chunks = jnp.concatenate([_run_sampler(name, params, key, 4),
                              _run_sampler(name, params, key, 4, offset=4)])
    chex.assert_shape([one, sharded, chunks], (8, 2))
    chex.assert_trees_all_close(sharded, one, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(chunks, one, rtol=1e-6, atol=1e-6)
    assert float(jnp.min(jnp.abs(one[1:] - one[:-1]))) > 1e-4  # the samples differ


@pytest.mark.parametrize("name", FEW_STEP_SAMPLERS)
def test_few_step_samplers_do_not_retrace_for_new_weights(name):
    """The networks are traced once per compiled program (chex.assert_max_traces on the apply
    function: one call per trace, two with IMM's CFG); new weights reuse the program."""
    chex.clear_trace_counter()
    per_trace = 2 if name == "imm" else 1
    nets = tuple(chex.assert_max_traces(f, n=per_trace)
                 for f in (_cm_net, _paper_shortcut_net, _imm_net))
    key = jax.random.key(3)
    before = dj.samplers.trace_count()
    a = _run_sampler(name, _few_step_params(1), key, 8, nets=nets)
    b = _run_sampler(name, _few_step_params(2), key, 8, nets=nets)  # raises if retraced
    assert dj.samplers.trace_count() - before == 1
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3  # the new weights are used


def test_consistency_sampler_is_algorithm_1():
    """Song et al. 2023, Alg. 1 as a loop over the levels, with the driver's per-sample noise:
    x = sigma_max z_0; x0 = f(x, sigma_i); x = x0 + sqrt(sigma'^2 - sigma_min^2) z_n with
    sigma' = clip(sigma_j, sigma_min, sigma_max) for consecutive (i, j) of ts; clip at the end."""
    p, key, n = _few_step_params(4)["cm"], jax.random.key(5), 6
    f = _cm_f(_cm_net, p)
    for ts, steps in (((0,), 40), ((0, 5, 9), 10), ((0, 3, 6), 10)):
        got = few_step.consistency_sample(f, key, (n, 2), ts=ts, steps=steps, clip=True)
        i = np.arange(steps) / (steps - 1)
        sig = (SMAX ** (1 / 7) + i * (SMIN ** (1 / 7) - SMAX ** (1 / 7))) ** 7
        x = SMAX * _draws(key, n, (2,), draw=0)
        pairs = list(zip(ts[:-1], ts[1:], strict=True)) if len(ts) > 1 else [(0, steps - 1)]
        for m, (a, b) in enumerate(pairs):
            x0 = f(x, jnp.full((n,), sig[a] / SMAX), None)
            nxt = np.clip(sig[b], SMIN, SMAX)
            x = x0 + np.sqrt(nxt**2 - SMIN**2) * _draws(key, n, (2,), draw=m + 1)
        chex.assert_trees_all_close(got, jnp.clip(x, -1.0, 1.0), rtol=1e-5, atol=1e-6)


def test_shortcut_sampler_is_algorithm_2():
    """Frans et al. 2024, Alg. 2 in the paper's own time, as a loop: x = z;
    x <- x + s(x, i/M, log2 M) / M for i < M; the network is given to the sampler behind
    adapters.FlippedVelocity."""
    p, key, n = _few_step_params(6)["sc"], jax.random.key(8), 5
    for M in (1, 2, 8):
        got = few_step.shortcut_sample(_sc_u(_paper_shortcut_net, p), key, (n, 2), M,
                                       process=sc.SHORTCUT_PROCESS)
        x = _draws(key, n, (2,), draw=0)
        for i in range(M):
            x = x + _paper_shortcut_net(p, x, jnp.full((n,), i / M),
                                        jnp.full((n,), int(np.log2(M))), None) / M
        chex.assert_trees_all_close(got, x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["simple_edm", "euler_fm", "identity"])
def test_imm_sampler_is_the_pushforward_of_eq_12(kind):
    """x_T = sigma_d z; x <- c_skip(t, s) x + c_out(t, s) G over the grid, with CFG on G
    (G_u + w (G_c - G_u)); coefficients written out for the path alpha = 1 - t, sigma = t."""
    p, key, n, sd, w = _few_step_params(9)["imm"], jax.random.key(10), 6, 0.5, 1.5
    cond, null = _labels(n, 0), jnp.full((n,), 3.0)
    got = few_step.imm_sample(jax.tree_util.Partial(_imm_net, p), key, (n, 2), num_steps=3,
                              kind=kind, T=0.9, eps_t=0.05, grid="edm", sigma_data=sd,
                              cond=cond, null_cond=null, cfg_scale=w)
    x = sd * _draws(key, n, (2,), draw=0)
    ts = few_step.imm_time_grid(3, 0.9, 0.05, "edm")
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        tv, sv = jnp.full((n,), t, jnp.float32), jnp.full((n,), s, jnp.float32)
        gu = _imm_net(p, x, tv, sv, null)
        G = gu + w * (_imm_net(p, x, tv, sv, cond) - gu)
        at, st, as_, ss = 1 - t, t, 1 - s, s
        if kind == "simple_edm":
            nrm = np.sqrt(at**2 + st**2)
            c_skip, c_out = (at * as_ + st * ss) / nrm**2, -(as_ * st - at * ss) * sd / nrm
        elif kind == "euler_fm":
            c_skip, c_out = 1.0, -(t - s) * sd
        else:  # DDIM with G as the x0 estimate
            c_skip, c_out = ss / st, as_ - at * ss / st
        x = c_skip * x + c_out * G
    chex.assert_trees_all_close(got, x, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# §8 model guidance
# ---------------------------------------------------------------------------------------------

M_MEAN, M_STD, NULL = 1.0, 0.5, 2


def _two_class_velocity():
    proc = Linear()
    comps = [dj.analytic.Gaussian.create([m], [[M_STD**2]], proc) for m in (-M_MEAN, M_MEAN)]
    mix = dj.analytic.GaussianMixture.create([0.5, 0.5], [[-M_MEAN], [M_MEAN]], [M_STD, M_STD],
                                             proc)

    def v(x, t, y):
        to_v = lambda m: convert(m(x, t), x, t, proc, "x0", "velocity")
        vc = jnp.where((y == 0)[:, None], to_v(comps[0]), to_v(comps[1]))
        return jnp.where((y == NULL)[:, None], to_v(mix), vc)

    return v


def test_mg_fixed_point_is_cfg_velocity():
    """§8c.1: with the exact EMA velocity, E[u_MG - v*(x_t) | x_t, y] = 0 for
    v* = v_c + (omega - 1)(v_c - v_u): checked through the orthogonality conditions
    E[(u_MG - v*) phi(x_t)] = 0 for phi in {1, x, tanh(2x)} at fixed t (MC, 5 standard errors);
    the plain conditional velocity v_c fails them (sanity of the test's power)."""
    v = _two_class_velocity()
    n = 200_000
    omega = 2.0
    labels = jnp.ones((n,), jnp.int32)
    x0 = M_MEAN + M_STD * jax.random.normal(jax.random.key(0), (n, 1))

    @jax.jit
    def parts(t0):
        tg = mg.mg_targets(v, jax.random.key(1), x0, labels, num_classes=NULL, step=10,
                           start_step=0, omega=omega, drop_prob=0.0, t=jnp.full((n,), t0))
        x_t, t = tg["x_t"], tg["t"]
        vc, vu = v(x_t, t, labels), v(x_t, t, jnp.full_like(labels, NULL))
        return tg["target"][:, 0], (vc + (omega - 1.0) * (vc - vu))[:, 0], vc[:, 0], x_t[:, 0], \
            tg["guided"]

    for t0 in (0.3, 0.6):
        target, v_star, vc, x_t, guided = map(np.asarray, parts(jnp.float32(t0)))
        assert guided.all()
        r = (target - v_star).astype(np.float64)
        for phi in (np.ones_like(r), x_t, np.tanh(2 * x_t)):
            m, se = np.mean(r * phi), np.std(r * phi) / np.sqrt(n)
            assert abs(m) < 5 * se, (t0, m, se)
        r = (target - vc).astype(np.float64)
        assert abs(np.mean(r)) > 10 * np.std(r) / np.sqrt(n)
    # t >= mg_high: no guidance, the target is the plain flow target
    tg = mg.mg_targets(v, jax.random.key(1), x0[:64], labels[:64], num_classes=NULL, step=10,
                       start_step=0, omega=omega, t=jnp.full((64,), 0.8))
    np.testing.assert_array_equal(tg["target"], tg["u"])


def test_mg_bookkeeping_and_grad():
    v = _two_class_velocity()
    x0 = jax.random.normal(jax.random.key(0), (40, 1))
    labels = jnp.arange(40) % 2
    targets = jax.jit(lambda step, start: mg.mg_targets(
        v, jax.random.key(3), x0, labels, num_classes=NULL, step=step, start_step=start,
        drop_prob=0.1, t=jnp.full((40,), 0.2)))
    tg = targets(5, 0)
    dropped = tg["labels"] == NULL
    assert int(jnp.sum(dropped)) == 4 and not bool(jnp.any(tg["guided"] & dropped))
    np.testing.assert_array_equal(tg["target"][dropped], tg["u"][dropped])
    before = targets(5, 100)
    np.testing.assert_array_equal(before["target"], before["u"])
    # the EMA model (not the online one) gives Delta
    params = _mlp_init(jax.random.key(0), 3, 1)
    online = lambda p, x, t, y: _mlp(p, jnp.concatenate(
        [x, t[:, None], (y == NULL)[:, None] * 1.0], axis=1))
    def check_delta(p):
        _, aux = mg.mg_loss(functools.partial(online, p), v, jax.random.key(3), x0, labels,
                            num_classes=NULL, step=5, start_step=0)
        vc = v(aux["x_t"], aux["t"], labels)
        return aux["delta"], vc - v(aux["x_t"], aux["t"], jnp.full_like(labels, NULL))

    delta, want = jax.jit(check_delta)(params)
    np.testing.assert_allclose(delta, want, rtol=1e-6)
    obj = lambda p: jnp.mean(mg.mg_loss(functools.partial(online, p), v, jax.random.key(3), x0,
                                        labels, num_classes=NULL, step=5, start_step=0)[0])
    val, g = jax.jit(jax.value_and_grad(obj))(params)
    assert np.isfinite(float(val)) and _finite_grads(g)
    with pytest.raises(ValueError, match="labels"):
        mg.mg_targets(v, jax.random.key(0), x0, labels[:3], num_classes=NULL, step=0)
    with pytest.raises(ValueError, match="drop_prob"):
        mg.mg_targets(v, jax.random.key(0), x0, labels, num_classes=NULL, step=0, drop_prob=2.0)


# ---------------------------------------------------------------------------------------------
# Training plumbing: CT's traced schedule, scheduled EMAs, ToyMLP's second scalar,
# diffjax.methods (the trainer's ``config.method``), the toy comparison and recipe smokes
# ---------------------------------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from diffjax import train as T  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("setting", [(800_000, 2, 150, 0.9), (800_000, 2, 200, 0.95),
                                     (37, 2, 5, 0.8)])
def test_ct_schedule_fn_equals_host_schedule(setting):
    # the traced schedule against the float64 host one (the vectors above included), at every
    # boundary of N(k) and its neighbours, where a float32 ceil would slip
    K = setting[0]
    fn = cm.ct_schedule_fn(*setting)
    ks = sorted({0, 1, 1000, 100_000, 400_000, K} & set(range(K + 1))
                | {int(b) + d for b in fn.bounds for d in (-1, 0, 1)})
    mu, n = jax.jit(jax.vmap(fn))(np.asarray(ks, np.int32))
    for k, m_, n_ in zip(ks, np.asarray(mu), np.asarray(n), strict=True):
        want_mu, want_n = cm.ct_schedule(k, *setting)
        assert int(n_) == want_n, k
        assert abs(float(m_) - want_mu) <= 2e-7, k


def test_ict_schedule_and_traced_equal():
    # Song & Dhariwal 2023 eq. 9: K = 400k, s0 = 10, s1 = 1280 -> 8 stages of K' = 50,000 steps
    want = {0: 11, 49_999: 11, 50_000: 21, 100_000: 41, 349_999: 641, 350_000: 1281,
            400_000: 1281, 10**9: 1281}
    for k, n in want.items():
        assert cm.ict_schedule(k, 400_000) == n
    fn = cm.ict_schedule_fn(400_000)
    got = jax.jit(fn.num_scales)(np.asarray(list(want), np.int32))
    np.testing.assert_array_equal(got, list(want.values()))
    assert fn.max_scales == 1281
    # a ratio that is not a power of two: floor(log2(5)) + 1 = 3 stages of 33 steps, N capped
    fn = cm.ict_schedule_fn(100, 2, 10)
    ks = np.arange(0, 140)
    np.testing.assert_array_equal(jax.jit(fn.num_scales)(ks),
                                  [cm.ict_schedule(int(k), 100, 2, 10) for k in ks])
    # k // 33 = 0, 1, 2 give N = 3, 5, 9; the leftover k = 99 is a 4th stage, capped at s1 + 1
    assert [cm.ict_schedule(k, 100, 2, 10) for k in (32, 33, 98, 99)] == [3, 5, 9, 11]
    for bad, match in (((5, 7, 10, 1280), "stages"), ((0, 0), "total_steps"),
                       ((0, 10, 20, 10), "s0 <= s1")):
        with pytest.raises(ValueError, match=match):
            cm.ict_schedule(*bad)


def test_lognormal_level_probs_and_sampling():
    """iCT eq. 10 against an independent float64 numpy/math.erf computation, padded under jit
    for a traced N, and the frequencies the loss actually draws."""
    import math
    for N in (11, 81, 1281):
        i = np.arange(N) / (N - 1)
        sg = (SMAX ** (1 / 7) + i * (SMIN ** (1 / 7) - SMAX ** (1 / 7))) ** 7
        cdf = np.array([math.erf((math.log(v) + 1.1) / (math.sqrt(2) * 2.0)) for v in sg])
        want = (cdf[:-1] - cdf[1:]) / (cdf[0] - cdf[-1])
        got = np.asarray(cm.lognormal_level_probs(N))
        # float32 differences of erf at neighbouring levels: ~1e-3 relative per entry at
        # N = 1281, while the distribution the sampler uses (its CDF) is exact to ~1e-7
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-9)
        np.testing.assert_allclose(np.cumsum(got), np.cumsum(want), atol=1e-6)
        padded = jax.jit(lambda n: cm.lognormal_level_probs(n, max_scales=1281))(N)
        np.testing.assert_allclose(padded[: N - 1], got, rtol=1e-3, atol=1e-9)
        assert float(jnp.sum(padded[N - 1:])) == 0.0
    # the pair indices drawn by the loss follow these probabilities (N = 11, 40k draws: the
    # standard error of each frequency is <= 0.0025)
    apply = lambda p, x, t, cond, k: x
    x0 = jnp.zeros((40_000, 1))
    _, aux = cm.consistency_loss(apply, None, None, jax.random.key(3), x0, num_scales=11,
                                 mode="ct", level_sampling="lognormal")
    freq = np.bincount(np.asarray(aux["index"]), minlength=10) / x0.shape[0]
    np.testing.assert_allclose(freq, cm.lognormal_level_probs(11), atol=0.01)
    with pytest.raises(ValueError, match="level_sampling"):
        cm.consistency_loss(apply, None, None, jax.random.key(3), x0[:4], num_scales=11,
                            mode="ct", level_sampling="nope")


def test_ict_weighting_is_a_finite_difference_of_the_exact_consistency_function():
    """lambda = 1 / (sigma_n - sigma_{n+1}) (iCT sec. 3.5) turns the CT loss of the exact f*
    into |d f*(x + sigma z, sigma) / d sigma| as N grows (first-order convergence)."""
    x0 = S * jax.random.normal(jax.random.key(0), (256, 1))
    apply = lambda p, x, t, cond, k: _f_star(x, SMAX * t[:, None])
    errs = []
    for N in (161, 1281):
        loss, aux = cm.consistency_loss(apply, None, None, jax.random.key(1), x0,
                                        num_scales=N, mode="ct", metric="l1", weighting="ict",
                                        level_sampling="lognormal")
        np.testing.assert_allclose(aux["weight"], 1.0 / (aux["sigma"] - aux["sigma_next"]),
                                   rtol=1e-6)
        # x + sigma z with the loss's own z: recover z from the key split the loss uses
        z = jax.random.normal(jax.random.split(jax.random.key(1), 3)[1], x0.shape)
        sig = aux["sigma"][:, None]
        dfds = jax.vmap(jax.grad(lambda sg, x, z: _f_star(x + sg * z, sg)[0]))(
            sig[:, 0], x0, z)
        errs.append(float(jnp.median(jnp.abs(loss - jnp.abs(dfds)) / jnp.abs(dfds))))
    assert errs[1] < 0.02 and errs[1] < errs[0] / 4, errs


def test_scheduled_ema_spec():
    fn = cm.ct_schedule_fn(100, 2, 10, 0.9)
    spec = T.EMASpec(decay_fn=fn.mu)
    e, p = {"w": jnp.full((3,), 2.0)}, {"w": jnp.full((3,), 1.0)}
    for step in (0, 57):
        mu = cm.ct_schedule(step, 100, 2, 10, 0.9)[0]
        out = jax.jit(lambda e, p, k: T.update_emas({"t": e}, p, {"t": spec}, k, 8))(e, p, step)
        np.testing.assert_allclose(out["t"]["w"], mu * 2.0 + (1.0 - mu) * 1.0, rtol=1e-6)
    # the fixed decay keeps its "0 on the first step" rule; the schedule is applied as given
    assert float(T.ema_decay(T.EMASpec(decay=0.5), 0, 8)) == 0.0
    assert abs(float(T.ema_decay(spec, 0, 8)) - 0.81) < 1e-6
    with pytest.raises(ValueError, match="exactly one"):
        T.EMASpec(decay=0.9, decay_fn=fn.mu)
    with pytest.raises(ValueError, match="decay_fn"):
        T.EMASpec(decay_fn=0.9)


def test_toy_mlp_second_scalar():
    from flax import nnx

    from diffjax.models import ToyMLP

    x, t = jnp.ones((4, 2)), jnp.full((4,), 0.5)
    y = jnp.array([0, 1, 2, 3])

    @jax.jit
    def outputs(key):
        net = ToyMLP(width=16, depth=1, num_classes=3, second_scalar=True, rngs=nnx.Rngs(key))
        net.out.kernel[...] = jax.random.normal(key, net.out.kernel.shape)  # not zero-init
        return (net(x, t, {"s": jnp.zeros(4), "y": y}),
                net(x, t, {"s": jnp.full((4,), 3.0), "y": y}, train=True))

    a, b = outputs(jax.random.key(0))
    assert a.shape == (4, 2) and float(jnp.max(jnp.abs(a - b))) > 1e-4  # s is used
    net = nnx.eval_shape(lambda: ToyMLP(width=16, depth=1, second_scalar=True,
                                        rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="second_scalar"):
        jax.eval_shape(lambda: net(x, t, None))
    plain = nnx.eval_shape(lambda: ToyMLP(width=16, depth=1, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="second_scalar"):
        jax.eval_shape(lambda: plain(x, t, {"s": jnp.zeros(4)}))


def _toy_module():
    return load_script("experiments/few_step_toy.py")


def test_few_step_toy_tiny_writes_a_finite_table(tmp_path):
    res = _toy_module().run(tiny=True, out=tmp_path / "toy")
    md = (tmp_path / "toy.md").read_text()
    import json

    rows = json.loads((tmp_path / "toy.json").read_text())["rows"]
    methods = {r["method"] for r in rows}
    assert {"EDM", "CD", "Shortcut", "IMM", "MG", "cond. FM"} <= methods
    assert all(np.isfinite(r["sw1"]) and r["finite"] and np.isfinite(r["final_loss"])
               for r in rows)
    assert np.isfinite(res["noise_floor"]) and md.count("\n| ") == len(rows) + 2


@pytest.mark.slow  # ~100 s: four tiny trainings
def test_few_step_learning_checks_tiny_write_their_tables(tmp_path):
    import json

    mod = load_script("experiments/few_step_learning_checks.py")
    mod.main(["--tiny", "--out", str(tmp_path / "lc")])
    saved = json.loads((tmp_path / "lc.json").read_text())["checks"]
    assert set(saved) == {"cm", "shortcut", "imm", "mg"}
    numbers = [v for c in saved.values() for r in c["rows"] for k, v in r.items()
               if k.startswith(("sw", "mmd", "rel", "mean", "coverage"))]
    assert len(numbers) > 20 and all(np.isfinite(numbers))
    assert all("checks" in r for r in saved["cm"]["rows"] + saved["imm"]["rows"])
    md = (tmp_path / "lc.md").read_text()
    assert md.count("## ") == 4
    with pytest.raises(ValueError, match="unknown checks"):
        mod.main(["--tiny", "--only", "nope", "--out", str(tmp_path / "x")])


@pytest.mark.slow  # ~40 s: VGG16 forward + backward compiled inside the train step
def test_consistency_training_with_lpips_through_the_trainer(tmp_path):
    """``method.metric='lpips'``: the LPIPS weights (seeded random VGG16, saved as the converter
    writes them) ride in ``state.extra`` and the loss is LPIPS of the two consistency outputs."""
    import json

    from diffjax.run import cli
    from diffjax.metrics import lpips as lp

    weights = tmp_path / "lpips.npz"
    lp.save_lpips_npz(weights, *lp.random_lpips_state_dicts(0))
    data = tmp_path / "rgb.npz"
    np.savez(data, latents=np.random.default_rng(0).uniform(-1, 1, (16, 16, 16, 3))
             .astype(np.float32))
    work = tmp_path / "work"
    out = cli.main(["train", f"--config={ROOT / 'configs' / 'ct_cifar10'}.py:smoke",
                    f"--workdir={work}", f"--config.data.name={data}",
                    "--config.data.batch_size=4", "--config.model.in_channels=3",
                    "--config.model.image_size=16", "--config.method.metric=lpips",
                    f"--config.method.lpips_weights={weights}",
                    "--config.method.lpips_resize=False", "--config.train.num_steps=2",
                    "--config.train.save_every=2"])
    assert out["end_step"] == 2
    losses = [json.loads(x)["loss"] for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert losses and all(np.isfinite(v) and v > 0 for v in losses)
    # the checkpoint's tree holds the LPIPS weights under extra (orbax's metadata names them)
    files = [p for p in (work / "checkpoints").rglob("*") if p.is_file()]
    assert any(b"lpips" in p.read_bytes() for p in files if p.stat().st_size < 10**6)
