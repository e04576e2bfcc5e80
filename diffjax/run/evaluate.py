"""The ``eval`` command: which samples, which feature space, which reference, which metrics.

:mod:`diffjax.evaluation` does the work and documents the FID-50k protocol (Heusel et al.
2017; sample ``i`` seeded by ``(seed, i)``, so the set is the same at any chunk size and device
count); this module reads the ``eval`` config section and the run's checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import methods as M
from diffjax.run.build import (
    build_sampling,
    data_source,
    plain_loss,
    sample_weights,
)
from diffjax.run.config import section
from diffjax.run.load import restore
from diffjax.run.train import class_labels

__all__ = ["evaluate"]


def _eval_reference_source(config, which: str):
    """``eval.reference`` naming data: ``'train'`` (the training records, without the
    ``data.holdout`` ones), ``'heldout'`` (those) or another split of ``data.name``. Returns
    ``(images, description)``; built from the data section only (no model)."""
    from diffjax import data as D

    dcfg = section(config.data)
    name = dcfg.get("name")
    holdout = int(dcfg.get("holdout", 0) or 0)
    if which == "heldout":
        if not holdout:
            raise ValueError("eval.reference='heldout' needs data.holdout > 0")
        dcfg["split"] = dcfg.get("split", "train")
    elif which != "train":
        dcfg["split"] = which
    source = data_source(dcfg)
    if isinstance(source, D.ArraySource):
        images = source.images
    else:  # file-backed (TFDS, folders): records in index order, streamed in batches
        images = (np.stack([source[j]["image"] for j in range(i, min(i + 256, len(source)))])
                  for i in range(0, len(source), 256))
    n = len(source)
    if holdout and which in ("train", "heldout"):
        if not isinstance(source, D.ArraySource):
            raise ValueError("data.holdout needs an in-memory data set")
        images = images[-holdout:] if which == "heldout" else images[:-holdout]
        n = len(images)
    return images, n, f"{name} ({which}, {n} records)"


def _eval_sampler(config, built, state):
    """``(sample_fn(key, batch, offset), protocol)`` for :func:`diffjax.evaluation.generate`:
    the run's method samples, sample ``i`` seeded by ``(key, i)`` and labelled ``i mod K`` for
    class-conditional models (per-sample, so chunking changes nothing)."""
    params, which = sample_weights(config, state)
    k_cls = built.setup.num_classes
    scfg = config.get("sample") or {}
    protocol = {"weights": which, "class_labels":
                "i mod K (class-balanced)" if k_cls else "none (unconditional)"}
    method = built.method
    if method.name == "diffusion":
        sampling = build_sampling(config, built.setup.process)
        protocol.update(sampler=scfg.get("sampler", "ddim"), guidance=sampling.guidance,
                        num_steps=int(len(sampling.grid) - 1), step=str(sampling.step),
                        clip_x0=sampling.clip_x0)
    else:
        protocol.update(sampler=f"method {method.name} ({method.nfe} network evaluations)")
    def sample_fn(key, b, off):
        return method.sample(params, key, b, class_labels(b, k_cls, off), off)

    from diffjax.run.encode import decoder_of

    decode = decoder_of(built)
    if decode is None:
        return sample_fn, protocol
    # latent models: the samples are decoded by config.vae before features are taken
    protocol["vae"] = section(config.vae).get("preset", "sd")
    return (lambda key, b, off: decode(sample_fn(key, b, off))), protocol


def _eval_settings(config, num_samples):
    from diffjax import evaluation as EV

    ecfg = section(config.get("eval"))
    known = ("metrics", "num_samples", "batch_size", "inception_weights", "reference",
             "reference_cache", "reference_max", "features", "quantize", "is_splits", "pr_k",
             "feature_batch_size", "resize", "save_samples", "seed", "bpd_num", "loss_batches",
             "progress")
    bad = sorted(k for k in ecfg if k not in known)
    if bad:
        raise ValueError(f"unknown config keys {['eval.' + k for k in bad]}; expected some of "
                         f"{['eval.' + k for k in known]}")
    scfg = config.get("sample") or {}
    n = int(num_samples or ecfg.get("num_samples", 0) or scfg.get("num_samples", 64))
    if n < 1:
        raise ValueError(f"eval.num_samples must be >= 1; got {n}")
    ecfg["num_samples"] = n
    ecfg.setdefault("batch_size", min(n, 256))
    ecfg.setdefault("reference", "train")
    ecfg.setdefault("features", "auto")
    ecfg.setdefault("quantize", "round")
    ecfg.setdefault("seed", int(config.get("seed", 0)))
    metrics = ecfg.get("metrics", "auto")
    if isinstance(metrics, str):  # 'fid,is' (a command-line override) or one name
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    ecfg["metrics"] = tuple(metrics)
    allowed = ("auto", "loss", "bpd") + EV.IMAGE_METRICS + EV.POINT_METRICS
    bad = [m for m in ecfg["metrics"] if m not in allowed]
    if bad or not ecfg["metrics"]:
        raise ValueError(f"eval.metrics={metrics!r}: unknown {bad}; expected 'auto' or some "
                         f"of {allowed}")
    return ecfg


def _eval_features(ecfg, config):
    from diffjax import evaluation as EV

    name = ecfg["features"]
    if name == "auto":  # the real FID Inception when given, the digit classifier for digits
        name = ("inception" if ecfg.get("inception_weights")
                else "digits" if section(config.data).get("name") == "digits" else "inception")
    try:
        return EV.feature_space(name, inception_weights=ecfg.get("inception_weights"),
                                resize=ecfg.get("resize", "pytorch"),
                                batch_size=int(ecfg.get("feature_batch_size", 200)),
                                quantize_mode=ecfg["quantize"], seed=int(ecfg["seed"]))
    except ValueError as e:
        raise ValueError(f"eval.features={ecfg['features']!r}: {e}") from None


def _eval_loss(config, built, state, batches: int) -> float:
    """The plain denoising loss of the evaluated weights on ``batches`` fresh data batches
    (indices drawn uniformly, whatever training's schedule sampler)."""
    loss, lkw, _ = plain_loss(config)
    params, _ = sample_weights(config, state)
    setup = built.setup
    prediction = build_sampling(config, setup.process).prediction
    fn = jax.jit(lambda p, k, x, y: loss(setup.network.bind(p), k, x, process=setup.process,
                                         prediction=prediction, cond=y, **lkw)[0].mean())
    it = iter(built.data.loader)
    vals = []
    for i in range(batches):
        b = next(it)
        vals.append(float(fn(params, jax.random.key(1000 + i), jnp.asarray(b["image"]),
                             jnp.asarray(b["label"]) if setup.num_classes else None)))
    return float(np.mean(vals))


def evaluate(config, workdir, num_samples=None, images=None) -> dict:
    """Evaluate the newest checkpoint in ``workdir`` (or, with ``images``, samples made
    elsewhere) with :mod:`diffjax.evaluation`; writes ``eval.json`` and ``eval.md``.

    ``eval`` config keys (all optional): ``metrics`` (``auto``, or a subset of ``loss``, ``fid``,
    ``is``, ``sfid``, ``pr``, ``bpd`` for images and ``loss``, ``sw1``, ``mmd``, ``energy``,
    ``bpd`` for points; ``auto`` = the held-out loss and all metrics the feature space gives),
    ``num_samples`` (default ``sample.num_samples``; the ``--num_samples`` flag wins; papers use
    50,000), ``batch_size`` (samples per chunk), ``features`` (``auto``: ``inception`` when
    ``inception_weights`` is set, ``digits`` for the embedded digits; or ``inception``,
    ``random_init``, ``pixels``, ``digits``), ``inception_weights`` (converted FID Inception
    ``.npz``), ``reference`` (``train``, ``heldout``, a split name, or a path: a statistics
    ``.npz`` with ``mu``/``sigma``, an image ``.npz`` or folder), ``reference_cache`` (default
    ``<workdir>/reference_<features>_<reference>.npz``), ``reference_max``, ``quantize``
    (``round``/``floor``), ``is_splits`` (10), ``pr_k`` (3), ``feature_batch_size``, ``resize``
    (``pytorch``/``tf1``), ``save_samples`` (uint8 samples to ``eval_samples.npz``, default
    true), ``seed``, ``bpd_num`` (data points for ``bpd``, default 64), ``loss_batches`` (10).

    Args:
      config: the experiment config.
      workdir: holds the checkpoints; receives the reports (and the reference cache).
      num_samples: overrides ``eval.num_samples``.
      images: a folder of PNG/JPEG files or an ``.npz`` of samples made elsewhere (see
        :func:`diffjax.evaluation.load_samples`): evaluated without a checkpoint.

    Returns:
      The metrics (``step`` and ``loss`` too when a checkpoint was evaluated) and the
      ``protocol`` they were measured under.
    """
    from diffjax import evaluation as EV

    workdir = Path(workdir)
    ecfg = _eval_settings(config, num_samples)
    progress = bool(ecfg.get("progress", True))
    out: dict = {}
    protocol: dict = {"devices": jax.device_count()}
    s = state = samples = None
    if images is not None:
        samples = EV.load_samples(images)
        n = len(samples)
        points = samples.ndim == 2
        protocol.update(samples=f"{images} ({n} images, made elsewhere)" if not points
                        else f"{images} ({n} points, made elsewhere)")
    else:
        s, state = restore(config, workdir, data=True)  # fails first when there is none
        points = len(s.setup.x_shape) == 1
        n = ecfg["num_samples"]
        protocol.update(checkpoint_step=int(state.step))
    workdir.mkdir(parents=True, exist_ok=True)  # the reports go here
    metrics = ecfg["metrics"]
    auto = metrics == ("auto",)
    # a diffjax.methods config trains its own loss: the held-out `loss` is the plain one
    want_loss = ("loss" in metrics or auto and not config.get("method")) and state is not None
    if "loss" in metrics and state is None:
        raise ValueError("eval.metrics 'loss' needs a checkpoint, not --images")
    want_bpd = "bpd" in metrics
    if want_bpd and state is None:
        raise ValueError("eval.metrics 'bpd' needs a checkpoint, not --images")
    rest = tuple(m for m in metrics if m not in ("loss", "bpd", "auto"))
    if want_loss:
        out["step"] = int(state.step)
        out["loss"] = _eval_loss(config, s, state, int(ecfg.get("loss_batches", 10)))
        out["weights"] = sample_weights(config, state)[1]
    ref_spec = str(ecfg["reference"])
    is_path = ref_spec.endswith((".npz", ".npy")) or os.sep in ref_spec
    key = jax.random.key(int(ecfg["seed"]))
    if state is not None:
        sample_fn, sp = _eval_sampler(config, s, state)
        protocol.update(sp)
        protocol.update(seed=int(ecfg["seed"]), batch_size=int(ecfg["batch_size"]))
        chunks = EV.iter_generate(sample_fn, n, int(ecfg["batch_size"]), key=key,
                                  progress=progress)
    else:
        chunks = [samples]
    protocol["num_samples"] = n
    if points:
        ms = EV.POINT_METRICS if auto else rest
        if ms:
            x = np.concatenate(list(chunks))
            if is_path:
                ref, desc = EV.load_samples(ref_spec), ref_spec
            else:
                ref, _, desc = _eval_reference_source(config, ref_spec)
                ref = np.asarray(ref[:int(ecfg.get("reference_max", 20_000))], np.float64)
            out.update(EV.evaluate_points(x, ref, ms, seed=int(ecfg["seed"])))
            protocol.update(reference=f"{desc}, {len(ref)} points")
            if ecfg.get("save_samples", True) and state is not None:
                np.savez(workdir / "eval_samples.npz", samples=x)
    else:
        if s is not None and s.setup.x_shape[-1] not in (1, 3) and not config.get("vae"):
            raise ValueError(f"the model draws {s.setup.x_shape} arrays (latents?), not 1- or "
                             "3-channel images; decode them and evaluate the images with "
                             "--images")
        space = _eval_features(ecfg, config)
        ms = space.metrics() if auto else rest
        if ms:
            kept = []
            q = ecfg["quantize"]

            def quantised():
                for c in chunks:
                    c = EV.quantize(c, q)
                    if ecfg.get("save_samples", True) and state is not None:
                        kept.append(c)
                    yield c

            feats = EV.extract_features(quantised(), space, quantize_mode=q, progress=progress,
                                        total=n)
            if kept:
                np.savez(workdir / "eval_samples.npz", samples=np.concatenate(kept))
            from diffjax.run.encode import image_reference_config

            # a latent model with a VAE: reference images from the set encode.data encoded
            ref = _eval_reference(image_reference_config(config), ecfg, space, workdir,
                                  ref_spec, is_path, progress)
            out.update(EV.evaluate_images(feats, reference=ref, metrics=ms, features=space,
                                          is_splits=int(ecfg.get("is_splits", 10)),
                                          pr_k=int(ecfg.get("pr_k", 3))))
            protocol.update(features=space.description, comparable_to_papers=space.comparable
                            and n >= 50_000, reference=ref.meta.get("source", ref_spec),
                            num_reference=ref.num_samples, quantize=q,
                            is_splits=int(ecfg.get("is_splits", 10)),
                            pr_k=int(ecfg.get("pr_k", 3)))
    if want_bpd:
        out.update(_eval_bpd(config, s, state, ecfg, points))
        protocol.update(bpd_data=out.pop("bpd_data"), bpd_method=out["bpd_method"])
    EV.write_report(workdir, out, protocol)
    result = dict(out, protocol=protocol)
    print(json.dumps(result, indent=2, default=str))
    print(f"wrote {workdir / 'eval.json'} and {workdir / 'eval.md'}")
    return result


def _eval_reference(config, ecfg, space, workdir, ref_spec, is_path, progress):
    from diffjax import evaluation as EV

    q = ecfg["quantize"]
    if is_path:
        p = Path(ref_spec).expanduser()
        if p.suffix == ".npz" and p.exists():
            with np.load(p) as z:
                stats_only = "mu" in z.files and not ({"arr_0", "samples"} & set(z.files))
            if stats_only:  # precomputed statistics (ours, pytorch-fid, ADM)
                return EV.load_reference(p, space=space.name)
        images, desc, total = EV.load_samples(p), str(p), None
        tag = p.stem
    else:
        images, total, desc = _eval_reference_source(config, ref_spec)
        tag = f"{section(config.data).get('name')}_{ref_spec}"
    limit = ecfg.get("reference_max", None)
    cache = ecfg.get("reference_cache", None)
    if cache is None:
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in
                       f"{space.name}_{tag}_{q}_{limit or 'all'}")
        cache = Path(workdir) / f"reference_{slug}.npz"
    return EV.reference_features(images, space, cache_path=cache, max_samples=limit,
                                 quantize_mode=q, source=desc, progress=progress, total=total)


def _eval_bpd(config, s, state, ecfg, points) -> dict:
    """``bpd`` of the evaluated weights on the held-out records (else the data split)."""
    from diffjax import evaluation as EV

    params, _ = sample_weights(config, state)
    sampling = build_sampling(config, s.setup.process)
    model = M.sampling_model(s.setup, params, sampling, guided=False)
    which_data = "heldout" if s.data.heldout is not None else "train"
    data, _, desc = _eval_reference_source(config, which_data)
    n = int(ecfg.get("bpd_num", 64))
    x = np.asarray(data[:n] if hasattr(data, "shape") else np.concatenate(list(data))[:n],
                   np.float32)
    if s.setup.num_classes:
        raise ValueError("eval.metrics 'bpd' is not wired for class-conditional models")
    if not points:
        x = EV.quantize(x, ecfg["quantize"]).astype(np.float32) / 127.5 - 1.0
    res = EV.evaluate_bits_per_dim(model, x, process=s.setup.process, prediction=sampling.prediction,
                          key=jax.random.key(int(ecfg["seed"]) + 1),
                          learned_variance=sampling.learned_variance, image_data=not points)
    res["bpd_data"] = f"{desc}, first {len(x)}"
    return res
