"""
Title: Segmenting an image larger than memory with overlap tiles
Author: keras-unet2015 contributors
Date created: 2026-11-21
Last modified: 2026-11-21
Description: Predict a large image tile by tile from a TIFF on disk into a
TIFF on disk, with bounded memory and no seams.
"""

"""
## Introduction

Whole-slide images and EM mosaics are often far larger than a GPU (or the
RAM) can hold. The U-Net paper segments images of any size with the
*overlap-tile strategy*: the image is cut into tiles whose inputs overlap
by the network's context, and the missing context at the image border is
mirrored. With valid convolutions and tiles placed on the network's
pooling grid, the stitched result is exactly what one pass over the whole
(mirrored) image would give: there are no seams.

This example builds a large image (a mosaic of ISBI 2012 slices, 2048x2048
pixels), writes it to a TIFF file, and segments it with
`OverlapTilePredictor`, reading tiles from a `tifffile.memmap` and writing
labels and probabilities into TIFF memmaps, so that memory stays bounded by
the tiles in flight whatever the image size. It then checks the seamless
property on a window that straddles tile borders, and draws the tile grid.

Environment variables:

- `KERAS_UNET2015_ISBI_DIR`: folder with the ISBI 2012 data; unset, they
  are downloaded (checksummed) to `~/.keras/datasets/isbi2012`.
- `KERAS_UNET2015_MODEL`: a trained model saved as `.keras` (for example
  `isbi2012_example/run/best.keras` from `examples/isbi2012_segmentation.py`);
  unset, an untrained network is used, which shows the mechanics but not a
  useful segmentation.
- `KERAS_UNET2015_EXAMPLE_OUTPUT`: output folder. Defaults to
  `large_image_example`.
- `KERAS_UNET2015_EXAMPLE_QUICK`: `1` for a 1024x1024 mosaic and a tiny
  network.
"""

"""
## Setup
"""

import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tifffile  # noqa: E402

import keras_unet2015  # noqa: E402
from keras_unet2015 import datasets  # noqa: E402

QUICK = os.environ.get("KERAS_UNET2015_EXAMPLE_QUICK", "0") == "1"
DATA_DIR = os.environ.get("KERAS_UNET2015_ISBI_DIR") or None
MODEL_PATH = os.environ.get("KERAS_UNET2015_MODEL") or None
OUTPUT_DIR = Path(
    os.environ.get("KERAS_UNET2015_EXAMPLE_OUTPUT", "large_image_example")
)
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)
print("Backend:", keras.backend.backend(), "| quick mode:", QUICK)

"""
## A large image on disk

We tile the 512x512 test slices of ISBI 2012 into a mosaic and store it as
a TIFF. With your own data, start from your TIFF file instead.
"""

(_, _), x_test = datasets.isbi2012.load_data(
    DATA_DIR, download_if_missing=DATA_DIR is None
)
slices_per_side = 2 if QUICK else 4
mosaic = np.block(
    [
        [x_test[row * slices_per_side + col] for col in range(slices_per_side)]
        for row in range(slices_per_side)
    ]
)
image_path = OUTPUT_DIR / "mosaic.tif"
tifffile.imwrite(image_path, mosaic)
height, width = mosaic.shape
del mosaic
print(f"image: {image_path}, {height}x{width} uint8")

"""
## The model and the predictor

`memory_budget` bounds the activations of the tiles in flight: with
`tile_size=None` the predictor picks the largest square tile whose
estimated feature maps fit, here 1 GiB (64 MiB in the quick mode).
"""

if MODEL_PATH is not None:
    model = keras.saving.load_model(MODEL_PATH)
elif QUICK:
    model = keras_unet2015.UNet2015(depth=2, filters=4)
else:
    model = keras_unet2015.UNet2015()  # the paper's network, untrained

predictor = keras_unet2015.OverlapTilePredictor(
    model, memory_budget=(64 if QUICK else 1024) * 2**20, verbose=0
)
grid = predictor.tile_grid(height, width)
print(
    f"tiles: {grid.tile_shape} input -> {grid.output_shape} output, "
    f"{len(grid.rows)} x {len(grid.cols)} tiles, context margin "
    f"{grid.margin} px"
)

"""
## Predict from disk to disk

`tifffile.memmap` opens the image without reading it; the predictor reads
one tile at a time by slicing. The outputs are TIFF files created as
memmaps of the full size: the predictor writes every tile's output into
them, and only the tiles in flight are held in memory. The images are
scaled to `[0, 1]` tile by tile, as in training (`uint8 / 255`).
"""


class ScaledImage:
    """A read-only view of a uint8 array as float32 in [0, 1]."""

    def __init__(self, array):
        self.array = array
        self.shape = array.shape
        self.dtype = np.dtype("float32")

    def __getitem__(self, index):
        return np.asarray(self.array[index], np.float32) / 255.0


image = ScaledImage(tifffile.memmap(image_path, mode="r"))
labels_path = OUTPUT_DIR / "labels.tif"
probabilities_path = OUTPUT_DIR / "probabilities.tif"
labels = tifffile.memmap(
    labels_path, shape=(height, width), dtype=np.uint8, photometric="minisblack"
)
predictor.predict(image, out=labels, output="labels")
labels.flush()
probabilities = tifffile.memmap(
    probabilities_path,
    shape=(height, width, model.num_classes),
    dtype=np.float32,
    photometric="minisblack",
    planarconfig="contig",
)
predictor.predict(image, out=probabilities)
probabilities.flush()
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"labels: {labels_path}, probabilities: {probabilities_path}")
print(f"cell fraction: {float(np.mean(labels)):.4f}")
print(f"peak resident memory: {peak_mb:.0f} MB")

"""
## No seams: tiles against one pass

A window of the image that spans tile borders, predicted in one forward
pass of the network, must give the same probabilities as the stitched
tiles. The window's input starts on the pooling grid (a multiple of
`2**depth` minus the context margin, the same grid the tiles use) and has a
valid input size; its output then covers exactly the pixels checked.
"""

unit = 2**model.depth
margin = grid.margin
tile_in, tile_out = grid.tile_shape[0], grid.output_shape[0]
# The window's output is one tile output wide and centred, on the pooling
# grid, on a tile border whose window lies inside the image.
half = tile_out // 2 // unit * unit
border = next(
    r + margin
    for r in grid.rows[1:]
    if r - half >= 0 and r + 2 * margin - half + tile_out <= min(height, width)
)
start = border - half
window_slice = slice(start - margin, start - margin + tile_in)
window = image[window_slice, window_slice][None, ..., None]
one_pass = model.predict_on_batch(window)
if model.activation is None:  # logits; the predictor applies a softmax
    one_pass = keras.ops.softmax(one_pass, axis=-1)
one_pass = np.asarray(keras.ops.convert_to_numpy(one_pass))[0]
tiled = np.asarray(
    probabilities[start : start + tile_out, start : start + tile_out]
)
difference = float(np.abs(tiled - one_pass).max())
print(
    f"window rows and columns {start}..{start + tile_out} cross the tile "
    f"border at {border}"
)
print(f"max difference tiles vs one pass: {difference:.2e}")

"""
## The tile grid

The figure shows the labels (downscaled by 4) with the borders of the
tiles' outputs drawn in gray: each output pixel comes from exactly one
tile, and the tiles' inputs overlap by twice the margin beyond these
lines.
"""

preview = np.asarray(labels[::4, ::4]) * 255
for row in grid.rows[1:]:
    preview[(row + margin) // 4, :] = 128
for col in grid.cols[1:]:
    preview[:, (col + margin) // 4] = 128
grid_path = OUTPUT_DIR / "tile_grid.png"
datasets.write_image(grid_path, preview.astype(np.uint8))
print(f"figure: {grid_path}")

"""
## Conclusion

`OverlapTilePredictor` segments any image size with bounded memory: the
input can be a memmap (or zarr, h5py: anything sliceable), `out=` receives
the result in place, `memory_budget` or `tile_size` sets the tile, and the
stitched prediction equals one pass over the whole mirrored image. For a
stack of images, pass a `(slices, height, width)` array and an `out` of the
same shape.
"""
