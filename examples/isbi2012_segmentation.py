"""
Title: Segmenting neuronal membranes in EM images (ISBI 2012)
Author: keras-unet2015 contributors
Date created: 2026-11-21
Last modified: 2026-11-21
Description: The U-Net paper's EM experiment end to end: from the ISBI 2012
files to weight maps, augmentation, training and the challenge's Rand error.
"""

"""
## Introduction

The 2015 U-Net won the ISBI 2012 challenge on segmenting neuronal membranes
in serial-section electron microscopy: 30 training slices of 512x512 pixels
with binary labels (cell interior vs membrane). This example follows the
paper's recipe with `keras_unet2015`:

1. load the slices and hold some out for validation,
2. build the paper's weight maps, which push the network to separate
   touching cells,
3. train on random mirrored tiles with the paper's augmentation (elastic
   deformation, rotation, flips, gray values), SGD with momentum 0.99,
4. segment the held-out slices whole with the overlap-tile strategy,
5. score them with the challenge's pixel and Rand errors, and save a figure
   of prediction against label.

Training the full network takes hours on a GPU. Set
`KERAS_UNET2015_EXAMPLE_QUICK=1` to run everything in a few seconds with a
tiny network (the numbers are then those of an untrained model; the point
is that every step runs).

Environment variables:

- `KERAS_UNET2015_ISBI_DIR`: folder with the data (`train/images/NN.png`
  and `train/labels/NN.png`, or the challenge's `train-volume.tif` and
  `train-labels.tif`). Unset, the data are downloaded (checksummed) to
  `~/.keras/datasets/isbi2012`.
- `KERAS_UNET2015_EXAMPLE_OUTPUT`: output folder. Defaults to
  `isbi2012_example`.
- `KERAS_UNET2015_EXAMPLE_QUICK`: `1` for the quick mode.
"""

"""
## Setup
"""

import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_unet2015  # noqa: E402
from keras_unet2015 import datasets  # noqa: E402
from keras_unet2015 import metrics  # noqa: E402
from keras_unet2015 import training  # noqa: E402

QUICK = os.environ.get("KERAS_UNET2015_EXAMPLE_QUICK", "0") == "1"
DATA_DIR = os.environ.get("KERAS_UNET2015_ISBI_DIR") or None
OUTPUT_DIR = Path(
    os.environ.get("KERAS_UNET2015_EXAMPLE_OUTPUT", "isbi2012_example")
)
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)
print("Backend:", keras.backend.backend(), "| quick mode:", QUICK)

"""
## Load the data and hold out a validation split

`load_data` reads the per-slice PNGs or the challenge's TIFF volumes from a
folder. Without a folder it downloads the 90 PNGs and checks each file's
SHA-256 sum. Labels come back as class indices: **1 = cell interior**,
0 = membrane. The challenge's test labels were never released, so we
evaluate on the last 5 training slices, which the network never sees.
"""

(x_all, y_all), _ = datasets.isbi2012.load_data(
    DATA_DIR, download_if_missing=DATA_DIR is None
)
train_indices, val_indices = datasets.train_validation_split(
    len(x_all), validation_fraction=1 / 6
)
if QUICK:
    train_indices, val_indices = train_indices[:4], val_indices[:1]
x_train = [datasets.to_float_image(x_all[i]) for i in train_indices]
y_train = [y_all[i] for i in train_indices]
x_val = [datasets.to_float_image(x_all[i]) for i in val_indices]
y_val = np.stack([y_all[i] for i in val_indices])
print(f"{len(x_train)} training slices, {len(x_val)} validation slices")

"""
## Weight maps

The paper weights every pixel's loss with
`w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`: `w_c` balances the class
frequencies and the second term, with `d1` and `d2` the distances to the
nearest and second-nearest cell, is large on the thin membranes between two
cells (`w0 = 10`, `sigma = 5` px). `prepare_targets` computes the target
and the weight map of every slice.
"""

y_train, w_train = training.prepare_targets(y_train, label_mode="binary")
print(
    f"weight maps: {w_train[0].min():.2f} to {w_train[0].max():.2f} "
    "(membranes between cells weigh most)"
)

"""
## The model, the training tiles and the augmentation

The paper's network maps a 572x572 tile to a 388x388 output (valid
convolutions). `TrainingSampleStream` cuts random tiles from the slices,
mirrors the context at the slice borders, applies `PaperAugmentation` to
image, labels and weights together, and crops labels and weights to the
output size. The quick mode uses a network of depth 2 with 4 filters.
"""

if QUICK:
    model = keras_unet2015.UNet2015(depth=2, filters=4)
    input_size, steps_per_epoch, epochs, tile_size = 92, 4, 1, 252
else:
    model = keras_unet2015.UNet2015()  # the paper's network
    input_size, steps_per_epoch, epochs, tile_size = 572, 100, 40, 572
output_size = model.output_size(input_size)
print(f"tiles: {input_size}x{input_size} -> {output_size}x{output_size}")

augmentation = keras_unet2015.PaperAugmentation(seed=0)
stream = datasets.TrainingSampleStream(
    x_train,
    y_train,
    w_train,
    input_size=input_size,
    output_size=output_size,
    batch_size=1,  # the paper favours one large tile per step
    steps_per_epoch=steps_per_epoch,
    augmentation=augmentation,
    seed=0,
)

"""
## Training with the paper's recipe

`compile_model` sets SGD with momentum 0.99 and the weighted pixel-wise
cross-entropy (`WeightedPixelLoss`). `training.fit` adds checkpoints, a CSV
log, resuming after an interruption, and the challenge measures on the
validation slices (`val_rand_error` in the logs; the best model is kept as
`best.keras`).
"""

training.compile_model(model)
history = training.fit(
    model,
    stream,
    epochs=epochs,
    output_dir=OUTPUT_DIR / "run",
    validation_images=x_val,
    validation_labels=y_val,
    validation_freq=5,
    validation_tile_size=tile_size,
    verbose=0 if QUICK else 1,
)
print(f"final training loss: {history.history['loss'][-1]:.4f}")

"""
## Segment the held-out slices with the overlap-tile strategy

`OverlapTilePredictor` cuts each slice into overlapping tiles, mirrors the
missing context at the border, and stitches the outputs, so the result has
the slice's size and does not depend on the tile size. The full run also
averages the predictions of flipped tiles (`tta="flips"`), as the authors'
release does.
"""

predictor = keras_unet2015.OverlapTilePredictor(
    model, tile_size=tile_size, tta=None if QUICK else "flips", verbose=0
)
probabilities = np.stack([predictor.predict(x)[..., 1] for x in x_val])

"""
## Pixel error and Rand error

The challenge scores the probability of cell interior with the pixel error
and the Rand error, each 1 minus the best F-score over the thresholds 0.0,
0.1, ..., 1.0. The paper reports a Rand error of 0.0382 on the hidden test
labels.
"""

scores = metrics.evaluate(probabilities, y_val)
for name in ("pixel_error", "rand_error", "jaccard"):
    print(f"{name}: {scores[name]:.4f}")

"""
## Prediction against label

The figure shows, for the first validation slice, the image, the predicted
probability of cell interior, and the label.
"""


def to_uint8(array):
    return np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)


gap = np.full((x_val[0].shape[0], 8), 255, np.uint8)
figure = np.concatenate(
    [
        to_uint8(x_val[0]),
        gap,
        to_uint8(probabilities[0]),
        gap,
        to_uint8(y_val[0]),
    ],
    axis=1,
)
figure_path = OUTPUT_DIR / "prediction_vs_label.png"
datasets.write_image(figure_path, figure)
print(f"figure: {figure_path}")

"""
## Conclusion

Every part of the paper's EM experiment is a few lines: `isbi2012.load_data`,
`training.prepare_targets` (weight maps), `PaperAugmentation` and
`TrainingSampleStream` (tiles), `training.compile_model` and
`training.fit` (SGD, momentum 0.99, weighted loss), `OverlapTilePredictor`
(whole slices) and `metrics.evaluate` (the challenge's measures). The same
steps work for your own images: see `examples/custom_dataset.py`.
"""
