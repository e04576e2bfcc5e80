"""LPIPS-VGG16 (diffjax.metrics.lpips) against the lpips package and piq.

The fixture (experiments/fixtures/record_lpips_parity.py) holds no weights: both sides draw them
with ``random_lpips_state_dicts(seed)`` and the fixture stores their sha256.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _scripts import load_script
from flax import nnx

from diffjax.losses.consistency import consistency_distance
from diffjax.metrics import lpips as L

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "lpips_parity.npz")
RTOL = 1e-5


def _load_recorder():
    return load_script("experiments/fixtures/record_lpips_parity.py")


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """Both poolings loaded through save_lpips_npz / load_lpips with the fixture's weights."""
    rec = _load_recorder()
    z = np.load(FIXTURE)
    feats, lins = L.random_lpips_state_dicts(int(z["weight_seed"]))
    assert rec.state_dicts_digest(feats, lins) == str(z["weights_sha256"]), "generator differs"
    path = tmp_path_factory.mktemp("w") / "lpips_vgg16.npz"
    digest = L.save_lpips_npz(path, feats, lins)
    assert open(str(path) + ".sha256").read().strip() == digest
    models = {p: L.load_lpips(path, pooling=p) for p in L.POOLINGS}
    back_f, back_l = L.lpips_torch_state_dicts(models["max"])
    for k in ("0.weight", "28.bias", "17.weight"):
        np.testing.assert_array_equal(back_f[k], feats[k])
    np.testing.assert_array_equal(back_l["lin2.model.1.weight"], lins["lin2.model.1.weight"])
    fn = nnx.jit(lambda m, x, y: m(x, y, return_taps=True))
    return models, fn, z, rec


def test_lpips_parity_lpips_package(parity):
    models, fn, z, rec = parity
    for size, n in (("64", 2), ("32", 1)):
        x, y = rec.to_unit(z["x" + size]), rec.to_unit(z["y" + size])
        val, taps = fn(models["max"], x, y)
        assert val.shape == (n,) and taps.shape == (n, 5)
        np.testing.assert_allclose(np.asarray(val), z["max" + size], rtol=RTOL, err_msg=size)
        np.testing.assert_allclose(np.asarray(taps), z[f"max{size}_taps"], rtol=RTOL,
                                   err_msg=size + " per tap")
    # LPIPS(x, x) = 0 and symmetry, on the already compiled 64x64 program
    x, y = rec.to_unit(z["x64"]), rec.to_unit(z["y64"])
    same, _ = fn(models["max"], x, x)
    np.testing.assert_allclose(np.asarray(same), 0.0, atol=1e-7)
    swapped, _ = fn(models["max"], y, x)
    np.testing.assert_allclose(np.asarray(swapped), z["max64"], rtol=RTOL)


def test_lpips_hook_parity_piq_avg_pool(parity):
    """The consistency-models reference: bilinear resize to 224, (x + 1) / 2, piq LPIPS with
    replace_pooling=True."""
    models, _, z, rec = parity
    metric = nnx.jit(lambda m, a, b: L.lpips_metric(m)(a, b))
    got = metric(models["avg"], rec.to_unit(z["hook_x"]), rec.to_unit(z["hook_y"]))
    np.testing.assert_allclose(np.asarray(got), z["hook_avg"], rtol=RTOL)


def test_lpips_consistency_distance_hook_differentiable(parity):
    models, _, _, _ = parity
    model = models["avg"]
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.uniform(ka, (2, 12, 12, 3), minval=-1.0, maxval=1.0)
    b = jax.random.uniform(kb, (2, 12, 12, 3), minval=-1.0, maxval=1.0)
    # resize path at the smallest size (12 -> 16; 224 is exercised by the parity test above)

    # The model is a jit argument (nnx.jit splits it into traced weights): closing over it
    # would bake 59 MB of constants into the program (a 40 s compile here).
    @nnx.jit
    def loss_and_grad(model, a, b):
        metric = L.lpips_metric(model, resize=True, size=16)
        d, vjp = jax.vjp(lambda a: consistency_distance(a, b, metric), a)
        return d, vjp(jnp.ones_like(d))[0]

    d, g = loss_and_grad(model, a, b)
    assert d.shape == (2,) and bool(jnp.all(d > 0))
    assert g.shape == a.shape and bool(jnp.all(jnp.isfinite(g)))
    assert float(jnp.max(jnp.abs(g))) > 0
    d0, g0 = loss_and_grad(model, b, b)  # the minimum: zero distance, zero (finite) gradient
    assert float(jnp.max(jnp.abs(d0))) < 1e-7 and bool(jnp.all(jnp.isfinite(g0)))


def test_unit_normalize_zero_vector_gradient():
    """An all-zero feature vector (every ReLU of a location dead) gives NaN through a plain
    sqrt; here the value is 0 and the gradient finite."""
    f = jnp.zeros((1, 2, 2, 4)).at[0, 0, 0].set(jnp.arange(1.0, 5.0))
    out, g = jax.jit(jax.value_and_grad(lambda f: jnp.sum(L._unit_normalize(f)[..., 1])))(f)
    assert float(out) == pytest.approx(2 / np.sqrt(30), rel=1e-6)  # only the nonzero vector
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_allclose(np.asarray(g[0, 0, 0]),
                               (np.eye(4)[1] - 2 * np.arange(1, 5) / 30) / np.sqrt(30), atol=1e-6)


def test_lpips_state_dict_forms_and_errors(tmp_path):
    feats, lins = L.random_lpips_state_dicts(3)
    # the lpips package's whole LPIPS(net='vgg').state_dict(), passed for both arguments
    slice_of = {i: s + 1 for s, stage in enumerate(L._STAGES) for i, _ in stage}
    full = {f"net.slice{slice_of[int(k.split('.')[0])]}.{k}": v for k, v in feats.items()}
    full.update(lins)
    full.update({"lins." + k[3:]: v for k, v in lins.items()})
    full["scaling_layer.shift"] = np.asarray(L.LPIPS_SHIFT, np.float32).reshape(1, 3, 1, 1)
    m1 = L.convert_torch_lpips(full, full)
    f1, l1 = L.lpips_torch_state_dicts(m1)
    np.testing.assert_array_equal(f1["26.weight"], feats["26.weight"])
    np.testing.assert_array_equal(l1["lin4.model.1.weight"], lins["lin4.model.1.weight"])
    # torchvision's whole vgg16().state_dict(): 'features.' prefix, classifier ignored
    tv = {"features." + k: v for k, v in feats.items()}
    tv["classifier.0.weight"] = np.zeros((2, 2), np.float32)
    L.convert_torch_lpips(tv, lins)

    with pytest.raises(KeyError, match="'31.weight'"):
        L.convert_torch_lpips({**feats, "31.weight": feats["28.weight"]}, lins)
    with pytest.raises(KeyError, match="'lin9.model.1.weight'"):
        L.convert_torch_lpips(feats, {**lins, "lin9.model.1.weight": lins["lin0.model.1.weight"]})
    with pytest.raises(KeyError, match="missing.*lin1.model.1.weight"):
        L.convert_torch_lpips(feats, {k: v for k, v in lins.items() if not k.startswith("lin1")})
    with pytest.raises(ValueError, match=r"'5.weight' has shape \(128, 64, 3, 1\)"):
        L.convert_torch_lpips({**feats, "5.weight": feats["5.weight"][..., :1]}, lins)
    with pytest.raises(ValueError, match="pooling"):
        L.LPIPS("min")

    # load_lpips: missing file, not an npz, wrong keys / shapes inside the npz, checksum
    missing = tmp_path / "nowhere" / "lpips.npz"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*save_lpips_npz"):
        L.load_lpips(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(ValueError, match=r"cannot read LPIPS weights.*corrupt\.npz"):
        L.load_lpips(corrupt)
    bad = tmp_path / "bad_keys.npz"
    np.savez(bad, **{"features.0.weight": feats["0.weight"], "conv1.weight": feats["0.weight"]})
    with pytest.raises(KeyError, match=r"bad_keys\.npz.*'conv1\.weight'"):
        L.load_lpips(bad)
    short = tmp_path / "short.npz"
    np.savez(short, **{"features." + k: v for k, v in feats.items()})
    with pytest.raises(KeyError, match=r"short\.npz.*missing.*lin0\.model\.1\.weight"):
        L.load_lpips(short)
    good = tmp_path / "good.npz"
    L.save_lpips_npz(good, feats, lins)
    with pytest.raises(ValueError, match="checksum"):
        L.load_lpips(good, sha256="0" * 64)
    (tmp_path / "good.npz.sha256").write_text("f" * 64 + "\n")
    with pytest.raises(ValueError, match="checksum"):
        L.load_lpips(good)
    wrong = tmp_path / "wrong_shape.npz"
    sd = {"features." + k: v for k, v in feats.items()}
    sd.update(lins)
    sd["lin3.model.1.weight"] = np.ones((1, 256, 1, 1), np.float32)
    np.savez(wrong, **sd)
    with pytest.raises(ValueError, match=r"wrong_shape\.npz.*'lin3\.model\.1\.weight'"):
        L.load_lpips(wrong)
