"""Models of keras-unet2015."""

from keras_unet2015.models.unet2015 import UNet2015

__all__ = ["UNet2015"]
