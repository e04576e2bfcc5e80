"""Sohl-Dickstein et al. 2015 on the 2-D swiss roll: the bound K, samples, and DDPM beside it.

Sohl-Dickstein, Weiss, Maheswaranathan, Ganguli, "Deep Unsupervised Learning using
Nonequilibrium Thermodynamics", ICML 2015: Fig. 1 (forward and reverse trajectories on the
swiss roll) and Table 1 (K = 2.35 bits, K - L_null = 4.45 bits on the swiss roll).

Runs, each built from a config by :func:`diffjax.run.build.build` (the code path of
``python -m diffjax train``) and trained with the library's train step, Adam 1e-3 with cosine
decay, batch 256 of the 100k-point ``toy:swiss_roll`` training set:

* ``sohl_dickstein``: the paper's model (configs/sohl_dickstein_swissroll.py: T = 40, MLP with
  temporal bump readout for the mean and diagonal variance, beta_{2..T} learned, beta_1 fixed),
  trained by maximising K (all 39 KL terms per example);
* with ``--fixed-beta``, the same with the schedule frozen at the baseline (the reference
  code's behaviour);
* DDPM (Ho et al. 2020): diffjax's plain diffusion, L_simple (eps prediction), a ToyMLP, the
  same T = 40 and baseline schedule, ancestral sampling with sigma^2 = beta_t. Its K is
  evaluated with the same estimator (its reverse kernel: the posterior mean at the predicted
  x0 with variance beta_tilde_t or beta_t, the same fixed last step).

Reported: K in bits on 20,000 held-out points (the sum of all KL terms, each with one x^t draw;
standard error over points); K - L_null with L_null the log-likelihood of the identity-covariance
Gaussian (the reference code's null model; the roll has unit second moment per coordinate, so
this is also the best isotropic Gaussian); SW1 (:func:`diffjax.analytic.sliced_wasserstein`) of
10,000 samples to 10,000 held-out points, beside the SW1 of two held-out draws (noise floor).
Writes experiments/results/sohl_dickstein_swissroll_cpu.{md,json} and a Fig. 1-style PNG
(forward trajectory on the top row, the learned reverse trajectory below, at t = 0, T/2, T).

Usage:
  python experiments/sohl_dickstein_swissroll.py          # ~4 CPU-minutes (3000 steps)
  python experiments/sohl_dickstein_swissroll.py --tiny   # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import diffjax as dj
from diffjax import train as T
from diffjax.data import toy
from diffjax.losses import sohl_dickstein as sdl
from diffjax.methods.sohl_dickstein import kernel_fn, model_betas, sohl_dickstein_sample
from diffjax.run.build import build

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
NUM_STEPS = 40
PAPER = {"K_bits": 2.35, "K_minus_Lnull_bits": 4.45}


def sd_config(learn_beta: bool, steps: int, batch: int):
    from importlib import util

    spec = util.spec_from_file_location("sd_cfg", ROOT / "configs" / "sohl_dickstein_swissroll.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.model.learn_beta = bool(learn_beta)
    return _common(c, steps, batch)


def ddpm_config(steps: int, batch: int):
    c = ml_collections.ConfigDict()
    c.process = dict(name="sohl_dickstein", num_steps=NUM_STEPS)
    c.model = dict(name="mlp", dim=2, width=128, depth=3, time_input="ddpm_index",
                   time_scale=1.0, prediction="eps")
    c.loss = dict(name="ddpm")
    c.sample = dict(sampler="ddpm", step=dict(variance="large"), grid="discrete",
                    num_steps=NUM_STEPS)
    c.ema = {}
    return _common(c, steps, batch)


def _common(c, steps, batch):
    c.seed = 0
    c.data = dict(name="in-memory swiss roll", batch_size=int(batch))
    c.optim = dict(name="adam", lr=1e-3, schedule="cosine", grad_clip=1.0)
    c.train = dict(num_steps=int(steps))
    c.ema = {}
    return c


def train(built, data, steps, chunk=500):
    """The library's train step on batches drawn from the fixed training set ``data``."""
    state = built.init_state()
    B = built.setup.batch_size
    step = T.make_train_step(built.method.loss, built.optimizer, built.ema_specs, B,
                             loss_takes_state=True, update_extra=built.method.update_extra)
    data = jnp.asarray(data)

    def body(st, k):
        idx = jax.random.randint(k, (B,), 0, data.shape[0])
        st, met = step(st, {"image": data[idx]})
        return st, met["loss"]

    run = jax.jit(lambda st, keys: jax.lax.scan(body, st, keys), donate_argnums=0)
    t0, losses, done = time.perf_counter(), [], 0
    key = jax.random.key(built.seed + 100)
    while done < steps:
        n = min(chunk, steps - done)
        state, ls = run(state, jax.random.split(jax.random.fold_in(key, done), n))
        losses.append(np.asarray(ls))
        done += n
    jax.block_until_ready(state.params)
    return state, time.perf_counter() - t0, np.concatenate(losses)


def bound_bits(kernel, betas, x, seed=0):
    """K per point (bits) over ``x`` in chunks: ``(mean, standard error)``."""
    f = jax.jit(lambda xx, k: sdl.sohl_dickstein_bound(kernel, betas, xx, k)[0])
    ks = [np.asarray(f(jnp.asarray(c), jax.random.key(seed + i)))
          for i, c in enumerate(np.array_split(x, max(1, len(x) // 5000)))]
    k = sdl.nats_to_bits(np.concatenate(ks))
    return float(k.mean()), float(k.std() / math.sqrt(k.size))


def ddpm_kernel(built, params, betas, variance):
    """DDPM's reverse kernel at paper step t: the posterior q(x^{t-1}|x^t, x0_hat) mean with
    x0_hat from the eps prediction, variance beta_tilde_t ('small') or beta_t ('large')."""
    model = built.setup.network.bind(params)
    proc = built.setup.process

    def kernel(x, t):
        tt = t.astype(jnp.float32) / NUM_STEPS  # paper step t = DDPM index t - 1 at t/T
        eps = model(x, tt)
        a = proc.alpha(tt)[:, None]
        s = proc.sigma(tt)[:, None]
        x0 = (x - s * eps) / a
        mu, var = sdl.posterior(betas, t, x0, x)
        if variance == "large":
            var = betas[t - 1][:, None]
        return mu, jnp.broadcast_to(var, x.shape)

    return kernel


def fig1_png(path, forward, reverse, size=160):
    """Fig. 1-style panels (Pillow scatter): top row the forward trajectory q at t = 0, T/2, T;
    bottom row the learned reverse trajectory p at the same t."""
    from PIL import Image, ImageDraw

    cols = len(forward)
    img = Image.new("RGB", (cols * size, 2 * size + 20), "white")
    draw = ImageDraw.Draw(img)
    lim = 3.0
    for r, row in enumerate((forward, reverse)):
        for c, (label, pts) in enumerate(row):
            ox, oy = c * size, r * (size + 10)
            draw.rectangle([ox, oy, ox + size - 1, oy + size - 1], outline=(180, 180, 180))
            u = ((pts[:, 0] + lim) / (2 * lim) * (size - 1)).astype(int)
            v = ((lim - pts[:, 1]) / (2 * lim) * (size - 1)).astype(int)
            keep = (u >= 0) & (u < size) & (v >= 0) & (v < size)
            for a, b in zip(u[keep], v[keep], strict=True):
                draw.point((ox + int(a), oy + int(b)), fill=(20, 60, 160) if r == 0
                           else (170, 30, 30))
            draw.text((ox + 4, oy + 2), label, fill=(0, 0, 0))
    img.save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--fixed-beta", action="store_true",
                    help="also train with the schedule frozen at the baseline")
    args = ap.parse_args()
    steps = 40 if args.tiny else args.steps
    batch, n_eval = (64, 2000) if args.tiny else (256, 20_000)
    n_samp = 2000 if args.tiny else 10_000
    train_x = toy.swiss_roll(100_000, seed=0)
    held = toy.swiss_roll(n_eval, seed=1)
    held2 = toy.swiss_roll(n_samp, seed=2)
    floor = dj.analytic.sliced_wasserstein(held[:n_samp], held2)
    L_null = float(sdl.nats_to_bits(sdl.isotropic_gaussian_loglik(held)))
    rows, out = [], {}

    runs = [("sohl_dickstein (learned beta)", True)]
    if args.fixed_beta:
        runs.append(("sohl_dickstein (fixed beta)", False))
    for name, learn in runs:
        built = build(sd_config(learn, steps, batch), data=False, x_shape=(2,))
        p0 = built.init_state().params
        betas0 = model_betas(built.setup.network, p0)
        K0 = bound_bits(kernel_fn(built.setup.network, p0, betas0), betas0, held)
        state, secs, losses = train(built, train_x, steps)
        params = state.params
        betas = model_betas(built.setup.network, params)
        K = bound_bits(kernel_fn(built.setup.network, params, betas), betas, held)
        x, traj = sohl_dickstein_sample(built.setup.network, params, jax.random.key(7), n_samp,
                                        process=built.setup.process, return_trajectory=True)
        x = np.asarray(x)
        sw = dj.analytic.sliced_wasserstein(x, held2)
        rows.append(dict(run=name, K_bits=K[0], K_se=K[1], K_minus_Lnull=K[0] - L_null,
                         K_init_bits=K0[0], sw1=sw, train_s=secs,
                         beta_1=float(betas[0]), beta_T=float(betas[-1]),
                         alpha_bar_T=float(np.prod(1 - np.asarray(betas, np.float64)))))
        print(rows[-1], flush=True)
        if learn:
            traj = np.asarray(traj)  # x^{T-1}, ..., x^0
            betas_np = np.asarray(betas, np.float64)
            xs, z = [held2[:2000].astype(np.float64)], np.random.default_rng(3)
            for b in betas_np:
                xs.append(np.sqrt(1 - b) * xs[-1] + np.sqrt(b) * z.standard_normal(xs[-1].shape))
            prior = np.asarray(jax.random.normal(jax.random.key(9), (2000, 2)))
            half = NUM_STEPS // 2
            fig1_png(RESULTS / "sohl_dickstein_swissroll_cpu.png",
                     [("q t=0", xs[0]), (f"q t={half}", xs[half]),
                      (f"q t={NUM_STEPS}", xs[NUM_STEPS])],
                     [("p t=0", traj[-1, :2000]), (f"p t={half}", traj[NUM_STEPS - half - 1,
                                                                        :2000]),
                      (f"p t={NUM_STEPS} (prior)", prior)])
            out["learned_betas"] = betas_np.tolist()

    built = build(ddpm_config(steps, batch), data=False, x_shape=(2,))
    state, secs, losses = train(built, train_x, steps)
    betas = jnp.asarray(dj.processes.sohl_dickstein_betas(NUM_STEPS), jnp.float32)
    K_small = bound_bits(ddpm_kernel(built, state.params, betas, "small"), betas, held)
    K_large = bound_bits(ddpm_kernel(built, state.params, betas, "large"), betas, held)
    x = np.asarray(built.method.sample(state.params, jax.random.key(7), n_samp))
    sw = dj.analytic.sliced_wasserstein(x, held2)
    for var, K in (("beta_tilde", K_small), ("beta", K_large)):
        rows.append(dict(run=f"DDPM L_simple (K with sigma^2 = {var})", K_bits=K[0], K_se=K[1],
                         K_minus_Lnull=K[0] - L_null, K_init_bits=float("nan"),
                         sw1=sw if var == "beta" else float("nan"), train_s=secs,
                         beta_1=float(betas[0]), beta_T=float(betas[-1]),
                         alpha_bar_T=float(np.prod(1 - np.asarray(betas, np.float64)))))
        print(rows[-1], flush=True)

    out.update(rows=rows, L_null_bits=L_null, sw1_floor=floor, paper=PAPER, steps=steps,
               batch=batch, n_eval=n_eval, n_samples=n_samp, T=NUM_STEPS,
               date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               jax=jax.__version__, device=str(jax.devices()[0]))
    tag = "tiny" if args.tiny else "cpu"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"sohl_dickstein_swissroll_{tag}.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Sohl-Dickstein et al. 2015 on the swiss roll ({tag})", "",
             f"T = {NUM_STEPS}, {steps} steps at batch {batch}, Adam 1e-3 cosine; K on "
             f"{n_eval} held-out points (bits, +- s.e.); L_null = {L_null:.3f} bits "
             f"(identity-covariance Gaussian); SW1 of {n_samp} samples to held-out points "
             f"(noise floor {floor:.4f}).", "",
             "| run | K (bits) | K - L_null (bits) | K at init | SW1 | beta_1 | beta_T | "
             "alpha_bar_T | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['K_bits']:.3f} +- {r['K_se']:.3f} | "
                     f"{r['K_minus_Lnull']:.3f} | {r['K_init_bits']:.3f} | {r['sw1']:.4f} | "
                     f"{r['beta_1']:.4f} | {r['beta_T']:.4f} | {r['alpha_bar_T']:.4f} | "
                     f"{r['train_s']:.0f} |")
    paper = f"| paper (Table 1) | {PAPER['K_bits']} | {PAPER['K_minus_Lnull_bits']} |"
    lines += [paper + " | | | | | |", ""]
    (RESULTS / f"sohl_dickstein_swissroll_{tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
