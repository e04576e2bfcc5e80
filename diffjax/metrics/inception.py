"""The FID Inception-v3 in Flax (Linen): pytorch-fid's ``InceptionV3`` / ``fid_inception_v3``.

This is the TensorFlow ``inception-2015-12-05`` graph (``classify_image_graph_def.pb``, used by
TTUR FID, tensorflow_gan and the ADM evaluator) as ported by pytorch-fid (mseitzer/pytorch-fid
``src/pytorch_fid/inception.py``), including its FID-specific blocks:

* ``FIDInceptionA`` / ``FIDInceptionC`` / ``FIDInceptionE_1``: the pool branch is a 3x3 average
  pool that does **not** count the zero padding (TF's ``AvgPool`` with SAME padding);
* ``FIDInceptionE_2`` (``Mixed_7c``): the pool branch is a 3x3 **max** pool;
* BatchNorm eps 1e-3, convs without bias, 1008 output classes, no aux classifier.

Outputs (NHWC internally): ``block0`` (64 ch, after the first max pool), ``block1`` (192 ch),
``block2`` (768 ch, ``Mixed_6e``), ``pool3`` (2048-d, the FID features), ``spatial`` (the
``mixed_6/conv`` tensor of the TF graph = ``Mixed_6d.branch1x1`` after BN+ReLU, 17x17x192 at
299 input; sFID uses its first 7 channels flattened in (h, w, c) order = 2023-d, as the ADM
evaluator does) and ``logits`` (``fc`` on pool3, 1008 classes, for the Inception Score).

Resize: pytorch-fid resizes the ``[0, 1]`` float images to 299x299 with
``F.interpolate(mode='bilinear', align_corners=False)`` (half-pixel centres, no antialias) and
then maps them to ``[-1, 1]`` with ``2x - 1``. :func:`resize_bilinear` does exactly that (as two
interpolation matrices, so it is exact and cheap), because pytorch-fid's outputs are our parity
reference and its weights are the ones loaded here. ``resize='tf1'`` instead reproduces the TF1
``ResizeBilinear`` (``align_corners=False``, ``half_pixel_centers=False``) that sits inside the
original TF graph (ADM evaluator, TTUR); FID values from the two paths differ slightly, so pin one
and report it with the number. uint8 inputs are divided by 255 first.

Weights: ``pt_inception-2015-12-05-6726825d.pth`` from the pytorch-fid release, converted once
with :func:`convert_pytorch_fid_weights` (needs torch) into an ``.npz`` (torch key names and
layouts) plus a ``.sha256`` side file; :func:`load_inception` loads that file, never downloads.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from diffjax.utils.checksum import (
    expected_sha256,
    save_npz_with_checksum,
    sha256_file,
    verify_sha256,
)

__all__ = [
    "FID_WEIGHTS_URL",
    "FID_WEIGHTS_SHA256_PREFIX",
    "InceptionV3",
    "FIDInception",
    "resize_bilinear",
    "torch_to_flax_variables",
    "flax_to_torch_state_dict",
    "torch_state_dict_shapes",
    "convert_pytorch_fid_weights",
    "load_inception",
]

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
# torch.hub convention: the hex in the file name is a prefix of the file's sha256.
FID_WEIGHTS_SHA256_PREFIX = "6726825d"

_HI = jax.lax.Precision.HIGHEST


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
    """torchvision ``BasicConv2d``: conv (no bias) + BatchNorm(eps=1e-3, running stats) + ReLU."""

    features: int
    kernel: Any = 1
    stride: int = 1
    padding: Any = 0

    @nn.compact
    def __call__(self, x):
        ph, pw = _pair(self.padding)
        x = nn.Conv(self.features, _pair(self.kernel), strides=_pair(self.stride),
                    padding=((ph, ph), (pw, pw)), use_bias=False, precision=_HI, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, momentum=0.9, name="bn")(x)
        return nn.relu(x)


def _avg3(x):  # F.avg_pool2d(k=3, s=1, p=1, count_include_pad=False)
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max3s2(x):  # F.max_pool2d(k=3, s=2)
    return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class FIDInceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(64, name="branch1x1")(x)
        b5 = BasicConv2d(48, name="branch5x5_1")(x)
        b5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, name="branch_pool")(_avg3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(384, 3, stride=2, name="branch3x3")(x)
        bd = BasicConv2d(64, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, 3, stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max3s2(x)], axis=-1)


class FIDInceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv2d(192, name="branch1x1")(x)
        b7 = BasicConv2d(c7, name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, name="branch_pool")(_avg3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1), b1


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(192, name="branch3x3_1")(x)
        b3 = BasicConv2d(320, 3, stride=2, name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, 3, stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max3s2(x)], axis=-1)


class FIDInceptionE(nn.Module):
    """``FIDInceptionE_1`` (``max_pool=False``) / ``FIDInceptionE_2`` (``max_pool=True``)."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(320, name="branch1x1")(x)
        b3 = BasicConv2d(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)],
                             axis=-1)
        bd = BasicConv2d(448, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)],
                             axis=-1)
        if self.max_pool:
            xp = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
        else:
            xp = _avg3(x)
        bp = BasicConv2d(192, name="branch_pool")(xp)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """The FID Inception on preprocessed NHWC input in ``[-1, 1]`` (any size >= 75; 299 for
    FID). Returns a dict (see the module docstring)."""

    num_classes: int = 1008

    @nn.compact
    def __call__(self, x):
        out = {}
        x = BasicConv2d(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
        x = out["block0"] = _max3s2(x)
        x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)
        x = out["block1"] = _max3s2(x)
        x = FIDInceptionA(32, name="Mixed_5b")(x)
        x = FIDInceptionA(64, name="Mixed_5c")(x)
        x = FIDInceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x, _ = FIDInceptionC(128, name="Mixed_6b")(x)
        x, _ = FIDInceptionC(160, name="Mixed_6c")(x)
        x, out["spatial"] = FIDInceptionC(160, name="Mixed_6d")(x)
        x, _ = FIDInceptionC(192, name="Mixed_6e")(x)
        out["block2"] = x
        x = InceptionD(name="Mixed_7a")(x)
        x = FIDInceptionE(False, name="Mixed_7b")(x)
        x = FIDInceptionE(True, name="Mixed_7c")(x)
        out["pool3"] = jnp.mean(x, axis=(1, 2))
        out["logits"] = nn.Dense(self.num_classes, precision=_HI, name="fc")(out["pool3"])
        return out


# ---------------------------------------------------------------- resize


@functools.lru_cache(maxsize=32)
def interp_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """``(n_out, n_in)`` bilinear interpolation weights along one axis."""
    scale = n_in / n_out
    dst = np.arange(n_out, dtype=np.float64)
    if mode == "pytorch":  # aten upsample_bilinear2d, align_corners=False
        src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    elif mode == "tf1":  # TF1 ResizeBilinear, align_corners=False, half_pixel_centers=False
        src = dst * scale
    else:
        raise ValueError(f"resize must be 'pytorch' or 'tf1'; got {mode!r}")
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - w1)
    np.add.at(m, (np.arange(n_out), i1), w1)
    return m.astype(np.float32)


def resize_bilinear(x, size: int | Sequence[int] = 299, mode: str = "pytorch"):
    """Bilinear resize of NHWC images (no antialias), ``mode`` 'pytorch' or 'tf1'."""
    oh, ow = _pair(size)
    _, h, w, _ = x.shape
    if (h, w) == (oh, ow):
        return x
    my = jnp.asarray(interp_matrix(h, oh, mode))
    mx = jnp.asarray(interp_matrix(w, ow, mode))
    return jnp.einsum("ph,bhwc,qw->bpqc", my, x, mx, precision=_HI)


# ---------------------------------------------------------------- weights


def torch_to_flax_variables(state_dict) -> dict:
    """pytorch-fid ``fid_inception_v3`` state dict (name -> array, torch layouts) to Linen
    ``{'params', 'batch_stats'}``. ``num_batches_tracked`` and ``AuxLogits.*`` are ignored;
    unknown keys raise."""
    params: dict = {}
    stats: dict = {}

    def put(tree, path, leaf, value):
        for p in path:
            tree = tree.setdefault(p, {})
        tree[leaf] = jnp.asarray(value, jnp.float32)

    for key, value in state_dict.items():
        value = np.asarray(value)
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked" or parts[0] == "AuxLogits":
            continue
        if parts[0] == "fc":
            leaf = {"weight": "kernel", "bias": "bias"}[parts[1]]
            put(params, ["fc"], leaf, value.T if leaf == "kernel" else value)
        elif len(parts) >= 3 and parts[-2] == "conv" and parts[-1] == "weight":
            put(params, parts[:-1], "kernel", value.transpose(2, 3, 1, 0))
        elif len(parts) >= 3 and parts[-2] == "bn":
            leaf = parts[-1]
            if leaf in ("weight", "bias"):
                put(params, parts[:-1], "scale" if leaf == "weight" else "bias", value)
            elif leaf in ("running_mean", "running_var"):
                put(stats, parts[:-1], "mean" if leaf == "running_mean" else "var", value)
            else:
                raise KeyError(f"unexpected Inception state-dict key {key!r}")
        else:
            raise KeyError(f"unexpected Inception state-dict key {key!r}")
    return {"params": params, "batch_stats": stats}


def flax_to_torch_state_dict(variables) -> dict:
    """Inverse of :func:`torch_to_flax_variables` (numpy arrays, torch layouts, float keys only)."""
    out = {}
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    for path, leaf in flat:
        names = [p.key for p in path]
        mod, leaf_name = names[1:-1], names[-1]
        a = np.asarray(leaf)
        if mod == ["fc"]:
            out["fc." + ("weight" if leaf_name == "kernel" else "bias")] = (
                a.T if leaf_name == "kernel" else a)
        elif leaf_name == "kernel":
            out[".".join(mod) + ".weight"] = a.transpose(3, 2, 0, 1)
        else:
            name = {"scale": "weight", "bias": "bias", "mean": "running_mean",
                    "var": "running_var"}[leaf_name]
            out[".".join(mod) + "." + name] = a
    return out


@functools.lru_cache(maxsize=1)
def abstract_variables():
    x = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
    return jax.eval_shape(InceptionV3().init, jax.random.key(0), x)


def torch_state_dict_shapes() -> dict:
    """``{torch key: shape}`` of the float tensors in pytorch-fid's state dict."""
    shapes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_variables())[0]:
        names = [p.key for p in path]
        mod, leaf_name = names[1:-1], names[-1]
        s = tuple(leaf.shape)
        if mod == ["fc"]:
            shapes["fc." + ("weight" if leaf_name == "kernel" else "bias")] = (
                s[::-1] if leaf_name == "kernel" else s)
        elif leaf_name == "kernel":
            shapes[".".join(mod) + ".weight"] = (s[3], s[2], s[0], s[1])
        else:
            name = {"scale": "weight", "bias": "bias", "mean": "running_mean",
                    "var": "running_var"}[leaf_name]
            shapes[".".join(mod) + "." + name] = s
    return shapes


def _check_complete(state_dict):
    expected = torch_state_dict_shapes()
    got = {k: tuple(np.shape(v)) for k, v in state_dict.items()
           if not k.endswith("num_batches_tracked") and not k.startswith("AuxLogits.")}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    bad = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or extra or bad:
        raise ValueError("not a pytorch-fid FID Inception state dict: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {extra[:5]}, wrong shapes "
                         f"{[(k, got[k], expected[k]) for k in bad[:5]]}")


def _read_pth(path):
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading a .pth file needs torch; convert it once where torch is "
                          "installed with convert_pytorch_fid_weights()") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def convert_pytorch_fid_weights(pth_path, npz_path, check_hash: bool = True) -> str:
    """Convert ``pt_inception-2015-12-05-6726825d.pth`` (needs torch) to ``npz_path`` (torch
    names and layouts, float32) and write ``npz_path + '.sha256'``; returns the npz's sha256.
    With ``check_hash`` the .pth's sha256 must start with ``6726825d`` (the torch.hub
    convention of the released file name)."""
    pth_path, npz_path = os.fspath(pth_path), os.fspath(npz_path)
    if not os.path.exists(pth_path):
        raise FileNotFoundError(_missing_message(pth_path))
    if check_hash:
        digest = sha256_file(pth_path)
        if not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
            raise ValueError(f"{pth_path!r} has sha256 {digest}, expected prefix "
                             f"{FID_WEIGHTS_SHA256_PREFIX} (pt_inception-2015-12-05); pass "
                             "check_hash=False for other weights")
    sd = _read_pth(pth_path)
    _check_complete(sd)
    arrays = {k: np.asarray(v, np.float32) for k, v in sd.items()
              if not k.endswith("num_batches_tracked")}
    digest = save_npz_with_checksum(npz_path, arrays)
    return digest


def _missing_message(path):
    return (
        f"FID Inception weights not found at {path!r}. diffjax never downloads them. Get the "
        f"pytorch-fid weights (TF inception-2015-12-05 ported to PyTorch) from\n  "
        f"{FID_WEIGHTS_URL}\nthen convert once (needs torch):\n  python -c \"from "
        "diffjax.metrics.inception import convert_pytorch_fid_weights as c; "
        "print(c('pt_inception-2015-12-05-6726825d.pth', 'fid_inception.npz'))\"\n"
        "and pass the .npz path (its sha256 is written next to it as .sha256).")


class FIDInception:
    """Jitted FID Inception with preprocessing. Call with NHWC (or ``layout='NCHW'``) images,
    float in ``[0, 1]`` or uint8; returns the dict of :class:`InceptionV3` outputs (float32)."""

    def __init__(self, variables, resize: str | None = "pytorch", layout: str = "NHWC"):
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be 'NHWC' or 'NCHW'; got {layout!r}")
        self.variables = variables
        self.resize = resize
        self.layout = layout
        self.module = InceptionV3()
        self._apply = jax.jit(self._forward)

    def _forward(self, variables, x):
        if self.resize is not None:
            x = resize_bilinear(x, 299, self.resize)
        x = 2.0 * x - 1.0
        return self.module.apply(variables, x)

    def preprocess(self, images):
        x = np.asarray(images)
        if x.ndim != 4:
            raise ValueError(f"images must be 4-D ({self.layout}); got shape {x.shape}")
        if self.layout == "NCHW":
            x = x.transpose(0, 2, 3, 1)
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        if x.shape[-1] != 3:
            raise ValueError(f"images need 1 or 3 channels; got shape {x.shape}")
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        return jnp.asarray(x, jnp.float32)

    def __call__(self, images) -> dict:
        return self._apply(self.variables, self.preprocess(images))

    def pool3(self, images) -> np.ndarray:
        return np.asarray(self(images)["pool3"])

    def features(self, images) -> dict:
        """numpy ``pool3`` (B, 2048), ``spatial`` (B, 2023: sFID), ``logits`` (B, 1008)."""
        out = self(images)
        sp = out["spatial"][..., :7]
        return {"pool3": np.asarray(out["pool3"]),
                "spatial": np.asarray(sp).reshape(sp.shape[0], -1),
                "logits": np.asarray(out["logits"])}


def load_inception(path, sha256: str | None = None, **kwargs) -> FIDInception:
    """Load the converted FID Inception weights from a local ``.npz`` (or a ``.pth`` if torch
    is installed). The checksum is checked against ``sha256`` if given, else against the
    ``.sha256`` side file written by :func:`convert_pytorch_fid_weights` if present. ``kwargs``
    go to :class:`FIDInception` (``resize``, ``layout``)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(_missing_message(path))
    expected = expected_sha256(path, sha256)
    if path.endswith(".pth") or path.endswith(".pt"):
        if expected is None:
            expected_prefix = FID_WEIGHTS_SHA256_PREFIX
            got = sha256_file(path)
            if not got.startswith(expected_prefix):
                raise ValueError(f"{path!r}: sha256 {got} lacks prefix {expected_prefix}")
        sd = _read_pth(path)
    else:
        sd = None
    verify_sha256(path, expected)
    if sd is None:
        with np.load(path) as z:
            sd = {k: z[k] for k in z.files}
    _check_complete(sd)
    return FIDInception(torch_to_flax_variables(sd), **kwargs)
