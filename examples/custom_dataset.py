"""
Title: Training a U-Net on your own folder of images and instance labels
Author: keras-unet2015 contributors
Date created: 2026-11-21
Last modified: 2026-11-21
Description: From a folder of images and instance annotations to a trained
U-Net that separates touching cells, evaluated on held-out images.
"""

"""
## Introduction

Most microscopy data sets come as two folders: the images, and label images
in which every object (cell, nucleus) has its own integer id and the
background is 0. Such *instance* annotations are what the U-Net paper needs
to separate touching cells: the network learns a background border between
every pair of touching objects, and the paper's weight map makes those
borders count.

This example:

1. reads a folder pair `images/` + `labels/` with `load_paired_folders`,
2. splits it into training and validation images,
3. turns instances into training targets: touching objects are cut apart by
   a background border and the weight map stresses those borders,
4. trains a U-Net on elastically deformed tiles,
5. segments the validation images and counts the objects it finds, with
   the Cell Tracking Challenge SEG score and the Rand error.

Point `KERAS_UNET2015_CUSTOM_DATA` at your own folder (with subfolders
`images` and `labels`, files paired by name, PNG or TIFF). Unset, the
example writes a small synthetic data set of touching cells to
`synthetic_data/` in the output folder, so it runs anywhere.
`KERAS_UNET2015_EXAMPLE_QUICK=1` trains a tiny network for a few steps;
`KERAS_UNET2015_EXAMPLE_OUTPUT` sets the output folder (default
`custom_dataset_example`).
"""

"""
## Setup
"""

import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

import keras_unet2015  # noqa: E402
from keras_unet2015 import datasets  # noqa: E402
from keras_unet2015 import metrics  # noqa: E402
from keras_unet2015 import training  # noqa: E402
from keras_unet2015 import weight_maps  # noqa: E402

QUICK = os.environ.get("KERAS_UNET2015_EXAMPLE_QUICK", "0") == "1"
DATA_DIR = os.environ.get("KERAS_UNET2015_CUSTOM_DATA") or None
OUTPUT_DIR = Path(
    os.environ.get("KERAS_UNET2015_EXAMPLE_OUTPUT", "custom_dataset_example")
)
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)
print("Backend:", keras.backend.backend(), "| quick mode:", QUICK)

"""
## A folder of images and instance labels

Without a folder of your own, we write one: synthetic images of touching
cells (`make_touching_cells`) as 8-bit PNGs, and their instance ids as
16-bit PNGs, the layout a labelling tool exports. Like most hand-made
annotations, the labels paint touching cells right next to each other:
each cell is grown by one pixel into the thin gap the generator leaves.
"""

if DATA_DIR is None:
    DATA_DIR = OUTPUT_DIR / "synthetic_data"
    images, _, instances = datasets.make_touching_cells(
        num_images=5 if QUICK else 12, image_size=128, cell_radius=10, seed=0
    )
    for index, (image, instance) in enumerate(zip(images, instances)):
        distance, (rows, cols) = ndimage.distance_transform_edt(
            instance == 0, return_indices=True
        )
        instance = np.where(distance <= 1, instance[rows, cols], 0)
        name = f"cells_{index:02d}.png"
        datasets.write_image(
            DATA_DIR / "images" / name,
            np.rint(image * 255).astype(np.uint8),
        )
        datasets.write_image(
            DATA_DIR / "labels" / name, instance.astype(np.uint16)
        )
DATA_DIR = Path(DATA_DIR)
print("data:", DATA_DIR)

images, instances, names = datasets.load_paired_folders(
    DATA_DIR / "images",
    DATA_DIR / "labels",
    label_mode="instances",
    return_names=True,
)
images = [datasets.to_float_image(image) for image in images]
train_indices, val_indices = datasets.train_validation_split(
    len(images), validation_fraction=0.2
)
print(
    f"{len(images)} images: training {[names[i] for i in train_indices]}, "
    f"validation {[names[i] for i in val_indices]}"
)

"""
## Instances to training targets

The U-Net predicts two classes, cell and background. Two cells that touch
would merge into one region in such a target; `prepare_targets` with
`label_mode="instances"` first cuts every contact between different ids
into background (`weight_maps.separate_touching_cells`), then computes the
paper's weight map on the separated cells.
"""

train_targets, train_weights = training.prepare_targets(
    [instances[i] for i in train_indices], label_mode="instances"
)
first = train_indices[0]
merged = weight_maps.label_instances(instances[first] > 0)
cut = int(np.count_nonzero((instances[first] > 0) != train_targets[0]))
separated = weight_maps.label_instances(train_targets[0])
print(
    f"{names[first]}: {len(np.unique(instances[first])) - 1} instance ids, "
    f"{int(merged.max())} regions if merged; {cut} pixels between touching "
    f"cells become background; {int(separated.max())} separate regions in "
    "the target"
)

"""
## Model and training

A U-Net with valid convolutions, trained on random tiles with elastic
deformation (`ElasticDeform`: the paper's 3x3 grid of random displacements
with 10 px standard deviation) and the paper's optimizer.
"""

if QUICK:
    model = keras_unet2015.UNet2015(depth=2, filters=4)
    input_size, steps_per_epoch, epochs = 92, 4, 1
else:
    model = keras_unet2015.UNet2015(depth=3, filters=32)
    input_size, steps_per_epoch, epochs = 188, 100, 20
output_size = model.output_size(input_size)

stream = datasets.TrainingSampleStream(
    [images[i] for i in train_indices],
    train_targets,
    train_weights,
    input_size=input_size,
    output_size=output_size,
    batch_size=2,
    steps_per_epoch=steps_per_epoch,
    augmentation=keras_unet2015.ElasticDeform(sigma=10.0, seed=0),
    seed=0,
)
val_images = [images[i] for i in val_indices]
val_targets, _ = training.prepare_targets(
    [instances[i] for i in val_indices], label_mode="instances"
)
training.compile_model(model)
history = training.fit(
    model,
    stream,
    epochs=epochs,
    output_dir=OUTPUT_DIR / "run",
    validation_images=val_images,
    validation_labels=val_targets,
    validation_freq=5,
    verbose=0 if QUICK else 1,
)
print(f"final training loss: {history.history['loss'][-1]:.4f}")

"""
## Evaluate on the validation images

The predictor segments each validation image whole. Cells are the
connected regions of `probability > 0.5` (`metrics.segment`), compared with
the annotated instances by the SEG score (mean IoU of matched objects, as
in the Cell Tracking Challenge, the paper's Table 2) and by the Rand error.
"""

predictor = keras_unet2015.OverlapTilePredictor(
    model, tile_size=model.input_size_for_output(128), verbose=0
)
probabilities = [predictor.predict(image)[..., 1] for image in val_images]
seg_scores, rand_errors = [], []
for index, target, probability in zip(val_indices, val_targets, probabilities):
    predicted = metrics.segment(probability, threshold=0.5)
    seg_scores.append(metrics.seg_score(instances[index], predicted))
    # The Rand error compares connected regions: score against the target
    # with separated cells, not the merged foreground of the instances.
    rand_errors.append(metrics.rand_error(probability, target))
    datasets.write_image(
        OUTPUT_DIR / f"{names[index]}_instances.tif",
        predicted.astype(np.uint16),
    )
seg = float(np.nanmean(seg_scores))
print(f"seg_score: {seg:.4f}")
print(f"rand_error: {float(np.mean(rand_errors)):.4f}")
print(f"predicted instance images: {OUTPUT_DIR}")

"""
## Conclusion

Your own data need two folders and `load_paired_folders`; instance
annotations become U-Net targets with separated cells and the paper's
weight maps through `prepare_targets(..., label_mode="instances")`. For
binary masks use `label_mode="binary"`, for several classes
`label_mode="classes"` with `num_classes`.
"""
