"""Float64 checks of the sampling core: DDIM against a NumPy textbook reference, and the
empirical convergence order of every deterministic solver against the closed-form flow of
Gaussian data (diffrax ``test_ode_order`` style: slope of log error vs log step count over two
decades of step count)."""

import jax
import numpy as np
import pytest

import diffjax as dj
from diffjax import samplers as S
from diffjax.processes import VP, DiscreteVP

WEIGHTS = np.array([0.3, 0.5, 0.2])
MEANS = np.array([[-0.6, -0.3], [0.5, 0.4], [0.0, 0.8]])
STDS = np.array([0.10, 0.15, 0.05])


def _np_mixture_x0(x, alpha, sigma):
    """E[x0 | alpha x0 + sigma eps = x] for the isotropic mixture, NumPy float64 (written here
    from Bayes' rule, independently of diffjax.analytic)."""
    var = alpha**2 * STDS**2 + sigma**2  # (K,)
    diff = x[:, None, :] - alpha * MEANS[None]  # (B, K, d)
    logp = np.log(WEIGHTS) - 0.5 * (diff**2).sum(-1) / var - np.log(var)  # d = 2
    r = np.exp(logp - logp.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    post = MEANS[None] + (alpha * STDS**2 / var)[None, :, None] * diff
    return (r[..., None] * post).sum(1)


def test_ddim_eta0_equals_float64_textbook_reference():
    """DDIM (Song et al. 2021, eq. 12) with eta = 0 on DDPM's linear schedule (T = 1000), the
    50-step sub-sequence tau = 0, 20, ..., 980 then x0: the library in float64 equals the
    textbook recursion ``x_prev = sqrt(a_prev) (x - sqrt(1 - a) eps) / sqrt(a) +
    sqrt(1 - a_prev) eps`` run here in NumPy (``a_prev = 1`` after the last index), to 1e-10."""
    T = 1000
    betas = np.linspace(1e-4, 0.02, T)
    abar = np.cumprod(1.0 - betas)
    seq = list(range(0, T, 20))
    x_T = np.random.default_rng(1).normal(size=(256, 2))
    x = x_T.copy()
    for k in reversed(range(len(seq))):
        a = abar[seq[k]]
        a_prev = abar[seq[k - 1]] if k > 0 else 1.0
        eps = (x - np.sqrt(a) * _np_mixture_x0(x, np.sqrt(a), np.sqrt(1 - a))) / np.sqrt(1 - a)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
    with jax.enable_x64(True):
        proc = DiscreteVP.linear(T)
        gmm = dj.analytic.GaussianMixture.create(WEIGHTS, MEANS, STDS, proc)
        ours = np.asarray(dj.sample(gmm, jax.random.key(0), x_T.shape, dj.discrete_grid(seq, T),
                                    S.DDIM(0.0), process=proc, prediction="x0", x_init=x_T,
                                    mesh=None))
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, x, rtol=1e-10, atol=1e-10)


def test_float64_request_without_x64_is_a_clear_error():
    proc = VP()
    gmm = dj.analytic.GaussianMixture.create(WEIGHTS, MEANS, STDS, proc)
    with pytest.raises(ValueError, match="jax_enable_x64"):
        dj.sample(gmm, jax.random.key(0), (2, 2), dj.uniform_grid(2), S.Euler(), process=proc,
                  prediction="x0", dtype=np.float64)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        dj.sample(gmm, jax.random.key(0), (2, 2), dj.uniform_grid(2), S.Euler(), process=proc,
                  prediction="x0", dtype=np.int32)


# name: (step, step counts over two decades (one and a half for the fourth-order ones, whose
# finest error would otherwise sink below float64 rounding), accepted order window).
# Multistep solvers start with lower-order steps (k-diffusion's and diffusers' start): a
# first-order first step leaves an O(h^2) global error, so DPM-Solver++(3M) is second order
# over these decades and LMS(4) falls from ~3.7 towards 2 as h -> 0; UniPC's corrector lifts
# its start by one order. Measured on this problem: see experiments/results/sampler_orders_cpu.md.
ORDER_CASES = {
    "euler": (S.Euler(), (10, 100, 1000), (0.9, 1.1)),
    "heun": (S.Heun(), (8, 80, 800), (1.9, 2.2)),
    "rk4": (S.RK4(), (4, 20, 100), (3.7, 4.2)),
    "dpmpp_2m": (S.DPMSolverPP2M(), (8, 80, 800), (1.7, 2.2)),
    "dpm_2": (S.DPMSolver2(), (8, 80, 800), (1.9, 2.2)),
    "dpmpp_2s": (S.DPMSolverPP2SAncestral(eta=0.0), (8, 80, 800), (1.85, 2.15)),
    "dpmpp_2m_sde_heun": (S.DPMSolverPP2MSDE(eta=0.0, solver_type="heun"), (8, 80, 800),
                          (1.85, 2.15)),
    "lms4": (S.LMS(), (10, 40, 160), (3.0, 4.2)),
    "dpmpp_3m_sde": (S.DPMSolverPP3MSDE(eta=0.0), (8, 40, 200), (1.9, 3.2)),
    "unipc2": (S.UniPC(2), (8, 40, 200), (2.4, 3.2)),
    "unipc3": (S.UniPC(3), (8, 40, 200), (2.9, 4.2)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ORDER_CASES))
def test_convergence_order_float64(name):
    """Gaussian data N(mu, diag v) on VP: the PF-ODE flow is closed form,
    ``x_s = alpha_s mu + sqrt(alpha_s^2 v + sigma_s^2) (x_t - alpha_t mu) / sqrt(alpha_t^2 v +
    sigma_t^2)``. Log-SNR-uniform grids from t = 1 to 0.01, float64 throughout; the fitted
    slope of log RMS error against log step count must lie in the window, and errors must
    decrease."""
    step, ns, (lo, hi) = ORDER_CASES[name]
    mu, v = np.array([0.3, -0.5]), np.array([0.09, 1.0])
    x = np.random.default_rng(0).normal(size=(64, 2))
    with jax.enable_x64(True):
        proc = VP()
        gauss = dj.analytic.Gaussian.create(mu, np.diag(v), proc)
        a1, s1, a0, s0 = (float(f(t)) for f, t in ((proc.alpha, 0.01), (proc.sigma, 0.01),
                                                     (proc.alpha, 1.0), (proc.sigma, 1.0)))
        exact = a1 * mu + np.sqrt(a1**2 * v + s1**2) * (x - a0 * mu) / np.sqrt(a0**2 * v + s0**2)
        errs = []
        for n in ns:
            y = np.asarray(dj.sample(gauss, jax.random.key(0), x.shape,
                                     dj.log_snr_grid(proc, n, 1.0, 0.01), step, process=proc,
                                     prediction="x0", x_init=x, mesh=None))
            assert y.dtype == np.float64
            errs.append(np.sqrt(np.mean((y - exact) ** 2)))
    assert np.all(np.diff(errs) < 0), errs
    order = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert lo <= order <= hi, (order, errs)


def test_float64_oracle_in_a_float32_run_and_dpmpp_2m_in_float64():
    """Regression (issue 14): DPM-Solver++(2M) crashed under x64 when the model returned
    float64 (scan carry float32 ``x0_prev``). A float64 oracle in a float32 run gives float32
    samples (predictions cast to the state's dtype), and a float64 run stays float64 and agrees
    with the float32 one to float32 accuracy."""
    x = np.random.default_rng(0).normal(size=(8, 2))
    with jax.enable_x64(True):
        proc = VP()
        gmm = dj.analytic.GaussianMixture.create(WEIGHTS, MEANS, STDS, proc)
        run = lambda xi: np.asarray(dj.sample(gmm, jax.random.key(0), x.shape,
                                              dj.karras_grid(proc, 10), S.DPMSolverPP2M(),
                                              process=proc, prediction="x0", x_init=xi,
                                              mesh=None))
        y32, y64 = run(x.astype(np.float32)), run(x)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
