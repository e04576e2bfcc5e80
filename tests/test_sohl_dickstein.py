"""Sohl-Dickstein et al. 2015: the bound K (eq. 14), its entropy terms and the ancestral sampler,
checked against closed forms and a direct Monte Carlo of the trajectory likelihood ratio that
this file writes itself in numpy (independent of diffjax's KL / posterior code)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import diffjax as dj
from diffjax.losses import sohl_dickstein as sdl
from diffjax.methods.sohl_dickstein import SohlDicksteinStep
from diffjax.models.sohl_dickstein import SohlDicksteinMLP, temporal_basis

T = 40


def _betas():
    return dj.processes.sohl_dickstein_betas(T)


def _reverse_gaussian(betas, v):
    """Exact reverse kernels q(x^{t-1}|x^t) of the forward chain on x^0 ~ N(0, diag v),
    t = 2..T, by the variance recursion of the chain (no cumprod): (a_t, var_t) per coordinate,
    mean a_t x^t. Index t-1 of the returned arrays is paper step t (index 0 unused)."""
    D = len(v)
    s = [np.asarray(v, np.float64)]  # marginal variances s_t
    for b in betas:
        s.append((1.0 - b) * s[-1] + b)
    a = np.zeros((len(betas), D))
    var = np.ones((len(betas), D))
    for t in range(2, len(betas) + 1):
        alpha = 1.0 - betas[t - 1]
        cov = math.sqrt(alpha) * s[t - 1]  # Cov(x^{t-1}, x^t)
        a[t - 1] = cov / s[t]
        var[t - 1] = s[t - 1] - cov**2 / s[t]
    return a, var, s


def _log_normal(x, mean, var):
    return -0.5 * np.sum((x - mean) ** 2 / var + np.log(2 * np.pi * var), axis=-1)


def test_forward_entropy_terms_and_schedule_match_closed_forms():
    """H_q(X^T|X^0), H_q(X^1|X^0), H_p(X^T) against scipy's Gaussian entropies with the
    variances propagated step by step; the model's schedule at zero perturbation is the
    reference's generate_beta_arr and keeps ~1/T of the signal variance (the paper's
    'constant fraction per step')."""
    betas = _betas()
    var_T = 0.0
    for b in betas:  # Var(x^t | x^0) recursion
        var_T = (1.0 - b) * var_T + b
    for dim in (1, 2, 5):
        h = {k: float(v) for k, v in sdl.forward_entropies(jnp.asarray(betas), dim).items()}
        np.testing.assert_allclose(h["H_q_T"], stats.multivariate_normal(
            np.zeros(dim), var_T * np.eye(dim)).entropy(), rtol=1e-5)
        np.testing.assert_allclose(h["H_q_1"], stats.multivariate_normal(
            np.zeros(dim), betas[0] * np.eye(dim)).entropy(), rtol=1e-5)
        np.testing.assert_allclose(h["H_p_T"], stats.multivariate_normal(
            np.zeros(dim), np.eye(dim)).entropy(), rtol=1e-6)
    np.testing.assert_allclose(1.0 - var_T, 1.0 / T, rtol=0.1)  # b_t ~ 1/(T - t + 1)
    from flax import nnx

    m = SohlDicksteinMLP(num_steps=T, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(m.betas()), betas, rtol=1e-5)
    np.testing.assert_allclose(temporal_basis(T, 10).sum(axis=1), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="betas"):
        sdl.forward_entropies(jnp.ones((1,)) * 0.1, 2)
    with pytest.raises(ValueError, match="timesteps"):
        sdl.sohl_dickstein_bound(None, betas, np.zeros((2, 2)), jax.random.key(0),
                                 timesteps="some")


@pytest.mark.parametrize("v", [(0.25, 1.75), (0.25, 0.25)], ids=["unit-moment", "small"])
def test_bound_is_the_trajectory_log_ratio_and_reaches_the_data_entropy(v):
    """Gaussian data with the exact Gaussian reverse kernels: K (eq. 14, analytic KLs) equals
    a direct Monte Carlo of E_q[log p(x^{0:T}) / q(x^{1:T}|x^0)] up to the documented
    (alpha_bar_T + beta_1)(D - E|x0|^2)/2 (zero for unit second moment), lies below the
    model's exact log-likelihood, and falls short of minus the data entropy by exactly the
    prior and edge-step KLs (closed forms)."""
    betas = _betas()
    D = len(v)
    a, rvar, s = _reverse_gaussian(betas, v)
    m = float(np.sum(v))
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        A, RV = jnp.asarray(a), jnp.asarray(rvar)

        def kernel(x, t):
            return A[t - 1] * x, RV[t - 1]

        x0 = rng.standard_normal((20_000, D)) * np.sqrt(v)
        K, _ = jax.jit(lambda x, k: sdl.sohl_dickstein_bound(kernel, jnp.asarray(betas), x, k))(
            jnp.asarray(x0), jax.random.key(0))
        K = np.asarray(K)
        K1, _ = jax.jit(lambda x, k: sdl.sohl_dickstein_bound(
            kernel, jnp.asarray(betas), x, k, timesteps="one"))(jnp.asarray(x0), jax.random.key(1))
        K1 = np.asarray(K1)
    K_mean, K_se = K.mean(), K.std() / np.sqrt(K.size)
    # one random t per example, (T - 1) KL_t: unbiased for the same K
    assert abs(K1.mean() - K_mean) < 4 * np.hypot(K_se, K1.std() / np.sqrt(K1.size))

    # direct Monte Carlo over whole forward trajectories
    n = 100_000
    x = rng.standard_normal((n, D)) * np.sqrt(v)
    x_first = x
    log_ratio = np.zeros(n)
    xs = [x]
    for b in betas:
        x_new = np.sqrt(1 - b) * x + np.sqrt(b) * rng.standard_normal((n, D))
        log_ratio -= _log_normal(x_new, np.sqrt(1 - b) * x, b)
        xs.append(x_new)
        x = x_new
    log_ratio += _log_normal(xs[T], 0.0, 1.0)
    for t in range(2, T + 1):
        log_ratio += _log_normal(xs[t - 1], a[t - 1] * xs[t], rvar[t - 1])
    log_ratio += _log_normal(x_first, np.sqrt(1 - betas[0]) * xs[1], betas[0])
    mc, mc_se = log_ratio.mean(), log_ratio.std() / np.sqrt(n)
    alpha_bar_T = np.prod(1 - betas)
    correction = 0.5 * (alpha_bar_T + betas[0]) * (D - m)
    assert abs(K_mean + correction - mc) < 4 * np.hypot(K_se, mc_se) + 1e-3, \
        (K_mean, correction, mc, K_se, mc_se)

    # the model chain is linear Gaussian: its marginal p(x^0) = N(0, diag c) exactly
    c = np.ones(D)
    for t in range(T, 1, -1):
        c = a[t - 1] ** 2 * c + rvar[t - 1]
    c = (1 - betas[0]) * c + betas[0]
    loglik = float(np.sum(-0.5 * np.log(2 * np.pi * c) - 0.5 * np.asarray(v) / c))
    neg_entropy = -float(stats.multivariate_normal(np.zeros(D), np.diag(v)).entropy())
    elbo = K_mean + correction
    assert elbo <= loglik + 4 * K_se and loglik <= neg_entropy + 1e-12
    # -H - ELBO = KL(q(x^{0:T}) || p(x^{0:T})): only the prior (q(x^T) vs N(0, I)) and the
    # fixed edge step (true reverse q(x^0|x^1) vs the forward kernel) differ from the truth
    kl_prior = 0.5 * np.sum(s[T] - 1.0 - np.log(s[T]))
    alpha1 = 1.0 - betas[0]
    a1 = math.sqrt(alpha1) * s[0] / s[1]
    r1 = s[0] - alpha1 * s[0] ** 2 / s[1]
    kl_edge = 0.5 * np.sum(np.log(betas[0] / r1) + (r1 + (a1 - math.sqrt(alpha1)) ** 2 * s[1])
                           / betas[0] - 1.0)
    gap = neg_entropy - elbo
    assert abs(gap - (kl_prior + kl_edge)) < 4 * K_se + 1e-3, (gap, kl_prior, kl_edge)
    assert gap < 0.1  # K approaches minus the data entropy (nats; T = 40, beta_1 = 0.026)


def test_ancestral_step_draws_the_reverse_chain_closed_form():
    """The driver with SohlDicksteinStep and a model whose readout encodes chosen affine
    Gaussian kernels N(a_t x + b_t, c_t): the samples' mean and variance match the chain's
    closed form (mean m <- a m + b, variance w <- a^2 w + c from N(0, I)); the model is ignored
    at the last step (paper step 1 is the fixed forward kernel)."""
    betas = _betas()
    rng = np.random.default_rng(1)
    a = rng.uniform(0.8, 1.1, (T, 2))
    b = rng.uniform(-0.1, 0.1, (T, 2))
    c = betas[:, None] * rng.uniform(0.5, 1.5, (T, 2))
    A, B_, C, BE = (jnp.asarray(z, jnp.float32) for z in (a, b, c, betas))

    def model(x, t, cond=None):  # [mu_coeff, beta_coeff] that realise N(a x + b, c)
        k = jnp.round(t[0] * T).astype(jnp.int32)
        beta = BE[k - 1]
        ak, bk, ck = A[k - 1][None], B_[k - 1][None], C[k - 1][None]
        mu_coeff = (ak * x + bk - jnp.sqrt(1 - beta) * x) / jnp.sqrt(beta)
        logit = lambda p: jnp.log(p) - jnp.log1p(-p)  # noqa: E731
        beta_coeff = jnp.sqrt(float(T)) * (logit(ck) - logit(beta))
        out = jnp.concatenate([mu_coeff, jnp.broadcast_to(beta_coeff, x.shape)], axis=-1)
        return jnp.where(k == 1, 1e3, out)  # garbage at step 1: must not be used

    n = 40_000
    x = dj.samplers.sample(model, jax.random.key(0), (n, 2), np.arange(T, -1, -1) / T,
                           SohlDicksteinStep(BE), process=dj.VP(), mesh=None)
    x = np.asarray(x, np.float64)
    mean, var = np.zeros(2), np.ones(2)
    for t in range(T, 1, -1):
        mean, var = a[t - 1] * mean + b[t - 1], a[t - 1] ** 2 * var + c[t - 1]
    mean, var = np.sqrt(1 - betas[0]) * mean, (1 - betas[0]) * var + betas[0]
    se_mean = np.sqrt(var / n)
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se_mean), (x.mean(0), mean)
    np.testing.assert_allclose(x.var(0), var, rtol=5 * np.sqrt(2 / n))


def test_method_rejects_other_networks():
    from diffjax.methods import METHODS, Setup
    from diffjax.models.denoiser import Network
    from diffjax.models.mlp import ToyMLP

    proc = dj.DiscreteVP.from_betas(_betas())
    net = Network(lambda r: ToyMLP(rngs=r), proc)
    with pytest.raises(ValueError, match="model.name='sohl_dickstein'"):
        METHODS["sohl_dickstein"](Setup(net, (2,)))
    sd = Network(lambda r: SohlDicksteinMLP(num_steps=T, rngs=r), dj.DiscreteVP.linear(20))
    with pytest.raises(ValueError, match="num_steps"):
        METHODS["sohl_dickstein"](Setup(sd, (2,)))
    with pytest.raises(ValueError, match="model.dim"):
        METHODS["sohl_dickstein"](Setup(Network(lambda r: SohlDicksteinMLP(
            num_steps=T, rngs=r), proc), (3,)))


@pytest.mark.slow  # ~1 min on one core: 600 steps of the method through the run layer's build
def test_training_raises_the_bound_on_gaussian_data_and_learns_the_schedule():
    """Maximising K on x^0 ~ N(0, diag(0.25, 1.75)) through the run layer (config -> build ->
    train step): K rises from the untrained chain's value towards minus the data entropy (the
    closed form), the learned schedule moves only beta_{2..T}, and the frozen one not at all."""
    import ml_collections

    from diffjax import train as TR
    from diffjax.methods.sohl_dickstein import model_betas
    from diffjax.run.build import build

    v = np.array([0.25, 1.75])
    neg_entropy_bits = -float(stats.multivariate_normal(np.zeros(2), np.diag(v)).entropy()) \
        / math.log(2)
    for learn in (True, False):
        c = ml_collections.ConfigDict()
        c.process = dict(name="sohl_dickstein", num_steps=T)
        c.model = dict(name="sohl_dickstein", dim=2, hidden=(32, 32), num_steps=T,
                       learn_beta=learn)
        c.method = dict(name="sohl_dickstein")
        c.data = dict(name="gaussian", batch_size=128)
        c.optim = dict(name="adam", lr=3e-3)
        c.train = dict(num_steps=600)
        built = build(c, data=False, x_shape=(2,))
        state = built.init_state()
        step = TR.make_train_step(built.method.loss, built.optimizer, built.ema_specs, 128,
                                  loss_takes_state=True)
        scale = jnp.asarray(np.sqrt(v), jnp.float32)[None]

        def body(st, k, step=step, scale=scale):
            st, met = step(st, {"image": jax.random.normal(k, (128, 2)) * scale})
            return st, met["loss"]

        run = jax.jit(lambda st, ks: jax.lax.scan(body, st, ks))
        state, losses = run(state, jax.random.split(jax.random.key(0), 600))
        K_start, K_end = -float(np.mean(losses[:20])), -float(np.mean(losses[-100:]))
        assert K_end > K_start + 0.1 and K_end < neg_entropy_bits + 0.05, \
            (K_start, K_end, neg_entropy_bits)
        assert neg_entropy_bits - K_end < 0.3, (K_end, neg_entropy_bits)
        betas = np.asarray(model_betas(built.setup.network, state.params))
        base = _betas()
        assert betas[0] == pytest.approx(base[0], rel=1e-6)
        moved = np.max(np.abs(betas - base) / base)
        assert (moved > 1e-3) if learn else (moved < 1e-5), moved
