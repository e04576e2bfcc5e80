"""Model guidance, "Diffusion Models without Classifier-free Guidance" (Tang et al. 2025,
arXiv 2502.12154), as a method.

A class-conditional velocity model on the :class:`~diffjax.processes.Linear` path is trained
towards the guided target ``u + (omega - 1) (v_c - v_u)`` built from its own EMA (the guide),
so that it samples without CFG in one network evaluation per step. The model is its own guide,
so it converges to CFG at scale ``1 / (2 - omega)`` (:mod:`diffjax.losses.model_guidance`,
"Fixed point"), which exists only for ``omega < 2``. Sampling: SiT's Euler-Maruyama with
``w_t = sigma_t`` over ``linspace(1, t_last, steps)`` and a last step to 0.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.tree_util as jtu

from diffjax import samplers as S
from diffjax.grids import uniform_grid
from diffjax.losses import model_guidance as mg_lib
from diffjax.methods.base import Method, Setup, ema_if
from diffjax.processes import Linear

__all__ = ["model_guidance"]

#: the sampler names :func:`model_guidance` accepts
MG_SAMPLERS = ("euler_maruyama", "euler", "heun")


def _velocity(network, params, x, t, cond=None):
    return network.bind(params)(x, t, cond)


def model_guidance(setup: Setup, *, omega: float = 1.45, mg_high: float = 0.75,
                   start_step: int = 100_000, drop_prob: float = 0.1, guide_ema: str = "ema",
                   guide_ema_decay: float | None = None, sampler: str = "euler_maruyama",
                   sample_steps: int = 250, sample_t_last: float = 0.04) -> Method:
    """Model-guidance training and sampling.

    Args:
      setup: a class-conditional velocity network on the ``Linear`` process.
      omega: the guidance weight, in ``[1, 2)``.
      mg_high: guidance only for ``t < mg_high`` (diffjax time).
      start_step: plain conditional flow matching before this step.
      drop_prob: label dropout (the unconditional branch of the guide).
      guide_ema: the EMA name of the guide; ``guide_ema_decay`` defines it here when given.
      sampler: ``'euler_maruyama'`` (SiT's SDE, ``w_t = sigma_t``), ``'euler'`` or ``'heun'``.
      sample_steps, sample_t_last: the sampler's grid.
    """
    if not isinstance(setup.process, Linear):
        raise ValueError("model guidance needs process.name='linear' (x_t = (1 - t) x + t eps)")
    if not setup.num_classes:
        raise ValueError("model guidance needs a class-conditional network (model.num_classes) "
                         "and labelled data")
    if not 1.0 <= float(omega) < 2.0:
        # the model is its own guide: it converges to CFG at 1 / (2 - omega), which does not
        # exist for omega >= 2
        raise ValueError(f"omega must lie in [1, 2) (model guidance converges to CFG at scale "
                         f"1 / (2 - omega)); got {omega!r}")
    kw = dict(num_classes=int(setup.num_classes), omega=float(omega), mg_high=float(mg_high),
              start_step=int(start_step), drop_prob=float(drop_prob))
    steps, t_last = int(sample_steps), float(sample_t_last)
    if sampler == "euler_maruyama":
        step = S.EulerMaruyama(diffusion="sigma")  # g^2 = 2 t: SiT's w_t = sigma_t = t
    elif sampler in ("euler", "heun"):
        step = S.get_step(sampler)
    else:
        raise ValueError(f"sampler must be one of {MG_SAMPLERS}; got {sampler!r}")
    if steps < 1 or not 0.0 < t_last < 1.0:
        raise ValueError(f"need sample_steps >= 1 and 0 < sample_t_last < 1; got {steps}, "
                         f"{t_last}")
    grid = jnp.concatenate([uniform_grid(steps - 1, 1.0, t_last), jnp.zeros((1,))]) \
        if steps > 1 else jnp.asarray([1.0, 0.0])
    net = setup.network

    def loss(params, key, batch, state):
        # labels are dropped by the MG targets: no label dropout inside the network
        return mg_lib.mg_loss(net.bind(params), net.bind(state.ema[guide_ema]), key,
                              batch["image"], batch["label"], step=state.step, **kw)

    def sample(params, key, n, cond=None, offset=0):
        if cond is None:
            raise ValueError("model guidance samples a class-conditional model: pass labels")
        return S.sample(jtu.Partial(_velocity, net, params), key, (int(n),) + setup.x_shape,
                        grid, step, process=setup.process, prediction="velocity", cond=cond,
                        sample_offset=offset)

    nfe = steps * (2 if sampler == "heun" else 1)
    return Method("mg", loss, sample, ema_specs=ema_if(guide_ema, guide_ema_decay),
                  reads_emas=(guide_ema,), nfe=nfe)
