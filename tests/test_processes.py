"""Processes, schedules, grids and adapters against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax import adapters, grids
from diffjax import processes as P

CONTINUOUS = [P.VP(), P.SubVP(), P.VE(), P.EDM(), P.Linear(), P.Linear(sigma_min=1e-5),
              P.Linear(sigma_min=0.2), P.GVP(), P.DiscreteVP.linear(1000),
              P.DiscreteVP.cosine(1000)]
IDS = ["vp", "subvp", "ve", "edm", "linear", "linear_smin1e-5", "linear_smin0.2", "gvp",
       "ddpm_linear", "ddpm_cosine"]


def test_discrete_tables_match_float64_closed_forms():
    # linear: alpha_bar = prod(1 - beta) in float64; stored as float32 log alpha_bar, so the
    # comparison is at float32 relative precision (1e-6 of log alpha_bar, ~1e-5 relative at T).
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    proc = P.DiscreteVP.linear(1000)
    np.testing.assert_allclose(np.exp(np.asarray(proc.log_alpha_bar, np.float64)), ab, rtol=2e-5)
    assert abs(ab[-1] - 4.04e-5) < 5e-7  # DDPM's linear schedule: alpha_bar_T = 4.04e-5
    # sigma^2 at the first step must keep full relative precision (no 1 - alpha_bar cancellation)
    t1 = adapters.ddpm_index_to_t(0, 1000)
    np.testing.assert_allclose(float(proc.sigma(t1)) ** 2, 1e-4, rtol=1e-5)
    # betas() recovers the schedule
    np.testing.assert_allclose(np.asarray(proc.betas()), betas, rtol=1e-3, atol=1e-7)

    # cosine (iDDPM eq. 17): alpha_bar_i = f((i+1)/T) / f(0) exactly in float64 while no clip.
    for T in (1000, 4000):
        b = P.cosine_betas(T)
        f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
        ab = np.cumprod(1 - b)
        u = np.arange(1, T + 1) / T
        unclipped = b < 0.999
        first_clip = np.argmax(~unclipped) if (~unclipped).any() else T
        np.testing.assert_allclose(ab[:first_clip], (f(u) / f(0))[:first_clip], rtol=1e-12)
        assert b.max() <= 0.999
    # at T=4000 one cosine beta reaches the 0.999 clip
    assert int(np.sum(P.cosine_betas(4000) >= 0.999)) == 1

    # Sohl-Dickstein: beta_1 >= 1e-3 (step1_beta) and the last step destroys ~half the variance.
    b = P.sohl_dickstein_betas(1000)
    assert b[0] >= 1e-3 and abs(b[-1] - 0.5) < 1e-4 and np.all(np.diff(b[1:]) > 0)


def test_respacing_keeps_alpha_bar_and_spacings():
    betas = P.linear_betas(1000)
    keep = P.space_timesteps(1000, "50")
    assert keep[:3] == [0, 20, 41] and keep[-2:] == [979, 999] and len(keep) == 50
    rb = P.respace_betas(betas, keep)
    np.testing.assert_allclose(np.cumprod(1 - rb), np.cumprod(1 - betas)[keep], rtol=0, atol=1e-15)
    # ddimN: stride from 0, never includes T - 1 (improved-diffusion issue #44)
    d = P.space_timesteps(1000, "ddim50")
    assert d[0] == 0 and d[1] == 20 and 999 not in d and len(d) == 50
    assert P.space_timesteps(100, "10,5")[:2] == [0, 5]
    assert P.ddim_timesteps(1000, 10, "uniform") == list(range(0, 1000, 100))
    assert P.ddim_timesteps(1000, 10, "trailing")[-1] == 999
    q = P.ddim_timesteps(1000, 10, "quad")
    assert q[0] == 0 and len(q) == 10 and np.all(np.diff(np.diff(q)) >= -1)
    with pytest.raises(ValueError, match="kind"):
        P.ddim_timesteps(1000, 10, "bogus")
    with pytest.raises(ValueError, match="steps"):
        P.linear_betas(0)


@pytest.mark.parametrize("proc", CONTINUOUS, ids=IDS)
def test_log_snr_inverse_and_derivatives(proc):
    # mid-points of the DDPM segments (i + 1/2) / 1000, where the piecewise-linear discrete
    # processes are differentiable; h stays inside a segment.
    t = jnp.linspace(0.0205, 0.9805, 49)
    np.testing.assert_allclose(proc.t_from_log_snr(proc.log_snr(t)), t, atol=2e-5)
    # sigma_tilde inverse, and t=0 <-> sigma_tilde=0
    np.testing.assert_allclose(proc.t_from_sigma_tilde(proc.sigma_tilde(t)), t, atol=2e-5)
    assert float(proc.t_from_sigma_tilde(0.0)) == 0.0
    # closed-form derivatives against central differences of the marginals
    h = 2e-4
    fd = lambda f: (f(t + h) - f(t - h)) / (2 * h)
    np.testing.assert_allclose(proc.alpha_dot(t), fd(proc.alpha), rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose(proc.sigma_dot(t), fd(proc.sigma), rtol=2e-2, atol=2e-3)
    # g^2 from the generic formula 2 sigma sigma' - 2 f sigma^2 (base class, via jvp)
    generic = P.Process.diffusion_sq(proc, t)
    np.testing.assert_allclose(proc.diffusion_sq(t), generic, rtol=1e-3, atol=1e-5)


def test_sde_coefficients_match_score_sde():
    t = jnp.linspace(0.01, 1.0, 50)
    vp, svp, ve = P.VP(), P.SubVP(), P.VE()
    beta = 0.1 + t * 19.9
    np.testing.assert_allclose(vp.diffusion_sq(t), beta, rtol=1e-5)
    integral = 0.1 * t + 0.5 * 19.9 * t**2
    np.testing.assert_allclose(svp.diffusion_sq(t), beta * (1 - np.exp(-2 * integral)), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(svp.sigma(t)), 1 - np.exp(-integral), rtol=1e-5)
    s = 0.01 * (50 / 0.01) ** t
    np.testing.assert_allclose(ve.diffusion_sq(t), s**2 * 2 * np.log(50 / 0.01), rtol=1e-4)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_forward_sde_simulation_matches_marginals(name):
    """T16: Euler-Maruyama on dx = f x dt + g dw from x0 = 0.7 reproduces alpha, sigma.

    1e5 paths, 1000 steps: tolerance 3 standard errors plus an O(dt) discretisation allowance.
    """
    proc = {"vp": P.VP(), "subvp": P.SubVP(), "ve": P.VE()}[name]
    n, N = 100_000, 1000
    ts = jnp.linspace(0.0, 1.0, N + 1)

    @jax.jit
    def simulate(key):
        def body(x, inp):
            t, dt, k = inp
            f, g2 = proc.drift_coef(t), proc.diffusion_sq(t)
            return x + f * x * dt + jnp.sqrt(g2 * dt) * jax.random.normal(k, x.shape), None

        x0 = jnp.full((n,), 0.7)
        start = proc.sigma(0.0) * jax.random.normal(jax.random.key(1), (n,))  # VE's sigma_min
        x, _ = jax.lax.scan(body, x0 + start, (ts[:-1], jnp.diff(ts), jax.random.split(key, N)))
        return x

    x = np.asarray(simulate(jax.random.key(0)))
    mean, std = 0.7 * float(proc.alpha(1.0)), float(proc.sigma(1.0))
    se_mean, se_std = std / math.sqrt(n), std / math.sqrt(2 * n)
    assert abs(x.mean() - mean) < 3 * se_mean + 0.01 * std
    assert abs(x.std() - std) < 3 * se_std + 0.01 * std


def test_forward_chain_matches_discrete_marginal():
    """T2: iterate q(x_t | x_{t-1}) 1000 times on 2e5 GMM samples; mean/var vs closed form."""
    betas = jnp.asarray(P.linear_betas(1000), jnp.float32)
    proc = P.DiscreteVP.linear(1000)
    gmm = dj.analytic.GaussianMixture.create([0.3, 0.5, 0.2], [(-0.6, -0.3), (0.5, 0.4), (0.0, 0.8)],
                                             [0.1, 0.15, 0.05], proc)
    x0 = gmm.sample_data(jax.random.key(0), 200_000)

    @jax.jit
    def chain(x0, key):
        def body(x, inp):
            b, k = inp
            x = jnp.sqrt(1 - b) * x + jnp.sqrt(b) * jax.random.normal(k, x.shape)
            return x, (x.mean(0), x.var(0))  # per-step moments, not 1000 copies of x

        _, (means, variances) = jax.lax.scan(body, x0, (betas, jax.random.split(key, 1000)))
        idx = jnp.array([9, 99, 499, 999])
        return means[idx], variances[idx]

    means, variances = map(np.asarray, chain(x0, jax.random.key(1)))
    m0, v0 = np.asarray(x0).mean(0), np.asarray(x0).var(0)
    for mean, var, step in zip(means, variances, (10, 100, 500, 1000), strict=True):
        t = adapters.ddpm_index_to_t(step - 1, 1000)
        a, s = float(proc.alpha(t)), float(proc.sigma(t))
        # max abs error <= 0.005 (3-4 standard errors at 2e5 samples)
        assert np.max(np.abs(mean - a * m0)) < 0.005
        assert np.max(np.abs(var - (a**2 * v0 + s**2))) < 0.005


def test_grids():
    g = grids.uniform_grid(10, 1.0, 1e-3)
    assert g.shape == (11,) and float(g[0]) == 1.0 and abs(float(g[-1]) - 1e-3) < 1e-9
    # Karras grid on the EDM process: sigma = 80 t, EDM eq. 5 values, NFE bookkeeping N + 1 points
    edm = P.EDM()
    kg = grids.karras_grid(edm, 18)
    sig = grids.karras_sigmas(18)
    np.testing.assert_allclose(np.asarray(edm.sigma(kg)), sig, rtol=1e-5, atol=1e-7)
    assert sig[0] == 80.0 and abs(sig[17] - 0.002) < 1e-12 and sig[18] == 0.0
    # the same formula traced (the consistency loss draws i and N inside jit)
    traced = jax.jit(grids.karras_sigma)(jnp.arange(18), jnp.int32(18))
    np.testing.assert_allclose(traced, sig[:-1], rtol=2e-6)
    # the same sigma~ levels on VP
    vp = P.VP()
    kv = grids.karras_grid(vp, 10, sigma_min=0.01, sigma_max=100.0)
    np.testing.assert_allclose(np.asarray(vp.sigma_tilde(kv[:-1])),
                               grids.karras_sigmas(10, 0.01, 100.0)[:-1], rtol=1e-4)
    # log-SNR grid is uniform in lambda
    lg = grids.log_snr_grid(vp, 20, 1.0, 1e-3)
    lam = np.asarray(vp.log_snr(lg))
    np.testing.assert_allclose(np.diff(lam), np.full(20, np.diff(lam).mean()), rtol=2e-3)
    # quadratic grid is denser near data
    qg = np.asarray(grids.quadratic_grid(10))
    assert qg[0] == 1.0 and qg[-1] == 0.0 and np.all(np.diff(np.diff(qg)) > 0)
    # shift keeps end points, is monotone and pushes mass towards noise for shift > 1
    sg = np.asarray(grids.shift_grid(grids.uniform_grid(10), 3.0))
    assert sg[0] == 1.0 and sg[-1] == 0.0 and np.all(np.diff(sg) < 0) and sg[5] > 0.5
    # discrete grid through DDPM indices ends at t = 0
    dg = np.asarray(grids.discrete_grid([0, 500, 999], 1000))
    np.testing.assert_allclose(dg, [1.0, 0.501, 0.001, 0.0], rtol=1e-6)
    for bad in ([0.5], [[1.0, 0.0]], [1.2, 0.0], [1.0, 0.5, 0.7]):
        with pytest.raises(ValueError, match="grid"):
            grids.validate_grid(np.asarray(bad))
    with pytest.raises(ValueError, match="steps"):
        grids.uniform_grid(0)


def test_adapters_round_trip():
    T = 1000
    i = jnp.arange(T)
    np.testing.assert_array_equal(adapters.t_to_ddpm_index(adapters.ddpm_index_to_t(i, T), T), i)
    # DDPM index i uses alpha_bar_i of the table
    proc = P.DiscreteVP.linear(T)
    np.testing.assert_allclose(np.log(np.asarray(proc.alpha(adapters.ddpm_index_to_t(i, T)))) * 2,
                               np.asarray(proc.log_alpha_bar), atol=1e-5)
    for proc in (P.EDM(), P.VP(), P.VE(), P.Linear()):
        sig = jnp.asarray([0.05, 0.5, 5.0])
        sig = jnp.clip(sig, proc.sigma_tilde(0.001), proc.sigma_tilde(0.999))
        np.testing.assert_allclose(adapters.t_to_sigma(proc, adapters.sigma_to_t(proc, sig)), sig,
                                   rtol=1e-4)
    t = jnp.asarray([0.0, 0.25, 1.0])
    np.testing.assert_allclose(adapters.flip_time(adapters.flip_time(t)), t)
    # SiT: x_t = t x1 + (1 - t) x0 with data x1; ours: alpha = 1 - t, so alpha(flip(t_sit)) = t_sit
    np.testing.assert_allclose(P.Linear().alpha(adapters.flip_time(t)), t)
    # NCSN: label 0 is the largest sigma; VE(sigma_min=0.01, sigma_max=1) reproduces the levels
    L = 10
    ve = P.VE(sigma_min=0.01, sigma_max=1.0)
    levels = np.exp(np.linspace(np.log(1.0), np.log(0.01), L))
    np.testing.assert_allclose(ve.sigma(adapters.ncsn_label_to_t(jnp.arange(L), L)), levels, rtol=1e-5)
    np.testing.assert_array_equal(
        adapters.t_to_ncsn_label(adapters.ncsn_label_to_t(jnp.arange(L), L), L), np.arange(L))
    # model-input conversions
    edm = P.EDM()
    tt = jnp.asarray([0.5])
    np.testing.assert_allclose(adapters.time_input("edm_cnoise", edm)(tt), 0.25 * np.log(40.0), rtol=1e-6)
    np.testing.assert_allclose(adapters.time_input("ddpm_index")(jnp.asarray([0.001, 1.0])), [0, 999])
    np.testing.assert_allclose(adapters.time_input("iddpm_rescaled", num_timesteps=4000)(
        jnp.asarray([1.0])), [3999 * 0.25])
    with pytest.raises(ValueError, match="time_input"):
        adapters.time_input("nope")
    with pytest.raises(ValueError, match="process"):
        adapters.time_input("sigma")


def test_processes_are_traceable_pytrees():
    """Float hyper-parameters are leaves: a jitted function of the process does not recompile."""
    traces = []

    @jax.jit
    def f(proc, t):
        traces.append(1)
        return proc.sigma(t)

    a = f(P.VE(0.01, 50.0), 0.5)
    b = f(P.VE(0.02, 80.0), 0.5)
    assert len(traces) == 1 and float(a) != float(b)
    with pytest.raises(ValueError, match="betas"):
        P.DiscreteVP.from_betas([0.5, 1.5])


def test_linear_sigma_min_default_is_bit_identical_and_closed_forms():
    """``Linear()`` (sigma_min = 0) gives exactly the plain rectified-flow values, eagerly and
    with the process traced under jit; ``sigma_min > 0`` follows its closed forms."""
    t = jnp.linspace(0.0, 1.0, 1001)
    lam = jnp.linspace(-30.0, 30.0, 1001)
    plain = (1.0 - t, t, jax.nn.sigmoid(-0.5 * lam), jnp.ones_like(t), -jnp.ones_like(t))

    def values(proc, t, lam):
        return (proc.alpha(t), proc.sigma(t), proc.t_from_log_snr(lam), proc.sigma_dot(t),
                proc.alpha_dot(t))

    for got in (values(P.Linear(), t, lam), jax.jit(values)(P.Linear(), t, lam)):
        for g, w in zip(got, plain, strict=True):
            np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(P.Linear().log_snr(t), P.Process.log_snr(P.Linear(), t))
    m = 0.2
    proc = P.Linear(sigma_min=m)
    np.testing.assert_allclose(proc.sigma(t), m + (1 - m) * t, rtol=1e-6, atol=1e-7)
    assert float(proc.sigma(1.0)) == 1.0 and abs(float(proc.sigma(0.0)) - m) < 1e-7
    np.testing.assert_allclose(proc.log_snr(t[1:-1]),
                               2 * np.log((1 - t[1:-1]) / (m + (1 - m) * t[1:-1])), rtol=1e-5,
                               atol=1e-5)
    # lambda(0) = -2 log(sigma_min) is the largest log-SNR: above it the inverse clips to t = 0
    np.testing.assert_allclose(proc.t_from_log_snr(-2 * np.log(m)), 0.0, atol=1e-6)
    assert float(proc.t_from_log_snr(50.0)) == 0.0 and float(proc.t_from_log_snr(-80.0)) == 1.0
    # a traced leaf: a new sigma_min does not recompile
    traces = []

    @jax.jit
    def f(proc, t):
        traces.append(1)
        return proc.sigma(t)

    assert float(f(P.Linear(0.1), 0.0)) != float(f(P.Linear(0.3), 0.0)) and len(traces) == 1
