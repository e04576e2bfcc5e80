"""The ideal / LS / ELS machines of Kamb & Ganguli (arXiv 2412.20292) against independent
references: a float64 numpy ideal score machine, numpy loops over every patch, the existing
empirical oracle of :mod:`diffjax.analytic`, and the paper's qualitative claims measured on
real digits (memorisation by the ideal machine, novel "patch mosaics" from ELS)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax import local_score as L

# ----------------------------------------------------------------------------------------------
# Independent numpy references (written from the paper's formulas, loops over patches)
# ----------------------------------------------------------------------------------------------


def _ideal_np(x, data, a, s):
    """Ideal score machine: softmax over whole images of -|x - a phi|^2 / (2 s^2)."""
    logit = -np.sum((x[:, None] - a * data[None]) ** 2, axis=(2, 3, 4)) / (2 * s * s)
    w = np.exp(logit - logit.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return np.einsum("bn,nhwc->bhwc", w, data), w


def _pad_np(z, d, padding):
    return np.pad(z, ((d, d), (d, d), (0, 0)), mode="wrap" if padding == "circular" else "constant")


def _local_np(x, data, a, s, p, padding, kind, boundary_broken=False):
    """LS / ELS by explicit loops: for every pixel, list every admissible training patch."""
    _, h, w, _ = x.shape
    d = p // 2

    def cls(u, n):  # boundary class of a coordinate (the paper's zero-padding rule)
        return u if (u < d or u >= n - d) else -1

    out = np.zeros_like(x)
    dp = [_pad_np(im, d, padding) for im in data]
    for b in range(len(x)):
        xp = _pad_np(x[b], d, padding)
        for i in range(h):
            for j in range(w):
                q = xp[i:i + p, j:j + p]
                logits, vals = [], []
                for mu in range(len(data)):
                    pos = [(i, j)] if kind == "ls" else [(u, v) for u in range(h) for v in range(w)]
                    for u, v in pos:
                        if boundary_broken and (cls(i, h) != cls(u, h) or cls(j, w) != cls(v, w)):
                            continue
                        k = dp[mu][u:u + p, v:v + p]
                        logits.append(-np.sum((q - a * k) ** 2) / (2 * s * s))
                        vals.append(data[mu, u, v])
                lg = np.asarray(logits)
                wt = np.exp(lg - lg.max())
                out[b, i, j] = (wt / wt.sum()) @ np.asarray(vals)
    return out


def _ab(t):  # KambCosine in float64
    u = 0.5 * np.pi * t / 1.008
    return np.cos(u), np.sin(u)


# ----------------------------------------------------------------------------------------------
# Exactness (float64)
# ----------------------------------------------------------------------------------------------


def test_ls_with_image_sized_window_is_the_ideal_score_machine():
    """LS whose window sees the whole image from every pixel ('zeros': P = 2H - 1;
    'circular': P = H) equals the ideal score machine to 1e-10 in float64, at a noise level
    where the posterior over images is not saturated; in float32 it matches the existing
    empirical oracle (``diffjax.analytic.empirical``)."""
    rng = np.random.default_rng(0)
    t = 0.9
    a, s = _ab(t)
    with jax.enable_x64(True):
        for padding, h, p in (("zeros", 6, 11), ("circular", 7, 7)):
            data = rng.normal(size=(7, h, h, 2))
            x = a * data[:3] + s * rng.normal(size=(3, h, h, 2))
            ref, w = _ideal_np(x, data, a, s)
            assert w.max() < 0.999  # the softmax is not a hard argmax here: a real test
            m = L.ls_machine(data, L.KambCosine(), p, padding=padding, chunk=3)  # 3 chunks
            out = np.asarray(m(jnp.asarray(x), jnp.full((3,), t)))
            assert out.dtype == np.float64
            np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10)
    # float32, through the library's own empirical oracle and process
    proc = dj.VP()
    data = rng.normal(size=(5, 6, 6, 1)).astype(np.float32)
    x = rng.normal(size=(2, 6, 6, 1)).astype(np.float32)
    tb = jnp.full((2,), 0.5)
    ideal = L.ideal_score_machine(data, proc)(jnp.asarray(x), tb)
    ls = L.ls_machine(data, proc, 11, padding="zeros")(jnp.asarray(x), tb)
    np.testing.assert_allclose(np.asarray(ls), np.asarray(ideal), atol=2e-5)


def test_chunked_machines_match_loops_over_every_patch():
    """The jitted, chunked LS / ELS / boundary-broken ELS equal explicit loops over every
    pixel and every admissible training patch (float64, 1e-10), with a chunk that does not
    divide the data set (a padded last chunk)."""
    rng = np.random.default_rng(1)
    t = 0.7
    a, s = _ab(t)
    data = rng.normal(size=(3, 5, 5, 2))
    x = rng.normal(size=(2, 5, 5, 2))
    cases = (("ls", "zeros", False), ("ls", "circular", False), ("els", "circular", False),
             ("els", "zeros", False), ("els", "zeros", True))
    with jax.enable_x64(True):
        for kind, padding, bb in cases:
            if kind == "ls":
                m = L.ls_machine(data, L.KambCosine(), 3, padding=padding, chunk=2)
            else:
                m = L.els_machine(data, L.KambCosine(), 3, padding=padding, boundary_broken=bb,
                                  chunk=2)
            out = np.asarray(m(jnp.asarray(x), jnp.full((2,), t)))
            ref = _local_np(x, data, a, s, 3, padding, kind, bb)
            np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10,
                                       err_msg=f"{kind} {padding} {bb}")
    # the boundary-broken and plain zero-padded ELS really differ (the mask is not a no-op)
    plain = L.els_machine(data, L.KambCosine(), 3, padding="zeros")(jnp.asarray(x), 0.7)
    broken = L.els_machine(data, L.KambCosine(), 3, padding="zeros", boundary_broken=True)(
        jnp.asarray(x), 0.7)
    assert float(jnp.max(jnp.abs(plain - broken))) > 1e-2


def test_time_dependent_patch_size_switches_with_t():
    """With ``P(t)``, the machine at each time equals the fixed-size machine of that interval."""
    rng = np.random.default_rng(2)
    data = rng.normal(size=(4, 6, 6, 1)).astype(np.float32)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 1)).astype(np.float32))
    m = L.els_machine(data, L.KambCosine(), (3, 5), t_bounds=(0.5,), chunk=4)
    for t, p in ((0.2, 3), (0.8, 5)):
        tb = jnp.full((2,), t)
        np.testing.assert_allclose(np.asarray(m(x, tb)), np.asarray(m.denoise(x, tb, p)),
                                   atol=1e-6)
    assert float(jnp.max(jnp.abs(m.denoise(x, 0.8, 3) - m.denoise(x, 0.8, 5)))) > 1e-3


def test_bad_arguments_name_the_argument():
    data = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="patch_size"):
        L.els_machine(data, L.KambCosine(), 4)
    with pytest.raises(ValueError, match="padding"):
        L.els_machine(data, L.KambCosine(), 3, padding="reflect")
    with pytest.raises(ValueError, match="boundary_broken"):
        L.els_machine(data, L.KambCosine(), 3, padding="circular", boundary_broken=True)
    with pytest.raises(ValueError, match="t_bounds"):
        L.ls_machine(data, L.KambCosine(), (3, 5), t_bounds=())
    with pytest.raises(ValueError, match="data"):
        L.ls_machine(np.zeros((4, 4)), L.KambCosine())
    with pytest.raises(ValueError, match="image shape"):
        L.ls_machine(data, L.KambCosine())(jnp.zeros((1, 5, 5, 1)), 0.5)


# ----------------------------------------------------------------------------------------------
# Sampling with the paper's setting on real digits: memorisation vs. patch mosaics
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    imgs, _ = dj.data.embedded.load_digits()
    return imgs[:100], imgs[1500:1516]


def test_ideal_machine_memorises_and_els_makes_patch_mosaics(digits):
    """Through the one driver (DDIM, the paper's cosine process and 20-point grid, same noise):
    the ideal score machine returns training digits (max correlation with the training set
    > 0.999), the boundary-broken ELS machine with 3x3 patches returns images that are not
    in the training set (median max correlation below that of real held-out digits) while
    every 3x3 patch of them lies close to some training patch (median nearest-patch distance
    under half that of pure-noise images, i.e. a mosaic of training patches)."""
    train, held_out = digits
    proc = L.KambCosine()
    z = np.random.default_rng(3).normal(size=(6, 8, 8, 1)).astype(np.float32)
    xi = L.sample_machine(L.ideal_score_machine(train, proc), z)
    corr_i, _ = L.max_correlation(xi, train)
    assert corr_i.min() > 0.999, corr_i
    els = L.els_machine(train, proc, 3, padding="zeros", boundary_broken=True, chunk=50)
    xe = np.asarray(L.sample_machine(els, z))
    corr_e, _ = L.max_correlation(xe, train)
    corr_h, _ = L.max_correlation(held_out, train)
    assert np.median(corr_e) < min(0.8, np.median(corr_h)), (corr_e, corr_h)
    pd_els = np.median(L.patch_nearest_distance(xe, train, 3, "zeros"))
    noise = np.clip(0.5 * z, -1, 1)
    pd_noise = np.median(L.patch_nearest_distance(noise, train, 3, "zeros"))
    assert pd_els < 0.5 * pd_noise, (pd_els, pd_noise)
