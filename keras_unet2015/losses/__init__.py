"""Losses of keras-unet2015."""

from keras_unet2015.losses.weighted_pixel_loss import WeightedPixelLoss

__all__ = ["WeightedPixelLoss"]
