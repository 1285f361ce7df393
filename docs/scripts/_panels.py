"""Drawing helpers shared by the figure scripts (NumPy and Pillow only)."""

import numpy as np
from PIL import Image

#: Side of one panel, height of its title and the gap between panels, px.
PANEL = 256
TITLE = 20
GAP = 6


def gray(array, low, high):
    """An RGB image of `array` with `low` black and `high` white."""
    scaled = (np.asarray(array, np.float64) - low) / (high - low)
    rgb = np.repeat((np.clip(scaled, 0, 1) * 255)[..., None], 3, -1)
    return Image.fromarray(rgb.astype(np.uint8))
