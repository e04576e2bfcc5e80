"""Losses against closed forms: the VLB of exact reverse kernels is the exact NLL, fixed-variance
gaps, discretised-Gaussian decoder, DDPM tables, every loss's Bayes risk, the hybrid loss, and
training on L_simple down to the Bayes risk.

Strategy: exact Gaussian oracles (:mod:`diffjax.analytic`) make every expectation a closed
form, so each loss is checked against its known minimum (its Bayes risk) and must be beaten
by nothing; the VLB is checked to reach the exact NLL of Gaussian data. Monte-Carlo checks
use per-sample residuals against the closed form at the *same* drawn ``t`` (paired), with
tolerances in standard errors; deterministic checks use float64 (x64 fixture) or
float32-rounding tolerances, justified where they are asserted.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diffjax as dj
from diffjax import losses as L
from diffjax import parameterization as par
from diffjax.losses import timesteps as TS
from diffjax.losses import vlb as V

V0 = 0.25  # data variance of the 1-D Gaussian checks (N(0, 0.25) data)
COV = np.array([[0.3, 0.1], [0.1, 0.2]])  # rotated anisotropic 2-D data
MEAN = np.array([0.2, -0.1])


@pytest.fixture
def x64():
    """float64 inside the test only; restores the previous setting."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


# RBG keys: XLA compiles RngBitGenerator draws ~2x faster than threefry (compile time is most
# of this module's cost); every loss accepts any key type.
_key = functools.partial(jax.random.key, impl="rbg")
_tables64 = jax.jit(lambda proc: V.ddpm_tables(proc, jnp.float64))  # one compile, x64 tests


# ----------------------------------------------------------------------------------------------
# Time samplers and the iDDPM importance sampler
# ----------------------------------------------------------------------------------------------


def test_time_samplers_draw_the_papers_distributions():
    n, T = 100_000, 1000

    @jax.jit
    def draws(key):  # every sampler in one compile
        ks = jax.random.split(key, 8)
        return {
            "uniform": TS.uniform_discrete(ks[0], n, num_steps=T),
            "antithetic": TS.antithetic_discrete(ks[1], 10, num_steps=T),
            "continuous": TS.uniform_continuous(ks[2], n, eps=1e-5),
            # EDM log-normal sigma through t and back: a linear (EDM) and a curved (VP) process
            "edm_EDM": dj.EDM().sigma_tilde(TS.edm_lognormal(ks[3], n, process=dj.EDM()).t),
            "edm_VP": dj.VP().sigma_tilde(TS.edm_lognormal(ks[4], n, process=dj.VP()).t),
            "ve": TS.log_uniform_sigma(ks[5], n, process=dj.VE(0.02, 100.0)),
            "logit": TS.logit_normal(ks[6], n, mean=0.3, std=0.8),
            "ncsn": TS.ncsn_levels(ks[7], 1000, num_levels=10),
        }

    d = draws(_key(0))
    # 5 SE: a seeded check that still catches any location error > ~0.5%
    i = np.asarray(d["uniform"].index)
    assert i.min() == 0 and i.max() == T - 1
    np.testing.assert_array_equal(d["uniform"].t, dj.adapters.ddpm_index_to_t(i, T))
    np.testing.assert_allclose(d["uniform"].t, (i + 1) / T, rtol=2e-7)  # XLA may use * (1/T)
    assert abs(i.mean() - (T - 1) / 2) < 5 * (T / math.sqrt(12 * n))
    a = np.asarray(d["antithetic"].index)
    np.testing.assert_array_equal(a[:4] + a[6:10], T - 1)  # i and T-1-i, batch//2+1 apart
    u = np.asarray(d["continuous"].t)
    assert u.min() >= 1e-5 and u.max() <= 1.0 and abs(u.mean() - 0.5) < 5 / math.sqrt(12 * n)
    for name in ("edm_EDM", "edm_VP"):
        ls = np.log(np.asarray(d[name]))
        assert abs(ls.mean() + 1.2) < 5 * 1.2 / math.sqrt(n), name
        assert abs(ls.std() - 1.2) < 0.01, name
    # EDM VELoss on a VE process with the same end points is uniform in t
    tv = np.asarray(d["ve"].t)
    assert abs(tv.mean() - 0.5) < 5 / math.sqrt(12 * n) and abs(tv.var() - 1 / 12) < 2e-3
    lg = np.asarray(d["logit"].t)
    z = np.log(lg) - np.log1p(-lg)
    assert abs(z.mean() - 0.3) < 5 * 0.8 / math.sqrt(n) and abs(z.std() - 0.8) < 0.01
    nl = d["ncsn"]
    sig = np.asarray(dj.VE(0.01, 1.0).sigma(nl.t))
    levels = np.exp(np.linspace(np.log(1.0), np.log(0.01), 10))  # NCSN: label 0 = largest
    np.testing.assert_allclose(sig, levels[np.asarray(nl.index)], rtol=1e-5)


def _reference_update(hist, counts, ts, losses):
    """improved-diffusion resample.py:update_with_all_losses, literally (NumPy)."""
    hist, counts = hist.copy(), counts.copy()
    for t, loss in zip(ts, losses, strict=True):
        if counts[t] == hist.shape[1]:
            hist[t, :-1] = hist[t, 1:]
            hist[t, -1] = loss
        else:
            hist[t, counts[t]] = loss
            counts[t] += 1
    return hist, counts


def test_loss_second_moment_resampler_is_the_reference_and_unbiased():
    T, K = 50, 10
    rs = TS.LossSecondMomentResampler(num_steps=T, history_per_term=K)
    update, probs = jax.jit(rs.update), jax.jit(rs.probs)
    n = 200_000
    draw = jax.jit(lambda st, key: rs.time_sampler(st)(key, n))

    # update semantics vs the reference, with repeated indices in one batch (index 0 gets 13
    # values: its row fills, then shifts)
    rng = np.random.default_rng(0)
    ts = np.concatenate([np.zeros(13, int), rng.integers(0, T, 37)])
    ls = rng.uniform(0, 1, 50).astype(np.float32)
    st = update(rs.init(), ts, ls)
    h_ref, c_ref = _reference_update(np.zeros((T, K), np.float32), np.zeros(T, int), ts, ls)
    np.testing.assert_array_equal(st.history, h_ref)
    np.testing.assert_array_equal(st.counts, c_ref)
    np.testing.assert_array_equal(probs(st), np.float32(1.0 / T))  # uniform before warm-up

    # warm up on a strongly non-uniform synthetic loss table
    L_true = 0.1 + 10.0 * np.exp(-np.arange(T) / 5.0)
    st = rs.init()
    for _ in range(K):
        assert not bool(rs.warmed_up(st))
        st = update(st, np.arange(T), L_true * rng.uniform(0.8, 1.2, T))
    assert bool(rs.warmed_up(st))
    # p = 0.999 * sqrt(E L^2) / sum + 0.001 / T, as the reference (float32 rounding)
    w2 = np.sqrt(np.mean(np.asarray(st.history, np.float64) ** 2, axis=1))
    p_ref = 0.999 * w2 / w2.sum() + 0.001 / T
    p = np.asarray(probs(st))
    np.testing.assert_allclose(p, p_ref, rtol=1e-5)
    s = draw(st, _key(2))
    idx, w = np.asarray(s.index), np.asarray(s.weight, np.float64)
    np.testing.assert_allclose(w, 1.0 / (T * p[idx]), rtol=1e-6)
    np.testing.assert_array_equal(s.t, dj.adapters.ddpm_index_to_t(idx, T))
    # E[w L_t] = mean_t L_t within 3 SE; the unweighted estimate is far off (test power)
    est = w * L_true[idx]
    se = est.std(ddof=1) / math.sqrt(n)
    assert abs(est.mean() - L_true.mean()) < 3 * se
    assert abs(L_true[idx].mean() - L_true.mean()) > 100 * se


# ----------------------------------------------------------------------------------------------
# VLB building blocks and tables
# ----------------------------------------------------------------------------------------------


def test_discretized_decoder_sums_to_one_and_tanh_cdf_error(x64):
    bins = -1.0 + 2.0 * np.arange(256) / 255.0
    mus, ss = np.array([0.1, 0.9, -0.99, 0.0]), np.array([0.02, 0.3, 1e-3, 5.0])
    x = np.linspace(-6, 6, 20001)

    @jax.jit
    def compute():
        lp = V.discretized_gaussian_log_likelihood(bins[None], means=mus[:, None],
                                                   log_scales=np.log(ss)[:, None])
        lp0 = V.discretized_gaussian_log_likelihood(-1.0, means=0.2, log_scales=np.log(0.5))
        edge = jnp.log(V.approx_standard_normal_cdf((-1 + 1 / 255 - 0.2) / 0.5))
        err = jnp.max(jnp.abs(V.approx_standard_normal_cdf(x) - jax.scipy.stats.norm.cdf(x)))
        return jnp.sum(jnp.exp(lp), axis=1), lp0, edge, err

    total, lp0, edge, err = compute()
    # telescoping CDF differences: the bin masses sum to 1 up to float64 rounding (< 1e-6)
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(lp0, edge, rtol=1e-12)  # open edge bin: log Phi(upper edge)
    # the tanh approximation of Phi (DDPM's approx_standard_normal_cdf) is off by up to
    # 1.8e-4; > 1e-4 proves it is the reference's approximation, not the exact Phi
    assert 1e-4 < float(err) < 2e-4


def test_tables_match_ddpm_formulas_and_sampler_posterior(x64):
    T = 1000
    betas = dj.processes.linear_betas(T)
    proc = dj.DiscreteVP.from_betas(betas)
    tab = _tables64(proc)
    ab = np.cumprod(1 - betas)
    abp = np.append(1.0, ab[:-1])
    bt = betas * (1 - abp) / (1 - ab)
    # hojonathanho GaussianDiffusion2.__init__ in float64; the process stores float32
    # log(alpha_bar) (abs error ~5e-7 at log ab = -10), so beta_i (a difference of two such
    # values, ~0.02) is reproduced to ~5e-5 relative: rtol 2e-4.
    np.testing.assert_allclose(tab.betas, betas, rtol=2e-4)
    np.testing.assert_allclose(tab.posterior_variance[1:], bt[1:], rtol=2e-4)
    np.testing.assert_allclose(tab.posterior_log_variance_clipped,
                               np.log(np.append(bt[1], bt[1:])), atol=2e-4)
    np.testing.assert_allclose(tab.log_variance_large, np.log(np.append(bt[1], betas[1:])),
                               atol=2e-4)  # DDPM fixedlarge quirk: sigma_0^2 = beta_tilde_1
    np.testing.assert_allclose(tab.posterior_mean_coef1, betas * np.sqrt(abp) / (1 - ab),
                               rtol=2e-4)
    np.testing.assert_allclose(tab.posterior_mean_coef2,
                               (1 - abp) * np.sqrt(1 - betas) / (1 - ab), rtol=2e-4)
    # the sampler's continuous-time posterior at t = (i+1)/T, s = i/T (float32 there)
    i = np.arange(1, T)
    c_x, c_x0, v_small, v_large = jax.jit(dj.samplers.posterior)(proc, (i + 1) / T, i / T)
    for got, want in [(c_x, tab.posterior_mean_coef2[1:]), (c_x0, tab.posterior_mean_coef1[1:]),
                      (v_small, tab.posterior_variance[1:]), (v_large, tab.betas[1:])]:
        np.testing.assert_allclose(got, want, rtol=1e-3)  # float32 interp/expm1 vs float64


# ----------------------------------------------------------------------------------------------
# The full VLB with the exact reverse kernel is the exact NLL of Gaussian data
# ----------------------------------------------------------------------------------------------


def _quadrature_nodes(T):
    """2-point Gauss-Hermite in x0 ~ N(0, V0) times 2-point in eps: every VLB term is a
    quadratic in (x0, eps), so the equally weighted 4 nodes give exact expectations."""
    x0 = math.sqrt(V0) * np.array([[1.0], [1.0], [-1.0], [-1.0]])
    eps = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    return x0, np.broadcast_to(eps, (T, 4, 1)).copy()


def _exact_v(tab):
    """Closed-form LEARNED_RANGE output v* giving Sigma*_i = beta_tilde_i + c1_i^2 Var[x0|x_i]
    (the optimal reverse variance: posterior variance plus the mean's uncertainty through
    ``c1_i``); index 0: Var[x0|x_1] (beta_tilde_0 = 0, c1_0 = 1)."""
    la = np.asarray(tab.log_alpha_bar)
    a2, s2 = np.exp(la), -np.expm1(la)
    var_x0 = V0 * s2 / (a2 * V0 + s2)
    sig = np.asarray(tab.posterior_variance) + np.asarray(tab.posterior_mean_coef1) ** 2 * var_x0
    lo, hi = np.asarray(tab.posterior_log_variance_clipped), np.asarray(tab.log_betas)
    return 2.0 * (np.log(sig) - lo) / (hi - lo) - 1.0


def _with_variance(oracle, v_table, T):
    def model(x, t, cond=None):
        i = jnp.round(t * T - 1.0).astype(jnp.int32)
        return jnp.concatenate([oracle(x, t), jnp.asarray(v_table)[i][:, None]], axis=-1)

    return model


@pytest.mark.parametrize("schedule,T",
                         [("linear", 1000), ("cosine", 100), ("linear_rescaled", 4000)])
def test_vlb_with_exact_reverse_kernel_is_the_exact_nll(x64, schedule, T):
    proc = {"linear": lambda: dj.DiscreteVP.linear(T),
            "cosine": lambda: dj.DiscreteVP.cosine(T),
            "linear_rescaled": lambda: dj.DiscreteVP.linear(T, rescale=True)}[schedule]()
    tab = _tables64(proc)
    oracle = dj.analytic.Gaussian.create([0.0], [[V0]], proc)
    v_star = _exact_v(tab)
    assert np.all(np.abs(v_star) <= 1.0 + 1e-9)  # Sigma* in [beta_tilde, beta] for V0 <= 1
    x0, noise = _quadrature_nodes(T)
    def bpd_loop(model, variance):  # one compile per call (a new closure each time)
        return jax.jit(lambda key: V.calc_bpd_loop(
            model, key, x0, process=proc, prediction="x0", variance=variance,
            decoder="gaussian", noise=noise))(_key(0))

    bpd, aux = bpd_loop(_with_variance(oracle, v_star, T), "learned")
    vlb = float(np.mean(bpd)) * math.log(2.0)  # 1-D: bits/dim * ln 2 = nats
    # VLB = NLL + KL(q(x_T) || N(0, 1)) exactly when every reverse kernel is exact
    ab_T = float(np.exp(tab.log_alpha_bar[-1]))
    q_T = ab_T * V0 + 1.0 - ab_T
    nll = 0.5 * math.log(2 * math.pi * math.e * V0)
    assert abs(nll - 0.7258) < 5e-5  # 0.5 log(2 pi e 0.25) = 0.72579 nats
    # 1e-6: the oracle's float32 coefficients perturb the mean by ~1e-7 relative,
    # which moves the bound only at second order (it is stationary at the exact kernel).
    assert abs(vlb - (nll + 0.5 * (q_T - 1.0 - math.log(q_T)))) < 1e-6
    assert aux["vb"].shape == (4, T)

    if schedule == "linear":  # fixed variances, same exact mean
        gaps = {}
        for variance in ("small", "large"):
            b, _ = bpd_loop(oracle, variance)
            gaps[variance] = float(np.mean(b)) * math.log(2.0) - vlb
        # fixed variances on N(0, 0.25) data, linear T = 1000: the VLB exceeds the exact-kernel
        # VLB by +0.57 nats (beta_tilde) and +0.115 (beta, with sigma_0^2 = beta_tilde_1)
        assert abs(gaps["small"] - 0.57) < 0.005 and abs(gaps["large"] - 0.115) < 0.005
        # and to 1e-4 against the float64 closed form sum_i KL(N(., Sigma*) || N(., sigma_i^2))
        betas = dj.processes.linear_betas(T)
        ab = np.cumprod(1 - betas)
        abp = np.append(1.0, ab[:-1])
        bt = betas * (1 - abp) / (1 - ab)
        sig = np.append(0.0, bt[1:]) + (betas * np.sqrt(abp) / (1 - ab)) ** 2 * (
            V0 * (1 - ab) / (ab * V0 + 1 - ab))
        for variance, var in [("small", np.append(bt[1], bt[1:])),
                              ("large", np.append(bt[1], betas[1:]))]:
            want = np.sum(0.5 * (np.log(var / sig) - 1 + sig / var))
            assert abs(gaps[variance] - want) < 1e-4, variance


def test_learned_variance_gradient_descent_finds_the_closed_form_optimum(x64):
    """Minimising the per-index vb term over v (frozen exact mean) gives v* to 1e-3."""
    T = 1000
    proc = dj.DiscreteVP.linear(T)
    tab = _tables64(proc)
    oracle = dj.analytic.Gaussian.create([0.0], [[V0]], proc)
    idx = np.array([0, 1, 10, 100])
    x0n, noise = _quadrature_nodes(T)
    x0 = np.tile(x0n, (len(idx), 1))  # 4 nodes per index
    eps = np.tile(noise[0], (len(idx), 1))
    index = np.repeat(idx, 4)

    def objective(v):
        def model(x, t, cond=None):
            return jnp.concatenate([oracle(x, t), jnp.repeat(v, 4)[:, None]], axis=-1)

        loss, _ = L.vlb_loss(model, _key(0), x0, process=proc, prediction="x0",
                             decoder="gaussian", rescale=False, index=index, noise=eps)
        return jnp.sum(loss) / 4.0  # separable: sum over indices of each node average

    @jax.jit
    def descend(v):
        lr = 1.0 / jnp.diag(jax.hessian(objective)(v))  # fixed per-index step size
        # 60 plain gradient steps: the contraction factor is <= 0.3 per step here (the
        # curvature in v changes by < 1.5x between v = 0 and v*)
        return jax.lax.fori_loop(0, 60, lambda _, v: v - lr * jax.grad(objective)(v), v)

    v = np.asarray(descend(jnp.zeros(len(idx))))
    np.testing.assert_allclose(v, _exact_v(tab)[idx], atol=1e-3)


# ----------------------------------------------------------------------------------------------
# iDDPM hybrid loss: exact lambda scaling and the stop-gradient on the mean
# ----------------------------------------------------------------------------------------------


def _mlp(p, x, t):
    return jnp.tanh(x @ p["w1"] + t[:, None] * p["b1"][None]) @ p["w2"]


def _init(seed, d_in, d_out, h=16):
    rng = np.random.default_rng(seed)  # numpy inputs: eager jax.random compiles per shape
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    return {"w1": f32(rng.normal(size=(d_in, h))), "b1": f32(rng.normal(size=h)),
            "w2": f32(0.3 * rng.normal(size=(h, d_out)))}


def test_hybrid_loss_is_lsimple_plus_lambda_vlb_with_frozen_mean():
    T = 4000  # iDDPM scales vb by T / 1000: at T = 4000 that is 0.001 * T * L_t
    proc = dj.DiscreteVP.cosine(T)
    d = 3
    params = {"mean": _init(1, d, d), "var": _init(2, d, d)}
    x0 = np.random.default_rng(3).uniform(-1, 1, (64, d)).astype(np.float32)
    key = _key(4)

    def learned(p):
        return lambda x, t, c=None: jnp.concatenate(
            [_mlp(p["mean"], x, t), jnp.tanh(_mlp(p["var"], x, t))], axis=-1)

    def hybrid(p, lam=0.001):
        return L.hybrid_loss(learned(p), key, x0, process=proc, lam=lam)

    def simple(p):
        return L.ddpm_loss(lambda x, t, c=None: _mlp(p["mean"], x, t), key, x0, process=proc)

    def kl(p):
        return L.vlb_loss(learned(p), key, x0, process=proc)

    @jax.jit
    def everything(p):  # one compile: values (as aux) and gradients of the batch means
        vg = lambda f: jax.grad(lambda q: (jnp.mean(f(q)[0]), f(q)), has_aux=True)(p)  # noqa
        (g_h, h), (g_s, s), (g_k, k) = vg(hybrid), vg(simple), vg(kl)
        return (h, s, k), (g_h, g_s, g_k)

    ((h, aux), (s, _), (k, kaux)), (g_h, g_s, g_k) = everything(params)
    np.testing.assert_allclose(aux["mse"], s, rtol=1e-6)  # same key => same t, eps
    np.testing.assert_allclose(h, s + aux["vb"] * T / 1000.0, rtol=1e-6)  # reference formula
    np.testing.assert_allclose(h, s + 0.001 * k, rtol=1e-6)  # lambda * L_vlb, L_vlb = T * L_t
    np.testing.assert_allclose(kaux["vb"], aux["vb"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_h["mean"]), jax.tree.leaves(g_s["mean"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # the bound never moves the mean
    for a, b in zip(jax.tree.leaves(g_h["var"]), jax.tree.leaves(g_k["var"]), strict=True):
        np.testing.assert_allclose(a, 0.001 * b, rtol=1e-4, atol=1e-9)
    assert any(np.abs(np.asarray(a)).max() > 0 for a in jax.tree.leaves(g_k["mean"]))


# ----------------------------------------------------------------------------------------------
# Every denoising loss reaches its Bayes risk with the exact model, and only it
# ----------------------------------------------------------------------------------------------


def _oracle(g, kind, proc):
    """The exact Gaussian denoiser as a ``kind`` model, computed stably (eps from the score,
    not from (x - alpha x0) / sigma, which cancels catastrophically at small sigma)."""

    def model(x, t, cond=None):
        tb = t[:, None]
        a, s = proc.alpha(tb), proc.sigma(tb)
        score = g.score(x, t)
        x0, eps = g(x, t), -s * score
        if kind == "score":
            return score
        if kind == "velocity":
            return proc.alpha_dot(tb) * x0 + proc.sigma_dot(tb) * eps
        return {"x0": x0, "eps": eps, "v": a * eps - s * x0}[kind]

    return model


def _bayes_risk(proc, t, target, reduce, weight):
    """Closed form of E[reduce((T_hat - T)^2)] * weight at t for Gaussian data: given x_t the
    target is A(t) x0 + B(t) x_t, so the Bayes risk is A^2 sum_k Var_k[x0 | x_t] with
    Var_k = lam_k sigma^2 / (alpha^2 lam_k + sigma^2) on the eigenvalues lam_k of COV."""
    coefs = jax.jit(lambda t: (proc.alpha(t), proc.sigma(t), proc.alpha_dot(t), proc.sigma_dot(t)))
    a, s, ad, sd = (np.asarray(c, np.float64) for c in coefs(t))
    A = {"eps": -a / s, "x0": np.ones_like(t), "score": a / s**2,
         "velocity": ad - sd * a / s}[target]
    lam = np.linalg.eigvalsh(COV)
    var = lam[None] * s[:, None] ** 2 / (a[:, None] ** 2 * lam[None] + s[:, None] ** 2)
    tot = A**2 * var.sum(1)
    tot = {"mean": tot / len(lam), "sum": tot, "half_sum": 0.5 * tot}[reduce]
    return tot * np.asarray(weight(t, s), np.float64)


_one = lambda t, s: 1.0  # noqa: E731
LOSS_CASES = {
    # name: (loss fn, process, model kind, target, pixel reduction, weight(t, sigma))
    "ddpm": (L.ddpm_loss, dj.DiscreteVP.linear(1000), "x0", "eps", "mean", _one),
    "ddim": (L.ddim_loss, dj.DiscreteVP.cosine(1000), "eps", "eps", "sum", _one),
    "ncsn": (functools.partial(L.ncsn_loss, num_levels=10), dj.VE(0.01, 1.0), "score", "score",
             "half_sum", lambda t, s: s**2),
    "score_sde": (L.score_sde_loss, dj.VP(), "eps", "score", "half_sum", lambda t, s: s**2),
    "score_sde_lik": (functools.partial(L.score_sde_loss, likelihood_weighting=True), dj.VE(),
                      "score", "score", "half_sum",
                      lambda t, s: 2.0 * s**2 * math.log(50.0 / 0.01)),
    "score_sde_mean": (functools.partial(L.score_sde_loss, reduce_mean=True), dj.SubVP(), "v",
                       "score", "mean", lambda t, s: s**2),
    "edm": (L.edm_loss, dj.EDM(), "x0", "x0", "sum",
            lambda t, s: (s**2 + 0.25) / (s * 0.5) ** 2),
    "flow": (L.flow_matching_loss, dj.Linear(), "velocity", "velocity", "mean", _one),
    "flow_logit": (functools.partial(L.flow_matching_loss,
                                     t_sampler=functools.partial(TS.logit_normal)),
                   dj.GVP(), "x0", "velocity", "mean", _one),
}


@pytest.mark.parametrize("name", list(LOSS_CASES))
def test_loss_expectation_is_its_bayes_risk_and_wrong_models_score_higher(name):
    fn, proc, kind, target, reduce, weight = LOSS_CASES[name]
    n = 20_000
    right = dj.analytic.Gaussian.create(MEAN, COV, proc)
    wrong = dj.analytic.Gaussian.create(MEAN + 0.1, 1.5 * COV, proc)
    x0 = np.random.default_rng(5).multivariate_normal(MEAN, COV, n).astype(np.float32)

    @jax.jit
    def run(key):
        l1, aux = fn(_oracle(right, kind, proc), key, x0, process=proc, prediction=kind)
        l2, _ = fn(_oracle(wrong, kind, proc), key, x0, process=proc, prediction=kind)
        return l1, l2, aux["t"]

    l1, l2, t = (np.asarray(a, np.float64) for a in run(_key(6)))
    assert l1.shape == (n,)
    risk = _bayes_risk(proc, t, target, reduce, weight)
    # paired residual at the drawn t: mean 0 iff the loss's expectation is the Bayes risk;
    # 4 SE (seeded) plus 1e-3 relative slack for the float32 oracle at extreme t.
    r = l1 - risk
    assert abs(r.mean()) < 4 * r.std(ddof=1) / math.sqrt(n) + 1e-3 * risk.mean(), name
    d = l2 - l1  # common random numbers: same x0, t, eps
    assert d.mean() > 4 * d.std(ddof=1) / math.sqrt(n), name


# ----------------------------------------------------------------------------------------------
# EDM: preconditioning unit variances and the loss as an F-space regression
# ----------------------------------------------------------------------------------------------


def test_edm_preconditioning_unit_variance_and_loss_identity():
    n, sd = 200_000, 0.5
    rng = np.random.default_rng(0)
    y = sd * rng.normal(size=n)
    z = rng.normal(size=n)
    for sigma in (0.002, 0.1, 0.5, 2.0, 80.0):
        c_skip, c_out, c_in, _ = (np.float64(c) for c in par.edm_precond_coeffs(sigma, sd))
        x = y + sigma * z
        # MC tolerance: std of a sample variance at n = 2e5 is sqrt(2/n) = 0.003 -> 0.01 ~ 3 SE
        assert abs(np.var(c_in * x) - 1.0) < 0.01, sigma
        assert abs(np.var((y - c_skip * x) / c_out) - 1.0) < 0.01, sigma
        lam_c = float(L.edm_lambda(np.float32(sigma), sd)) * float(c_out) ** 2
        assert abs(lam_c - 1.0) < 1e-6, sigma  # exact up to float32 rounding

    # with EDMPrecond the EDM loss is ||F - (y - c_skip x) / c_out||^2 summed over pixels
    proc = dj.EDM()
    p = _init(0, 3, 3)
    net = lambda x, c_noise, cond=None: _mlp(p, x, c_noise)  # noqa: E731
    model = par.EDMPrecond(net, proc)
    x0 = (0.5 * rng.normal(size=(256, 3))).astype(np.float32)
    noise = rng.normal(size=(256, 3)).astype(np.float32)

    @jax.jit
    def loss_and_by_hand(key):
        loss, aux = L.edm_loss(model, key, x0, process=proc, noise=noise)
        sig = proc.sigma_tilde(aux["t"])[:, None]
        c_skip, c_out, c_in, c_noise = par.edm_precond_coeffs(sig, sd)
        x = x0 + sig * noise
        f_target = (x0 - c_skip * x) / c_out
        return loss, jnp.sum((net(c_in * x, c_noise[:, 0]) - f_target) ** 2, axis=1), sig

    loss, want, sig = loss_and_by_hand(_key(3))
    np.testing.assert_allclose(loss, want, rtol=2e-4)  # float32, lambda c_out^2 = 1 rounding
    # sanity: the drawn sigmas follow EDM's log-normal (median exp(-1.2))
    assert 0.15 < float(jnp.median(sig)) < 0.45


# ----------------------------------------------------------------------------------------------
# Gradients flow; training on L_simple reaches the Bayes risk
# ----------------------------------------------------------------------------------------------


def test_every_loss_has_finite_nonzero_gradients():
    d = 2
    dvp = dj.DiscreteVP.linear(10)  # T = 10 with explicit index 0 -> decoder path included
    x0 = np.random.default_rng(0).uniform(-1, 1, (8, d)).astype(np.float32)
    idx = np.arange(8) % 10
    p1, p2 = _init(1, d, d), _init(2, d, 2 * d)
    m = lambda p: lambda x, t, c=None: _mlp(p, x, t)  # noqa: E731
    k = _key(3)

    def all_losses(p1, p2):
        edm_model = par.EDMPrecond(lambda x, c, cond=None: _mlp(p1, x, c), dj.EDM())
        return [
            lambda: L.ddpm_loss(m(p1), k, x0, process=dvp)[0],
            lambda: L.ncsn_loss(m(p1), k, x0, process=dj.VE(0.01, 1.0))[0],
            lambda: L.score_sde_loss(m(p1), k, x0, process=dj.VP(), prediction="eps")[0],
            lambda: L.score_sde_loss(m(p1), k, x0, process=dj.VE(), likelihood_weighting=True)[0],
            lambda: L.edm_loss(edm_model, k, x0, process=dj.EDM())[0],
            lambda: L.flow_matching_loss(m(p1), k, x0, process=dj.Linear())[0],
            lambda: L.hybrid_loss(m(p2), k, x0, process=dvp, index=idx)[0],
            lambda: L.vlb_loss(m(p2), k, x0, process=dvp, index=idx)[0],
        ]

    @jax.jit
    def values_and_grads(p1, p2):  # one compile; a separate backward pass per loss
        n = len(all_losses(p1, p2))
        means = [lambda a, b, j=j: jnp.mean(all_losses(a, b)[j]()) for j in range(n)]
        return [jax.value_and_grad(f, argnums=(0, 1))(p1, p2) for f in means]

    for j, (val, grads) in enumerate(values_and_grads(p1, p2)):
        leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
        assert np.isfinite(val) and val > 0, j
        assert all(np.all(np.isfinite(g)) for g in leaves), j
        assert sum(np.sum(g**2) for g in leaves) > 0, j  # every loss reaches some parameter


def test_training_on_lsimple_reaches_the_bayes_risk():
    """Adam on L_simple with a model class that contains the optimum (eps_hat = M(t) x_t with
    M(t) a smooth RBF expansion; zero-mean Gaussian data make E[eps|x_t] linear in x_t):
    the trained loss exceeds the analytic Bayes risk by less than 10 % at t = 10 and 5 % at
    t = 100, 500 (of T = 1000), and is never below it by more than the 1 % MC slack."""
    T = 1000
    proc = dj.DiscreteVP.linear(T)
    g = dj.analytic.Gaussian.create([0.0, 0.0], COV, proc)
    centers = jnp.linspace(0.0, 1.0, 16)

    def model(w, x, t):
        phi = jnp.exp(-0.5 * ((t[:, None] - centers[None]) / 0.07) ** 2)
        feats = jnp.concatenate([phi, jnp.sqrt(t)[:, None]], axis=1)  # sqrt(t): small-t shape
        return jnp.einsum("bi,bk,kij->bj", x, feats, w)

    opt = optax.adam(optax.linear_schedule(3e-2, 1e-3, 800))  # decay: low-noise final iterate

    def step(carry, key):
        w, st = carry
        k1, k2 = jax.random.split(key)
        x0 = g.sample_data(k1, 256)
        grad = jax.grad(lambda w: jnp.mean(L.ddpm_loss(
            lambda x, t, c=None: model(w, x, t), k2, x0, process=proc)[0]))(w)
        upd, st = opt.update(grad, st)
        return (optax.apply_updates(w, upd), st), None

    w0 = jnp.zeros((17, 2, 2))
    (w, _), _ = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))(
        (w0, opt.init(w0)), jax.random.split(_key(0), 800))

    @jax.jit
    def excess(w, t):  # paired: same x0, eps for the trained and the Bayes-optimal model
        x0 = g.sample_data(_key(1), 20_000)
        ls, _ = L.ddpm_loss(lambda x, t, c=None: model(w, x, t), _key(2), x0,
                            process=proc, t=t)
        lb, _ = L.ddpm_loss(_oracle(g, "eps", proc), _key(2), x0, process=proc, t=t)
        return (jnp.mean(ls) - jnp.mean(lb)) / jnp.mean(lb)

    for i, tol in [(9, 0.10), (99, 0.05), (499, 0.05)]:  # paper t = 10, 100, 500
        e = float(excess(w, (i + 1) / T))
        assert -0.01 < e < tol, (i, e)  # never below the Bayes risk (1% MC slack)


# ----------------------------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_value_errors():
    dvp = dj.DiscreteVP.linear(10)
    x0 = np.zeros((4, 2), np.float32)
    model = lambda x, t, c=None: x  # noqa: E731
    k = _key(0)
    cases = [
        ("pixel_reduce", lambda: L.ddpm_loss(model, k, x0, process=dvp, pixel_reduce="avg")),
        ("x0 must have shape", lambda: L.ddpm_loss(model, k, np.zeros(4), process=dvp)),
        ("model output", lambda: L.ddpm_loss(lambda x, t, c=None: x[:, :1], k, x0, process=dvp)),
        ("DiscreteVP", lambda: L.ddpm_loss(model, k, x0, process=dj.VP())),
        ("process must be a DiscreteVP", lambda: L.vlb_loss(model, k, x0, process=dj.VP())),
        ("process must be a DiscreteVP",
         lambda: L.calc_bpd_loop(model, k, x0, process=dj.VP())),
        ("variance", lambda: L.vlb_loss(model, k, x0, process=dvp, variance="fixed")),
        ("decoder", lambda: L.calc_bpd_loop(model, k, x0, process=dvp, decoder="logistic")),
        ("2C output channels", lambda: L.hybrid_loss(model, k, x0, process=dvp)),
        ("DDPM indices", lambda: L.vlb_loss(
            lambda x, t, c=None: jnp.concatenate([x, x], -1), k, x0, process=dvp,
            t_sampler=functools.partial(TS.uniform_continuous))),
        ("prediction kind", lambda: L.ddpm_loss(model, k, x0, process=dvp, prediction="noise")),
        ("t must be", lambda: L.ddpm_loss(model, k, x0, process=dvp, t=np.ones(3))),
        ("noise must", lambda: L.ddpm_loss(model, k, x0, process=dvp, noise=np.ones((4, 3)))),
        ("index must", lambda: L.vlb_loss(model, k, x0, process=dvp, variance="small",
                                          index=np.zeros(4, np.float32))),
        ("reduce_mean or pixel_reduce", lambda: L.score_sde_loss(
            model, k, x0, process=dj.VP(), reduce_mean=True, pixel_reduce="sum")),
        ("t_idx and losses", lambda: TS.LossSecondMomentResampler(num_steps=10).update(
            TS.LossSecondMomentResampler(num_steps=10).init(), np.zeros(3, int), np.zeros(4))),
        ("num_steps", lambda: TS.uniform_discrete(k, 4, num_steps=0)),
    ]
    for match, call in cases:
        with pytest.raises(ValueError, match=match):
            jax.jit(call)()  # raised while tracing: nothing is compiled
