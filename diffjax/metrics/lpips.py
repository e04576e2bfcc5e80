"""LPIPS with a VGG16 trunk in Flax NNX (Zhang et al. 2018, "The Unreasonable Effectiveness of
Deep Features as a Perceptual Metric", arXiv 1801.03924), for the LPIPS metric of consistency
models (Song et al. 2023, arXiv 2303.01469).

Network (the ``lpips`` package, richzhang/PerceptualSimilarity ``lpips/lpips.py``, version 0.1,
``net='vgg'``), NHWC throughout:

1. Scaling layer: ``(x - shift) / scale`` with ``shift = (-0.030, -0.088, -0.188)`` and
   ``scale = (0.458, 0.448, 0.450)``; the input ``x`` is RGB in ``[-1, 1]``. These are the
   ImageNet mean/std re-expressed for ``[-1, 1]`` inputs: ``(1 + shift) / 2 = (0.485, 0.456,
   0.406)`` and ``scale / 2 = (0.229, 0.224, 0.225)``.
2. torchvision ``vgg16().features`` (3x3 convs, padding 1, with bias, ReLU; 2x2 stride-2 pooling)
   tapped after the ReLUs ``relu1_2, relu2_2, relu3_3, relu4_3, relu5_3`` (torchvision indices
   3, 8, 15, 22, 29; the last pool, index 30, is never used).
3. Per tap: unit-normalise every spatial feature vector over channels,
   ``f / (||f||_2 + 1e-10)`` (the package's ``normalize_tensor`` eps), square the difference of
   the two images' normalised features, weight the channels with the tap's 1x1 linear head
   (``lin0 .. lin4``: no bias, non-negative weights after training; the package's dropout in
   front of them is off at inference and omitted here), average over space.
4. Sum over the five taps: one distance per image pair, shape ``(B,)``.

Pooling. ``pooling='max'`` (default) is the ``lpips`` package (torchvision's ``MaxPool2d``).
``pooling='avg'`` is piq's ``LPIPS(replace_pooling=True)`` (photosynthesis-team/piq
``piq/perceptual.py``: every ``MaxPool2d`` becomes ``AvgPool2d(2, 2)``), which is what the
consistency-models reference (openai/consistency_models ``cm/karras_diffusion.py``) trains with.
Both pool with floor semantics on odd sizes. piq otherwise computes the same quantity: it
normalises ``[0, 1]`` inputs with the ImageNet mean/std (= step 1 applied to ``2u - 1``, up to
float rounding), taps the same ReLUs, uses the same unit normalisation (``EPS = 1e-10``), and
sums ``w_c * mean_hw((f_x - f_y)_c^2)`` over channels and taps, which equals step 3/4 (the lin
head is linear, so it commutes with the spatial mean).

Weights. The trunk is torchvision's ImageNet VGG16 (``IMAGENET1K_V1``, ``vgg16-397923af.pth``),
the heads the ``lpips`` package's ``weights/v0.1/vgg.pth`` (shipped inside its wheel). piq loads
its own copy of the heads (``lpips_weights.pt`` from a piq release); whether it is bit-identical
to the package's was not checked here (it cannot be downloaded in this environment). Nothing is
ever downloaded: convert once where torch is available, e.g. ::

    import torch, torchvision
    from diffjax.metrics.lpips import save_lpips_npz
    vgg = torchvision.models.vgg16(weights="IMAGENET1K_V1").features.state_dict()
    lin = torch.load(".../site-packages/lpips/weights/v0.1/vgg.pth", map_location="cpu")
    save_lpips_npz("lpips_vgg16.npz", vgg, lin)

and load with :func:`load_lpips`. :func:`convert_torch_lpips` also accepts the ``lpips``
package's whole ``LPIPS(net='vgg').state_dict()`` for both arguments.

Parity (``tests/test_lpips.py``, fixture recorded by ``experiments/fixtures/record_lpips_parity.py``
with seeded random weights from :func:`random_lpips_state_dicts`): ``pooling='max'`` against
``lpips.LPIPS(net='vgg', pretrained=False, pnet_rand=True)`` and ``pooling='avg'`` through
:func:`lpips_metric` against the reference's pipeline (torch bilinear resize to 224, ``(x + 1) /
2``, piq ``LPIPS(replace_pooling=True, reduction='none')``, its weight loaders patched to return
the same random weights).

Gradients. ``||f||`` is computed as ``sqrt(s)`` only where ``s = sum f^2 > 0`` (0 elsewhere):
the forward value is unchanged, but a feature vector that is exactly zero (all channels of a
ReLU dead at one location) no longer gives ``inf * 0 = NaN`` in the backward pass (torch gives
NaN there).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.utils.checksum import save_npz_with_checksum, verify_sha256

__all__ = [
    "LPIPS",
    "LPIPS_SHIFT",
    "LPIPS_SCALE",
    "VGG16_CONV_INDICES",
    "lpips_state_dict_shapes",
    "random_lpips_state_dicts",
    "convert_torch_lpips",
    "lpips_torch_state_dicts",
    "save_lpips_npz",
    "load_lpips",
    "lpips_metric",
]

Array = Any

# lpips package ScalingLayer buffers (input in [-1, 1]).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# lpips ``normalize_tensor`` / piq ``EPS``: added to the norm, not under the square root.
NORM_EPS = 1e-10

# torchvision ``vgg16().features``: (index of the conv, out channels) per stage; every conv is
# followed by a ReLU, every stage by a 2x2 pool. The tap of a stage is the ReLU after its last
# conv (relu1_2 = index 3, relu2_2 = 8, relu3_3 = 15, relu4_3 = 22, relu5_3 = 29).
_STAGES = (
    ((0, 64), (2, 64)),
    ((5, 128), (7, 128)),
    ((10, 256), (12, 256), (14, 256)),
    ((17, 512), (19, 512), (21, 512)),
    ((24, 512), (26, 512), (28, 512)),
)
VGG16_CONV_INDICES = tuple(i for stage in _STAGES for i, _ in stage)
TAP_CHANNELS = (64, 128, 256, 512, 512)
TAP_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
POOLINGS = ("max", "avg")

_HI = jax.lax.Precision.HIGHEST


def _conv_in_out():
    """``[(torchvision index, in channels, out channels)]`` of the 13 convs."""
    out, cin = [], 3
    for stage in _STAGES:
        for idx, cout in stage:
            out.append((idx, cin, cout))
            cin = cout
    return out


def _pool2x2(x: Array, kind: str) -> Array:
    """2x2 stride-2 pooling without padding (floor on odd sizes, as torch's ``MaxPool2d(2, 2)``
    and ``AvgPool2d(2, 2)``). A crop + reshape is exact and differentiable."""
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2].reshape(b, h2, 2, w2, 2, c)
    return jnp.max(x, axis=(2, 4)) if kind == "max" else jnp.mean(x, axis=(2, 4))


def _unit_normalize(f: Array) -> Array:
    """``f / (||f|| + eps)`` over channels, with a square root that is NaN-free in the backward
    pass at ``f = 0`` (see the module docstring)."""
    s = jnp.sum(f * f, axis=-1, keepdims=True)
    pos = s > 0
    norm = jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)
    return f / (norm + NORM_EPS)


class LPIPS(nnx.Module):
    """LPIPS distance with a VGG16 trunk (Zhang et al. 2018), NHWC inputs in ``[-1, 1]``.

    The parameters start at zero: load real (or test) weights with :func:`load_lpips` or
    :func:`convert_torch_lpips`. The network is a fixed metric; nothing here is trained.

    Args:
      pooling: ``'max'`` (the ``lpips`` package) or ``'avg'`` (piq's ``replace_pooling=True``,
        used by the consistency-models reference).
      dtype: computation dtype of the convolutions (``None``: float32 like the parameters);
        normalisation, differences and reductions always run in float32.
      precision: ``lax.Precision`` of the convolutions; ``HIGHEST`` (default) keeps TF32 off on
        GPUs, as float32 parity with torch needs. ``None`` lets the backend choose (faster on GPU,
        close to torch's own default of TF32 convolutions).
    """

    def __init__(self, pooling: str = "max", *, dtype: Any = None,
                 precision: Any = _HI):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
        self.pooling = pooling
        rngs = nnx.Rngs(0)  # unused by the zero initialisers; nnx.Conv requires one
        zeros = nnx.initializers.zeros
        self.convs = nnx.List([
            nnx.Conv(cin, cout, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype,
                     precision=precision, kernel_init=zeros, bias_init=zeros, rngs=rngs)
            for _, cin, cout in _conv_in_out()])
        self.lins = nnx.List([
            nnx.Conv(c, 1, (1, 1), use_bias=False, precision=precision, kernel_init=zeros,
                     rngs=rngs)
            for c in TAP_CHANNELS])

    def features(self, x: Array) -> list[Array]:
        """The five ReLU taps of the VGG16 trunk for ``x`` in ``[-1, 1]``, ``(B, H, W, 3)``."""
        x = jnp.asarray(x, jnp.float32)
        shift = jnp.asarray(LPIPS_SHIFT, jnp.float32).reshape(1, 1, 1, 3)
        scale = jnp.asarray(LPIPS_SCALE, jnp.float32).reshape(1, 1, 1, 3)
        h = (x - shift) / scale
        taps, k = [], 0
        for s, stage in enumerate(_STAGES):
            if s > 0:  # the pool that closes the previous stage (the last one is never used)
                h = _pool2x2(h, self.pooling)
            for _ in stage:
                h = jax.nn.relu(self.convs[k](h))
                k += 1
            taps.append(h.astype(jnp.float32))
        return taps

    def __call__(self, x: Array, y: Array, *, return_taps: bool = False):
        """LPIPS distance of each pair.

        Args:
          x, y: ``(B, H, W, 3)`` RGB in ``[-1, 1]`` (H, W >= 16 so that relu5_3 is not empty).
          return_taps: also return the five per-tap terms.

        Returns:
          ``(B,)`` float32 distances, or ``(distances, taps)`` with ``taps`` of shape ``(B, 5)``.
        """
        if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"x and y must both be (B, H, W, 3); got {x.shape} and {y.shape}")
        if min(x.shape[1:3]) < 16:
            raise ValueError(f"LPIPS-VGG16 needs H, W >= 16 (four 2x2 pools); got {x.shape}")
        b = x.shape[0]
        # One trunk pass over both images: a single (2B) batch through every conv.
        feats = self.features(jnp.concatenate([x, y], axis=0))
        terms = []
        for f, lin in zip(feats, self.lins, strict=True):
            d = (_unit_normalize(f[:b]) - _unit_normalize(f[b:])) ** 2
            terms.append(jnp.mean(lin(d)[..., 0], axis=(1, 2)))
        taps = jnp.stack(terms, axis=1)
        total = jnp.sum(taps, axis=1)
        return (total, taps) if return_taps else total


# ---------------------------------------------------------------- torch state dicts


def lpips_state_dict_shapes() -> tuple[dict, dict]:
    """Torch-layout shapes: ``({'<i>.weight' | '<i>.bias': shape}`` of torchvision
    ``vgg16().features``, ``{'lin<k>.model.1.weight': (1, C, 1, 1)})``."""
    feats = {}
    for idx, cin, cout in _conv_in_out():
        feats[f"{idx}.weight"] = (cout, cin, 3, 3)
        feats[f"{idx}.bias"] = (cout,)
    lins = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(TAP_CHANNELS)}
    return feats, lins


def random_lpips_state_dicts(seed: int) -> tuple[dict, dict]:
    """Seeded random LPIPS weights in torch layout (numpy float32), for parity tests only.

    Pure numpy so that the torch-side recorder and the JAX test draw identical tensors. Drawn
    in a fixed order: per conv (torchvision order) a He-scaled normal weight
    (``std = sqrt(2 / fan_in)``, keeps activations O(1) through 13 ReLU convs) then a small
    normal bias; then per head non-negative uniform weights (as trained heads are).

    Returns:
      ``(features_state_dict, lin_state_dict)`` with the keys of
      :func:`lpips_state_dict_shapes`.
    """
    rng = np.random.default_rng(seed)
    feats, lins = {}, {}
    for idx, cin, cout in _conv_in_out():
        feats[f"{idx}.weight"] = (rng.standard_normal((cout, cin, 3, 3))
                                  * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        feats[f"{idx}.bias"] = (0.05 * rng.standard_normal(cout)).astype(np.float32)
    for k, c in enumerate(TAP_CHANNELS):
        lins[f"lin{k}.model.1.weight"] = rng.uniform(0.0, 1.0, (1, c, 1, 1)).astype(np.float32)
    return feats, lins


def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor (duck-typed: torch is optional)
        v = v.detach().cpu().numpy()
    return np.asarray(v)


# torchvision ``vgg16().state_dict()`` ("features.<i>.") or the lpips package's
# ``LPIPS.state_dict()`` ("net.slice<k>.<i>.") prefixes in front of "<i>.weight".
_FEATURE_PREFIX = re.compile(r"^(?:features\.|net\.slice[1-5]\.)?(\d+)\.(weight|bias)$")
# the lpips heads: "lin<k>.model.1.weight" (index 0 when built with use_dropout=False).
_LIN_KEY = re.compile(r"^lin([0-4])\.model\.[01]\.weight$")
# keys of the lpips / torchvision state dicts that carry nothing for this module: the lpips
# package's alias ``lins.<k>`` of the heads, its constant scaling buffers, VGG's classifier.
_IGNORED = re.compile(r"^(?:lins\.|scaling_layer\.|classifier\.)")


def _canonical(features_sd: Mapping, lin_sd: Mapping) -> dict:
    """Validate and rename to ``{'features.<i>.weight' ..., 'lin<k>.model.1.weight' ...}``
    (numpy float32, torch layouts). Raises ``KeyError`` / ``ValueError`` naming the key."""
    want_f, want_l = lpips_state_dict_shapes()
    out: dict = {}
    for key, v in features_sd.items():
        if _IGNORED.match(key) or _LIN_KEY.match(key):
            continue  # lets a whole lpips.LPIPS().state_dict() be passed for both arguments
        m = _FEATURE_PREFIX.match(key)
        if m is None or f"{m[1]}.{m[2]}" not in want_f:
            raise KeyError(f"unexpected VGG16 features state-dict key {key!r}; expected "
                           f"torchvision vgg16().features keys like '0.weight', '28.bias'")
        name = f"{m[1]}.{m[2]}"
        out["features." + name] = (key, _to_numpy(v), want_f[name])
    for key, v in lin_sd.items():
        if _IGNORED.match(key) or _FEATURE_PREFIX.match(key):
            continue
        m = _LIN_KEY.match(key)
        if m is None:
            raise KeyError(f"unexpected LPIPS head state-dict key {key!r}; expected "
                           "'lin0.model.1.weight' .. 'lin4.model.1.weight'")
        name = f"lin{m[1]}.model.1.weight"
        out[name] = (key, _to_numpy(v), want_l[name])
    expected = {"features." + k for k in want_f} | set(want_l)
    missing = sorted(expected - set(out), key=lambda s: (len(s), s))
    if missing:
        raise KeyError(f"LPIPS weights incomplete: missing {missing[:6]}"
                       f"{' ...' if len(missing) > 6 else ''} ({len(missing)} of {len(expected)})")
    result = {}
    for name, (key, a, shape) in out.items():
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"LPIPS weight {key!r} has shape {tuple(a.shape)}, expected "
                             f"{tuple(shape)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"LPIPS weight {key!r} has non-finite values")
        result[name] = a.astype(np.float32)
    return result


def _module_from_canonical(sd: dict, pooling: str, **kwargs) -> LPIPS:
    # abstract construction: no initialiser runs (and compiles) only to be overwritten
    model = nnx.eval_shape(lambda: LPIPS(pooling, **kwargs))
    for conv, (idx, _, _) in zip(model.convs, _conv_in_out(), strict=True):
        # torch OIHW -> flax HWIO (a true convolution in both: no kernel flip)
        conv.kernel.set_value(jnp.asarray(sd[f"features.{idx}.weight"].transpose(2, 3, 1, 0)))
        conv.bias.set_value(jnp.asarray(sd[f"features.{idx}.bias"]))
    for k, lin in enumerate(model.lins):
        lin.kernel.set_value(jnp.asarray(sd[f"lin{k}.model.1.weight"].transpose(2, 3, 1, 0)))
    return model


def convert_torch_lpips(features_sd: Mapping, lin_sd: Mapping, pooling: str = "max",
                        **kwargs) -> LPIPS:
    """Build an :class:`LPIPS` from torch state dicts (numpy arrays or CPU torch tensors).

    Args:
      features_sd: torchvision ``vgg16().features.state_dict()`` (keys ``'0.weight'`` ..
        ``'28.bias'``); the prefixes ``'features.'`` (a whole ``vgg16().state_dict()``, whose
        ``classifier.*`` keys are ignored) and ``'net.slice<k>.'`` (the lpips package) are
        accepted.
      lin_sd: the lpips heads, ``'lin0.model.1.weight'`` .. ``'lin4.model.1.weight'`` of shape
        ``(1, C, 1, 1)`` (e.g. ``lpips/weights/v0.1/vgg.pth``). A whole
        ``lpips.LPIPS(net='vgg').state_dict()`` may be passed as both arguments.
      pooling: ``'max'`` or ``'avg'`` (see :class:`LPIPS`).
      **kwargs: ``dtype``, ``precision`` for :class:`LPIPS`.

    Raises:
      KeyError: an unknown key (named) or missing keys.
      ValueError: a tensor with the wrong shape (named) or non-finite values.
    """
    return _module_from_canonical(_canonical(features_sd, lin_sd), pooling, **kwargs)


def lpips_torch_state_dicts(model: LPIPS) -> tuple[dict, dict]:
    """Inverse of :func:`convert_torch_lpips`: ``(features_sd, lin_sd)`` as numpy, torch
    layouts and key names."""
    feats = {}
    for conv, (idx, _, _) in zip(model.convs, _conv_in_out(), strict=True):
        feats[f"{idx}.weight"] = np.asarray(conv.kernel.get_value()).transpose(3, 2, 0, 1)
        feats[f"{idx}.bias"] = np.asarray(conv.bias.get_value())
    lins = {f"lin{k}.model.1.weight": np.asarray(lin.kernel.get_value()).transpose(3, 2, 0, 1)
            for k, lin in enumerate(model.lins)}
    return feats, lins


def save_lpips_npz(path, features_sd: Mapping, lin_sd: Mapping) -> str:
    """Validate and write LPIPS weights to ``path`` (``.npz``, torch names and layouts:
    ``features.<i>.weight|bias`` and ``lin<k>.model.1.weight``, float32) plus
    ``path + '.sha256'``. Arguments as :func:`convert_torch_lpips`. Returns the sha256."""
    return save_npz_with_checksum(path, _canonical(features_sd, lin_sd))


def _expected_message(path) -> str:
    return (f"{path!r}: expected an .npz of LPIPS-VGG16 weights written by "
            "diffjax.metrics.lpips.save_lpips_npz (torchvision vgg16 'features.<i>.weight|bias' "
            "+ lpips heads 'lin<k>.model.1.weight'). diffjax never downloads weights; see the "
            "diffjax.metrics.lpips module docstring for the one-off conversion")


def load_lpips(path, pooling: str = "max", sha256: str | None = None, **kwargs) -> LPIPS:
    """Load an :class:`LPIPS` from an ``.npz`` written by :func:`save_lpips_npz`.

    Args:
      path: the ``.npz``. Never downloaded.
      pooling: ``'max'`` (lpips package) or ``'avg'`` (piq ``replace_pooling=True``, the
        consistency-models reference).
      sha256: expected checksum; if ``None``, the ``path + '.sha256'`` side file is used when
        present.
      **kwargs: ``dtype``, ``precision`` for :class:`LPIPS`.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: unreadable / not an npz, checksum mismatch, wrong shapes (named).
      KeyError: unknown or missing weight names.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"LPIPS weights not found at {_expected_message(path)}")
    verify_sha256(path, sha256)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single array, not an archive")
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read LPIPS weights ({e}) at {_expected_message(path)}") from e
    feats = {k: v for k, v in arrays.items() if k.startswith("features.")}
    lins = {k: v for k, v in arrays.items() if not k.startswith("features.")}
    try:
        sd = _canonical(feats, lins)
    except KeyError as e:
        raise KeyError(f"{path!r}: {e.args[0]}") from None
    except ValueError as e:
        raise ValueError(f"{path!r}: {e}") from None
    return _module_from_canonical(sd, pooling, **kwargs)


# ---------------------------------------------------------------- consistency-model hook


def lpips_metric(model: LPIPS, resize: bool = True, size: int = 224) -> Callable:
    """LPIPS as the ``metric`` callable of
    :func:`diffjax.losses.consistency.consistency_distance` (``metric(a, b) -> (B,)``).

    ``a`` and ``b`` are model-space images ``(B, H, W, 3)`` in ``[-1, 1]``. With ``resize`` the
    hook follows the consistency-models reference (``KarrasDenoiser.consistency_losses``,
    ``loss_norm='lpips'``): images below 256 pixels are bilinearly upsampled to ``size`` (224)
    and mapped to ``[0, 1]`` with ``(x + 1) / 2`` -- exactly
    :func:`~diffjax.losses.consistency.lpips_preprocess` -- and fed to piq's ``LPIPS``, which
    standardises ``[0, 1]`` inputs with the ImageNet mean/std. :class:`LPIPS` takes ``[-1, 1]``
    (the lpips package's convention), so the hook maps back with ``2u - 1``; its scaling layer
    then gives ``(2u - 1 - shift) / scale = (u - mean) / std``, piq's standardisation (equal up
    to float rounding). The resize is linear and keeps constants, so resizing before or after the
    affine map is the same. Without ``resize`` the images go to the network as they are.

    What this reproduces: with ``load_lpips(path, pooling='avg')`` the reference's
    ``LPIPS(replace_pooling=True, reduction='none')((x + 1) / 2, (y + 1) / 2)`` after its
    ``F.interpolate(size=224, mode='bilinear')`` (``jax.image.resize`` equals that torch
    resize when upsampling; between 225 and 255 pixels JAX's antialiased downsampling would
    differ); with ``pooling='max'`` the lpips package's ``LPIPS(net='vgg')`` on the same inputs.
    The reference multiplies the result by the loss weighting afterwards, as
    :func:`~diffjax.losses.consistency.consistency_loss` does.

    Inside a jitted step, pass the LPIPS weights as arguments rather than closing over them
    (e.g. keep ``nnx.split(model)`` state in the train state and ``nnx.merge`` it in the loss),
    so that 59 MB of weights are not baked into the program as constants.

    Args:
      model: a loaded :class:`LPIPS`.
      resize: apply the reference's resize to ``size`` below 256 pixels.
      size: target resolution of the resize.

    Returns:
      ``metric(a, b) -> (B,)``, differentiable in both arguments.
    """
    from diffjax.losses.consistency import lpips_preprocess

    def metric(a: Array, b: Array) -> Array:
        if resize:
            a = 2.0 * lpips_preprocess(a, size) - 1.0
            b = 2.0 * lpips_preprocess(b, size) - 1.0
        return model(a, b)

    return metric
