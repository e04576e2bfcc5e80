"""The ``train`` command: a config and a workdir -> a trained, checkpointed run.

Resumes from the newest checkpoint in ``workdir``; writes ``run.json`` (the config and data
shape, what :func:`diffjax.load` reads), ``metrics.jsonl``, TensorBoard events, orbax
checkpoints, and at the end a sample grid (and ``quality.json`` when ``data.holdout`` is set).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import diffjax as dj
from diffjax import train as T
from diffjax.run.build import Built, build, sample_weights
from diffjax.run.config import config_changes, section, to_dict

__all__ = ["train", "write_samples", "quality_figure", "class_labels", "check_train_keys",
           "check_drift", "ema_horizon_warnings", "has_checkpoint", "move_checkpoints_aside",
           "previous_final_loss",
           "SHAPE_KEYS"]


def class_labels(n: int, num_classes: int | None, offset: int = 0):
    """Class-balanced labels ``(offset + i) mod K`` of a class-conditional run, else None."""
    if not num_classes:
        return None
    return (jnp.arange(n, dtype=jnp.int32) + offset) % num_classes


def write_samples(built: Built, params, workdir, *, num_samples=None, seed=None, quiet=False,
                  name="samples", weights="params") -> dict:
    """Draw samples with the run's method and write ``<name>.npz`` and ``<name>.png``."""
    from diffjax.utils import density_image, image_grid, save_png

    if built.method.sample is None:
        raise ValueError(f"method {built.method.name!r} as configured cannot generate (no "
                         "data-free start, e.g. Cold Diffusion's blur without "
                         "method.degradation_kwargs.discrete=True); it restores degraded data")
    scfg = built.config.get("sample") or {}
    n = int(num_samples or scfg.get("num_samples", 64))
    key = jax.random.key(int(seed if seed is not None else built.seed))
    cond = class_labels(n, built.setup.num_classes)
    x = np.asarray(built.method.sample(params, key, n, cond))
    from diffjax.run.encode import decoder_of

    decode = decoder_of(built)
    if decode is not None:  # latents -> images through the config's VAE (config.vae)
        x = decode(x)
    workdir = Path(workdir)
    np.savez(workdir / f"{name}.npz", samples=x)
    if x.ndim == 2 and x.shape[1] == 2:
        save_png(workdir / f"{name}.png", density_image(x))
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        save_png(workdir / f"{name}.png", image_grid(x[:64]))
    elif x.ndim == 5 and x.shape[-1] in (1, 3):  # videos: one row of frames per clip
        save_png(workdir / f"{name}.png", image_grid(x[:16].reshape((-1,) + x.shape[2:]),
                                                     ncols=x.shape[1]))
    elif x.ndim == 4:  # latents: a preview of the first 3 channels (not decoded by a VAE)
        v = x[:64, ..., :3]
        save_png(workdir / f"{name}.png", image_grid(v / max(float(np.abs(v).max()), 1e-6)))
    if not quiet:
        print(f"wrote {n} samples to {workdir / (name + '.npz')} and {workdir / (name + '.png')}")
    return {"num_samples": n, "path": str(workdir / f"{name}.png"), "weights": weights}


def train(config, workdir, *, restart: bool = False) -> dict:
    """Train from ``config`` in ``workdir`` (resuming if checkpoints exist); then sample.

    Bad step counts, intervals and batch sizes fail before any model is built or any file is
    written. On resume the config saved in ``workdir/run.json`` is compared with ``config``
    first (:func:`check_drift`): a change of a key that alters the state's shapes stops the
    run; a change of any other key is printed (``old -> new``) and the run resumes.

    Args:
      config: the run's config.
      workdir: the run's folder (``run.json``, ``checkpoints/``, metrics, samples).
      restart: start from step 0: an existing ``checkpoints/`` is moved aside to
        ``checkpoints.old-<timestamp>`` (never deleted), whatever the config changes.

    Returns:
      ``{"start_step", "end_step", "history"}`` and, when training finished, ``"samples"``
      (and ``"quality"`` with ``data.holdout``).
    """
    check_train_keys(config)
    workdir = Path(workdir)
    tcfg = config.train
    mcfg = section(config.get("mesh"))
    mesh = T.make_mesh(mcfg.get("data", -1), mcfg.get("fsdp", 1))
    rules = mcfg.get("rules", None)
    _check_batch(section(config.get("data")).get("batch_size"), mesh)
    changes = check_drift(config, workdir, restart=restart)
    built = build(config)
    data, setup = built.data, built.setup
    scfg = config.get("sample") or {}
    if not config.get("method") and float(scfg.get("guidance", 1.0)) != 1.0 \
            and not setup.num_classes:
        raise ValueError(f"sample.guidance={scfg.get('guidance')} needs a class-conditional "
                         "model (model.num_classes); expected sample.guidance=1.0")
    workdir.mkdir(parents=True, exist_ok=True)
    if restart:
        moved = move_checkpoints_aside(workdir)
        print(f"--restart: moved {workdir / 'checkpoints'} aside to {moved}; training from "
              "step 0" if moved else f"--restart: no checkpoints under {workdir}; training "
              "from step 0")
    elif changes:
        print(f"resuming from {workdir / 'checkpoints'} with a changed config:", flush=True)
        for key, old, new in changes:
            print(f"  {key}: {old!r} -> {new!r}", flush=True)
    batch_size = data.batch_size
    _check_batch(batch_size, mesh)
    ck = T.Checkpointer(workdir / "checkpoints", max_to_keep=int(tcfg.get("max_to_keep", 3)))
    state = T.restore_or_init(ck, lambda: built.init_state(mesh, rules), data.loader,
                              abstract_state=lambda: built.abstract_state(mesh, rules))
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
    for line in ema_horizon_warnings(built.ema_specs, int(tcfg.num_steps), batch_size,
                                     sample_weights(config, state)[1]):
        print(line, flush=True)
    print(f"training {config.model.name} on {config.data.name} {setup.x_shape} "
          f"({built.method.name}) from step {start} to {int(tcfg.num_steps)} on {mesh.size} "
          "device(s)", flush=True)
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
                           log_fn=lambda line: print(line, flush=True),
                           callback=grid_cb if every and built.method.sample else None,
                           callback_every=every)
    ck.close()
    out = {"start_step": start, "end_step": int(state.step), "history": history}
    if built.method.sample is None:
        print(f"method {built.method.name!r} as configured restores degraded data and cannot "
              "generate: no sample grid written", flush=True)
    elif int(state.step) >= int(tcfg.num_steps):
        params, which = sample_weights(config, state)
        out["samples"] = write_samples(built, params, workdir, weights=which)
        if data.heldout is not None:
            out["quality"] = quality_figure(np.load(workdir / "samples.npz")["samples"], data,
                                            workdir)
            writer.scalar("quality/sw1_samples_vs_heldout", out["quality"]["sw1_samples"],
                          int(state.step))
    writer.close()
    summary = {k: v for k, v in out.items() if k != "history"}
    final = history[-1]["loss"] if history else previous_final_loss(workdir, int(state.step))
    if final is not None:
        summary["final_loss"] = final
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("summary:", json.dumps(summary, default=str))
    return out


def ema_horizon_warnings(specs: dict, num_steps: int, batch_size: int, sampled: str) -> list:
    """Warnings for EMAs that cannot move away from the initialisation within the run.

    An EMA of decay ``d`` averages over about ``1 / (1 - d)`` steps (EDM's half-life of
    ``h`` kimg: ``1000 h / (B ln 2)`` steps at batch ``B``); a run shorter than that samples
    from weights still close to the random initialisation, which looks like pure noise (a
    recipe's 0.9999 in a few hundred steps, say). Only the EMA the run samples from
    (``sample.ema``) is reported.

    Returns:
      One line per such EMA (empty when all is well).
    """
    spec = specs.get(sampled)
    if spec is None:
        return []
    if spec.decay is not None:
        horizon = 1.0 / max(1.0 - spec.decay, 1e-12)
        what, fix = f"decay {spec.decay}", f"--config.ema.{sampled}=0.99"
    elif spec.halflife_kimg is not None:
        horizon = 1000.0 * spec.halflife_kimg / (batch_size * np.log(2.0))
        what, fix = (f"half-life {spec.halflife_kimg} kimg", f"--config.ema.{sampled}."
                     f"halflife_kimg={0.07 * batch_size:g}")
    else:  # a schedule (CT's mu(k)): the method owns it
        return []
    if num_steps >= horizon:
        return []
    return [f"warning: the samples use ema.{sampled} ({what}: an average over ~{horizon:,.0f} "
            f"steps) but train.num_steps={num_steps}; its weights will stay close to the "
            f"initialisation and samples will look like noise. For a short run set {fix}, or "
            f"sample the online weights with --config.sample.ema=params"]


def check_train_keys(config):
    """Check the keys ``train`` reads before anything is built or written.

    ``train.num_steps``, ``train.log_every``, ``train.save_every``, ``train.max_to_keep`` and
    ``data.batch_size`` must be integers >= 1 (``train.sample_every`` >= 0).

    Raises:
      ValueError: naming the key, the expected value and the value found.
    """
    tcfg, dcfg = section(config.get("train")), section(config.get("data"))
    for where, d, key, lo in (("train", tcfg, "num_steps", 1), ("train", tcfg, "log_every", 1),
                              ("train", tcfg, "save_every", 1),
                              ("train", tcfg, "max_to_keep", 1),
                              ("train", tcfg, "sample_every", 0),
                              ("data", dcfg, "batch_size", 1)):
        v = d.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise ValueError(f"{where}.{key} must be an integer >= {lo}; got {v!r}")
    if tcfg.get("num_steps") is None:
        raise ValueError("train.num_steps is required (an integer >= 1)")


def _check_batch(batch_size, mesh):
    # data.batch_size is the global batch and mesh.size counts the devices of every host
    if batch_size is not None and int(batch_size) % mesh.size:
        raise ValueError(f"data.batch_size={batch_size} (the global batch) must be divisible "
                         f"by the {mesh.size} devices of the mesh (mesh.data x mesh.fsdp, all "
                         f"hosts); expected a multiple of {mesh.size}")


#: config keys whose change alters the training state's shapes (a prefix ends in ".")
SHAPE_KEYS = ("model.", "process.", "data.name", "data.image_size", "data.channels",
              "method.name")


def _alters_shapes(key: str) -> bool:
    return any(key.startswith(k) if k.endswith(".") else key == k for k in SHAPE_KEYS) \
        or key in ("model", "process")


def has_checkpoint(workdir) -> bool:
    """Whether ``workdir/checkpoints`` holds at least one step (creates nothing)."""
    ckdir = Path(workdir) / "checkpoints"
    return ckdir.is_dir() and any(p.name.isdigit() for p in ckdir.iterdir())


def check_drift(config, workdir, *, restart: bool = False) -> list:
    """Compare ``config`` with the one a run's checkpoints were trained with.

    Only a resume is checked: ``workdir`` holds ``run.json`` and at least one checkpoint.

    Args:
      config: the new config.
      workdir: the run's folder.
      restart: the run starts over (``--restart``): shape changes are allowed.

    Returns:
      ``[(key, old, new), ...]``: every dotted key that changed (``[]`` for a fresh run).

    Raises:
      ValueError: without ``restart``, when a key in :data:`SHAPE_KEYS` (any ``model.*`` or
        ``process.*`` key, ``data.name``, the method's name) changed; the message lists them
        and the two ways out.
    """
    workdir = Path(workdir)
    if not (workdir / "run.json").is_file() or not has_checkpoint(workdir):
        return []
    saved = json.loads((workdir / "run.json").read_text()).get("config") or {}
    new = to_dict(config)
    changes = config_changes(saved, new)
    name = lambda c: (c.get("method") or {}).get("name", "diffusion")
    if name(saved) != name(new) and not any(k == "method.name" for k, _, _ in changes):
        changes.append(("method.name", name(saved), name(new)))
    shape = [c for c in changes if _alters_shapes(c[0])]
    if shape and not restart:
        listed = "; ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in shape)
        raise ValueError(
            f"the config changed in keys that alter the model's shapes since the checkpoints "
            f"in {workdir / 'checkpoints'} were written ({listed}); expected the saved values "
            f"to resume. Train in a new --workdir, or add --restart to move checkpoints/ aside "
            f"to checkpoints.old-<timestamp> and train from step 0")
    return changes


def move_checkpoints_aside(workdir):
    """Rename ``workdir/checkpoints`` to ``checkpoints.old-<YYYYmmdd-HHMMSS>`` (never deletes).

    Returns:
      The new path, or ``None`` when there was no ``checkpoints/``.
    """
    ckdir = Path(workdir) / "checkpoints"
    if not ckdir.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, i = ckdir.with_name(f"checkpoints.old-{stamp}"), 1
    while dest.exists():
        i += 1
        dest = ckdir.with_name(f"checkpoints.old-{stamp}-{i}")
    ckdir.rename(dest)
    return dest


def previous_final_loss(workdir, step: int):
    """The final loss a finished run recorded for ``step`` (``summary.json``, else the last
    line of ``metrics.jsonl`` at that step), or ``None``: a rerun that trains no step keeps
    it."""
    workdir = Path(workdir)
    try:
        prev = json.loads((workdir / "summary.json").read_text())
        if prev.get("end_step") == step and prev.get("final_loss") is not None:
            return prev["final_loss"]
    except (OSError, ValueError):
        pass
    try:
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        last = [m for m in map(json.loads, filter(None, lines)) if m.get("step") == step]
        return last[-1]["loss"] if last else None
    except (OSError, ValueError, KeyError):
        return None


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
