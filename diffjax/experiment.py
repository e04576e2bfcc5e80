"""From a config to library calls: the only diffjax module that reads a ``ConfigDict``.

The library core takes keyword arguments; this module turns a config
(``configs/<paper>_<dataset>.py``, see ARCHITECTURE.md section 6) into a process, a model, a
loss, a data loader, an optimizer and a sampler, and runs ``train``, ``sample`` and ``eval``
for the command line (:mod:`diffjax.cli`).

Config sections (all keys optional unless noted):

* ``process``: ``name`` in :data:`PROCESSES` (+ its keyword arguments, e.g. ``num_steps``).
* ``model``: ``name`` in :data:`MODELS` (required), ``preset`` or keyword arguments,
  ``time_input`` (what the network is fed, :func:`diffjax.adapters.time_input`),
  ``prediction`` (``eps | x0 | v | score | velocity``), ``precond`` (``edm | vp | ve``: wrap
  the raw network in :class:`diffjax.parameterization.EDMPrecond`, which feeds it ``c_noise``
  and makes it an ``x0`` model; ``time_input`` is then unused) and ``sigma_data``.
* ``loss``: ``name`` in :data:`LOSSES` + keyword arguments of that loss; ``schedule_sampler``
  (:data:`SCHEDULE_SAMPLERS`, DDPM-index losses only) with ``history_per_term`` and
  ``uniform_prob``.
* ``method``: ``name`` of a few-step / guidance-in-training method of
  :mod:`diffjax.methods` (consistency, shortcut, IMM, model guidance), which then supplies the
  loss, extra EMAs, the initial parameters and the sampler; ``loss`` is unused.
* ``data``: ``name`` (a dataset name or path for :func:`diffjax.data.get_source`),
  ``batch_size``, ``split``, ``flip``, ``holdout``, ``data_dir`` (TFDS data directory).
* ``optim``: :func:`diffjax.train.make_optimizer` arguments; ``ema``: name -> decay, or
  name -> ``{halflife_kimg, rampup_ratio}`` (EDM's EMA).
* ``train``: ``num_steps``, ``log_every``, ``save_every``, ``max_to_keep``, ``seed``.
* ``sample``: ``sampler`` (a name of :data:`diffjax.samplers.SAMPLERS`, or ``pc``:
  ``predictor`` + ``corrector`` (:data:`CORRECTORS`) with ``snr`` and ``corrector_steps``),
  ``num_steps``, ``grid`` (``discrete | uniform | karras | log_snr``), ``t_min``, step keyword
  arguments in ``step``, ``num_samples``, ``ema`` (which weights), ``clip_x0``,
  ``learned_variance`` (default: true for the ``hybrid``/``vlb`` losses), ``x_init``
  (``uniform``: NCSN's start from ``U[lo, hi]^d``, range in ``x_init_range``), ``guidance``
  (classifier-free guidance scale for class-conditional models, DiT convention: 1 = none)
  and ``guidance_channels`` (``all`` or 3, DiT's reference quirk).
* ``mesh``: ``data``, ``fsdp`` axis sizes.
* ``eval``: what ``eval`` measures (metrics, number of samples, feature space and FID
  Inception weights, reference set): see :func:`evaluate` and :mod:`diffjax.evaluation`.

Shape check: before any compute, :func:`train` compares one data example's shape with the
input the model was built for (``image_size``/``in_channels``, DiT ``input_size``) and raises
a ``ValueError`` naming the ``model.*`` and ``data.name`` keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import diffjax as dj
from diffjax import adapters
from diffjax import losses as L
from diffjax import samplers as S
from diffjax import train as T

__all__ = ["smoke_variant", "PROCESSES", "LOSSES", "SCHEDULE_SAMPLERS", "MODELS", "CORRECTORS",
           "build_process", "build_model", "train", "sample", "evaluate"]

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
    "hybrid": L.hybrid_loss,
    "vlb": L.vlb_loss,
}
#: ``loss.schedule_sampler``: how DDPM indices are drawn (iDDPM's ``--schedule_sampler``).
#: ``loss-second-moment`` is iDDPM's importance sampler for L_vlb (sec. 3.3, eq. 18): its loss
#: history lives in ``TrainState.extra['resampler']`` and is updated by the train step.
SCHEDULE_SAMPLERS = ("uniform", "loss-second-moment")
#: the ``loss`` keys that configure the index draw rather than the loss itself
SCHEDULE_SAMPLER_KEYS = ("schedule_sampler", "history_per_term", "uniform_prob")

#: losses whose model outputs ``2C`` channels (iDDPM's learned variance)
LEARNED_VARIANCE_LOSSES = ("hybrid", "vlb")

#: corrector name -> ``(snr, n_steps) -> Step`` for ``sample.sampler = 'pc'``
CORRECTORS = {
    "langevin": lambda snr, n_steps: S.LangevinCorrector(snr, n_steps),
}

#: ``model`` keys that configure the wrapper, not the network constructor
_WRAPPER_KEYS = ("time_input", "prediction", "negate_output", "precond", "sigma_data")


def smoke_variant(config, model: dict, data: dict | None = None, *, batch_size: int = 16,
                  sample_steps: int | None = 4):
    """Shrink a recipe config in place to its seconds-long ``:smoke`` variant (for configs).

    ``model``: the tiny network; ``data``: a replacement data section (e.g. the embedded
    digits), else the recipe's own with ``batch_size``. Training: 4 steps, no warm-up, a
    checkpoint at the end, one device; sampling: ``sample_steps`` steps, 4 samples.
    """
    config.model = model
    if data is not None:
        config.data = data
    config.data.batch_size = batch_size
    config.optim.warmup_steps = 0
    config.train = dict(num_steps=4, log_every=2, save_every=4, max_to_keep=1, sample_every=0)
    if sample_steps is not None:
        config.sample.num_steps = sample_steps
    config.sample.num_samples = 4
    config.mesh = dict(data=1, fsdp=1)
    return config


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
    return _pick(PROCESSES, kw.pop("name", "ddpm_linear"), "process.name")(**kw)


def _mlp(preset, kw, rngs):
    from diffjax.models.mlp import ToyMLP

    return ToyMLP(**kw, rngs=rngs)


def _unet(preset, kw, rngs):
    from diffjax.models.unet import UNet, unet_from_preset

    return unet_from_preset(preset, rngs=rngs, **kw) if preset else UNet(**kw, rngs=rngs)


def _adm(preset, kw, rngs):
    from diffjax.models.adm import ADMUNet, adm_from_preset

    return adm_from_preset(preset, rngs=rngs, **kw) if preset else ADMUNet(**kw, rngs=rngs)


def _ncsnpp(preset, kw, rngs):
    from diffjax.models.ncsnpp import NCSNpp, ncsnpp_from_preset

    return ncsnpp_from_preset(preset, rngs=rngs, **kw) if preset else NCSNpp(**kw, rngs=rngs)


def _dit(preset, kw, rngs):
    from diffjax.models.dit import DiT, dit_config

    return DiT(dit_config(preset or "DiT-XL/2", **kw), rngs=rngs)


#: model name -> ``(preset, kwargs, rngs) -> nnx.Module``
MODELS = {"mlp": _mlp, "unet": _unet, "adm": _adm, "ncsnpp": _ncsnpp, "dit": _dit}


def build_model(cfg, rngs: nnx.Rngs):
    """The network named by ``cfg.name`` (a key of :data:`MODELS`), from ``cfg.preset`` and
    keyword overrides; wrapper keys (``time_input``, ``prediction``, ``precond``, ...) are
    ignored here."""
    kw = _kw(cfg)
    name = kw.pop("name", None)
    for k in _WRAPPER_KEYS:
        kw.pop(k, None)
    preset = kw.pop("preset", None)
    if name not in MODELS:
        raise ValueError(f"unknown model.name {name!r}; expected one of {sorted(MODELS)}")
    # model.dtype = 'bfloat16': bf16 compute; parameters stay float32 (the master weights)
    for key in ("dtype", "param_dtype"):
        if isinstance(kw.get(key), str):
            kw[key] = jnp.dtype(kw[key])
    return MODELS[name](preset, kw, rngs)


def _model_input(cfg, net) -> tuple[tuple | None, str]:
    """``((H, W, C) or None, which config keys set it)`` for an (abstract) image network."""
    if hasattr(net, "config") and hasattr(net.config, "input_size"):  # DiT
        c = net.config
        return (c.input_size, c.input_size, c.in_channels), "model.input_size/model.in_channels"
    size = getattr(net, "image_size", None)
    if size is None and cfg.get("name") == "ncsnpp":
        from diffjax.models.ncsnpp import NCSNPP_PRESETS

        size = {**NCSNPP_PRESETS.get(cfg.get("preset"), {}), **_kw(cfg)}.get("image_size", 32)
    chans = getattr(net, "in_channels", None)
    if size is None or chans is None:
        return None, ""
    return (int(size), int(size), int(chans)), "model.image_size/model.in_channels"


def _num_classes(net) -> int | None:
    """Classes of a class-conditional network (``None`` when unconditional)."""
    n = getattr(getattr(net, "config", None), "num_classes", None)
    if n is None:
        n = getattr(net, "num_classes", None)
    return int(n) if n else None


class _Net:
    """Binds (graphdef, params, rest) and a time conversion into ``model(x, t, cond)``.

    With ``precond`` (``model.precond``) the raw network is wrapped in
    :class:`~diffjax.parameterization.EDMPrecond`: it receives ``c_noise`` as its time input
    and the bound model is an ``x0`` (denoiser) model.
    """

    def __init__(self, graphdef, rest, cfg, process):
        self.graphdef, self.rest = graphdef, rest
        self.conv = adapters.time_input(cfg.get("time_input", "t"), process,
                                        getattr(process, "num_steps", 1000))
        self.sign = -1.0 if cfg.get("negate_output", False) else 1.0
        self.precond = cfg.get("precond", None)
        if self.precond not in (None, "edm", "vp", "ve"):
            raise ValueError(f"unknown model.precond {self.precond!r}; expected 'edm', 'vp' or "
                             "'ve' (or no key)")
        self.sigma_data = float(cfg.get("sigma_data", 0.5))
        self.process = process

    def bind(self, params, train=False, key=None):
        net = nnx.merge(self.graphdef, params, self.rest)

        def raw(x, time_value, cond=None):
            kw = dict(train=True, rngs=nnx.Rngs(dropout=key)) if train else {}
            return self.sign * net(x, time_value, cond, **kw)

        if self.precond:
            from diffjax.parameterization import EDMPrecond

            return EDMPrecond(raw, self.process, self.sigma_data, coeffs=self.precond)

        def model(x, t, cond=None):
            return raw(x, self.conv(jnp.asarray(t, jnp.float32)), cond)

        return model


def _prediction(cfg_model, loss_name):
    if cfg_model.get("precond", None):
        return "x0"
    default = {"edm": "x0", "flow_matching": "velocity", "ncsn": "score",
               "score_sde": "score"}.get(loss_name, "eps")
    return cfg_model.get("prediction", default)


def _source(dcfg: dict):
    """The data source of ``config.data``; errors name the ``data.*`` key at fault."""
    from diffjax import data as D

    name = dcfg.pop("name", None)
    if not name:
        raise ValueError("config key data.name is required (a data set name or a path)")
    split = dcfg.pop("split", "train")
    kwargs = {}
    data_dir = dcfg.pop("data_dir", None)
    if data_dir:
        if not Path(data_dir).expanduser().is_dir():
            raise FileNotFoundError(f"data.data_dir={data_dir!r} does not exist (the TFDS data "
                                    f"directory holding {name!r}); prepare it or fix the key")
        kwargs["data_dir"] = str(Path(data_dir).expanduser())
    try:
        return D.get_source(name, split, **kwargs)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"data.name={name!r}: {e}") from e
    except ValueError as e:
        raise ValueError(f"data.name={name!r}: {e}") from e


def _check_shapes(model_cfg, abstract, x_shape, has_label, data_name):
    """Raise (before any compute) when the data cannot feed the model."""
    want, keys = _model_input(model_cfg, abstract)
    if want is not None and tuple(x_shape) != want:
        raise ValueError(
            f"data.name={data_name!r} yields examples of shape {tuple(x_shape)} but the model "
            f"({keys}) expects {want}; set {keys.replace('/', ' and ')} to match the data "
            "(or pick data of that size)")
    n = _num_classes(abstract)
    if n and not has_label:
        raise ValueError(f"the model is class-conditional (num_classes={n}) but "
                         f"data.name={data_name!r} has no labels")


def _setup(config, workdir):
    from diffjax import data as D

    seed = int(config.get("seed", 0))
    process = build_process(config.get("process"))
    dcfg = _kw(config.data)
    data_name = dcfg.get("name")
    source = _source(dcfg)
    holdout = int(dcfg.pop("holdout", 0))
    heldout = None
    if holdout:  # the last `holdout` records are never trained on (quality figure)
        if not isinstance(source, D.ArraySource) or not 0 < holdout < len(source):
            raise ValueError(f"data.holdout={holdout} needs an in-memory data set with more "
                             f"than {holdout} records")
        heldout = np.asarray(source.images[-holdout:], np.float32)
        labels = None if source.labels is None else source.labels[:-holdout]
        source = D.ArraySource(source.images[:-holdout], labels)
    batch_size = int(dcfg.pop("batch_size", 64))
    loader = D.make_loader(source, batch_size=batch_size, seed=seed,
                           random_flip=bool(dcfg.pop("flip", False)))
    example = next(iter(D.make_loader(source, batch_size=1, seed=seed)))
    parts = model_setup(config, tuple(example["image"].shape[1:]), "label" in example,
                        data_name=data_name, process=process)
    return dict(seed=seed, loader=loader, batch_size=batch_size, heldout=heldout, source=source,
                **parts)


def model_setup(config, x_shape, has_label: bool = False, *, data_name=None,
                process=None) -> dict:
    """The model side of a run, for data of shape ``x_shape``: what :func:`train` and the
    ``method`` plug-ins (:func:`diffjax.methods.build_method`) need, also for experiments that
    draw their data in memory (``experiments/few_step_*.py``).

    Returns a dict: ``process``, ``net`` (binds parameters into a sampler model),
    ``init_params(key)``, ``x_shape``, ``has_label`` (False for an unconditional model),
    ``num_classes``. Raises ``ValueError`` when the model does not fit ``x_shape``.
    """
    process = build_process(config.get("process")) if process is None else process
    x_shape = tuple(x_shape)
    model_cfg = config.model
    abstract = nnx.eval_shape(lambda: build_model(model_cfg, nnx.Rngs(0)))
    _check_shapes(model_cfg, abstract, x_shape, has_label, data_name)
    num_classes = _num_classes(abstract)
    if not num_classes:
        has_label = False  # an unconditional model never sees the labels
    graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree_util.tree_leaves(rest):
        # non-parameter state (fixed tables, RNG counters) must be concrete: build it once
        rest = nnx.state(build_model(model_cfg, nnx.Rngs(0)), nnx.Not(nnx.Param))
    net = _Net(graphdef, rest, model_cfg, process)
    init_params = lambda key: nnx.state(build_model(model_cfg, nnx.Rngs(key)), nnx.Param)
    return dict(process=process, net=net, init_params=init_params, x_shape=x_shape,
                has_label=has_label, num_classes=num_classes)


def _ema_specs(config) -> dict:
    """``ema`` section: name -> decay, or name -> ``{halflife_kimg, rampup_ratio}`` (EDM)."""
    out = {}
    for k, v in _kw(config.get("ema")).items():
        out[k] = T.EMASpec(**v) if isinstance(v, dict) else T.EMASpec(decay=float(v))
    return out


def _training_parts(config, s) -> dict:
    """Loss, optimizer, EMAs, initial parameters and extra state of a training run.

    Shared by :func:`train` and :func:`_restore` so a checkpoint is restored into exactly the
    state layout it was saved from (EMA names, ``extra``).
    """
    lcfg = _kw(config.get("loss"))
    loss_name = lcfg.pop("name", "ddpm")
    loss = _pick(LOSSES, loss_name, "loss.name")
    prediction = _prediction(config.model, loss_name)
    process, net = s["process"], s["net"]
    ema_specs = _ema_specs(config)
    resampler = _resampler(lcfg, process)
    if not config.get("method"):
        import inspect

        accepted = inspect.signature(loss).parameters
        bad = sorted(k for k in lcfg if k not in accepted or k in ("model", "key", "x0"))
        if bad:
            raise ValueError(f"loss.name={loss_name!r} does not take the config keys "
                             f"{['loss.' + k for k in bad]}")
    init_params, init_extra, update_extra, method = s["init_params"], None, None, None
    if config.get("method"):  # a method of diffjax.methods brings its own loss and sampler
        method = _method(config, s)
        loss_fn, takes_state = method.loss_fn, True
        ema_specs.update(method.ema_specs or {})
        init_params = method.init_params or init_params
        init_extra = method.init_extra
    else:
        takes_state = resampler is not None

        def loss_fn(params, key, batch, state=None):
            k_loss, k_drop = jax.random.split(key)
            model = net.bind(params, train=True, key=k_drop)
            cond = batch.get("label") if s["has_label"] else None
            kw = dict(lcfg)
            if resampler is not None:  # indices drawn from the current loss history
                kw["t_sampler"] = resampler.time_sampler(state.extra["resampler"])
            return loss(model, k_loss, batch["image"], process=process, prediction=prediction,
                        cond=cond, **kw)

    if resampler is not None:
        init_extra = lambda: {"resampler": resampler.init()}

        def update_extra(extra, aux):  # aux holds the global batch: no all-gather needed
            return {**extra, "resampler": resampler.update(extra["resampler"], aux["index"],
                                                           aux["unweighted"])}

    ocfg = _kw(config.optim)
    ocfg.setdefault("total_steps", int(config.train.num_steps))
    return dict(loss_fn=loss_fn, takes_state=takes_state, ema_specs=ema_specs,
                init_params=init_params, init_extra=init_extra, update_extra=update_extra,
                optimizer=T.make_optimizer(**ocfg), method=method)


def train(config, workdir) -> dict:
    """Train from ``config`` in ``workdir`` (resuming if checkpoints exist); then sample."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    s = _setup(config, workdir)
    scfg = config.get("sample") or {}
    _make_step(scfg), _grid(scfg, s["process"])  # a bad sample.* key fails now, not after training
    if scfg.get("x_init", None) not in (None, "prior", "uniform"):
        raise ValueError(f"unknown sample.x_init {scfg.get('x_init')!r}; expected 'prior' or "
                         "'uniform'")
    if float(scfg.get("guidance", 1.0)) != 1.0 and not s["num_classes"]:
        raise ValueError(f"sample.guidance={scfg.get('guidance')} needs a class-conditional "
                         "model (model.num_classes)")
    tcfg = config.train
    parts = _training_parts(config, s)
    optimizer, ema_specs = parts["optimizer"], parts["ema_specs"]
    mcfg = _kw(config.get("mesh"))
    mesh = T.make_mesh(mcfg.get("data", -1), mcfg.get("fsdp", 1))
    rules = mcfg.get("rules", None)
    batch_size = s["batch_size"]
    if batch_size % mesh.size:
        raise ValueError(f"data.batch_size={batch_size} must be divisible by the {mesh.size} devices")

    def init_state():
        return T.create_train_state(parts["init_params"], optimizer, seed=s["seed"],
                                    ema_names=tuple(ema_specs), mesh=mesh,
                                    init_extra=parts["init_extra"], rules=rules)

    ck = T.Checkpointer(workdir / "checkpoints", max_to_keep=int(tcfg.get("max_to_keep", 3)))
    state = T.restore_or_init(ck, init_state, s["loader"])
    start = int(state.step)
    sh = T.state_shardings(state, mesh, rules)
    batch_sh = {"image": T.batch_sharding(mesh, 1 + len(s["x_shape"]))}
    if s["has_label"]:
        batch_sh["label"] = T.batch_sharding(mesh, 1)
    step = T.jit_train_step(
        T.make_train_step(parts["loss_fn"], optimizer, ema_specs, batch_size,
                          loss_takes_state=parts["takes_state"],
                          update_extra=parts["update_extra"]), sh, batch_sh)
    keep = ("image", "label") if s["has_label"] else ("image",)
    to_device = lambda b: T.shard_batch({k: v for k, v in b.items() if k in keep}, mesh)
    meta = {"config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
            "x_shape": list(s["x_shape"]), "version": dj.__version__}
    print(f"training {config.model.name} on {config.data.name} {s['x_shape']} from step {start} "
          f"to {int(tcfg.num_steps)} on {mesh.size} device(s)")
    from diffjax.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(workdir / "tensorboard")
    every = int(tcfg.get("sample_every", 0))
    grid_cb = (lambda st: _sample_with(config, workdir, s, st, quiet=True,
                                       name=f"samples_{int(st.step):07d}")) if every else None
    state, history = T.fit(state, step, iter(s["loader"]), num_steps=int(tcfg.num_steps),
                           to_device=to_device, checkpointer=ck, loader=s["loader"],
                           save_every=int(tcfg.get("save_every", 1000)),
                           log_every=int(tcfg.get("log_every", 100)), workdir=workdir, meta=meta,
                           batch_size=batch_size, writer=writer, callback=grid_cb,
                           callback_every=every)
    ck.close()
    out = {"start_step": start, "end_step": int(state.step), "history": history}
    if int(state.step) >= int(tcfg.num_steps):
        out["samples"] = _sample_with(config, workdir, s, state)
        if s["heldout"] is not None:
            out["quality"] = quality_figure(np.load(workdir / "samples.npz")["samples"], s,
                                            workdir)
            writer.scalar("quality/sw1_samples_vs_heldout", out["quality"]["sw1_samples"],
                          int(state.step))
    writer.close()
    summary = {k: v for k, v in out.items() if k != "history"}
    if history:
        summary["final_loss"] = history[-1]["loss"]
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("summary:", json.dumps(summary, default=str))
    return out


def _resampler(lcfg: dict, process):
    """``loss.schedule_sampler`` (popped from ``lcfg``): None for uniform indices, else iDDPM's
    :class:`~diffjax.losses.LossSecondMomentResampler` over the process's ``T`` indices."""
    kind = lcfg.pop("schedule_sampler", "uniform")
    opts = {k: lcfg.pop(k) for k in SCHEDULE_SAMPLER_KEYS[1:] if k in lcfg}
    if kind not in SCHEDULE_SAMPLERS:
        raise ValueError(f"unknown loss.schedule_sampler {kind!r}; expected one of "
                         f"{list(SCHEDULE_SAMPLERS)}")
    if kind == "uniform":
        if opts:
            raise ValueError(f"loss keys {sorted(opts)} need loss.schedule_sampler="
                             "'loss-second-moment'")
        return None
    if not isinstance(process, dj.DiscreteVP):
        raise ValueError("loss.schedule_sampler='loss-second-moment' draws DDPM indices and "
                         "needs a discrete process (process.name ddpm_linear or ddpm_cosine)")
    return L.LossSecondMomentResampler(process.num_steps, **opts)


def _method(config, s):
    """The :mod:`diffjax.methods` method named by ``config.method.name``."""
    from diffjax import methods

    return methods.build_method(config, s)


def quality_figure(samples, s, workdir) -> dict:
    """How well the samples match held-out data, beside two references, in ``quality.json``.

    * ``classifier score``: the Inception-Score formula with a logistic-regression classifier
      fitted on the training images (:mod:`diffjax.metrics.classifier_score`; labelled data
      only), and its mean top-class confidence. Higher is better; held-out real images give
      the ceiling, a Gaussian fit to the training data (first and second moments only) the
      floor a model must beat.
    * ``sliced W1`` in pixel space to the held-out images (lower is better; weakly
      discriminative at these sample sizes, reported for completeness).
    """
    from diffjax.metrics.classifier_score import classifier_score, fit_classifier

    held = s["heldout"].reshape(len(s["heldout"]), -1)
    n = min(len(held), len(samples))
    gen = np.asarray(samples, np.float32).reshape(len(samples), -1)[:n]
    train_imgs = np.asarray(s["source"].images, np.float32).reshape(len(s["source"]), -1)
    rng = np.random.default_rng(0)
    gauss = rng.multivariate_normal(train_imgs.mean(0), np.cov(train_imgs.T), size=n)
    sw = lambda a: dj.analytic.sliced_wasserstein(a, held[:n], num_quantiles=99)
    q = {"n": n, "sw1_samples": sw(gen), "sw1_train_images": sw(train_imgs[:n]),
         "sw1_gaussian_fit": sw(gauss)}
    if s["source"].labels is not None:
        clf = fit_classifier(train_imgs, s["source"].labels)
        for name, x in (("samples", gen), ("heldout", held[:n]), ("gaussian_fit", gauss)):
            c = classifier_score(clf, x)
            q[f"classifier_score_{name}"] = c["score"]
            q[f"confidence_{name}"] = c["confidence"]
        print(f"quality, digit-classifier score over {n} images (higher is better): samples "
              f"{q['classifier_score_samples']:.2f} | held-out real {q['classifier_score_heldout']:.2f}"
              f" | Gaussian fit {q['classifier_score_gaussian_fit']:.2f}")
    (Path(workdir) / "quality.json").write_text(json.dumps(q, indent=2))
    print(f"quality, sliced W1 to {n} held-out images (lower is better): samples "
          f"{q['sw1_samples']:.4f} | real training images {q['sw1_train_images']:.4f} | "
          f"Gaussian fit {q['sw1_gaussian_fit']:.4f}")
    return q


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


def _make_step(scfg):
    """The sampler step of ``config.sample``: a :data:`diffjax.samplers.SAMPLERS` name with
    keyword arguments in ``step``, or ``pc`` (``predictor`` name + ``corrector`` in
    :data:`CORRECTORS` with ``snr`` and ``corrector_steps``)."""
    name = scfg.get("sampler", "ddim")
    if name != "pc":
        _pick(S.SAMPLERS, name, "sample.sampler")
        return S.get_step(name, **_kw(scfg.get("step")))
    pname = scfg.get("predictor", "reverse_diffusion")
    _pick(S.SAMPLERS, pname, "sample.predictor")
    predictor = S.get_step(pname, **_kw(scfg.get("step")))
    cname = scfg.get("corrector", "langevin")
    if cname in (None, "none"):
        return predictor
    corrector = _pick(CORRECTORS, cname, "sample.corrector")
    return S.PredictorCorrector(predictor, corrector(float(scfg.get("snr", 0.16)),
                                                     int(scfg.get("corrector_steps", 1))))


def _x_init(scfg, key, shape):
    """``sample.x_init``: ``None`` (the process prior) or ``uniform`` (NCSN's start, a uniform
    draw on ``sample.x_init_range``, default the data range ``(-1, 1)``)."""
    kind = scfg.get("x_init", None)
    if kind in (None, "prior"):
        return None
    if kind == "uniform":
        lo, hi = tuple(scfg.get("x_init_range", (-1.0, 1.0)))
        return jax.random.uniform(jax.random.fold_in(key, 7), shape, jnp.float32, lo, hi)
    raise ValueError(f"unknown sample.x_init {kind!r}; expected 'prior' or 'uniform'")


def _sampling_model(config, s, state, guided: bool = True) -> dict:
    """What every sampling path shares: the weights (``sample.ema``), the bound model (wrapped in classifier-free guidance when ``sample.guidance != 1``
    and ``guided``; a likelihood wants the plain model), its prediction kind and whether it
    outputs a learned variance. Raises when guidance is asked of an unconditional model."""
    scfg = config.get("sample") or {}
    net = s["net"]
    which = scfg.get("ema", next(iter(state.ema), None))
    # (the sampler driver replicates weights committed to a training mesh onto its own)
    params = state.ema[which] if which else state.params
    model = jax.tree_util.Partial(lambda p, x, t, c=None: net.bind(p)(x, t, c), params)
    loss_name = (config.get("loss") or {}).get("name", "ddpm")
    learned = bool(scfg.get("learned_variance", loss_name in LEARNED_VARIANCE_LOSSES))
    scale = float(scfg.get("guidance", 1.0))
    if scale != 1.0 and guided:
        if not s["num_classes"]:
            raise ValueError(f"sample.guidance={scfg.get('guidance')} needs a class-conditional "
                             "model (model.num_classes)")
        from diffjax.models.guidance_cfg import classifier_free_guidance

        channels = scfg.get("guidance_channels", "all")
        model = classifier_free_guidance(
            model, scale, channels=channels if channels == "all" else int(channels),
            null_label=s["num_classes"], learned_variance=learned)
    return dict(model=model, params=params, which=which, guidance=scale, learned=learned,
                prediction=_prediction(config.model, loss_name))


def _sample_with(config, workdir, s, state, num_samples=None, seed=None, quiet=False,
                 name="samples") -> dict:
    from diffjax.utils import density_image, image_grid, save_png

    scfg = config.get("sample") or {}
    sm = _sampling_model(config, s, state)
    model, params, prediction, learned = sm["model"], sm["params"], sm["prediction"], sm["learned"]
    process, which = s["process"], sm["which"]
    step = _make_step(scfg)
    n = int(num_samples or scfg.get("num_samples", 64))
    key = jax.random.key(int(seed if seed is not None else s["seed"]))
    shape = (n,) + s["x_shape"]
    # class-conditional: class-balanced labels 0, 1, ..., K-1, 0, ...
    cond = jnp.arange(n, dtype=jnp.int32) % s["num_classes"] if s["num_classes"] else None
    if config.get("method"):  # the method's own (few-step) sampler
        x = _method(config, s).sample(params, key, n, cond)
    else:
        x = dj.sample(model, key, shape, _grid(scfg, process), step, process=process,
                      prediction=prediction, cond=cond, learned_variance=learned,
                      x_init=_x_init(scfg, key, shape), clip_x0=scfg.get("clip_x0", None))
    x = np.asarray(x)
    workdir = Path(workdir)
    np.savez(workdir / f"{name}.npz", samples=x)
    if x.ndim == 2 and x.shape[1] == 2:
        save_png(workdir / f"{name}.png", density_image(x))
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        save_png(workdir / f"{name}.png", image_grid(x[:64]))
    elif x.ndim == 4:  # latents: a preview of the first 3 channels (not decoded by a VAE)
        v = x[:64, ..., :3]
        save_png(workdir / f"{name}.png", image_grid(v / max(float(np.abs(v).max()), 1e-6)))
    if not quiet:
        print(f"wrote {n} samples to {workdir / (name + '.npz')} and {workdir / (name + '.png')}")
    return {"num_samples": n, "path": str(workdir / f"{name}.png"), "weights": which or "params"}


def _restore(config, workdir):
    s = _setup(config, workdir)
    parts = _training_parts(config, s)
    template = T.create_train_state(parts["init_params"], parts["optimizer"], seed=s["seed"],
                                    ema_names=tuple(parts["ema_specs"]),
                                    init_extra=parts["init_extra"])
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


def evaluate(config, workdir, num_samples=None, images=None) -> dict:
    """The ``eval`` command: evaluate the newest checkpoint in ``workdir`` (or, with ``images``,
    samples made elsewhere); writes ``eval.json`` and ``eval.md``. The ``eval`` config keys,
    arguments and result are documented at :func:`diffjax.experiment_eval.evaluate`."""
    from diffjax.experiment_eval import evaluate as _evaluate

    return _evaluate(config, workdir, num_samples, images)
