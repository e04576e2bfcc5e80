"""diffjax.evaluation and the `eval` command: chunk-independent generation, the feature driver,
reference caching, sample files, and the CLI end to end (a 2-D smoke config in the default
suite; the digits UNet smoke config under -m slow)."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import make_gmm

import diffjax as dj
from diffjax import evaluation as EV
from diffjax import samplers as S
from diffjax.run import cli

ROOT = Path(__file__).resolve().parents[1]


def _gmm_sample_fn():
    """Stochastic sampling (Euler-Maruyama draws noise every step) of the exact GMM denoiser."""
    proc = dj.VP()
    model = make_gmm(proc)
    grid = dj.uniform_grid(6, 1.0, 1e-3)

    def sample_fn(key, b, offset):
        return dj.sample(model, key, (b, 2), grid, S.EulerMaruyama(), process=proc,
                         prediction="x0", sample_offset=offset)

    return sample_fn


def test_generate_is_independent_of_chunk_size(capsys):
    fn = _gmm_sample_fn()
    key = jax.random.key(3)
    whole = np.asarray(fn(key, 13, 0))  # one batch, no chunking, unsharded (13 % 8 != 0)
    for chunk in (8, 5, 13):  # 8: each chunk sharded over the 8 fake devices
        got = EV.generate(fn, 13, chunk, key=key, progress=chunk == 5)
        assert got.shape == (13, 2)
        np.testing.assert_allclose(got, whole, rtol=0, atol=1e-6, err_msg=f"chunk {chunk}")
    assert "samples 13/13" in capsys.readouterr().out  # the progress line
    other = EV.generate(fn, 13, 5, key=jax.random.key(4), progress=False)
    assert np.abs(other - whole).max() > 0.1  # the key matters
    with pytest.raises(ValueError, match="num_samples"):
        EV.generate(fn, 0, 5)
    with pytest.raises(ValueError, match="batch_size"):
        EV.generate(fn, 4, 0)
    with pytest.raises(ValueError, match="returned 3 samples"):
        EV.generate(lambda k, b, o: np.zeros((3, 2)), 4, 2)


def test_pixel_features_closed_form_and_quantisation():
    """Through the whole driver (quantise, batch, pad, features, statistics): a set against
    itself has FID 0 and precision = recall = 1; shifting every pixel by c grey levels moves
    the pixel Gaussian's mean by c/255 per dimension and leaves its covariance, so
    FID = D (c / 255)^2 exactly."""
    rng = np.random.default_rng(0)
    a = rng.integers(10, 200, size=(50, 4, 4, 1), dtype=np.uint8)
    space = EV.feature_space("pixels", batch_size=16)  # 50 = 3 x 16 + 2 (a padded batch)
    assert space.metrics() == ("fid", "pr") and not space.comparable
    same = EV.evaluate_images(a, reference=a, metrics=("fid", "pr"), features=space,
                              progress=False)
    assert abs(same["fid"]) < 1e-9 and same["precision"] == same["recall"] == 1.0
    assert same["num_samples"] == same["num_reference"] == 50
    shifted = EV.evaluate_images(a + np.uint8(5), reference=a, metrics=("fid",),
                                 features=space, progress=False)
    np.testing.assert_allclose(shifted["fid"], 16 * (5 / 255) ** 2, rtol=1e-6)
    # floats in [-1, 1] are quantised like diffjax.data.to_uint8 (rounding) before features
    from diffjax.data.preprocess import to_uint8

    x = rng.uniform(-1.0, 1.0, size=(20, 4, 4, 1)).astype(np.float32)
    fx = EV.extract_features(x, space, progress=False)["pool3"]
    np.testing.assert_array_equal(fx, EV.extract_features(to_uint8(x), space,
                                                          progress=False)["pool3"])
    np.testing.assert_array_equal(EV.quantize(np.array([-1.0, 0.0, 0.999, 1.5]), "floor"),
                                  [0, 127, 254, 255])
    # an iterable of (image, label) batches gives the same features as the array
    it = [(x[:7], None), (x[7:],)]
    np.testing.assert_array_equal(EV.extract_features(it, space, progress=False)["pool3"], fx)
    with pytest.raises(ValueError, match="quantize"):
        EV.quantize(x, "ceil")
    with pytest.raises(ValueError, match=r"\['is'\] are not available"):
        EV.evaluate_images(a, reference=a, metrics=("is",), features=space)
    with pytest.raises(ValueError, match="unknown image metric"):
        EV.evaluate_images(a, reference=a, metrics=("fidd",), features=space)
    with pytest.raises(ValueError, match="inception_weights"):
        EV.feature_space("inception")
    with pytest.raises(ValueError, match="unknown features"):
        EV.feature_space("vgg")


def test_jax_feature_driver_sharded_closed_form():
    """A jitted JAX feature net through the driver (8 devices: batches of 8 sharded, the last
    one padded; batches of 5 unsharded) returns exactly its features; a set against itself has
    FID = sFID = 0 and P = R = 1, and class-balanced one-hot predictions over K = 4 classes have
    Inception Score K (p(y|x) one-hot, p(y) uniform: exp KL = K)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    cls = np.arange(19) % 4
    imgs = rng.integers(0, 256, size=(19, 4, 4, 1), dtype=np.uint8)
    imgs[:, 0, 0, 0] = cls * 60  # the "class" of an image is written in its first pixel
    w = rng.standard_normal((16, 5)).astype(np.float32)

    def forward(v, x):
        flat = x.reshape(x.shape[0], -1).astype(jnp.float32) / 255.0
        onehot = jax.nn.one_hot(jnp.round(x[:, 0, 0, 0] / 60.0).astype(jnp.int32), 4)
        return {"pool3": flat @ v, "logits": 60.0 * onehot, "spatial": flat}

    feats = {}
    for bs in (8, 5):
        space = EV.jax_features(forward, jnp.asarray(w), name="lin", description="linear",
                                comparable=False, outputs=("pool3", "logits", "spatial"),
                                batch_size=bs)
        feats[bs] = EV.extract_features(imgs, space, progress=False)
        np.testing.assert_allclose(feats[bs]["pool3"],
                                   imgs.reshape(19, -1).astype(np.float64) / 255.0 @ w,
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(feats[8]["spatial"], feats[5]["spatial"])
    assert space.metrics() == ("fid", "is", "sfid", "pr")
    res = EV.evaluate_images(imgs[:16], reference=imgs, features=space, is_splits=2,
                             progress=False)
    assert res["is"] == pytest.approx(4.0, rel=1e-6) and res["is_std"] < 1e-6
    same = EV.evaluate_images(feats[8], reference=imgs, features=space, is_splits=1,
                              progress=False)
    assert abs(same["fid"]) < 1e-9 and abs(same["sfid"]) < 1e-9
    assert same["precision"] == same["recall"] == 1.0


@pytest.mark.slow  # compiles the Inception at 75 px twice (~45 s on 2 shared cores)
def test_random_init_inception_through_driver():
    """The Inception feature space (seeded random weights, 75 px to keep it cheap) gives the
    network's own outputs through the sharded, padded driver; a set against itself has FID 0."""
    from diffjax.metrics.inception import InceptionV3, resize_bilinear

    space = EV.feature_space("random_init", input_size=75, batch_size=8, seed=1)
    assert "NOT comparable" in space.description and not space.comparable
    assert space.metrics() == ("fid", "is", "sfid", "pr")
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(11, 8, 8, 3), dtype=np.uint8)  # 8 (sharded) + 3 padded
    f = EV.extract_features(imgs, space, progress=False)
    assert f["pool3"].shape == (11, 2048) and f["logits"].shape == (11, 1008)
    assert f["spatial"].shape == (11, 3 * 3 * 7)  # mixed_6/conv is 3x3 at 75 px (17x17 at 299)
    x = resize_bilinear(imgs.astype(np.float32) / 255.0, 75)
    direct = jax.jit(InceptionV3().apply)(EV.random_inception_variables(1), 2.0 * x - 1.0)
    np.testing.assert_allclose(f["pool3"], direct["pool3"], rtol=1e-4, atol=1e-5)
    assert np.std(f["pool3"]) > 1e-3  # He-scaled weights keep the activations alive
    res = EV.evaluate_images(f, reference=imgs, features=space, is_splits=2, progress=False)
    assert abs(res["fid"]) < 1e-6 * np.trace(np.cov(f["pool3"].T)) + 1e-6
    assert abs(res["sfid"]) < 1e-6 and res["precision"] == res["recall"] == 1.0
    assert res["is"] >= 1.0 and res["comparable_to_papers"] is False


def test_reference_cache_checksum_and_feature_space(tmp_path):
    calls = []
    pix = EV.feature_space("pixels", batch_size=8)
    space = EV.FeatureSpace("counting", "pixels, counted", False,
                            lambda x: (calls.append(len(x)), pix.fn(x))[1])
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, size=(30, 3, 3, 1), dtype=np.uint8)
    cache = tmp_path / "ref.npz"
    ref = EV.reference_features(imgs, space, cache_path=cache, source="test", progress=False)
    assert calls and cache.exists() and Path(str(cache) + ".sha256").exists()
    n_calls = len(calls)
    again = EV.reference_features(imgs, space, cache_path=cache, progress=False)
    assert len(calls) == n_calls  # served from the cache
    np.testing.assert_array_equal(again.stats.sigma, ref.stats.sigma)
    np.testing.assert_allclose(again.features, ref.features, rtol=1e-6)
    assert again.meta["source"] == "test" and again.num_samples == 30
    # the file is also a plain mu/sigma statistics file (pytorch-fid / diffjax.metrics)
    st = dj.metrics.load_statistics(cache)
    np.testing.assert_allclose(st.mu, imgs.reshape(30, -1).mean(0) / 255.0)
    with pytest.raises(ValueError, match="not 'pixels'"):
        EV.load_reference(cache, space="pixels")
    with open(cache, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match="checksum"):
        EV.reference_features(imgs, space, cache_path=cache)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EV.load_reference(tmp_path / "nope.npz")
    # a statistics-only reference gives FID but refuses precision/recall
    stats_only = tmp_path / "stats.npz"
    dj.metrics.save_statistics(stats_only, ref.stats)
    r = EV.evaluate_images(imgs, reference=stats_only, metrics=("fid",), features=pix,
                           progress=False)
    assert abs(r["fid"]) < 1e-9
    with pytest.raises(ValueError, match="statistics only"):
        EV.evaluate_images(imgs, reference=stats_only, metrics=("pr",), features=pix)


def test_load_samples_round_trip_and_errors(tmp_path):
    from diffjax.utils import save_png

    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", arr_0=u8)
    np.testing.assert_array_equal(EV.load_samples(tmp_path / "a.npz"), u8)
    grey = u8[..., 0]
    np.savez(tmp_path / "g.npz", samples=grey)
    np.testing.assert_array_equal(EV.load_samples(tmp_path / "g.npz"), grey[..., None])
    fl = rng.uniform(-1, 1, size=(4, 6, 6, 1)).astype(np.float32)
    np.savez(tmp_path / "f.npz", samples=fl)
    np.testing.assert_array_equal(EV.load_samples(tmp_path / "f.npz"), fl)
    pts = rng.standard_normal((7, 2))
    np.save(tmp_path / "p.npy", pts)
    np.testing.assert_array_equal(EV.load_samples(tmp_path / "p.npy"), pts)
    folder = tmp_path / "png"
    for i, im in enumerate(u8):
        save_png(folder / f"{i:03d}.png", im)
    np.testing.assert_array_equal(EV.load_samples(folder), u8)
    # errors name the argument and say what is wrong
    with pytest.raises(FileNotFoundError, match="images="):
        EV.load_samples(tmp_path / "missing.npz")
    np.savez(tmp_path / "k.npz", images=u8)
    with pytest.raises(ValueError, match="'samples' or 'arr_0'"):
        EV.load_samples(tmp_path / "k.npz")
    np.savez(tmp_path / "c.npz", samples=u8.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="channels-first"):
        EV.load_samples(tmp_path / "c.npz")
    np.savez(tmp_path / "r.npz", samples=u8.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        EV.load_samples(tmp_path / "r.npz")
    np.savez(tmp_path / "i.npz", samples=u8.astype(np.int32))
    with pytest.raises(ValueError, match="dtype int32"):
        EV.load_samples(tmp_path / "i.npz")
    save_png(folder / "big.png", np.zeros((7, 7, 3), np.uint8))
    with pytest.raises(ValueError, match="different shapes"):
        EV.load_samples(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .png"):
        EV.load_samples(tmp_path / "empty")
    (folder / "big.png").unlink()
    (folder / "zz_broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"zz_broken\.png.*expected a PNG or JPEG"):
        EV.load_samples(folder)


def test_point_metrics_and_report(tmp_path):
    from diffjax.data.toy import gmm_small

    ref = gmm_small(1000, seed=0)
    same = EV.evaluate_points(ref, ref, seed=0, max_kernel_points=500)
    assert same["sw1"] < 1e-12 and abs(same["energy"]) < 1e-12
    far = EV.evaluate_points(np.asarray(ref) + 1.0, ref, max_kernel_points=500)
    assert far["sw1"] > 0.5 and far["mmd"] > 0.1 and far["energy"] > 0.5
    js, md = EV.write_report(tmp_path, dict(far, loss=0.25), {"num_samples": 1000,
                                                               "comparable_to_papers": False})
    assert json.loads(js.read_text())["metrics"]["sw1"] == far["sw1"]
    text = md.read_text()
    assert f"| sliced Wasserstein-1 | {far['sw1']:.4f} |" in text
    assert "| held-out denoising loss | 0.2500 |" in text and "NOT comparable" in text


def test_bits_per_dim_pf_ode_closed_form_and_vlb_keys():
    """PF-ODE: isotropic Gaussian points under their exact denoiser have bits/dim
    -E log N(x; 0, s^2 I) / (D ln 2) (Rademacher probes are exact for an isotropic Jacobian).
    VLB: datapoint i is calc_bpd_loop with key fold_in(key, i), whatever the batch size."""
    from diffjax.losses.vlb import calc_bpd_loop

    s2, d = 0.3, 2
    x = np.sqrt(s2) * np.random.default_rng(0).standard_normal((12, d)).astype(np.float32)
    model = dj.analytic.Gaussian.create(np.zeros(d), s2 * np.eye(d), dj.VP())
    res = EV.evaluate_bits_per_dim(model, x, process=dj.VP(), prediction="x0", batch_size=5,
                                   image_data=False, key=jax.random.key(1))
    nll = 0.5 * np.sum(x.astype(np.float64) ** 2, 1) / s2 + 0.5 * d * np.log(2 * np.pi * s2)
    assert res["bpd_method"] == "pf_ode" and res["bpd_num"] == 12
    assert res["bpd"] == pytest.approx(nll.mean() / (d * np.log(2)), abs=5e-3)
    assert res["bpd_sem"] == pytest.approx(nll.std(ddof=1) / np.sqrt(12) / (d * np.log(2)),
                                           rel=0.05)

    proc = dj.DiscreteVP.linear(20)
    img = np.random.default_rng(1).integers(0, 256, (5, 2, 2, 1)).astype(np.float32)
    img = img / 127.5 - 1.0
    oracle = dj.analytic.Gaussian.create(np.zeros(4), 0.4 * np.eye(4), proc)
    key = jax.random.key(2)
    kw = dict(process=proc, prediction="x0", key=key)
    a = EV.evaluate_bits_per_dim(oracle, img, batch_size=2, **kw)
    b = EV.evaluate_bits_per_dim(oracle, img, batch_size=5, **kw)
    assert a["bpd_method"] == "vlb" and a["bpd"] == pytest.approx(b["bpd"], rel=1e-6)
    direct = [float(calc_bpd_loop(oracle, jax.random.fold_in(key, i), img[i:i + 1],
                                  process=proc, prediction="x0")[0][0]) for i in range(5)]
    assert a["bpd"] == pytest.approx(np.mean(direct), rel=1e-5)
    assert np.std(direct) > 0.01  # the check would be empty if every datapoint scored alike
    with pytest.raises(ValueError, match="non-empty batch"):
        EV.evaluate_bits_per_dim(oracle, img[:0], process=proc)


TOY_CONFIG = '''"""Test config: a tiny MLP on the 2-D Gaussian mixture.

Command: python -m diffjax train --config=toy2d.py:smoke
Hardware: CPU, seconds.
"""
import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.process = dict(name="vp")
    c.model = dict(name="mlp", dim=2, width=32, depth=2, time_dim=16, prediction="eps")
    c.loss = dict(name="score_sde")
    c.data = dict(name="toy:gmm_small", batch_size=64)
    c.optim = dict(name="adam", lr=1e-3, warmup_steps=0)
    c.ema = dict(ema=0.99)
    c.train = dict(num_steps=4, log_every=2, save_every=4, max_to_keep=1, sample_every=0)
    c.sample = dict(sampler="euler_maruyama", grid="uniform", num_steps=8, t_min=1e-3,
                    num_samples=32)
    c.mesh = dict(data=-1, fsdp=1)
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config variant {arg!r}")
    return c
'''


def test_cli_eval_toy_smoke_and_images(tmp_path):
    """Train a 2-D smoke config through the CLI, then `eval` it (held-out loss, SW1 / MMD /
    energy, bits/dim by the PF-ODE) and evaluate its samples again from an npz with
    `--images`: the same samples give the same numbers."""
    path = tmp_path / "toy2d.py"
    path.write_text(TOY_CONFIG)
    work = tmp_path / "work"
    args = [f"--config={path}:smoke", f"--workdir={work}"]
    cli.main(["train"] + args)
    ev = cli.main(["eval"] + args + ["--num_samples=40", "--config.eval.batch_size=16",
                                     "--config.eval.progress=False"])
    assert ev["step"] == 4 and np.isfinite(ev["loss"]) and ev["num_samples"] == 40
    assert ev["num_reference"] == 20_000 and ev["sw1"] > 0 and np.isfinite(ev["mmd"])
    saved = np.load(work / "eval_samples.npz")["samples"]
    assert saved.shape == (40, 2)
    report = json.loads((work / "eval.json").read_text())
    assert report["metrics"]["sw1"] == ev["sw1"] and report["protocol"]["num_steps"] == 8
    assert f"| sliced Wasserstein-1 | {ev['sw1']:.4f} |" in (work / "eval.md").read_text()
    # another chunk size draws the same samples (per-sample seeds)
    cli.main(["eval"] + args + ["--num_samples=40", "--config.eval.batch_size=40",
                                "--config.eval.metrics=sw1", "--config.eval.progress=False"])
    np.testing.assert_allclose(np.load(work / "eval_samples.npz")["samples"], saved, atol=1e-5)
    # samples made elsewhere: no checkpoint needed, same numbers for the same samples
    np.savez(tmp_path / "pts.npz", samples=saved)
    ev2 = cli.main(["eval", f"--config={path}:smoke", f"--workdir={tmp_path / 'w2'}",
                    f"--images={tmp_path / 'pts.npz'}"])
    assert "loss" not in ev2 and ev2["sw1"] == pytest.approx(ev["sw1"], rel=1e-6)
    assert ev2["mmd"] == pytest.approx(ev["mmd"], rel=1e-6)
    # likelihood: PF-ODE bits/dim (continuous process)
    bpd = cli.main(["eval"] + args + ["--config.eval.metrics=bpd", "--config.eval.bpd_num=8"])
    assert bpd["bpd_method"] == "pf_ode" and np.isfinite(bpd["bpd"]) and bpd["bpd_num"] == 8
    with pytest.raises(ValueError, match="eval.metrics"):
        cli.main(["eval"] + args + ["--config.eval.metrics=fid,nope"])
    with pytest.raises(ValueError, match="eval.nope"):
        cli.main(["eval"] + args + ["--config.eval.nope=1"])
    with pytest.raises(SystemExit, match="--images"):
        cli.main(["sample"] + args + [f"--images={tmp_path / 'pts.npz'}"])


def test_cli_eval_images_digits(tmp_path):
    """`eval --images` on an npz of digits (no checkpoint): the digit-classifier feature space,
    the reference statistics cached with a checksum, JSON and Markdown reports."""
    from diffjax.data.embedded import load_digits

    digits, _ = load_digits()
    assert digits.shape[1:] == (8, 8, 1)
    np.savez(tmp_path / "d.npz", samples=digits[:40])  # floats in [-1, 1]
    cfg = f"--config={ROOT / 'configs' / 'quickstart.py'}:smoke"
    ev = cli.main(["eval", cfg, f"--workdir={tmp_path / 'w'}", f"--images={tmp_path / 'd.npz'}",
                   "--config.eval.is_splits=4", "--config.eval.progress=False"])
    assert ev["features"] == "digits" and ev["num_samples"] == 40
    assert ev["num_reference"] == 1500  # the training digits (quickstart holds out 297)
    # real digits: confidently classified and spread over the classes
    assert ev["is"] > 5.0 and ev["precision"] > 0.7
    assert ev["protocol"]["comparable_to_papers"] is False
    caches = sorted((tmp_path / "w").glob("reference_*.npz"))
    assert len(caches) == 1 and Path(str(caches[0]) + ".sha256").exists()
    md = (tmp_path / "w" / "eval.md").read_text()
    assert f"| FID | {ev['fid']:.4f} |" in md and "digit-classifier" in md
    assert "NOT comparable" in md
    # the first 40 training digits against the training digits: closer than noise images
    noise = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "n.npz", samples=noise)
    ev_noise = cli.main(["eval", cfg, f"--workdir={tmp_path / 'w'}",
                         f"--images={tmp_path / 'n.npz'}", "--config.eval.metrics=fid",
                         "--config.eval.progress=False"])
    assert ev_noise["fid"] > 2 * ev["fid"]
    with pytest.raises(ValueError, match="needs a checkpoint"):
        cli.main(["eval", cfg, f"--workdir={tmp_path / 'w'}", f"--images={tmp_path / 'n.npz'}",
                  "--config.eval.metrics=loss"])
    with pytest.raises(ValueError, match="eval.features='inception'.*inception_weights"):
        cli.main(["eval", cfg, f"--workdir={tmp_path / 'w'}", f"--images={tmp_path / 'n.npz'}",
                  "--config.eval.features=inception"])


@pytest.mark.slow  # trains the digits UNet smoke config, VLB over T = 1000 (~2.5 min)
def test_cli_eval_digits_smoke_checkpoint(tmp_path):
    """The quickstart smoke run, then `eval` of its checkpoint with the digit-classifier
    features; its saved uint8 samples evaluated with `--images` give the same numbers."""
    cfg = f"--config={ROOT / 'configs' / 'quickstart.py'}:smoke"
    work = tmp_path / "work"
    cli.main(["train", cfg, f"--workdir={work}"])
    ev = cli.main(["eval", cfg, f"--workdir={work}", "--num_samples=24",
                   "--config.eval.batch_size=8", "--config.eval.is_splits=2",
                   "--config.eval.metrics=loss,fid,is,pr,bpd", "--config.eval.bpd_num=4"])
    assert ev["step"] == 20 and np.isfinite(ev["loss"]) and ev["fid"] > 0
    assert 0 <= ev["precision"] <= 1 and ev["bpd_method"] == "vlb" and ev["bpd"] > 0
    saved = np.load(work / "eval_samples.npz")["samples"]
    assert saved.dtype == np.uint8 and saved.shape == (24, 8, 8, 1)
    ev2 = cli.main(["eval", cfg, f"--workdir={tmp_path / 'w2'}",
                    f"--images={work / 'eval_samples.npz'}", "--config.eval.is_splits=2"])
    for k in ("fid", "is", "precision", "recall"):
        assert ev2[k] == pytest.approx(ev[k], rel=1e-9), k
    # 2 devices' worth of chunks or one: the same images
    cli.main(["eval", cfg, f"--workdir={work}", "--num_samples=24", "--config.eval.batch_size=24",
              "--config.eval.metrics=fid"])
    np.testing.assert_array_equal(np.load(work / "eval_samples.npz")["samples"], saved)
