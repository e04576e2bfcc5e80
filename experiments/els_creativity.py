"""Do the ELS machine's samples predict a trained CNN's samples? (Kamb & Ganguli 2024)

Paper: Kamb & Ganguli, "An analytic theory of creativity in convolutional diffusion models"
(arXiv 2412.20292, ICML 2025). Its headline: after calibrating one time-dependent patch size
``P(t)``, the equivariant local score (ELS) machine predicts the samples of trained
convolution-only diffusion models from the same noise, with median per-sample ``r^2`` of
0.95 / 0.94 / 0.94 / 0.96 for its top model on CIFAR-10 / FashionMNIST / MNIST / CelebA
(abstract of v2; v1 reported 0.90 / 0.91 / 0.94 on CIFAR-10 / FashionMNIST / MNIST), and
~0.77 for attention UNets on CIFAR-10; the ideal score machine, which memorises, does not.

What this script does, at CPU scale (minutes on one core), all on scikit-learn's 8x8 digits
upscaled (bilinear) to 16x16, ``--n-train`` of them (default 256):

1. trains two zero-padded CNN denoisers (eps prediction, the paper's cosine process
   :class:`diffjax.local_score.KambCosine`, ``t ~ U(0, 1)``): a diffjax :class:`UNet` with
   no attention, and a small ResNet-like CNN without down-sampling (a local module here);
2. calibrates ``P(t)`` of the boundary-broken ELS machine (the paper's model of zero-padded
   CNNs) against each CNN on the CNN's own DDIM trajectories from ``--n-cal`` noises
   (:func:`diffjax.local_score.calibrate_patch_sizes`: per step the P with the smallest
   denoiser error, median over samples);
3. samples ``--n-eval`` other noises with the CNN, the calibrated ELS machine, ELS with the
   best single P, and the ideal score machine, all through the one driver (deterministic DDIM
   on the paper's 20-point grid, ``x = z`` at ``t = 0.95``), and reports the median
   per-sample ``r^2`` of each machine's sample against the CNN's and the median max
   correlation of each with the training set (1.0 = a copy of a training image).

Writes ``experiments/results/els_creativity_cpu.{md,json}`` and, per CNN, a PNG with one
column per noise and rows CNN / calibrated ELS / ideal machine / the training image nearest
to the CNN sample (``experiments/results/els_creativity/``).

Usage:
  python experiments/els_creativity.py           # full (a few minutes per CNN on one core)
  python experiments/els_creativity.py --tiny    # seconds: a smoke test of the pipeline
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
import optax
from flax import nnx

import diffjax as dj
from diffjax import local_score as L
from diffjax.models.layers_unet import timestep_embedding
from diffjax.models.unet import UNet
from diffjax.utils.png import image_grid, save_png

RESULTS = Path(__file__).resolve().parent / "results"

PAPER = {  # median r^2 between ELS and the CNN's samples, as the paper reports them
    "MNIST": 0.94, "FashionMNIST": 0.94, "CIFAR-10": 0.95, "CelebA": 0.96,
    "CIFAR-10, attention UNet": 0.77,
}


class ResNetCNN(nnx.Module):
    """A ResNet-like convolution-only denoiser (no down-sampling, zero padding): 3x3 convs,
    ``blocks`` residual blocks ``x + conv(silu(gn(conv(silu(gn(x))) + emb(t)))))``. Its
    receptive field is ``4 blocks + 3`` pixels wide (2 per conv), so locality is built in."""

    def __init__(self, channels: int = 32, blocks: int = 4, in_channels: int = 1, *, rngs):
        self.conv_in = nnx.Conv(in_channels, channels, (3, 3), padding="SAME", rngs=rngs)
        self.temb = nnx.Linear(channels, channels, rngs=rngs)
        gn = lambda: nnx.GroupNorm(channels, num_groups=8, rngs=rngs)
        self.n1 = nnx.List([gn() for _ in range(blocks)])
        self.c1 = nnx.List([nnx.Conv(channels, channels, (3, 3), padding="SAME", rngs=rngs)
                            for _ in range(blocks)])
        self.e = nnx.List([nnx.Linear(channels, channels, rngs=rngs) for _ in range(blocks)])
        self.n2 = nnx.List([gn() for _ in range(blocks)])
        self.c2 = nnx.List([nnx.Conv(channels, channels, (3, 3), padding="SAME", rngs=rngs)
                            for _ in range(blocks)])
        self.n_out = nnx.GroupNorm(channels, num_groups=8, rngs=rngs)
        self.conv_out = nnx.Conv(channels, in_channels, (3, 3), padding="SAME", rngs=rngs)
        self.channels = channels

    def __call__(self, x, t_input):
        emb = jax.nn.silu(self.temb(timestep_embedding(t_input, self.channels)))
        h = self.conv_in(x)
        for n1, c1, e, n2, c2 in zip(self.n1, self.c1, self.e, self.n2, self.c2, strict=True):
            r = c1(jax.nn.silu(n1(h))) + e(emb)[:, None, None, :]
            h = h + c2(jax.nn.silu(n2(r)))
        return self.conv_out(jax.nn.silu(self.n_out(h)))


def make_net(kind: str, seed: int):
    rngs = nnx.Rngs(seed)
    if kind == "unet":
        # our UNet without attention (zero padding in every conv): two levels, 16 -> 8
        return UNet(image_size=16, in_channels=1, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                    attn_resolutions=(), dropout=0.0, norm_groups=8, rngs=rngs)
    return ResNetCNN(rngs=rngs)


def load_data(n_train: int):
    imgs, _ = dj.data.embedded.load_digits()
    x = jax.image.resize(jnp.asarray(imgs), (len(imgs), 16, 16, 1), "bilinear")
    return np.asarray(x[:n_train], np.float32)


def train(kind: str, data: np.ndarray, steps: int, batch: int, seed: int, proc):
    """Eps-prediction MSE with ``t ~ U(0, 1)`` on the paper's process; returns an eps model
    ``f(x, t, cond)`` (a pytree: graph definition + parameters) and the last losses."""
    net = make_net(kind, seed)
    graphdef, params = nnx.split(net)
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    data_j = jnp.asarray(data)

    def loss_fn(p, key):
        k1, k2, k3 = jax.random.split(key, 3)
        x0 = data_j[jax.random.randint(k1, (batch,), 0, len(data))]
        t = jax.random.uniform(k2, (batch,))
        eps = jax.random.normal(k3, x0.shape)
        tb = t[:, None, None, None]
        xt = proc.alpha(tb) * x0 + proc.sigma(tb) * eps
        pred = nnx.merge(graphdef, p)(xt, 1000.0 * t)
        return jnp.mean((pred - eps) ** 2)

    @jax.jit
    def step(p, s, key):
        loss, g = jax.value_and_grad(loss_fn)(p, key)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    key = jax.random.key(seed)
    losses = []
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
        losses.append(float(loss))
    return jax.tree_util.Partial(_apply, graphdef, params), float(np.mean(losses[-50:]))


def _apply(graphdef, params, x, t, cond=None):
    return nnx.merge(graphdef, params)(x, 1000.0 * t)


def run(args):
    proc = L.KambCosine()
    data = load_data(args.n_train)
    rng = np.random.default_rng(args.seed)
    z_cal = rng.normal(size=(args.n_cal, 16, 16, 1)).astype(np.float32)
    z_eval = rng.normal(size=(args.n_eval, 16, 16, 1)).astype(np.float32)
    ideal = L.ideal_score_machine(data, proc)
    t0 = time.time()
    x_ideal = np.asarray(L.sample_machine(ideal, z_eval))
    t_ideal = time.time() - t0
    base = L.els_machine(data, proc, 3, padding="zeros", boundary_broken=True, chunk=args.chunk)
    rows, info_all = [], {}
    out_dir = Path(args.out)
    (out_dir / "els_creativity").mkdir(parents=True, exist_ok=True)
    for kind in args.models:
        t0 = time.time()
        cnn, last_loss = train(kind, data, args.steps, args.batch, args.seed, proc)
        t_train = time.time() - t0
        t0 = time.time()
        calibrated, info = L.calibrate_patch_sizes(base, cnn, z_cal, cnn_prediction="eps",
                                                   candidates=args.candidates)
        t_cal = time.time() - t0
        x_cnn = np.asarray(L.sample_machine(cnn, z_eval, process=proc, prediction="eps"))
        t0 = time.time()
        x_els = np.asarray(L.sample_machine(calibrated, z_eval))
        t_els = time.time() - t0
        # the best single P over the whole trajectory (smallest mean error summed over steps)
        p_fixed = info["candidates"][int(np.argmin(np.sum(info["mean_error"], axis=1)))]
        x_fix = np.asarray(L.sample_machine(base.with_patch_sizes(p_fixed), z_eval))
        r2 = {name: L.r_squared(x_cnn, xs) for name, xs in
              (("ELS, calibrated P(t)", x_els), (f"ELS, P = {p_fixed}", x_fix),
               ("ideal score machine", x_ideal))}
        mc = {name: L.max_correlation(xs, data)[0] for name, xs in
              (("CNN", x_cnn), ("ELS, calibrated P(t)", x_els), ("ideal score machine", x_ideal))}
        for name, v in r2.items():
            rows.append(dict(cnn=kind, machine=name, median_r2=float(np.median(v)),
                             q25_r2=float(np.quantile(v, 0.25)), q75_r2=float(np.quantile(v, 0.75)),
                             median_max_corr=float(np.median(mc[name])) if name in mc else None))
        rows.append(dict(cnn=kind, machine="CNN itself", median_r2=None, q25_r2=None, q75_r2=None,
                         median_max_corr=float(np.median(mc["CNN"]))))
        info_all[kind] = dict(calibration=info, p_fixed=p_fixed, final_train_loss=last_loss,
                              seconds=dict(train=t_train, calibrate=t_cal, els_sample=t_els,
                                           ideal_sample=t_ideal))
        nearest = data[L.max_correlation(x_cnn, data)[1]]
        grid = image_grid(np.concatenate([x_cnn, x_els, x_ideal, nearest]), ncols=len(z_eval))
        save_png(out_dir / "els_creativity" / f"{kind}_cnn_els_ideal_nearest.png", grid)
        print(f"[{kind}] train {t_train:.0f}s loss {last_loss:.4f}; calibrate {t_cal:.0f}s; "
              f"P(t) by step {info['patch_size']}", flush=True)
    return rows, info_all


def write(rows, info, args):
    out = Path(args.out)
    meta = dict(date=datetime.date.today().isoformat(), device=str(jax.devices()[0]),
                n_train=args.n_train, n_cal=args.n_cal, n_eval=args.n_eval, steps=args.steps,
                batch=args.batch, candidates=list(args.candidates), seed=args.seed,
                tiny=bool(args.tiny))
    lines = ["# ELS machine vs trained CNNs (Kamb & Ganguli 2024) on 16x16 digits, CPU scale", "",
             f"{meta['date']}, {meta['device']}; {args.n_train} training digits (sklearn 8x8, "
             f"bilinear to 16x16); CNNs trained {args.steps} steps, batch {args.batch}, Adam 1e-3; "
             f"P(t) calibrated on {args.n_cal} noises, r^2 on {args.n_eval} other noises; DDIM "
             "on the paper's grid t = 19/20 ... 0, cosine abar = cos^2(t/1.008 pi/2). "
             "Machine: boundary-broken ELS (zero padding), candidates "
             f"{list(args.candidates)}.", "",
             "| CNN | machine | median r^2 vs CNN | r^2 IQR | median max corr with train set |",
             "| --- | --- | --- | --- | --- |"]
    f = lambda v: "-" if v is None else f"{v:.3f}"
    for r in rows:
        iqr = "-" if r["q25_r2"] is None else f"{r['q25_r2']:.3f} - {r['q75_r2']:.3f}"
        lines.append(f"| {r['cnn']} | {r['machine']} | {f(r['median_r2'])} | {iqr} | "
                     f"{f(r['median_max_corr'])} |")
    lines += ["", "The paper's numbers (median r^2, ELS vs CNN, its top model, full data sets and "
              "fully trained networks; NOT our scale): " +
              ", ".join(f"{k} {v}" for k, v in PAPER.items()) + ".", ""]
    for kind, inf in info.items():
        cal, secs = inf["calibration"], {k: round(v) for k, v in inf["seconds"].items()}
        lines.append(f"- {kind}: calibrated P by step (t = 0.95 ... 0.05) {cal['patch_size']}, "
                     f"best single P {inf['p_fixed']}, final train loss "
                     f"{inf['final_train_loss']:.4f}, seconds {secs}")
    text = "\n".join(lines) + "\n"
    suffix = "_tiny" if args.tiny else ""
    (out / f"els_creativity_cpu{suffix}.md").write_text(text)
    (out / f"els_creativity_cpu{suffix}.json").write_text(
        json.dumps(dict(meta=meta, rows=rows, info=info, paper=PAPER), indent=1))
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="seconds: smoke test of the pipeline")
    ap.add_argument("--models", nargs="+", default=["unet", "resnet"], choices=["unet", "resnet"])
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-cal", type=int, default=6)
    ap.add_argument("--n-eval", type=int, default=16)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--candidates", type=int, nargs="+", default=[3, 5, 7, 9, 11])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.tiny:
        args.n_train, args.n_cal, args.n_eval, args.steps = 32, 2, 4, 20
        args.candidates = [3, 5]
    rows, info = run(args)
    write(rows, info, args)


if __name__ == "__main__":
    main()
