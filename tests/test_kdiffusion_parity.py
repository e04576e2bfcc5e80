"""Float64 parity of diffjax's samplers with k-diffusion on an exact Gaussian-mixture denoiser.

The reference outputs were recorded by ``experiments/fixtures/record_kdiffusion_parity.py``
(k-diffusion 0.1.1.post1's own ``sampling.py``, torch float64, the mixture's denoiser written
in torch there). Here the same mixture is :class:`diffjax.analytic.GaussianMixture` on EDM's
process, Karras grids of 5, 18 and 50 steps, the same starting points. The stochastic samplers
were fed diffjax's own noise draws through k-diffusion's ``noise_sampler``, so they must match
draw for draw too. NFE is counted with a host callback in the model.
"""

import json
import os

import jax
import numpy as np
import pytest

import diffjax as dj
from diffjax import samplers as S
from diffjax.processes import EDM

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "kdiffusion_parity.npz")

STEPS = {
    "euler": lambda: S.Euler(),
    "heun": lambda: S.Heun(),
    "dpm_2": lambda: S.DPMSolver2(),
    "lms": lambda: S.LMS(),
    "dpmpp_2m": lambda: S.DPMSolverPP2M(),
    "dpmpp_2s_eta0": lambda: S.DPMSolverPP2SAncestral(eta=0.0),
    "dpmpp_2s_ancestral": lambda: S.DPMSolverPP2SAncestral(eta=1.0),
    "dpmpp_2m_sde_midpoint": lambda: S.DPMSolverPP2MSDE(eta=1.0, solver_type="midpoint"),
    "dpmpp_2m_sde_heun": lambda: S.DPMSolverPP2MSDE(eta=1.0, solver_type="heun"),
    "dpmpp_3m_sde": lambda: S.DPMSolverPP3MSDE(eta=1.0),
}
DETERMINISTIC = ("euler", "heun", "dpm_2", "lms", "dpmpp_2m", "dpmpp_2s_eta0")

_CALLS = []


def _count():
    _CALLS.append(1)


def _counting_model(gmm, x, t, cond=None):
    # one host callback per evaluation of the whole batch (module-level functions: the
    # driver's compile key stays the same across calls)
    jax.debug.callback(_count)
    return gmm(x, t, cond)


def _run_cases(stochastic: bool):
    """Run the recorded cases of one kind in float64; returns {case: (ours, theirs, nfe_ours,
    nfe_theirs)} and, for the stochastic kind, the draws the driver made at each grid."""
    data = np.load(FIXTURE)
    meta = json.loads(str(data["meta"]))
    assert meta["k_diffusion"] == "0.1.1.post1"
    out, draws = {}, {}
    with jax.enable_x64(True):
        proc = EDM(sigma_min=meta["sigma_min"], sigma_max=meta["sigma_max"], rho=meta["rho"])
        gmm = dj.analytic.GaussianMixture.create(meta["weights"], meta["means"], meta["stds"],
                                                 proc)
        model = jax.tree_util.Partial(_counting_model, gmm)
        x_init = data["z"] * meta["sigma_max"]
        for case, info in meta["cases"].items():
            name = case.rsplit("_", 1)[0]
            if (name not in DETERMINISTIC) != stochastic:
                continue
            grid = dj.karras_grid(proc, info["steps"])
            assert grid.dtype == np.float64
            _CALLS.clear()
            y = np.asarray(dj.sample(model, jax.random.key(meta["key"]), x_init.shape, grid,
                                     STEPS[name](), process=proc, prediction="x0",
                                     x_init=x_init, mesh=None))
            jax.effects_barrier()
            assert y.dtype == np.float64
            out[case] = (y, data[case], len(_CALLS), info["nfe"])
        if stochastic:
            # the driver's draws, as a step sees them (ctx.normal), at every step of each grid
            for n in meta["steps"]:
                def noise(_, n=n):
                    keys = S.per_sample_keys(jax.random.key(meta["key"]), x_init.shape[0])
                    ctx = lambda i: S.StepContext(None, None, jax.vmap(
                        jax.random.fold_in, (0, None))(keys, i + 1), i, n, False, None)
                    return jax.numpy.stack([ctx(i).normal(jax.numpy.zeros(x_init.shape, np.float32))
                                            for i in range(n)])
                draws[n] = (np.asarray(jax.jit(noise)(0)), data[f"noise_{n}"])
    return out, draws


@pytest.fixture(scope="module")
def deterministic():
    return _run_cases(stochastic=False)[0]


@pytest.fixture(scope="module")
def stochastic():
    return _run_cases(stochastic=True)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.sqrt(np.mean(b**2)))


def test_deterministic_samplers_match_kdiffusion_to_1e_10(deterministic):
    """Euler, Heun, DPM-Solver-2, LMS (order 4), DPM-Solver++(2M) and DPM-Solver++(2S) with
    eta = 0 at 5, 18 and 50 Karras steps: max error / RMS of k-diffusion's result <= 1e-10,
    and the same number of denoiser evaluations."""
    assert len(deterministic) == 3 * len(DETERMINISTIC)
    errs = {c: _rel(*v[:2]) for c, v in deterministic.items()}
    assert max(errs.values()) <= 1e-10, errs
    nfe = {c: (v[2], v[3]) for c, v in deterministic.items()}
    assert all(a == b for a, b in nfe.values()), nfe


@pytest.mark.slow
def test_stochastic_samplers_match_kdiffusion_with_the_same_noise(stochastic):
    """DPM-Solver++(2S) ancestral, DPM-Solver++(2M) SDE (midpoint and heun) and
    DPM-Solver++(3M) SDE with eta = 1, fed the driver's draws, at 5, 18 and 50 steps.

    The recorded draws were made by XLA with its default optimisations; this suite compiles
    with ``JAX_DISABLE_MOST_OPTIMIZATIONS=1``, which moves some float32 normal draws by an ulp
    (measured: 2.4e-7 relative on the samples). So the draws are checked to float32 rounding
    and the samples to 1e-5 (measured 1.5e-6; any error in a formula is O(1e-2)); the NFE
    exactly. With bit-identical draws the samples agree to ~1e-14 (checked when recording).
    """
    parity, draws = stochastic
    for n, (ours, theirs) in draws.items():
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6, err_msg=f"draws, N={n}")
    assert len(parity) == 3 * 4
    errs = {c: _rel(*v[:2]) for c, v in parity.items()}
    assert max(errs.values()) <= 1e-5, errs
    assert {c: v[2] for c, v in parity.items()} == {c: v[3] for c, v in parity.items()}
