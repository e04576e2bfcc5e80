"""Guidance and conditional generation end to end on tiny trained image models (issue 8).

Trains, on the embedded 8x8 digits (scikit-learn's 1,797 UCI digits, no download; the last 297
are held out), with the library's losses, train step and samplers:

* a class-conditional DDPM UNet (eps, linear betas T = 1000) with label dropout to a null class
  (Ho & Salimans 2022: ``p_uncond = 0.2``, null id 10) -- one network is the unconditional, the
  conditional and the classifier-free-guided model;
* ADM's noise-aware classifier (Dhariwal & Nichol 2021, sec. 4: ``ADMClassifier`` trained with
  :func:`diffjax.losses.noisy_classifier_loss` on ``x_t``, ``t`` drawn like the diffusion loss);
* a 2x super-resolution UNet (SR3 / ADM upsampler: ``x_t`` concatenated with the bilinear
  upsampling of the 4x4 area-downsampled image, :class:`~diffjax.guidance.SRConditioned` and
  :func:`~diffjax.guidance.sr_pairs`);
* an unconditional 3-channel UNet on *coloured digits*, a deterministic colour set built here
  (:func:`colour_digits`): digit ``d`` is painted with hue ``2 pi d / 10`` on the chroma plane
  orthogonal to grey, ``rgb = 0.6 x + 0.45 (x + 1) / 2 c_d`` (``x`` the grey digit in
  ``[-1, 1]``, ``c_d`` a unit chroma vector), so the channel mean (grey) is ``0.6 x`` whatever
  the colour, and the colour is predictable from the digit's shape alone.

Then samples every mode and writes PNG grids under ``--out`` (default
``experiments/results/guidance_toy/``): unconditional (null label), class-conditional, CFG at
several scales, classifier guidance at several scales (on the unconditional model), inpainting
by replacement (Score SDE) and by reconstruction guidance (Video Diffusion Models eq. 7) of
held-out digits with their bottom half masked, colourisation (Score SDE, decoupled colour
space) of held-out grey digits, and 2x super-resolution of held-out 4x4 digits.

Numbers (``guidance_toy_cpu.md`` / ``.json``): the accuracy of a logistic-regression digit
classifier fitted on the clean training digits (:func:`diffjax.metrics.fit_classifier`) against
the requested label (conditional modes) or the true label of the held-out digit (inpainting, SR);
known-region and unknown-region errors of the inpaintings; SR RMSE against the ground-truth
8x8 beside bilinear upsampling's; colourisation RMSE and colour-class accuracy beside the grey
image's. Every sampler is DDIM (eta = 0, 50 steps) except inpainting and colourisation (DDPM
ancestral, 100 steps: replacement re-noises the known part, which a deterministic sampler cannot
blend in).

Usage:
  python experiments/guidance_toy_images.py          # full run (about 15 min on 2 CPU cores)
  python experiments/guidance_toy_images.py --tiny   # seconds: a smoke test of every mode
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
from diffjax import guidance as G
from diffjax import samplers as S
from diffjax import train as T
from diffjax.data.embedded import load_digits
from diffjax.metrics import fit_classifier
from diffjax.models.denoiser import Network
from diffjax.utils.png import image_grid, save_png

RESULTS = Path(__file__).resolve().parent / "results"
NUM_CLASSES = 10
NULL = NUM_CLASSES  # the null label of classifier-free guidance
HOLDOUT = 297  # as configs/quickstart.py
GREY_SCALE, CHROMA = 0.6, 0.45  # colour digits: rgb = 0.6 x + 0.45 (x + 1) / 2 c_d

FULL = dict(
    unet=dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), norm_groups=8),
    aux_unet=dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                  norm_groups=8),
    clf=dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
             num_head_channels=16, norm_groups=8),
    steps=dict(cond=1500, clf=600, sr=800, colour=1000), batch=64, lr=1e-3,
    per_class=20, n_cond=200, n_inpaint=100, ddim_steps=50, anc_steps=100, lr_iter=3000,
    cfg_w=(0.0, 1.0, 3.0), clf_scales=(1.0, 3.0, 10.0), recon_w=(1.0, 4.0))
TINY = dict(
    unet=dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), norm_groups=4),
    aux_unet=dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), norm_groups=4),
    clf=dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), num_head_channels=8,
             norm_groups=4),
    steps=dict(cond=3, clf=3, sr=3, colour=3), batch=8, lr=1e-3,
    per_class=1, n_cond=10, n_inpaint=4, ddim_steps=3, anc_steps=3, lr_iter=50,
    cfg_w=(0.0, 1.0), clf_scales=(1.0, 4.0), recon_w=(2.0,))


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def chroma_vectors() -> np.ndarray:
    """``(10, 3)`` unit chroma vectors ``c_d = cos(th_d) u1 + sin(th_d) u2``,
    ``th_d = 2 pi d / 10``, with ``u1, u2`` the colour columns of Score SDE's decoupling matrix
    (:func:`diffjax.guidance.colorization_matrix`): orthogonal to grey ``(1, 1, 1)``."""
    m = G.colorization_matrix()
    th = 2.0 * np.pi * np.arange(NUM_CLASSES) / NUM_CLASSES
    return (np.cos(th)[:, None] * m[:, 1][None] + np.sin(th)[:, None] * m[:, 2][None]).astype(
        np.float32)


def colour_digits(grey: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The deterministic colour set: ``(N, 8, 8, 1)`` grey digits in ``[-1, 1]`` and labels ->
    ``(N, 8, 8, 3)`` in ``[-1, 1]`` with channel mean ``0.6 x`` (module docstring)."""
    c = chroma_vectors()[labels][:, None, None, :]
    return (GREY_SCALE * grey + CHROMA * (grey + 1.0) / 2.0 * c).astype(np.float32)


def load() -> dict:
    x, y = load_digits()  # (1797, 8, 8, 1) in [-1, 1], int32 labels
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
    n = len(x) - HOLDOUT
    return dict(x=x[:n], y=y[:n], x_test=x[n:], y_test=y[n:])


# ----------------------------------------------------------------------------------------------
# training: the library's train step around each loss
# ----------------------------------------------------------------------------------------------


def train_model(make, loss, arrays: dict, steps: int, cfg: dict, seed: int, name: str):
    """Train ``make(rngs)`` for ``steps`` Adam steps on random batches of ``arrays``;
    ``loss(model, key, batch) -> (per_example, aux)`` with ``model(x, t, cond)`` in diffjax
    time over the network's DDPM index. Returns the EMA weights bound into that model (a
    :class:`~diffjax.models.denoiser.Denoiser` pytree) and the training summary."""
    network = Network(make, cfg["process"], time_input="ddpm_index")
    opt = T.make_optimizer("adam", cfg["lr"], warmup_steps=min(100, steps // 10),
                           grad_clip=1.0)
    # EDM's half-life EMA with ramp-up (Karras et al. 2022): tracks the weights early, so a
    # short run's EMA is not dominated by the initialisation.
    ema = {"ema": T.EMASpec(halflife_kimg=5.0, rampup_ratio=0.1)}
    batch = cfg["batch"]

    def loss_fn(params, key, b):
        return loss(network.bind(params), key, b)

    state = T.create_train_state(network.init, opt, seed=seed, ema_names=("ema",))
    step = T.jit_train_step(T.make_train_step(loss_fn, opt, ema, batch))
    rng = np.random.default_rng(seed)
    n = len(next(iter(arrays.values())))
    t0, losses = time.time(), []
    for _ in range(steps):
        idx = rng.integers(0, n, batch)
        state, m = step(state, {k: jnp.asarray(v[idx]) for k, v in arrays.items()})
        losses.append(m["loss"])
    losses = np.asarray(jax.device_get(losses), np.float64)
    tail = float(losses[-max(1, steps // 10):].mean())
    print(f"  {name}: {steps} steps in {time.time() - t0:.1f}s, final loss {tail:.4f}")
    return network.bind(state.ema["ema"]), {"steps": steps, "final_loss": tail,
                                            "seconds": time.time() - t0}


def _label_dropout(key, y, p):
    """Replace labels by the null class with probability ``p`` (CFG joint training)."""
    return jnp.where(jax.random.uniform(key, y.shape) < p, NULL, y).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# sampling helpers
# ----------------------------------------------------------------------------------------------


def ddim_grid(n):
    return dj.discrete_grid(np.linspace(0, 999, n).round().astype(int), 1000)


def _sample(model, shape, grid, step, cfg, seed, **kw):
    kw.setdefault("prediction", "eps")
    out = S.sample(model, jax.random.key(seed), shape, grid, step, process=cfg["process"],
                   mesh=None, clip_x0=1.0, **kw)
    return np.asarray(out)


def _null_model(den):
    """The unconditional model: the conditional network at the null label whatever ``cond``
    holds (classifier guidance passes the *target* labels to the model and the classifier)."""
    return jax.tree_util.Partial(
        lambda d, x, t, c=None: d(x, t, jnp.full((x.shape[0],), NULL, jnp.int32)), den)


def _acc(clf, images, labels) -> float:
    return float((clf.predict(np.asarray(images, np.float64).reshape(len(images), -1))
                  == np.asarray(labels)).mean())


def _rows(images, per_class):
    """Samples ordered label-major -> a grid with one row per class."""
    return image_grid(images, ncols=per_class, zoom=4)


# ----------------------------------------------------------------------------------------------
# the experiment
# ----------------------------------------------------------------------------------------------


def run(tiny: bool, out: Path, seed: int = 0) -> dict:
    cfg = dict(TINY if tiny else FULL)
    process = dj.DiscreteVP.linear(1000)
    cfg["process"] = process
    out.mkdir(parents=True, exist_ok=True)
    d = load()
    if tiny:  # a few records keep the logistic regression to milliseconds
        d = {k: v[:200] if k in ("x", "y") else v[:cfg["n_inpaint"]] for k, v in d.items()}
    res: dict = {"mode": "tiny" if tiny else "full", "train": {}}
    t_start = time.time()
    print("fitting the evaluation classifier (logistic regression on clean training digits)")
    evalc = fit_classifier(d["x"], d["y"], max_iter=cfg["lr_iter"], seed=seed)
    res["real_test_accuracy"] = _acc(evalc, d["x_test"], d["y_test"])

    # ---------------------------------------------------------------- models
    print("training")
    unet_kw = dict(image_size=8, dropout=0.0, **cfg["unet"])
    aux_kw = dict(image_size=8, dropout=0.0, **cfg["aux_unet"])
    make_cond = lambda r: dj.models.UNet(in_channels=1, num_classes=NUM_CLASSES + 1, rngs=r,
                                         **unet_kw)

    def cond_loss(model, key, b):
        k_drop, k = jax.random.split(key)
        y = _label_dropout(k_drop, b["label"], 0.2)
        return dj.losses.ddpm_loss(model, k, b["image"], process=process, cond=y)

    den, res["train"]["conditional_unet"] = train_model(
        make_cond, cond_loss, {"image": d["x"], "label": d["y"]}, cfg["steps"]["cond"], cfg,
        seed, "class-conditional UNet (label dropout 0.2)")

    make_clf = lambda r: dj.models.ADMClassifier(image_size=8, in_channels=1,
                                                 num_classes=NUM_CLASSES, rngs=r, **cfg["clf"])

    def clf_loss(model, key, b):
        return dj.losses.noisy_classifier_loss(lambda x, t: model(x, t), key, b["image"],
                                               b["label"], process=process)

    clf_den, res["train"]["noisy_classifier"] = train_model(
        make_clf, clf_loss, {"image": d["x"], "label": d["y"]}, cfg["steps"]["clf"], cfg,
        seed + 1, "ADM noise-aware classifier")

    make_sr = lambda r: dj.models.UNet(in_channels=2, out_channels=1, rngs=r, **aux_kw)

    def sr_loss(model, key, b):
        low, high = G.sr_pairs(b["image"], 2)
        return dj.losses.ddpm_loss(G.SRConditioned(model), key, high, process=process,
                                   cond=low)

    sr_model, res["train"]["sr_unet"] = train_model(
        make_sr, sr_loss, {"image": d["x"]}, cfg["steps"]["sr"], cfg, seed + 2,
        "2x super-resolution UNet (concatenation)")

    colour = colour_digits(d["x"], d["y"])
    make_col = lambda r: dj.models.UNet(in_channels=3, rngs=r, **aux_kw)

    def col_loss(model, key, b):
        return dj.losses.ddpm_loss(model, key, b["image"], process=process)

    col_den, res["train"]["colour_unet"] = train_model(
        make_col, col_loss, {"image": colour}, cfg["steps"]["colour"], cfg, seed + 3,
        "unconditional UNet on colour digits")

    grid, ddim = ddim_grid(cfg["ddim_steps"]), S.DDIM(0.0)

    # ---------------------------------------------------------------- CFG (incl. w = -1, 0)
    print("sampling")
    per = cfg["per_class"]
    labels = jnp.repeat(jnp.arange(NUM_CLASSES, dtype=jnp.int32), per)
    n = len(labels)
    shape = (n, 8, 8, 1)
    rows = []
    # Ho & Salimans' w (guided = (1 + w) cond - w uncond): w = -1 is the unconditional model
    # (the null label), w = 0 the conditional one. One compiled sampler serves every w.
    for w in (-1.0,) + tuple(cfg["cfg_w"]):
        cfg_model = G.ClassifierFreeGuidance(den, w, convention="w", null_label=NULL)
        xs = _sample(cfg_model, shape, grid, ddim, cfg, seed + 10, cond=labels)
        name = "unconditional" if w == -1.0 else ("conditional" if w == 0.0 else f"cfg_w{w:g}")
        save_png(out / f"{name}.png", _rows(xs, per))
        if w == -1.0:
            uncond = xs[np.random.default_rng(seed).permutation(n)]
        rows.append({"mode": name, "w": w, "accuracy": _acc(evalc, xs, labels)})
    res["cfg"] = rows

    # ---------------------------------------------------------------- classifier guidance
    rows = [{"mode": "unconditional (s = 0)", "scale": 0.0, "accuracy": res["cfg"][0]["accuracy"]}]
    lc = G.LogitsClassifier(clf_den)
    for s in cfg["clf_scales"]:
        cg = G.ClassifierGuidance(_null_model(den), lc, process, s, prediction="eps")
        xs = _sample(cg, shape, grid, ddim, cfg, seed + 10, cond=labels)
        save_png(out / f"classifier_s{s:g}.png", _rows(xs, per))
        rows.append({"mode": f"classifier guidance s = {s:g}", "scale": s,
                     "accuracy": _acc(evalc, xs, labels)})
    # the noisy classifier itself on held-out digits at a few noise levels
    @jax.jit
    def noisy_pred(c, x0, t, key):
        tt = jnp.full((x0.shape[0],), t, jnp.float32)
        return jnp.argmax(c(process.marginal(x0, tt, jax.random.normal(key, x0.shape)), tt), -1)

    xt_acc = {}
    for tv in (0.0, 0.25, 0.5, 0.75):
        pred = np.asarray(noisy_pred(clf_den, jnp.asarray(d["x_test"]), tv,
                                     jax.random.key(seed + 5)))
        xt_acc[f"t={tv:g}"] = float((pred == d["y_test"]).mean())
    res["classifier_guidance"] = rows
    res["noisy_classifier_test_accuracy"] = xt_acc

    # ---------------------------------------------------------------- inpainting
    ni = cfg["n_inpaint"]
    truth, ytrue = d["x_test"][:ni], d["y_test"][:ni]
    mask = (np.arange(8) < 4).astype(np.float32)[:, None, None]  # top half known: (8, 1, 1)
    known = truth * mask
    anc = S.DDPMAncestral("small")
    agrid = ddim_grid(cfg["anc_steps"])
    ishape = (ni, 8, 8, 1)
    nulls = jnp.full((ni,), NULL, jnp.int32)
    m_full = np.broadcast_to(mask, truth.shape)

    def inpaint_row(name, xs):
        return {"mode": name,
                "known_rmse": float(np.sqrt(((xs - truth) ** 2 * m_full).sum() / m_full.sum())),
                "unknown_rmse": float(np.sqrt(((xs - truth) ** 2 * (1 - m_full)).sum()
                                              / (1 - m_full).sum())),
                "accuracy": _acc(evalc, xs, ytrue)}

    # baseline: unconditional samples (the w = -1 row above), unrelated to the held-out digit
    rows = [inpaint_row("unconditional samples (no conditioning)", uncond[:ni])]
    rep = _sample(den, ishape, agrid, G.inpainting(anc, known, mask), cfg, seed + 20, cond=nulls)
    rows.append(inpaint_row("replacement (Score SDE)", rep))
    grids = [truth, known + (1 - mask) * -1.0, rep]
    for w in cfg["recon_w"]:
        rg = G.ReconstructionGuidance(_null_model(den), process, known, mask, w,
                                      prediction_in="eps")
        xs = _sample(rg, ishape, agrid, anc, cfg, seed + 20, prediction="x0", cond=nulls)
        rows.append(inpaint_row(f"reconstruction guidance w_r = {w:g}", xs))
        grids.append(xs)
    show = min(ni, 16)  # the grids show the first 16 of the evaluated images
    save_png(out / "inpainting.png",
             image_grid(np.concatenate([g[:show] for g in grids]), ncols=show, zoom=4))
    res["inpainting"] = rows

    # ---------------------------------------------------------------- colourisation
    col_truth = colour_digits(truth, ytrue)
    grey = col_truth.mean(-1)  # (B, 8, 8) = 0.6 x
    cs = _sample(col_den, (ni, 8, 8, 3), agrid, G.colorization(anc, grey), cfg, seed + 30)
    grey3 = np.repeat(grey[..., None], 3, -1)
    chroma = chroma_vectors()

    def colour_class(img, grey_img):
        """Nearest palette hue to the mean chroma of the brightest pixels."""
        fg = (grey_img > 0.0)[..., None]  # foreground of 0.6 x
        ch = ((img - grey_img[..., None]) * fg).sum((1, 2)) / np.maximum(fg.sum((1, 2)), 1)
        return np.argmax(ch @ chroma.T, -1)

    def colour_row(name, img):
        return {"mode": name, "rmse": float(np.sqrt(((img - col_truth) ** 2).mean())),
                "grey_rmse": float(np.sqrt(((img.mean(-1) - grey) ** 2).mean())),
                "colour_accuracy": float(np.mean(colour_class(img, grey) == ytrue))}

    # the ground truth checks the colour metric (1.0); the grey image has no chroma (every hue
    # ties and argmax picks hue 0)
    res["colourisation"] = [colour_row("ground truth (metric check)", col_truth),
                            colour_row("grey image (no colour)", grey3),
                            colour_row("colourisation (Score SDE, decoupled)", cs)]
    save_png(out / "colourisation.png",
             image_grid(np.concatenate([col_truth[:show], grey3[:show], cs[:show]]), ncols=show,
                        zoom=4))

    # ---------------------------------------------------------------- super-resolution
    low, _ = G.sr_pairs(jnp.asarray(truth), 2)
    bil = np.asarray(G.upsample(low, (8, 8)))
    sr_den = G.SRConditioned(sr_model)
    srs = _sample(sr_den, ishape, grid, ddim, cfg, seed + 40, cond=low)
    low_np = np.asarray(low)

    def sr_row(name, xs):
        return {"mode": name, "rmse": float(np.sqrt(((xs - truth) ** 2).mean())),
                "low_rmse": float(np.sqrt(((np.asarray(G.area_downsample(jnp.asarray(xs), 2))
                                            - low_np) ** 2).mean())),
                "accuracy": _acc(evalc, xs, ytrue)}

    res["super_resolution"] = [sr_row("bilinear upsampling", bil),
                               sr_row("SR3-style UNet (concatenation)", srs)]
    lows = np.asarray(G.upsample(low, (8, 8), "nearest"))
    save_png(out / "super_resolution.png",
             image_grid(np.concatenate([truth[:show], lows[:show], bil[:show], srs[:show]]),
                        ncols=show, zoom=4))
    res["seconds"] = time.time() - t_start
    return res


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def table(res: dict) -> str:
    f = lambda v: f"{v:.3f}"
    lines = [f"# Guidance and conditional generation on 8x8 digits ({res['mode']} run)", "",
             f"Written by `experiments/guidance_toy_images.py` on "
             f"{datetime.date.today().isoformat()}, {res['seconds'] / 60:.1f} min on "
             f"{jax.device_count()} {jax.devices()[0].platform.upper()} device(s).", "",
             "Evaluation classifier: logistic regression on the clean training digits; "
             f"accuracy on the held-out real digits **{f(res['real_test_accuracy'])}**.", "",
             "Training (EMA weights are sampled):", "",
             "| model | steps | final loss | seconds |", "|---|---|---|---|"]
    for k, v in res["train"].items():
        lines.append(f"| {k} | {v['steps']} | {f(v['final_loss'])} | {v['seconds']:.0f} |")
    lines += ["", "## Classifier-free guidance (Ho & Salimans w; w = -1 is the null label)", "",
              "Accuracy of the evaluation classifier against the requested label (chance 0.1).",
              "", "| mode | w | accuracy |", "|---|---|---|"]
    lines += [f"| {r['mode']} | {r['w']:g} | {f(r['accuracy'])} |" for r in res["cfg"]]
    lines += ["", "## Classifier guidance (ADM score form, on the unconditional model)", "",
              "| mode | scale | accuracy |", "|---|---|---|"]
    lines += [f"| {r['mode']} | {r['scale']:g} | {f(r['accuracy'])} |"
              for r in res["classifier_guidance"]]
    lines += ["", "Noise-aware classifier, top-1 accuracy on held-out digits noised to t: "
              + ", ".join(f"{k}: {f(v)}" for k, v in res["noisy_classifier_test_accuracy"].items())]
    lines += ["", "## Inpainting (held-out digits, top half known, bottom half generated)", "",
              "RMSE on [-1, 1] pixels against the held-out digit; accuracy against its label.",
              "", "| mode | known-region RMSE | unknown-region RMSE | accuracy |",
              "|---|---|---|---|"]
    lines += [f"| {r['mode']} | {f(r['known_rmse'])} | {f(r['unknown_rmse'])} | "
              f"{f(r['accuracy'])} |" for r in res["inpainting"]]
    lines += ["", "## Colourisation (held-out colour digits from their grey channel mean)", "",
              "Colour accuracy: the palette hue nearest to the mean chroma of the foreground "
              "equals the digit's (chance 0.1).", "",
              "| mode | RMSE vs truth | grey-channel RMSE | colour accuracy |", "|---|---|---|---|"]
    lines += [f"| {r['mode']} | {f(r['rmse'])} | {f(r['grey_rmse'])} | "
              f"{f(r['colour_accuracy'])} |" for r in res["colourisation"]]
    lines += ["", "## 2x super-resolution (4x4 area-downsampled held-out digits -> 8x8)", "",
              "| mode | RMSE vs ground truth | RMSE of its 4x4 downsample vs the input | "
              "accuracy |", "|---|---|---|---|"]
    lines += [f"| {r['mode']} | {f(r['rmse'])} | {f(r['low_rmse'])} | {f(r['accuracy'])} |"
              for r in res["super_resolution"]]
    lines += ["", "Grids: `unconditional.png`, `conditional.png`, `cfg_w*.png`, "
              "`classifier_s*.png` (one row per class); the first 16 held-out digits in "
              "`inpainting.png` (rows: truth, known part, replacement, reconstruction guidance "
              "per w_r), `colourisation.png` (truth, grey input, colourised) and "
              "`super_resolution.png` (truth, 4x4 input, bilinear, SR).", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run of every mode")
    p.add_argument("--out", type=Path, default=None,
                   help="directory of the PNG grids (default experiments/results/guidance_toy"
                        "[_tiny]); the table goes to experiments/results/guidance_toy_cpu.md "
                        "for a full run with the default --out, else into --out")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    tag = "tiny" if args.tiny else "cpu"
    out = args.out or RESULTS / ("guidance_toy_tiny" if args.tiny else "guidance_toy")
    res = run(args.tiny, out, args.seed)
    md = table(res)
    base = RESULTS if (args.out is None and not args.tiny) else out
    (base / f"guidance_toy_{tag}.md").write_text(md)
    (base / f"guidance_toy_{tag}.json").write_text(json.dumps(res, indent=2))
    print(md)
    return res


if __name__ == "__main__":
    main()
