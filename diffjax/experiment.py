"""From a config to library calls: the only diffjax module that reads a ``ConfigDict``.

The library core takes keyword arguments; this module turns a config
(``configs/<paper>_<dataset>.py``, see ARCHITECTURE.md section 6) into a process, a model, a
loss, a data loader, an optimizer and a sampler, and runs ``train``, ``sample`` and ``eval``
for the command line (:mod:`diffjax.cli`).

Config sections (all keys optional unless noted):

* ``process``: ``name`` in :data:`PROCESSES` (+ its keyword arguments, e.g. ``num_steps``).
* ``model``: ``name`` in ``mlp | unet | adm | dit`` (required), ``preset`` or keyword
  arguments, ``time_input`` (what the network is fed, :func:`diffjax.adapters.time_input`),
  ``prediction`` (``eps | x0 | v | score | velocity``).
* ``loss``: ``name`` in :data:`LOSSES` + keyword arguments of that loss.
* ``data``: ``name`` (a dataset name or path for :func:`diffjax.data.get_source`),
  ``batch_size``, ``split``, ``flip``.
* ``optim``: :func:`diffjax.train.make_optimizer` arguments; ``ema``: name -> decay.
* ``train``: ``num_steps``, ``log_every``, ``save_every``, ``max_to_keep``, ``seed``.
* ``sample``: ``sampler`` (a name of :data:`diffjax.samplers.SAMPLERS`), ``num_steps``,
  ``grid`` (``discrete | uniform | karras | log_snr``), ``t_min``, step keyword arguments in
  ``step``, ``num_samples``, ``ema`` (which weights), ``clip_x0``.
* ``mesh``: ``data``, ``fsdp`` axis sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import diffjax as dj
from diffjax import adapters
from diffjax import losses as L
from diffjax import samplers as S
from diffjax import train as T

__all__ = ["PROCESSES", "LOSSES", "build_process", "build_model", "train", "sample", "evaluate"]

PROCESSES = {
    "ddpm_linear": lambda num_steps=1000, **kw: dj.DiscreteVP.linear(num_steps, **kw),
    "ddpm_cosine": lambda num_steps=1000, **kw: dj.DiscreteVP.cosine(num_steps, **kw),
    "vp": dj.VP,
    "subvp": dj.SubVP,
    "ve": dj.VE,
    "edm": dj.EDM,
    "linear": dj.Linear,
    "gvp": dj.GVP,
}

LOSSES = {
    "ddpm": L.ddpm_loss,
    "ddim": L.ddim_loss,
    "ncsn": L.ncsn_loss,
    "score_sde": L.score_sde_loss,
    "edm": L.edm_loss,
    "flow_matching": L.flow_matching_loss,
}


def _kw(section) -> dict:
    if section is None:
        return {}
    d = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}


def _pick(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]


def build_process(cfg):
    kw = _kw(cfg)
    return _pick(PROCESSES, kw.pop("name", "ddpm_linear"), "process")(**kw)


def build_model(cfg, rngs: nnx.Rngs):
    """The network named by ``cfg.name`` (``mlp``, ``unet``, ``adm``, ``dit``)."""
    kw = _kw(cfg)
    name = kw.pop("name", None)
    for k in ("time_input", "prediction", "negate_output"):
        kw.pop(k, None)
    preset = kw.pop("preset", None)
    if name == "mlp":
        from diffjax.models.mlp import ToyMLP

        return ToyMLP(**kw, rngs=rngs)
    if name == "unet":
        from diffjax.models.unet import UNet, unet_from_preset

        return unet_from_preset(preset, rngs=rngs, **kw) if preset else UNet(**kw, rngs=rngs)
    if name == "adm":
        from diffjax.models.adm import adm_from_preset

        return adm_from_preset(preset, rngs=rngs, **kw)
    if name == "dit":
        from diffjax.models.dit import DiT, dit_config

        return DiT(dit_config(preset, **kw), rngs=rngs)
    raise ValueError(f"unknown model name {name!r}; expected one of ['adm', 'dit', 'mlp', 'unet']")


class _Net:
    """Binds (graphdef, params, rest) and a time conversion into ``model(x, t, cond)``."""

    def __init__(self, graphdef, rest, cfg, process):
        self.graphdef, self.rest = graphdef, rest
        self.conv = adapters.time_input(cfg.get("time_input", "t"), process,
                                        getattr(process, "num_steps", 1000))
        self.sign = -1.0 if cfg.get("negate_output", False) else 1.0

    def bind(self, params, train=False, key=None):
        net = nnx.merge(self.graphdef, params, self.rest)

        def model(x, t, cond=None):
            kw = dict(train=True, rngs=nnx.Rngs(dropout=key, label_dropout=key)) if train else {}
            return self.sign * net(x, self.conv(jnp.asarray(t, jnp.float32)), cond, **kw)

        return model


def _prediction(cfg_model, loss_name):
    default = {"edm": "x0", "flow_matching": "velocity", "ncsn": "score",
               "score_sde": "score"}.get(loss_name, "eps")
    return cfg_model.get("prediction", default)


def _setup(config, workdir):
    from diffjax import data as D

    seed = int(config.get("seed", 0))
    process = build_process(config.get("process"))
    dcfg = _kw(config.data)
    source = D.get_source(dcfg.pop("name"), dcfg.pop("split", "train"))
    batch_size = int(dcfg.pop("batch_size", 64))
    loader = D.make_loader(source, batch_size=batch_size, seed=seed,
                           random_flip=bool(dcfg.pop("flip", False)))
    example = next(iter(D.make_loader(source, batch_size=1, seed=seed)))
    x_shape = tuple(example["image"].shape[1:])
    has_label = "label" in example
    model_cfg = config.model
    graphdef, _, rest = nnx.split(nnx.eval_shape(lambda: build_model(model_cfg, nnx.Rngs(0))),
                                  nnx.Param, ...)
    rest = nnx.state(build_model(model_cfg, nnx.Rngs(0)), nnx.Not(nnx.Param)) if len(
        jax.tree_util.tree_leaves(rest)) else rest
    net = _Net(graphdef, rest, model_cfg, process)
    init_params = lambda key: nnx.state(build_model(model_cfg, nnx.Rngs(key)), nnx.Param)
    return dict(seed=seed, process=process, loader=loader, batch_size=batch_size,
                x_shape=x_shape, has_label=has_label, net=net, init_params=init_params,
                source=source)


def train(config, workdir) -> dict:
    """Train from ``config`` in ``workdir`` (resuming if checkpoints exist); then sample."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    s = _setup(config, workdir)
    tcfg, lcfg = config.train, _kw(config.loss)
    loss_name = lcfg.pop("name", "ddpm")
    loss = _pick(LOSSES, loss_name, "loss")
    prediction = _prediction(config.model, loss_name)
    process, net = s["process"], s["net"]

    def loss_fn(params, key, batch):
        k_loss, k_drop = jax.random.split(key)
        model = net.bind(params, train=True, key=k_drop)
        return loss(model, k_loss, batch["image"], process=process, prediction=prediction,
                    cond=batch.get("label"), **lcfg)

    ocfg = _kw(config.optim)
    ocfg.setdefault("total_steps", int(tcfg.num_steps))
    optimizer = T.make_optimizer(**ocfg)
    ema_specs = {k: T.EMASpec(decay=float(v)) for k, v in _kw(config.get("ema")).items()}
    mcfg = _kw(config.get("mesh"))
    mesh = T.make_mesh(mcfg.get("data", -1), mcfg.get("fsdp", 1))
    batch_size = s["batch_size"]
    if batch_size % mesh.size:
        raise ValueError(f"data.batch_size={batch_size} must be divisible by the {mesh.size} devices")

    def init_state():
        return T.create_train_state(s["init_params"], optimizer, seed=s["seed"],
                                    ema_names=tuple(ema_specs), mesh=mesh)

    ck = T.Checkpointer(workdir / "checkpoints", max_to_keep=int(tcfg.get("max_to_keep", 3)))
    state = T.restore_or_init(ck, init_state, s["loader"])
    start = int(state.step)
    sh = T.state_shardings(state, mesh)
    batch_sh = {"image": T.batch_sharding(mesh, 1 + len(s["x_shape"]))}
    if s["has_label"]:
        batch_sh["label"] = T.batch_sharding(mesh, 1)
    step = T.jit_train_step(T.make_train_step(loss_fn, optimizer, ema_specs, batch_size), sh,
                            batch_sh)
    to_device = lambda b: T.shard_batch({k: v for k, v in b.items() if k in ("image", "label")}, mesh)
    meta = {"config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
            "x_shape": list(s["x_shape"]), "version": dj.__version__}
    print(f"training {config.model.name} on {config.data.name} {s['x_shape']} from step {start} "
          f"to {int(tcfg.num_steps)} on {mesh.size} device(s)")
    state, history = T.fit(state, step, iter(s["loader"]), num_steps=int(tcfg.num_steps),
                           to_device=to_device, checkpointer=ck, loader=s["loader"],
                           save_every=int(tcfg.get("save_every", 1000)),
                           log_every=int(tcfg.get("log_every", 100)), workdir=workdir, meta=meta)
    ck.close()
    out = {"start_step": start, "end_step": int(state.step), "history": history}
    if int(state.step) >= int(tcfg.num_steps):
        out["samples"] = _sample_with(config, workdir, s, state)
    return out


def _grid(cfg, process):
    kind = cfg.get("grid", "discrete" if isinstance(process, dj.DiscreteVP) else "karras")
    n = cfg.get("num_steps", None)
    if kind == "discrete":
        T_ = process.num_steps
        idx = range(T_) if n in (None, T_) else dj.processes.space_timesteps(T_, str(n))
        return dj.discrete_grid(idx, T_)
    n = int(n or 50)
    if kind == "uniform":
        return dj.uniform_grid(n, 1.0, float(cfg.get("t_min", 0.0)))
    if kind == "karras":
        return dj.karras_grid(process, n)
    if kind == "log_snr":
        return dj.log_snr_grid(process, n, 1.0, float(cfg.get("t_min", 1e-3)))
    raise ValueError(f"unknown sample.grid {kind!r}; expected discrete, uniform, karras or log_snr")


def _sample_with(config, workdir, s, state, num_samples=None, seed=None) -> dict:
    from diffjax.utils import density_image, image_grid, save_png

    scfg = config.get("sample") or {}
    process, net = s["process"], s["net"]
    which = scfg.get("ema", next(iter(state.ema), None))
    params = state.ema[which] if which else state.params
    model = jax.tree_util.Partial(lambda p, x, t, c=None: net.bind(p)(x, t, c), params)
    step = S.get_step(scfg.get("sampler", "ddim"), **_kw(scfg.get("step")))
    n = int(num_samples or scfg.get("num_samples", 64))
    prediction = _prediction(config.model, (config.get("loss") or {}).get("name", "ddpm"))
    x = dj.sample(model, jax.random.key(int(seed if seed is not None else s["seed"])),
                  (n,) + s["x_shape"], _grid(scfg, process), step, process=process,
                  prediction=prediction, clip_x0=scfg.get("clip_x0", None))
    x = np.asarray(x)
    workdir = Path(workdir)
    np.savez(workdir / "samples.npz", samples=x)
    if x.ndim == 2 and x.shape[1] == 2:
        save_png(workdir / "samples.png", density_image(x))
    elif x.ndim == 4:
        save_png(workdir / "samples.png", image_grid(x[:64]))
    print(f"wrote {n} samples to {workdir / 'samples.npz'} and {workdir / 'samples.png'}")
    return {"num_samples": n, "path": str(workdir / "samples.png"), "weights": which or "params"}


def _restore(config, workdir):
    s = _setup(config, workdir)
    optimizer = T.make_optimizer(**{**_kw(config.optim), "total_steps": int(config.train.num_steps)})
    ema_names = tuple(_kw(config.get("ema")))
    template = T.create_train_state(s["init_params"], optimizer, seed=s["seed"], ema_names=ema_names)
    ck = T.Checkpointer(Path(workdir) / "checkpoints")
    found = ck.restore_latest(T.abstract_like(template))
    ck.close()
    if found is None:
        raise FileNotFoundError(f"no checkpoint under {Path(workdir) / 'checkpoints'}; "
                                "run `python -m diffjax train` with this --workdir first")
    return s, found[1]


def sample(config, workdir, num_samples=None, seed=None) -> dict:
    """Sample from the newest checkpoint in ``workdir`` (EMA weights by default)."""
    s, state = _restore(config, workdir)
    return _sample_with(config, workdir, s, state, num_samples, seed)


def evaluate(config, workdir, num_samples=None) -> dict:
    """Denoising loss of the EMA weights on fresh batches; for 2-D data also the sliced
    Wasserstein distance of samples to the data. Writes ``eval.json``."""
    s, state = _restore(config, workdir)
    lcfg = _kw(config.loss)
    loss_name = lcfg.pop("name", "ddpm")
    loss = _pick(LOSSES, loss_name, "loss")
    prediction = _prediction(config.model, loss_name)
    which = (config.get("sample") or {}).get("ema", next(iter(state.ema), None))
    params = state.ema[which] if which else state.params
    net, process = s["net"], s["process"]
    fn = jax.jit(lambda p, k, x, y: loss(net.bind(p), k, x, process=process,
                                         prediction=prediction, cond=y, **lcfg)[0].mean())
    it = iter(s["loader"])
    vals = []
    for i in range(10):
        b = next(it)
        vals.append(float(fn(params, jax.random.key(1000 + i), jnp.asarray(b["image"]),
                             None if "label" not in b else jnp.asarray(b["label"]))))
    out = {"step": int(state.step), "loss": float(np.mean(vals)), "weights": which or "params"}
    if len(s["x_shape"]) == 1 and s["x_shape"][0] == 2:
        res = _sample_with(config, workdir, s, state, num_samples or 5000)
        x = np.load(Path(workdir) / "samples.npz")["samples"]
        data = np.concatenate([next(it)["image"] for _ in range(max(1, 20000 // s["batch_size"]))])
        out.update(sw1=dj.analytic.sliced_wasserstein(x, data), samples=res)
    (Path(workdir) / "eval.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out
