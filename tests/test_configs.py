"""Every config has a smoke variant that trains, checkpoints, resumes and samples end to end
through the command line (tiny models, seconds on CPU)."""

import json
from pathlib import Path

import numpy as np
import pytest
from _scripts import load_script

from diffjax.run import cli

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def _load(path):
    return load_script(path)


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
    cfg = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.py") + ":smoke"
    out = cli.main(["train", f"--config={cfg}", f"--workdir={tmp_path}"])
    assert out["start_step"] == 0 and out["end_step"] == 20
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [10, 20] and all(np.isfinite(m["loss"]) for m in lines)
    assert (tmp_path / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "samples_0000010.png").exists()  # periodic grids (sample_every=10)
    x = np.load(tmp_path / "samples.npz")["samples"]
    assert x.shape == (16, 8, 8, 1) and np.all(np.abs(x) <= 1.0)
    q = json.loads((tmp_path / "quality.json").read_text())
    assert q["n"] == 16 and q["classifier_score_heldout"] > q["classifier_score_gaussian_fit"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["end_step"] == 20 and "quality" in summary
    # TensorBoard can read the event file we wrote without TensorFlow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tmp_path / "tensorboard"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss")] == [10, 20]
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


# ----------------------------------------------------------------------------------------------
# Paper recipes: every smoke variant trains, checkpoints and samples through the command line
# ----------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["ddpm_cifar10", "iddpm_cifar10", "ncsn_cifar10", "score_sde_vp_cifar10",
           "score_sde_ve_cifar10", "edm_cifar10", "dit_b2_imagenet256", "dit_xl2_imagenet256"]


def _latents(tmp_path, n=64, size=8, channels=4, classes=10):
    """A tiny random latent set (the DiT smoke variants have no embedded data)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "latents.npz"
    np.savez(path, latents=rng.standard_normal((n, size, size, channels)).astype(np.float32),
             labels=(np.arange(n) % classes).astype(np.int32))
    return path


def _recipe_args(name, tmp_path, workdir):
    args = [f"--config={ROOT / 'configs' / name}.py:smoke", f"--workdir={workdir}"]
    if name.startswith("dit_"):
        args.append(f"--config.data.name={_latents(tmp_path)}")
    return args


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_smoke_trains_checkpoints_and_samples(name, tmp_path):
    work = tmp_path / "work"
    out = cli.main(["train"] + _recipe_args(name, tmp_path, work))
    steps = _load(ROOT / "configs" / f"{name}.py").get_config("smoke").train.num_steps
    assert out["start_step"] == 0 and out["end_step"] == steps
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(np.isfinite(m["loss"]) for m in lines)
    assert any((work / "checkpoints").iterdir())
    x = np.load(work / "samples.npz")["samples"]
    assert x.shape[0] == out["samples"]["num_samples"] and np.all(np.isfinite(x))
    assert (work / "samples.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # builds every full-size network abstractly (~35 s in all)
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_full_config_model_matches_its_data(name):
    """The full recipe's network is built for the paper's data shape (abstractly, no memory)."""
    from flax import nnx

    from diffjax import experiment as E

    cfg = _load(ROOT / "configs" / f"{name}.py").get_config()
    net = nnx.eval_shape(lambda: E.build_model(cfg.model, nnx.Rngs(0)))
    want = (32, 32, 4) if name.startswith("dit_") else (32, 32, 3)
    assert E._model_input(cfg.model, net)[0] == want
    assert cfg.process.name in E.PROCESSES and cfg.loss.name in E.LOSSES
    assert (E._num_classes(net) == 1000) == name.startswith("dit_")


def test_recipe_bad_inputs_name_the_key(tmp_path):
    """Missing data, a missing TFDS directory and a model/data size mismatch fail before any
    compute, naming the config key."""
    ddpm = _recipe_args("ddpm_cifar10", tmp_path, tmp_path / "a")
    with pytest.raises(ValueError, match=r"model\.image_size"):
        cli.main(["train"] + ddpm + ["--config.model.image_size=16"])
    with pytest.raises(ValueError, match=r"model\.image_size"):
        cli.main(["train"] + ddpm + ["--config.model.in_channels=3"])
    with pytest.raises(FileNotFoundError, match=r"data\.data_dir"):
        cli.main(["train", f"--config={ROOT / 'configs' / 'ddpm_cifar10.py'}",
                  f"--workdir={tmp_path / 'b'}", f"--config.data.data_dir={tmp_path / 'nope'}"])
    dit = [f"--config={ROOT / 'configs' / 'dit_b2_imagenet256.py'}:smoke",
           f"--workdir={tmp_path / 'c'}"]
    with pytest.raises(FileNotFoundError, match=r"data\.name"):
        cli.main(["train"] + dit + [f"--config.data.name={tmp_path / 'missing' / 'x.npz'}"])
    with pytest.raises(ValueError, match=r"model\.input_size"):
        cli.main(["train"] + dit + [f"--config.data.name={_latents(tmp_path, size=16)}"])
    with pytest.raises(ValueError, match=r"unknown config key 'nope'"):
        cli.main(["train"] + ddpm + ["--config.model.nope=1"])
    assert not (tmp_path / "a" / "checkpoints").exists()


def test_iddpm_vlb_with_importance_sampling_trains_checkpoints_and_restores(tmp_path):
    """L_vlb with iDDPM's loss-second-moment sampler through the command line: the loss
    history is carried by the train step, checkpointed, and restored for sampling."""
    from diffjax import experiment as E

    work = tmp_path / "work"
    cfg = _load(ROOT / "configs" / "iddpm_cifar10.py").get_config("smoke")
    with pytest.raises(ValueError, match=r"'vlb' does not take the config keys \['loss.lam'\]"):
        cli.main(["train"] + _recipe_args("iddpm_cifar10", tmp_path, work)
                 + ["--config.loss.name=vlb"])
    cfg.loss = dict(name="vlb", schedule_sampler="loss-second-moment")
    out = E.train(cfg, work)
    assert out["end_step"] == 4
    _, state = E._restore(cfg, work)  # the checkpoint holds the loss history
    counts = np.asarray(state.extra["resampler"].counts)
    assert counts.shape == (4000,) and counts.sum() == 4 * cfg.data.batch_size
    # 8 samples over the 8 devices while the state lives on a 1-device mesh (smoke: data=1)
    assert E.sample(cfg, work, num_samples=8)["num_samples"] == 8
    with pytest.raises(ValueError, match="loss.schedule_sampler"):
        cli.main(["train"] + _recipe_args("iddpm_cifar10", tmp_path, tmp_path / "b")
                 + ["--config.loss.schedule_sampler=nope"])
