"""A tiny DDGAN on the embedded 8x8 digits: a sample grid and the offline digit-space FID.

DDGAN (Xiao et al. 2022; :mod:`diffjax.methods.ddgan`) with the small AdaGN generator
(:class:`diffjax.models.gan.ConvGenerator`, ch 32, mult (1, 2), nz 16, 2-layer mapping) and the
time-conditioned conv discriminator, T = 4 (4 generator calls per sample) and the one-step
ablation T = 1, trained with the library's two-network step on the first 1,500 digits (the
quickstart's split; the last 297 held out), Adam (0.5, 0.9), lr_G 1.6e-4 x 2, lr_D 1.25e-4 x 2,
R1 gamma 0.02 every 15 steps, EMA 0.999.

Metric: the Frechet distance in the ``'digits'`` feature space of :mod:`diffjax.evaluation`
(10 logits of a logistic-regression digit classifier; NOT comparable to any paper's FID) of 1,500
EMA samples to the 297 held-out digits, beside the same figure for the 1,500 training digits and
for a Gaussian fit to them. Writes ``experiments/results/gan_digits_cpu.{md,json}`` and the grids
``experiments/results/gan_digits/ddgan_T{4,1}.png``.

Usage:
  python experiments/gan_digits.py            # a few minutes on one CPU core
  python experiments/gan_digits.py --tiny     # a smoke test of the pipeline
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import diffjax as dj
from diffjax import evaluation as ev
from diffjax import methods as M
from diffjax import train as T
from diffjax.data.embedded import load_digits
from diffjax.models.denoiser import Network
from diffjax.models.gan import ConvGenerator
from diffjax.utils.png import image_grid, save_png

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 64


def train(T_steps, steps, train_x, seed=0, chunk=100):
    net = Network(lambda rngs: ConvGenerator(8, 1, nz=16, ch=32, ch_mult=(1, 2), z_emb_dim=64,
                                             n_mlp=2, time_dim=32, groups=8, rngs=rngs), dj.VP())
    m = M.ddgan(M.Setup(net, (8, 8, 1), None, BATCH, steps), num_timesteps=T_steps,
                r1_gamma=0.02, lazy_reg=15, lr_g=3.2e-4, lr_d=2.5e-4, ema_decay=0.999,
                d_width=32, d_depth=2)
    state = T.create_train_state(m.init_params, m.optimizer, seed=seed,
                                 ema_names=tuple(m.ema_specs))
    data = jnp.asarray(train_x)

    @jax.jit
    def run_chunk(state, key):
        def body(st, k):
            st, met = m.train_step(st, {"image": data[jax.random.randint(k, (BATCH,), 0,
                                                                         data.shape[0])]})
            return st, met["loss"]
        return jax.lax.scan(body, state, jax.random.split(key, chunk))

    for i in range(max(steps // chunk, 1)):
        state, _ = run_chunk(state, jax.random.fold_in(jax.random.key(seed + 7), i))
    return m, state


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    steps, n_eval = (10, 64) if args.tiny else (args.steps, 1500)
    chunk = 10 if args.tiny else 100
    x, _ = load_digits()
    train_x, held = x[:1500], x[-297:]
    space = ev.feature_space("digits")
    ref = ev.reference_features(held, space, progress=False)
    fid = lambda imgs: float(ev.evaluate_images(np.clip(imgs, -1, 1), reference=ref,
                                                metrics=("fid",), features=space,
                                                progress=False)["fid"])
    rng = np.random.default_rng(0)
    flat = train_x.reshape(len(train_x), -1)
    gauss = rng.multivariate_normal(flat.mean(0), np.cov(flat.T), n_eval).reshape(-1, 8, 8, 1)
    rows = {"training digits (1,500)": {"fid": fid(train_x), "nfe": "-"},
            "Gaussian fit to them": {"fid": fid(gauss.astype(np.float32)), "nfe": "-"}}
    out_dir = RESULTS / "gan_digits"
    out_dir.mkdir(parents=True, exist_ok=True)
    for T_steps in (4, 1):
        t0 = time.perf_counter()
        m, state = train(T_steps, steps, train_x, chunk=chunk)
        samples = np.asarray(m.sample(state.ema["ema"], jax.random.key(1), n_eval))
        if not args.tiny:
            save_png(out_dir / f"ddgan_T{T_steps}.png", image_grid(np.clip(samples[:64], -1, 1),
                                                                   ncols=8))
        rows[f"DDGAN T={T_steps}"] = {"fid": fid(samples), "nfe": T_steps,
                                      "seconds": time.perf_counter() - t0,
                                      "skipped": int(state.skipped)}
        print(f"DDGAN T={T_steps}: digit-space FID {rows[f'DDGAN T={T_steps}']['fid']:.3f} "
              f"({rows[f'DDGAN T={T_steps}']['seconds']:.0f} s)", flush=True)
    lines = [f"# Tiny DDGAN on the embedded digits ({'tiny' if args.tiny else 'cpu'})", "",
             f"{datetime.date.today()}; {steps} steps at batch {BATCH}; {n_eval} EMA samples vs "
             "the 297 held-out digits in the `digits` feature space (not comparable to any "
             "paper's FID). `python experiments/gan_digits.py`.", "",
             "| row | NFE | digit-space FID |", "| --- | --- | --- |"]
    lines += [f"| {k} | {r['nfe']} | {r['fid']:.3f} |" for k, r in rows.items()]
    lines += ["", "Grids: `experiments/results/gan_digits/ddgan_T4.png`, `ddgan_T1.png`."]
    tag = "tiny" if args.tiny else "cpu"
    (RESULTS / f"gan_digits_{tag}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"gan_digits_{tag}.json").write_text(json.dumps(
        {"steps": steps, "batch": BATCH, "n_eval": n_eval, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
