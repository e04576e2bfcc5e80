"""The ``train`` command: a config and a workdir -> a trained, checkpointed run.

Resumes from the newest checkpoint in ``workdir``; writes ``run.json`` (the config and data
shape, what :func:`diffjax.load` reads), ``metrics.jsonl``, TensorBoard events, orbax
checkpoints, and at the end a sample grid (and ``quality.json`` when ``data.holdout`` is set).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import diffjax as dj
from diffjax import train as T
from diffjax.run.build import Built, build, sample_weights
from diffjax.run.config import section, to_dict

__all__ = ["train", "write_samples", "quality_figure", "class_labels", "check_train_keys"]


def class_labels(n: int, num_classes: int | None, offset: int = 0):
    """Class-balanced labels ``(offset + i) mod K`` of a class-conditional run, else None."""
    if not num_classes:
        return None
    return (jnp.arange(n, dtype=jnp.int32) + offset) % num_classes


def write_samples(built: Built, params, workdir, *, num_samples=None, seed=None, quiet=False,
                  name="samples", weights="params") -> dict:
    """Draw samples with the run's method and write ``<name>.npz`` and ``<name>.png``."""
    from diffjax.utils import density_image, image_grid, save_png

    scfg = built.config.get("sample") or {}
    n = int(num_samples or scfg.get("num_samples", 64))
    key = jax.random.key(int(seed if seed is not None else built.seed))
    cond = class_labels(n, built.setup.num_classes)
    x = np.asarray(built.method.sample(params, key, n, cond))
    workdir = Path(workdir)
    np.savez(workdir / f"{name}.npz", samples=x)
    if x.ndim == 2 and x.shape[1] == 2:
        save_png(workdir / f"{name}.png", density_image(x))
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        save_png(workdir / f"{name}.png", image_grid(x[:64]))
    elif x.ndim == 4:  # latents: a preview of the first 3 channels (not decoded by a VAE)
        v = x[:64, ..., :3]
        save_png(workdir / f"{name}.png", image_grid(v / max(float(np.abs(v).max()), 1e-6)))
    if not quiet:
        print(f"wrote {n} samples to {workdir / (name + '.npz')} and {workdir / (name + '.png')}")
    return {"num_samples": n, "path": str(workdir / f"{name}.png"), "weights": weights}


def train(config, workdir) -> dict:
    """Train from ``config`` in ``workdir`` (resuming if checkpoints exist); then sample.
    Bad step counts and intervals fail before any model is built or any file is written."""
    check_train_keys(config)
    workdir = Path(workdir)
    built = build(config)
    workdir.mkdir(parents=True, exist_ok=True)
    data, setup = built.data, built.setup
    scfg = config.get("sample") or {}
    if not config.get("method") and float(scfg.get("guidance", 1.0)) != 1.0 \
            and not setup.num_classes:
        raise ValueError(f"sample.guidance={scfg.get('guidance')} needs a class-conditional "
                         "model (model.num_classes)")
    tcfg = config.train
    mcfg = section(config.get("mesh"))
    mesh = T.make_mesh(mcfg.get("data", -1), mcfg.get("fsdp", 1))
    rules = mcfg.get("rules", None)
    batch_size = data.batch_size
    if batch_size % mesh.size:
        raise ValueError(f"data.batch_size={batch_size} must be divisible by the {mesh.size} "
                         "devices")
    ck = T.Checkpointer(workdir / "checkpoints", max_to_keep=int(tcfg.get("max_to_keep", 3)))
    state = T.restore_or_init(ck, lambda: built.init_state(mesh, rules), data.loader)
    start = int(state.step)
    sh = T.state_shardings(state, mesh, rules)
    batch_sh = {"image": T.batch_sharding(mesh, 1 + len(setup.x_shape))}
    if setup.num_classes:
        batch_sh["label"] = T.batch_sharding(mesh, 1)
    step_fn = built.method.train_step or T.make_train_step(
        built.method.loss, built.optimizer, built.ema_specs, batch_size,
        loss_takes_state=True, update_extra=built.method.update_extra)
    step = T.jit_train_step(step_fn, sh, batch_sh)
    keep = ("image", "label") if setup.num_classes else ("image",)
    to_device = lambda b: T.shard_batch({k: v for k, v in b.items() if k in keep}, mesh)
    meta = {"config": to_dict(config), "x_shape": list(setup.x_shape),
            "has_label": data.has_label, "version": dj.__version__}
    (workdir / "run.json").write_text(json.dumps(meta, indent=1))
    print(f"training {config.model.name} on {config.data.name} {setup.x_shape} "
          f"({built.method.name}) from step {start} to {int(tcfg.num_steps)} on {mesh.size} "
          "device(s)")
    from diffjax.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(workdir / "tensorboard")
    every = int(tcfg.get("sample_every", 0))

    def grid_cb(st):
        params, which = sample_weights(config, st)
        write_samples(built, params, workdir, quiet=True, name=f"samples_{int(st.step):07d}",
                      weights=which)

    state, history = T.fit(state, step, iter(data.loader), num_steps=int(tcfg.num_steps),
                           to_device=to_device, checkpointer=ck, loader=data.loader,
                           save_every=int(tcfg.get("save_every", 1000)),
                           log_every=int(tcfg.get("log_every", 100)), workdir=workdir, meta=meta,
                           batch_size=batch_size, writer=writer,
                           callback=grid_cb if every else None, callback_every=every)
    ck.close()
    out = {"start_step": start, "end_step": int(state.step), "history": history}
    if int(state.step) >= int(tcfg.num_steps):
        params, which = sample_weights(config, state)
        out["samples"] = write_samples(built, params, workdir, weights=which)
        if data.heldout is not None:
            out["quality"] = quality_figure(np.load(workdir / "samples.npz")["samples"], data,
                                            workdir)
            writer.scalar("quality/sw1_samples_vs_heldout", out["quality"]["sw1_samples"],
                          int(state.step))
    writer.close()
    summary = {k: v for k, v in out.items() if k != "history"}
    if history:
        summary["final_loss"] = history[-1]["loss"]
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("summary:", json.dumps(summary, default=str))
    return out


def check_train_keys(config):
    """``train.num_steps``, ``train.log_every``, ``train.save_every`` and ``data.batch_size``
    must be integers >= 1 (``sample_every`` >= 0); raises naming the key."""
    tcfg, dcfg = section(config.get("train")), section(config.get("data"))
    for where, d, key, lo in (("train", tcfg, "num_steps", 1), ("train", tcfg, "log_every", 1),
                              ("train", tcfg, "save_every", 1),
                              ("train", tcfg, "sample_every", 0),
                              ("data", dcfg, "batch_size", 1)):
        v = d.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise ValueError(f"{where}.{key} must be an integer >= {lo}; got {v!r}")
    if tcfg.get("num_steps") is None:
        raise ValueError("train.num_steps is required (an integer >= 1)")


def quality_figure(samples, data, workdir) -> dict:
    """How well the samples match held-out data, beside two references, in ``quality.json``.

    * ``classifier score``: the Inception-Score formula (Salimans et al. 2016) with a
      logistic-regression classifier fitted on the training images
      (:mod:`diffjax.metrics.classifier_score`; labelled data only), and its mean top-class
      confidence. Higher is better; held-out real images give the ceiling, a Gaussian fit to
      the training data (first and second moments only) the floor a model must beat.
    * ``sliced W1`` in pixel space to the held-out images (lower is better; weakly
      discriminative at these sample sizes, reported for completeness).
    """
    from diffjax.metrics.classifier_score import classifier_score, fit_classifier

    held = data.heldout.reshape(len(data.heldout), -1)
    n = min(len(held), len(samples))
    gen = np.asarray(samples, np.float32).reshape(len(samples), -1)[:n]
    train_imgs = np.asarray(data.source.images, np.float32).reshape(len(data.source), -1)
    rng = np.random.default_rng(0)
    gauss = rng.multivariate_normal(train_imgs.mean(0), np.cov(train_imgs.T), size=n)
    sw = lambda a: dj.analytic.sliced_wasserstein(a, held[:n], num_quantiles=99)
    q = {"n": n, "sw1_samples": sw(gen), "sw1_train_images": sw(train_imgs[:n]),
         "sw1_gaussian_fit": sw(gauss)}
    if data.source.labels is not None:
        clf = fit_classifier(train_imgs, data.source.labels)
        for name, x in (("samples", gen), ("heldout", held[:n]), ("gaussian_fit", gauss)):
            c = classifier_score(clf, x)
            q[f"classifier_score_{name}"] = c["score"]
            q[f"confidence_{name}"] = c["confidence"]
        print(f"quality, digit-classifier score over {n} images (higher is better): samples "
              f"{q['classifier_score_samples']:.2f} | held-out real "
              f"{q['classifier_score_heldout']:.2f} | Gaussian fit "
              f"{q['classifier_score_gaussian_fit']:.2f}")
    (Path(workdir) / "quality.json").write_text(json.dumps(q, indent=2))
    print(f"quality, sliced W1 to {n} held-out images (lower is better): samples "
          f"{q['sw1_samples']:.4f} | real training images {q['sw1_train_images']:.4f} | "
          f"Gaussian fit {q['sw1_gaussian_fit']:.4f}")
    return q
