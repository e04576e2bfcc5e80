"""Parameter sharding of every model family on the 8 fake CPU devices.

Modelled on MaxText's ``assert_params_sufficiently_sharded``: of the bytes of the whole
training state (parameters, Adam moments, one EMA), nearly all must be split over the ``fsdp``
mesh axis, and the bytes one device holds must be close to ``total / fsdp``. The presets are
the real ones (DDPM CIFAR-10 UNet, iDDPM/ADM, NCSN++, DiT-B/2), traced abstractly
(``jax.eval_shape``): nothing is allocated or compiled. One small UNet is then created for real
to check that the arrays on the devices carry those shardings.
"""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from diffjax import train as T
from diffjax.models.adm import adm_from_preset
from diffjax.models.dit import DiT, dit_config
from diffjax.models.layers import logical_to_mesh_sharding
from diffjax.models.ncsnpp import ncsnpp_from_preset
from diffjax.models.unet import UNet, unet_from_preset
from diffjax.train.state import _init_state

# The default suite uses each preset at its real width with two resolution levels and one
# residual block per level (same layer kinds and shapes, a fraction of the modules: tracing the
# full NCSN++ preset abstractly takes ~20-50 s on a loaded 2-core machine); ``-m slow`` runs the
# full presets.
_SHORT = dict(ch_mult=(1, 2), num_res_blocks=1)
FAMILIES = {
    "unet_ddpm_cifar10": lambda: unet_from_preset("ddpm_cifar10", rngs=nnx.Rngs(0), **_SHORT),
    "adm_iddpm_cifar10": lambda: adm_from_preset("iddpm_cifar10", rngs=nnx.Rngs(0), **_SHORT),
    "ncsnpp_cifar10": lambda: ncsnpp_from_preset("ncsnpp_cifar10", rngs=nnx.Rngs(0), **_SHORT),
    "dit_b2": lambda: DiT(dit_config("DiT-B/2", num_classes=1000, depth=2), rngs=nnx.Rngs(0)),
}
FULL = {
    "unet_ddpm_cifar10": lambda: unet_from_preset("ddpm_cifar10", rngs=nnx.Rngs(0)),
    "adm_iddpm_cifar10": lambda: adm_from_preset("iddpm_cifar10", rngs=nnx.Rngs(0)),
    "ncsnpp_cifar10": lambda: ncsnpp_from_preset("ncsnpp_cifar10", rngs=nnx.Rngs(0)),
    "dit_b2": lambda: DiT(dit_config("DiT-B/2", num_classes=1000), rngs=nnx.Rngs(0)),
}
MESHES = [(1, 8), (2, 4)]


def _bytes(shape, dtype):
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def sharded_fraction(abstract, shardings):
    """(fraction of bytes split over >1 device, bytes held by one device / total bytes)."""
    total = split = per_device = 0
    for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings), strict=True):
        full = _bytes(x.shape, x.dtype)
        local = _bytes(s.shard_shape(x.shape), x.dtype)
        total += full
        per_device += local
        split += full if local < full else 0
    return split / total, per_device / total


def _abstract_params(families):
    """Each family's abstract parameters (``nnx.eval_shape``: no initialiser runs)."""
    return {name: nnx.state(nnx.eval_shape(build), nnx.Param) for name, build in families.items()}


def _abstract_state(params):
    """The abstract TrainState (Adam + one EMA) over abstract parameters."""
    rng = jax.random.key_data(jax.random.key(0))
    init = lambda p: _init_state(lambda _: p, optax.adam(1e-4), ("ema",), None, rng)
    return jax.eval_shape(init, params)


@pytest.fixture(scope="module")
def abstract_params():
    return _abstract_params(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_state_sufficiently_sharded(abstract_params, family):
    """>= 99 % of the state's bytes are split; one device holds ~1/fsdp of them (+2 %)."""
    _check_sufficiently_sharded(_abstract_state(abstract_params[family]), family)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FULL))
def test_full_preset_sufficiently_sharded(family):
    """The same on the full presets (35.7M-62.8M parameters, DiT-B/2 130M)."""
    params = nnx.state(nnx.eval_shape(FULL[family]), nnx.Param)
    _check_sufficiently_sharded(_abstract_state(params), family)


def _check_sufficiently_sharded(state, family):
    for data, fsdp in MESHES:
        _check_mesh(state, family, data, fsdp)


def _check_mesh(state, family, data, fsdp):
    mesh = T.make_mesh(data, fsdp)
    sh = T.state_shardings(state, mesh)
    for part in ("params", "opt_state", "ema"):
        frac, per_dev = sharded_fraction(getattr(state, part), getattr(sh, part))
        assert frac >= 0.99, (family, part, frac)
        assert per_dev <= 1.02 / fsdp, (family, part, per_dev * fsdp)
        # split over fsdp only: the data axis never splits a parameter
        for s in jax.tree.leaves(getattr(sh, part)):
            assert "data" not in jax.tree.leaves(tuple(s.spec)), s.spec


def test_rules_first_then_shape(abstract_params):
    """A name with a rule decides the axis (DiT's ``embed``); names without a rule (the UNets'
    ``channels_in``/``channels_out``) and unnamed arrays fall back to the largest divisible
    dimension; arrays under 4096 elements stay replicated."""
    mesh = T.make_mesh(2, 4)
    sh = logical_to_mesh_sharding(abstract_params["dit_b2"], mesh)
    # fc1 kernel (embed=768, mlp=3072): the rule puts fsdp on embed although mlp is larger
    assert tuple(sh["blocks"][0]["mlp"]["fc1"]["kernel"].get_value().spec) == ("fsdp", None)
    unet = abstract_params["unet_ddpm_cifar10"]
    sh = logical_to_mesh_sharding(unet, mesh)
    # a resblock conv (3, 3, 128, 256): names (None, None, channels_in, channels_out), no rules
    conv = sh["down"][1]["res"][0]["conv1"]
    assert tuple(conv["kernel"].get_value().spec) == (None, None, None, "fsdp")
    # conv_in (3, 3, 3, 128) has 3456 elements and a bias 128: below min_size, replicated
    assert tuple(sh["conv_in"]["kernel"].get_value().spec) == (None, None, None, None)
    assert tuple(conv["bias"].get_value().spec) == (None,)
    assert tuple(sh["conv_in"]["bias"].get_value().spec) == (None,)
    # an explicit rule for a UNet name wins over the shape fallback
    rules = (("channels_in", "fsdp"),)
    sh = logical_to_mesh_sharding(unet, mesh, rules)
    spec = tuple(sh["down"][1]["res"][0]["conv1"]["kernel"].get_value().spec)
    assert spec == (None, None, "fsdp", None)
    # unnamed arrays: the shape rule alone
    plain = {"w": jax.ShapeDtypeStruct((96, 256), np.float32),
             "odd": jax.ShapeDtypeStruct((3, 4099), np.float32)}
    sh = logical_to_mesh_sharding(plain, mesh)
    assert tuple(sh["w"].spec) == (None, "fsdp")
    assert tuple(sh["odd"].spec) == (None, None)  # nothing divisible by 4


def test_created_state_lives_sharded():
    """A real UNet state created on a (data=2, fsdp=4) mesh: each device holds a quarter of
    every large kernel (its addressable shard), and the shards reassemble the full array."""
    mesh = T.make_mesh(2, 4)
    kw = dict(image_size=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
              norm_groups=8, dropout=0.0)
    init = lambda key: nnx.state(UNet(**kw, rngs=nnx.Rngs(key)), nnx.Param)
    state = T.create_train_state(init, optax.adam(1e-4), mesh=mesh)
    k = state.params["down"][1]["res"][0]["conv2"]["kernel"].get_value()  # (3, 3, 64, 64)
    assert k.shape == (3, 3, 64, 64)
    shards = k.addressable_shards
    assert len(shards) == 8 and {s.data.shape for s in shards} == {(3, 3, 64, 16)}
    full = np.asarray(k)
    for s in shards:
        np.testing.assert_array_equal(np.asarray(s.data), full[s.index])
    mu = state.opt_state[0].mu["down"][1]["res"][0]["conv2"]["kernel"].get_value()
    assert mu.sharding.is_equivalent_to(k.sharding, 4)
    ema = state.ema["ema"]["down"][1]["res"][0]["conv2"]["kernel"].get_value()
    assert ema.sharding.is_equivalent_to(k.sharding, 4)
