"""Tests of diffjax.data: toy sets, embedded digits, sources, preprocessing, grain loaders.

Everything runs offline: generated arrays and PNGs, scikit-learn's bundled digits, and
``tfds.testing.mock_data`` (random pixels) for TFDS. Loaders run with ``worker_count=0``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from diffjax import data
from diffjax.data import pipeline, preprocess, sources, toy
from diffjax.utils import save_png

# --------------------------------------------------------------------------- toy sets

N_TOY = 20_000


def _gmm_moments(weights, means, stds):
    w = np.asarray(weights)
    mu = np.asarray(means)
    s = np.asarray(stds)
    mean = w @ mu
    second = w @ (mu**2 + (s**2)[:, None])
    return mean, second - mean**2


@pytest.mark.parametrize(
    "name, mean, var",
    [
        ("gmm_small", *_gmm_moments(**toy.GMM_SMALL)),
        ("gmm_smooth", *_gmm_moments(**toy.GMM_SMOOTH)),
        ("eight_gaussians", (0.0, 0.0), (2.0 + 0.05**2, 2.0 + 0.05**2)),
        ("checkerboard", (0.0, 0.0), (4 / 3, 4 / 3)),
        ("two_moons", (0.0, 0.0), None),
        ("swiss_roll", (0.0, 0.0), None),
    ],
)
def test_toy_moments_shape_determinism(name, mean, var):
    x = data.sample_toy(name, N_TOY, seed=3)
    assert x.shape == (N_TOY, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x, data.sample_toy(name, N_TOY, seed=3))
    assert not np.array_equal(x, data.sample_toy(name, N_TOY, seed=4))
    # A prefix of a bigger draw is not required, but the law is fixed: two seeds agree in
    # their moments within Monte-Carlo error (~0.01 here).
    np.testing.assert_allclose(x.mean(0), mean, atol=0.04)
    if var is not None:
        np.testing.assert_allclose(x.var(0), var, rtol=0.05)
    if name == "swiss_roll":  # unit variance on average over the two coordinates
        assert abs(x.var(0).mean() - 1.0) < 0.04


def test_gmm_small_component_weights():
    x = toy.gmm_small(N_TOY, seed=0)
    means = np.asarray(toy.GMM_SMALL["means"])
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(np.bincount(nearest, minlength=3) / N_TOY,
                               toy.GMM_SMALL["weights"], atol=0.02)


def test_toy_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="name='spiral'.*gmm_small"):
        data.sample_toy("spiral", 10)
    src = data.get_source("toy:two_moons", num_samples=64, seed=1)
    assert len(src) == 64 and src[0]["image"].shape == (2,)
    np.testing.assert_array_equal(src.images, toy.two_moons(64, seed=1))


# --------------------------------------------------------------------------- embedded


def test_digits_embedded():
    images, labels = data.load_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert labels.dtype == np.int32 and set(np.unique(labels)) == set(range(10))
    z, _ = data.load_digits(zero_one=True)
    assert z.min() == 0.0 and z.max() == 1.0
    np.testing.assert_allclose(images, 2 * z - 1, atol=1e-6)
    src = data.get_source("digits")
    assert len(src) == 1797 and src.num_classes == 10
    with pytest.raises(ValueError, match="split"):
        data.get_source("digits", split="test")


def test_faces_embedded_optional():
    pytest.importorskip("skimage")
    images, labels = data.load_faces()
    assert images.shape == (200, 25, 25, 1) and images.dtype == np.float32
    assert -1.0 <= images.min() and images.max() <= 1.0
    assert labels.sum() == 100


# --------------------------------------------------------------------------- TFDS (mocked)


@pytest.fixture(scope="module")
def tfds():
    import tensorflow_datasets

    return tensorflow_datasets


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_mock_through_loader(tfds, name, shape):
    with tfds.testing.mock_data(num_examples=24):
        src = data.get_source(name, "train")
        assert isinstance(src, data.TFDSSource) and len(src) == 24
        assert src.image_key == "image" and src.label_key == "label" and src.num_classes == 10
        rec = src[0]
        assert rec["image"].dtype == np.uint8 and rec["image"].shape == shape
        loader = data.make_loader(src, batch_size=8, seed=0, random_flip=True)
        for _ in range(4):  # crosses an epoch boundary (3 batches per epoch)
            b = next(loader)
            assert set(b) == {"image", "label"}
            assert b["image"].shape == (8, *shape) and b["image"].dtype == np.float32
            assert b["image"].min() >= -1.0 and b["image"].max() <= 1.0
            assert b["label"].shape == (8,) and b["label"].dtype == np.int32
            assert b["label"].min() >= 0 and b["label"].max() < 10


def test_tfds_mock_variable_size_resized(tfds):
    # Mocked imagenet2012 has random image sizes: crop+resize makes a fixed-shape batch.
    with tfds.testing.mock_data(num_examples=6):
        src = data.TFDSSource("imagenet2012", "train")
        loader = data.make_loader(src, batch_size=3, seed=0, image_size=16)
        b = next(loader)
    assert b["image"].shape == (3, 16, 16, 3) and b["image"].dtype == np.float32


def test_tfds_unprepared_and_unknown_raise_clearly(tfds, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)'mnist'.*tfds build mnist"):
        data.TFDSSource("mnist", "train", data_dir=tmp_path)
    assert not any(tmp_path.rglob("*.array_record*"))  # nothing was downloaded
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        data.get_source("tfds:no_such_dataset_xyz")


# --------------------------------------------------------------------------- image folders


@pytest.fixture()
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    pixels = {}
    for cls in ("dogs", "cats"):  # sorted: cats -> 0, dogs -> 1
        for i in range(3):
            img = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            path = root / cls / f"{i}.png"
            save_png(path, img)
            pixels[str(path)] = img
    (root / ".hidden").mkdir()
    return root, pixels


def test_image_folder_roundtrip(image_folder):
    root, pixels = image_folder
    src = data.get_source(str(root))
    assert isinstance(src, data.ImageFolderSource)
    assert src.class_names == ["cats", "dogs"] and len(src) == 6
    for i in range(len(src)):
        rec = src[i]
        np.testing.assert_array_equal(rec["image"], pixels[src.paths[i]])
        assert rec["label"] == (0 if "/cats/" in src.paths[i] else 1)
    loader = data.make_loader(src, batch_size=6, seed=0, shuffle=False, num_epochs=1)
    b = next(loader)
    expect = np.stack([pixels[p] for p in src.paths]).astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(b["image"], expect, atol=1e-6)
    np.testing.assert_array_equal(b["label"], [0, 0, 0, 1, 1, 1])
    with pytest.raises(StopIteration):
        next(loader)


def test_read_image_modes_are_converted_explicitly(tmp_path):
    """Each Pillow mode against an independent expectation: alpha is dropped (not composited),
    palettes are looked up, 16-bit grey keeps the high byte, grey <-> RGB as documented."""
    import PIL.Image as pil

    yy, xx = np.mgrid[0:12, 0:10]
    rgb = np.stack([yy * 20, xx * 25, (yy * xx) % 256], -1).astype(np.uint8)
    grey = (yy * 21).astype(np.uint8)
    read = lambda name, ch=3: sources.read_image(tmp_path / name, channels=ch)

    pil.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read("rgb.png"), rgb)
    np.testing.assert_array_equal(read("rgb.png", None), rgb)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(read("rgb.png", 1)[..., 0] - luma).max() <= 1.0  # ITU-R 601-2, integer math
    pil.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read("g.png", None), grey[..., None])
    np.testing.assert_array_equal(read("g.png", 1), grey[..., None])
    np.testing.assert_array_equal(read("g.png"), np.repeat(grey[..., None], 3, -1))
    # alpha, half of it fully transparent: dropped, the stored colour is kept
    alpha = np.where(xx < 5, 0, 255).astype(np.uint8)
    pil.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read("rgba.png"), rgb)
    np.testing.assert_array_equal(read("rgba.png", None), rgb)
    pil.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read("la.png", None), grey[..., None])
    # palettes (4-bit, and one with a transparent entry): the palette's colours
    pal = pil.fromarray(rgb).quantize(16)
    colours = np.asarray(pal.getpalette(), np.uint8).reshape(-1, 3)[np.asarray(pal)]
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read("pal.png"), colours)
    np.testing.assert_array_equal(read("pal.png", None), colours)
    pal.save(tmp_path / "pal_t.png", transparency=0)
    assert pil.open(tmp_path / "pal_t.png").info.get("transparency") is not None
    np.testing.assert_array_equal(read("pal_t.png"), colours)
    # 16-bit grey: the high byte; bilevel: 0 / 255
    g16 = np.random.default_rng(0).integers(0, 65536, (5, 6)).astype(np.uint16)
    pil.fromarray(g16).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(read("g16.png", None), (g16 >> 8).astype(np.uint8)[..., None])
    bits = np.random.default_rng(1).integers(0, 2, (5, 11)).astype(bool)
    pil.fromarray(bits).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read("bits.png", None), 255 * bits[..., None].astype(np.uint8))
    # JPEG (lossy; a smooth image comes back close), CMYK JPEG -> RGB
    pil.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    x = read("x.jpg")
    assert x.shape == (12, 10, 3) and np.abs(x.astype(int) - rgb).mean() < 8
    pil.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert read("cmyk.jpg", None).shape == (12, 10, 3)
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
        read("rgb.png", 4)


def test_undecodable_files_are_named(tmp_path, image_folder):
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"text\.png.*expected a PNG or JPEG"):
        sources.read_image(tmp_path / "text.png")
    good = save_png(tmp_path / "good.png", np.zeros((40, 40, 3), np.uint8) + 7)
    blob = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(blob[:len(blob) // 2])  # truncated inside the data
    with pytest.raises(ValueError, match=r"cut\.png"):
        sources.read_image(tmp_path / "cut.png")
    with pytest.raises(FileNotFoundError):
        sources.read_image(tmp_path / "missing.png")
    # the folder source names the file and the record; the other records still read
    root, _ = image_folder
    (root / "cats" / "9_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    src = data.ImageFolderSource(root, check="none")  # unchecked: fails when read
    bad = src.paths.index(str(root / "cats" / "9_broken.png"))
    with pytest.raises(ValueError, match=rf"record {bad}: .*9_broken\.png.*PNG or JPEG"):
        src[bad]
    assert src[(bad + 1) % len(src)]["image"].shape == (6, 5, 3)


@pytest.mark.parametrize("odd_first", [True, False])
def test_image_folder_checks_every_file_before_training(tmp_path, odd_first):
    """Issue 15 item 7: an odd size is found wherever it sorts; a truncated file is found by
    ``check='decode'`` (its header is fine) and named; ``on_error='skip'`` leaves it out with
    a count; a resize (``same_size=False``) accepts the mixed folder."""
    root = tmp_path / "own"
    rng = np.random.default_rng(0)
    for i in range(4):
        save_png(root / f"b{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    save_png(root / ("a_odd.png" if odd_first else "z_odd.png"),
             rng.integers(0, 256, (12, 9, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"2 sizes .*8x8: 4, 12x9: 1.*_odd\.png.*image_size"):
        data.ImageFolderSource(root)
    src = data.ImageFolderSource(root, same_size=False)
    assert src.sizes == {(8, 8): 4, (12, 9): 1}
    (root / ("a_odd.png" if odd_first else "z_odd.png")).unlink()
    blob = (root / "b0.png").read_bytes()
    (root / "cut.png").write_bytes(blob[: len(blob) - 60])  # header intact, data truncated
    assert len(data.ImageFolderSource(root, check="header")) == 5  # headers cannot see it
    with pytest.raises(ValueError, match=r"1 of 5 files cannot be read.*cut\.png"):
        data.ImageFolderSource(root)  # 'auto' decodes a small folder
    src = data.ImageFolderSource(root, check="decode", on_error="skip")
    assert len(src) == 4 and [p for p, _ in src.skipped] == [str(root / "cut.png")]
    with pytest.raises(ValueError, match="on_error='ignore'; expected 'raise' or 'skip'"):
        data.ImageFolderSource(root, on_error="ignore")


def test_save_png_round_trip(tmp_path):
    import PIL.Image as pil

    rng = np.random.default_rng(2)
    f = rng.uniform(-0.1, 1.1, (7, 9))  # floats in [0, 1], clipped outside
    p = save_png(tmp_path / "sub" / "f.png", f)  # creates the folder
    with pil.open(p) as im:
        assert im.format == "PNG" and im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), np.clip(np.round(f * 255), 0, 255))
    u = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(sources.read_image(save_png(tmp_path / "u.png", u)), u)
    np.testing.assert_array_equal(
        sources.read_image(save_png(tmp_path / "g.png", u[..., :1]), channels=None), u[..., :1])
    with pytest.raises(ValueError, match="got shape"):
        save_png(tmp_path / "bad.png", np.zeros((4, 4, 4), np.uint8))


def test_missing_paths_and_unknown_names_raise_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="root=.*nope"):
        data.ImageFolderSource(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="name_or_path=.*nope"):
        data.get_source(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="path=.*missing.npz"):
        data.LatentsSource(tmp_path / "missing.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        data.get_source(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"name_or_path='cifar11'.*digits.*toy:gmm_small.*cifar10"):
        data.get_source("cifar11")


# --------------------------------------------------------------------------- latents


def test_latents_source_and_channel_normalisation(tmp_path):
    rng = np.random.default_rng(1)
    n, c = 64, 3
    lat = (rng.standard_normal((n, 4, 4, c)) * [0.5, 2.0, 5.0] + [1.0, -3.0, 0.2]).astype(
        np.float32)
    labels = rng.integers(0, 5, n)
    np.savez(tmp_path / "lat.npz", latents=lat, labels=labels)
    src = data.get_source(str(tmp_path / "lat.npz"))
    assert isinstance(src, data.LatentsSource) and len(src) == n and src.num_classes == 5
    mean, std = src.channel_stats()
    np.testing.assert_allclose(mean, lat.reshape(-1, c).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, lat.reshape(-1, c).std(0), rtol=1e-5)
    loader = data.make_loader(src, batch_size=16, seed=0, num_epochs=1,
                              transforms=[pipeline.NormalizeLatents(mean, std)])
    batches = list(loader)
    assert len(batches) == 4
    x = np.concatenate([b["image"] for b in batches])
    assert x.shape == (n, 4, 4, c)
    np.testing.assert_allclose(x.reshape(-1, c).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.reshape(-1, c).std(0), 1.0, atol=1e-5)
    ordered = data.make_loader(src, batch_size=16, seed=0, num_epochs=1, shuffle=False,
                               transforms=[pipeline.NormalizeLatents(mean, std)])
    y = np.concatenate([b["image"] for b in ordered])
    np.testing.assert_allclose(preprocess.denormalize_latents(y, mean, std), lat, atol=1e-5)
    # channels-first .npy shards with labels given separately
    np.save(tmp_path / "cf.npy", np.moveaxis(lat, -1, 1))
    cf = data.LatentsSource(tmp_path / "cf.npy", channels_first=True, labels=labels)
    np.testing.assert_array_equal(cf[5]["image"], lat[5])
    assert cf[5]["label"] == labels[5]


# --------------------------------------------------------------------------- loaders


def _ids(batches):
    return np.concatenate([b["image"][:, 0] for b in batches]).astype(int)


def _id_source(n):
    return data.ArraySource(np.arange(n, dtype=np.float32)[:, None], np.arange(n) % 7)


def test_loader_deterministic_for_seed():
    src = _id_source(100)
    take = lambda seed: _ids([next(it) for it in [data.make_loader(src, batch_size=10,
                                                                   seed=seed)] * 5])
    a, b, c = take(0), take(0), take(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    epoch = take(0)[:50]
    assert len(set(epoch)) == 50  # no repeats inside an epoch


def test_loader_shards_disjoint_across_two_processes():
    n = 101
    src = _id_source(n)
    shards = []
    for pi in (0, 1):
        loader = data.make_loader(src, batch_size=10, seed=5, num_epochs=1,
                                  process_index=pi, process_count=2)
        assert loader.global_batch_size == 20 and loader.steps_per_epoch == 5
        ids = _ids(list(loader))
        assert len(ids) == 50 and len(set(ids)) == 50
        shards.append(set(ids))
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] <= set(range(n))
    # Two epochs: the same records again, in a new order.
    two = _ids(list(data.make_loader(src, batch_size=10, seed=5, num_epochs=2,
                                     process_index=1, process_count=2)))
    assert set(two[:50]) == set(two[50:]) == shards[1]
    assert not np.array_equal(two[:50], two[50:])


def test_resume_is_exact():
    src = data.get_source("digits")
    kw = dict(batch_size=32, seed=7, random_flip=True)
    first = data.make_loader(src, **kw)
    for _ in range(3):
        next(first)
    state = first.get_state()
    expected = [next(first) for _ in range(2)]
    fresh = data.make_loader(src, **kw)
    fresh.set_state(state)
    got = [next(fresh) for _ in range(2)]
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e["image"], g["image"])
        np.testing.assert_array_equal(e["label"], g["label"])
    # flips were really random, and exactly replayed: some batch rows differ from the source
    images, _ = data.load_digits()
    assert not all(any(np.array_equal(r, im) for im in images) for r in got[0]["image"])


def test_shard_batch_on_fake_devices():
    devices = np.array(jax.devices())
    mesh = jax.sharding.Mesh(devices, ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    b = next(data.make_loader(_id_source(64), batch_size=2 * len(devices), seed=0))
    g = pipeline.shard_batch(b, sharding)
    assert g["image"].shape == b["image"].shape and g["image"].sharding == sharding
    np.testing.assert_array_equal(np.asarray(g["label"]), b["label"])


# --------------------------------------------------------------------------- preprocess


def test_scaling_flip_crop():
    u = np.array([[[0], [255]], [[128], [64]]], np.uint8)
    np.testing.assert_allclose(preprocess.to_float(u)[0, :, 0], [-1.0, 1.0])
    np.testing.assert_allclose(preprocess.to_float(u, zero_one=True)[0, :, 0], [0.0, 1.0])
    np.testing.assert_array_equal(preprocess.to_uint8(preprocess.to_float(u)), u)
    x = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    rng = np.random.default_rng(0)
    flips = [preprocess.random_flip(x, rng) for _ in range(40)]
    n_flipped = sum(np.array_equal(f, x[:, ::-1]) for f in flips)
    assert 5 < n_flipped < 35
    img = np.arange(6 * 8).reshape(6, 8, 1)
    np.testing.assert_array_equal(preprocess.center_crop(img), img[:, 1:7])
    assert preprocess.center_crop(img, (2, 4)).shape == (2, 4, 1)
    assert preprocess.center_crop_resize(np.zeros((20, 30, 3), np.uint8), 8).shape == (8, 8, 3)
    assert preprocess.center_crop_resize(np.zeros((20, 30, 3)), (4, 8)).shape == (4, 8, 3)


@pytest.mark.parametrize("method", ["linear", "cubic", "lanczos3"])
@pytest.mark.parametrize("shape_in, shape_out", [((12, 9), (5, 4)), ((5, 4), (12, 9))])
def test_resize_matches_jax_image(method, shape_in, shape_out):
    x = np.random.default_rng(0).random((*shape_in, 2)).astype(np.float32)
    ours = preprocess.resize(x, shape_out, method=method)
    ref = np.asarray(jax.image.resize(x, (*shape_out, 2), method=method, antialias=True))
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_resize_area_is_exact_box_average():
    x = np.random.default_rng(0).random((8, 12, 1))
    y = preprocess.resize(x, (4, 3), method="area")
    np.testing.assert_allclose(y, x.reshape(4, 2, 3, 4, 1).mean((1, 3)), atol=1e-6)
    u = preprocess.resize((x * 255).astype(np.uint8), (4, 3), method="area")
    assert u.dtype == np.uint8
