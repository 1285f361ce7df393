"""Keras callbacks of keras-unet2015."""

from keras_unet2015.callbacks.run_state import TrainingDivergedError
from keras_unet2015.callbacks.segmentation_metrics import SegmentationMetrics

__all__ = ["SegmentationMetrics", "TrainingDivergedError"]
