"""diffjax: diffusion models in JAX/Flax.

One convention inside: ``x_t = alpha(t) x0 + sigma(t) eps`` with ``t in [0, 1]``, data at 0.
"""

from diffjax import (
    adapters,
    analytic,
    data,
    grids,
    guidance,
    integrate,
    likelihood,
    local_score,
    losses,
    metrics,
    parameterization,
    processes,
    samplers,
)
from diffjax.grids import (
    discrete_grid,
    karras_grid,
    log_snr_grid,
    quadratic_grid,
    shift_grid,
    uniform_grid,
)
from diffjax.processes import EDM, GVP, VE, VP, DiscreteVP, Linear, SubVP
from diffjax.samplers import sample

__version__ = "0.1.0"


def load(workdir, **kwargs):
    """Load a trained run for sampling (a notebook's entry point): the newest checkpoint's EMA
    weights, network, process and sampler. See :func:`diffjax.run.load.load`."""
    from diffjax.run.load import load as _load  # the run layer sits above the library core

    return _load(workdir, **kwargs)
