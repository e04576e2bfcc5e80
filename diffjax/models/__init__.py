"""Flax NNX models.

Transformer family (owner: DiT/SiT/LightningDiT work): :mod:`~diffjax.models.layers`,
:mod:`~diffjax.models.dit`, :mod:`~diffjax.models.flops`.
UNet family: see the marked section at the bottom.

:func:`classifier_free_guidance` is re-exported from :mod:`diffjax.guidance` (the single
classifier-free guidance implementation lives there; ``diffjax.guidance`` never imports
``diffjax.models``).
"""

# ==== transformer family: layers.py, dit.py, flops.py ========================================
from diffjax.guidance import classifier_free_guidance
from diffjax.models import dit, flops, layers
from diffjax.models.dit import (
    PRESETS,
    Denoiser,
    DiT,
    DiTConfig,
    LatentNorm,
    as_denoiser,
    build,
    dit_config,
    from_converted,
    load_state_dict,
)
from diffjax.models.flops import ModelCost, count_params, dit_cost, forward_cost
from diffjax.models.layers import DEFAULT_RULES, activation_sharding, logical_to_mesh_sharding

__all__ = [
    "dit", "flops", "layers",
    "PRESETS", "Denoiser", "DiT", "DiTConfig", "LatentNorm", "as_denoiser", "build",
    "dit_config", "from_converted", "load_state_dict",
    "ModelCost", "count_params", "dit_cost", "forward_cost",
    "classifier_free_guidance",
    "DEFAULT_RULES", "activation_sharding", "logical_to_mesh_sharding",
]
# ==== end of transformer family ================================================================

# ==== UNet family (unet.py, adm.py, ncsnpp.py, layers_unet.py, ...) ============================
from diffjax.models import adm, denoiser, layers_unet, mlp, ncsnpp, unet  # noqa: E402
from diffjax.models.adm import (  # noqa: E402
    ADM_PRESETS,
    CLASSIFIER_PRESETS,
    ADMClassifier,
    ADMUNet,
    adm_config,
    adm_from_preset,
    classifier_from_preset,
)
from diffjax.models.mlp import ToyMLP  # noqa: E402
from diffjax.models.ncsnpp import NCSNPP_PRESETS, NCSNpp, ncsnpp_from_preset  # noqa: E402
from diffjax.models.unet import (  # noqa: E402
    UNET_PRESETS,
    UNet,
    num_params,
    unet_config,
    unet_from_preset,
)

__all__ += [
    "adm", "denoiser", "layers_unet", "mlp", "ncsnpp", "unet",
    "ADM_PRESETS", "CLASSIFIER_PRESETS", "ADMClassifier", "ADMUNet", "adm_config",
    "adm_from_preset", "classifier_from_preset", "ToyMLP", "NCSNPP_PRESETS", "NCSNpp",
    "ncsnpp_from_preset", "UNET_PRESETS", "UNet", "num_params", "unet_config", "unet_from_preset",
]
# ==== end of UNet family =======================================================================
