"""Few-step and guidance-in-training methods as trainer plug-ins: ``config.method``.

A config with a ``method`` section (``config.method.name`` in :data:`METHODS`) trains with the
method's own loss, extra EMAs, initial parameters and sampler instead of ``config.loss``;
:func:`diffjax.experiment.train` calls :func:`build_method` and uses the returned
:class:`Method`. The maths lives in :mod:`diffjax.losses` and :mod:`diffjax.samplers.few_step`;
this module only binds a network to it:

* ``'cd'`` / ``'ct'``: consistency distillation / training (Song et al. 2023, arXiv 2303.01469,
  Alg. 2 and 3). The network must be EDM-preconditioned (``model.precond = 'edm'`` on the
  ``edm`` process); its raw part is re-wrapped in
  :class:`~diffjax.parameterization.ConsistencyPrecond` (boundary condition ``f(x, sigma_min) =
  x``). CD's teacher is the EDM denoiser of a finished run (``teacher_workdir`` +
  ``teacher_config``), which also initialises the student (the paper's fine-tuning). CT's target
  EMA follows ``mu(k)`` and its discretisation ``N(k)`` (:class:`~diffjax.losses.consistency.
  ct_schedule_fn`).
* ``'shortcut'``: shortcut models (Frans et al. 2024, arXiv 2410.12557, Alg. 1-2); a network
  with a second scalar input (DiT / ToyMLP ``second_scalar=True``) fed the integer step level;
  ``model.time_input = 'sit'`` so the network sees the paper's time (data at 1).
* ``'imm'``: inductive moment matching (Zhou et al. 2025, arXiv 2503.07565, Alg. 1 / eq. 12);
  ``model.time_input = 't'`` (the network gets ``1000 t`` from
  :func:`~diffjax.losses.imm.imm_precond`) and ``cond['s'] = 1000 s``.
* ``'mg'``: model guidance, "diffusion models without classifier-free guidance" (Tang et al.
  2025, arXiv 2502.12154, spec section 8a): a diffjax velocity model on the ``linear`` process,
  EMA network as the guide, sampled without CFG.

Method keys (``config.method``) are listed in each builder's docstring; unknown keys raise a
``ValueError`` naming them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

from diffjax import adapters
from diffjax import samplers as S
from diffjax.grids import uniform_grid
from diffjax.losses import consistency as cm
from diffjax.losses import imm as imm_lib
from diffjax.losses import model_guidance as mg_lib
from diffjax.losses import shortcut as sc_lib
from diffjax.parameterization import ConsistencyPrecond, EDMPrecond
from diffjax.processes import EDM, Linear
from diffjax.samplers import few_step
from diffjax.train.ema import EMASpec

__all__ = ["Method", "METHODS", "build_method", "consistency_function", "load_config"]


@dataclasses.dataclass(frozen=True)
class Method:
    """What the trainer needs from a method.

    Attributes:
      name: the method name (``config.method.name``).
      loss_fn: ``(params, key, batch, state) -> (per_example_loss (B,), aux)``; ``state`` is the
        pre-update :class:`~diffjax.train.TrainState` (``state.ema[name]``, ``state.step``).
      ema_specs: EMAs the method adds to the state (name -> :class:`~diffjax.train.EMASpec`).
      init_params: ``key -> params`` replacing the fresh initialisation (CD: the teacher's
        weights), or ``None``.
      sample: ``(params, key, n, cond) -> samples (n, *x_shape)``, the method's sampler.
      nfe: network evaluations per sample of ``sample``.
      init_extra: ``() -> dict`` of arrays the loss reads from ``state.extra`` (CD: the
        teacher's parameters, ``{'teacher': params}``), or ``None``. Carried in the state
        rather than closed over, so a large teacher is a jit argument, not a constant baked
        into the compiled step.
    """

    name: str
    loss_fn: Callable
    ema_specs: dict
    init_params: Callable | None
    sample: Callable
    nfe: int
    init_extra: Callable | None = None


def load_config(spec: str):
    """``'path/to/config.py[:variant]'`` -> ``get_config(variant)`` (the CLI's config files)."""
    path, _, variant = str(spec).partition(":")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    mod_spec = importlib.util.spec_from_file_location(p.stem, p)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.get_config(variant or None)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


class _Keys:
    """``config.method`` as a dict with defaults; :meth:`done` rejects keys no one read."""

    def __init__(self, section):
        d = section.to_dict() if hasattr(section, "to_dict") else dict(section)
        self.d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        self.used = {"name"}

    def __call__(self, key, default=None):
        self.used.add(key)
        return self.d.get(key, default)

    def done(self, name):
        unknown = sorted(set(self.d) - self.used)
        if unknown:
            raise ValueError(f"unknown config.method keys {unknown} for method {name!r}")


def _labels(s, batch):
    return batch.get("label") if s["has_label"] else None


def _ema_spec(config, name: str, decay, what: str) -> dict:
    """The spec to add for EMA ``name`` (``{}`` when ``config.ema`` already defines it)."""
    cfg_emas = dict(config.get("ema") or {})
    if name in cfg_emas:
        if decay is not None:
            raise ValueError(f"config.method.{what} is set but config.ema.{name} already "
                             f"defines that EMA; set one of them")
        return {}
    if decay is None:
        raise ValueError(f"config.method names the EMA {name!r}, which config.ema lacks; "
                         f"add config.ema.{name} or set config.method.{what}")
    return {name: decay if isinstance(decay, EMASpec) else EMASpec(decay=float(decay))}


def _x0_raw(net, params, *, train=False, key=None):
    """The raw network and sigma_data inside an EDM-preconditioned binder."""
    model = net.bind(params, train=train, key=key)
    if not isinstance(model, EDMPrecond):
        raise ValueError("consistency methods need an EDM-preconditioned network: set "
                         "model.precond='edm' (and process.name='edm')")
    return model.net, model.sigma_data


def consistency_function(net, params, process: EDM, *, train=False, key=None):
    """``f_theta``: the raw part of an EDM-preconditioned network re-wrapped in
    :class:`~diffjax.parameterization.ConsistencyPrecond` (``f(x, sigma_min) = x``), as CD/CT
    train and sample it; ``key`` is the dropout key when ``train``."""
    raw, sd = _x0_raw(net, params, train=train, key=key)
    return ConsistencyPrecond(raw, process, sd, sigma_min=process.sigma_min)


def _second_scalar(cond_y, s_value):
    """``cond`` for a network with a second scalar input (DiT / ToyMLP ``second_scalar``)."""
    c = {"s": s_value}
    if cond_y is not None:
        c["y"] = cond_y
    return c


# ----------------------------------------------------------------------------------------------
# consistency distillation / training
# ----------------------------------------------------------------------------------------------


def _load_teacher(m: _Keys, config, s, given=None):
    """(teacher ``'x0'`` binder, teacher params) of CD: ``given`` (in memory), from a finished
    run, or (smoke only) freshly initialised."""
    workdir, tconfig = m("teacher_workdir", ""), m("teacher_config", "")
    if given is not None:
        return given
    which = m("teacher_ema", "ema")
    if m("allow_untrained_teacher", False) and not workdir:
        print("WARNING: config.method.allow_untrained_teacher=True: distilling a freshly "
              "initialised, untrained teacher (a smoke test only; the samples mean nothing)")
        return s["net"], s["init_params"](jax.random.key(int(s["seed"]) + 1))
    if not workdir or not tconfig:
        raise ValueError("method 'cd' needs config.method.teacher_workdir (a finished EDM run) "
                         "and config.method.teacher_config (its config file, e.g. "
                         "'configs/edm_cifar10.py'); for a smoke test set "
                         "config.method.allow_untrained_teacher=True")
    from diffjax import experiment

    ts, tstate = experiment._restore(load_config(tconfig), workdir)
    params = tstate.ema[which] if which else tstate.params
    want = jax.tree_util.tree_structure(jax.eval_shape(s["init_params"], jax.random.key(0)))
    if jax.tree_util.tree_structure(params) != want:
        raise ValueError(f"the teacher in {workdir!r} ({tconfig}) has a different network than "
                         "config.model: CD initialises the student from the teacher, so they "
                         "must match")
    return ts["net"], params


def _consistency_metric(m: _Keys, s):
    """``(metric(state), extra())`` for CD/CT: a fixed distance name, or LPIPS.

    ``metric='lpips'`` (Song et al. 2023's choice for CIFAR-10 / ImageNet-64) loads an LPIPS-VGG16
    ``.npz`` (``lpips_weights``; :func:`diffjax.metrics.lpips.save_lpips_npz` converts the
    torchvision + ``lpips`` package weights; nothing is downloaded) with ``lpips_pooling``
    (``'avg'``: piq's ``replace_pooling=True``, what the reference trains with; ``'max'``: the
    ``lpips`` package) and ``lpips_resize`` (the reference's bilinear resize to 224 below 256
    pixels). Its weights ride in ``state.extra['lpips']``: arguments of the jitted step, not
    59 MB of constants folded into it.
    """
    name = m("metric", "l2")
    path, pooling, resize = m("lpips_weights", ""), m("lpips_pooling", "avg"), m("lpips_resize")
    if name != "lpips":  # a recipe's LPIPS keys stay valid when a variant switches to l2
        return (lambda state: name), (lambda: {})
    if not path:
        raise ValueError("config.method.metric='lpips' needs config.method.lpips_weights: the "
                         "path of an LPIPS-VGG16 .npz (diffjax.metrics.lpips.save_lpips_npz); "
                         "diffjax never downloads weights")
    resize = True if resize is None else bool(resize)
    if s["x_shape"][-1] != 3:
        raise ValueError(f"metric='lpips' compares RGB images (..., 3); this model's input is "
                         f"{tuple(s['x_shape'])}")
    from flax import nnx

    from diffjax.metrics import lpips as lp

    cache = {}

    def loaded():  # once, lazily: building the method for sampling never reads the file
        if not cache:
            with jax.ensure_compile_time_eval():  # may be first called inside the trainer's jit
                cache["g"], cache["w"] = nnx.split(lp.load_lpips(path, pooling=pooling))
        return cache

    metric = lambda state: lp.lpips_metric(nnx.merge(loaded()["g"], state.extra["lpips"]),
                                           resize=resize)
    return metric, (lambda: {"lpips": loaded()["w"]})


def _build_consistency(config, s, m: _Keys, mode: str, teacher=None) -> Method:
    """CD / CT. Keys: ``metric`` (``l2`` | ``l1`` | ``pseudo_huber`` | ``lpips`` with
    ``lpips_weights``, ``lpips_pooling``, ``lpips_resize``: :func:`_consistency_metric`),
    ``weighting``,
    ``sigma_data``, ``target_ema`` (EMA name of theta^-; ``''``: theta^- = theta),
    ``sample_ts`` (``[0]``: one step, else indices into a ``sample_grid``-point Karras grid),
    ``sample_grid``, ``clip`` (clamp samples to [-1, 1]).
    CD also: ``num_scales`` (N), ``solver`` (``heun`` | ``euler`` | ``ddim``), ``target_decay``
    (mu; unless ``config.ema`` has ``target_ema``), ``teacher_workdir``, ``teacher_config``,
    ``teacher_ema``, ``allow_untrained_teacher`` (smoke tests only).
    CT also: ``schedule`` (``'adaptive'``: the original CT's ``N(k)`` and ``mu(k)``;
    ``'ict'``: improved CT's doubling ``N(k)`` with no target EMA, ``target_ema = ''``),
    ``start_scales``, ``end_scales``, ``start_ema`` (s0, s1, mu0; ``start_ema`` only for
    ``'adaptive'``), ``total_steps`` (default ``config.train.num_steps``), ``level_sampling``
    (``'uniform'`` | ``'lognormal'``) with ``p_mean``, ``p_std`` (iCT: -1.1, 2.0).
    Improved CT (Song & Dhariwal 2023) is ``schedule='ict', level_sampling='lognormal',
    weighting='ict', metric='pseudo_huber', target_ema=''``."""
    process, net = s["process"], s["net"]
    if not isinstance(process, EDM):
        raise ValueError(f"method {mode!r} needs process.name='edm'; got "
                         f"{type(process).__name__}")
    _x0_raw(net, jax.eval_shape(s["init_params"], jax.random.key(0)))  # checks model.precond
    metric, lpips_extra = _consistency_metric(m, s)
    solver, weighting = m("solver", "heun"), m("weighting", "uniform")
    kw = dict(process=process, weighting=weighting, sigma_data=float(m("sigma_data", 0.5)))

    def f_apply(params, x, t, cond, key):
        return consistency_function(net, params, process, train=True, key=key)(x, t, cond)

    target = m("target_ema", "target")
    if mode == "cd":
        num_scales = int(m("num_scales", 18))
        mu = m("target_decay", None)
        ema_specs = _ema_spec(config, target, mu, "target_decay") if target else {}
        cache = {}

        def get_teacher():  # loaded once, lazily: sampling never needs it
            if "t" not in cache:
                # first called inside the trainer's jitted init: evaluate eagerly so the cache
                # holds arrays, never tracers of that trace
                with jax.ensure_compile_time_eval():
                    cache["t"] = _load_teacher(m, config, s, teacher)
            return cache["t"]

        # read the teacher keys now, so unknown-key checking sees them
        for k in ("teacher_workdir", "teacher_config", "teacher_ema", "allow_untrained_teacher"):
            m(k)
        init_params = lambda key: jax.tree_util.tree_map(jnp.asarray, get_teacher()[1])
        init_extra = lambda: {"teacher": jax.tree_util.tree_map(jnp.asarray, get_teacher()[1]),
                              **lpips_extra()}

        def loss_fn(params, key, batch, state):
            tnet = get_teacher()[0]
            tmodel = tnet.bind(state.extra["teacher"])
            tp = state.ema[target] if target else None
            return cm.consistency_loss(f_apply, params, tp, key, batch["image"],
                                       num_scales=num_scales, mode="cd", teacher=tmodel,
                                       solver=solver, cond=_labels(s, batch),
                                       metric=metric(state), **kw)
    else:
        total = int(m("total_steps", int(config.train.num_steps)))
        kind = m("schedule", "adaptive")
        if kind == "adaptive":
            sched = cm.ct_schedule_fn(total, int(m("start_scales", 2)),
                                      int(m("end_scales", 150)), float(m("start_ema", 0.9)))
            max_scales = int(m("end_scales", 150)) + 1
        elif kind == "ict":
            if target:
                raise ValueError("config.method.schedule='ict' has no target EMA (theta^- = "
                                 f"theta); set config.method.target_ema='' (got {target!r})")
            sched = cm.ict_schedule_fn(total, int(m("start_scales", 10)),
                                       int(m("end_scales", 1280)))
            max_scales = sched.max_scales
        else:
            raise ValueError(f"config.method.schedule must be 'adaptive' or 'ict'; got {kind!r}")
        if target and target in dict(config.get("ema") or {}):
            raise ValueError(f"config.ema.{target} would clash with CT's mu(k) target EMA; "
                             "rename config.method.target_ema")
        # target_ema = '': theta^- = stopgrad(theta) (mu = 0, improved CT, Song & Dhariwal 2023)
        ema_specs = {target: EMASpec(decay_fn=sched.mu)} if target else {}
        init_params = None
        init_extra = lpips_extra if m("metric") == "lpips" else None
        lvl = dict(level_sampling=m("level_sampling", "uniform"),
                   p_mean=float(m("p_mean", -1.1)), p_std=float(m("p_std", 2.0)),
                   max_scales=max_scales)

        def loss_fn(params, key, batch, state):
            tp = state.ema[target] if target else None
            return cm.consistency_loss(f_apply, params, tp, key, batch["image"],
                                       num_scales=sched.num_scales(state.step), mode="ct",
                                       cond=_labels(s, batch), metric=metric(state), **kw,
                                       **lvl)

    ts = tuple(int(v) for v in m("sample_ts", (0,)) or (0,))
    steps = int(m("sample_grid", 40))
    clip = bool(m("clip", True))
    if len(ts) > 1 and (any(b <= a for a, b in zip(ts, ts[1:], strict=False)) or ts[-1] >= steps):
        raise ValueError(f"config.method.sample_ts must increase inside [0, sample_grid - 1 = "
                         f"{steps - 1}]; got {list(ts)}")
    m.done(mode)

    def sample(params, key, n, cond=None):
        f = consistency_function(net, params, process)
        shape = (int(n),) + tuple(s["x_shape"])
        if len(ts) == 1:
            return few_step.consistency_onestep(f, key, shape, process=process, cond=cond,
                                                clip=clip)
        return few_step.stochastic_iterative_sampler(f, key, shape, list(ts), steps,
                                                     process=process, cond=cond, clip=clip)

    return Method(mode, loss_fn, ema_specs, init_params, sample, max(1, len(ts) - 1),
                  init_extra)


# ----------------------------------------------------------------------------------------------
# shortcut models
# ----------------------------------------------------------------------------------------------


def _build_shortcut(config, s, m: _Keys) -> Method:
    """Keys: ``denoise_timesteps`` (M), ``bootstrap_every``, ``class_dropout_prob``,
    ``bootstrap_cfg``, ``cfg_scale``, ``clip``, ``bootstrap_ema`` (EMA name of the bootstrap
    targets; ``''``: online parameters), ``bootstrap_ema_decay`` (unless ``config.ema`` has it),
    ``sample_steps`` (a power of 2 <= M)."""
    net = s["net"]
    M = int(m("denoise_timesteps", 128))
    every = int(m("bootstrap_every", 8))
    sc_lib.bootstrap_levels(int(s["batch_size"]), M, every)  # validates B, M, every now
    ema_name, decay = m("bootstrap_ema", "ema"), m("bootstrap_ema_decay", None)
    ema_specs = _ema_spec(config, ema_name, decay, "bootstrap_ema_decay") if ema_name else {}
    num_classes = s["num_classes"] if s["has_label"] else None
    tkw = dict(denoise_timesteps=M, bootstrap_every=every,
               class_dropout_prob=float(m("class_dropout_prob", 0.1)),
               bootstrap_cfg=bool(m("bootstrap_cfg", False)), cfg_scale=float(m("cfg_scale", 1.5)),
               clip=m("clip", 4.0))
    if tkw["bootstrap_cfg"] and num_classes is None:
        raise ValueError("config.method.bootstrap_cfg needs a class-conditional model and data")
    steps = int(m("sample_steps", 1))
    if steps < 1 or steps > M or steps & (steps - 1):
        raise ValueError(f"config.method.sample_steps must be a power of 2 <= denoise_timesteps="
                         f"{M}; got {steps}")
    m.done("shortcut")

    def apply_fn(params, x, t_paper, d_level, labels):
        # labels are dropped by the targets (bootstrap rows keep theirs): no dropout in the net
        model = net.bind(params)
        return model(x, adapters.flip_time(t_paper),
                     _second_scalar(labels, d_level.astype(jnp.float32)))

    def loss_fn(params, key, batch, state):
        ema = state.ema[ema_name] if ema_name else None
        labels = _labels(s, batch)
        return sc_lib.shortcut_loss(apply_fn, params, ema, key, batch["image"], labels,
                                    num_classes=num_classes, **tkw)

    def sample(params, key, n, cond=None):
        model = lambda x, t, lv, c: apply_fn(params, x, t, lv, c)
        return few_step.shortcut_sample(model, key, (int(n),) + tuple(s["x_shape"]), steps,
                                        cond=cond)

    return Method("shortcut", loss_fn, ema_specs, None, sample, steps)


# ----------------------------------------------------------------------------------------------
# inductive moment matching
# ----------------------------------------------------------------------------------------------


def _build_imm(config, s, m: _Keys) -> Method:
    """Keys: ``group_size`` (M particles), ``kind`` (``euler_fm`` | ``simple_edm`` |
    ``identity``), ``temb`` (``identity``: s fed; ``stride``: t - s fed), ``k``, ``a``, ``b``,
    ``T``, ``eps_t``, ``sigma_data``, ``time_scale`` (1000), ``target_ema`` (``''``: online
    parameters under stop-gradient) and ``target_decay``, ``sample_steps``, ``sample_grid``
    (``uniform`` | ``edm`` | ``mid_eta``), ``mid_eta``, ``cfg_scale`` (class-conditional)."""
    net = s["net"]
    if not isinstance(s["process"], Linear):
        raise ValueError("method 'imm' needs process.name='linear' (IMM's OT-FM path)")
    kind, temb = m("kind", "euler_fm"), m("temb", "identity")
    sd, scale = float(m("sigma_data", 0.5)), float(m("time_scale", 1000.0))
    lkw = dict(group_size=int(m("group_size", 4)), kind=kind, k=int(m("k", 12)),
               a=float(m("a", 1.0)), b=float(m("b", 4.0)), T=float(m("T", 0.994)),
               eps_t=float(m("eps_t", 0.0)), sigma_data=sd)
    if int(s["batch_size"]) % lkw["group_size"]:
        raise ValueError(f"data.batch_size={s['batch_size']} must be divisible by "
                         f"config.method.group_size={lkw['group_size']}")
    # no target EMA: online parameters under stop-gradient (spec Appendix B #7)
    target, decay = m("target_ema", None), m("target_decay", None)
    ema_specs = _ema_spec(config, target, decay, "target_decay") if target else {}
    skw = dict(num_steps=int(m("sample_steps", 1)), kind=kind, T=lkw["T"], eps_t=lkw["eps_t"],
               grid=m("sample_grid", "uniform"), mid_eta=m("mid_eta", None), sigma_data=sd)
    cfg_scale = m("cfg_scale", None)
    if cfg_scale is not None and not s["has_label"]:
        raise ValueError("config.method.cfg_scale needs a class-conditional model and data")
    few_step.imm_time_grid(skw["num_steps"], skw["T"], skw["eps_t"], skw["grid"],
                           mid_eta=skw["mid_eta"])  # validates
    m.done("imm")

    def g_of(params, train=False, key=None):
        model = net.bind(params, train=train, key=key)
        raw = lambda x_in, c_t, c_s, y: model(x_in, c_t, _second_scalar(y, c_s))
        return imm_lib.imm_precond(raw, kind, temb, sd, scale)

    def loss_fn(params, key, batch, state):
        k_loss, k_drop = jax.random.split(key)
        # same dropout key for y_t and y_r, as for the consistency target
        apply_fn = lambda p, x, t, s_, c: g_of(p, True, k_drop)(x, t, s_, c)
        tp = state.ema[target] if target else None
        return imm_lib.imm_loss(apply_fn, params, k_loss, batch["image"], target_params=tp,
                                cond=_labels(s, batch), **lkw)

    def sample(params, key, n, cond=None):
        null = None
        if cfg_scale is not None:
            null = jnp.full_like(jnp.asarray(cond), s["num_classes"])
        return few_step.imm_pushforward_sample(
            g_of(params), key, (int(n),) + tuple(s["x_shape"]), cond=cond, null_cond=null,
            cfg_scale=None if cfg_scale is None else float(cfg_scale), **skw)

    nfe = skw["num_steps"] * (2 if cfg_scale is not None else 1)
    return Method("imm", loss_fn, ema_specs, None, sample, nfe)


# ----------------------------------------------------------------------------------------------
# model guidance
# ----------------------------------------------------------------------------------------------


def _build_mg(config, s, m: _Keys) -> Method:
    """Keys: ``omega`` (in [1, 2); the trained model approximates CFG at ``1 / (2 - omega)``),
    ``mg_high``, ``start_step``, ``drop_prob``, ``guide_ema`` (EMA name of
    the guide) and ``guide_ema_decay``, ``sampler`` (``euler_maruyama`` | ``euler`` |
    ``heun``), ``sample_steps``, ``sample_t_last``."""
    net, process = s["net"], s["process"]
    if not isinstance(process, Linear):
        raise ValueError("method 'mg' needs process.name='linear' (x_t = (1 - t) x + t eps)")
    if not s["has_label"]:
        raise ValueError("method 'mg' needs a class-conditional model (model.num_classes) and "
                         "labelled data")
    ema_name = m("guide_ema", "ema")
    ema_specs = _ema_spec(config, ema_name, m("guide_ema_decay", None), "guide_ema_decay")
    kw = dict(num_classes=int(s["num_classes"]), omega=float(m("omega", 1.45)),
              mg_high=float(m("mg_high", 0.75)), start_step=int(m("start_step", 100_000)),
              drop_prob=float(m("drop_prob", 0.1)))
    if not 1.0 <= kw["omega"] < 2.0:
        # the model is its own guide: it converges to CFG at 1 / (2 - omega), which does not
        # exist for omega >= 2 (diffjax.losses.model_guidance, "Fixed point")
        raise ValueError(f"config.method.omega must lie in [1, 2) (MG converges to CFG at "
                         f"scale 1 / (2 - omega)); got {kw['omega']!r}")
    steps, t_last = int(m("sample_steps", 250)), float(m("sample_t_last", 0.04))
    sampler = m("sampler", "euler_maruyama")
    if sampler == "euler_maruyama":
        step = S.EulerMaruyama(diffusion="sigma")  # g^2 = 2 t: SiT's w_t = sigma_t = t
    elif sampler in ("euler", "heun"):
        step = S.get_step(sampler)
    else:
        raise ValueError(f"config.method.sampler must be 'euler_maruyama', 'euler' or 'heun'; "
                         f"got {sampler!r}")
    if steps < 1 or not 0.0 < t_last < 1.0:
        raise ValueError(f"need config.method.sample_steps >= 1 and 0 < sample_t_last < 1; got "
                         f"{steps}, {t_last}")
    m.done("mg")
    # linspace(1, t_last, steps) then a last step to 0 (spec section 8a)
    grid = jnp.concatenate([uniform_grid(steps - 1, 1.0, t_last), jnp.zeros((1,))]) \
        if steps > 1 else jnp.asarray([1.0, 0.0])

    def loss_fn(params, key, batch, state):
        # labels are dropped by the MG targets: no label dropout inside the network
        model = net.bind(params)
        ema_model = net.bind(state.ema[ema_name])
        return mg_lib.mg_loss(model, ema_model, key, batch["image"], batch["label"],
                              step=state.step, **kw)

    def sample(params, key, n, cond=None):
        if cond is None:
            raise ValueError("method 'mg' samples a class-conditional model: pass labels")
        model = jax.tree_util.Partial(lambda p, x, t, c=None: net.bind(p)(x, t, c), params)
        return S.sample(model, key, (int(n),) + tuple(s["x_shape"]), grid, step,
                        process=process, prediction="velocity", cond=cond, mesh=None)

    nfe = steps * (2 if sampler == "heun" else 1)
    return Method("mg", loss_fn, ema_specs, None, sample, nfe)


#: ``config.method.name`` -> builder ``(config, setup, keys) -> Method``
METHODS = {
    "cd": lambda c, s, m, **kw: _build_consistency(c, s, m, "cd", **kw),
    "ct": lambda c, s, m: _build_consistency(c, s, m, "ct"),
    "shortcut": _build_shortcut,
    "imm": _build_imm,
    "mg": _build_mg,
}


def build_method(config, s: dict, *, teacher: tuple | None = None) -> Method:
    """The :class:`Method` of ``config.method`` for the setup ``s`` of
    :func:`diffjax.experiment._setup` (``process``, ``net``, ``init_params``, ``x_shape``,
    ``num_classes``, ``has_label``, ``batch_size``, ``seed``).

    ``teacher``: for ``'cd'`` only, an in-memory ``(binder, params)`` teacher (experiments
    that train the teacher in the same process) instead of ``config.method.teacher_*``.

    Raises:
      ValueError: an unknown ``config.method.name`` or key, or a model/process the method
        cannot use (the message names the config key).
    """
    section = config.get("method")
    if not section:
        raise ValueError("config.method is missing (a section with name in "
                         f"{sorted(METHODS)})")
    m = _Keys(section)
    name = m.d.get("name")
    if name not in METHODS:
        raise ValueError(f"unknown config.method.name {name!r}; expected one of {sorted(METHODS)}")
    if teacher is not None:
        if name != "cd":
            raise ValueError(f"teacher= is for method 'cd' only; got method {name!r}")
        return METHODS[name](config, s, m, teacher=teacher)
    return METHODS[name](config, s, m)

