"""Denoising Diffusion GANs (Xiao, Kreis & Vahdat, ICLR 2022, arXiv 2112.07804) as a method.

A few-step (``T = 4`` on CIFAR-10) discrete VP chain (:mod:`diffjax.losses.ddgan`) whose
denoising distributions ``p(x_t | x_{t+1})`` are multimodal conditional GANs: the generator
predicts ``x0' = G(x_{t+1}, t, z)`` and ``x_t'`` is drawn from the true posterior
``q(x_t | x_{t+1}, x0')`` (paper eq. 8-9); a time-conditioned discriminator ``D(x_t, t,
x_{t+1})`` tells real pairs from generated ones with the non-saturating losses (eq. 6-7) and an
R1 penalty on real data (``gamma / 2``, lazily every ``lazy_reg`` steps). Sampling is ``T``
generator calls (Alg. 1 of the appendix); ``T = 1`` is a plain conditional-free GAN from noise.

**Two networks, one state.** ``state.params = {'G': ..., 'D': ...}``; ``state.opt_state =
{'G': ..., 'D': ...}`` holds two Adam states (``beta1 = 0.5``, ``beta2 = 0.9``, ``lr_g =
1.6e-4``, ``lr_d = 1.25e-4`` on CIFAR-10), built by :func:`gan_optimizers` and carried as
:attr:`Method.optimizer`, so the state is one pytree: one checkpoint, one resume path, the same
sharding rules. The update follows the paper's code: in one iteration the discriminator takes
its step first (on fresh pairs), then the generator takes its step against the *updated*
discriminator (on new pairs and new ``t``); both happen inside one jitted ``train_step``. If
any loss or gradient is not finite, nothing changes (parameters, both optimizer states, EMAs)
and ``state.skipped`` counts it, as for one network. The EMA (``ema_decay``, 0.9999 on
CIFAR-10) is an EMA of the whole ``{'G', 'D'}`` tree; sampling reads its ``'G'`` part (the
discriminator's EMA is carried but unused: an EMA of the generator alone would need a
per-subtree EMA in :func:`diffjax.train.create_train_state`).

R1: the reference code adds ``gamma / 2 * ||grad D||^2`` every ``lazy_reg`` steps *without*
multiplying by the interval (``r1_scale_lazy=False``, the default here); StyleGAN2's scaling is
``r1_scale_lazy=True``. The CIFAR-10 command of the paper's code uses ``gamma = 0.02`` and
``lazy_reg = 15`` (its argument default is ``gamma = 0.05``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from diffjax.losses import ddgan as chain_lib
from diffjax.losses import gan as gl
from diffjax.methods.base import Method, Setup, ema_if
from diffjax.models.gan import discriminator_for
from diffjax.train.ema import update_emas
from diffjax.train.optim import make_schedule
from diffjax.train.state import TrainState

__all__ = ["ddgan", "gan_optimizers", "build_discriminator", "all_finite", "per_sample_keys"]


def gan_optimizers(lr_g: float, lr_d: float, beta1: float, beta2: float, *,
                   schedule: str = "constant", total_steps: int | None = None,
                   lr_min: float = 0.0):
    """``(opt_g, opt_d, both)``: one Adam per network and the transformation whose state is
    ``{'G': opt_g state, 'D': opt_d state}`` (what :attr:`Method.optimizer` builds the
    training state with). ``schedule='cosine'`` decays each rate to ``lr_min`` over
    ``total_steps`` (DDGAN's cosine annealing to 1e-5)."""
    for name, v in (("lr_g", lr_g), ("lr_d", lr_d)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0; got {v}")

    def adam(lr):
        ratio = float(lr_min) / float(lr) if schedule == "cosine" else 0.0
        return optax.adam(make_schedule(float(lr), 0, schedule, total_steps, ratio),
                          b1=float(beta1), b2=float(beta2))

    opt_g, opt_d = adam(lr_g), adam(lr_d)

    def init(params):
        return {"G": opt_g.init(params["G"]), "D": opt_d.init(params["D"])}

    def update(grads, state, params=None):
        ug, sg = opt_g.update(grads["G"], state["G"], None if params is None else params["G"])
        ud, sd = opt_d.update(grads["D"], state["D"], None if params is None else params["D"])
        return {"G": ug, "D": ud}, {"G": sg, "D": sd}

    return opt_g, opt_d, optax.GradientTransformation(init, update)


def build_discriminator(x_shape, *, width: int, depth: int, pair: bool,
                        time_conditioned: bool = True):
    """``(graphdef, init(key) -> params)`` of :func:`diffjax.models.gan.discriminator_for`."""
    make = lambda rngs: discriminator_for(x_shape, width=int(width), depth=int(depth),
                                          pair=pair, time_conditioned=time_conditioned,
                                          rngs=rngs)
    graphdef = nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(0))))[0]
    return graphdef, lambda key: nnx.state(make(nnx.Rngs(key)), nnx.Param)


def all_finite(*trees) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(trees)]
    return jnp.all(jnp.stack(leaves))


def per_sample_keys(key, n: int, offset=0):
    """``fold_in(key, offset + i)`` for ``i < n``: sample ``i`` depends only on
    ``(key, offset + i)``, whatever the chunking."""
    idx = jnp.asarray(offset, jnp.uint32) + jnp.arange(n, dtype=jnp.uint32)
    return jax.vmap(jax.random.fold_in, (None, 0))(key, idx)


def ddgan(setup: Setup, *, num_timesteps: int = 4, beta_min: float = 0.1,
          beta_max: float = 20.0, geometric: bool = False, r1_gamma: float = 0.02,
          lazy_reg: int = 15, r1_scale_lazy: bool = False, lr_g: float = 1.6e-4,
          lr_d: float = 1.25e-4, beta1: float = 0.5, beta2: float = 0.9,
          lr_schedule: str = "constant", lr_min: float = 1e-5,
          ema_decay: float | None = 0.9999, d_width: int = 64, d_depth: int = 3,
          loss: str = "nonsaturating") -> Method:
    """DDGAN training (paper Alg. in App. B; code ``train_ddgan.py``) and ``T``-step sampling.

    Args:
      setup: the generator network (:class:`~diffjax.models.gan.ConvGenerator` or a
        conditional :class:`~diffjax.models.gan.MLPGenerator`: ``G(x_{t+1}, t, {'z': z})``,
        with an ``nz`` attribute).
      num_timesteps: ``T`` (4 on CIFAR-10; 2 on CelebA-HQ; 1: a plain GAN).
      beta_min, beta_max, geometric: the continuous VP schedule the chain is cut from.
      r1_gamma: R1 weight ``gamma`` (penalty ``gamma / 2 E||grad_x D||^2`` on real ``x_t``).
      lazy_reg: apply R1 every this many steps (1: every step).
      r1_scale_lazy: multiply the lazy penalty by ``lazy_reg`` (StyleGAN2), off in DDGAN's code.
      lr_g, lr_d, beta1, beta2: the two Adam optimizers; ``lr_schedule`` ``'constant'`` or
        ``'cosine'`` (to ``lr_min`` over the run, the paper's default).
      ema_decay: the EMA ``'ema'`` of the weights (None: no EMA).
      d_width, d_depth: the discriminator (:func:`diffjax.models.gan.discriminator_for`).
      loss: ``'nonsaturating'`` (the paper) or ``'hinge'``.
    """
    net = setup.network
    nz = getattr(net.abstract, "nz", None)
    if nz is None or not getattr(net.abstract, "conditional", True):
        raise ValueError("ddgan needs a conditional generator G(x_{t+1}, t, {'z': z}) with an "
                         "nz attribute (model.name 'gan_generator' or 'gan_mlp' with "
                         f"conditional=True); got {type(net.abstract).__name__}")
    T = int(num_timesteps)
    chain = chain_lib.ddgan_chain(T, beta_min, beta_max, geometric=geometric)
    if loss not in gl.D_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(gl.D_LOSSES)}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine'; got {lr_schedule!r}")
    if r1_gamma < 0:
        raise ValueError(f"r1_gamma must be >= 0; got {r1_gamma}")
    gl.lazy_weight(0, lazy_reg)  # validates lazy_reg
    d_loss_fn, g_loss_fn = gl.D_LOSSES[loss], gl.G_LOSSES[loss]
    x_shape = setup.x_shape
    d_graph, d_init = build_discriminator(x_shape, width=d_width, depth=d_depth, pair=True)
    opt_g, opt_d, both = gan_optimizers(lr_g, lr_d, beta1, beta2, schedule=lr_schedule,
                                        total_steps=setup.num_train_steps, lr_min=lr_min)
    ema_specs = ema_if("ema", ema_decay)

    def G(pG, x_tp1, t, z):
        return net.raw(pG).raw(x_tp1, t.astype(jnp.float32), {"z": z})

    def D(pD, x_t, t, x_tp1):
        return nnx.merge(d_graph, pD)(x_t, t.astype(jnp.float32), x_tp1)

    def init_params(key):
        kg, kd = jax.random.split(key)
        return {"G": net.init(kg), "D": d_init(kd)}

    def fake_pair(pG, key, x0):
        """A real pair's ``x_{t+1}`` and the generator's ``x_t'`` from it (eq. 8)."""
        kt, kp, kz, kn = jax.random.split(key, 4)
        B = x0.shape[0]
        t = jax.random.randint(kt, (B,), 0, T)
        x_t, x_tp1 = chain_lib.q_sample_pairs(chain, kp, x0, t)
        x0_pred = G(pG, x_tp1, t, jax.random.normal(kz, (B, nz), x0.dtype))
        x_pos = chain_lib.posterior_sample(chain, x0_pred, x_tp1, t,
                                           jax.random.normal(kn, x0.shape, x0.dtype))
        return t, x_t, x_tp1, x_pos

    def d_objective(pD, pG, key, x0, r1_w):
        t, x_t, x_tp1, x_pos = fake_pair(pG, key, x0)
        real = D(pD, x_t, t, x_tp1)
        fake = D(pD, jax.lax.stop_gradient(x_pos), t, x_tp1)
        per = d_loss_fn(real, fake)
        r1 = jax.lax.cond(r1_w > 0, lambda: jnp.mean(gl.r1_penalty(
            lambda x: D(pD, x, t, x_tp1), x_t)), lambda: jnp.zeros((), jnp.float32))
        total = jnp.mean(per) + r1_w * 0.5 * r1_gamma * r1
        return total, {"loss_D": jnp.mean(per), "r1": r1,
                       "d_real": jnp.mean(real), "d_fake": jnp.mean(fake)}

    def g_objective(pG, pD, key, x0):
        t, _, x_tp1, x_pos = fake_pair(pG, key, x0)
        return jnp.mean(g_loss_fn(D(pD, x_pos, t, x_tp1)))

    def train_step(state: TrainState, batch):
        key, kd, kg = jax.random.split(state.key(), 3)
        x0 = batch["image"]
        pG, pD = state.params["G"], state.params["D"]
        r1_w = gl.lazy_weight(state.step, lazy_reg, scale_by_interval=r1_scale_lazy)
        (loss_d, aux), gD = jax.value_and_grad(d_objective, has_aux=True)(pD, pG, kd, x0, r1_w)
        uD, sD = opt_d.update(gD, state.opt_state["D"], pD)
        pD_new = optax.apply_updates(pD, uD)
        # the generator's step sees the discriminator after its step (the paper's loop)
        loss_g, gG = jax.value_and_grad(g_objective)(pG, pD_new, kg, x0)
        uG, sG = opt_g.update(gG, state.opt_state["G"], pG)
        pG_new = optax.apply_updates(pG, uG)
        finite = all_finite(loss_d, loss_g, gD, gG)

        def apply(_):
            params = {"G": pG_new, "D": pD_new}
            return params, {"G": sG, "D": sD}, update_emas(state.ema, params, ema_specs,
                                                           state.step, x0.shape[0])

        def keep(_):
            return state.params, state.opt_state, state.ema

        params, opt_state, emas = jax.lax.cond(finite, apply, keep, None)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  ema=emas, rng=jax.random.key_data(key),
                                  skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = {"loss": loss_d + loss_g, "loss_G": loss_g, **aux,
                   "grad_norm": optax.tree.norm({"G": gG, "D": gD}),
                   "finite": finite.astype(jnp.float32)}
        return new_state, metrics

    def loss_fn(params, key, batch, state):
        """The discriminator's per-example loss on one real and one generated pair (no R1):
        the method's loss signature, for diagnostics; training uses ``train_step``."""
        x0 = batch["image"]
        t, x_t, x_tp1, x_pos = fake_pair(params["G"], key, x0)
        per = d_loss_fn(D(params["D"], x_t, t, x_tp1), D(params["D"], x_pos, t, x_tp1))
        return per, {}

    @jax.jit
    def _sample(pG, key, offset, n_arr):
        n = n_arr.shape[0]
        keys = per_sample_keys(key, n, offset)
        ks = jax.vmap(lambda k: jax.random.split(k, 2 * T + 1))(keys)
        x = jax.vmap(lambda k: jax.random.normal(k, x_shape))(ks[:, 0])

        def body(x, i):
            t = jnp.full((n,), T - 1 - i, jnp.int32)
            z = jax.vmap(lambda k: jax.random.normal(k, (nz,)))(ks[:, 1 + 2 * i])
            noise = jax.vmap(lambda k: jax.random.normal(k, x_shape))(ks[:, 2 + 2 * i])
            x0 = G(pG, x, t, z)
            return chain_lib.posterior_sample(chain, x0, x, t, noise), None

        x, _ = jax.lax.scan(body, x, jnp.arange(T))
        return x

    def sample(params, key, n, cond=None, offset=0):
        """``T`` generator calls from ``x_T ~ N(0, I)`` (App. B, Alg. 2); ``params`` is the
        ``{'G', 'D'}`` tree (or the generator's parameters alone)."""
        if cond is not None:
            raise ValueError("ddgan is unconditional: cond must be None")
        pG = params["G"] if isinstance(params, dict) and "G" in params else params
        return _sample(pG, key, jnp.asarray(offset, jnp.uint32), jnp.zeros((int(n), 0)))

    return Method("ddgan", loss_fn, sample, ema_specs=ema_specs, nfe=T,
                  init_params=init_params, train_step=train_step, optimizer=both)
