"""Every config has a smoke variant that trains, checkpoints, resumes and samples end to end
through the command line (tiny models, seconds on CPU)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from diffjax import cli

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_documents_itself_and_rejects_unknown_variants(path):
    mod = _load(path)
    doc = mod.__doc__ or ""
    assert "Command:" in doc and "Hardware:" in doc, "config docstring must name command and hardware"
    cfg = mod.get_config()
    assert cfg.model.name and cfg.train.num_steps > mod.get_config("smoke").train.num_steps
    with pytest.raises(ValueError, match="variant"):
        mod.get_config("bogus")


def test_digits_smoke_train_resume_sample_eval(tmp_path):
    cfg = str(Path(__file__).resolve().parents[1] / "configs" / "ddpm_digits.py") + ":smoke"
    out = cli.main(["train", f"--config={cfg}", f"--workdir={tmp_path}"])
    assert out["start_step"] == 0 and out["end_step"] == 20
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [10, 20] and all(np.isfinite(m["loss"]) for m in lines)
    assert (tmp_path / "samples.png").read_bytes()[:4] == b"\x89PNG"
    x = np.load(tmp_path / "samples.npz")["samples"]
    assert x.shape == (16, 8, 8, 1) and np.all(np.abs(x) <= 1.0)
    # resume: a longer run continues from the step-20 checkpoint instead of restarting
    out = cli.main(["train", f"--config={cfg}", f"--workdir={tmp_path}",
                    "--config.train.num_steps=30"])
    assert out["start_step"] == 20 and out["end_step"] == 30
    res = cli.main(["sample", f"--config={cfg}", f"--workdir={tmp_path}", "--num_samples=4"])
    assert res["num_samples"] == 4
    ev = cli.main(["eval", f"--config={cfg}", f"--workdir={tmp_path}"])
    assert ev["step"] == 30 and np.isfinite(ev["loss"])
    with pytest.raises(ValueError, match="unknown config key 'nope'"):
        cli.main(["train", f"--config={cfg}", f"--workdir={tmp_path}", "--config.train.nope=1"])
