"""Empirical convergence order of every deterministic diffjax solver on the analytic mixture.

Float64 (``jax.enable_x64``), VP process, the 3-component 2-D Gaussian mixture with component
std 0.3, log-SNR-uniform grids from t = 1 to t = 0.01, 64 shared starting points; the
reference is RK4 with 2048 steps. Prints a table of RMS errors per step count and the fitted
orders (slope of log error vs log N over the finest three and over all step counts), and
writes it to ``experiments/results/sampler_orders_cpu.{md,json}``.

    python experiments/sampler_orders.py
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

import diffjax as dj
from diffjax import samplers as S
from diffjax.processes import VP

NS = (8, 16, 32, 64, 128, 256)
STEPS = {
    "euler": S.Euler(), "heun": S.Heun(), "rk4": S.RK4(), "dpm_2": S.DPMSolver2(),
    "lms (order 4)": S.LMS(), "dpmpp_2m": S.DPMSolverPP2M(),
    "dpmpp_2s (eta=0)": S.DPMSolverPP2SAncestral(eta=0.0),
    "dpmpp_2m_sde midpoint (eta=0)": S.DPMSolverPP2MSDE(eta=0.0),
    "dpmpp_2m_sde heun (eta=0)": S.DPMSolverPP2MSDE(eta=0.0, solver_type="heun"),
    "dpmpp_3m_sde (eta=0)": S.DPMSolverPP3MSDE(eta=0.0),
    "unipc (order 2)": S.UniPC(2), "unipc (order 3)": S.UniPC(3),
}
OUT = os.path.join(os.path.dirname(__file__), "results", "sampler_orders_cpu")


def main():
    rows = {}
    with jax.enable_x64(True):
        proc = VP()
        gmm = dj.analytic.GaussianMixture.create((0.3, 0.5, 0.2),
                                                 ((-0.6, -0.3), (0.5, 0.4), (0.0, 0.8)),
                                                 (0.3, 0.3, 0.3), proc)
        x = np.random.default_rng(0).normal(size=(64, 2))

        def run(step, n):
            return np.asarray(dj.sample(gmm, jax.random.key(0), x.shape,
                                        dj.log_snr_grid(proc, n, 1.0, 0.01), step, process=proc,
                                        prediction="x0", x_init=x, mesh=None))

        ref = run(S.RK4(), 2048)
        for name, step in STEPS.items():
            t0 = time.time()
            errs = [float(np.sqrt(np.mean((run(step, n) - ref) ** 2))) for n in NS]
            fit = lambda k: float(-np.polyfit(np.log(NS[-k:]), np.log(errs[-k:]), 1)[0])
            rows[name] = {"errors": errs, "order_finest3": fit(3), "order_all": fit(len(NS)),
                          "nfe_per_step": step.nfe}
            print(f"{name:32s}", " ".join(f"{e:.2e}" for e in errs),
                  f"| {fit(3):.2f} {fit(len(NS)):.2f} ({time.time() - t0:.0f}s)", flush=True)
    lines = ["# Convergence orders (float64, analytic mixture, VP, log-SNR grid 1 -> 0.01)", "",
             "RMS error against RK4-2048 at N steps; order = slope of log error vs log N.", "",
             "| sampler | " + " | ".join(f"N={n}" for n in NS) + " | order (finest 3) | order (all) |",
             "|---" * (len(NS) + 3) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{e:.2e}" for e in r["errors"])
                     + f" | {r['order_finest3']:.2f} | {r['order_all']:.2f} |")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(OUT + ".json", "w") as f:
        json.dump({"steps": NS, "rows": rows}, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
