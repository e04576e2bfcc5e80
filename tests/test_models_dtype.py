"""Networks are exact at float64 when asked (``dtype = param_dtype = float64`` under x64).

For a small DiT, DDPM UNet, ADM UNet and NCSN++ (random numpy weights, no initialiser
compiled):

* the traced program holds no float32 value anywhere (every intermediate of the jaxpr, time
  features and normalisation statistics included, is float64), and the output is float64;
* a 1e-12 perturbation of the input changes the output (it would vanish in float32, whose
  resolution near 1 is 6e-8);
* the float64 network agrees with the same weights run at float32 to float32 accuracy, so the
  float64 path computes the same function.

x64 is switched on only inside the module fixture and restored after it (the suite shares a
process).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.models.adm import ADMUNet
from diffjax.models.dit import DiT, dit_config
from diffjax.models.ncsnpp import NCSNpp
from diffjax.models.unet import UNet

TINY = {
    "dit": (lambda dt: DiT(dit_config("DiT-S/2", input_size=8, in_channels=2, hidden_size=32,
                                      depth=2, num_heads=2, num_classes=0, learn_sigma=False,
                                      dtype=dt, param_dtype=dt), rngs=nnx.Rngs(0)),
            (8, 8, 2), 500.0),
    "unet": (lambda dt: UNet(image_size=8, in_channels=2, ch=16, ch_mult=(1, 2),
                             num_res_blocks=1, attn_resolutions=(4,), norm_groups=4, dropout=0.0,
                             dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0)),
             (8, 8, 2), 500.0),
    "adm": (lambda dt: ADMUNet(image_size=8, in_channels=2, ch=16, ch_mult=(1, 2),
                               num_res_blocks=1, attn_resolutions=(4,), num_heads=2,
                               num_head_channels=None, num_classes=None, norm_groups=4,
                               dropout=0.0, dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0)),
            (8, 8, 2), 500.0),
    "ncsnpp": (lambda dt: NCSNpp(image_size=8, in_channels=2, nf=16, ch_mult=(1, 2),
                                 num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
                                 dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0)),
               (8, 8, 2), 0.5),
}


@pytest.fixture(scope="module")
def x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def _weights(abstract, seed=0):
    """numpy float64 weights for an abstract module (no zeros: zero-init output layers would
    hide the network)."""
    rng = np.random.default_rng(seed)
    out = []
    for path, var in nnx.to_flat_state(nnx.state(abstract)):
        if not hasattr(var.get_value(), "shape"):
            out.append((path, None))
            continue
        v = rng.standard_normal(var.shape) * 0.1
        if path[-1] == "scale":
            v = 1.0 + v
        out.append((path, v))
    return out


def _build(name, dtype, weights):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: TINY[name][0](dtype)))
    flat = []
    for (path, var), (_, w) in zip(nnx.to_flat_state(state), weights, strict=True):
        if w is None:
            flat.append((path, var))
            continue
        # keep each variable's own dtype class: float params in the model's param dtype
        dt = dtype if jnp.issubdtype(var.dtype, jnp.floating) else var.dtype
        flat.append((path, var.replace(jnp.asarray(w.astype(dt)))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _dtypes_in_jaxpr(jaxpr):
    seen = set()

    def walk(j):
        for v in list(j.invars) + list(j.outvars) + list(j.constvars):
            if hasattr(v, "aval"):
                seen.add(str(v.aval.dtype))
        for eqn in j.eqns:
            for v in list(eqn.invars) + list(eqn.outvars):
                if hasattr(v, "aval"):
                    seen.add(str(v.aval.dtype))
            for p in eqn.params.values():
                for sub in p if isinstance(p, (list, tuple)) else (p,):
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None:
                        walk(getattr(inner, "jaxpr", inner))
    walk(jaxpr.jaxpr)
    return seen


@pytest.mark.parametrize("name", [
    "dit",
    # the UNets compile ~3x longer than the DiT: -m slow (the same GroupNorm, sinusoid and
    # attention code paths serve all three)
    pytest.param("unet", marks=pytest.mark.slow),
    pytest.param("adm", marks=pytest.mark.slow),
    pytest.param("ncsnpp", marks=pytest.mark.slow)])
def test_float64_throughout(x64, name):
    _, shape, t_scale = TINY[name]
    abstract = nnx.eval_shape(lambda: TINY[name][0](jnp.float64))
    weights = _weights(abstract)
    m64 = _build(name, jnp.float64, weights)
    m32 = _build(name, jnp.float32, weights)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, *shape))
    t = np.array([0.3, 0.7]) * t_scale

    graphdef, state = nnx.split(m64)
    fwd = jax.jit(lambda s, x, t: nnx.merge(graphdef, s)(x, t))
    jaxpr = jax.make_jaxpr(lambda s, x, t: nnx.merge(graphdef, s)(x, t))(state, x, t)
    floats = {d for d in _dtypes_in_jaxpr(jaxpr) if "float" in d}
    assert floats == {"float64"}, floats

    y = np.asarray(fwd(state, x, t))
    assert y.dtype == np.float64
    assert np.all(np.isfinite(y)) and np.abs(y).max() > 1e-3
    dy = np.asarray(fwd(state, x + 1e-12, t)) - y
    assert 0 < np.abs(dy).max() < 1e-9, np.abs(dy).max()

    g32, s32 = nnx.split(m32)
    fwd32 = jax.jit(lambda s, x, t: nnx.merge(g32, s)(x, t))
    y32 = np.asarray(fwd32(s32, jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32)))
    assert y32.dtype == np.float32
    err = np.abs(y32 - y).max() / np.abs(y).max()
    assert err < 2e-5, err

