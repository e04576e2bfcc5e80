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


# ----------------------------------------------------------------------------------------------
# Paper recipes: every smoke variant trains, samples and evaluates through the command line
# ----------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in CONFIGS if p.stem != "quickstart")
#: recipes whose smoke variant trains on latents (no embedded data): a random latent set
LATENT_RECIPES = ("dit_", "shortcut_", "imm_imagenet", "mg_", "sit_", "lightningdit_")
#: the plain-diffusion smokes' logged losses, recorded before the run layer became a Method
#: per training path (experiments/fixtures/record_smoke_losses.py, at commit b2d4863)
SMOKE_LOSSES = json.loads((ROOT / "tests" / "fixtures" / "smoke_losses.json").read_text())


def _latents(tmp_path, n=64, size=8, channels=4, classes=10):
    """A tiny random latent set (as the recorded smokes used: 64 latents, labels i mod 10)."""
    rng = np.random.default_rng(0)
    path = tmp_path / f"latents{classes}.npz"
    kw = dict(latents=rng.standard_normal((n, size, size, channels)).astype(np.float32))
    if classes:
        kw["labels"] = (np.arange(n) % classes).astype(np.int32)
    np.savez(path, **kw)
    return path


def _recipe_args(name, tmp_path, workdir):
    args = [f"--config={ROOT / 'configs' / name}.py:smoke", f"--workdir={workdir}"]
    if name.startswith(LATENT_RECIPES):
        if _load(ROOT / "configs" / f"{name}.py").get_config("smoke").get("encode"):
            # images -> the smoke's tiny VAE -> latent shards (python -m diffjax encode)
            folder = tmp_path / "latents"
            if not folder.exists():
                cli.main(["encode"] + args + [f"--config.encode.output={folder}"])
            args.append(f"--config.data.name={folder}")
            return args
        classes = 0 if name.startswith("shortcut") else 10
        args.append(f"--config.data.name={_latents(tmp_path, classes=classes)}")
    return args


def _losses(work):
    return {str(m["step"]): m["loss"] for m in
            (json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines())}


#: recipes whose smoke costs minutes of compilation on 2 CPU cores (3-D UNets over clips), or
#: repeats another recipe's path at a larger size (three of the four Cold Diffusion recipes,
#: five of the six latent ones, CD on ImageNet 64, iCT beside CT, the VE score SDE beside the
#: VP one, iDDPM, whose VLB path test_iddpm_vlb_with_importance_sampling... trains): run with
#: ``-m slow``. The default run keeps one recipe of each path: cold_cifar10_blur, dit_b2
#: (images -> VAE -> latents -> DiT -> decoded FID), cd_cifar10, ct_cifar10, imm_cifar10,
#: score_sde_vp_cifar10, ...
SLOW_SMOKES = ("video_bair", "video_ucf101", "cold_celeba_blur", "cold_celeba_noise",
               "cold_mnist", "lightningdit_xl1_imagenet256", "sit_xl2_imagenet256",
               "mg_sit_xl2_imagenet256", "dit_xl2_imagenet256", "cd_imagenet64",
               "imm_imagenet256", "ict_cifar10", "score_sde_ve_cifar10", "iddpm_cifar10")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in SLOW_SMOKES else n for n in RECIPES])
def test_recipe_smoke_trains_samples_and_evaluates(name, tmp_path):
    """Train (checkpoint, losses finite; plain diffusion: the losses recorded before the
    refactor), sample from the checkpoint, and evaluate it, all through the command line."""
    work = tmp_path / "work"
    args = _recipe_args(name, tmp_path, work)
    out = cli.main(["train"] + args)
    cfg = _load(ROOT / "configs" / f"{name}.py").get_config("smoke")
    steps = cfg.train.num_steps
    assert out["start_step"] == 0 and out["end_step"] == steps
    losses = _losses(work)
    assert losses and all(np.isfinite(v) for v in losses.values())
    if name in SMOKE_LOSSES and not cfg.get("encode"):
        # plain diffusion computes exactly what it computed before (on the random latents the
        # losses were recorded with; a recipe with a VAE now trains on encoded images)
        assert not cfg.get("method")
        np.testing.assert_allclose([losses[k] for k in SMOKE_LOSSES[name]],
                                   list(SMOKE_LOSSES[name].values()), rtol=1e-6)
    assert any((work / "checkpoints").iterdir())
    x = np.load(work / "samples.npz")["samples"]
    assert x.shape[0] == out["samples"]["num_samples"] and np.all(np.isfinite(x))
    assert (work / "samples.png").read_bytes()[:4] == b"\x89PNG"
    res = cli.main(["sample"] + args + ["--num_samples=2", "--seed=3"])
    y = np.load(work / "sampled.npz")["samples"]  # the training run's samples.* are kept
    assert np.load(work / "samples.npz")["samples"].shape == x.shape
    assert res["num_samples"] == 2 and y.shape == (2,) + x.shape[1:] and np.all(np.isfinite(y))
    evargs = ["eval"] + args + ["--config.eval.features=pixels", "--config.eval.metrics=fid",
                                "--config.eval.num_samples=8", "--config.eval.batch_size=4",
                                "--config.eval.reference_max=64"]
    if x.ndim == 2:  # 2-D points: the sliced Wasserstein distance to the data
        ev = cli.main(["eval"] + args + ["--config.eval.metrics=sw1",
                                         "--config.eval.num_samples=8",
                                         "--config.eval.batch_size=4",
                                         "--config.eval.reference_max=64"])
        assert np.isfinite(ev["sw1"])
    elif x.shape[-1] in (1, 3):
        ev = cli.main(evargs)
        assert ev["protocol"]["checkpoint_step"] == steps and np.isfinite(ev["fid"])
        assert ev["protocol"]["num_samples"] == 8 and (work / "eval.md").exists()
    else:  # latents: no image metric until a VAE decodes them
        with pytest.raises(ValueError, match="latents"):
            cli.main(evargs)


@pytest.mark.slow  # builds every full-size network abstractly (~60 s in all)
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_full_config_model_matches_its_data(name):
    """The full recipe's network is built for the paper's data shape (abstractly, no memory)."""
    from diffjax.methods import METHODS
    from diffjax.run import build as B

    cfg = _load(ROOT / "configs" / f"{name}.py").get_config()
    net = B.build_network(cfg.model, B.build_process(cfg.get("process")))
    want = {"cd_imagenet64": (64, 64, 3), "lightningdit_xl1_imagenet256": (16, 16, 32),
            "sohl_dickstein_swissroll": None, "video_bair": None, "video_ucf101": None,
            "cold_celeba_blur": (128, 128, 3), "cold_celeba_noise": (128, 128, 3),
            "cold_mnist": (28, 28, 1)}.get(
        name, (32, 32, 4) if name.startswith(LATENT_RECIPES) else (32, 32, 3))
    assert B.model_input(cfg.model, net.abstract)[0] == want  # None: 2-D points (an MLP)
    if cfg.get("method"):
        assert cfg.method.name in METHODS
    else:
        assert cfg.loss.name in B.LOSSES
        assert (net.num_classes == 1000) == name.startswith(("dit_", "sit_", "lightningdit_"))


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
    with pytest.raises(ValueError, match=r"unknown config key 'bogus'"):
        cli.main(["train"] + _recipe_args("ct_cifar10", tmp_path, tmp_path / "d")
                 + ["--config.method.bogus=1"])
    with pytest.raises(ValueError, match="unknown sample.sampler 'nope'"):
        cli.main(["train"] + ddpm + ["--config.sample.sampler=nope"])
    assert not (tmp_path / "a" / "checkpoints").exists()


def test_iddpm_vlb_with_importance_sampling_trains_checkpoints_and_restores(tmp_path):
    """L_vlb with iDDPM's loss-second-moment sampler through the command line: the loss
    history is carried by the train step, checkpointed, and restored for sampling."""
    from diffjax.run.build import restore
    from diffjax.run.load import sample
    from diffjax.run.train import train

    work = tmp_path / "work"
    cfg = _load(ROOT / "configs" / "iddpm_cifar10.py").get_config("smoke")
    with pytest.raises(ValueError, match=r"'vlb' does not take the config keys \['loss.lam'\]"):
        cli.main(["train"] + _recipe_args("iddpm_cifar10", tmp_path, work)
                 + ["--config.loss.name=vlb"])
    cfg.loss = dict(name="vlb", schedule_sampler="loss-second-moment")
    out = train(cfg, work)
    assert out["end_step"] == 4
    _, state = restore(cfg, work)  # the checkpoint holds the loss history
    counts = np.asarray(state.extra["resampler"].counts)
    assert counts.shape == (4000,) and counts.sum() == 4 * cfg.data.batch_size
    # 8 samples over the 8 devices while the state lives on a 1-device mesh (smoke: data=1)
    assert sample(cfg, work, num_samples=8)["num_samples"] == 8
    with pytest.raises(ValueError, match="loss.schedule_sampler"):
        cli.main(["train"] + _recipe_args("iddpm_cifar10", tmp_path, tmp_path / "b")
                 + ["--config.loss.schedule_sampler=nope"])
