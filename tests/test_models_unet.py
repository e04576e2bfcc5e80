"""UNet family: preset sizes, diffusers parity, sampler contract, classifier, input errors.

Tiny models are built abstractly (``nnx.eval_shape``) and filled with numpy random weights,
so no initialisation program is compiled; each test compiles at most one forward.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax.models.adm import ADMClassifier, adm_from_preset, classifier_from_preset
from diffjax.models.layers_unet import as_denoiser
from diffjax.models.ncsnpp import NCSNpp, ncsnpp_from_preset
from diffjax.models.unet import UNet, num_params, unet_from_preset


def _materialize(abstract, seed=0, scale=0.05):
    """Fill an abstract module with random numpy weights (no zeros, no identities)."""
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    flat = []
    for path, var in nnx.to_flat_state(state):
        val = rng.standard_normal(var.shape).astype(np.float32) * scale
        if path[-1] == "scale":
            val = 1.0 + val
        if path[-1] == "W":  # Fourier frequencies
            val = val / scale * 16.0
        flat.append((path, var.replace(jnp.asarray(val))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _tiny(cls, **kw):
    return _materialize(nnx.eval_shape(lambda: cls(**kw, rngs=nnx.Rngs(0))))


TINY_DDPM = dict(image_size=8, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                 norm_groups=4, dropout=0.0)


# ------------------------------------------------------------------------------------------
# Preset sizes (abstract, nothing allocated)
# ------------------------------------------------------------------------------------------

# DDPM CIFAR-10 unet2d16b2: 35,746,307 (hojonathanho/diffusion; diffusers google/ddpm-cifar10-32
# builds the same number). ADM ImageNet 64/128/256: 296M / 422M / 554M in the ADM paper.
PRESET_COUNTS = [
    (unet_from_preset, "ddpm_cifar10", 35_746_307),
    (adm_from_preset, "iddpm_cifar10", 52_546_438),
    (adm_from_preset, "adm_imagenet64", 295_904_454),
    (adm_from_preset, "adm_imagenet256", 553_838_086),
    (classifier_from_preset, "adm_classifier64", 41_287_016),
    (ncsnpp_from_preset, "ncsnpp_cifar10", 62_758_787),
]


@pytest.mark.parametrize("build,name,expected", PRESET_COUNTS, ids=[p[1] for p in PRESET_COUNTS])
def test_preset_param_counts(build, name, expected):
    m = nnx.eval_shape(lambda: build(name, rngs=nnx.Rngs(0)))
    assert num_params(m) == expected


def test_paper_rounding():
    assert round(35_746_307 / 1e6, 1) == 35.7
    assert [round(n / 1e6) for n in (295_904_454, 553_838_086)] == [296, 554]


def test_logical_axis_names():
    m = nnx.eval_shape(lambda: UNet(**TINY_DDPM, rngs=nnx.Rngs(0)))
    spec = nnx.get_partition_spec(nnx.state(m))
    assert tuple(spec["conv_in"]["kernel"]) == (None, None, "channels_in", "channels_out")
    assert tuple(spec["down"][1]["attn"][0]["q"]["kernel"]) == ("channels_in", "channels_out")


# ------------------------------------------------------------------------------------------
# diffusers parity
# ------------------------------------------------------------------------------------------

_DIFFUSERS_CFGS = {
    "ddpm": dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                 norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
                 flip_sin_to_cos=False, freq_shift=1, time_embedding_type="positional"),
    "adm": dict(sample_size=8, in_channels=3, out_channels=6, block_out_channels=(32, 64),
                layers_per_block=1,
                down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
                downsample_type="resnet", upsample_type="resnet",
                resnet_time_scale_shift="scale_shift", num_class_embeds=10, norm_num_groups=8,
                attn_norm_num_groups=8, norm_eps=1e-5, attention_head_dim=16,
                flip_sin_to_cos=True, freq_shift=0),
}


@pytest.mark.parametrize("kind", ["ddpm", "adm"])
def test_diffusers_parity(kind):
    import diffusers
    import torch

    from diffjax.convert.unet import load_diffusers_unet, unet_config_from_diffusers

    torch.manual_seed(0)
    tm = diffusers.UNet2DModel(**_DIFFUSERS_CFGS[kind])
    with torch.no_grad():
        for p in tm.parameters():  # no zero / identity parameters left
            p.add_(0.1 * torch.randn_like(p) + 0.05)
    tm.eval()
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    cfg = unet_config_from_diffusers(tm.config)
    assert cfg["scale_shift"] == (kind == "adm") and cfg["resblock_updown"] == (kind == "adm")
    net = load_diffusers_unet(sd, cfg)

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    t = np.array([3, 917], np.int64)
    y = np.array([1, 7]) if kind == "adm" else None
    with torch.no_grad():
        ref = tm(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t),
                 class_labels=None if y is None else torch.from_numpy(y)).sample.numpy()
    ref = ref.transpose(0, 2, 3, 1)
    graphdef, state = nnx.split(net)
    out = jax.jit(lambda s, x, t, y: nnx.merge(graphdef, s)(x, t, y))(
        state, x, t.astype(np.float32), y)
    err = float(np.max(np.abs(np.asarray(out) - ref)))
    assert out.shape == ref.shape
    assert err <= 1e-4 * max(1.0, float(np.max(np.abs(ref)))), err


def test_converter_rejects_unsupported():
    from diffjax.convert.unet import unet_config_from_diffusers

    bad = dict(_DIFFUSERS_CFGS["ddpm"], time_embedding_type="fourier")
    with pytest.raises(ValueError, match="time_embedding_type"):
        unet_config_from_diffusers(bad)
    bad = dict(_DIFFUSERS_CFGS["ddpm"], down_block_types=("DownBlock2D", "SkipDownBlock2D"))
    with pytest.raises(ValueError, match="SkipDownBlock2D"):
        unet_config_from_diffusers(bad)


# ------------------------------------------------------------------------------------------
# Sampler contract, classifier, NCSN++
# ------------------------------------------------------------------------------------------


def test_ddim_sampling_with_tiny_unet():
    net = _tiny(UNet, **TINY_DDPM)
    den = as_denoiser(net, "ddpm_index", num_timesteps=1000)
    proc = dj.DiscreteVP.linear(1000)
    grid = dj.discrete_grid([999, 666, 333], 1000)
    out = dj.sample(den, jax.random.key(0), (2, 8, 8, 3), grid, dj.samplers.DDIM(),
                    process=proc, prediction="eps", mesh=None)
    assert out.shape == (2, 8, 8, 3)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_classifier_logits_and_gradient():
    clf = _tiny(ADMClassifier, image_size=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                attn_resolutions=(4,), num_head_channels=8, num_classes=5, norm_groups=4)
    graphdef, state = nnx.split(clf)
    x = np.random.default_rng(2).standard_normal((2, 8, 8, 3)).astype(np.float32)
    t = np.array([10.0, 500.0], np.float32)
    y = np.array([0, 3])

    def logp(x):
        logits = nnx.merge(graphdef, state)(x, t)
        return jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(2), y]), logits

    (_, logits), g = jax.jit(jax.value_and_grad(logp, has_aux=True))(x)
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_ncsnpp_residual_input_and_scale_by_sigma():
    net = _tiny(NCSNpp, image_size=8, nf=16, ch_mult=(1, 2), num_res_blocks=1,
                attn_resolutions=(4,), progressive="output_skip", progressive_input="residual")
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 3)).astype(np.float32)
    sig = np.array([0.5, 2.0], np.float32)
    out = np.asarray(nnx.jit(lambda n, x, s: n(x, s))(net, x, sig))
    assert out.shape == x.shape and np.isfinite(out).all()


# ------------------------------------------------------------------------------------------
# NCSN++ / DDPM++ with a second time input (IMM's s-embedder, ``second_scalar``)
# ------------------------------------------------------------------------------------------

# one level (no resampling): the smallest graph that still has every embedding path
ONE_LEVEL_NCSNPP = dict(image_size=8, nf=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(),
                        dropout=0.0)
# its counts before ``second_scalar`` existed (git d1f6ba3)
ONE_LEVEL_COUNTS = {"positional": 41_731, "fourier": 42_755}


@pytest.mark.parametrize("emb", ["positional", "fourier"])
def test_ncsnpp_second_scalar_param_counts(emb):
    """Default / False: the old count; True: exactly one more embedding MLP
    ``Dense(d_feat -> 4 nf) -> SiLU -> Dense(4 nf -> 4 nf)`` (the Fourier table of s is a fixed
    buffer, not a parameter)."""
    kw = dict(ONE_LEVEL_NCSNPP, embedding_type=emb)
    count = lambda **k: num_params(nnx.eval_shape(lambda: NCSNpp(**kw, **k, rngs=nnx.Rngs(0))))
    nf, temb = 16, 64
    d_feat = 2 * nf if emb == "fourier" else nf
    by_hand = (d_feat * temb + temb) + (temb * temb + temb)
    assert count() == count(second_scalar=False) == ONE_LEVEL_COUNTS[emb]
    assert count(second_scalar=True) == ONE_LEVEL_COUNTS[emb] + by_hand


def test_ncsnpp_second_scalar_is_an_added_embedding_and_trains():
    """With random (non-zero) weights everywhere: the output depends on s; gradients reach
    the s-embedder; zeroing the s-MLP's last layer gives exactly the plain network on the same
    shared weights (the two embeddings are summed, nothing else changes)."""
    kw = dict(ONE_LEVEL_NCSNPP, embedding_type="positional", scale_by_sigma=False)
    net = _tiny(NCSNpp, **kw, second_scalar=True)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    x = np.random.default_rng(4).standard_normal((2, 8, 8, 3)).astype(np.float32)
    t = np.array([300.0, 900.0], np.float32)

    def loss(p, s):
        out = nnx.merge(graphdef, p, rest)(x, t, {"s": s})
        return jnp.sum(out ** 2), out

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))  # one compile for every call below
    s1 = np.array([0.0, 100.0], np.float32)
    (_, o1), g = step(params, s1)
    (_, o2), _ = step(params, np.array([250.0, 600.0], np.float32))
    o1, o2 = np.asarray(o1), np.asarray(o2)
    assert np.isfinite(o1).all() and np.abs(o1 - o2).max() > 1e-3 * np.abs(o1).max()
    for layer in ("linear_1", "linear_2"):
        assert float(jnp.abs(g["s_embed"][layer]["kernel"][...]).max()) > 0

    flat = [(p, v.replace(jnp.zeros_like(v[...])) if p[:2] == ("s_embed", "linear_2") else v)
            for p, v in nnx.to_flat_state(params)]
    (_, o0), _ = step(nnx.from_flat_state(flat), s1)
    pg, pst = nnx.split(nnx.eval_shape(lambda: NCSNpp(**kw, rngs=nnx.Rngs(0))))
    shared = dict(nnx.to_flat_state(nnx.state(net)))
    pst = nnx.from_flat_state([(p, v.replace(shared[p][...]))
                               for p, v in nnx.to_flat_state(pst)])
    ref = np.asarray(jax.jit(lambda st: nnx.merge(pg, st)(x, t))(pst))
    np.testing.assert_allclose(np.asarray(o0), ref, rtol=1e-5, atol=1e-5)


def test_ncsnpp_second_scalar_fourier_reads_s():
    net = _tiny(NCSNpp, **ONE_LEVEL_NCSNPP, embedding_type="fourier", second_scalar=True)
    graphdef, state = nnx.split(net)
    x = np.random.default_rng(5).standard_normal((2, 8, 8, 3)).astype(np.float32)
    sig = np.array([0.5, 2.0], np.float32)
    fwd = jax.jit(lambda s: nnx.merge(graphdef, state)(x, sig, {"s": s}))
    o1, o2 = (np.asarray(fwd(np.array(v, np.float32))) for v in ([0.1, 0.3], [0.4, 1.5]))
    assert np.isfinite(o1).all() and np.abs(o1 - o2).max() > 1e-3 * np.abs(o1).max()


def test_ncsnpp_second_scalar_errors():
    """DiT / ToyMLP convention: ``second_scalar=True`` needs ``cond['s']``, False rejects it."""
    kw = dict(ONE_LEVEL_NCSNPP, embedding_type="positional")
    two = nnx.eval_shape(lambda: NCSNpp(**kw, second_scalar=True, rngs=nnx.Rngs(0)))
    one = nnx.eval_shape(lambda: NCSNpp(**kw, rngs=nnx.Rngs(0)))
    x, t = np.zeros((2, 8, 8, 3), np.float32), np.ones((2,), np.float32)
    for cond in (None, np.array([1, 2]), {"y": np.array([1, 2])}):
        with pytest.raises(ValueError, match=r"second_scalar=True: cond must be a dict"):
            two(x, t, cond)
    with pytest.raises(ValueError, match=r"cond\['s'\] given but the NCSNpp has second_scalar"):
        one(x, t, {"s": np.ones((2,), np.float32)})
    with pytest.raises(ValueError, match="unknown keys"):
        two(x, t, {"s": np.ones((2,), np.float32), "context": np.ones((2, 3))})
    with pytest.raises(ValueError, match=r"must be a scalar or have shape \(2,\)"):
        two(x, t, {"s": np.ones((3,), np.float32)})


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    net = _tiny(UNet, **TINY_DDPM)
    t = np.zeros((2,), np.float32)
    with pytest.raises(ValueError, match="in_channels"):
        net(np.zeros((2, 8, 8, 4), np.float32), t)
    with pytest.raises(ValueError, match="not divisible"):
        net(np.zeros((2, 9, 9, 3), np.float32), t)
    with pytest.raises(ValueError, match="image_size"):
        UNet(**{**TINY_DDPM, "image_size": 9}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="preset"):
        unet_from_preset("ddpm_cifar100", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="preset"):
        adm_from_preset("adm_imagenet1024", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="preset"):
        ncsnpp_from_preset("ncsn", rngs=nnx.Rngs(0))
    cond = nnx.eval_shape(lambda: UNet(**TINY_DDPM, num_classes=3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="y"):
        cond(np.zeros((2, 8, 8, 3), np.float32), t)
    with pytest.raises(ValueError, match="progressive_input"):
        NCSNpp(progressive_input="skip", rngs=nnx.Rngs(0))
