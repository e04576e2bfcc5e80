"""Command line: ``python -m diffjax <command> [flags]``.

Commands:
  demo   Sample a 2-D Gaussian mixture with every sampler family, driven by the mixture's
         exact denoiser, and report sliced-Wasserstein distance to exact draws, mode weights,
         network evaluations and time; writes ``demo.md`` and one PNG per sampler to
         ``--workdir``. No data, no weights, no download: a few minutes on a laptop CPU.

  train  Train from a config (``--config=configs/<name>.py[:smoke]``) in ``--workdir``,
         resuming from its checkpoints; writes metrics.jsonl and a sample grid at the end.
  sample Sample from the newest checkpoint in ``--workdir`` (EMA weights).
  eval   Sample ``eval.num_samples`` images from the newest checkpoint (per-sample seeds,
         sharded over the devices) and report FID / Inception Score / sFID / precision-recall
         against the reference set (2-D data: sliced Wasserstein, MMD, energy distance), the
         held-out denoising loss and, if asked, bits/dim; writes ``eval.json`` and ``eval.md``
         (config section ``eval``, :func:`diffjax.experiment.evaluate`). ``--images=PATH``
         evaluates a folder or ``.npz`` of samples made elsewhere, without a checkpoint.

Flags are absl flags; config keys are overridden with ``--config.train.num_steps=100``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "run_demo"]


def _demo_cases(dj, S):
    """(name, step, process, grid, nfe, x_init_kind) of the demo, one per sampler family."""
    import jax.numpy as jnp

    vp, edm, ve, lin = dj.VP(), dj.EDM(), dj.VE(0.01, 10.0), dj.Linear()
    ddpm = dj.DiscreteVP.linear(1000)
    return [
        ("DDPM ancestral (T=1000)", S.DDPMAncestral("large"), ddpm,
         dj.discrete_grid(range(1000), 1000), 1000),
        ("DDPM respaced (iDDPM, 100 of 1000)", S.DDPMAncestral("small"), ddpm,
         dj.discrete_grid(dj.processes.space_timesteps(1000, "100"), 1000), 100),
        ("DDIM eta=0 (50 steps)", S.DDIM(0.0), ddpm,
         dj.discrete_grid(dj.processes.space_timesteps(1000, "50"), 1000), 50),
        ("EDM Heun (18 steps)", S.Heun(), edm, dj.karras_grid(edm, 18), 35),
        ("EDM stochastic (64 steps, churn 40)", S.EDMStochastic(40.0, 0.05, 50.0, 1.003), edm,
         dj.karras_grid(edm, 64), 127),
        ("DPM-Solver++(2M) (20 steps)", S.DPMSolverPP2M(), vp, dj.karras_grid(vp, 20), 20),
        ("PF-ODE RK4 (25 steps)", S.RK4(), vp, dj.log_snr_grid(vp, 25, 1.0, 1e-3), 100),
        ("VP SDE Euler-Maruyama (1000)", S.EulerMaruyama(), vp, dj.uniform_grid(1000, 1.0, 1e-3), 1000),
        ("VE predictor-corrector (500 x RD+Langevin)",
         S.PredictorCorrector(S.ReverseDiffusion(), S.LangevinCorrector(0.16)), ve,
         dj.uniform_grid(500), 1000),
        ("NCSN annealed Langevin (10 x 100)", S.AnnealedLangevin(2e-5, 0.01, 100),
         dj.VE(0.01, 1.0), dj.uniform_grid(9), 1000),
        ("SiT SDE, w = sigma (500)", S.EulerMaruyama("sigma"), lin,
         jnp.append(jnp.linspace(1.0, 0.004, 500), 0.0), 500),
    ]


def run_demo(workdir: str, num_samples: int = 10_000, seed: int = 0, quick: bool = False) -> list[dict]:
    """Run the analytic sampler demo; returns the table rows (also written to ``workdir``)."""
    import jax

    import diffjax as dj
    from diffjax import samplers as S
    from diffjax.utils import density_image, save_png

    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    weights, means, stds = (0.3, 0.5, 0.2), ((-0.6, -0.3), (0.5, 0.4), (0.0, 0.8)), (0.1, 0.15, 0.05)
    exact = dj.analytic.GaussianMixture.create(weights, means, stds, dj.VP())
    ref = np.asarray(exact.sample_data(jax.random.key(10_000 + seed), 200_000))
    # the two-sample noise floor, averaged over 5 independent draws (one draw varies ~30 %)
    floor = float(np.mean([dj.analytic.sliced_wasserstein(
        np.asarray(exact.sample_data(jax.random.key(20_000 + seed + k), num_samples)), ref)
        for k in range(5)]))
    save_png(out / "exact.png", density_image(ref))

    def mode_weights(x):
        d = ((x[:, None, :] - np.asarray(means)[None]) ** 2).sum(-1)
        return np.bincount(d.argmin(1), minlength=3) / len(x)

    rows = []
    cases = _demo_cases(dj, S)
    if quick:
        cases = cases[2:4]
    for name, step, proc, grid, nfe in cases:
        model = dj.analytic.GaussianMixture.create(weights, means, stds, proc)
        kw = {}
        if isinstance(step, S.AnnealedLangevin):  # NCSN starts from U[0, 1]^d
            kw["x_init"] = np.asarray(jax.random.uniform(jax.random.key(seed), (num_samples, 2)))
        t0 = time.perf_counter()
        x = dj.sample(model, jax.random.key(seed), (num_samples, 2), grid, step, process=proc,
                      prediction="x0", **kw)
        x = np.asarray(jax.block_until_ready(x))
        secs = time.perf_counter() - t0
        sw = dj.analytic.sliced_wasserstein(x, ref)
        slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
        save_png(out / f"{slug}.png", density_image(x))
        rows.append(dict(sampler=name, nfe=nfe, sw1=sw, sw1_over_floor=sw / floor,
                         mode_weights=[round(float(w), 3) for w in mode_weights(x)],
                         seconds=secs, png=f"{slug}.png"))
    exact_w = [round(float(w), 3) for w in mode_weights(ref)]
    lines = [
        "# diffjax analytic sampler demo",
        "",
        f"{num_samples} samples of a 3-component 2-D Gaussian mixture (weights {weights}), each "
        "sampler driven by the mixture's exact denoiser. SW1: sliced 1-Wasserstein distance to "
        f"200k exact draws; the two-sample noise floor at this size is {floor:.4f}. Mode weights "
        f"of the exact draws (nearest-mean shares): {exact_w}. Seconds include compilation.",
        "",
        "| sampler | NFE | SW1 | SW1 / floor | mode weights | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['nfe']} | {r['sw1']:.4f} | {r['sw1_over_floor']:.2f} | "
                     f"{r['mode_weights']} | {r['seconds']:.1f} |")
    text = "\n".join(lines) + "\n"
    (out / "demo.md").write_text(text)
    (out / "demo.json").write_text(json.dumps(dict(floor=floor, rows=rows), indent=2))
    print(text)
    print(f"wrote {out / 'demo.md'} and {len(rows) + 1} PNG images to {out}")
    return rows


def _flag_values(argv):
    """A fresh ``FlagValues`` per call: ml_collections registers the ``--config.key=value``
    override flags from the argv it is given, so they must be defined against this argv."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/quickstart.py (append ':smoke' for the "
        "seconds-long variant); override keys with --config.key=value.", lock_config=True,
        flag_values=fv, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics, samples).",
                        flag_values=fv)
    flags.DEFINE_integer("num_samples", None, "demo/sample/eval: number of samples.",
                         flag_values=fv)
    flags.DEFINE_integer("seed", 0, "demo/sample: PRNG seed.", flag_values=fv)
    flags.DEFINE_bool("quick", False, "demo: two samplers only (smoke test).", flag_values=fv)
    flags.DEFINE_string("images", None, "eval: a folder of PNG/JPEG files or an .npz (key "
                        "'samples' or 'arr_0'; uint8, or floats in [-1, 1]) of samples made "
                        "elsewhere, evaluated without a checkpoint.", flag_values=fv)
    flags.DEFINE_bool("distributed", False, "multi-host: call jax.distributed.initialize() "
                      "first (coordinator from the cluster environment: TPU pods, SLURM, ...)",
                      flag_values=fv)
    return fv


COMMANDS = ("demo", "train", "sample", "eval")


def _eval_overrides(argv):
    """Split ``--config.eval.KEY=VALUE`` off ``argv``: the ``eval`` section is optional in the
    configs, and ml_collections refuses overrides of keys a config does not define."""
    keep, found = [], {}
    for a in argv:
        if a.startswith("--config.eval."):
            key, sep, value = a[len("--config.eval."):].partition("=")
            if not sep or not key or "." in key:
                raise ValueError(f"bad eval override {a!r}; write --config.eval.KEY=VALUE")
            found[key] = value
        else:
            keep.append(a)
    return keep, found


def _apply_eval_overrides(config, overrides):
    """Set ``config.eval.KEY`` from strings: Python literals (numbers, tuples, booleans)
    where they parse, else the string itself (``--config.eval.metrics=fid,is`` is split on
    commas by :func:`diffjax.experiment.evaluate`)."""
    import ast

    import ml_collections

    def parse(v):
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        try:
            return ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return v

    with config.unlocked():
        if config.get("eval") is None:
            config.eval = ml_collections.ConfigDict()
        for k, v in overrides.items():
            config.eval[k] = parse(v)


def main(argv=None) -> dict | list:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns its result."""
    argv = list(sys.argv if argv is None else ["diffjax"] + list(argv))
    argv, eval_overrides = _eval_overrides(argv)
    FLAGS = _flag_values(argv)
    try:
        rest = FLAGS(argv)
    except (AttributeError, KeyError) as e:  # ml_collections: override of a missing key
        bad = [a for a in argv if a.startswith("--config.")]
        key = str(e).strip("\"'")
        raise ValueError(f"unknown config key '{key}' in the overrides {bad}; see the config file "
                         "for the valid keys") from None
    if len(rest) != 2 or rest[1] not in COMMANDS:
        raise SystemExit(f"usage: python -m diffjax {{{','.join(COMMANDS)}}} [--config=...] "
                         f"[--workdir=...]; got {rest[1:]}")
    command = rest[1]
    if FLAGS.distributed:
        import jax

        jax.distributed.initialize()  # every host then feeds its own data shard
    if FLAGS.images is not None and command != "eval":
        raise SystemExit(f"--images is a flag of `eval`, not of `{command}`")
    if FLAGS.num_samples is not None and FLAGS.num_samples < 1:
        raise SystemExit("--num_samples must be >= 1")
    if command == "demo":
        return run_demo(FLAGS.workdir or "workdir/demo", FLAGS.num_samples or 10_000, FLAGS.seed,
                        FLAGS.quick)
    if FLAGS.config is None or FLAGS.workdir is None:
        raise SystemExit(f"`{command}` needs --config=configs/<name>.py and --workdir=DIR")
    if eval_overrides:
        _apply_eval_overrides(FLAGS.config, eval_overrides)
    from diffjax import experiment

    if command == "train":
        return experiment.train(FLAGS.config, FLAGS.workdir)
    if command == "sample":
        return experiment.sample(FLAGS.config, FLAGS.workdir, FLAGS.num_samples, FLAGS.seed)
    return experiment.evaluate(FLAGS.config, FLAGS.workdir, FLAGS.num_samples, FLAGS.images)
