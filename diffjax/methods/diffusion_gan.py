"""Diffusion-GAN (Wang, Zheng, He, Chen & Zhou, ICLR 2023, arXiv 2206.02262) as a method.

Any generator ``G(z)`` is trained against a timestep-dependent discriminator ``D(y, t)`` that
only sees *diffused* samples, real and generated alike (paper sec. 3.1, eq. 3-4):
``y = sqrt(alphabar_t) x + sqrt(1 - alphabar_t) sigma eps`` with the linear DDPM schedule
``beta_1..beta_T = linspace(1e-4, 2e-2, T)``, ``alphabar_0 = 1`` (``t = 0`` is clean) and the
instance-noise scale ``sigma = noise_std`` (0.05 for StyleGAN2 in the paper's code). The same
map with the same ``t`` distribution is applied to both sides, so the discriminator compares
the two distributions after the same invertible Gaussian smoothing (paper Theorem 1: ``p(y |
t)`` is the data density convolved with a Gaussian, whose characteristic function never
vanishes, so matching the diffused distributions matches the clean ones).

Timesteps come from a pool of ``pool_size = 64`` entries redrawn at every adaptation: half are
0, half are drawn over ``1..T`` with ``P(t = k) ∝ k - 1`` (``ts_dist='priority'``, the default)
or uniformly; each example draws its ``t`` uniformly from the pool (sec. 3.2, eq. 6). ``T``
adapts to the discriminator's overfitting (sec. 3.2, eq. 7, with ADA's controller): every
``ada_interval`` steps ``r_d = E[sign(D(y_real, t))]`` (sign of the logit, i.e. of
``D - 0.5`` in probability) over the steps since the last update moves ``p <- clip(p +
sign(r_d - d_target) B ada_interval / (1000 ada_kimg), 0, 1)`` and ``T = t_min + round(p (t_max
- t_min))``; ``d_target = 0.6``, ``ada_kimg = 100``, ``t_min = 10``, ``t_max = 1000``, ``p``
starting at 0. ``T``, ``p``, the pool and the running ``r_d`` sums live in ``state.extra`` (one
pytree, checkpointed and restored with the weights).

Losses: StyleGAN2's non-saturating G and D losses with R1 on real data (``r1_gamma / 2``,
lazily every ``lazy_reg`` steps scaled by the interval, Karras et al. 2020); the R1 gradient is
taken with respect to the clean real image through the diffusion, as the paper's code does.
Path-length regularisation and StyleGAN2's optimiser-rate correction for lazy steps are not
included. Order within one jitted step follows StyleGAN2-ADA's phases: the generator's step
(against the current D), then the discriminator's step (on fakes from the updated G).

The generator is pluggable: any network ``G(z, t, cond)`` with an ``nz`` attribute
(:class:`~diffjax.models.gan.DCGANGenerator` for images, :class:`~diffjax.models.gan.MLPGenerator`
with ``conditional=False`` for 2-D data); a StyleGAN2 port is the slot for the paper's numbers.
``diffusion=False`` gives the same GAN without instance noise (``t = 0`` always), the
ablation baseline. Sampling is one generator call per sample (no reverse diffusion).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from diffjax.losses import gan as gl
from diffjax.methods.base import Method, Setup, ema_if
from diffjax.methods.ddgan import (
    all_finite,
    build_discriminator,
    gan_optimizers,
    per_sample_keys,
)
from diffjax.train.ema import update_emas
from diffjax.train.state import TrainState

__all__ = ["diffusion_gan", "alpha_bars", "draw_pool", "adapt_p", "steps_from_p", "diffuse",
           "TS_DISTS"]

#: ``ts_dist`` choices: how the non-zero half of the timestep pool is drawn
TS_DISTS = ("priority", "uniform")


def alpha_bars(T, t_max: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> jax.Array:
    """``(t_max + 1,)`` table of ``alphabar_t`` for the linear schedule of (traced) length
    ``T <= t_max``: ``alphabar_0 = 1``, ``alphabar_t = prod_{k<=t} (1 - beta_k)`` with ``beta_k
    = linspace(beta_start, beta_end, T)[k-1]``; entries past ``T`` repeat ``alphabar_T``."""
    T = jnp.asarray(T, jnp.float32)
    k = jnp.arange(1, t_max + 1, dtype=jnp.float32)
    frac = jnp.where(T > 1, (k - 1.0) / jnp.maximum(T - 1.0, 1.0), 0.0)
    beta = beta_start + (beta_end - beta_start) * frac
    log1m = jnp.where(k <= T, jnp.log1p(-beta), 0.0)
    return jnp.concatenate([jnp.ones((1,)), jnp.exp(jnp.cumsum(log1m))])


def draw_pool(key, T, t_max: int, ts_dist: str = "priority", size: int = 64) -> jax.Array:
    """The timestep pool: ``size // 2`` draws over ``1..T`` (``'priority'``: ``P(k) ∝ k - 1``;
    ``'uniform'``), then ``size - size // 2`` zeros (clean samples), as ``int32``."""
    if ts_dist not in TS_DISTS:
        raise ValueError(f"ts_dist must be one of {TS_DISTS}; got {ts_dist!r}")
    k = jnp.arange(1, t_max + 1)
    w = (k - 1.0) if ts_dist == "priority" else jnp.ones((t_max,))
    logits = jnp.where((k <= T) & (w > 0), jnp.log(jnp.maximum(w, 1e-30)), -jnp.inf)
    half = size // 2
    draws = 1 + jax.random.categorical(key, logits, shape=(half,))
    return jnp.concatenate([draws, jnp.zeros((size - half,), draws.dtype)]).astype(jnp.int32)


def adapt_p(p, r_d, *, d_target: float, batch_size: int, ada_interval: int,
            ada_kimg: float):
    """ADA's controller on ``r_d`` (paper eq. 7): ``clip(p + sign(r_d - d_target) B
    ada_interval / (1000 ada_kimg), 0, 1)``."""
    step = batch_size * ada_interval / (ada_kimg * 1000.0)
    return jnp.clip(p + jnp.sign(r_d - d_target) * step, 0.0, 1.0)


def steps_from_p(p, t_min: int, t_max: int):
    """``T = clip(t_min + round(p (t_max - t_min)), t_min, t_max)`` (half to even, as NumPy)."""
    return jnp.clip(t_min + jnp.round(p * (t_max - t_min)), t_min, t_max).astype(jnp.int32)


def diffuse(x, t, abar, noise_std: float, eps):
    """``y = sqrt(alphabar_t) x + sqrt(1 - alphabar_t) noise_std eps`` (paper eq. 3)."""
    a = abar[t].reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
    return jnp.sqrt(a) * x + jnp.sqrt(1.0 - a) * noise_std * eps


def diffusion_gan(setup: Setup, *, beta_start: float = 1e-4, beta_end: float = 2e-2,
                  t_min: int = 10, t_max: int = 1000, noise_std: float = 0.05,
                  ts_dist: str = "priority", d_target: float = 0.6, ada_interval: int = 4,
                  ada_kimg: float = 100.0, p_init: float = 0.0, pool_size: int = 64,
                  diffusion: bool = True, r1_gamma: float = 0.01, lazy_reg: int = 16,
                  r1_scale_lazy: bool = True, lr_g: float = 0.0025, lr_d: float = 0.0025,
                  beta1: float = 0.0, beta2: float = 0.99, ema_decay: float | None = 0.999,
                  d_width: int = 64, d_depth: int = 3, loss: str = "nonsaturating") -> Method:
    """Diffusion-GAN around ``setup.network`` (a ``G(z, t, cond)`` generator with ``nz``).

    Args:
      setup: the generator (e.g. ``model.name='dcgan'`` or ``'gan_mlp'`` with
        ``conditional=False``).
      beta_start, beta_end: the linear schedule (recomputed whenever ``T`` changes).
      t_min, t_max: the range of the adaptive ``T``; ``p_init`` its starting point.
      noise_std: the instance-noise scale ``sigma`` (0.05 for StyleGAN2, 0.5 ProjectedGAN).
      ts_dist: ``'priority'`` or ``'uniform'`` (the pool's non-zero half).
      d_target, ada_interval, ada_kimg: the ``r_d`` target and the controller's pace.
      pool_size: entries of the timestep pool (64).
      diffusion: ``False`` trains the same GAN without instance noise (``t = 0``).
      r1_gamma, lazy_reg, r1_scale_lazy: R1 (StyleGAN2 CIFAR: ``gamma = 0.01``, every 16).
      lr_g, lr_d, beta1, beta2: the two Adam optimizers (StyleGAN2: 0.0025, (0, 0.99)).
      ema_decay: EMA ``'ema'`` of the weights (None: none).
      d_width, d_depth: the discriminator; loss: ``'nonsaturating'`` or ``'hinge'``.
    """
    net = setup.network
    nz = getattr(net.abstract, "nz", None)
    if nz is None or getattr(net.abstract, "conditional", False):
        raise ValueError("diffusion_gan needs a generator G(z) with an nz attribute "
                         "(model.name 'dcgan', or 'gan_mlp' with conditional=False); got "
                         f"{type(net.abstract).__name__}")
    t_min, t_max = int(t_min), int(t_max)
    if not 1 <= t_min <= t_max:
        raise ValueError(f"need 1 <= t_min <= t_max; got t_min={t_min}, t_max={t_max}")
    if ts_dist == "priority" and t_min < 2:
        raise ValueError("ts_dist='priority' gives t = 1 zero weight and needs t_min >= 2; got "
                         f"t_min={t_min}")
    if ts_dist not in TS_DISTS:
        raise ValueError(f"ts_dist must be one of {TS_DISTS}; got {ts_dist!r}")
    if not 0.0 <= p_init <= 1.0:
        raise ValueError(f"p_init must lie in [0, 1]; got {p_init}")
    if int(ada_interval) < 1 or not ada_kimg > 0:
        raise ValueError(f"ada_interval must be >= 1 and ada_kimg > 0; got {ada_interval}, "
                         f"{ada_kimg}")
    if loss not in gl.D_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(gl.D_LOSSES)}")
    gl.lazy_weight(0, lazy_reg)
    x_shape, B = setup.x_shape, int(setup.batch_size)
    d_loss_fn, g_loss_fn = gl.D_LOSSES[loss], gl.G_LOSSES[loss]
    d_graph, d_init = build_discriminator(x_shape, width=d_width, depth=d_depth, pair=False)
    opt_g, opt_d, both = gan_optimizers(lr_g, lr_d, beta1, beta2)
    ema_specs = ema_if("ema", ema_decay)
    ada = dict(d_target=float(d_target), batch_size=B, ada_interval=int(ada_interval),
               ada_kimg=float(ada_kimg))

    def G(pG, z):
        return net.raw(pG).raw(z, jnp.zeros((z.shape[0],), jnp.float32), None)

    def D(pD, y, t):
        return nnx.merge(d_graph, pD)(y, t.astype(jnp.float32))

    def init_params(key):
        kg, kd = jax.random.split(key)
        return {"G": net.init(kg), "D": d_init(kd)}

    def init_extra():
        T0 = steps_from_p(jnp.float32(p_init), t_min, t_max)
        return {"p": jnp.float32(p_init), "T": T0,
                "pool": draw_pool(jax.random.key(0), T0, t_max, ts_dist, int(pool_size)),
                "signs_sum": jnp.float32(0.0), "signs_count": jnp.float32(0.0)}

    def noised(key, x, extra, with_map=False):
        """The diffused batch and its ``t`` (drawn from the pool; 0 without diffusion); with
        ``with_map`` also the map ``x -> y`` of this draw (same ``t`` and noise)."""
        kt, ke = jax.random.split(key)
        if not diffusion:
            t = jnp.zeros((x.shape[0],), jnp.int32)
            return (x, t, lambda v: v) if with_map else (x, t)
        t = extra["pool"][jax.random.randint(kt, (x.shape[0],), 0, int(pool_size))]
        abar = alpha_bars(extra["T"], t_max, beta_start, beta_end)
        eps = jax.random.normal(ke, x.shape, x.dtype)
        fwd = lambda v: diffuse(v, t, abar, noise_std, eps)
        return (fwd(x), t, fwd) if with_map else (fwd(x), t)

    def g_objective(pG, pD, key, extra):
        kz, kn = jax.random.split(key)
        fake = G(pG, jax.random.normal(kz, (B, nz)))
        y, t = noised(kn, fake, extra)
        return jnp.mean(g_loss_fn(D(pD, y, t)))

    def d_objective(pD, pG, key, x, extra, r1_w):
        kz, kr, kf = jax.random.split(key, 3)
        fake = jax.lax.stop_gradient(G(pG, jax.random.normal(kz, (B, nz))))
        yr, tr, fwd = noised(kr, x, extra, with_map=True)
        yf, tf = noised(kf, fake, extra)
        real_logits = D(pD, yr, tr)
        per = d_loss_fn(real_logits, D(pD, yf, tf))

        def r1_fn():
            # R1 with respect to the clean real image, through this step's diffusion draw
            return jnp.mean(gl.r1_penalty(lambda v: D(pD, fwd(v), tr), x))

        r1 = jax.lax.cond(r1_w > 0, r1_fn, lambda: jnp.zeros((), jnp.float32))
        total = jnp.mean(per) + r1_w * 0.5 * r1_gamma * r1
        return total, {"loss_D": jnp.mean(per), "r1": r1,
                       "signs": jnp.sum(jnp.sign(real_logits))}

    def adapt(extra, signs, step, key):
        """Accumulate ``sign(D(real))``; every ``ada_interval`` steps move ``p`` and ``T`` and
        redraw the pool (the sums restart)."""
        s, c = extra["signs_sum"] + signs, extra["signs_count"] + B
        due = (step + 1) % int(ada_interval) == 0
        p = jnp.where(due, adapt_p(extra["p"], s / c, **ada), extra["p"])
        T = steps_from_p(p, t_min, t_max)
        pool = jnp.where(due, draw_pool(key, T, t_max, ts_dist, int(pool_size)), extra["pool"])
        zero = jnp.float32(0.0)
        return {"p": p, "T": jnp.where(due, T, extra["T"]), "pool": pool,
                "signs_sum": jnp.where(due, zero, s), "signs_count": jnp.where(due, zero, c)}

    def train_step(state: TrainState, batch):
        key, kg, kd, kp = jax.random.split(state.key(), 4)
        x = batch["image"]
        pG, pD, extra = state.params["G"], state.params["D"], state.extra
        loss_g, gG = jax.value_and_grad(g_objective)(pG, pD, kg, extra)
        uG, sG = opt_g.update(gG, state.opt_state["G"], pG)
        pG_new = optax.apply_updates(pG, uG)
        r1_w = gl.lazy_weight(state.step, lazy_reg, scale_by_interval=r1_scale_lazy)
        (loss_d, aux), gD = jax.value_and_grad(d_objective, has_aux=True)(
            pD, pG_new, kd, x, extra, r1_w)
        uD, sD = opt_d.update(gD, state.opt_state["D"], pD)
        pD_new = optax.apply_updates(pD, uD)
        finite = all_finite(loss_d, loss_g, gD, gG)
        signs = aux.pop("signs")

        def apply(_):
            params = {"G": pG_new, "D": pD_new}
            new_extra = adapt(extra, signs, state.step, kp) if diffusion else extra
            return (params, {"G": sG, "D": sD},
                    update_emas(state.ema, params, ema_specs, state.step, x.shape[0]), new_extra)

        def keep(_):
            return state.params, state.opt_state, state.ema, state.extra

        params, opt_state, emas, extra_new = jax.lax.cond(finite, apply, keep, None)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  ema=emas, extra=extra_new, rng=jax.random.key_data(key),
                                  skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = {"loss": loss_d + loss_g, "loss_G": loss_g, **aux,
                   "r_d": signs / B, "T": extra_new["T"].astype(jnp.float32),
                   "grad_norm": optax.tree.norm({"G": gG, "D": gD}),
                   "finite": finite.astype(jnp.float32)}
        return new_state, metrics

    def loss_fn(params, key, batch, state):
        """The discriminator's per-example loss on diffused real and generated batches (no
        R1): the method's loss signature, for diagnostics; training uses ``train_step``."""
        x = batch["image"]
        kz, kr, kf = jax.random.split(key, 3)
        fake = G(params["G"], jax.random.normal(kz, (x.shape[0], nz)))
        yr, tr = noised(kr, x, state.extra)
        yf, tf = noised(kf, fake, state.extra)
        return d_loss_fn(D(params["D"], yr, tr), D(params["D"], yf, tf)), {}

    @jax.jit
    def _sample(pG, key, offset, n_arr):
        keys = per_sample_keys(key, n_arr.shape[0], offset)
        return G(pG, jax.vmap(lambda k: jax.random.normal(k, (nz,)))(keys))

    def sample(params, key, n, cond=None, offset=0):
        """One generator call per sample, ``z_i`` from ``fold_in(key, offset + i)``."""
        if cond is not None:
            raise ValueError("diffusion_gan here is unconditional: cond must be None")
        pG = params["G"] if isinstance(params, dict) and "G" in params else params
        return _sample(pG, key, jnp.asarray(offset, jnp.uint32), jnp.zeros((int(n), 0)))

    return Method("diffusion_gan", loss_fn, sample, init_extra=init_extra, ema_specs=ema_specs,
                  nfe=1, init_params=init_params, train_step=train_step, optimizer=both)

