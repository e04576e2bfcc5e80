"""Small utilities with no heavy dependencies (PNG writing, tables)."""

from diffjax.utils.png import density_image, image_grid, save_png

__all__ = ["save_png", "density_image", "image_grid"]
