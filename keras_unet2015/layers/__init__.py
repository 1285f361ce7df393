"""Layers of keras-unet2015."""

from keras_unet2015.layers.elastic_deform import ElasticDeform
from keras_unet2015.layers.paper_augmentation import PaperAugmentation
from keras_unet2015.layers.random_gray_value import RandomGrayValue
from keras_unet2015.layers.up_convolution import UpConvolution2D

__all__ = [
    "ElasticDeform",
    "PaperAugmentation",
    "RandomGrayValue",
    "UpConvolution2D",
]
