"""The command line (issue 15, items 3, 5, 8 and 9): help at every level; bad inputs fail
before anything is built or written, as one ``error:`` line with status 2; config drift on
resume; ``--restart``; reruns keep ``final_loss``; ``sample --output`` leaves the training grid
alone. One module-scoped run of the quickstart ``:smoke`` config serves the resume tests."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffjax.run import cli

ROOT = Path(__file__).resolve().parents[1]
QUICK = f"--config={ROOT / 'configs' / 'quickstart.py'}:smoke"
FAST = ["--config.train.sample_every=0"]  # no periodic grids: fewer compiles


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "diffjax", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 20-step smoke run (trained once for the module)."""
    work = tmp_path_factory.mktemp("cli") / "run"
    out = cli.main(["train", QUICK, f"--workdir={work}"] + FAST)
    assert out["end_step"] == 20
    return work


def test_help_at_every_level_exits_zero():
    out = _cli("--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Commands:" in out.stdout and "--workdir" in out.stdout and "--restart" in out.stdout
    for c in ("demo", "train", "sample", "eval"):
        assert f"\n  {c} " in out.stdout  # one line per command
    for argv in (["-h"], ["--helpfull"], ["--helpshort"]):
        assert cli.main(argv) == cli.main(["--help"])
    sample = cli.main(["sample", "--help"])
    assert "usage: python -m diffjax sample" in sample and "--output" in sample
    assert "--restart" not in sample and "--config=FILE to list" in sample
    assert "--images" in cli.main(["eval", "-h", "--workdir=x"])
    # the config's keys and current values, overrides applied, from the command line too
    out = _cli("train", QUICK, "--config.optim.lr=0.25", "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    for line in ("train.num_steps: 20", "data.batch_size: 64", "model.name: unet",
                 "optim.lr: 0.25", "--restart"):
        assert f"{line}" in out.stdout, line


def test_bad_inputs_fail_before_anything_is_written(tmp_path):
    work = tmp_path / "w"
    with pytest.raises(FileNotFoundError, match="config file '.*nope.py' does not exist"):
        cli.main(["train", "--config=nope.py", f"--workdir={work}"])
    for key, value, match in (
            ("train.num_steps", "-5", r"train.num_steps must be an integer >= 1; got -5"),
            ("train.num_steps", "0", r"train.num_steps must be an integer >= 1; got 0"),
            ("train.save_every", "0", r"train.save_every must be an integer >= 1; got 0"),
            ("train.log_every", "-1", r"train.log_every must be an integer >= 1; got -1"),
            ("data.batch_size", "0", r"data.batch_size must be an integer >= 1; got 0"),
            ("data.batch_size", "12", r"data.batch_size=12 \(the global batch\) must be "
                                      r"divisible by the 8 devices.*expected a multiple of 8")):
        with pytest.raises(ValueError, match=match):
            cli.main(["train", QUICK, f"--workdir={work}", f"--config.{key}={value}"])
    # an unknown key says where a key of that name lives, or lists the section's keys
    with pytest.raises(ValueError, match=r"unknown config key 'batch_size'.*section 'train'.*"
                                         r"lives at data.batch_size.*--config.data.batch_size=8"):
        cli.main(["train", QUICK, f"--workdir={work}", "--config.train.batch_size=8"])
    with pytest.raises(ValueError, match=r"unknown config key 'chh'.*expected one of .*'ch'"):
        cli.main(["train", QUICK, f"--workdir={work}", "--config.model.chh=8"])
    with pytest.raises(SystemExit, match="--restart is a flag of `train`, not of `sample`"):
        cli.main(["sample", QUICK, f"--workdir={work}", "--restart"])
    assert not work.exists()
    work.mkdir()  # an existing, empty workdir: sample/eval create nothing in it
    for command in ("sample", "eval"):
        with pytest.raises(FileNotFoundError, match="no checkpoint under"):
            cli.main([command, QUICK, f"--workdir={work}"])
    assert list(work.iterdir()) == []


def test_command_line_errors_are_one_line_with_status_2(tmp_path):
    work = tmp_path / "w"
    out = _cli("train", "--config=missing.py", f"--workdir={work}")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --config: config file 'missing.py' does not exist"
    out = _cli("sample", QUICK, f"--workdir={work}", "--verbose")
    assert out.returncode == 2 and "Traceback" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: no checkpoint under")
    assert not work.exists()


def test_quickstart_smoke_outputs_and_resume(trained, tmp_path):
    """The quickstart smoke run (the module's fixture): the losses recorded before the Method
    refactor, the sample grid, quality figure, summary and TensorBoard events; then a longer
    run resumes from the step-20 checkpoint instead of restarting."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    recorded = json.loads((ROOT / "tests" / "fixtures" / "smoke_losses.json")
                          .read_text())["quickstart"]
    np.testing.assert_allclose([m["loss"] for m in lines], list(recorded.values()), rtol=1e-6)
    assert [m["step"] for m in lines] == [10, 20]
    assert (trained / "samples.png").read_bytes()[:4] == b"\x89PNG"
    x = np.load(trained / "samples.npz")["samples"]
    assert x.shape == (16, 8, 8, 1) and np.all(np.abs(x) <= 1.0)
    q = json.loads((trained / "quality.json").read_text())
    assert q["n"] == 16 and q["classifier_score_heldout"] > q["classifier_score_gaussian_fit"]
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["end_step"] == 20 and "quality" in summary
    ea = EventAccumulator(str(trained / "tensorboard"))  # readable without TensorFlow
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss")] == [10, 20]
    work = tmp_path / "run"
    shutil.copytree(trained, work)
    out = cli.main(["train", QUICK, f"--workdir={work}", "--config.train.num_steps=30"] + FAST)
    assert out["start_step"] == 20 and out["end_step"] == 30


def test_drift_rerun_and_sample_output(trained, capsys):
    work = trained
    run_json, ckpts = (work / "run.json").read_text(), sorted(work.joinpath("checkpoints")
                                                              .iterdir())
    # a change that alters shapes stops before anything is built, naming the keys and the ways out
    with pytest.raises(ValueError, match=r"model.ch: 32 -> 16; process.num_steps: 1000 -> 500"
                                         r".*new --workdir.*--restart"):
        cli.main(["train", QUICK, f"--workdir={work}", "--config.model.ch=16",
                  "--config.process.num_steps=500"] + FAST)
    assert (work / "run.json").read_text() == run_json
    assert sorted(work.joinpath("checkpoints").iterdir()) == ckpts
    # other hyper-parameters resume and are reported; a rerun of the finished run keeps
    # final_loss and trains no step
    final = json.loads((work / "summary.json").read_text())["final_loss"]
    capsys.readouterr()
    out = cli.main(["train", QUICK, f"--workdir={work}", "--config.optim.lr=0.002"] + FAST)
    printed = capsys.readouterr().out
    assert out["start_step"] == out["end_step"] == 20 and out["history"] == []
    assert "optim.lr: 0.001 -> 0.002" in printed and "model." not in printed
    assert json.loads((work / "summary.json").read_text())["final_loss"] == final
    assert json.loads((work / "run.json").read_text())["config"]["optim"]["lr"] == 0.002
    # sample: never the training grid; --output elsewhere
    grid = _digest(work / "samples.png")
    res = cli.main(["sample", QUICK, f"--workdir={work}", "--num_samples=4",
                    f"--output={work / 'out'}"])
    assert res["path"] == str(work / "out" / "sampled.png")
    assert (work / "out" / "sampled.npz").exists()
    cli.main(["sample", QUICK, f"--workdir={work}", "--num_samples=4"])
    assert (work / "sampled.png").read_bytes()[:4] == b"\x89PNG"
    assert _digest(work / "samples.png") == grid


def test_restart_moves_checkpoints_aside(trained, tmp_path, capsys):
    work = tmp_path / "run"
    shutil.copytree(trained, work)
    old = sorted(p.name for p in (work / "checkpoints").iterdir())
    out = cli.main(["train", QUICK, f"--workdir={work}", "--config.model.ch=16", "--restart",
                    "--config.train.num_steps=2", "--config.train.log_every=1",
                    "--config.sample.num_samples=4"] + FAST)
    assert out["start_step"] == 0 and out["end_step"] == 2
    aside = [p for p in work.iterdir() if p.name.startswith("checkpoints.old-")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == old
    assert "--restart: moved" in capsys.readouterr().out
    assert json.loads((work / "run.json").read_text())["config"]["model"]["ch"] == 16
    assert json.loads((work / "summary.json").read_text())["final_loss"] == \
        out["history"][-1]["loss"]


def test_own_image_folder_end_to_end(tmp_path, capsys):
    """Issue 15 items 6 and 7 through the command line: a folder of mixed sizes is refused
    before anything is written (naming the sizes and the key that fixes it), a truncated file
    is named, and with ``data.image_size`` the folder trains; a run far shorter than the
    sampled EMA's horizon warns."""
    import numpy as np

    from diffjax.utils.png import save_png

    rng = np.random.default_rng(0)
    folder = tmp_path / "mine"
    for i in range(66):  # > one batch of 64: the fixture's compiled program is reused
        save_png(folder / f"{i}.png", rng.integers(0, 256, (12, 10), dtype=np.uint8))
    save_png(folder / "big.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    work = tmp_path / "w"
    own = ["train", QUICK, f"--workdir={work}", f"--config.data.name={folder}",
           "--config.data.holdout=0", "--config.train.num_steps=2",
           "--config.train.save_every=2"] + FAST
    with pytest.raises(ValueError, match=r"data.name=.*2 sizes.*12x10: 66, 16x16: 1.*big\.png"
                                         r".*data.image_size"):
        cli.main(own)
    blob = (folder / "0.png").read_bytes()
    (folder / "cut.png").write_bytes(blob[: len(blob) - 40])
    with pytest.raises(ValueError, match=r"cut\.png"):
        cli.main(own + ["--config.data.image_size=8"])
    assert not work.exists()  # refused before anything was written
    out = cli.main(own + ["--config.data.image_size=8", "--config.data.on_error=skip",
                          "--config.data.channels=1"])
    assert out["end_step"] == 2 and (work / "samples.png").exists()
    printed = capsys.readouterr().out
    assert "skipped 1 unreadable file(s)" in printed
    assert "warning: the samples use ema.ema (decay 0.995: an average over ~200 steps) but " \
           "train.num_steps=2" in printed
    from diffjax.run import build, config

    saved = json.loads((work / "run.json").read_text())["config"]
    with pytest.raises(ValueError, match=r"unknown config keys \['data.image_sise'\]"):
        build.build_data(config.from_dict({**saved, "data": {"name": str(folder),
                                                             "image_sise": 8}}))


def test_sampler_switch_names_the_leftover_step_keys(capsys):
    from diffjax.run import build

    assert type(build.build_step({"sampler": "ddim", "step": {"variance": "large"}})).__name__ \
        == "DDIM"
    assert "ignoring ['sample.step.variance']" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"\['sample.step.varianse'\] are not arguments of the "
                                         r"sample.sampler='ddpm' step"):
        build.build_step({"sampler": "ddpm", "step": {"varianse": "large"}})
