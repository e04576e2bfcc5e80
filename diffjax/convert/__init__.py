"""Weight conversion from PyTorch checkpoints (official repos, diffusers) to diffjax params.

Converters take ``{key: numpy array}`` dicts (no torch import at runtime) and return flat
``{'blocks.0.attn.qkv.kernel': array, ...}`` dicts (for DiT: :func:`diffjax.models.load_state_dict`
or :func:`diffjax.models.from_converted`).
"""

# ==== DiT family (convert/dit.py) ==============================================================
from diffjax.convert import dit
from diffjax.convert.dit import config_from_diffusers, detect_layout, from_diffusers, from_official

__all__ = ["dit", "config_from_diffusers", "detect_layout", "from_diffusers", "from_official"]
# ==== end of DiT family ========================================================================

# ==== UNet family (convert/unet.py) ============================================================
from diffjax.convert import unet  # noqa: E402
from diffjax.convert.unet import (  # noqa: E402
    convert_diffusers_unet,
    diffusers_key,
    load_diffusers_unet,
    unet_config_from_diffusers,
)

__all__ += ["unet", "convert_diffusers_unet", "diffusers_key", "load_diffusers_unet",
            "unet_config_from_diffusers"]
