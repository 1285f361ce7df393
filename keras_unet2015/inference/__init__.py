"""Inference helpers of keras-unet2015."""

from keras_unet2015.inference.dask_segmentation import segment_dask
from keras_unet2015.inference.overlap_tile_predictor import OverlapTilePredictor

__all__ = ["OverlapTilePredictor", "segment_dask"]
