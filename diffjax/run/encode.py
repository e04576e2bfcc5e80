"""The ``encode`` command and the run layer's VAE: images -> latent shards, latents -> images.

``python -m diffjax encode --config=configs/dit_xl2_imagenet256.py --workdir=workdir/x``
reads the image data set named by ``config.encode.data`` through grain, centre-crops and
resizes each image as ADM does (largest centred square, antialiased bicubic resize;
:class:`diffjax.data.pipeline.CenterCropResize`), encodes it with the VAE of ``config.vae``
jitted and sharded over every device (batch axis on a ``('data',)`` mesh), optionally the
horizontal flip too, and writes the latent folder of :mod:`diffjax.data.latents`
(``config.encode.output``, default ``config.data.name``: the folder training then reads;
relative paths are relative to the current directory, as ``data.name`` is).

Resumable: each shard is written under a temporary name and renamed when complete, and a
restart skips finished shards, so a killed run finishes with exactly the shards of an
uninterrupted one. Multi-host: host ``h`` of ``H`` encodes shards ``h, h + H, ...``; host 0
writes the index (with per-channel statistics) once every shard exists.

Config sections:

* ``vae``: ``preset`` (:data:`diffjax.models.vae.VAE_PRESETS`), ``weights`` (a local diffusers
  ``AutoencoderKL`` file or folder; empty: random weights from ``seed``, smoke tests only),
  ``seed``, ``chunk_size`` (images per encoder/decoder call inside a batch), ``dtype``, and any
  :class:`~diffjax.models.vae.VAEConfig` field as an override (``scaling_factor``, ...).
* ``encode``: ``data`` (image data set name or folder, :func:`diffjax.data.get_source`),
  ``split``, ``data_dir``, ``image_size`` (default: the VAE's ``sample_size``),
  ``batch_size`` (images per device per call, default 32), ``examples_per_shard`` (default
  10,000), ``flip`` (also encode the flipped images), ``posterior`` (``mean`` or
  ``sample``: DiT stores posterior samples; sample ``i`` uses the key ``fold_in(seed, i)``),
  ``output``,
  ``max_examples`` (encode only the first N images).

:func:`build_vae` and :func:`latent_decoder` are what ``sample`` / ``eval`` / ``train`` use to
turn sampled latents into images when a config has a ``vae`` section.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.run.config import section

__all__ = ["VAE_KEYS", "ENCODE_KEYS", "build_vae", "latent_decoder", "decoder_of",
           "image_reference_config", "encode_dataset", "encode"]

VAE_KEYS = ("preset", "weights", "seed", "chunk_size", "dtype")
ENCODE_KEYS = ("data", "split", "data_dir", "image_size", "batch_size", "examples_per_shard",
               "flip", "posterior", "output", "max_examples")


def build_vae(config):
    """The :class:`~diffjax.models.vae.AutoencoderKL` of ``config.vae``, or None without one.

    Raises:
      ValueError: unknown keys or preset (named ``vae.<key>``).
      FileNotFoundError: ``vae.weights`` names no local file.
    """
    from diffjax.convert.vae import load_diffusers_vae
    from diffjax.models import vae as V

    vcfg = section(config.get("vae"))
    if not vcfg:
        return None
    fields = {f for f in V.VAEConfig.__dataclass_fields__}
    bad = sorted(k for k in vcfg if k not in VAE_KEYS and k not in fields)
    if bad:
        raise ValueError(f"unknown config keys {['vae.' + k for k in bad]}; expected some of "
                         f"{['vae.' + k for k in VAE_KEYS + tuple(sorted(fields))]}")
    preset = vcfg.pop("preset", "sd")
    weights = vcfg.pop("weights", "") or ""
    seed = int(vcfg.pop("seed", 0))
    vcfg.pop("chunk_size", None)
    dtype = jnp.dtype(vcfg.pop("dtype", "float32"))
    try:
        cfg = V.vae_config(preset, **vcfg)
    except ValueError as e:
        raise ValueError(f"vae.preset={preset!r}: {e}") from None
    if not weights:
        return V.vae_from_preset(cfg, seed=seed, dtype=dtype)
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"vae.weights={weights!r} does not exist; place the diffusers "
                                "AutoencoderKL weights there (diffjax downloads nothing), or "
                                "leave vae.weights empty for random weights (smoke tests)")
    return load_diffusers_vae(path, config=cfg, dtype=dtype)


def _chunk(config) -> int | None:
    c = section(config.get("vae")).get("chunk_size")
    return int(c) if c else None


def latent_decoder(config):
    """``latents (N, h, w, c) -> images (N, H, W, 3)`` in ``[-1, 1]`` (numpy, jitted, batch
    sharded over the devices) for a config with a ``vae`` section, else None.

    The latents are those the diffusion model sees (scaled by ``scaling_factor``).
    """
    from flax import nnx

    vae = build_vae(config)
    if vae is None:
        return None
    graphdef, state = nnx.split(vae)
    chunk = _chunk(config)
    fn = jax.jit(lambda st, z: nnx.merge(graphdef, st).decode_latents(z, chunk_size=chunk))

    def decode(latents):
        z = np.asarray(latents, np.float32)
        return np.asarray(_sharded_call(fn, state, z))

    decode.vae = vae
    return decode


def _mesh(devices=None):
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def _sharded_call(fn, state, x: np.ndarray, *extra, devices=None):
    """``fn(state, x, *extra)`` with ``x`` sharded over the batch on ``devices`` (default all;
    padded to a multiple of the device count, the padding dropped)."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = _mesh(devices)
    n = x.shape[0]
    d = mesh.size
    pad = (-n) % d
    if pad:
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        extra = tuple(np.concatenate([e, np.zeros((pad,) + e.shape[1:], e.dtype)])
                      for e in extra)
    sh = NamedSharding(mesh, PartitionSpec("data"))
    rep = NamedSharding(mesh, PartitionSpec())
    out = fn(jax.device_put(state, rep), jax.device_put(x, sh),
             *(jax.device_put(e, sh) for e in extra))
    return np.asarray(out)[:n]


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def encode_dataset(source, vae, output, *, image_size: int, batch_size: int = 32,
                   examples_per_shard: int = 10_000, flip: bool = False,
                   posterior: str = "mean", seed: int = 0, chunk_size: int | None = None,
                   max_shards: int | None = None, process_index: int | None = None,
                   process_count: int | None = None, devices=None, progress: bool = True,
                   describe: dict | None = None) -> dict | None:
    """Encode an image source into a latent folder (:mod:`diffjax.data.latents`).

    Args:
      source: a random-access image source (``record['image']`` ``uint8`` ``(H, W, C)``).
      vae: an :class:`~diffjax.models.vae.AutoencoderKL`.
      output: the latent folder (created).
      image_size: ADM centre crop + resize to this side before encoding.
      batch_size: images per device per encoder call (a call encodes ``batch_size`` times the
        number of devices; the last batch of a shard is padded to the same shape: one
        compile). A fixed per-device batch makes every device run the same program, so the
        latents are bitwise the same on any number of devices.
      examples_per_shard: records per shard (the last shard may be shorter).
      flip: also store the latents of the horizontally flipped images.
      posterior: ``'mean'`` (the posterior mode) or ``'sample'`` (keyed by the record index).
      seed: key of the posterior samples.
      chunk_size: images per VAE call inside a batch (memory).
      max_shards: stop after writing this many shards (testing a kill; None: all).
      process_index, process_count: this host among all (default: jax's).
      devices: the devices the batch is sharded over (default: all of them).
      progress: print a progress line per shard.
      describe: extra entries for the index (the VAE preset, the data set name).

    Returns:
      The index (dict) when every shard exists, else None (stopped early, or other hosts'
      shards missing).
    """
    import grain
    from flax import nnx

    from diffjax.data import latents as DL
    from diffjax.data.pipeline import CenterCropResize, ScaleImage

    if posterior not in ("mean", "sample"):
        raise ValueError(f"posterior={posterior!r}; expected 'mean' or 'sample'")
    for name, v in (("batch_size", batch_size), ("examples_per_shard", examples_per_shard),
                    ("image_size", image_size)):
        if int(v) < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    n = len(source)
    num_shards = -(-n // examples_per_shard)
    graphdef, state = nnx.split(vae)

    def enc(st, x, idx):
        m = nnx.merge(graphdef, st)
        post = m.encode(x, chunk_size=chunk_size)
        if posterior == "mean":
            z = post.mode()
        else:
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(idx)
            z = post.mean + post.std * jax.vmap(
                lambda k: jax.random.normal(k, post.mean.shape[1:], post.mean.dtype))(keys)
        return m.scale(z)

    enc_fn = jax.jit(enc)
    b = int(batch_size) * len(jax.devices() if devices is None else devices)
    pipeline_maps = [CenterCropResize(image_size), ScaleImage()]
    mine = [i for i in range(num_shards) if i % pc == pi]
    written, t0 = 0, time.time()
    has_labels = None
    for count, i in enumerate(mine):
        paths = DL.shard_paths(out, i)
        start, stop = i * examples_per_shard, min((i + 1) * examples_per_shard, n)
        if paths["latents"].exists():
            continue
        if max_shards is not None and written >= max_shards:
            return None
        ds = grain.MapDataset.source(source)[start:stop]
        for t in pipeline_maps:
            ds = ds.map(t)
        ds = ds.batch(b, drop_remainder=False)
        lat, flp, labs = [], [], []
        for batch in ds.to_iter_dataset(grain.ReadOptions(num_threads=4,
                                                          prefetch_buffer_size=2 * b)):
            x = np.asarray(batch["image"], np.float32)
            k = x.shape[0]
            base = start + sum(len(a) for a in lat)
            idx = np.arange(base, base + k, dtype=np.int32)
            if k < b:  # same compiled shape for the last batch
                x = np.concatenate([x, np.zeros((b - k,) + x.shape[1:], x.dtype)])
                idx = np.concatenate([idx, np.zeros(b - k, np.int32)])
            lat.append(_sharded_call(enc_fn, state, x, idx, devices=devices)[:k])
            if flip:  # flipped images get their own keys (index + N)
                flp.append(_sharded_call(enc_fn, state, np.ascontiguousarray(x[:, :, ::-1]),
                                         idx + n, devices=devices)[:k])
            if "label" in batch:
                labs.append(np.asarray(batch["label"]).astype(np.int32).reshape(-1))
        has_labels = bool(labs)
        if labs:
            _atomic_save(paths["labels"], np.concatenate(labs))
        if flip:
            _atomic_save(paths["flip"], np.concatenate(flp).astype(np.float32))
        _atomic_save(paths["latents"], np.concatenate(lat).astype(np.float32))  # last: done
        written += 1
        if progress:
            el = time.time() - t0
            done = count + 1
            rate = (stop - start) * written / max(el, 1e-9)
            print(f"encode: shard {done}/{len(mine)} (records {start}-{stop - 1} of {n}) "
                  f"{rate:.1f} img/s, elapsed {el:.0f}s, eta "
                  f"{(len(mine) - done) * (stop - start) / max(rate, 1e-9):.0f}s",
                  flush=True, file=sys.stderr)
    if pi != 0:
        return None
    missing = [i for i in range(num_shards) if not DL.shard_paths(out, i)["latents"].exists()]
    if missing:
        if progress:
            print(f"encode: {len(missing)} shards missing (other hosts?): index not written",
                  file=sys.stderr)
        return None
    return _write_index(out, n, num_shards, examples_per_shard, flip, vae, image_size,
                        posterior, has_labels, describe or {})


def _write_index(out: Path, n, num_shards, per_shard, flip, vae, image_size, posterior,
                 has_labels, describe) -> dict:
    from diffjax.data import latents as DL

    # per-channel moments in float64, streamed shard by shard (never all in memory)
    s1 = s2 = None
    count = 0
    shapes = []
    for i in range(num_shards):
        z = np.load(DL.shard_paths(out, i)["latents"], mmap_mode="r")
        shapes.append(int(z.shape[0]))
        z64 = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
        s1 = z64.sum(0) if s1 is None else s1 + z64.sum(0)
        s2 = (z64 ** 2).sum(0) if s2 is None else s2 + (z64 ** 2).sum(0)
        count += z64.shape[0]
    if has_labels is None:  # every shard was already there: look at the files
        has_labels = DL.shard_paths(out, 0)["labels"].exists()
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean ** 2, 0.0))
    lat_shape = list(np.load(DL.shard_paths(out, 0)["latents"], mmap_mode="r").shape[1:])
    index = dict(num_examples=n, examples_per_shard=per_shard, latent_shape=lat_shape,
                 image_size=int(image_size), flip=bool(flip), posterior=posterior,
                 has_labels=bool(has_labels),
                 scaling_factor=vae.cfg.scaling_factor, shift_factor=vae.cfg.shift_factor,
                 mean=mean.tolist(), std=std.tolist(),
                 shards=[dict(name=f"shard-{i:05d}", num_examples=k)
                         for i, k in enumerate(shapes)], **describe)
    tmp = out / (DL.INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / DL.INDEX_NAME)
    return index


class _Head:
    """The first ``n`` records of a source."""

    def __init__(self, source, n: int):
        self.source, self.n = source, min(int(n), len(source))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.source[int(i)]


def encode(config, workdir, *, max_shards: int | None = None, progress: bool = True) -> dict:
    """The ``encode`` command: ``config.encode`` + ``config.vae`` -> a latent folder."""
    from diffjax import data as D

    ecfg = section(config.get("encode"))
    bad = sorted(k for k in ecfg if k not in ENCODE_KEYS)
    if bad:
        raise ValueError(f"unknown config keys {['encode.' + k for k in bad]}; expected some "
                         f"of {['encode.' + k for k in ENCODE_KEYS]}")
    if not ecfg.get("data"):
        raise ValueError("config key encode.data is required: the image data set to encode "
                         "(a TFDS name such as 'imagenet2012' or an image folder)")
    vae = build_vae(config)
    if vae is None:
        raise ValueError("the encode command needs a config.vae section (vae.preset and "
                         "vae.weights)")
    kwargs = {}
    if ecfg.get("data_dir"):
        kwargs["data_dir"] = str(Path(ecfg["data_dir"]).expanduser())
    name = ecfg["data"]
    try:
        source = D.get_source(name, ecfg.get("split", "train"), **kwargs)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"encode.data={name!r}: {e}") from None
    if ecfg.get("max_examples"):
        source = _Head(source, int(ecfg["max_examples"]))
    out = ecfg.get("output") or section(config.get("data")).get("name")
    if not out:
        raise ValueError("set encode.output (or data.name) to the latent folder to write")
    out = Path(out).expanduser()  # relative to the current directory, as data.name is
    size = int(ecfg.get("image_size") or vae.cfg.sample_size)
    index = encode_dataset(
        source, vae, out, image_size=size, batch_size=int(ecfg.get("batch_size", 32)),
        examples_per_shard=int(ecfg.get("examples_per_shard", 10_000)),
        flip=bool(ecfg.get("flip", False)), posterior=ecfg.get("posterior", "mean"),
        seed=int(config.get("seed", 0)), chunk_size=_chunk(config), max_shards=max_shards,
        progress=progress, describe=dict(vae_preset=section(config.get("vae")).get(
            "preset", "sd"), data=str(name)))
    if index is not None and progress:
        print(f"encode: wrote {index['num_examples']} latents of shape "
              f"{tuple(index['latent_shape'])} in {len(index['shards'])} shards to {out}",
              flush=True)
    return {"output": str(out), "complete": index is not None, "index": index}


def decoder_of(built):
    """:func:`latent_decoder` of ``built.config``, built once per :class:`~diffjax.run.build.
    Built` (cached on it); None when the config has no ``vae`` section."""
    if not hasattr(built, "_latent_decoder"):
        built._latent_decoder = latent_decoder(built.config)
    return built._latent_decoder


def image_reference_config(config):
    """The config whose ``data`` section names the *images* of a latent run (for FID
    references): with ``vae`` and ``encode.data`` sections, ``data`` becomes the image set
    ``encode.data`` centre-cropped to the encoded size; otherwise ``config`` itself."""
    import ml_collections

    ecfg = section(config.get("encode"))
    if not config.get("vae") or not ecfg.get("data"):
        return config
    out = ml_collections.ConfigDict(config.to_dict())
    vae_size = section(config.vae).get("sample_size")
    size = ecfg.get("image_size") or vae_size
    if size is None:
        from diffjax.models.vae import vae_config

        size = vae_config(section(config.vae).get("preset", "sd")).sample_size
    data = dict(name=ecfg["data"], split=ecfg.get("split", "train"), image_size=int(size))
    if ecfg.get("data_dir"):
        data["data_dir"] = ecfg["data_dir"]
    out.data = data
    return out
