"""Samplers: one scan driver (:func:`sample`) and small step objects, one module per family."""

from diffjax.samplers import few_step
from diffjax.samplers.ddim import DDIM, ddim_invert
from diffjax.samplers.ddpm import DDPMAncestral, posterior
from diffjax.samplers.driver import (
    Step,
    StepContext,
    lower_sample,
    make_denoise,
    make_raw,
    per_sample_keys,
    sample,
    trace_count,
)
from diffjax.samplers.edm import DPMSolverPP2SAncestral, EDMStochastic, EulerAncestral
from diffjax.samplers.few_step import (
    ConsistencyStep,
    IMMStep,
    ShortcutStep,
    consistency_sample,
    imm_sample,
    shortcut_sample,
)
from diffjax.samplers.langevin import AnnealedLangevin
from diffjax.samplers.ode import LMS, RK4, DPMSolver2, DPMSolverPP2M, Euler, Heun, UniPC
from diffjax.samplers.sde import (
    Ancestral,
    DPMSolverPP2MSDE,
    DPMSolverPP3MSDE,
    EulerMaruyama,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusion,
)

#: name -> step class, for configs and the CLI
SAMPLERS = {
    "ddpm": DDPMAncestral,
    "ddim": DDIM,
    "euler": Euler,
    "heun": Heun,
    "rk4": RK4,
    "dpmpp_2m": DPMSolverPP2M,
    "dpm_2": DPMSolver2,
    "lms": LMS,
    "unipc": UniPC,
    "dpmpp_2s_ancestral": DPMSolverPP2SAncestral,
    "dpmpp_2m_sde": DPMSolverPP2MSDE,
    "dpmpp_3m_sde": DPMSolverPP3MSDE,
    "edm_stochastic": EDMStochastic,
    "euler_ancestral": EulerAncestral,
    "euler_maruyama": EulerMaruyama,
    "reverse_diffusion": ReverseDiffusion,
    "annealed_langevin": AnnealedLangevin,
}


def get_step(name: str, **kwargs) -> Step:
    """Build a step by name (``SAMPLERS``); unknown names raise a ``ValueError`` listing them."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](**kwargs)
