"""Small utilities: PNG writing and sample grids (:mod:`.png`), checksummed ``.npz`` files
(:mod:`.checksum`), TensorBoard logging (:mod:`.tensorboard`)."""

from diffjax.utils.png import density_image, image_grid, save_png

__all__ = ["save_png", "density_image", "image_grid"]
