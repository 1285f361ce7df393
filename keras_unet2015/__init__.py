"""keras-unet2015: the original U-Net (Ronneberger et al., 2015) for Keras 3."""

# Before Keras is imported: with no backend configured and TensorFlow (the
# Keras default) not installed, use the backend that is installed.
from keras_unet2015 import _default_backend

_default_backend.choose_installed_backend()

from keras_unet2015 import callbacks
from keras_unet2015 import datasets
from keras_unet2015 import distribution
from keras_unet2015 import export
from keras_unet2015 import layers
from keras_unet2015 import losses
from keras_unet2015 import metrics
from keras_unet2015 import presets
from keras_unet2015 import reproduce
from keras_unet2015 import sizes
from keras_unet2015 import training
from keras_unet2015 import weight_maps
from keras_unet2015.inference.dask_segmentation import segment_dask
from keras_unet2015.inference.overlap_tile_predictor import OverlapTilePredictor
from keras_unet2015.layers.elastic_deform import ElasticDeform
from keras_unet2015.layers.paper_augmentation import PaperAugmentation
from keras_unet2015.losses.weighted_pixel_loss import WeightedPixelLoss
from keras_unet2015.models.unet2015 import UNet2015
from keras_unet2015.version import __version__

__all__ = [
    "ElasticDeform",
    "OverlapTilePredictor",
    "PaperAugmentation",
    "UNet2015",
    "WeightedPixelLoss",
    "__version__",
    "callbacks",
    "datasets",
    "distribution",
    "export",
    "layers",
    "losses",
    "metrics",
    "presets",
    "reproduce",
    "segment_dask",
    "sizes",
    "training",
    "weight_maps",
]
