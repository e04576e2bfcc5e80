"""The command line's help and its early errors: nothing is built or written before the
inputs are known to be good (issue 15, items 5 and 8)."""

import subprocess
import sys
from pathlib import Path

import pytest

from diffjax.run import cli

ROOT = Path(__file__).resolve().parents[1]
QUICK = f"--config={ROOT / 'configs' / 'quickstart.py'}:smoke"


def test_help_at_every_level_exits_zero():
    out = subprocess.run([sys.executable, "-m", "diffjax", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(c in out.stdout for c in ("demo", "train", "sample", "eval", "--workdir"))
    for argv in (["-h"], ["--helpfull"], ["train", "--help"], ["eval", "-h", "--workdir=x"]):
        assert "Commands:" in cli.main(argv)
    text = cli.main(["train", QUICK, "--help"])  # the config's keys and current values
    assert "num_steps: 20" in text and "batch_size: 64" in text and "name: unet" in text


def test_bad_inputs_fail_before_anything_is_written(tmp_path):
    work = tmp_path / "w"
    with pytest.raises(FileNotFoundError, match="config file '.*nope.py' does not exist"):
        cli.main(["train", "--config=nope.py", f"--workdir={work}"])
    for value, match in (("-5", r"train.num_steps must be an integer >= 1; got -5"),
                         ("0", r"train.num_steps must be an integer >= 1; got 0")):
        with pytest.raises(ValueError, match=match):
            cli.main(["train", QUICK, f"--workdir={work}", f"--config.train.num_steps={value}"])
    with pytest.raises(ValueError, match=r"train.save_every must be an integer >= 1"):
        cli.main(["train", QUICK, f"--workdir={work}", "--config.train.save_every=0"])
    for command in ("sample", "eval"):
        with pytest.raises(FileNotFoundError, match="no checkpoint under"):
            cli.main([command, QUICK, f"--workdir={work}"])
    assert not work.exists()
