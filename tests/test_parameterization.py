"""Parameterisations against closed forms: conversions, Tweedie, SiT velocity, EDM and
consistency preconditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax import parameterization as par
from diffjax import processes as P

PROCS = [P.VP(), P.SubVP(), P.VE(), P.EDM(), P.Linear(), P.GVP(), P.DiscreteVP.cosine(1000)]


@pytest.mark.parametrize("proc", PROCS, ids=lambda p: type(p).__name__)
def test_every_kind_round_trips_through_x0_eps(proc):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(64, 3)).astype(np.float32)
    eps = rng.normal(size=(64, 3)).astype(np.float32)
    t = rng.uniform(0.05, 0.95, size=64).astype(np.float32)
    x = proc.marginal(x0, t, eps)
    for kind in par.PREDICTION_KINDS:
        pred = par.from_x0_eps(kind, x0, eps, x, t, proc)
        x0_hat, eps_hat = par.to_x0_eps(kind, pred, x, t, proc)
        # float32: conversions divide by alpha or sigma (>= ~0.08 on this t range)
        np.testing.assert_allclose(x0_hat, x0, atol=2e-4, err_msg=kind)
        np.testing.assert_allclose(eps_hat, eps, atol=2e-4, err_msg=kind)
    # convert() between two non-canonical kinds
    v = par.from_x0_eps("v", x0, eps, x, t, proc)
    np.testing.assert_allclose(par.convert(v, x, t, proc, "v", "score"),
                               par.from_x0_eps("score", x0, eps, x, t, proc), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="prediction kind"):
        par.to_x0_eps("noise", x0, x, t, proc)


def test_tweedie_score_of_exact_gaussian_denoiser():
    """The score obtained from the exact x0 (Tweedie) equals the Gaussian's closed-form score."""
    cov = np.array([[0.3, 0.1], [0.1, 0.2]])
    for proc in (P.VP(), P.VE(), P.Linear()):
        g = dj.analytic.Gaussian.create([0.2, -0.1], cov, proc)
        x = np.random.default_rng(1).normal(size=(32, 2)).astype(np.float32)
        t = np.linspace(0.1, 0.9, 32).astype(np.float32)
        s = par.convert(g(x, t), x, t, proc, "x0", "score")
        np.testing.assert_allclose(s, g.score(x, t), rtol=1e-3, atol=1e-4)
        # and the score is the gradient of the closed-form log-density
        grad = jax.vmap(jax.grad(lambda xi, ti: g.log_prob(xi[None], ti[None])[0]))(x, t)
        np.testing.assert_allclose(grad, g.score(x, t), rtol=1e-3, atol=1e-4)


def test_sit_velocity_of_gaussian_data():
    """For x1 ~ N(0, s^2) on the linear path (SiT time), v* = x (t s^2 -
    (1 - t)) / (t^2 s^2 + (1 - t)^2); our velocity in flipped time is its negative."""
    s = 0.5
    proc = P.Linear()
    g = dj.analytic.Gaussian.create([0.0], [[s**2]], proc)
    t_sit = np.linspace(0.05, 0.95, 19).astype(np.float32)
    x = np.linspace(-2, 2, 19).astype(np.float32)[:, None]
    t = 1.0 - t_sit
    u = par.convert(g(x, t), x, t, proc, "x0", "velocity")
    v_star = x[:, 0] * (t_sit * s**2 - (1 - t_sit)) / (t_sit**2 * s**2 + (1 - t_sit) ** 2)
    np.testing.assert_allclose(-u[:, 0], v_star, rtol=1e-4, atol=1e-5)
    # score from velocity: -x / sigma_t^2 exactly
    score = par.convert(u, x, t, proc, "velocity", "score")
    np.testing.assert_allclose(score[:, 0], -x[:, 0] / (t_sit**2 * s**2 + (1 - t_sit) ** 2),
                               rtol=1e-4, atol=1e-5)


def test_edm_preconditioning_closed_forms():
    """EDM's Table 1 scalings: for y ~ N(0, sigma_data^2) the ideal F is 0."""
    sig = jnp.asarray([0.002, 0.1, 0.5, 2.0, 80.0])
    c_skip, c_out, c_in, c_noise = par.edm_precond_coeffs(sig)
    lam = (sig**2 + 0.25) / (sig * 0.5) ** 2
    np.testing.assert_allclose(lam * c_out**2, 1.0, rtol=1e-6)
    np.testing.assert_allclose(c_in**2 * (sig**2 + 0.25), 1.0, rtol=1e-6)  # Var(c_in x) = 1
    np.testing.assert_allclose(c_noise, 0.25 * np.log(np.asarray(sig)), rtol=1e-6)
    # Var of the effective training target (y - c_skip x) / c_out is 1 for y ~ N(0, sd^2):
    # Var = ((1 - c_skip)^2 sd^2 + c_skip^2 s^2) / c_out^2 (closed form of the MC check)
    var_target = ((1 - c_skip) ** 2 * 0.25 + c_skip**2 * sig**2) / c_out**2
    np.testing.assert_allclose(var_target, 1.0, rtol=1e-5)

    edm = P.EDM()
    oracle = dj.analytic.Gaussian.create([0.0, 0.0], 0.25 * np.eye(2), edm)
    zero_net = lambda x, c_noise, cond: jnp.zeros_like(x)
    D = par.EDMPrecond(zero_net, edm)
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32) * 3
    t = np.linspace(0.01, 1.0, 16).astype(np.float32)
    np.testing.assert_allclose(D(x, t), oracle(x, t), rtol=1e-5, atol=1e-6)
    # On a VP process the wrapper sees x / alpha and sigma / alpha (EDM's scaled view).
    vp = P.VP()
    oracle_vp = dj.analytic.Gaussian.create([0.0, 0.0], 0.25 * np.eye(2), vp)
    np.testing.assert_allclose(par.EDMPrecond(zero_net, vp)(x, t), oracle_vp(x, t), rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="coeffs"):
        par.EDMPrecond(zero_net, edm, coeffs="bogus")


def test_consistency_boundary_condition():
    """Song et al. 2023, appendix C: c_skip(sigma_min) = 1, c_out(sigma_min) = 0 exactly;
    values at 80."""
    c_skip, c_out, _, _ = par.consistency_coeffs(jnp.asarray([0.002, 80.0]))
    assert float(c_skip[0]) == 1.0 and float(c_out[0]) == 0.0
    np.testing.assert_allclose(float(c_skip[1]), 3.906e-5, rtol=1e-3)
    np.testing.assert_allclose(float(c_out[1]), 0.499978, rtol=1e-5)
    edm = P.EDM()
    f = par.ConsistencyPrecond(lambda x, c, cond: jnp.ones_like(x) * 7.0, edm, sigma_min=0.002)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    t_min = jnp.full((4,), 0.002 / 80.0)
    np.testing.assert_allclose(f(x, t_min), x, rtol=1e-5, atol=1e-6)


def test_learned_variance_split():
    out = jnp.arange(2 * 6, dtype=jnp.float32).reshape(1, 2, 6)
    m, v = par.split_learned_variance(out)
    assert m.shape == v.shape == (1, 2, 3)
    with pytest.raises(ValueError, match="2\\*C"):
        par.split_learned_variance(jnp.zeros((1, 3)))
