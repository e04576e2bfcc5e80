"""DiT / SiT / LightningDiT: sizes, reference parity (official layout and diffusers), CFG,
NNX state handling, sampler integration and input validation.

Parity uses test-only dependencies (torch, diffusers). The official facebookresearch/DiT package
is not installable, so ``TorchDiT`` below is a small PyTorch module written here from the
published architecture (Peebles & Xie 2022, section 3.2) that reproduces the official
``state_dict`` key layout; every weight is random and non-zero (including the normally
zero-initialised adaLN and output layers).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # test dependency (setup.cfg [test])
from flax import nnx

import diffjax as dj
from diffjax import convert, models
from diffjax.guidance import classifier_free_guidance
from diffjax.models import dit, flops, layers

tnn = torch.nn

TOL = 1e-4
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=2,
            num_classes=10)


# ----------------------------------------------------------------------------------------------
# Test-only PyTorch reference with the official key layout
# ----------------------------------------------------------------------------------------------


def _sincos_table(dim, grid):
    def one(d, pos):
        om = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        a = np.outer(pos.reshape(-1), om)
        return np.concatenate([np.sin(a), np.cos(a)], 1)

    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    return np.concatenate([one(dim // 2, gw), one(dim // 2, gh)], 1)


class _Patch(tnn.Module):
    def __init__(self, p, c, d):
        super().__init__()
        self.proj = tnn.Conv2d(c, d, p, stride=p)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class _TEmb(tnn.Module):
    def __init__(self, d):
        super().__init__()
        self.mlp = tnn.Sequential(tnn.Linear(256, d), tnn.SiLU(), tnn.Linear(d, d))

    def forward(self, t):
        half = 128
        f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        a = t[:, None].float() * f[None]
        return self.mlp(torch.cat([torch.cos(a), torch.sin(a)], -1))


class _YEmb(tnn.Module):
    def __init__(self, n, d):
        super().__init__()
        self.embedding_table = tnn.Embedding(n + 1, d)

    def forward(self, y):
        return self.embedding_table(y)


class _Attn(tnn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.qkv = tnn.Linear(d, 3 * d)
        self.proj = tnn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.h), -1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class _Mlp(tnn.Module):
    def __init__(self, d, hid):
        super().__init__()
        self.fc1, self.act, self.fc2 = tnn.Linear(d, hid), tnn.GELU("tanh"), tnn.Linear(hid, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _mod(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class _Block(tnn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.norm1 = tnn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = _Attn(d, h)
        self.norm2 = tnn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = _Mlp(d, 4 * d)
        self.adaLN_modulation = tnn.Sequential(tnn.SiLU(), tnn.Linear(d, 6 * d))

    def forward(self, x, c):
        s1, c1, g1, s2, c2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g1[:, None] * self.attn(_mod(self.norm1(x), s1, c1))
        return x + g2[:, None] * self.mlp(_mod(self.norm2(x), s2, c2))


class _Final(tnn.Module):
    def __init__(self, d, p, c):
        super().__init__()
        self.norm_final = tnn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.linear = tnn.Linear(d, p * p * c)
        self.adaLN_modulation = tnn.Sequential(tnn.SiLU(), tnn.Linear(d, 2 * d))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_mod(self.norm_final(x), shift, scale))


class TorchDiT(tnn.Module):
    """Official-layout DiT (``sit=True``: SiT's forward, which drops the sigma channels)."""

    def __init__(self, input_size, patch_size, in_channels, hidden_size, depth, num_heads,
                 num_classes, sit=False):
        super().__init__()
        self.p, self.c, self.cout, self.sit = patch_size, in_channels, 2 * in_channels, sit
        g = input_size // patch_size
        self.x_embedder = _Patch(patch_size, in_channels, hidden_size)
        self.pos_embed = tnn.Parameter(
            torch.from_numpy(_sincos_table(hidden_size, g)).float()[None], requires_grad=False)
        self.t_embedder = _TEmb(hidden_size)
        self.y_embedder = _YEmb(num_classes, hidden_size)
        self.blocks = tnn.ModuleList([_Block(hidden_size, num_heads) for _ in range(depth)])
        self.final_layer = _Final(hidden_size, patch_size, self.cout)

    def forward(self, x, t, y):
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for blk in self.blocks:
            h = blk(h, c)
        h = self.final_layer(h, c)
        n, g = h.shape[0], int(h.shape[1] ** 0.5)
        h = h.reshape(n, g, g, self.p, self.p, self.cout)
        out = torch.einsum("nhwpqc->nchpwq", h).reshape(n, self.cout, g * self.p, g * self.p)
        return out.chunk(2, dim=1)[0] if self.sit else out

    def forward_with_cfg(self, x, t, y, cfg_scale, channels=3):
        """The reference's batched CFG: x = [half, half], y = [labels, null]."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], 0), t, y)
        eps, rest = out[:, :channels], out[:, channels:]
        ce, ue = torch.split(eps, len(eps) // 2, dim=0)
        he = ue + cfg_scale * (ce - ue)
        return torch.cat([torch.cat([he, he], 0), rest], dim=1)


def _randomize_torch(module, seed, std=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, prm in module.named_parameters():
            if name.endswith("pos_embed"):
                continue
            prm.copy_(torch.randn(prm.shape, generator=g) * (0.5 if "embedding" in name else std))


def _random_model(cfg, seed):
    """A model with N(0, 0.05^2) weights (norm weights near 1), no random-init program."""
    rng = np.random.default_rng(seed)
    abstract = nnx.eval_shape(lambda: dit.DiT(cfg, rngs=nnx.Rngs(0)))
    flat = {}
    for path, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        key = ".".join(map(str, path))
        w = 0.05 * rng.standard_normal(v.get_value().shape).astype(np.float32)
        flat[key] = w + 1.0 if "norm" in key else w
    return dit.from_converted(cfg, flat)


def _np_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _jit_apply(model, *args, **kw):
    """``model(*args, **kw)`` under ``jax.jit`` (eager NNX forwards are slow on CPU)."""
    graphdef, state = nnx.split(model)
    static = {k: v for k, v in kw.items() if isinstance(v, bool)}
    dyn = {k: v for k, v in kw.items() if not isinstance(v, bool)}
    fn = jax.jit(lambda st, a, d: nnx.merge(graphdef, st)(*a, **d, **static))
    return fn(state, args, dyn)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 8, 4)).astype(np.float32)
    t = np.array([0.0, 17.0, 500.0, 999.0], np.float32)
    y = np.array([0, 3, 9, 10], np.int64)  # 10 = null class
    return x, t, y


@pytest.fixture(scope="module")
def official_pair():
    torch.manual_seed(0)
    ref = TorchDiT(**TINY).eval()
    _randomize_torch(ref, 1)
    cfg = dit.DiTConfig(**TINY)
    model = dit.from_converted(cfg, convert.from_official(_np_state(ref), cfg))
    return ref, model


# ----------------------------------------------------------------------------------------------
# Sizes: parameters and GMACs (Peebles & Xie 2022, Table 1)
# ----------------------------------------------------------------------------------------------

# DiT Table 1: params ~ 33M / 130M / 458M / 675M for S / B / L / XL; its "Gflops" at 256 px
# (latent 32x32x4) for patch 2 / 4 / 8 count multiply-accumulates, i.e. GMACs.
PAPER = {"S": (33, {2: 6.06, 4: 1.41, 8: 0.36}), "B": (130, {2: 23.01, 4: 5.57, 8: 1.42}),
         "L": (458, {2: 80.70, 4: 19.70, 8: 5.01}), "XL": (675, {2: 118.62, 4: 29.04, 8: 7.39})}


def _formula_params(d, depth, p, c=4, pixels=32 * 32, classes=1000):
    """Counted from the architecture: 18d^2 (+15d biases) per adaLN-Zero block (qkv 3d^2,
    attention output d^2, MLP 8d^2, adaLN 6d^2), embeddings, final layer, pos table."""
    blocks = depth * (18 * d * d + 15 * d)
    emb = p * p * c * d + d + (256 * d + d) + (d * d + d) + (classes + 1) * d
    final = 2 * d * d + 2 * d + d * p * p * 2 * c + p * p * 2 * c
    return blocks + emb + final + (pixels // (p * p)) * d


@pytest.fixture(scope="module")
def abstract_models():
    cache = {}

    def get(name):
        if name not in cache:
            cfg = dit.dit_config(name)
            cache[name] = (cfg, nnx.eval_shape(lambda: dit.DiT(cfg, rngs=nnx.Rngs(0))))
        return cache[name]

    return get


def _matmul_gmacs(cfg, model):
    g, st = nnx.split(model)
    x = jax.ShapeDtypeStruct((1, 32, 32, 4), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    y = jax.ShapeDtypeStruct((1,), jnp.int32)
    return flops.matmul_macs(lambda s, a: nnx.merge(g, s)(*a), flops._abstract(st), (x, t, y)) / 1e9


def test_dit_xl2_params_and_gmacs_match_paper():
    cost = flops.dit_cost("DiT-XL/2")
    assert cost.params == 675_129_632
    assert cost.trainable_params == 675_129_632 - 256 * 1152  # pos_embed is a fixed buffer
    assert abs(cost.xla_gmacs - 118.6) / 118.6 < 0.01  # XLA: + elementwise work (~0.3 %)
    assert abs(cost.matmul_gmacs - 118.62) < 0.01  # matmul/conv MACs: the paper's convention


@pytest.mark.parametrize("size", ["S", "B", "L", "XL"])
def test_param_counts_and_macs_table(abstract_models, size):
    name = f"DiT-{size}/2"
    cfg, model = abstract_models(name)
    total, trainable = flops.count_params(model)
    assert total == _formula_params(cfg.hidden_size, cfg.depth, 2)
    assert round(trainable / 1e6) == PAPER[size][0]  # the paper's M counts (B/2: 130.3M)
    assert abs(_matmul_gmacs(cfg, model) - PAPER[size][1][2]) < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("size", ["S", "B", "L", "XL"])
@pytest.mark.parametrize("patch", [4, 8])
def test_macs_table_other_patches(abstract_models, size, patch):
    cfg, model = abstract_models(f"DiT-{size}/{patch}")
    assert flops.count_params(model)[0] == _formula_params(cfg.hidden_size, cfg.depth, patch)
    assert abs(_matmul_gmacs(cfg, model) - PAPER[size][1][patch]) < 0.01


def test_fresh_model_outputs_zero(inputs):
    x, t, y = inputs
    model = dit.build(dit.DiTConfig(**TINY), rngs=0)  # jitted init
    leaves = nnx.state(model, nnx.Param)
    assert float(jnp.abs(leaves["blocks"][0]["attn"]["qkv"]["kernel"].get_value()).max()) > 0
    out = _jit_apply(model, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y))
    assert out.shape == (4, 8, 8, 8)
    assert float(jnp.abs(out).max()) == 0.0


# ----------------------------------------------------------------------------------------------
# Parity with PyTorch (fp32, <= 1e-4)
# ----------------------------------------------------------------------------------------------


def test_parity_official_layout(official_pair, inputs):
    ref, model = official_pair
    x, t, y = inputs
    with torch.no_grad():
        want = _nhwc(ref(_nchw(x), torch.from_numpy(t), torch.from_numpy(y)))
    got = np.asarray(_jit_apply(model, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)))
    assert np.abs(want).max() > 0.1  # a meaningful, non-trivial output
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_parity_sit_layout(inputs):
    torch.manual_seed(0)
    ref = TorchDiT(**TINY, sit=True).eval()
    _randomize_torch(ref, 2)
    cfg = dit.DiTConfig(**TINY, discard_sigma=True, time_input="sit", negate_output=True)
    model = dit.from_converted(cfg, convert.from_official(_np_state(ref), cfg))
    x, _, y = inputs
    t = np.array([0.0, 0.25, 0.7, 1.0], np.float32)  # SiT feeds continuous t unscaled
    with torch.no_grad():
        want = _nhwc(ref(_nchw(x), torch.from_numpy(t), torch.from_numpy(y)))
    got = np.asarray(_jit_apply(model, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)))
    assert got.shape == (4, 8, 8, 4)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    # as_denoiser: diffjax time (data at 0) -> SiT time, SiT velocity -> diffjax velocity
    den = dit.as_denoiser(model)
    got_den = np.asarray(jax.jit(lambda d, *a: d(*a))(den, jnp.asarray(x), 1.0 - jnp.asarray(t),
                                                       jnp.asarray(y)))
    np.testing.assert_allclose(got_den, -want, atol=TOL, rtol=0)


def test_parity_diffusers(inputs):
    import diffusers
    torch.manual_seed(0)
    ref = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=8,
        num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10).eval()
    _randomize_torch(ref, 3)
    with torch.no_grad():  # diffusers keeps one embedder copy per block; tie them (as a real ckpt)
        e0 = ref.transformer_blocks[0].norm1.emb
        for blk in ref.transformer_blocks[1:]:
            blk.norm1.emb.load_state_dict(e0.state_dict())
    cfg = convert.config_from_diffusers(ref.config)
    model = dit.from_converted(cfg, convert.from_diffusers(_np_state(ref), cfg))
    x, t, y = inputs
    with torch.no_grad():
        want = _nhwc(ref(_nchw(x), timestep=torch.from_numpy(t),
                         class_labels=torch.from_numpy(y)).sample)
    got = np.asarray(_jit_apply(model, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)))
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    # untied copies are rejected with a clear message
    sd = _np_state(ref)
    sd["transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight"] += 1.0
    with pytest.raises(ValueError, match="shared"):
        convert.from_diffusers(sd, cfg)


@pytest.mark.parametrize("channels", [3, "all"])
def test_cfg_matches_reference_forward_with_cfg(official_pair, inputs, channels):
    ref, model = official_pair
    x, t, y = inputs
    labels = np.array([1, 2, 3, 4], np.int64)
    scale = 1.5
    with torch.no_grad():
        xx = _nchw(np.concatenate([x, x]))
        tt = torch.from_numpy(np.concatenate([t, t]))
        yy = torch.from_numpy(np.concatenate([labels, np.full(4, 10)]))
        want = _nhwc(ref.forward_with_cfg(xx, tt, yy, scale, 3 if channels == 3 else 4))[:4]
    # t in diffjax time that maps to the DDPM index t via adapters.time_input('ddpm_index')
    den = dit.as_denoiser(model, "ddpm_index")
    tj = (jnp.asarray(t) + 1.0) / 1000.0
    assert models.classifier_free_guidance is classifier_free_guidance  # one implementation
    cfg = classifier_free_guidance(den, scale, channels=channels,
                                                learned_variance=True)
    got = np.asarray(cfg(jnp.asarray(x), tj, jnp.asarray(labels)))
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    # the quirk matters: 3 and 4 guided channels differ on channel 3 only
    other = classifier_free_guidance(
        den, scale, channels="all" if channels == 3 else 3, learned_variance=True)
    diff = np.abs(np.asarray(other(jnp.asarray(x), tj, jnp.asarray(labels))) - got)
    assert diff[..., 3].max() > 1e-3 and diff[..., [0, 1, 2, 4, 5, 6, 7]].max() == 0.0


# ----------------------------------------------------------------------------------------------
# NNX state, sampler integration, options
# ----------------------------------------------------------------------------------------------


def test_split_merge_roundtrip_and_jit(official_pair, inputs):
    _, model = official_pair
    x, t, y = inputs
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    assert "pos_embed" in rest and "pos_embed" not in params

    @jax.jit
    def fwd(params, rest, x, t, y):
        return nnx.merge(graphdef, params, rest)(x, t, y)

    want = model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(y))
    got = fwd(params, rest, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    m2 = nnx.merge(graphdef, params, rest)
    for a, b in zip(jax.tree.leaves(nnx.state(m2)), jax.tree.leaves(nnx.state(model)),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_as_denoiser_with_sampler_and_no_retrace_on_cfg_scale(official_pair):
    _, model = official_pair
    den = dit.as_denoiser(model)  # DiT: time_input='ddpm_index', eps prediction
    proc = dj.DiscreteVP.linear()
    grid = dj.uniform_grid(3)
    y = jnp.arange(8) % 10
    step = dj.samplers.DDIM()
    kw = dict(process=proc, cond=y, learned_variance=True, mesh=None)
    g1 = classifier_free_guidance(den, 1.5, learned_variance=True)
    out = dj.sample(g1, jax.random.key(0), (8, 8, 8, 4), grid, step, **kw)
    assert out.shape == (8, 8, 8, 4) and bool(jnp.isfinite(out).all())
    n0 = dj.samplers.trace_count()
    out2 = dj.sample(g1.replace(weight=4.0), jax.random.key(0), (8, 8, 8, 4), grid, step, **kw)
    assert dj.samplers.trace_count() == n0  # the scale is a traced leaf
    assert float(jnp.abs(out2 - out).max()) > 1e-4


def test_label_dropout_needs_rng_and_drops(official_pair, inputs):
    _, model = official_pair
    x, t, _ = inputs
    xb = jnp.broadcast_to(jnp.asarray(x[:1]), (64, 8, 8, 4))
    tb = jnp.full((64,), 100.0)
    y = jnp.full((64,), 3)
    with pytest.raises(ValueError, match="rngs"):
        model(xb, tb, y, train=True)
    out = _jit_apply(model, xb, tb, y, train=True, rngs=jax.random.key(0))
    cond = _jit_apply(model, xb, tb, y)
    null = _jit_apply(model, xb, tb, jnp.full((64,), 10))
    is_null = np.asarray(jnp.abs(out - null).max(axis=(1, 2, 3)) < 1e-6)
    is_cond = np.asarray(jnp.abs(out - cond).max(axis=(1, 2, 3)) < 1e-6)
    assert np.all(is_null ^ is_cond) and 0 < is_null.sum() < 20  # p = 0.1
    forced = _jit_apply(model, xb[:2], tb[:2], y[:2], force_drop_ids=jnp.array([1, 0]))
    np.testing.assert_allclose(np.asarray(forced[0]), np.asarray(null[0]), atol=1e-6)


def test_lightningdit_options_remat_and_extras():
    cfg = dit.DiTConfig(input_size=4, patch_size=1, in_channels=8, hidden_size=64, depth=2,
                        num_heads=2, num_classes=10, learn_sigma=False, mlp_type="swiglu",
                        norm_type="rmsnorm", use_rope=True, use_qknorm=True,
                        second_scalar=True, context_dim=16)
    model = _random_model(cfg, seed=4)
    g, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(2), (2, 4, 4, 8))
    cond = {"y": jnp.array([1, 2]), "s": jnp.array([3.0, 5.0]),
            "context": jax.random.normal(jax.random.key(3), (2, 3, 16))}
    t = jnp.array([0.2, 0.9])

    def loss(p, remat):
        m = nnx.merge(g, p, rest)
        m.config = cfg.replace(remat=remat)  # static attribute: same weights, remat on/off
        return jnp.sum(m(x, t, cond) ** 2)

    v0, g0 = jax.jit(jax.value_and_grad(lambda p: loss(p, False)))(params)
    for remat in (True, "dots_with_no_batch_dims_saveable"):  # full remat and a policy
        v1, g1 = jax.jit(jax.value_and_grad(lambda p, r=remat: loss(p, r)))(params)
        assert np.isfinite(float(v0))
        assert abs(float(v0) - float(v1)) < 1e-5 * max(1.0, abs(float(v0)))
        for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    with pytest.raises(ValueError, match="checkpoint_policies"):
        cfg.replace(remat="save_everything_please").validate()
    # the SwiGLU hidden width and the second scalar / cross-attention parameters exist
    m = nnx.merge(g, params, rest)
    assert m.blocks[0].mlp.w12.kernel.shape == (64, 2, int(2 / 3 * 256))
    assert m.s_embedder is not None and m.blocks[0].cross_attn is not None
    with pytest.raises(ValueError, match="context"):
        m(x, t, {"y": cond["y"], "s": cond["s"]})
    assert "remat" in str(jax.make_jaxpr(lambda p: loss(p, True))(params))


def test_bf16_compute_keeps_fp32_params(official_pair, inputs):
    _, model = official_pair
    x, t, y = inputs
    cfg = model.config.replace(dtype=jnp.bfloat16)
    graphdef, state = nnx.split(model)

    @jax.jit
    def fwd(st):
        m = nnx.merge(graphdef, st)
        for mod in [m] + [v for _, v in nnx.iter_graph(m) if hasattr(v, "dtype")]:
            if isinstance(mod, dit.DiT):
                mod.config = cfg
            elif isinstance(mod, nnx.Module):
                mod.dtype = jnp.bfloat16
        return m(jnp.asarray(x), jnp.asarray(t), jnp.asarray(y))

    lo = fwd.lower(state).as_text()
    assert "bf16" in lo and all(v.dtype == jnp.float32 for v in jax.tree.leaves(state))
    want = np.asarray(_jit_apply(model, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)))
    got = np.asarray(fwd(state))
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_rope_relative_and_norms():
    cos, sin = layers.rope_2d_tables(16, 4)
    rng = np.random.default_rng(0)
    q = jnp.asarray(np.broadcast_to(rng.standard_normal(16), (1, 16, 1, 16)).astype(np.float32))
    k = jnp.asarray(np.broadcast_to(rng.standard_normal(16), (1, 16, 1, 16)).astype(np.float32))
    rq, rk = layers.apply_rope(q, cos, sin), layers.apply_rope(k, cos, sin)
    dots = np.asarray(jnp.einsum("bnhd,bmhd->nm", rq, rk)).reshape(4, 4, 4, 4)
    # depends only on (row difference, column difference)
    np.testing.assert_allclose(dots[1, 1, 2, 3], dots[0, 0, 1, 2], atol=1e-5)
    np.testing.assert_allclose(dots[3, 2, 1, 0], dots[2, 2, 0, 0], atol=1e-5)
    np.testing.assert_allclose(float(jnp.linalg.norm(rq[0, 5])), float(jnp.linalg.norm(q[0, 5])),
                               rtol=1e-6)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    rms = layers.RMSNorm(7)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(rms), x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6),
                               rtol=1e-5)


def test_logical_sharding_over_fake_mesh(official_pair, inputs):
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices")
    _, model = official_pair
    x, t, y = inputs
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    graphdef, state = nnx.split(model)
    sh = layers.logical_to_mesh_sharding(state, mesh)
    qkv = sh["blocks"][0]["attn"]["qkv"]["kernel"].get_value()
    assert qkv.spec == jax.sharding.PartitionSpec("fsdp", None, None, None)
    state_sh = jax.device_put(state, sh)

    @jax.jit
    def fwd(st, x, t, y):
        with layers.activation_sharding(mesh):
            return nnx.merge(graphdef, st)(x, t, y)

    got = fwd(state_sh, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y))
    want = model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(official_pair):
    _, model = official_pair
    with pytest.raises(ValueError, match="name="):
        dit.dit_config("DiT-XXL/2")
    with pytest.raises(ValueError, match="x.shape"):
        model(jnp.zeros((2, 8, 8, 3)), jnp.zeros(2), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="x.shape"):
        model(jnp.zeros((8, 8, 4)), jnp.zeros(2), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="t.shape"):
        model(jnp.zeros((2, 8, 8, 4)), jnp.zeros(3), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="labels"):
        model(jnp.zeros((2, 8, 8, 4)), jnp.zeros(2), None)
    with pytest.raises(ValueError, match="channels"):
        classifier_free_guidance(dit.as_denoiser(model), 2.0, channels=0)
    with pytest.raises(ValueError, match="missing"):
        convert.from_official({"x_embedder.proj.weight": np.zeros((64, 4, 2, 2))},
                              dit.DiTConfig(**TINY))
    assert dit.dit_config("DiT_XL_2") == dit.dit_config("DiT-XL/2")
