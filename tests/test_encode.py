"""The latent extraction command (diffjax.run.encode) and the latent folder source.

* killed after k shards (``max_shards``, plus a stale partial ``.tmp`` file as a kill mid-write
  leaves) and restarted, the folder is byte-identical to an uninterrupted run's;
* 1 device vs 8 fake devices give identical latents;
* the stored latents are the VAE's encodings of the ADM centre crops (non-square images), the
  flips those of the mirrored crops, the index statistics the per-channel moments;
* :class:`diffjax.data.latents.LatentShardsSource` serves them (with flips appended) and
  :func:`diffjax.data.get_source` recognises the folder.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.data import ArraySource, get_source
from diffjax.data import latents as DL
from diffjax.data.preprocess import center_crop_resize, to_float
from diffjax.models import vae as mv
from diffjax.run import encode as E

N, PER_SHARD, SIZE = 21, 6, 8  # 4 shards, the last one short


@pytest.fixture(scope="module")
def setting():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 10, 12, 3), dtype=np.uint8)  # wide: cropped to 10x10
    labels = rng.integers(0, 5, N)
    vae = mv.vae_from_preset("tiny", scaling_factor=0.5)
    return ArraySource(images, labels), vae


def _run(setting, out, **kw):
    source, vae = setting
    return E.encode_dataset(source, vae, out, image_size=SIZE, batch_size=1,
                            examples_per_shard=PER_SHARD, flip=True, progress=False, **kw)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def full(setting, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    index = _run(setting, out)
    return out, index


def test_killed_and_restarted_equals_uninterrupted(setting, full, tmp_path):
    out, index = full
    assert index is not None and len(index["shards"]) == 4
    assert _run(setting, tmp_path, max_shards=2) is None  # "killed" after two shards
    assert not (tmp_path / DL.INDEX_NAME).exists()
    assert sum(p.name.endswith(".latents.npy") for p in tmp_path.iterdir()) == 2
    # a kill during a write leaves a partial temporary file behind
    (tmp_path / "shard-00002.latents.npy.tmp").write_bytes(b"partial")
    assert _run(setting, tmp_path) is not None
    assert not list(tmp_path.glob("*.tmp"))
    assert _files(tmp_path) == _files(out)


def test_one_vs_eight_devices(setting, full, tmp_path):
    assert jax.device_count() == 8
    out, _ = full
    _run(setting, tmp_path, devices=jax.devices()[:1])
    for i in range(4):
        for kind in ("latents", "flip"):
            a = np.load(DL.shard_paths(out, i)[kind])
            b = np.load(DL.shard_paths(tmp_path, i)[kind])
            np.testing.assert_array_equal(a, b, err_msg=f"shard {i} {kind}")


def test_contents_index_and_source(setting, full):
    (source, vae), (out, index) = setting, full
    crops = np.stack([to_float(center_crop_resize(im, SIZE)) for im in source.images])
    graphdef, state = nnx.split(vae)
    f = jax.jit(lambda st, x: nnx.merge(graphdef, st).encode_latents(x))
    want = np.asarray(f(state, jnp.asarray(crops, jnp.float32)))
    want_flip = np.asarray(f(state, jnp.asarray(crops[:, :, ::-1], jnp.float32)))
    src = get_source(out)
    assert isinstance(src, DL.LatentShardsSource) and len(src) == N
    got = np.stack([src[i]["image"] for i in range(N)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert [src[i]["label"] for i in range(N)] == list(source.labels)
    both = DL.LatentShardsSource(out, flips="append")
    assert len(both) == 2 * N
    np.testing.assert_allclose(np.stack([both[N + i]["image"] for i in range(N)]), want_flip,
                               rtol=1e-5, atol=1e-5)
    assert both[N + 3]["label"] == source.labels[3]
    np.testing.assert_allclose(index["mean"], got.reshape(-1, 4).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(index["std"], got.reshape(-1, 4).std(0), rtol=1e-5)
    assert json.loads((out / DL.INDEX_NAME).read_text())["latent_shape"] == [2, 2, 4]
    assert index["scaling_factor"] == 0.5
    with pytest.raises(ValueError, match="posterior='median'"):
        E.encode_dataset(source, vae, out, image_size=SIZE, posterior="median")


def test_config_errors_name_the_key(tmp_path):
    """A missing weights file, an unknown vae key and a missing encode.data are named before
    anything is built."""
    import ml_collections

    c = ml_collections.ConfigDict(dict(vae=dict(preset="tiny", weights=str(tmp_path / "no")),
                                       encode=dict(data="digits"), data=dict(name="x")))
    with pytest.raises(FileNotFoundError, match="vae.weights=.*downloads nothing"):
        E.build_vae(c)
    c.vae = dict(preset="tiny", wieghts="")
    with pytest.raises(ValueError, match=r"\['vae.wieghts'\]"):
        E.build_vae(c)
    c.vae = dict(preset="tiny")
    c.encode = dict(split="train")
    with pytest.raises(ValueError, match="encode.data is required"):
        E.encode(c, tmp_path)
    assert E.build_vae(ml_collections.ConfigDict(dict(data=dict(name="x")))) is None
