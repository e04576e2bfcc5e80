"""Random-access data sources: arrays, TFDS, image folders, pre-extracted latents.

A *source* is anything with ``__len__`` and ``__getitem__(i) -> dict`` (grain's
``RandomAccessDataSource`` protocol): ``record['image']`` is one example (an ``(H, W, C)``
image, a ``(2,)`` toy point or an ``(h, w, c)`` latent) and ``record['label']``, when present,
its integer class. Sources return raw examples (``uint8`` pixels for image sources); scaling,
cropping and flips are per-record transforms of :mod:`diffjax.data.pipeline`.

Nothing here downloads. :class:`TFDSSource` reads a data set already prepared in the TFDS
``array_record`` format through ``tfds.data_source`` (which needs no TensorFlow); when the data
set is not there it raises an error that says how to prepare it on a machine with network.

:func:`get_source` picks a source from a name or path:

====================================  ================================================
``'digits'``, ``'faces'``             embedded sets (:mod:`diffjax.data.embedded`)
``'toy:<name>'``                      2-D toy sets (:mod:`diffjax.data.toy`)
``'mnist'``, ``'cifar10'``, ...       TFDS (:data:`TFDS_NAMES`, ``lsun/<category>`` etc.)
``'tfds:<any name>'``                 any TFDS data set
a folder                              :class:`ImageFolderSource` (or latents if it holds
                                      only ``.npy``/``.npz`` files; a latent folder of
                                      ``python -m diffjax encode``:
                                      :class:`diffjax.data.latents.LatentShardsSource`)
a ``.npz`` / ``.npy`` file            :class:`LatentsSource`
====================================  ================================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "DataSource",
    "ArraySource",
    "TFDSSource",
    "ImageFolderSource",
    "ResizedSource",
    "LatentsSource",
    "get_source",
    "read_image",
    "TFDS_NAMES",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

#: image folders up to this many files are fully decoded when checked (``check='auto'``)
DECODE_CHECK_MAX = 20_000

#: TFDS names (or families, before a ``/``) that :func:`get_source` accepts without the
#: ``tfds:`` prefix.
TFDS_NAMES = (
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "stl10",
    "celeb_a",
    "celeb_a_hq",
    "imagenet2012",
    "imagenet_resized",
    "downsampled_imagenet",
    "lsun",
    "oxford_flowers102",
)


@runtime_checkable
class DataSource(Protocol):
    """Random access to examples: ``len(src)`` and ``src[i] -> {'image': ..., 'label'?: ...}``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def _as_index(index, n: int) -> int:
    i = int(index)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {index} out of range for a source of {n} records")
    return i


class ArraySource:
    """A source over in-memory (or memory-mapped) arrays.

    Args:
        images: Examples, shape ``(N, ...)`` (images ``(N, H, W, C)``, toy points ``(N, 2)``).
        labels: Optional integer labels ``(N,)``.

    Attributes:
        images: The examples.
        labels: The labels (``int32``) or ``None``.
        num_classes: ``max(labels) + 1`` or ``None``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None):
        self.images = np.asarray(images) if not isinstance(images, np.memmap) else images
        if self.images.ndim < 1 or self.images.shape[0] == 0:
            raise ValueError(f"ArraySource: images must be a non-empty (N, ...) array; got "
                             f"shape {self.images.shape}")
        self.labels = None
        self.num_classes = None
        if labels is not None:
            self.labels = np.asarray(labels).astype(np.int32).reshape(-1)
            if self.labels.shape[0] != self.images.shape[0]:
                raise ValueError(f"ArraySource: {self.images.shape[0]} images but "
                                 f"{self.labels.shape[0]} labels")
            self.num_classes = int(self.labels.max()) + 1

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index) -> dict[str, Any]:
        i = _as_index(index, len(self))
        rec = {"image": np.asarray(self.images[i])}
        if self.labels is not None:
            rec["label"] = self.labels[i]
        return rec

    def __repr__(self) -> str:
        return (f"ArraySource(n={len(self)}, example_shape={self.images.shape[1:]}, "
                f"dtype={self.images.dtype}, labels={self.labels is not None})")


# --------------------------------------------------------------------------- TFDS


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "TFDS sources need tensorflow-datasets (no TensorFlow needed for "
            "`tfds.data_source`): `pip install tensorflow-datasets`."
        ) from e
    return tfds


class TFDSSource:
    """A TFDS data set read with ``tfds.data_source`` (random access, no TensorFlow).

    The data set must already be prepared in ``array_record`` format under ``data_dir``
    (default ``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``): nothing downloads here. Works
    inside ``tfds.testing.mock_data`` (random pixels) for tests.

    Args:
        name: TFDS name, optionally with config and version (``'lsun/church_outdoor'``,
            ``'cifar10:3.0.2'``).
        split: TFDS split string (``'train'``, ``'test'``, ``'train[:90%]'``...).
        data_dir: Folder holding prepared TFDS data sets.
        image_key: Feature holding the image; ``None`` picks ``'image'`` if it is an
            ``Image`` feature, else the first ``Image`` feature.
        label_key: Feature holding the class; ``'auto'`` uses ``'label'`` when it is a
            ``ClassLabel`` and no label otherwise; ``None`` never returns labels.

    Attributes:
        image_key, label_key: The keys used.
        num_classes: Number of classes of the label feature, or ``None``.
        info: The ``tfds.core.DatasetInfo``.

    Raises:
        ValueError: TFDS has no data set of that name, or no image feature.
        FileNotFoundError: The data set (or split) is not prepared in ``data_dir``; the message
            names the data set and says how to prepare it.
    """

    def __init__(
        self,
        name: str,
        split: str = "train",
        *,
        data_dir: str | os.PathLike | None = None,
        image_key: str | None = None,
        label_key: str | None = "auto",
    ):
        self.name, self.split = name, split
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self._requested = (image_key, label_key)
        self._ds = self._open()
        self.info = getattr(self._ds, "dataset_info", None)
        features = dict(self.info.features.items()) if self.info is not None else {}
        tfds = _import_tfds()
        if image_key is None:
            images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
            if not images:
                raise ValueError(f"TFDSSource: data set name={name!r} has no Image feature "
                                 f"(features: {sorted(features)}); pass image_key=")
            image_key = "image" if "image" in images else images[0]
        elif features and image_key not in features:
            raise ValueError(f"TFDSSource: image_key={image_key!r} is not a feature of "
                             f"{name!r} (features: {sorted(features)})")
        if label_key == "auto":
            f = features.get("label")
            label_key = "label" if isinstance(f, tfds.features.ClassLabel) else None
        elif label_key is not None and features and label_key not in features:
            raise ValueError(f"TFDSSource: label_key={label_key!r} is not a feature of "
                             f"{name!r} (features: {sorted(features)})")
        self.image_key, self.label_key = image_key, label_key
        lf = features.get(label_key) if label_key else None
        self.num_classes = getattr(lf, "num_classes", None)

    def _open(self):
        tfds = _import_tfds()
        try:
            return tfds.data_source(self.name, split=self.split, data_dir=self.data_dir,
                                    download=False)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(
                f"TFDS has no data set name={self.name!r} (see `tfds.list_builders()`); "
                f"diffjax's short names are {list(TFDS_NAMES)}."
            ) from e
        except Exception as e:  # not prepared, wrong format, unknown split...
            where = self.data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
            found = ""
            try:
                path = tfds.builder(self.name, data_dir=self.data_dir).data_path
                if path.exists() and any(path.iterdir()):
                    found = (f" A copy exists at {os.fspath(path)!r} but cannot be read with "
                             f"random access (it must be in array_record format) or lacks "
                             f"this split.")
            except Exception:  # the hint is best-effort
                pass
            raise FileNotFoundError(
                f"TFDS data set {self.name!r} (split {self.split!r}) is not available in "
                f"data_dir={where!r}, and diffjax never downloads at run time.{found} "
                f"Prepare it on a "
                f"machine with network, in random-access format:\n"
                f"    tfds build {self.name} --file_format=array_record --data_dir=<dir>\n"
                f"(or `tfds.data_source({self.name!r}, data_dir=<dir>)` there, or a manual "
                f"download for data sets such as imagenet2012), then copy <dir> here and pass "
                f"data_dir=<dir> (or set TFDS_DATA_DIR). Cause: {type(e).__name__}: {e}"
            ) from e

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, index) -> dict[str, Any]:
        i = _as_index(index, len(self))
        rec = self._ds[i]
        out = {"image": np.asarray(rec[self.image_key])}
        if self.label_key is not None:
            out["label"] = np.int32(rec[self.label_key])
        return out

    # Worker processes get a pickled copy: reopen the data source there.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ds"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._ds = self._open()

    def __repr__(self) -> str:
        return (f"TFDSSource(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_key={self.image_key!r}, label_key={self.label_key!r})")


# --------------------------------------------------------------------------- image files

#: Pillow modes of wide integer grey images (16-bit grey PNGs open as one of these)
_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
#: Pillow modes read as grey / as colour (alpha, if any, is dropped)
_GREY_MODES = ("1", "L", "LA", "La")
_COLOUR_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")


def _to_array(im, channels: int | None) -> np.ndarray:
    """A decoded Pillow image as ``uint8`` ``(H, W, C)`` (the rules of :func:`read_image`)."""
    from PIL import Image

    if im.mode in _WIDE_GREY_MODES:  # keep the high byte of each 16-bit value
        wide = np.clip(np.asarray(im).astype(np.int64), 0, 65535) >> 8
        im = Image.fromarray(wide.astype(np.uint8))
    elif im.mode in ("P", "PA"):  # palette indices -> colours (via RGBA if transparent)
        transparent = im.mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if transparent else "RGB")
    if im.mode in _GREY_MODES:
        stored = "L"
    elif im.mode in _COLOUR_MODES:
        stored = "RGB"
    else:
        raise ValueError(f"image mode {im.mode!r} is not supported (expected 8-bit grey, "
                         "palette or colour, or 16-bit grey)")
    target = {None: stored, 1: "L", 3: "RGB"}[channels]
    if im.mode != target:  # drops alpha; RGB -> L is ITU-R 601-2 luma; L -> RGB repeats grey
        im = im.convert(target)
    arr = np.asarray(im, dtype=np.uint8)
    return np.ascontiguousarray(arr[..., None] if arr.ndim == 2 else arr)


def read_image(path: str | os.PathLike, *, channels: int | None = 3) -> np.ndarray:
    """Reads a PNG or JPEG file (or any 8-bit image Pillow decodes) as ``uint8`` ``(H, W, C)``.

    Decoding is Pillow's (``PIL.Image.open``); the conversion is explicit:

    * alpha (``RGBA``, grey+alpha ``LA``, transparent palettes) is **dropped**, not
      composited: transparent pixels keep the colour stored under them, as torchvision's
      ``ImageFolder`` loader (``img.convert('RGB')``) does;
    * palette images (``P``) are expanded to their RGB colours;
    * 16-bit grey keeps the high byte of each value (``v >> 8``); bilevel (``1``) images
      become 0 / 255; CMYK and YCbCr JPEGs are converted to RGB;
    * ``channels=3`` repeats grey into RGB; ``channels=1`` turns colour into grey with the
      ITU-R 601-2 luma ``L = 0.299 R + 0.587 G + 0.114 B`` (Pillow's ``'L'``); ``None`` keeps
      grey (1 channel) or colour (3 channels) as stored.

    Args:
        path: File path.
        channels: 3 (RGB), 1 (grey) or ``None`` (as stored, without alpha).

    Returns:
        ``uint8`` array ``(H, W, channels)`` (``channels`` 1 or 3 when ``None``).

    Raises:
        FileNotFoundError: No such file.
        ValueError: ``channels`` not 1, 3 or ``None``; or the file cannot be decoded as an
            image (not an image, truncated, an unsupported mode): the message names the path.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None; got {channels!r}")
    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so that a truncated file fails here
            return _to_array(im, channels)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode the image file {path!r}: expected a PNG or JPEG image "
                         f"({type(e).__name__}: {e})") from e


def _inspect(path: str, *, decode: bool) -> tuple[int, int] | str:
    """``(height, width)`` of an image file from its header (or a full decode), or the reason
    it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if decode:
                im.load()
            return im.size[1], im.size[0]
    except Exception as e:  # noqa: BLE001 -- any failure makes the file unreadable; say why
        return f"{type(e).__name__}: {e}"


def _images_under(folder: Path, extensions: Sequence[str]) -> list[Path]:
    ext = tuple(e.lower() for e in extensions)
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in ext
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


class ImageFolderSource:
    """Images in a folder tree, optionally one sub-folder per class.

    Layouts:

    * ``root/<class>/.../*.png`` : labelled; classes are the sub-folders that contain images,
      sorted by name, labelled 0, 1, ... in that order (as torchvision's ``ImageFolder``);
    * ``root/*.png`` with no image sub-folders: unlabelled.

    Files and folders whose name starts with ``.`` are skipped. Images are decoded on access
    by :func:`read_image` (Pillow; alpha dropped); a file that cannot be decoded raises a
    ``ValueError`` naming it when its record is read.

    Every file is checked when the source is built, before any training starts: ``check='header'``
    opens each file's header (format, size and mode: cheap, no pixel decoding, a few
    thread-parallel milliseconds per thousand files), ``'decode'`` decodes every file in full
    (also finds truncated files; costs one pass over the data), ``'none'`` trusts the folder;
    ``'auto'`` (default) decodes folders of up to :data:`DECODE_CHECK_MAX` files (seconds)
    and reads only the headers of larger ones.
    Unreadable files are rejected with the list (``on_error='raise'``) or left out with a
    count (``on_error='skip'``; :attr:`skipped`). With ``same_size=True`` every image must have
    the same height and width (whatever order the odd ones come in); a folder of mixed sizes
    needs a resize (``data.image_size`` in a config: centre crop to the aspect ratio, then
    antialiased bicubic, as ADM's preprocessing), and the source is then built with
    ``same_size=False``.

    Args:
        root: The folder.
        channels: 3 (RGB, default), 1 (grey) or ``None`` (as stored, without alpha).
        extensions: File suffixes to read (case-insensitive).
        check: ``'auto'``, ``'header'``, ``'decode'`` or ``'none'`` (above).
        on_error: ``'raise'`` or ``'skip'`` unreadable files.
        same_size: Require one image size.

    Attributes:
        paths: The image files, in index order.
        labels: ``int32`` labels or ``None``.
        class_names: Sorted class folder names (label ``k`` is ``class_names[k]``), or ``[]``.
        num_classes: ``len(class_names)`` or ``None``.
        sizes: ``{(height, width): count}`` of the checked images (``{}`` with ``'none'``).
        skipped: ``[(path, reason)]`` of the files left out by ``on_error='skip'``.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or it holds no (readable) image.
        ValueError: Images both at the top level and in class sub-folders; unreadable files
            with ``on_error='raise'`` (the message lists them); mixed sizes with
            ``same_size=True`` (the message gives each size's count and files of the rarer
            sizes); a bad ``check`` / ``on_error`` / ``channels``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        channels: int | None = 3,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        check: str = "auto",
        on_error: str = "raise",
        same_size: bool = True,
    ):
        if check not in ("auto", "header", "decode", "none"):
            raise ValueError(f"ImageFolderSource: check={check!r}; expected 'auto', 'header', "
                             "'decode' or 'none'")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"ImageFolderSource: on_error={on_error!r}; expected 'raise' or "
                             "'skip'")
        if channels not in (None, 1, 3):
            raise ValueError(f"ImageFolderSource: channels={channels!r}; expected 1, 3 or None")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolderSource: root={os.fspath(root)!r} is not an "
                                    f"existing folder")
        ext = tuple(e.lower() for e in extensions)
        top = sorted(p for p in self.root.iterdir()
                     if p.is_file() and p.suffix.lower() in ext and not p.name.startswith("."))
        classes = []
        for d in sorted(p for p in self.root.iterdir()
                        if p.is_dir() and not p.name.startswith(".")):
            files = _images_under(d, ext)
            if files:
                classes.append((d.name, files))
        if classes and top:
            raise ValueError(
                f"ImageFolderSource: root={os.fspath(root)!r} has images both at the top level "
                f"({len(top)}) and in class sub-folders ({[c for c, _ in classes]}); use one layout"
            )
        if classes:
            self.class_names = [c for c, _ in classes]
            self.paths = [str(p) for _, files in classes for p in files]
            self.labels = np.concatenate(
                [np.full(len(files), k, np.int32) for k, (_, files) in enumerate(classes)])
            self.num_classes = len(classes)
        else:
            self.class_names, self.labels, self.num_classes = [], None, None
            self.paths = [str(p) for p in top]
        if not self.paths:
            raise FileNotFoundError(f"ImageFolderSource: no image files {list(ext)} under "
                                    f"root={os.fspath(root)!r}")
        self.channels = channels
        self.sizes, self.skipped = {}, []
        if check == "auto":
            check = "decode" if len(self.paths) <= DECODE_CHECK_MAX else "header"
        if check != "none":
            self._check_files(check, on_error, same_size)

    def _check_files(self, check: str, on_error: str, same_size: bool) -> None:
        """Open (or decode) every file once; reject or drop the unreadable; check sizes."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 4)) as pool:
            infos = list(pool.map(lambda p: _inspect(p, decode=check == "decode"), self.paths))
        bad = [(p, info) for p, info in zip(self.paths, infos, strict=True)
               if isinstance(info, str)]
        where = f"ImageFolderSource(root={os.fspath(self.root)!r})"
        if bad and on_error == "raise":
            listed = "; ".join(f"{p}: {why}" for p, why in bad[:10])
            more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
            raise ValueError(f"{where}: {len(bad)} of {len(self.paths)} files cannot be read as "
                             f"images: {listed}{more}. Fix or remove them, or set "
                             "on_error='skip' (config: data.on_error=skip) to leave them out")
        if bad:
            keep = np.array([not isinstance(i, str) for i in infos])
            self.skipped = bad
            self.paths = [p for p, k in zip(self.paths, keep, strict=True) if k]
            if self.labels is not None:
                self.labels = self.labels[keep]
            infos = [i for i in infos if not isinstance(i, str)]
            print(f"{where}: skipped {len(bad)} unreadable file(s) of "
                  f"{len(bad) + len(self.paths)} (first: {bad[0][0]}: {bad[0][1]})", flush=True)
            if not self.paths:
                raise FileNotFoundError(f"{where}: no readable image left")
        for hw in infos:
            self.sizes[hw] = self.sizes.get(hw, 0) + 1
        if same_size and len(self.sizes) > 1:
            common = max(self.sizes, key=self.sizes.get)
            odd = [p for p, hw in zip(self.paths, infos, strict=True) if hw != common][:5]
            counts = ", ".join(f"{h}x{w}: {n}" for (h, w), n in
                               sorted(self.sizes.items(), key=lambda kv: -kv[1]))
            raise ValueError(f"{where}: images of {len(self.sizes)} sizes (height x width: "
                             f"{counts}), e.g. {odd}; expected one size. Set an image size "
                             "(config: data.image_size=N) to centre-crop and resize every "
                             "image to N x N")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> dict[str, Any]:
        i = _as_index(index, len(self))
        try:
            rec = {"image": read_image(self.paths[i], channels=self.channels)}
        except (ValueError, FileNotFoundError) as e:
            raise type(e)(f"ImageFolderSource(root={os.fspath(self.root)!r}), record {i}: "
                          f"{e}") from e
        if self.labels is not None:
            rec["label"] = self.labels[i]
        return rec

    def __repr__(self) -> str:
        # No absolute path: grain checks repr(source) on resume, and data may move hosts.
        return (f"ImageFolderSource(folder={self.root.name!r}, n={len(self)}, "
                f"classes={self.class_names})")


class ResizedSource:
    """A source whose images are centre-cropped to the aspect ratio of ``size`` and resized.

    ADM's preprocessing of training images (Dhariwal & Nichol 2021): the largest centred crop
    with the target aspect ratio, then an antialiased resize (``'cubic'`` by default; see
    :func:`diffjax.data.preprocess.center_crop_resize`). ``uint8`` stays ``uint8``. Applied on
    access, so training batches and evaluation references read the same pixels.

    Args:
        source: Any source whose ``record['image']`` is ``(H, W, C)``.
        size: Output side ``s`` or ``(h, w)``.
        method: Resize method of :func:`diffjax.data.preprocess.resize`.
    """

    def __init__(self, source, size: int | tuple[int, int], *, method: str = "cubic"):
        from diffjax.data import preprocess

        if method not in preprocess.RESIZE_METHODS:
            raise ValueError(f"ResizedSource: method={method!r}; expected one of "
                             f"{sorted(preprocess.RESIZE_METHODS)}")
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or not all(isinstance(v, int) and v >= 1 for v in hw):
            raise ValueError(f"ResizedSource: size={size!r}; expected an integer >= 1 or a "
                             "(height, width) pair of them")
        self.source, self.size, self.method = source, hw, method
        for name in ("labels", "num_classes", "class_names"):
            if hasattr(source, name):
                setattr(self, name, getattr(source, name))

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index) -> dict[str, Any]:
        from diffjax.data.preprocess import center_crop_resize

        rec = dict(self.source[index])
        rec["image"] = center_crop_resize(rec["image"], self.size, method=self.method)
        return rec

    def __repr__(self) -> str:
        return f"ResizedSource({self.source!r}, size={self.size}, method={self.method!r})"


# --------------------------------------------------------------------------- latents


class LatentsSource:
    """Pre-extracted latents (e.g. VAE encodings) from ``.npy`` / ``.npz`` files.

    ``.npz`` files hold ``latents_key`` (default ``'latents'``; a file with a single array
    uses it whatever its name) and optionally ``labels_key`` (default ``'labels'``). ``.npy``
    files hold latents only (memory-mapped when there is one file); labels may come from the
    ``labels`` argument. Several files (a list, or a folder of ``*.npz`` / ``*.npy`` shards
    in sorted order) are concatenated.

    Records are ``{'image': float32 (h, w, c), 'label': int32}``: the key is ``'image'`` so
    that latents flow through the same pipeline and losses as pixels. Normalise with
    :func:`diffjax.data.preprocess.latent_channel_stats` (or :meth:`channel_stats`) and the
    pipeline's ``NormalizeLatents`` transform.

    Args:
        path: A file, a folder of shards, or a list of files.
        latents_key: Array name in ``.npz`` files.
        labels_key: Labels' name in ``.npz`` files.
        labels: Labels ``(N,)`` (array or ``.npy`` path) overriding those in the files.
        channels_first: The stored latents are ``(N, C, h, w)`` (as PyTorch pipelines save
            them); they are served channels-last.

    Attributes:
        latents: ``(N, h, w, c)`` channels-last array (a view when ``channels_first``).
        labels: ``int32`` labels or ``None``.
        num_classes: ``max(labels) + 1`` or ``None``.

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no ``.npy``/``.npz`` file.
        KeyError: An ``.npz`` file lacks ``latents_key``.
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        latents_key: str = "latents",
        labels_key: str = "labels",
        labels: np.ndarray | str | os.PathLike | None = None,
        channels_first: bool = False,
    ):
        if isinstance(path, str | os.PathLike):
            p = Path(path).expanduser()
            if p.is_dir():
                files = sorted(q for q in p.iterdir() if q.suffix in (".npy", ".npz"))
                if not files:
                    raise FileNotFoundError(f"LatentsSource: no .npy/.npz files in "
                                            f"path={os.fspath(path)!r}")
            elif p.is_file():
                files = [p]
            else:
                raise FileNotFoundError(f"LatentsSource: path={os.fspath(path)!r} does not exist")
        else:
            files = [Path(q).expanduser() for q in path]
            for q in files:
                if not q.is_file():
                    raise FileNotFoundError(f"LatentsSource: file {os.fspath(q)!r} does not exist")
        lats, labs = [], []
        for f in files:
            if f.suffix == ".npy":
                lats.append(np.load(f, mmap_mode="r" if len(files) == 1 else None))
                labs.append(None)
            else:
                with np.load(f) as z:
                    if latents_key in z.files:
                        lats.append(z[latents_key])
                    elif len(z.files) == 1:
                        lats.append(z[z.files[0]])
                    else:
                        raise KeyError(f"LatentsSource: {os.fspath(f)!r} has no array "
                                       f"latents_key={latents_key!r} (arrays: {z.files})")
                    labs.append(z[labels_key] if labels_key in z.files else None)
        lat = lats[0] if len(lats) == 1 else np.concatenate(lats, axis=0)
        self.latents = np.moveaxis(lat, 1, -1) if channels_first else lat
        if labels is not None:
            lab = np.load(labels) if isinstance(labels, str | os.PathLike) else labels
        elif all(x is not None for x in labs):
            lab = np.concatenate(labs)
        else:
            lab = None
        self.labels = None if lab is None else np.asarray(lab).astype(np.int32).reshape(-1)
        if self.labels is not None and self.labels.shape[0] != self.latents.shape[0]:
            raise ValueError(f"LatentsSource: {self.latents.shape[0]} latents but "
                             f"{self.labels.shape[0]} labels")
        self.num_classes = None if self.labels is None else int(self.labels.max()) + 1
        self.files = [str(f) for f in files]

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def __getitem__(self, index) -> dict[str, Any]:
        i = _as_index(index, len(self))
        rec = {"image": np.asarray(self.latents[i], np.float32)}
        if self.labels is not None:
            rec["label"] = self.labels[i]
        return rec

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(mean, std)`` over ``(N, h, w)`` (see ``latent_channel_stats``)."""
        from diffjax.data.preprocess import latent_channel_stats

        return latent_channel_stats(self.latents)

    def __repr__(self) -> str:
        return (f"LatentsSource(n={len(self)}, latent_shape={self.latents.shape[1:]}, "
                f"labels={self.labels is not None}, files={len(self.files)})")


# --------------------------------------------------------------------------- dispatch


def _embedded_split(name: str, split: str) -> None:
    if split not in ("train", "all"):
        raise ValueError(f"the embedded set {name!r} has a single split; use split='train' "
                         f"(or 'all'), not split={split!r}")


def _looks_like_path(s: str) -> bool:
    return (s.startswith(("/", ".", "~")) or os.sep in s or "\\" in s
            or s.lower().endswith((".npz", ".npy")))


def get_source(name_or_path: str | os.PathLike, split: str = "train", **kwargs) -> DataSource:
    """Builds a source from a data set name or a path (see the module docstring's table).

    Args:
        name_or_path: ``'digits'``, ``'faces'``, ``'toy:<name>'``, a TFDS name from
            :data:`TFDS_NAMES` (``'lsun/<category>'`` style names included), ``'tfds:<name>'``,
            an image folder, a latents folder, or a ``.npz`` / ``.npy`` file.
        split: Split. TFDS: any TFDS split string. Embedded sets: ``'train'`` (everything).
            Toy sets: ``'train'`` draws with ``seed``, any other split with ``seed + 1``.
            Names are matched before paths: write ``'./mnist'`` for a folder called ``mnist``.
        **kwargs: Passed on: ``TFDSSource`` (``data_dir``, ``image_key``, ``label_key``),
            ``ImageFolderSource`` (``channels``, ``extensions``),
            ``LatentsSource`` (``latents_key``, ``labels_key``, ``labels``,
            ``channels_first``), toy sets (``num_samples`` default 100,000, ``seed`` default 0,
            and the set's own keywords).

    Returns:
        A source.

    Raises:
        ValueError: Unknown name (the message lists the valid choices).
        FileNotFoundError: A path that does not exist, or an unprepared TFDS data set.
    """
    from diffjax.data import embedded, toy

    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    s = str(name_or_path)
    p = Path(s).expanduser()
    if s == "digits":
        _embedded_split(s, split)
        return ArraySource(*embedded.load_digits(**kwargs))
    if s == "faces":
        _embedded_split(s, split)
        return ArraySource(*embedded.load_faces(**kwargs))
    if s.startswith("toy:"):
        name = s[4:]
        n = int(kwargs.pop("num_samples", 100_000))
        seed = int(kwargs.pop("seed", 0)) + (0 if split == "train" else 1)
        return ArraySource(toy.sample_toy(name, n, seed=seed, **kwargs))
    if s.startswith("video:"):  # clips (F, H, W, C): diffjax.data.video
        from diffjax.data import video

        if s == "video:moving_shapes":
            n = int(kwargs.pop("num_samples", 2048))
            seed = int(kwargs.pop("seed", 0)) + (0 if split == "train" else 1)
            return ArraySource(video.moving_shapes(n, seed=seed, **kwargs)["videos"])
        return video.TFDSVideoSource(s[6:], split, **kwargs)
    if s.startswith("tfds:"):
        return TFDSSource(s[5:], split, **kwargs)
    if s.split("/")[0].split(":")[0] in TFDS_NAMES:
        return TFDSSource(s, split, **kwargs)
    if p.is_file():
        if p.suffix not in (".npy", ".npz"):
            raise ValueError(f"get_source: name_or_path={s!r} is a file, but only .npz/.npy "
                             f"latent files (and folders) are sources")
        return LatentsSource(p, **kwargs)
    if p.is_dir():
        from diffjax.data.latents import LatentShardsSource, is_latent_folder

        if is_latent_folder(p):  # written by `python -m diffjax encode`
            return LatentShardsSource(p, **kwargs)
        entries = list(p.iterdir())
        has_images = any(q.is_dir() or q.suffix.lower() in IMAGE_EXTENSIONS for q in entries)
        if not has_images and any(q.suffix in (".npy", ".npz") for q in entries):
            return LatentsSource(p, **kwargs)
        return ImageFolderSource(p, **kwargs)
    if _looks_like_path(s):
        raise FileNotFoundError(f"get_source: name_or_path={s!r} looks like a path but does not "
                                f"exist (expected an image folder, a latents folder or a "
                                f".npz/.npy file)")
    choices = (["digits", "faces"] + [f"toy:{n}" for n in toy.TOY_DATASETS] + list(TFDS_NAMES)
               + ["lsun/<category>", "tfds:<any TFDS name>", "<image folder>",
                  "<latents .npz/.npy or folder>"])
    raise ValueError(f"get_source: unknown data set name_or_path={s!r}; valid choices: "
                     f"{', '.join(choices)}")
