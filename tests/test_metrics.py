"""Metrics: Fréchet distance / FID / IS / precision-recall / toy metrics in closed form, and the
FID Inception against pytorch-fid fixtures (random weights regenerated from a seed)."""

import math
import os
import warnings

import numpy as np
import pytest
from _scripts import load_script
from scipy import linalg

import diffjax as dj
from diffjax.metrics import fid as F
from diffjax.metrics import precision_recall as PR
from diffjax.metrics import toy

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "inception_parity.npz")


def _load_recorder():
    return load_script("experiments/fixtures/record_inception_parity.py")


def _rand_spd(rng, d, n=None):
    a = rng.standard_normal((n or 4 * d, d))
    return np.cov(a, rowvar=False)


# ------------------------------------------------------------------ Fréchet distance / FID


def test_fid_self_zero_and_symmetric():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 16))
    b = rng.standard_normal((400, 16)) * 1.3 + 0.2
    assert abs(F.fid_from_features(a, a)) < 1e-8
    assert F.fid_from_features(a, b) == pytest.approx(F.fid_from_features(b, a), rel=1e-9)
    assert F.fid_from_features(a, b) > 0.1


def test_frechet_matches_closed_form_gaussians():
    rng = np.random.default_rng(1)
    d = 8
    # diagonal covariances: W2^2 = |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    v1, v2 = rng.uniform(0.2, 2, d), rng.uniform(0.2, 2, d)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert F.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, rel=1e-10)
    # general covariances: Tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2)
    s1, s2 = _rand_spd(rng, d), _rand_spd(rng, d)
    r2 = linalg.sqrtm(s2).real
    want = (np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2)
            - 2 * np.trace(linalg.sqrtm(r2 @ s1 @ r2).real))
    assert F.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)
    # a sample estimate converges to the population value
    x = rng.multivariate_normal(mu1, s1, 200_000)
    y = rng.multivariate_normal(mu2, s2, 200_000)
    assert F.fid_from_features(x, y) == pytest.approx(want, rel=0.02)


def test_frechet_singular_and_validation():
    rng = np.random.default_rng(2)
    d = 20
    s1, s2 = _rand_spd(rng, d, n=5), _rand_spd(rng, d, n=5)  # rank 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = F.frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
    assert np.isfinite(v) and v > 0
    with pytest.raises(ValueError):
        F.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        F.compute_statistics(np.zeros((1, 3)))


def test_frechet_parity_pytorch_fid():
    z = np.load(FIXTURE)
    for i in range(2):
        got = F.frechet_distance(z[f"fd{i}_mu1"], z[f"fd{i}_sigma1"], z[f"fd{i}_mu2"],
                                 z[f"fd{i}_sigma2"])
        assert got == pytest.approx(float(z[f"fd{i}_value"]), rel=1e-6, abs=1e-6)


def test_inception_score():
    n, c = 100, 10
    assert F.inception_score(np.full((n, c), 1.0 / c))[0] == pytest.approx(1.0, abs=1e-12)
    # one-hot, classes balanced in every split: IS = number of classes
    onehot = np.eye(c)[np.arange(n) % c]
    mean, std = F.inception_score(onehot, splits=10)
    assert mean == pytest.approx(c) and std == pytest.approx(0.0, abs=1e-9)
    logits = np.random.default_rng(0).standard_normal((n, c))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert F.inception_score(logits, from_logits=True)[0] == pytest.approx(
        F.inception_score(p)[0], rel=1e-12)
    with pytest.raises(ValueError):
        F.inception_score(np.ones((5, 3)) / 3, splits=10)


def test_statistics_cache_checksum(tmp_path):
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((64, 6))
    path = tmp_path / "ref.npz"
    calls = []

    def batches():
        for s in range(0, 64, 16):
            calls.append(s)
            yield (feats[s:s + 16], None)

    st = F.reference_statistics(batches(), cache_path=path, dataset="toy")
    assert os.path.exists(str(path) + ".sha256") and len(calls) == 4
    again = F.reference_statistics(batches(), cache_path=path)  # cached: source not iterated
    assert len(calls) == 4
    np.testing.assert_array_equal(st.mu, again.mu)
    np.testing.assert_allclose(st.sigma, np.cov(feats, rowvar=False), rtol=1e-12)
    assert F.reference_statistics(feats, feature_fn=lambda b: b * 2.0).num_samples == 64
    with open(path, "r+b") as f:  # corrupt the cache
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="checksum"):
        F.load_statistics(path)


# ------------------------------------------------------------------ precision / recall


def test_precision_recall_identical_and_disjoint():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((300, 8))
    assert PR.precision_recall(a, a.copy()) == (1.0, 1.0)
    b = rng.standard_normal((250, 8)) + 100.0
    assert PR.precision_recall(a, b) == (0.0, 0.0)
    # a generator covering half the real modes: precision ~1, recall ~1/2
    real = np.concatenate([rng.standard_normal((200, 2)) * 0.1,
                           rng.standard_normal((200, 2)) * 0.1 + 5])
    fake = rng.standard_normal((200, 2)) * 0.1
    p, r = PR.precision_recall(real, fake, k=3, block=64)
    assert p > 0.9 and 0.45 < r < 0.55
    assert dj.metrics.improved_precision_recall is PR.precision_recall


# ------------------------------------------------------------------ toy metrics


def test_toy_metrics():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 2))
    y = rng.standard_normal((400, 2))
    z = rng.standard_normal((400, 2)) + 1.5
    assert toy.mmd(x, x, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    assert abs(toy.mmd(x, y)) < 0.01 < toy.mmd(x, z)
    assert toy.mmd(x, z, bandwidth=[0.5, 1.0, 2.0]) > 0.1
    assert toy.energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert toy.energy_distance(x, y) < 0.05 < toy.energy_distance(x, z)
    assert toy.sliced_wasserstein is dj.analytic.sliced_wasserstein
    # a shifted copy: every projection's quantiles move by v.c, so SWp = (E|v.c|^p)^(1/p);
    # in 1-D v = +-1 and SW1 = SW2 = |c|
    one = rng.standard_normal((500, 1))
    for p in (1, 2):
        assert toy.sliced_wasserstein(one, one + 0.3, p=p) == pytest.approx(0.3, rel=1e-9)
    c = np.array([1.0, -2.0])
    v = np.random.default_rng(0).normal(size=(2, 128))
    v /= np.linalg.norm(v, axis=0, keepdims=True)
    assert toy.sliced_wasserstein(x, x + c, p=2) == pytest.approx(
        math.sqrt(np.mean((c @ v) ** 2)), rel=1e-9)


def test_exact_nll():
    proc = dj.VP()
    g = dj.analytic.Gaussian.create(np.zeros(2), np.diag([1.0, 4.0]), proc)
    x = np.array([[0.0, 0.0], [1.0, 2.0]])
    want = -(-0.5 * (x[:, 0] ** 2 + x[:, 1] ** 2 / 4) - math.log(2 * math.pi) - 0.5 * math.log(4))
    assert toy.exact_nll(g, x) == pytest.approx(want.mean(), rel=1e-6)
    gmm = dj.analytic.GaussianMixture.create((0.3, 0.7), ((-1.0, 0.0), (1.0, 0.5)), (0.2, 0.5),
                                             proc)
    pts = np.random.default_rng(6).standard_normal((50, 2))
    lp = np.log(0.3 * np.exp(-0.5 * np.sum((pts - [-1, 0]) ** 2, 1) / 0.04) / (2 * np.pi * 0.04)
                + 0.7 * np.exp(-0.5 * np.sum((pts - [1, 0.5]) ** 2, 1) / 0.25) / (2 * np.pi * 0.25))
    np.testing.assert_allclose(toy.exact_log_prob(gmm, pts), lp, rtol=1e-5)
    assert toy.exact_nll(gmm, pts, per_dim=True) == pytest.approx(-lp.mean() / 2, rel=1e-5)
    with pytest.raises(ValueError):
        toy.exact_nll(dj.analytic.empirical(pts, proc), pts)


# ------------------------------------------------------------------ FID Inception


def test_resize_matches_torch_formula():
    from diffjax.metrics.inception import interp_matrix, resize_bilinear

    m = interp_matrix(4, 8, "pytorch")
    np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)
    # 2x upsampling with half-pixel centres: out[1] = 0.75 in[0] + 0.25 in[1], out[0] = in[0]
    np.testing.assert_allclose(m[0], [1, 0, 0, 0])
    np.testing.assert_allclose(m[1], [0.75, 0.25, 0, 0])
    np.testing.assert_allclose(interp_matrix(4, 2, "tf1")[1], [0, 0, 1, 0])
    x = np.random.default_rng(0).uniform(size=(1, 5, 5, 3)).astype(np.float32)
    assert resize_bilinear(x, 5) is x


def test_load_inception_errors(tmp_path):
    from diffjax.metrics.inception import load_inception

    assert dj.metrics.load_inception is load_inception
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
        load_inception(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        load_inception(bad)
    with pytest.raises(ValueError, match="checksum"):
        load_inception(bad, sha256="0" * 64)


@pytest.fixture(scope="module")
def parity_net(tmp_path_factory):
    """FID Inception with the fixture's seeded weights, loaded through the npz path."""
    from diffjax.metrics import inception as inc

    rec = _load_recorder()
    z = np.load(FIXTURE)
    sd = rec.seeded_state_dict(inc.torch_state_dict_shapes(), int(z["weight_seed"]))
    assert rec.state_dict_digest(sd) == str(z["weights_sha256"]), "weight generator differs"
    tmp = tmp_path_factory.mktemp("w")
    path = tmp / "fid_inception.npz"
    torch = None
    try:
        import torch
    except ImportError:
        np.savez(path, **sd)
    if torch is not None:  # the user path: .pth state dict -> convert once -> npz + .sha256
        pth = tmp / "pt_inception-random.pth"
        full = {k: torch.from_numpy(v) for k, v in sd.items()}
        full["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(0)
        torch.save(full, pth)
        with pytest.raises(ValueError, match="6726825d"):
            inc.convert_pytorch_fid_weights(pth, path)
        digest = inc.convert_pytorch_fid_weights(pth, path, check_hash=False)
        assert open(str(path) + ".sha256").read().strip() == digest
    net = inc.load_inception(path, sha256=inc.sha256_file(path), layout="NCHW")
    back = inc.flax_to_torch_state_dict(net.variables)
    assert sorted(back) == sorted(sd)
    for k in ("Mixed_6d.branch7x7_2.conv.weight", "fc.weight",
              "Mixed_7c.branch_pool.bn.running_var"):
        np.testing.assert_array_equal(back[k], sd[k])
    return net, z


def test_inception_parity_pytorch_fid(parity_net):
    net, z = parity_net
    out = net(z["images"])
    feats = net.features(z["images"])
    assert feats["pool3"].shape == (2, 2048) and feats["spatial"].shape == (2, 17 * 17 * 7)
    assert feats["logits"].shape == (2, 1008)
    for name, got in (("pool3", feats["pool3"]), ("logits", feats["logits"]),
                      ("spatial", feats["spatial"])):
        np.testing.assert_allclose(got, z[name], atol=1e-4, rtol=1e-4, err_msg=name)
    for b in ("block0", "block1", "block2"):
        np.testing.assert_allclose(np.asarray(out[b]).mean((1, 2)), z[b + "_mean"], atol=1e-4,
                                   rtol=1e-4, err_msg=b)
    # uint8 / NHWC inputs take the same path
    nhwc = type(net)(net.variables, layout="NHWC")
    u8 = (z["images"].transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    np.testing.assert_allclose(nhwc.pool3(u8), net.pool3(u8.transpose(0, 3, 1, 2)), atol=1e-5)
