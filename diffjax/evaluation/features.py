"""Feature spaces: named maps from uint8 image batches to the features the metrics compare.

The FID Inception (:mod:`diffjax.metrics.inception`) is the TensorFlow
``inception-2015-12-05`` graph as ported by pytorch-fid. Its preprocessing: uint8 / 255,
bilinear resize to 299 (pytorch-fid's ``align_corners=False`` path by default, ``resize='tf1'``
for the TF graph's own resize), ``2 x - 1``. Its outputs: ``pool3`` (2048-d) for FID (Heusel et
al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium")
and improved precision/recall (Kynkaanniemi et al. 2019); the 1008 ``logits`` for the Inception
Score (Salimans et al. 2016, "Improved Techniques for Training GANs"); the first 7 channels of
``mixed_6/conv`` (17x17x7 = 2023-d) for sFID (Nash et al. 2021, "Generating Images with Sparse
Representations"), as the ADM evaluator (Dhariwal & Nichol 2021) takes them.

Spaces (:func:`feature_space`), and whether their numbers can be compared to papers:

* ``'inception'``: the real FID Inception from ``inception_weights`` (a converted ``.npz``):
  comparable (pytorch-fid preprocessing; within rounding of the TF evaluators). diffjax never
  downloads the weights; :func:`diffjax.metrics.inception.load_inception` reads the converted
  file you supply.
* ``'random_init'``: the same network with seeded random (He-normal; He et al. 2015) weights:
  exercises the whole pipeline offline; numbers are **not** comparable to anything published.
* ``'pixels'``: the uint8 pixels scaled to ``[0, 1]``, flattened: a Frechet distance of the
  pixel Gaussians ("FID in pixel space"); not comparable to papers; no IS, no sFID.
* ``'digits'``: for the embedded 8x8 digits, the 10 log-odds of a logistic-regression digit
  classifier fitted on the (quantised) embedded digits (:mod:`diffjax.metrics.classifier_score`):
  FID / precision-recall in that 10-d space and the IS formula with its class probabilities.
  A cheap, honest offline figure for the quickstart; not comparable to papers.

:func:`extract_features` feeds any space: it quantises (:func:`~diffjax.evaluation.quantize`),
regroups the input into the space's batch size and pads the last batch, so a jitted network
compiles once.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffjax.evaluation.generation import Progress, quantize

__all__ = [
    "IMAGE_METRICS",
    "FEATURES",
    "FeatureSpace",
    "feature_space",
    "jax_features",
    "inception_features",
    "random_inception_variables",
    "iter_batches",
    "extract_features",
]

#: metric names for images (``pr`` gives ``precision`` and ``recall``; ``is`` gives ``is`` and
#: ``is_std``)
IMAGE_METRICS = ("fid", "is", "sfid", "pr")
#: the names :func:`feature_space` accepts
FEATURES = ("inception", "random_init", "pixels", "digits")


@dataclass
class FeatureSpace:
    """A named map from uint8 NHWC image batches to features.

    Attributes:
      name: short name, stored with cached reference features (a cache made in another space
        is refused).
      description: what the features are, for the report.
      comparable: whether FID / IS numbers in this space can be compared to papers.
      fn: ``fn(uint8 (B, H, W, C)) -> {'pool3': (B, D), 'logits'?: (B, K), 'spatial'?: (B, S)}``.
      outputs: the keys ``fn`` returns.
      batch_size: the batch :func:`extract_features` feeds ``fn`` (the last one is padded to it,
        so ``fn`` sees one shape).
    """

    name: str
    description: str
    comparable: bool
    fn: Callable[[np.ndarray], dict]
    outputs: tuple = ("pool3",)
    batch_size: int = 200

    def metrics(self) -> tuple:
        """The image metrics this space can give (``is`` needs logits, ``sfid`` spatial)."""
        out = ["fid", "pr"]
        if "logits" in self.outputs:
            out.append("is")
        if "spatial" in self.outputs:
            out.append("sfid")
        return tuple(m for m in IMAGE_METRICS if m in out)


def random_inception_variables(seed: int = 0) -> dict:
    """Seeded random variables of the FID Inception (numpy, no compile). NOT the FID weights.

    Conv / dense kernels are ``N(0, 2 / fan_in)`` (He et al. 2015, "Delving Deep into
    Rectifiers", so ReLU activations keep their scale through the 94 convolutions); BatchNorm
    is the identity (scale 1, bias 0, mean 0, var 1).

    Args:
      seed: the numpy generator's seed.

    Returns:
      The variables of :class:`diffjax.metrics.inception.InceptionV3`.
    """
    import jax

    from diffjax.metrics.inception import abstract_variables

    rng = np.random.default_rng(seed)

    def leaf(path, a):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(a.shape[:-1]))
            return (rng.standard_normal(a.shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        if name in ("scale", "var"):
            return np.ones(a.shape, np.float32)
        return np.zeros(a.shape, np.float32)

    return jax.tree_util.tree_map_with_path(leaf, abstract_variables())


def jax_features(forward: Callable, variables, *, name: str, description: str,
                 comparable: bool, outputs: tuple = ("pool3",), batch_size: int = 200,
                 mesh: Any = "auto") -> FeatureSpace:
    """A jitted JAX feature network as a :class:`FeatureSpace`.

    ``forward`` is jitted once; the variables are replicated and each batch is sharded over a
    1-D ``('data',)`` mesh when its size divides the mesh's. uint8 goes to the devices (4x
    less transfer than floats).

    Args:
      forward: ``forward(variables, uint8 (B, H, W, C)) -> {'pool3': ..., ...}``.
      variables: its variables.
      name: the space's name.
      description: the space's description.
      comparable: whether its numbers are comparable to papers.
      outputs: the keys ``forward`` returns.
      batch_size: the feature batch size.
      mesh: ``'auto'`` (all devices, when there are several), ``None`` (no sharding) or a mesh
        with a ``'data'`` axis.

    Returns:
      The feature space.
    """
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    apply = jax.jit(forward)
    if mesh == "auto":
        devices = jax.devices()
        mesh = Mesh(np.asarray(devices), ("data",)) if len(devices) > 1 else None
    if mesh is not None:
        variables = jax.device_put(variables, NamedSharding(mesh, P()))
    else:
        variables = jax.device_put(variables)

    def fn(images):
        x = np.asarray(images)
        if mesh is not None and len(x) % mesh.shape["data"] == 0:
            x = jax.device_put(x, NamedSharding(mesh, P("data")))
        return {k: np.asarray(v) for k, v in apply(variables, x).items()}

    return FeatureSpace(name, description, comparable, fn, tuple(outputs), batch_size)


def inception_features(variables, *, name: str, description: str, comparable: bool,
                       resize: str = "pytorch", input_size: int = 299, batch_size: int = 200,
                       mesh: Any = "auto") -> FeatureSpace:
    """The FID Inception as a :class:`FeatureSpace` (through :func:`jax_features`).

    uint8 in, ``/ 255``, grey repeated to RGB, bilinear resize, ``2 x - 1``; ``pool3``,
    ``logits`` and the 2023-d ``spatial`` features (the ADM evaluator's
    ``mixed_6/conv[..., :7]``, flattened) out.

    Args:
      variables: Inception variables (:func:`diffjax.metrics.inception.load_inception` or
        :func:`random_inception_variables`).
      name: the space's name.
      description: the space's description.
      comparable: whether its numbers are comparable to papers.
      resize: ``'pytorch'`` (pytorch-fid) or ``'tf1'`` (the TF graph's resize).
      input_size: the Inception input size: 299 for FID; smaller only for cheap pipeline tests.
      batch_size: the feature batch size.
      mesh: as for :func:`jax_features`.

    Returns:
      The feature space.

    Raises:
      ValueError: ``input_size`` below 75 (the Inception's smallest input).
    """
    import jax.numpy as jnp

    from diffjax.metrics.inception import InceptionV3, resize_bilinear

    if input_size < 75:
        raise ValueError(f"input_size must be >= 75 (the Inception's smallest input); got "
                         f"{input_size}")
    module = InceptionV3()

    def forward(v, x):
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"images must be (B, H, W, 1 or 3); got shape {x.shape}")
        x = x.astype(jnp.float32) / 255.0
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        x = resize_bilinear(x, input_size, resize)
        out = module.apply(v, 2.0 * x - 1.0)
        sp = out["spatial"][..., :7]  # the ADM evaluator's mixed_6/conv[..., :7]
        return {"pool3": out["pool3"], "logits": out["logits"],
                "spatial": sp.reshape(sp.shape[0], -1)}

    return jax_features(forward, variables, name=name, description=description,
                        comparable=comparable, outputs=("pool3", "logits", "spatial"),
                        batch_size=batch_size, mesh=mesh)


def _pixel_fn(images):
    x = np.asarray(images)
    return {"pool3": x.reshape(len(x), -1).astype(np.float32) / 255.0}


@functools.lru_cache(maxsize=2)
def _digit_classifier(quantize_mode: str):
    from diffjax.data.embedded import load_digits
    from diffjax.metrics.classifier_score import fit_classifier

    images, labels = load_digits()
    # fitted on the digits as the samples are seen: quantised to uint8, then back to [-1, 1]
    x = quantize(images, quantize_mode).astype(np.float32) / 127.5 - 1.0
    return fit_classifier(x, labels)


def _digits_space(quantize_mode: str, batch_size: int) -> FeatureSpace:
    clf = _digit_classifier(quantize_mode)

    def fn(images):
        x = np.asarray(images)
        if x.shape[1:] != (8, 8, 1):
            raise ValueError(f"features='digits' needs 8x8 grey images (B, 8, 8, 1); got shape "
                             f"{x.shape}")
        logits = clf.decision_function(x.reshape(len(x), -1).astype(np.float64) / 127.5 - 1.0)
        return {"pool3": logits, "logits": logits}

    return FeatureSpace(
        "digits", "digit-classifier logits (logistic regression fitted on the 1,797 embedded "
        "8x8 digits, 10-d); NOT comparable to papers", False, fn, ("pool3", "logits"),
        batch_size)


def feature_space(name: str = "inception", *, inception_weights=None, seed: int = 0,
                  resize: str = "pytorch", input_size: int = 299, batch_size: int = 200,
                  quantize_mode: str = "round", mesh: Any = "auto") -> FeatureSpace:
    """The feature space ``name`` (see the module docstring).

    Args:
      name: ``'inception'`` (needs ``inception_weights``), ``'random_init'``, ``'pixels'`` or
        ``'digits'``.
      inception_weights: path of the converted FID Inception ``.npz`` (with its ``.sha256``).
      seed: the random-init weights' seed.
      resize: Inception resize path, ``'pytorch'`` (pytorch-fid) or ``'tf1'`` (TF graph).
      input_size: Inception input size (299 for FID; smaller only for tests).
      batch_size: feature batch size.
      quantize_mode: the quantisation the digit classifier is fitted under.
      mesh: Inception sharding (``'auto'``, ``None`` or a mesh with a ``'data'`` axis).

    Returns:
      The feature space.

    Raises:
      ValueError: unknown ``name``, or ``'inception'`` without ``inception_weights`` (the message
        says how to get them and names the offline alternatives).
    """
    if name == "inception":
        if inception_weights is None:
            raise ValueError(
                "FID / IS / sFID need the FID Inception weights: set inception_weights (config "
                "key eval.inception_weights) to the converted pytorch-fid .npz (see "
                "diffjax.metrics.inception.convert_pytorch_fid_weights; diffjax never "
                "downloads). Offline alternatives whose numbers are NOT comparable to papers: "
                "features='random_init', 'pixels', or 'digits' for the embedded digits.")
        from diffjax.metrics.inception import load_inception

        net = load_inception(inception_weights)
        return inception_features(
            net.variables, name="inception", comparable=input_size == 299,
            description=f"FID Inception pool3 (pytorch-fid weights {os.fspath(inception_weights)}, "
                        f"resize {resize})", resize=resize, input_size=input_size,
            batch_size=batch_size, mesh=mesh)
    if name == "random_init":
        return inception_features(
            random_inception_variables(seed), name=f"random_init(seed={seed},size={input_size})",
            comparable=False, description=f"Inception-v3 with seeded RANDOM weights (seed {seed}, "
            f"input {input_size}px): NOT comparable to papers", resize=resize,
            input_size=input_size, batch_size=batch_size, mesh=mesh)
    if name == "pixels":
        return FeatureSpace("pixels", "raw pixels in [0, 1] (Frechet distance of pixel "
                            "Gaussians); NOT comparable to papers", False, _pixel_fn,
                            ("pool3",), batch_size)
    if name == "digits":
        return _digits_space(quantize_mode, batch_size)
    raise ValueError(f"unknown features {name!r}; expected one of {FEATURES}")


def iter_batches(images, batch_size: int) -> Iterable[np.ndarray]:
    """Image batches as numpy arrays.

    Args:
      images: an ``(N, ...)`` array (cut into batches of ``batch_size``), or an iterable of
        arrays, of ``(images, ...)`` tuples / lists or of ``{'image': ...}`` dicts (each
        yielded as it comes, whatever its size).
      batch_size: the batch size for an array input.

    Yields:
      The image batches.
    """
    if isinstance(images, np.ndarray) or hasattr(images, "__array__") and hasattr(images, "shape"):
        x = np.asarray(images)
        for s in range(0, len(x), batch_size):
            yield x[s:s + batch_size]
        return
    for b in images:
        if isinstance(b, (tuple, list)):
            b = b[0]
        elif isinstance(b, dict):
            b = b["image"]
        yield np.asarray(b)


def extract_features(images, space: FeatureSpace, *, quantize_mode: str = "round",
                     progress: bool = True, total: int | None = None) -> dict:
    """Features of all ``images`` in ``space``.

    Batches are regrouped to ``space.batch_size`` and the last one is padded with copies of its
    final image (one shape, one compile; the padding's features are dropped).

    Args:
      images: an ``(N, H, W, C)`` / ``(N, H, W)`` array or an iterable of batches (see
        :func:`iter_batches`): uint8, or floats in ``[-1, 1]`` (quantised first).
      space: the feature space.
      quantize_mode: ``'round'`` or ``'floor'`` (:func:`~diffjax.evaluation.quantize`).
      progress: print a progress line (when the total is known).
      total: the number of images, for the progress line (known for arrays).

    Returns:
      ``{'pool3': (N, D), ...}``: every output of ``space``, float64 numpy.

    Raises:
      ValueError: no images.
    """
    bs = space.batch_size
    out: dict[str, list] = {}
    pending: list[np.ndarray] = []
    count = 0
    if total is None and hasattr(images, "shape"):
        total = len(images)
    bar = Progress(total or 0, f"features ({space.name})", enabled=progress and bool(total))

    def run(chunk):
        nonlocal count
        n = len(chunk)
        if n < bs:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, axis=0)])
        for k, v in space.fn(chunk).items():
            out.setdefault(k, []).append(np.asarray(v, np.float64)[:n].reshape(n, -1))
        count += n
        bar.update(count)

    buf = 0
    for b in iter_batches(images, bs):
        b = quantize(b, quantize_mode)
        if b.ndim == 3:  # (N, H, W) grey
            b = b[..., None]
        pending.append(b)
        buf += len(b)
        while buf >= bs:
            allb = np.concatenate(pending)
            run(allb[:bs])
            pending, buf = [allb[bs:]], buf - bs
    if buf:
        run(np.concatenate(pending))
    if not count:
        raise ValueError("images is empty: no features to extract")
    return {k: np.concatenate(v) for k, v in out.items()}
