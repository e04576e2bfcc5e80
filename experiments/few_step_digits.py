"""Few-step generation on the embedded 8x8 digits: every method against a diffusion baseline.

The image counterpart of ``experiments/few_step_toy.py`` (issue 7's "tiny image set"). One
network architecture for every method -- a small NCSN++/DDPM++ (nf 32, ch_mult (1, 2), one
residual block per level, no attention, no dropout); the shortcut and IMM networks add the
``second_scalar`` embedder their methods need -- the same optimizer, batch and number of
optimizer steps, and the data of the quickstart (``data.name='digits'``, the last 297 digits
held out, no flips). Data, network, method, optimizer and EMAs are built from each config by
:func:`diffjax.run.build.build`, the code path of ``python -m diffjax train`` (the baseline is
plain EDM diffusion from its ``loss`` section, the few-step methods come from their ``method``
section), and trained with the library's train step. Each method is keyed as its recipe in
``configs/`` says, except for what is shared by all (network, optimizer, steps, batch, EMA,
``l2`` instead of CIFAR's LPIPS for CD, no dropout):

* EDM baseline (Karras et al. 2022; ``configs/edm_cifar10.py``'s loss and preconditioning)
  sampled with Heun on 18 Karras points (35 NFE) and with ONE Euler step;
* consistency distillation from that baseline (``configs/cd_cifar10.py``: N = 18, Heun
  teacher, theta^- = theta, student initialised from the teacher's EMA), 1 and 2 steps;
* improved consistency training (``configs/ict_cifar10.py``: doubling N(k) from 10 to 1280,
  log-normal pairs, 1 / dsigma weights, pseudo-Huber, theta^- = theta), 1 and 2 steps;
* shortcut model (``configs/shortcut_dit_b_celebahq256.py``: M = 128, every 8th row a
  bootstrap row) with bootstrap targets from the online weights (``bootstrap_ema=''``), 1, 2,
  4 steps;
* IMM (``configs/imm_cifar10.py``: simple_edm, M = 4 particles, k = 12, a = 1, b = 4,
  T = 0.994, eps_t = 0.006, online target), 1 step, 2 steps through eta = 1.4, 4 uniform steps.

Metrics, all against the 297 held-out digits: Frechet distance in the ``'digits'`` feature
space of :mod:`diffjax.evaluation` (10 logits of a logistic-regression digit classifier; NOT
comparable to any paper's FID), and the digit-classifier score of
:mod:`diffjax.metrics.classifier_score` (the Inception-Score formula with the classifier of the
README's quality figure, fitted on the training digits). Reference rows: the 1,500 training
digits, and a Gaussian fit to them (their mean and covariance). Every generated row uses
``n_eval`` samples (default 1,500, the size of the training-digit row) from the EMA weights.

Writes ``experiments/results/few_step_digits_cpu.md`` and ``.json`` and one PNG grid of 64
samples per row under ``experiments/results/few_step_digits/`` (or under ``--out``).

Usage:
  python experiments/few_step_digits.py             # full table (~20 min on 2 CPU cores)
  python experiments/few_step_digits.py --tiny      # seconds: a smoke test of the pipeline
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import diffjax as dj
from diffjax import evaluation as ev
from diffjax import train as T
from diffjax.metrics.classifier_score import classifier_score, fit_classifier
from diffjax.run.build import Built, build, build_method, prediction_of
from diffjax.utils.png import image_grid, save_png

RESULTS = Path(__file__).resolve().parent / "results"

# the quickstart's optimizer and evaluation EMA, shared by every method
LR, WARMUP, GRAD_CLIP, EVAL_EMA = 1e-3, 100, 1.0, 0.995
HOLDOUT = 297
GRID_N = 64  # samples per PNG grid


# ----------------------------------------------------------------------------------------------
# configs: one network for all
# ----------------------------------------------------------------------------------------------


def network(tiny: bool, **extra) -> dict:
    """The shared NCSN++/DDPM++ (``extra``: precond / second_scalar / time_input keys)."""
    nf, mult = (16, (1,)) if tiny else (32, (1, 2))
    return dict(name="ncsnpp", preset="ddpmpp_cifar10", image_size=8, in_channels=1, nf=nf,
                ch_mult=mult, num_res_blocks=1, attn_resolutions=(), dropout=0.0, **extra)


def base_config(tiny: bool, steps: int, batch: int, seed: int, **model_extra):
    """Data, optimizer, EMA and step count shared by every method."""
    c = ml_collections.ConfigDict()
    c.seed = seed
    c.model = network(tiny, **model_extra)
    c.data = dict(name="digits", split="train", batch_size=batch, holdout=HOLDOUT)
    # (short runs -- the pilot, --tiny -- warm up for a tenth of the steps at most)
    c.optim = dict(name="adam", lr=LR, warmup_steps=min(WARMUP, steps // 10), grad_clip=GRAD_CLIP,
                   schedule="cosine", total_steps=steps)
    c.ema = dict(ema=EVAL_EMA)
    c.train = dict(num_steps=steps)
    return c


def method_configs(tiny: bool, steps: int, batch: int, seed: int) -> dict:
    """name -> config; method keys as in the ``configs/`` recipes (see the module docstring)."""
    edm = dict(precond="edm", sigma_data=0.5)
    out = {}
    c = base_config(tiny, steps, batch, seed, **edm)
    c.process = dict(name="edm", sigma_min=0.002, sigma_max=80.0, rho=7.0)
    c.loss = dict(name="edm", sigma_data=0.5)
    out["edm"] = c
    c = base_config(tiny, steps, batch, seed, **edm)
    c.process = dict(name="edm", sigma_min=0.002, sigma_max=80.0, rho=7.0)
    # cd_cifar10 with metric l2 (LPIPS-VGG needs RGB and weights; the recipe allows l2)
    c.method = dict(name="cd", num_scales=18, solver="heun", weighting="uniform", metric="l2",
                    target_ema="", sample_ts=(0,), sample_grid=40, clip=True)
    out["cd"] = c
    c = base_config(tiny, steps, batch, seed, **edm)
    c.process = dict(name="edm", sigma_min=0.002, sigma_max=80.0, rho=7.0)
    c.method = dict(name="ct", schedule="ict", start_scales=10,
                    end_scales=20 if tiny else 1280, level_sampling="lognormal", p_mean=-1.1,
                    p_std=2.0, weighting="ict", metric="pseudo_huber", target_ema="",
                    sample_ts=(0,), sample_grid=18, clip=True)
    out["ict"] = c
    c = base_config(tiny, steps, batch, seed, second_scalar=True, time_input="sit")
    c.process = dict(name="linear")
    c.method = dict(name="shortcut", denoise_timesteps=4 if tiny else 128, bootstrap_every=8,
                    class_dropout_prob=0.1, bootstrap_cfg=False, clip=4.0, bootstrap_ema="",
                    sample_steps=1)
    out["shortcut"] = c
    c = base_config(tiny, steps, batch, seed, second_scalar=True, time_input="t")
    c.process = dict(name="linear")
    c.method = dict(name="imm", group_size=4, kind="simple_edm", temb="identity", k=12, a=1.0,
                    b=4.0, T=0.994, eps_t=0.006, sigma_data=0.5, time_scale=1000.0,
                    target_ema="", sample_steps=1, sample_grid="uniform")
    out["imm"] = c
    return out


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


def train(built: Built, steps: int, chunk: int):
    """``built``'s method, optimizer, EMAs and initial state through the library's train step
    (:func:`diffjax.train.make_train_step`) on batches drawn with replacement from the training
    digits, one jitted call per step (progress every ``chunk``).

    Why not a ``lax.scan`` of steps as in ``few_step_toy.py``: on this CPU the NCSN++ step runs
    ~12x slower inside a scanned loop than as its own jitted call (2.3 s vs 0.2 s at batch 64).

    Returns:
      ``(state, seconds incl. compilation, mean loss of the last 10 % of steps,
      number of non-finite steps the trainer skipped)``.
    """
    method = built.method
    state = built.init_state()
    B = built.setup.batch_size
    step = T.make_train_step(method.loss, built.optimizer, built.ema_specs, B,
                             loss_takes_state=True, update_extra=method.update_extra)
    # the 1,500 training digits live on the device: no loader round trip per step
    images = jnp.asarray(np.asarray(built.data.source.images, np.float32))

    def one(st, k):
        idx = jax.random.randint(k, (B,), 0, images.shape[0])
        st, met = step(st, {"image": images[idx]})
        return st, met["loss"]

    one = jax.jit(one, donate_argnums=0)
    t0, losses, tc = time.perf_counter(), [], time.perf_counter()
    key = jax.random.key(built.seed + 100)
    for i in range(steps):
        state, loss = one(state, jax.random.fold_in(key, i))
        losses.append(loss)
        if (i + 1) % chunk == 0 or i + 1 == steps:
            recent = np.asarray(jnp.stack(losses[-chunk:]))
            print(f"    steps {i + 1:5d}/{steps}  loss {np.nanmean(recent):.4g}  "
                  f"({time.perf_counter() - tc:.1f} s)", flush=True)
            tc = time.perf_counter()
    jax.block_until_ready(state.params)
    ls = np.asarray(jnp.stack(losses))
    return (state, time.perf_counter() - t0, float(np.mean(ls[-max(1, len(ls) // 10):])),
            int(state.skipped))


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------


class Scorer:
    """Digit-space FID and digit-classifier score against the held-out digits."""

    def __init__(self, train_images, train_labels, heldout):
        self.space = ev.feature_space("digits")
        self.ref = ev.reference_features(heldout, self.space, progress=False)
        # the README quality figure's classifier: fitted on the (float) training digits
        self.clf = fit_classifier(np.asarray(train_images).reshape(len(train_images), -1),
                                  train_labels)

    def __call__(self, x) -> dict:
        x = np.asarray(x, np.float32)
        finite = bool(np.all(np.isfinite(x)))
        if not finite:  # NaN / inf samples: nothing meaningful to score
            return dict(fid=float("nan"), score=float("nan"), confidence=float("nan"),
                        finite=False)
        x = np.clip(x, -1.0, 1.0)  # the samples as an image file would store them
        fid = ev.evaluate_images(x, reference=self.ref, metrics=("fid",), features=self.space,
                                 progress=False)["fid"]
        c = classifier_score(self.clf, x)
        return dict(fid=float(fid), score=float(c["score"]), confidence=float(c["confidence"]),
                    finite=True)


def save_grid(x, path: Path):
    """An 8 x 8 PNG grid of the first 64 samples (NaNs shown as black)."""
    x = np.nan_to_num(np.asarray(x[:GRID_N], np.float32), nan=-1.0, posinf=1.0, neginf=-1.0)
    save_png(path, image_grid(x, ncols=8))


# ----------------------------------------------------------------------------------------------
# the experiment
# ----------------------------------------------------------------------------------------------


def _plural(n: int) -> str:
    return f"{n} step{'s' if n > 1 else ''}"


def run(tiny: bool = False, out: Path | None = None, grids: Path | None = None, seed: int = 0,
        steps: int | None = None, batch: int | None = None, n_eval: int | None = None,
        chunk: int | None = None, which: tuple | None = None) -> dict:
    """Train every method, sample, score; write ``<out>.json``, ``<out>.md`` and the grids.

    Args:
      tiny: a smoke run (tiny network, a few steps, 64 samples per row): numbers mean nothing.
      out: output path without extension (default ``experiments/results/few_step_digits_cpu``
        or ``..._tiny``).
      grids: folder of the PNG grids (default ``<out's folder>/few_step_digits``, or
        ``few_step_digits_tiny``).
      seed: data order, initialisation and sampling seed.
      steps, batch, n_eval: optimizer steps per method, batch size, samples per row.
      chunk: optimizer steps per compiled scan (progress is printed per chunk).
      which: few-step methods to train after the EDM baseline, a subset of
        ``('cd', 'ict', 'shortcut', 'imm')``; default all of them, ``('cd',)`` with ``tiny``
        (each method costs ~15-30 s of compilation on 2 CPU cores, more than a smoke test
        can spend on all four).
    """
    steps = steps or (3 if tiny else 800)
    B = batch or (16 if tiny else 64)
    n_eval = n_eval or (64 if tiny else 1500)
    chunk = chunk or (steps if tiny else 100)
    which = tuple(which or (("cd",) if tiny else ("cd", "ict", "shortcut", "imm")))
    out = Path(out) if out else RESULTS / ("few_step_digits_tiny" if tiny else
                                           "few_step_digits_cpu")
    # (a --tiny run never overwrites the full run's grids)
    grids = Path(grids) if grids else (out.parent / ("few_step_digits_tiny" if tiny else
                                                     "few_step_digits"))
    cfgs = method_configs(tiny, steps, B, seed)
    t_all = time.perf_counter()

    edm = build(cfgs["edm"])
    train_x = np.asarray(edm.data.source.images, np.float32)
    scorer = Scorer(train_x, np.asarray(edm.data.source.labels), edm.data.heldout)
    rows = []
    key = jax.random.key(seed + 7)

    def add(method, sampler, nfe, x, secs, loss, skipped, note="", grid_name=None):
        sc = scorer(x)
        row = dict(method=method, sampler=sampler, nfe=nfe, **sc,
                   train_s=None if secs is None else round(secs, 1), final_loss=loss,
                   skipped_steps=skipped, note=note)
        rows.append(row)
        if grid_name:
            save_grid(x, grids / f"{grid_name}.png")
            row["grid"] = f"{grid_name}.png"
        print(f"  {method:10s} {sampler:30s} NFE {str(nfe):>4s}  FID {sc['fid']:8.3f}  "
              f"score {sc['score']:.2f}", flush=True)

    # reference rows ------------------------------------------------------------------------
    n_ref = min(n_eval, len(train_x))
    add("real training digits", f"{n_ref} of {len(train_x)}", "-", train_x[:n_ref], None, None,
        None, grid_name="real_train")
    flat = train_x.reshape(len(train_x), -1)
    gauss = np.random.default_rng(0).multivariate_normal(flat.mean(0), np.cov(flat.T),
                                                         size=n_eval)
    add("Gaussian fit", "training mean and covariance", "-",
        gauss.reshape((n_eval,) + train_x.shape[1:]), None, None, None)
    held = edm.data.heldout
    heldout_score = classifier_score(scorer.clf, held)["score"]

    # EDM baseline --------------------------------------------------------------------------
    print(f"training EDM ({steps} steps, batch {B})", flush=True)
    state, secs, loss, skipped = train(edm, steps, chunk)
    edm_state = state
    proc, pred = edm.setup.process, prediction_of(edm.config)
    model = edm.setup.network.bind(state.ema["ema"])
    shape = (n_eval,) + edm.setup.x_shape
    heun_n = 4 if tiny else 18
    for n, st, label, nfe, gname in (
            (heun_n, dj.samplers.Heun(), f"Heun, {heun_n} Karras points", 2 * heun_n - 1,
             "edm_heun"),
            (1, dj.samplers.Euler(), "Euler, 1 step", 1, "edm_euler1")):
        x = dj.sample(model, key, shape, dj.karras_grid(proc, n), st, process=proc,
                      prediction=pred, mesh=None)
        add("EDM", label, nfe, x, secs, loss, skipped, grid_name=gname)

    # few-step methods ----------------------------------------------------------------------
    cm2 = dict(sample_ts=(0, 9, 17), sample_grid=18)
    plan = [
        ("CD", "cd", [("1 step", {}), ("2 steps, ts [0, 9, 17] of 18", cm2)],
         "student initialised from the EDM baseline (train s excludes the teacher's)"),
        ("iCT", "ict", [("1 step", {}), ("2 steps, ts [0, 9, 17] of 18", cm2)], ""),
        ("Shortcut", "shortcut", [(_plural(n), dict(sample_steps=n)) for n in (1, 2, 4)],
         "bootstrap targets from the online weights"),
        ("IMM", "imm", [("1 step", {}),
                        ("2 steps, mid eta 1.4", dict(sample_steps=2, sample_grid="mid_eta",
                                                      mid_eta=(1.4,))),
                        ("4 steps, uniform t", dict(sample_steps=4))], ""),
    ]
    for label, name, samplers, note in plan:
        if name not in which:
            continue
        c = cfgs[name]
        # CD's teacher: the EDM baseline's network and EMA weights, in memory
        teacher = (edm.setup.network.bind, edm_state.ema["ema"]) if name == "cd" else None
        b = build(c, teacher=teacher)
        print(f"training {label} ({steps} steps, batch {B})", flush=True)
        state, secs, loss, skipped = train(b, steps, chunk)
        for text, kw in samplers:
            c2 = ml_collections.ConfigDict(c.to_dict())
            c2.method.update(kw)
            m2 = build_method(c2, b.setup, teacher=teacher)
            x = m2.sample(state.ema["ema"], key, n_eval, None)  # the jitted scan driver
            gname = f"{name}_{m2.nfe}step"
            add(label, text, m2.nfe, x, secs, loss, skipped, note, grid_name=gname)

    result = dict(
        date=datetime.date.today().isoformat(), device=jax.devices()[0].device_kind,
        jax=jax.__version__, tiny=tiny, steps=steps, batch=B, lr=LR,
        warmup=min(WARMUP, steps // 10),
        grad_clip=GRAD_CLIP, ema=EVAL_EMA, n_eval=n_eval, n_heldout=len(held),
        network=network(tiny), heldout_classifier_score=float(heldout_score),
        total_s=round(time.perf_counter() - t_all, 1), rows=rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".json").write_text(json.dumps(result, indent=2))
    md = table(result)
    Path(str(out) + ".md").write_text(md)
    print(md)
    return result


def _f(v, fmt):
    return "n/a" if v is None else ("NaN" if v != v else format(v, fmt))


def table(r: dict, notes: str = "") -> str:
    """The markdown report of a result dict (``notes``: free text appended)."""
    net = r["network"]
    lines = [
        "# Few-step generation on the embedded 8x8 digits (CPU)",
        "",
        f"{r['date']}, {r['device']}, jax {r['jax']}. Data: scikit-learn's 8x8 digits, the "
        f"first 1,500 for training, the last {r['n_heldout']} held out. Every model: NCSN++/"
        f"DDPM++ nf {net['nf']}, ch_mult {tuple(net['ch_mult'])}, {net['num_res_blocks']} res "
        f"block, no attention, no dropout (shortcut and IMM add the second-scalar embedder); "
        f"Adam {r['lr']} ({r['warmup']} warm-up steps, cosine decay, grad clip "
        f"{r['grad_clip']}), batch {r['batch']}, {r['steps']} steps; samples from the EMA "
        f"({r['ema']}) weights. Total wall time {r['total_s']:.0f} s (2 shared CPU cores; "
        "train s includes compilation).",
        "",
        f"FID: Frechet distance of {r['n_eval']} samples to the {r['n_heldout']} held-out digits "
        "in the `digits` feature space (10 logits of a logistic-regression digit classifier; "
        "NOT comparable to any paper's FID; lower is better). Score: the digit-classifier "
        "score of the README quality figure (Inception-Score formula, classifier fitted on the "
        f"training digits; higher is better; the held-out digits themselves score "
        f"**{r['heldout_classifier_score']:.2f}**). The held-out digits against themselves "
        "would be FID 0 by construction: the real training digits are the floor a model can "
        "reach here.",
        "",
        "| method | sampler | NFE | FID (digits) | score | confidence | train s | final loss "
        "| note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in r["rows"]:
        note = row["note"]
        if row.get("skipped_steps"):
            note = f"{note}; {row['skipped_steps']} non-finite steps skipped".lstrip("; ")
        if not row["finite"]:
            note = f"{note}; NON-FINITE samples".lstrip("; ")
        lines.append(
            f"| {row['method']} | {row['sampler']} | {row['nfe']} | {_f(row['fid'], '.3f')} | "
            f"{_f(row['score'], '.2f')} | {_f(row['confidence'], '.3f')} | "
            f"{_f(row['train_s'], '.1f')} | {_f(row['final_loss'], '.4g')} | {note} |")
    grids = [row["grid"] for row in r["rows"] if row.get("grid")]
    lines += ["", "Sample grids (64 each): " + ", ".join(f"`few_step_digits/{g}`" for g in grids)
              + "."]
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    ap.add_argument("--out", default=None, help="output path without extension")
    ap.add_argument("--grids", default=None, help="folder of the PNG grids")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per method")
    ap.add_argument("--batch", type=int, default=None, help="batch size")
    ap.add_argument("--n-eval", type=int, default=None, help="samples per row")
    ap.add_argument("--chunk", type=int, default=None, help="optimizer steps per compiled scan")
    ap.add_argument("--methods", default=None,
                    help="comma-separated subset of cd,ict,shortcut,imm (default: all; "
                         "--tiny: cd)")
    ap.add_argument("--retable", default=None,
                    help="rewrite the .md of this .json (with --notes) and exit")
    ap.add_argument("--notes", default=None, help="text file appended to the .md (--retable)")
    args = ap.parse_args()
    if args.retable:
        res = json.loads(Path(args.retable).read_text())
        text = Path(args.notes).read_text().strip() if args.notes else ""
        Path(args.retable).with_suffix(".md").write_text(table(res, text))
        print(table(res, text))
        raise SystemExit(0)
    run(args.tiny, args.out, args.grids, steps=args.steps, batch=args.batch, n_eval=args.n_eval,
        chunk=args.chunk, which=tuple(args.methods.split(",")) if args.methods else None)
