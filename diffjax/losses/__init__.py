"""Training losses as pure functions: ``loss_fn(model, key, x0, *, process, ...) -> (loss, aux)``.

``loss`` is per example, shape ``(B,)`` (reduce the batch yourself, e.g. ``jnp.mean``);
``aux`` is a dict with ``'t'``, ``'index'``, ``'weight'`` and ``'unweighted'`` (plus
loss-specific terms). Modules:

* :mod:`.timesteps`: time samplers (uniform / antithetic DDPM indices, continuous uniform,
  EDM log-normal, VE log-uniform, logit-normal, NCSN labels) and iDDPM's
  :class:`~.timesteps.LossSecondMomentResampler`.
* :mod:`.diffusion`: :func:`~.diffusion.denoising_loss` and the paper-named wrappers (DDPM
  ``L_simple``, DDIM, NCSN, score SDE, EDM, flow matching / SiT).
* :mod:`.vlb`: the DDPM variational bound in bits/dim (KL, discretised decoder, prior, full
  loop) and iDDPM's ``L_hybrid`` / ``L_vlb``.
"""

from diffjax.losses import diffusion, timesteps, vlb
from diffjax.losses.diffusion import (
    PIXEL_REDUCTIONS,
    ddim_loss,
    ddpm_loss,
    denoising_loss,
    diffusion_sq_weighting,
    draw_noised,
    edm_lambda,
    edm_loss,
    edm_weighting,
    flow_matching_loss,
    ncsn_loss,
    reduce_pixels,
    score_sde_loss,
    sigma_power_weighting,
)
from diffjax.losses.timesteps import (
    LossSecondMomentResampler,
    ResamplerState,
    TimeSample,
    antithetic_discrete,
    edm_lognormal,
    log_uniform_sigma,
    logit_normal,
    ncsn_levels,
    uniform_continuous,
    uniform_discrete,
)
from diffjax.losses.vlb import (
    approx_standard_normal_cdf,
    calc_bpd_loop,
    ddpm_tables,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    hybrid_loss,
    learned_range_log_variance,
    normal_kl,
    p_mean_variance,
    prior_bpd,
    q_posterior,
    vb_terms_bpd,
    vlb_loss,
)

__all__ = [
    "diffusion",
    "timesteps",
    "vlb",
    "PIXEL_REDUCTIONS",
    "TimeSample",
    "ResamplerState",
    "LossSecondMomentResampler",
    "uniform_discrete",
    "antithetic_discrete",
    "uniform_continuous",
    "edm_lognormal",
    "log_uniform_sigma",
    "logit_normal",
    "ncsn_levels",
    "reduce_pixels",
    "draw_noised",
    "denoising_loss",
    "sigma_power_weighting",
    "diffusion_sq_weighting",
    "edm_lambda",
    "edm_weighting",
    "ddpm_loss",
    "ddim_loss",
    "ncsn_loss",
    "score_sde_loss",
    "edm_loss",
    "flow_matching_loss",
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_likelihood",
    "ddpm_tables",
    "q_posterior",
    "learned_range_log_variance",
    "p_mean_variance",
    "vb_terms_bpd",
    "prior_bpd",
    "calc_bpd_loop",
    "hybrid_loss",
    "vlb_loss",
]
