"""Training methods: each a factory returning a :class:`Method` of pure functions.

One module per family, each binding a :class:`~diffjax.models.Network` to the pure losses of
:mod:`diffjax.losses` and the samplers of :mod:`diffjax.samplers`:

* :mod:`~diffjax.methods.diffusion`: plain diffusion (DDPM, iDDPM, NCSN, score SDEs, EDM,
  flow matching), any loss and any scan sampler, optional classifier-free guidance.
* :mod:`~diffjax.methods.consistency`: consistency distillation and training (CD, CT, iCT).
* :mod:`~diffjax.methods.shortcut`: shortcut models.
* :mod:`~diffjax.methods.imm`: inductive moment matching.
* :mod:`~diffjax.methods.model_guidance`: model guidance (diffusion without CFG).
* :mod:`~diffjax.methods.sohl_dickstein`: Sohl-Dickstein et al. 2015 (the bound K, learned
  Gaussian reverse kernels).
* :mod:`~diffjax.methods.cold`: Cold Diffusion (deterministic degradations, Algorithms 1/2).
* :mod:`~diffjax.methods.video`: Video Diffusion Models (3D UNet, joint image-video
  training, reconstruction-guided extension).

:data:`METHODS` maps the names a config's ``method.name`` uses to the factories; a factory's
keyword arguments are exactly the config's ``method.*`` keys. Adding a method is one module
here and one line in :data:`METHODS` (``docs/design.md`` walks through it).
"""

from diffjax.methods.base import Method, Setup, ema_if, no_extra
from diffjax.methods.cold import cold
from diffjax.methods.consistency import (
    consistency_distillation,
    consistency_function,
    consistency_training,
)
from diffjax.methods.ddgan import ddgan
from diffjax.methods.diffusion import Sampling, diffusion, sampling_model
from diffjax.methods.diffusion_gan import diffusion_gan
from diffjax.methods.imm import imm
from diffjax.methods.model_guidance import model_guidance
from diffjax.methods.shortcut import shortcut
from diffjax.methods.sohl_dickstein import sohl_dickstein
from diffjax.methods.video import video

#: ``method.name`` -> factory ``(setup, **hyper_parameters) -> Method``
METHODS = {
    "diffusion": diffusion,
    "cd": consistency_distillation,
    "ct": consistency_training,
    "shortcut": shortcut,
    "imm": imm,
    "mg": model_guidance,
    "cold": cold,
    "sohl_dickstein": sohl_dickstein,
    "ddgan": ddgan,
    "diffusion_gan": diffusion_gan,
    "video": video,
}

__all__ = ["Method", "Setup", "Sampling", "METHODS", "diffusion", "sampling_model",
           "consistency_distillation", "consistency_training", "consistency_function",
           "shortcut", "imm", "model_guidance", "cold", "sohl_dickstein",
           "ema_if", "no_extra", "ddgan", "diffusion_gan", "video"]
