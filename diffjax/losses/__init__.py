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
* Few-step methods: :mod:`.consistency` (CD / CT), :mod:`.shortcut`, :mod:`.imm` and
  :mod:`.model_guidance` (diffusion without CFG).
"""

from diffjax.losses import consistency, diffusion, imm, model_guidance, shortcut, timesteps, vlb
from diffjax.losses.classifier import default_classifier_t_sampler, noisy_classifier_loss
from diffjax.losses.cold import cold_loss
from diffjax.losses.consistency import cd_target, consistency_loss, ct_schedule, ct_target
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
from diffjax.losses.imm import imm_loss
from diffjax.losses.model_guidance import mg_loss, mg_targets
from diffjax.losses.shortcut import shortcut_loss, shortcut_targets
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

__all__ = sorted(n for n in dir() if not n.startswith("_"))  # every name imported above
