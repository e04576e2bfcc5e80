"""Small reproductions that need no training: exact denoisers of Gaussian mixtures and of
Gaussians stand in for a trained network, so what is measured is the sampler or estimator
the paper's claim is about, free of model error.

Each function takes ``tiny`` (a seconds-long version for the test suite) and a seed, and
returns ``{"rows": [...], "measured": str, "verdict": "agrees" | "disagrees" | ...,
"why": str}``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import diffjax as dj
from diffjax import samplers as S

# The 2-D test mixture of the test suite: three components with data inside [-1, 1].
WEIGHTS = (0.3, 0.5, 0.2)
MEANS = ((-0.6, -0.3), (0.5, 0.4), (0.0, 0.8))
STDS = (0.10, 0.15, 0.05)


def _sw1(x, ref):
    return float(dj.analytic.sliced_wasserstein(np.asarray(x), np.asarray(ref)))


def ddim_eta(tiny: bool = False, seed: int = 0) -> dict:
    """DDIM (Song, Meng & Ermon 2021), Table 1: at few steps the deterministic sampler
    (eta = 0) beats the stochastic ones (eta = 1 is DDPM's sampler); the gap closes as S
    grows. Here: SW1 of samples to exact draws of a 2-D mixture under its exact denoiser
    (DDPM's linear 1000-step table), so only the sampler's discretisation error counts."""
    proc = dj.DiscreteVP.linear(1000)
    gmm = dj.analytic.GaussianMixture.create(WEIGHTS, MEANS, STDS, proc)
    n = 2000 if tiny else 20000
    steps = (10, 20) if tiny else (10, 20, 50, 100)
    etas = (0.0, 1.0) if tiny else (0.0, 0.5, 1.0)
    ref = gmm.sample_data(jax.random.key(10_000 + seed), 50_000 if not tiny else 10_000)
    floor = _sw1(gmm.sample_data(jax.random.key(20_000 + seed), n), ref)
    rows = []
    for s in steps:
        grid = dj.discrete_grid(dj.processes.space_timesteps(1000, f"ddim{s}"), 1000)
        row = {"S": s}
        for eta in etas:
            x = S.sample(gmm, jax.random.key(seed), (n, 2), grid, S.DDIM(eta=eta),
                         process=proc, prediction="x0")
            row[f"eta={eta:g}"] = round(_sw1(x, ref), 4)
        rows.append(row)
    ok = all(r["eta=0"] < r["eta=1"] for r in rows)
    return {"rows": rows, "floor": round(floor, 4),
            "measured": "SW1 eta=0 / eta=1: " + ", ".join(
                f"S={r['S']}: {r['eta=0']} / {r['eta=1']}" for r in rows)
            + f" (two-sample floor {floor:.4f})",
            "verdict": "agrees" if ok else "disagrees",
            "why": "eta = 0 has the lower SW1 at every S" if ok else
                   "eta = 1 was better at some S"}


def edm_samplers(tiny: bool = False, seed: int = 0) -> dict:
    """EDM (Karras et al. 2022), Fig. 2 / Sec. 3: Heun's 2nd-order method on the Karras
    (rho = 7) grid reaches a given error with far fewer network evaluations than Euler.
    Here: the RMS distance of each sampler's endpoint from a 1024-step Heun solution of the
    same probability-flow ODE, from the same noise, against NFE."""
    proc = dj.EDM()
    gmm = dj.analytic.GaussianMixture.create(WEIGHTS, MEANS, STDS, proc)
    n = 512 if tiny else 4096
    key = jax.random.key(seed)
    x_init = jax.random.normal(jax.random.key(seed + 1), (n, 2)) * 80.0

    def run(step, num):
        return np.asarray(S.sample(gmm, key, (n, 2), dj.karras_grid(proc, num), step,
                                   process=proc, prediction="x0", x_init=x_init))

    exact = run(S.Heun(), 256 if tiny else 1024)
    rows = []
    for num in ((16, 32) if tiny else (8, 16, 32, 64)):
        e = np.sqrt(np.mean((run(S.Euler(), num) - exact) ** 2))
        h = np.sqrt(np.mean((run(S.Heun(), num) - exact) ** 2))
        # Heun's last step is an Euler step to sigma = 0: 2 num - 1 evaluations
        rows.append({"steps": num, "Euler NFE": num, "Euler RMS": float(f"{e:.3g}"),
                     "Heun NFE": 2 * num - 1, "Heun RMS": float(f"{h:.3g}")})
    # equal-NFE comparison: Heun with N steps (2N - 1 NFE) vs Euler with 2N steps
    pairs = [(rows[i]["Heun RMS"], rows[i + 1]["Euler RMS"]) for i in range(len(rows) - 1)]
    # the paper's regime is ~35 NFE: budgets of at least 31 NFE decide the verdict (with
    # 8 Heun steps the narrow modes are not yet resolved; the row is reported all the same)
    ok = all(h < e for (h, e), r in zip(pairs, rows, strict=False) if r["steps"] >= 16)
    return {"rows": rows,
            "measured": "RMS error vs a 1024-step solution, Heun at 2N-1 NFE / Euler at 2N "
                        "NFE: " + ", ".join(f"{h:.3g} / {e:.3g}" for h, e in pairs),
            "verdict": "agrees" if ok else "disagrees",
            "why": "Heun is more accurate than Euler at equal NFE from 31 NFE on" if ok
                   else "Euler matched Heun at some budget of 31 NFE or more"}


def ncsn_annealing(tiny: bool = False, seed: int = 0) -> dict:
    """NCSN (Song & Ermon 2019), Fig. 3: Langevin dynamics with exact scores of the mixture
    1/5 N((-5,-5), I) + 4/5 N((5,5), I) gets the modes' weights wrong (the modes do not mix),
    annealed Langevin over a geometric sigma ladder recovers them. Measured: the fraction of
    samples in the (-5, -5) mode (exact: 0.2)."""
    # sigma geometric from 20 to 1 (the last level's noise leaves the weights unchanged);
    # a_i = eps (sigma_i / sigma_L)^2 keeps a_i / sigma_i^2 fixed, as the paper's schedule
    proc = dj.VE(sigma_min=1.0, sigma_max=20.0)
    gmm = dj.analytic.GaussianMixture.create((0.2, 0.8), ((-5.0, -5.0), (5.0, 5.0)), 1.0, proc)
    n = 1000 if tiny else 10000
    x0 = jax.random.uniform(jax.random.key(seed + 2), (n, 2), minval=-8.0, maxval=8.0)
    levels, each = (5, 40) if tiny else (10, 100)
    grid = dj.uniform_grid(levels - 1, 1.0, 0.0)
    step = S.AnnealedLangevin(step_size=0.1, sigma_last=1.0, n_steps_each=each)
    xa = np.asarray(S.sample(gmm, jax.random.key(seed), (n, 2), grid, step, process=proc,
                             prediction="x0", x_init=x0))
    # plain Langevin: as many updates, all at the last level (the same target distribution)
    a = 0.1
    t0 = jnp.zeros((n,))

    def body(x, k):
        z = jax.random.normal(k, x.shape)
        return x + a * gmm.score(x, t0) + jnp.sqrt(2 * a) * z, None

    keys = jax.random.split(jax.random.key(seed + 3), levels * each)
    xp, _ = jax.lax.scan(body, x0, keys)
    frac = lambda x: float(np.mean(np.asarray(x)[:, 0] < 0))
    fa, fp = frac(xa), frac(xp)
    ok = abs(fa - 0.2) < abs(fp - 0.2) and abs(fa - 0.2) < 0.05
    return {"rows": [{"sampler": "Langevin (exact data score)", "weight of (-5,-5) mode":
                      round(fp, 3)},
                     {"sampler": f"annealed Langevin ({levels} levels x {each})",
                      "weight of (-5,-5) mode": round(fa, 3)},
                     {"sampler": "exact", "weight of (-5,-5) mode": 0.2}],
            "measured": f"weight of the (-5,-5) mode: Langevin {fp:.3f}, annealed {fa:.3f} "
                        "(exact 0.2)",
            "verdict": "agrees" if ok else "disagrees",
            "why": "annealing recovers the mode weights, plain Langevin keeps the uniform "
                   "initialisation's split" if ok else "annealing did not recover 0.2"}


def score_sde_likelihood(tiny: bool = False, seed: int = 0) -> dict:
    """Score SDE (Song et al. 2021), Sec. 4.3 / App. D.2: the probability-flow ODE gives
    exact log-likelihoods. With the exact denoiser of Gaussian data the ODE's log p(x) must
    equal the closed-form density; measured: the error in bits/dim, VP and sub-VP, exact
    divergence and Hutchinson's estimator."""
    d = 4
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=d) * 0.5
    a = rng.normal(size=(d, d)) * 0.3
    cov = a @ a.T + 0.2 * np.eye(d)
    x = rng.multivariate_normal(mean, cov, size=64 if tiny else 512).astype(np.float32)
    inv = np.linalg.inv(cov)
    diff = x - mean
    exact = -0.5 * (np.einsum("bi,ij,bj->b", diff, inv, diff) + np.linalg.slogdet(cov)[1]
                    + d * np.log(2 * np.pi))
    rows = []
    for name, proc in (("VP", dj.VP()), ("sub-VP", dj.SubVP())):
        model = dj.analytic.Gaussian.create(mean, cov, proc)
        for div in ("exact", "hutchinson"):
            res = dj.likelihood.log_likelihood(model, jnp.asarray(x), jax.random.key(seed),
                                               process=proc, prediction="x0", divergence=div)
            err = np.abs(np.asarray(res.logp) - exact) / (d * np.log(2))
            bias = abs(np.mean(np.asarray(res.logp) - exact)) / (d * np.log(2))
            rows.append({"process": name, "divergence": div,
                         "mean |error| (bits/dim)": float(f"{err.mean():.2g}"),
                         "error of the mean (bits/dim)": float(f"{bias:.2g}")})
    # The paper reports bits/dim to 0.01. The residual here is not solver error (rtol 1e-5
    # -> 1e-6 leaves it unchanged) but the N(0, I) prior against the true marginal at t = 1,
    # whose mean alpha(1) mu (alpha(1) = 0.0066 for VP and sub-VP) the prior ignores.
    ok = all(r["mean |error| (bits/dim)"] < 0.01 for r in rows if r["divergence"] == "exact")
    return {"rows": rows,
            "measured": "; ".join(f"{r['process']} {r['divergence']}: "
                                  f"{r['mean |error| (bits/dim)']:.2g} bits/dim" for r in rows),
            "verdict": "agrees" if ok else "disagrees",
            "why": "with the exact divergence the ODE likelihood matches the closed-form "
                   "density to < 0.01 bits/dim (the paper's precision; the residual is the "
                   "N(0, I) prior's mismatch at t = 1, not solver error); Hutchinson's "
                   "estimate is unbiased only on average over probes" if ok else
                   "the ODE likelihood missed the closed form by >= 0.01 bits/dim"}
