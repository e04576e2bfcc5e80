"""AutoencoderKL: parity with diffusers' ``AutoencoderKL`` on seeded random weights, conversion
round trips, the posterior against diffusers' ``DiagonalGaussianDistribution``, chunking.

The references are diffusers 0.42 / torch (test-only dependencies): the same random weights are
loaded into both; outputs must agree to 1e-4 relative in float32 and to 1e-10 in float64 (the
float64 torch model is the reference there). Two tiny layouts cover both presets' structure: the
SD-VAE layout (attention only in the middle blocks; slow) and the f16d32 VA-VAE layout (attention
after every ResNet of the lowest level, ``AttnDownEncoderBlock2D`` / ``AttnUpDecoderBlock2D``, and
in the middle: every code path; default suite). The real preset sizes run under ``-m slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from diffjax.convert import vae as cv  # noqa: E402
from diffjax.models import vae as mv  # noqa: E402

#: tiny diffusers configs with the structure of the two presets
LAYOUTS = {
    "sd": dict(block_out_channels=(8, 16, 16), layers_per_block=2, latent_channels=4,
               norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 3,
               up_block_types=("UpDecoderBlock2D",) * 3),
    "f16d32": dict(block_out_channels=(8, 8, 16), layers_per_block=1, latent_channels=8,
                   norm_num_groups=4,
                   down_block_types=("DownEncoderBlock2D",) * 2 + ("AttnDownEncoderBlock2D",),
                   up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 2),
}


def _torch_vae(kwargs, seed=0):
    torch.manual_seed(seed)
    m = diffusers.AutoencoderKL(**kwargs).eval()
    with torch.no_grad():  # GroupNorm affine parameters away from (1, 0), biases non-zero
        for name, p in m.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    return m


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _run(model, x, z):
    """mean, logvar, decode(z) of our model under one jit."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def f(state, x, z):
        m = nnx.merge(graphdef, state)
        post = m.encode(x)
        return post.mean, post.logvar, m.decode(z)

    return [np.asarray(a) for a in f(state, x, z)]


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module", params=[
    "f16d32", pytest.param("sd", marks=pytest.mark.slow)])
def pair(request):
    """(layout name, torch model, state dict, our config, images, latents)."""
    tm = _torch_vae(LAYOUTS[request.param])
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    cfg = cv.vae_config_from_diffusers(dict(tm.config))
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 16, 16, 3))
    z = rng.standard_normal((2, 4, 4, cfg.latent_channels))
    return request.param, tm, sd, cfg, x, z


def test_config_matches_preset_structure(pair):
    name, _, _, cfg, _, _ = pair
    preset = mv.VAE_PRESETS[name]
    assert cfg.attn_levels == ((len(cfg.block_out_channels) - 1,) if preset.attn_levels else ())
    assert cfg.norm_eps == 1e-6 and cfg.mid_block_attention


def test_parity_float32_and_float64(pair):
    """Encoder mean / log-variance and decoder output against diffusers (float32: 1e-4
    relative; float64: 1e-10) on the same random weights."""
    _, tm, sd, cfg, x, z = pair
    with torch.no_grad():
        post = tm.encode(_nchw(x.astype(np.float32))).latent_dist
        ref32 = [_nhwc(post.mean), _nhwc(post.logvar), _nhwc(tm.decode(_nchw(
            z.astype(np.float32))).sample)]
        tm64 = tm.double()
        post = tm64.encode(_nchw(x)).latent_dist
        ref64 = [_nhwc(post.mean), _nhwc(post.logvar), _nhwc(tm64.decode(_nchw(z)).sample)]
        tm.float()
    ours = cv.load_diffusers_vae(sd, config=cfg)
    out32 = _run(ours, jnp.asarray(x, jnp.float32), jnp.asarray(z, jnp.float32))
    for what, a, b in zip(("mean", "logvar", "decoded"), out32, ref32, strict=True):
        assert a.dtype == np.float32
        assert _rel(a, b) < 1e-4, (what, _rel(a, b))
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        ours64 = cv.load_diffusers_vae(sd, config=cfg, dtype=jnp.float64,
                                       param_dtype=jnp.float64)
        out64 = _run(ours64, jnp.asarray(x), jnp.asarray(z))
    finally:
        jax.config.update("jax_enable_x64", old)
    for what, a, b in zip(("mean", "logvar", "decoded"), out64, ref64, strict=True):
        assert a.dtype == np.float64
        assert _rel(a, b) < 1e-10, (what, _rel(a, b))


def test_round_trip_files_and_old_names(pair, tmp_path):
    """diffusers -> ours -> diffusers is the identity; weights read from .safetensors, torch
    .bin and .npz agree; the pre-0.14 attention names (query/key/value/proj_attn, 1x1 convs)
    convert to the same model."""
    name, tm, sd, cfg, _, _ = pair
    ours = cv.load_diffusers_vae(sd, config=cfg)
    back = cv.to_diffusers_vae(ours)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    # files written by diffusers itself (safetensors) and by torch.save / numpy
    tm.save_pretrained(tmp_path / "hf")
    from_folder = cv.to_diffusers_vae(cv.load_diffusers_vae(tmp_path / "hf"))
    torch.save(tm.state_dict(), tmp_path / "w.bin")
    np.savez(tmp_path / "w.npz", **sd)
    old = {}
    for k, v in sd.items():
        for new, legacy in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"),
                            ("to_out.0", "proj_attn")):
            if f".{new}." in k:
                k = k.replace(f".{new}.", f".{legacy}.")
                v = v[:, :, None, None] if v.ndim == 2 else v
        old[k] = v
    for src in (tmp_path / "w.bin", tmp_path / "w.npz"):  # the readers (no model build)
        got = cv.read_state_dict(src)
        assert set(got) == set(sd)
        for k in sd:
            np.testing.assert_array_equal(got[k], sd[k], err_msg=f"{src}: {k}")
    got = cv.to_diffusers_vae(cv.load_diffusers_vae(old, config=cfg))
    for k in sd:
        np.testing.assert_array_equal(got[k], sd[k], err_msg=f"old names: {k}")
    for k in sd:
        np.testing.assert_array_equal(from_folder[k], sd[k], err_msg=k)
    with pytest.raises(KeyError, match="missing"):
        cv.load_diffusers_vae({k: v for k, v in sd.items() if "conv_in" not in k}, config=cfg)
    with pytest.raises(FileNotFoundError, match="downloads nothing"):
        cv.load_diffusers_vae(tmp_path / "absent.safetensors", config=cfg)


def test_posterior_against_diffusers():
    """mode / KL / NLL / sample statistics against diffusers' DiagonalGaussianDistribution."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    rng = np.random.default_rng(3)
    moments = rng.standard_normal((3, 4, 4, 8)).astype(np.float32) * 2
    moments[0, 0, 0, 4] = 40.0  # clamped to 20 by both
    ref = DiagonalGaussianDistribution(_nchw(moments))
    ours = mv.DiagonalGaussian.from_moments(jnp.asarray(moments))
    np.testing.assert_allclose(ours.mode(), _nhwc(ref.mode()), rtol=1e-6)
    np.testing.assert_allclose(ours.logvar, _nhwc(ref.logvar), rtol=1e-6)
    np.testing.assert_allclose(ours.kl(), ref.kl().numpy(), rtol=1e-5)
    other_m = rng.standard_normal((3, 4, 4, 8)).astype(np.float32)
    other_ref = DiagonalGaussianDistribution(_nchw(other_m))
    other = mv.DiagonalGaussian.from_moments(jnp.asarray(other_m))
    np.testing.assert_allclose(ours.kl(other), ref.kl(other_ref).numpy(), rtol=1e-5)
    zs = rng.standard_normal((3, 4, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(ours.nll(jnp.asarray(zs)), ref.nll(_nchw(zs)).numpy(), rtol=1e-5)
    draws = jax.vmap(ours.sample)(jax.random.split(jax.random.key(0), 4000))
    np.testing.assert_allclose(np.mean(draws, 0), ours.mean, atol=5 * float(ours.std.max()) / 63)


def test_bad_inputs_are_named():
    """Bad shapes and names fail before any compute, naming what was expected (an abstract
    model: nothing is initialised)."""
    cfg = mv.vae_config("tiny")
    vae = nnx.eval_shape(lambda: mv.AutoencoderKL(cfg, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="multiples of the downsampling factor 4"):
        vae.encode(jnp.zeros((1, 6, 6, 3)))
    with pytest.raises(ValueError, match="NHWC with 4 channels"):
        vae.decode(jnp.zeros((1, 2, 2, 3)))
    with pytest.raises(ValueError, match="unknown VAE preset"):
        mv.vae_config("sdxl")
    with pytest.raises(ValueError, match="norm_num_groups=8"):
        mv.vae_config("tiny", block_out_channels=(12, 32))


@pytest.mark.slow  # four compiles of the tiny VAE (~20 s of CPU)
def test_chunked_and_scaled():
    """Chunked encode / decode equal the one-shot ones (odd batch: a remainder chunk);
    scale / unscale invert each other."""
    cfg = mv.vae_config("tiny", scaling_factor=0.5, shift_factor=0.1)
    vae = mv.vae_from_preset(cfg)
    graphdef, state = nnx.split(vae)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (5, 8, 8, 3)), jnp.float32)

    @jax.jit
    def f(state, x):
        m = nnx.merge(graphdef, state)
        lat = m.encode_latents(x)
        lat2 = m.encode_latents(x, chunk_size=2)
        return lat, lat2, m.decode_latents(lat), m.decode_latents(lat, chunk_size=2), \
            m.unscale(m.scale(lat))

    lat, lat2, im, im2, lat3 = f(state, x)
    assert lat.shape == (5, 2, 2, 4) and lat.shape[1:] == mv.latent_shape(cfg, (8, 8, 3))
    # chunks run the same maths on batches of another size: float32 rounding only
    np.testing.assert_allclose(lat2, lat, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(im2, im, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lat3, lat, rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(im))) <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["sd", "f16d32"])
def test_parity_real_preset_sizes(preset):
    """The presets at their real widths against diffusers (64x64 images to stay affordable);
    parameter counts equal diffusers' (83,653,863 for the SD VAE)."""
    p = mv.VAE_PRESETS[preset]
    n = len(p.block_out_channels)
    kwargs = dict(block_out_channels=p.block_out_channels, layers_per_block=p.layers_per_block,
                  latent_channels=p.latent_channels,
                  down_block_types=tuple("AttnDownEncoderBlock2D" if i in p.attn_levels
                                         else "DownEncoderBlock2D" for i in range(n)),
                  up_block_types=tuple("AttnUpDecoderBlock2D" if n - 1 - i in p.attn_levels
                                       else "UpDecoderBlock2D" for i in range(n)))
    tm = _torch_vae(kwargs)
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    cfg = cv.vae_config_from_diffusers(dict(tm.config))
    assert (cfg.block_out_channels, cfg.attn_levels, cfg.latent_channels) == (
        p.block_out_channels, p.attn_levels, p.latent_channels)
    ours = cv.load_diffusers_vae(sd, config=p)
    n_ours = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(ours, nnx.Param)))
    assert n_ours == sum(p.numel() for p in tm.parameters())
    if preset == "sd":
        assert n_ours == 83_653_863
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 64, 64, 3))
    f = p.downsample_factor
    z = rng.standard_normal((1, 64 // f, 64 // f, p.latent_channels))
    with torch.no_grad():
        post = tm.encode(_nchw(x.astype(np.float32))).latent_dist
        ref = [_nhwc(post.mean), _nhwc(post.logvar),
               _nhwc(tm.decode(_nchw(z.astype(np.float32))).sample)]
    out = _run(ours, jnp.asarray(x, jnp.float32), jnp.asarray(z, jnp.float32))
    for what, a, b in zip(("mean", "logvar", "decoded"), out, ref, strict=True):
        assert _rel(a, b) < 1e-4, (what, _rel(a, b))
