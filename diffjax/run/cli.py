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
         (config section ``eval``, :mod:`diffjax.run.evaluate`). ``--images=PATH``
         evaluates a folder or ``.npz`` of samples made elsewhere, without a checkpoint.

Flags are absl flags; config keys are overridden with ``--config.train.num_steps=100``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffjax.run.demo import run_demo

__all__ = ["main"]


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
    commas by :func:`diffjax.run.evaluate.evaluate`)."""
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


HELP_FLAGS = ("-h", "--help", "--helpfull", "--helpshort")


def help_text(argv) -> str:
    """What ``--help`` prints: the commands, the flags, and (with ``--config``) every config key
    with its current value."""
    text = [__doc__.strip(), "", "Flags:"]
    fv = _flag_values(["diffjax"])
    for name in ("config", "workdir", "num_samples", "seed", "quick", "images", "distributed"):
        text.append(f"  --{name}: {fv[name].help}")
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec:
        from diffjax.run.config import load_config

        text += ["", f"Config {spec} (override any key with --config.KEY=VALUE):",
                 str(load_config(spec))]
    return "\n".join(text)


def _check_config_file(argv):
    """A missing config file, named before absl/ml_collections report it obscurely."""
    for a in argv:
        if a.startswith("--config="):
            path = a.split("=", 1)[1].partition(":")[0]
            if not Path(path).expanduser().is_file():
                raise FileNotFoundError(f"--config: config file {path!r} does not exist")


def main(argv=None) -> dict | list | str:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns its result
    (``--help`` at any position: the help text, also printed)."""
    argv = list(sys.argv if argv is None else ["diffjax"] + list(argv))
    if any(a in HELP_FLAGS for a in argv[1:]):
        text = help_text(argv)
        print(text)
        return text
    _check_config_file(argv)
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
    if command == "train":
        from diffjax.run.train import train

        return train(FLAGS.config, FLAGS.workdir)
    if command == "sample":
        from diffjax.run.load import sample

        return sample(FLAGS.config, FLAGS.workdir, FLAGS.num_samples, FLAGS.seed)
    from diffjax.run.evaluate import evaluate

    return evaluate(FLAGS.config, FLAGS.workdir, FLAGS.num_samples, FLAGS.images)
