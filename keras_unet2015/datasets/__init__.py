"""Data for training and evaluating the U-Net.

- `isbi2012`: the paper's EM data set (TIFF volumes or per-slice images),
  with a checksummed download.
- `load_paired_folders`, `load_image_folder`: any folder of images and label
  images (PNG, TIFF), binary, multi-class or instance annotations.
- `train_validation_split`: a documented, deterministic split.
- `make_touching_cells`: synthetic touching cells for demos and tests.
- `TrainingSampleStream` (a `keras.utils.PyDataset`) and `make_tf_dataset`
  (`tf.data`): random mirrored training tiles with labels and weight maps
  cropped to the output size, augmentation applied; `write_tfrecord` and
  `read_tfrecord` store prepared samples.
"""

from keras_unet2015.datasets import isbi2012
from keras_unet2015.datasets.folders import load_image_folder
from keras_unet2015.datasets.folders import load_paired_folders
from keras_unet2015.datasets.folders import pair_files
from keras_unet2015.datasets.folders import standardize_labels
from keras_unet2015.datasets.io import list_images
from keras_unet2015.datasets.io import read_image
from keras_unet2015.datasets.io import to_float_image
from keras_unet2015.datasets.io import write_image
from keras_unet2015.datasets.split import parse_indices
from keras_unet2015.datasets.split import train_validation_split
from keras_unet2015.datasets.synthetic import make_touching_cells
from keras_unet2015.datasets.tf_data import make_tf_dataset
from keras_unet2015.datasets.tf_data import read_tfrecord
from keras_unet2015.datasets.tf_data import write_tfrecord
from keras_unet2015.datasets.training_sample_stream import TrainingSampleStream

__all__ = [
    "TrainingSampleStream",
    "isbi2012",
    "list_images",
    "load_image_folder",
    "load_paired_folders",
    "make_tf_dataset",
    "make_touching_cells",
    "pair_files",
    "parse_indices",
    "read_image",
    "read_tfrecord",
    "standardize_labels",
    "to_float_image",
    "train_validation_split",
    "write_image",
    "write_tfrecord",
]
