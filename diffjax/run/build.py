"""From a config to library objects: process, network, data, method, optimizer, EMAs.

Config sections (all keys optional unless noted):

* ``process``: ``name`` in :data:`PROCESSES` (+ its keyword arguments, e.g. ``num_steps``).
* ``model``: ``name`` in :data:`MODELS` (required), ``preset`` or keyword arguments, and the
  network's conventions (:class:`~diffjax.models.Network`): ``time_input``
  (:func:`diffjax.adapters.time_input`), ``negate_output``, ``precond`` (``edm | vp | ve``:
  EDM preconditioning, which makes the network an ``x0`` model fed ``c_noise``),
  ``sigma_data``, and ``prediction`` (``eps | x0 | v | score | velocity``).
* ``loss`` (plain diffusion): ``name`` in :data:`LOSSES` + keyword arguments of that loss;
  ``schedule_sampler`` (:data:`SCHEDULE_SAMPLERS`, DDPM-index losses) with
  ``history_per_term`` and ``uniform_prob``.
* ``method``: ``name`` in :data:`diffjax.methods.METHODS` and that factory's keyword
  arguments (consistency, shortcut, IMM, model guidance); ``loss`` is then unused. CD's
  teacher: ``teacher_workdir``, ``teacher_config``, ``teacher_ema``,
  ``allow_untrained_teacher`` (smoke tests only).
* ``data``: ``name`` (a data set name or path, :func:`diffjax.data.get_source`),
  ``batch_size`` (global), ``split``, ``flip``, ``holdout``, ``data_dir`` (TFDS directory),
  ``image_size`` (centre crop + resize, :class:`diffjax.data.ResizedSource`) with
  ``resize_method``; image folders only: ``channels`` (1 or 3), ``check``
  (``auto | header | decode | none``) and ``on_error`` (``raise | skip``), see
  :class:`diffjax.data.ImageFolderSource`.
* ``optim``: :func:`diffjax.train.make_optimizer` arguments; ``ema``: name -> decay, or name ->
  ``{halflife_kimg, rampup_ratio}`` (EDM's EMA).
* ``train``: ``num_steps``, ``log_every``, ``save_every``, ``max_to_keep``, ``sample_every``;
  ``seed`` at the top level.
* ``sample``: ``sampler`` (a name of :data:`diffjax.samplers.SAMPLERS`, or ``pc``:
  ``predictor`` + ``corrector`` (:data:`CORRECTORS`) with ``snr`` and ``corrector_steps``),
  ``num_steps``, ``grid`` (``discrete | uniform | karras | log_snr``), ``t_min``, step keyword
  arguments in ``step``, ``num_samples``, ``ema`` (which weights), ``clip_x0``,
  ``learned_variance`` (default: true for the ``hybrid``/``vlb`` losses), ``x_init``
  (``prior`` or NCSN's ``uniform`` on ``x_init_range``), ``guidance`` (classifier-free
  guidance scale, DiT convention: 1 = none) and ``guidance_channels``.
* ``mesh``: ``data``, ``fsdp`` axis sizes, ``rules``.
* ``eval``: see :mod:`diffjax.run.evaluate`.

Shape check: before any compute, the network's input (``image_size``/``in_channels``, DiT
``input_size``) is compared with one data example, and a ``ValueError`` names the keys.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import diffjax as dj
from diffjax import losses as L
from diffjax import methods as M
from diffjax import samplers as S
from diffjax import train as T
from diffjax.models.denoiser import Network
from diffjax.run.config import Section, load_config, pick, section

__all__ = ["PROCESSES", "LOSSES", "MODELS", "CORRECTORS", "SCHEDULE_SAMPLERS",
           "LEARNED_VARIANCE_LOSSES", "Data", "Built", "build_process", "build_model",
           "build_network", "model_input", "build_data", "build_sampling", "build_method",
           "build", "ema_specs_of", "prediction_of", "sample_weights", "restore", "read_run"]

PROCESSES = {
    "ddpm_linear": lambda num_steps=1000, **kw: dj.DiscreteVP.linear(num_steps, **kw),
    "ddpm_cosine": lambda num_steps=1000, **kw: dj.DiscreteVP.cosine(num_steps, **kw),
    "vp": dj.VP,
    "subvp": dj.SubVP,
    "ve": dj.VE,
    "edm": dj.EDM,
    "linear": dj.Linear,
    "gvp": dj.GVP,
    # Sohl-Dickstein et al. 2015's baseline b_t = 1/linspace(T, 2, T)_t (T = 40 on 2-D data)
    "sohl_dickstein": lambda num_steps=40, **kw: dj.DiscreteVP.from_betas(
        dj.processes.sohl_dickstein_betas(num_steps, **kw)),
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
#: ``loss-second-moment`` is iDDPM's importance sampler for L_vlb (sec. 3.3, eq. 18).
SCHEDULE_SAMPLERS = ("uniform", "loss-second-moment")
#: the ``loss`` keys that configure the index draw rather than the loss itself
SCHEDULE_SAMPLER_KEYS = ("schedule_sampler", "history_per_term", "uniform_prob")
#: losses whose network outputs ``2C`` channels (iDDPM's learned variance)
LEARNED_VARIANCE_LOSSES = ("hybrid", "vlb")
#: corrector name -> ``(snr, n_steps) -> Step`` for ``sample.sampler = 'pc'``
CORRECTORS = {"langevin": lambda snr, n_steps: S.LangevinCorrector(snr, n_steps)}
#: ``model`` keys that configure the network's conventions, not its constructor
CONVENTION_KEYS = ("time_input", "prediction", "negate_output", "precond", "sigma_data")
#: ``method`` keys the run layer reads itself (CD's teacher checkpoint)
TEACHER_KEYS = ("teacher_workdir", "teacher_config", "teacher_ema", "allow_untrained_teacher")


def build_process(cfg):
    kw = section(cfg)
    return pick(PROCESSES, kw.pop("name", "ddpm_linear"), "process.name")(**kw)


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


def _sohl_dickstein(preset, kw, rngs):
    from diffjax.models.sohl_dickstein import SohlDicksteinMLP

    return SohlDicksteinMLP(**kw, rngs=rngs)


def _gan(cls_name):
    def make(preset, kw, rngs):
        from diffjax.models import gan

        return getattr(gan, cls_name)(**kw, rngs=rngs)
    return make


#: model name -> ``(preset, kwargs, rngs) -> nnx.Module``
MODELS = {"mlp": _mlp, "unet": _unet, "adm": _adm, "ncsnpp": _ncsnpp, "dit": _dit,
          "sohl_dickstein": _sohl_dickstein, "gan_generator": _gan("ConvGenerator"),
          "dcgan": _gan("DCGANGenerator"), "gan_mlp": _gan("MLPGenerator"),
          "unet3d": lambda preset, kw, rngs: _unet3d(preset, kw, rngs)}


def _unet3d(preset, kw, rngs):
    from diffjax.models.unet3d import UNet3D, unet3d_from_preset

    return unet3d_from_preset(preset, rngs=rngs, **kw) if preset else UNet3D(**kw, rngs=rngs)


def build_model(cfg, rngs: nnx.Rngs):
    """The network named by ``cfg.name`` (a key of :data:`MODELS`), from ``cfg.preset`` and
    keyword overrides; convention keys (:data:`CONVENTION_KEYS`) are not the constructor's."""
    kw = section(cfg)
    name = kw.pop("name", None)
    for k in CONVENTION_KEYS:
        kw.pop(k, None)
    preset = kw.pop("preset", None)
    if name not in MODELS:
        raise ValueError(f"unknown model.name {name!r}; expected one of {sorted(MODELS)}")
    # model.dtype = 'bfloat16': bf16 compute; parameters stay float32 (the master weights)
    for key in ("dtype", "param_dtype"):
        if isinstance(kw.get(key), str):
            kw[key] = jnp.dtype(kw[key])
    return MODELS[name](preset, kw, rngs)


def build_network(model_cfg, process) -> Network:
    """The :class:`~diffjax.models.Network` of ``config.model`` on ``process``."""
    m = section(model_cfg)
    precond = m.get("precond", None)
    if precond not in (None, "edm", "vp", "ve"):
        raise ValueError(f"unknown model.precond {precond!r}; expected 'edm', 'vp' or 've' "
                         "(or no key)")
    return Network(lambda rngs: build_model(model_cfg, rngs), process,
                   time_input=m.get("time_input", "t"),
                   negate_output=bool(m.get("negate_output", False)), precond=precond,
                   sigma_data=float(m.get("sigma_data", 0.5)))


def model_input(model_cfg, net) -> tuple[tuple | None, str]:
    """``((H, W, C) or None, which config keys set it)`` for an (abstract) image network."""
    if hasattr(net, "config") and hasattr(net.config, "input_size"):  # DiT
        c = net.config
        return (c.input_size, c.input_size, c.in_channels), "model.input_size/model.in_channels"
    size = getattr(net, "image_size", None)
    if size is None and model_cfg.get("name") == "ncsnpp":
        from diffjax.models.ncsnpp import NCSNPP_PRESETS

        size = {**NCSNPP_PRESETS.get(model_cfg.get("preset"), {}),
                **section(model_cfg)}.get("image_size", 32)
    chans = getattr(net, "in_channels", None)
    if size is None or chans is None:
        return None, ""
    return (int(size), int(size), int(chans)), "model.image_size/model.in_channels"


def prediction_of(config) -> str:
    """What the network predicts: ``x0`` when preconditioned, else ``model.prediction`` or
    the loss's natural kind."""
    if config.model.get("precond", None):
        return "x0"
    loss_name = (config.get("loss") or {}).get("name", "ddpm")
    default = {"edm": "x0", "flow_matching": "velocity", "ncsn": "score",
               "score_sde": "score"}.get(loss_name, "eps")
    return config.model.get("prediction", default)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Data:
    """The data side of a run: the training source and loader, the held-out records, one
    example's shape and whether it is labelled. ``batch_size`` is the global batch (summed
    over hosts; ``loader.batch_size`` is this host's share)."""

    source: Any
    loader: Any
    heldout: np.ndarray | None
    x_shape: tuple
    has_label: bool
    name: str
    batch_size: int


#: the keys of ``config.data`` (see the module docstring)
DATA_KEYS = ("name", "split", "batch_size", "flip", "holdout", "data_dir", "image_size",
             "resize_method", "channels", "check", "on_error")


def data_source(dcfg: dict):
    """The data source of ``config.data`` (popping ``name``, ``split``, ``data_dir``); errors
    name the ``data.*`` key at fault."""
    from diffjax import data as D

    name = dcfg.pop("name", None)
    if not name:
        raise ValueError("config key data.name is required (a data set name or a path)")
    split = dcfg.pop("split", "train")
    kwargs = {}
    folder_keys = {k: dcfg.pop(k) for k in ("channels", "check", "on_error") if k in dcfg}
    image_size = dcfg.pop("image_size", None)
    resize_method = dcfg.pop("resize_method", "cubic")
    if folder_keys:
        if not Path(str(name)).expanduser().is_dir():
            raise ValueError(f"config keys {['data.' + k for k in folder_keys]} apply to image "
                             f"folders only; data.name={name!r} is not a folder")
        kwargs.update(folder_keys)
    if image_size is not None and Path(str(name)).expanduser().is_dir():
        kwargs["same_size"] = False  # every image is cropped and resized below
    data_dir = dcfg.pop("data_dir", None)
    if data_dir:
        if not Path(data_dir).expanduser().is_dir():
            raise FileNotFoundError(f"data.data_dir={data_dir!r} does not exist (the TFDS data "
                                    f"directory holding {name!r}); prepare it or fix the key")
        kwargs["data_dir"] = str(Path(data_dir).expanduser())
    try:
        source = D.get_source(name, split, **kwargs)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"data.name={name!r}: {e}") from e
    except ValueError as e:
        raise ValueError(f"data.name={name!r}: {e}") from e
    if image_size is not None:
        try:
            source = D.ResizedSource(source, image_size, method=resize_method)
        except ValueError as e:
            raise ValueError(f"data.image_size={image_size!r} / data.resize_method="
                             f"{resize_method!r}: {e}") from e
    return source


def build_data(config) -> Data:
    """``config.data`` -> :class:`Data` (the last ``data.holdout`` records never trained on)."""
    from diffjax import data as D

    seed = int(config.get("seed", 0))
    dcfg = section(config.data)
    name = dcfg.get("name")
    unknown = sorted(set(dcfg) - set(DATA_KEYS))
    if unknown:  # a key nothing reads would be silently ignored
        raise ValueError(f"unknown config keys {['data.' + k for k in unknown]}; expected some "
                         f"of {['data.' + k for k in DATA_KEYS]}")
    source = data_source(dcfg)
    holdout = int(dcfg.pop("holdout", 0))
    heldout = None
    if holdout:
        if not isinstance(source, D.ArraySource) or not 0 < holdout < len(source):
            raise ValueError(f"data.holdout={holdout} needs an in-memory data set with more "
                             f"than {holdout} records")
        heldout = np.asarray(source.images[-holdout:], np.float32)
        labels = None if source.labels is None else source.labels[:-holdout]
        source = D.ArraySource(source.images[:-holdout], labels)
    batch_size = int(dcfg.pop("batch_size", 64))
    flip = bool(dcfg.pop("flip", False))
    try:  # data.batch_size is the global batch: each host loads 1 / process_count of it
        loader = D.make_loader(source, global_batch_size=batch_size, seed=seed,
                               random_flip=flip)
    except ValueError as e:
        raise ValueError(f"data.batch_size={batch_size} (the global batch): {e}") from e
    example = next(iter(D.make_loader(source, batch_size=1, seed=seed)))
    return Data(source, loader, heldout, tuple(example["image"].shape[1:]), "label" in example,
                name, batch_size)


def check_shapes(model_cfg, network: Network, x_shape, has_label, data_name):
    """Raise (before any compute) when the data cannot feed the network."""
    want, keys = model_input(model_cfg, network.abstract)
    if want is not None and tuple(x_shape) != want:
        raise ValueError(
            f"data.name={data_name!r} yields examples of shape {tuple(x_shape)} but the model "
            f"({keys}) expects {want}; set {keys.replace('/', ' and ')} to match the data "
            "(or pick data of that size)")
    n = network.num_classes
    if n and not has_label:
        raise ValueError(f"the model is class-conditional (num_classes={n}) but "
                         f"data.name={data_name!r} has no labels")


# ----------------------------------------------------------------------------------------------
# sampling, method, EMAs
# ----------------------------------------------------------------------------------------------


def build_grid(scfg, process):
    kind = scfg.get("grid", "discrete" if isinstance(process, dj.DiscreteVP) else "karras")
    n = scfg.get("num_steps", None)
    if kind == "discrete":
        T_ = process.num_steps
        idx = range(T_) if n in (None, T_) else dj.processes.space_timesteps(T_, str(n))
        return dj.discrete_grid(idx, T_)
    n = int(n or 50)
    if kind == "uniform":
        return dj.uniform_grid(n, 1.0, float(scfg.get("t_min", 0.0)))
    if kind == "karras":
        return dj.karras_grid(process, n)
    if kind == "log_snr":
        return dj.log_snr_grid(process, n, 1.0, float(scfg.get("t_min", 1e-3)))
    raise ValueError(f"unknown sample.grid {kind!r}; expected discrete, uniform, karras or "
                     "log_snr")


def build_step(scfg):
    """The sampler step of ``config.sample``: a :data:`diffjax.samplers.SAMPLERS` name with
    keyword arguments in ``step``, or ``pc`` (``predictor`` + ``corrector``)."""
    name = scfg.get("sampler", "ddim")
    if name != "pc":
        return _step_of(name, section(scfg.get("step")), "sample.sampler")
    pname = scfg.get("predictor", "reverse_diffusion")
    predictor = _step_of(pname, section(scfg.get("step")), "sample.predictor")
    cname = scfg.get("corrector", "langevin")
    if cname in (None, "none"):
        return predictor
    corrector = pick(CORRECTORS, cname, "sample.corrector")
    return S.PredictorCorrector(predictor, corrector(float(scfg.get("snr", 0.16)),
                                                     int(scfg.get("corrector_steps", 1))))


def _step_of(name, kwargs: dict, key: str):
    """``SAMPLERS[name](**kwargs)``, the keywords checked against the step's signature.

    A keyword of another sampler is dropped with a printed note naming it (switching
    ``sample.sampler`` from a recipe's ``ddpm`` to ``ddim`` leaves DDPM's
    ``sample.step.variance`` behind, and ml_collections cannot delete a key from the command
    line); a keyword no sampler takes is a typo and raises, naming ``sample.step.<kw>``.
    """
    def takes(cls):
        ps = inspect.signature(cls).parameters
        return None if any(p.kind is p.VAR_KEYWORD for p in ps.values()) else set(ps)

    cls = pick(S.SAMPLERS, name, key)
    mine = takes(cls)
    if mine is None:
        return cls(**kwargs)
    extra = sorted(set(kwargs) - mine)
    if extra:
        others = set().union(*(takes(c) or set() for c in S.SAMPLERS.values()))
        typos = [k for k in extra if k not in others]
        if typos:
            raise ValueError(f"config keys {['sample.step.' + k for k in typos]} are not "
                             f"arguments of the {key}={name!r} step (nor of any sampler); "
                             f"expected some of {sorted(mine)}")
        print(f"note: ignoring {['sample.step.' + k for k in extra]}: arguments of another "
              f"sampler, not of {key}={name!r} (which takes {sorted(mine)})", flush=True)
        kwargs = {k: v for k, v in kwargs.items() if k in mine}
    return cls(**kwargs)


def build_sampling(config, process, **overrides) -> M.Sampling:
    """``config.sample`` -> :class:`~diffjax.methods.Sampling` (plain diffusion);
    ``overrides`` replace fields (``step=``, ``grid=``, ``guidance=``, ...)."""
    scfg = config.get("sample") or {}
    loss_name = (config.get("loss") or {}).get("name", "ddpm")
    x_init = scfg.get("x_init", None) or "prior"
    if x_init not in ("prior", "uniform"):
        raise ValueError(f"unknown sample.x_init {x_init!r}; expected 'prior' or 'uniform'")
    kw = dict(grid=build_grid(scfg, process), step=build_step(scfg),
              prediction=prediction_of(config),
              learned_variance=bool(scfg.get("learned_variance",
                                             loss_name in LEARNED_VARIANCE_LOSSES)),
              clip_x0=scfg.get("clip_x0", None), x_init=x_init,
              x_init_range=tuple(scfg.get("x_init_range", (-1.0, 1.0))),
              guidance=float(scfg.get("guidance", 1.0)),
              guidance_channels=scfg.get("guidance_channels", "all"))
    unknown = sorted(set(overrides) - set(kw))
    if unknown:
        raise ValueError(f"unknown sampling overrides {unknown}; expected some of {sorted(kw)}")
    kw.update(overrides)
    return M.Sampling(**kw)


def resampler_of(lcfg: dict, process):
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


def plain_loss(config):
    """``(loss function, its keyword arguments, resampler config)`` of ``config.loss``;
    unknown keys raise naming them."""
    lcfg = section(config.get("loss"))
    loss_name = lcfg.pop("name", "ddpm")
    loss = pick(LOSSES, loss_name, "loss.name")
    sampler_cfg = {k: lcfg.pop(k) for k in SCHEDULE_SAMPLER_KEYS if k in lcfg}
    accepted = inspect.signature(loss).parameters
    bad = sorted(k for k in lcfg if k not in accepted or k in ("model", "key", "x0"))
    if bad:
        raise ValueError(f"loss.name={loss_name!r} does not take the config keys "
                         f"{['loss.' + k for k in bad]}")
    return loss, lcfg, sampler_cfg


def teacher_loader(keys: Section, setup: M.Setup, seed: int):
    """CD's teacher ``() -> (bind, params)``: a finished EDM run (``teacher_workdir`` +
    ``teacher_config``), or (smoke tests only) a fresh initialisation."""
    workdir, tconfig = keys.pop("teacher_workdir", ""), keys.pop("teacher_config", "")
    which = keys.pop("teacher_ema", "ema")
    untrained = bool(keys.pop("allow_untrained_teacher", False))
    if untrained and not workdir:
        def fresh():
            print("WARNING: config.method.allow_untrained_teacher=True: distilling a freshly "
                  "initialised, untrained teacher (a smoke test only; the samples mean nothing)")
            return setup.network.bind, setup.network.init(jax.random.key(seed + 1))
        return fresh
    if not workdir or not tconfig:
        raise ValueError("method 'cd' needs config.method.teacher_workdir (a finished EDM run) "
                         "and config.method.teacher_config (its config file, e.g. "
                         "'configs/edm_cifar10.py'); for a smoke test set "
                         "config.method.allow_untrained_teacher=True")

    def restored():
        built, state = restore(load_config(tconfig), workdir)
        params = state.ema[which] if which else state.params
        want = jax.tree_util.tree_structure(jax.eval_shape(setup.network.init,
                                                           jax.random.key(0)))
        if jax.tree_util.tree_structure(params) != want:
            raise ValueError(f"the teacher in {workdir!r} ({tconfig}) has a different network "
                             "than config.model: CD initialises the student from the teacher, "
                             "so they must match")
        return built.setup.network.bind, params

    return restored


def build_method(config, setup: M.Setup, *, teacher=None) -> M.Method:
    """The :class:`~diffjax.methods.Method` of ``config``: ``config.method`` when present
    (its keys are the factory's keyword arguments), else plain diffusion from ``loss`` and
    ``sample``. ``teacher``: CD only, an in-memory ``(bind, params)`` teacher."""
    seed = int(config.get("seed", 0))
    if not config.get("method"):
        if teacher is not None:
            raise ValueError("teacher= is for config.method.name='cd' only")
        loss, lkw, scfg = plain_loss(config)
        resampler = resampler_of(dict(scfg), setup.process)
        return M.diffusion(setup, loss=loss, loss_kwargs=lkw, resampler=resampler,
                           sampling=build_sampling(config, setup.process))
    keys = Section(config.method, "method")
    name = keys.pop("name")
    factory = pick({k: v for k, v in M.METHODS.items() if k != "diffusion"}, name,
                   "config.method.name")
    kw = dict(keys.d)
    if name == "cd":
        kw["teacher"] = (teacher_loader(keys, setup, seed) if teacher is None
                         else teacher if callable(teacher) else (lambda: teacher))
        for k in TEACHER_KEYS:
            kw.pop(k, None)
    elif teacher is not None:
        raise ValueError(f"teacher= is for method 'cd' only; got method {name!r}")
    accepted = inspect.signature(factory).parameters
    bad = sorted(k for k in kw if k not in accepted or k == "setup")
    if bad:
        raise ValueError(f"unknown config.method keys {bad} for method {name!r}; expected some "
                         f"of {sorted(k for k in accepted if k not in ('setup', 'teacher'))}")
    return factory(setup, **kw)


def ema_specs_of(config, method: M.Method) -> dict:
    """The run's EMAs: ``config.ema`` (name -> decay, or name -> ``{halflife_kimg,
    rampup_ratio}``, EDM's) and those the method defines; every EMA the method reads must
    exist, and no name may be defined twice."""
    out = {}
    for k, v in section(config.get("ema")).items():
        out[k] = T.EMASpec(**v) if isinstance(v, dict) else T.EMASpec(decay=float(v))
    clash = sorted(set(out) & set(method.ema_specs))
    if clash:
        raise ValueError(f"config.ema defines {clash}, which config.method also defines (its "
                         "*_decay key or schedule); set one of them, or rename the method's EMA")
    out.update(method.ema_specs)
    missing = [n for n in method.reads_emas if n not in out]
    if missing:
        raise ValueError(f"config.method names the EMA {missing[0]!r}, which config.ema lacks; "
                         f"add config.ema.{missing[0]} or set the method's *_decay key")
    return out


def sample_weights(config, state) -> tuple[Any, str]:
    """``(params, name)`` a run samples with: ``sample.ema`` (default: the first EMA), or the
    online parameters (no EMA, or ``sample.ema`` set to ``params``)."""
    which = (config.get("sample") or {}).get("ema", next(iter(state.ema), None))
    if not which or which == "params":
        return state.params, "params"
    if which not in state.ema:
        raise ValueError(f"sample.ema={which!r} is not an EMA of this run; expected one of "
                         f"{sorted(state.ema) + ['params']}")
    return state.ema[which], which


@dataclasses.dataclass
class Built:
    """Everything a command needs, built from a config (and the data, or a saved shape)."""

    config: Any
    setup: M.Setup
    method: M.Method
    ema_specs: dict
    optimizer: Any
    seed: int
    data: Data | None = None

    def init_state(self, mesh=None, rules=None):
        """A fresh :class:`~diffjax.train.TrainState` (sharded on ``mesh`` when given)."""
        init = self.method.init_params or self.setup.network.init
        return T.create_train_state(init, self.optimizer, seed=self.seed,
                                    ema_names=tuple(self.ema_specs), mesh=mesh,
                                    init_extra=self.method.init_extra, rules=rules)

    def abstract_state(self, mesh=None, rules=None):
        """:meth:`init_state`'s shapes, dtypes and shardings, nothing allocated (the target
        a checkpoint is restored into; on one device without ``mesh``)."""
        init = self.method.init_params or self.setup.network.init
        return T.abstract_train_state(init, self.optimizer, seed=self.seed,
                                      ema_names=tuple(self.ema_specs), mesh=mesh,
                                      init_extra=self.method.init_extra, rules=rules)


def build(config, *, data: bool = True, x_shape=None, has_label: bool = False,
          teacher=None) -> Built:
    """``config`` -> :class:`Built`. With ``data`` the data set is opened (its example shape
    checked against the network); without, ``x_shape``/``has_label`` describe it (a restored
    run's saved shape)."""
    process = build_process(config.get("process"))
    d = build_data(config) if data else None
    if d is not None:
        x_shape, has_label, name, batch = d.x_shape, d.has_label, d.name, d.batch_size
    else:
        name, batch = section(config.data).get("name"), int(section(config.data).get(
            "batch_size", 64))
    network = build_network(config.model, process)
    check_shapes(config.model, network, x_shape, has_label, name)
    num_classes = network.num_classes if has_label else None
    setup = M.Setup(network, tuple(x_shape), num_classes, batch,
                    int(config.train.num_steps), process)
    method = build_method(config, setup, teacher=teacher)
    ocfg = section(config.get("optim"))
    if method.optimizer is not None:  # GANs: one optimizer per network, the method's keys
        if ocfg:
            raise ValueError(f"method {method.name!r} builds its own optimizers from its "
                             f"config.method keys; remove config.optim ({sorted(ocfg)})")
        optimizer = method.optimizer
    else:
        ocfg.setdefault("total_steps", int(config.train.num_steps))
        optimizer = T.make_optimizer(**ocfg)
    return Built(config, setup, method, ema_specs_of(config, method), optimizer,
                 int(config.get("seed", 0)), d)


def read_run(workdir) -> dict:
    """``workdir/run.json``: the config, data shape and version the run was trained with."""
    path = Path(workdir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {workdir!r} holds no diffjax run "
                                "(train one with `python -m diffjax train --workdir=...`)")
    return json.loads(path.read_text())


def restore(config, workdir, *, data: bool = False, teacher=None) -> tuple[Built, Any]:
    """``(built, state)`` of the newest checkpoint in ``workdir``, restored into abstract
    shapes on one device (no throwaway concrete state is built first). The data set is opened
    only with ``data`` or when ``workdir/run.json`` does not record the data shape."""
    workdir = Path(workdir)
    ckdir = workdir / "checkpoints"
    if not ckdir.is_dir() or not any(p.name.isdigit() for p in ckdir.iterdir()):
        # before building anything, and without creating the folder
        raise FileNotFoundError(f"no checkpoint under {ckdir}; run `python -m diffjax train` "
                                "with this --workdir first")
    saved = read_run(workdir) if (workdir / "run.json").is_file() and not data else None
    net = {}
    if teacher is None and section(config.get("method")).get("name") == "cd":
        # CD's teacher weights are in the checkpoint (state.extra['teacher']); the restore
        # target needs only their shapes, so never re-read the teacher's run for it
        def teacher():
            abstract = jax.eval_shape(net["network"].init, jax.random.key(0))
            return net["network"].bind, jax.tree_util.tree_map(
                lambda a: np.zeros(a.shape, a.dtype), abstract)
    if saved is not None:
        built = build(config, data=False, x_shape=tuple(saved["x_shape"]),
                      has_label=bool(saved.get("has_label", False)), teacher=teacher)
    else:
        built = build(config, teacher=teacher)
    net["network"] = built.setup.network
    ck = T.Checkpointer(workdir / "checkpoints")
    found = ck.restore_latest(built.abstract_state())
    ck.close()
    if found is None:
        raise FileNotFoundError(f"no checkpoint under {workdir / 'checkpoints'}; run `python -m "
                                "diffjax train` with this --workdir first")
    return built, found[1]
