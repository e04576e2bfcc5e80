"""Command line: ``python -m diffjax <command> [flags]``.

Commands:
  demo   Sample a 2-D Gaussian mixture with every sampler family, driven by the mixture's
         exact denoiser, and report sliced-Wasserstein distance to exact draws, mode weights,
         network evaluations and time; writes ``demo.md`` and one PNG per sampler to
         ``--workdir``. No data, no weights, no download: a few minutes on a laptop CPU.
  train  Train from a config (``--config=configs/<name>.py[:smoke]``) in ``--workdir``,
         resuming from its checkpoints; writes run.json, metrics.jsonl and a sample grid
         (samples.png) at the end. On resume the config saved in run.json is compared with the
         new one: a change that alters the model's shapes (``model.*``, ``process.*``,
         ``data.name``, the method's name) stops with the changed keys listed; other changes
         are printed (old -> new) and training resumes. ``--restart`` moves ``checkpoints/``
         aside to ``checkpoints.old-<timestamp>`` and trains from step 0.
  sample Sample from the newest checkpoint in ``--workdir`` (EMA weights); writes
         ``sampled.npz`` and ``sampled.png`` to ``--output`` (default: the workdir; the
         training grid ``samples.png`` is never overwritten).
  eval   Sample ``eval.num_samples`` images from the newest checkpoint (per-sample seeds,
         sharded over the devices) and report FID / Inception Score / sFID / precision-recall
         against the reference set (2-D data: sliced Wasserstein, MMD, energy distance), the
         held-out denoising loss and, if asked, bits/dim; writes ``eval.json`` and ``eval.md``
         (config section ``eval``, :mod:`diffjax.run.evaluate`). ``--images=PATH``
         evaluates a folder or ``.npz`` of samples made elsewhere, without a checkpoint.
  encode Encode the image data set ``config.encode.data`` (ADM centre crop) with the VAE of
         ``config.vae``, sharded over the devices, into resumable ``.npy`` latent shards with
         per-channel statistics (:mod:`diffjax.run.encode`); a rerun skips finished shards.

Flags are absl flags; config keys are overridden with ``--config.train.num_steps=100``.
``--help`` (``-h``, ``--helpfull``) works at every level: ``python -m diffjax --help`` lists the
commands and flags, ``python -m diffjax train --help`` one command's flags, and with
``--config=FILE`` (and any overrides) every config key with its current value.

Errors: from the command line (:func:`run`, what ``python -m diffjax`` calls) a bad input
prints one line, ``error: <message>``, and exits with status 2 (``--verbose``: with the
traceback); :func:`main` called as a function raises the exception instead.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from diffjax.run.demo import run_demo

__all__ = ["main", "run", "help_text", "COMMANDS"]

#: one line per command (the top-level ``--help``)
SUMMARY = {
    "demo": "sampler families on a 2-D Gaussian mixture with its exact denoiser (no data)",
    "train": "train from --config in --workdir, resuming from its checkpoints",
    "sample": "sample from the newest checkpoint in --workdir (writes sampled.png/.npz)",
    "eval": "FID/IS/... of the newest checkpoint (or of --images) against the reference set",
    "encode": "encode config.encode.data with config.vae into resumable latent shards",
}
COMMANDS = tuple(SUMMARY)
#: the flags of a manual multi-host start (with --distributed)
DIST = ("coordinator_address", "num_processes", "process_id")
#: the flags each command reads
COMMAND_FLAGS = {
    "demo": ("workdir", "num_samples", "seed", "quick", "verbose"),
    "train": ("config", "workdir", "restart", "distributed", *DIST, "verbose"),
    "sample": ("config", "workdir", "num_samples", "seed", "output", "distributed", *DIST,
               "verbose"),
    "eval": ("config", "workdir", "num_samples", "images", "distributed", *DIST, "verbose"),
    "encode": ("config", "workdir", "distributed", *DIST, "verbose"),
}
#: flags that make no sense outside their commands: set elsewhere, they are an error
ONLY_FOR = {"quick": "demo", "restart": "train", "output": "sample", "images": "eval"}
HELP_FLAGS = ("-h", "--help", "--helpfull", "--helpshort")


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
    flags.DEFINE_bool("restart", False, "train: move an existing checkpoints/ aside to "
                      "checkpoints.old-<timestamp> (never deleted) and train from step 0, even "
                      "when the model's config changed.", flag_values=fv)
    flags.DEFINE_string("output", None, "sample: folder for sampled.npz and sampled.png "
                        "(default: the workdir).", flag_values=fv)
    flags.DEFINE_string("images", None, "eval: a folder of PNG/JPEG files or an .npz (key "
                        "'samples' or 'arr_0'; uint8, or floats in [-1, 1]) of samples made "
                        "elsewhere, evaluated without a checkpoint.", flag_values=fv)
    flags.DEFINE_bool("distributed", False, "multi-host: call jax.distributed.initialize() "
                      "first (coordinator from the cluster environment: TPU pods, SLURM, ...)",
                      flag_values=fv)
    flags.DEFINE_string("coordinator_address", None, "--distributed without a cluster "
                        "environment (plain multi-GPU hosts): host:port of process 0, given "
                        "on every host with --num_processes and --process_id.",
                        flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "--distributed: the number of hosts.",
                         flag_values=fv)
    flags.DEFINE_integer("process_id", None, "--distributed: this host's index, 0 .. "
                         "num_processes - 1.", flag_values=fv)
    flags.DEFINE_bool("verbose", False, "on an error, print the full traceback (the command "
                      "line prints one line, 'error: <message>', otherwise).", flag_values=fv)
    return fv


#: config keys a recipe need not define but a user may set on the command line: any key of
#: the optional ``eval`` section, the image-data options of
#: :func:`diffjax.run.build.data_source` (own image folders: resizing, channels, checks) and
#: ``sample.ema`` (which weights sample: an EMA's name or ``params``)
OPTIONAL_KEYS = {"eval": None,
                 "data": ("image_size", "resize_method", "channels", "check", "on_error"),
                 "sample": ("ema",)}


def _eval_overrides(argv):
    """Split the overrides of :data:`OPTIONAL_KEYS` (``--config.eval.KEY=VALUE``,
    ``--config.data.image_size=64``, ...) off ``argv``: ml_collections refuses overrides of
    keys a config does not define. Returns ``(argv, {(section, key): value})``."""
    keep, found = [], {}
    for a in argv:
        sec = next((s for s in OPTIONAL_KEYS if a.startswith(f"--config.{s}.")), None)
        key, sep, value = (a[len(f"--config.{sec}."):].partition("=") if sec else ("", "", ""))
        if sec and OPTIONAL_KEYS[sec] is not None and key not in OPTIONAL_KEYS[sec]:
            sec = None  # an ordinary key of the section: ml_collections checks it
        if sec is None:
            keep.append(a)
            continue
        if not sep or not key or "." in key:
            raise ValueError(f"bad override {a!r}; write --config.{sec}.KEY=VALUE")
        found[(sec, key)] = value
    return keep, found


def _apply_eval_overrides(config, overrides):
    """Set ``config.<section>.KEY`` from strings: Python literals (numbers, tuples, booleans)
    where they parse, else the string itself (``--config.eval.metrics=fid,is`` is split on
    commas by :func:`diffjax.run.evaluate.evaluate`)."""
    import ast
    import contextlib

    import ml_collections

    def parse(v):
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        try:
            return ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return v

    with config.unlocked():
        for (sec, k), v in overrides.items():
            if config.get(sec) is None:
                config[sec] = ml_collections.ConfigDict()
            with (config[sec].unlocked() if hasattr(config[sec], "unlocked")
                  else contextlib.nullcontext()):
                config[sec][k] = parse(v)


def _config_spec(argv):
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)


def _check_config_file(argv):
    """A missing config file, named before absl/ml_collections report it obscurely."""
    spec = _config_spec(argv)
    if spec is not None:
        path = spec.partition(":")[0]
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"--config: config file {path!r} does not exist")


def _unknown_key(argv, error) -> str:
    """The message for an override of a key the config lacks: which section lacks it, where a
    key of that name lives (``train.batch_size`` -> ``data.batch_size``), else the valid keys."""
    bad = [a for a in argv if a.startswith("--config.")]
    fallback = (f"unknown config key {str(error).strip(chr(34) + chr(39))!r} in the overrides "
                f"{bad}; see the config file for the valid keys")
    spec = _config_spec(argv)
    if spec is None:
        return fallback
    from diffjax.run.config import find_key, load_config

    try:
        config = load_config(spec).to_dict()
    except Exception:  # the override error is the one to report
        return fallback
    for a in bad:
        path, _, value = a[len("--config."):].partition("=")
        node, parts = config, path.split(".")
        for i, part in enumerate(parts):
            if isinstance(node, dict) and part in node:
                node = node[part]
                continue
            where = ".".join(parts[:i])
            msg = (f"unknown config key {part!r} in {a}: "
                   + (f"section '{where}' has no key {part!r}" if where
                      else f"the config has no section {part!r}"))
            elsewhere = [p for p in find_key(config, part) if p != ".".join(parts[:i + 1])]
            if elsewhere:
                tail = ".".join(parts[i + 1:])
                hint = [f"--config.{p}{'.' + tail if tail else ''}={value}" for p in elsewhere]
                msg += f"; a key of that name lives at {', '.join(elsewhere)}: did you mean "
                msg += " or ".join(hint) + "?"
            elif isinstance(node, dict):
                msg += f"; expected one of {sorted(node)}"
            return msg
    return fallback


def _parse(argv):
    """``(flags, rest)``: absl parses ``argv``; an unknown config key is named with a hint."""
    fv = _flag_values(argv)
    try:
        rest = fv(argv)
    except (AttributeError, KeyError) as e:  # ml_collections: override of a missing key
        raise ValueError(_unknown_key(argv, e)) from None
    return fv, rest


def help_text(argv, config=None) -> str:
    """What ``--help`` prints.

    Args:
      argv: the command line without the program name; its first command (if any) selects
        that command's help.
      config: the parsed config (overrides applied), whose every key is listed with its
        current value.

    Returns:
      The commands (one line each), the flags (all, or the command's), and the config's keys.
    """
    fv = _flag_values(["diffjax"])
    command = next((a for a in argv if a in COMMANDS), None)
    if command is None:
        text = ["usage: python -m diffjax <command> [--config=FILE[:variant]] [--workdir=DIR] "
                "[--config.KEY=VALUE ...] [flags]", "", "Commands:"]
        text += [f"  {c:<7}{SUMMARY[c]}" for c in COMMANDS]
        names = [n for n in fv if not n.startswith("config.")]
        text += ["", "Flags:"]
        text += [f"  --{n}: {fv[n].help}" for n in sorted(set(names), key=names.index)]
        text += ["", "python -m diffjax <command> --help: that command's flags; add "
                 "--config=FILE to list the config's keys and current values."]
    else:
        text = [f"usage: python -m diffjax {command} [flags]", "", f"{command}: "
                f"{SUMMARY[command]}", "", "Flags:"]
        text += [f"  --{n}: {fv[n].help}" for n in COMMAND_FLAGS[command]]
        text += ["", "Commands:"] + [f"  {c:<7}{SUMMARY[c]}" for c in COMMANDS]
    if config is not None:
        from diffjax.run.config import flatten

        text += ["", f"Config {_config_spec(argv)} (override any key with "
                 "--config.KEY=VALUE):"]
        text += [f"  {k}: {v}" for k, v in flatten(config).items()]
        text += ["", "Optional keys a recipe need not define: "
                 + ", ".join(f"data.{k}" for k in OPTIONAL_KEYS["data"])
                 + " (own image folders; see the README), sample.ema (an EMA's name or "
                 "'params'), eval.* (diffjax.run.evaluate)."]
    elif command in ("train", "sample", "eval"):
        text += ["", "Add --config=FILE to list the config's keys and their current values."]
    return "\n".join(text)


def main(argv=None) -> dict | list | str:
    """Parse ``argv`` and run the command; returns its result.

    Args:
      argv: the command line without the program name. ``None``: ``sys.argv[1:]`` through
        :func:`run` (the command-line entry point: errors print one line and exit 2).

    Returns:
      The command's result; with ``--help`` (at any position) the help text, also printed.

    Raises:
      ValueError, FileNotFoundError: a bad input, before anything is built or written.
      SystemExit: a usage error (no or unknown command, a flag of another command).
    """
    if argv is None:
        return run()
    argv = ["diffjax"] + list(argv)
    wants_help = any(a in HELP_FLAGS for a in argv[1:])
    argv = [a for a in argv if a not in HELP_FLAGS]
    _check_config_file(argv)
    argv, eval_overrides = _eval_overrides(argv)
    FLAGS, rest = _parse(argv)
    if FLAGS.config is not None and eval_overrides:
        _apply_eval_overrides(FLAGS.config, eval_overrides)
    if wants_help:
        text = help_text(argv[1:], FLAGS.config)
        print(text)
        return text
    if len(rest) != 2 or rest[1] not in COMMANDS:
        raise SystemExit(f"usage: python -m diffjax {{{','.join(COMMANDS)}}} [--config=...] "
                         f"[--workdir=...]; got {rest[1:]} (python -m diffjax --help lists "
                         "the commands)")
    command = rest[1]
    for name, owner in ONLY_FOR.items():
        if FLAGS[name].present and command != owner:
            raise SystemExit(f"--{name} is a flag of `{owner}`, not of `{command}`")
    if FLAGS.num_samples is not None and FLAGS.num_samples < 1:
        raise SystemExit(f"--num_samples must be >= 1; got {FLAGS.num_samples}")
    if command == "demo":
        return run_demo(FLAGS.workdir or "workdir/demo", FLAGS.num_samples or 10_000, FLAGS.seed,
                        FLAGS.quick)
    if FLAGS.config is None or FLAGS.workdir is None:
        raise SystemExit(f"`{command}` needs --config=configs/<name>.py and --workdir=DIR")
    if command in ("sample", "eval") and FLAGS.images is None:
        from diffjax.run.train import has_checkpoint

        if not has_checkpoint(FLAGS.workdir):  # before building anything; creates nothing
            raise FileNotFoundError(
                f"no checkpoint under {Path(FLAGS.workdir) / 'checkpoints'}; run `python -m "
                f"diffjax train` with --workdir={FLAGS.workdir} first")
    if FLAGS.distributed:
        import jax

        manual = {k: getattr(FLAGS, k) for k in ("coordinator_address", "num_processes",
                                                  "process_id")}
        given = {k: v for k, v in manual.items() if v is not None}
        if given and len(given) != 3:
            raise ValueError(f"--distributed with {sorted(given)} needs all of "
                             "--coordinator_address, --num_processes and --process_id (or "
                             "none: the cluster environment of a TPU pod or SLURM)")
        jax.distributed.initialize(**given)  # every host then feeds its own data shard
    if command == "encode":
        from diffjax.run.encode import encode

        return encode(FLAGS.config, FLAGS.workdir)
    if command == "train":
        from diffjax.run.train import train

        return train(FLAGS.config, FLAGS.workdir, restart=FLAGS.restart)
    if command == "sample":
        from diffjax.run.load import sample

        return sample(FLAGS.config, FLAGS.workdir, FLAGS.num_samples, FLAGS.seed, FLAGS.output)
    from diffjax.run.evaluate import evaluate

    return evaluate(FLAGS.config, FLAGS.workdir, FLAGS.num_samples, FLAGS.images)


def run(argv=None):
    """The command-line entry point: :func:`main`, with errors as one line and status 2.

    Args:
      argv: the command line without the program name (default ``sys.argv[1:]``).

    Returns:
      The command's result. On an error it prints ``error: <message>`` to stderr (with
      ``--verbose``, the traceback first) and exits with status 2.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = any(a in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1")
                  for a in argv)
    try:
        return main(argv)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            raise
        message = str(e.code)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - every error becomes the one line
        if verbose:
            traceback.print_exc()
        message = str(e) if isinstance(e, (ValueError, OSError, RuntimeError)) and str(e) \
            else f"{type(e).__name__}: {e}"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
