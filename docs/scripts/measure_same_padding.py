"""Measures how tiled same-padding predictions differ from whole passes.

On ISBI 2012 training slice 00 (512x512, scaled to [0, 1]) with a
same-padding `UNet2015` of depth 4 (16 filters, random weights, seed 0: no
trained model ships with the package, so the numbers show where and how
much tiles differ, not how much a trained model's segmentation changes).
Compared, for 320x320 tiles and several margins:

- "mirrored pass": one pass over the image mirrored by the same margin
  (plus mirrored rows and columns up to a multiple of 16), cropped;
- "plain pass": one pass over the unpadded 512x512 image, whose convolutions
  see zeros beyond the image border.

Prints a Markdown table of the maximum and mean absolute differences of the
class probabilities and the share of pixels whose label (argmax) changes,
for the whole image and for its interior (pixels at least 96 px from the
border).

Usage (from the repository root):

    python docs/scripts/measure_same_padding.py [--data ../shared/data]
"""

import argparse
from pathlib import Path

import keras
import numpy as np
from PIL import Image

import keras_unet2015

ROOT = Path(__file__).resolve().parents[2]
TILE = 320
INTERIOR = 96


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def mirrored_pass(model, image, margin):
    size = image.shape[0]
    padded_size = -(-(size + 2 * margin) // 16) * 16
    padded = np.pad(
        image,
        (margin, padded_size - size - margin),
        mode="reflect",
    )
    logits = keras.ops.convert_to_numpy(
        model.predict_on_batch(padded[None, :, :, None])
    )[0]
    return softmax(logits)[margin : margin + size, margin : margin + size]


def row(name, actual, expected):
    inner = np.s_[INTERIOR:-INTERIOR, INTERIOR:-INTERIOR]
    cells = []
    for region in (np.s_[:, :], inner):
        difference = np.abs(actual[region] - expected[region])
        changed = (
            actual[region].argmax(-1) != expected[region].argmax(-1)
        ).mean()
        cells += [
            f"{difference.max():.1e}",
            f"{difference.mean():.1e}",
            f"{100 * changed:.2f} %",
        ]
    return f"| {name} | " + " | ".join(cells) + " |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data"
    )
    args = parser.parse_args()
    path = args.data / "isbi2012" / "train" / "images" / "00.png"
    image = np.array(Image.open(path)).astype("float32") / 255
    keras.utils.set_random_seed(0)
    model = keras_unet2015.UNet2015(
        filters=16, padding="same", dropout_rate=0.0
    )
    plain = softmax(
        keras.ops.convert_to_numpy(
            model.predict_on_batch(image[None, :, :, None])
        )[0]
    )
    print(
        "| tiles vs | max, all | mean, all | labels, all | max, interior "
        "| mean, interior | labels, interior |"
    )
    print("|---|---|---|---|---|---|---|")
    for margin in (96, 32, 0):
        predictor = keras_unet2015.OverlapTilePredictor(
            model, tile_size=TILE, margin=margin, verbose=0
        )
        tiled = predictor.predict(image)
        grid = predictor.tile_grid(*image.shape)
        tiles = len(grid.rows) * len(grid.cols)
        label = f"margin {margin} ({tiles} tiles)"
        print(
            row(
                f"mirrored pass, {label}",
                tiled,
                mirrored_pass(model, image, margin),
            )
        )
        print(row(f"plain pass, {label}", tiled, plain))
    print(
        row(
            "plain pass vs mirrored pass (96)",
            plain,
            mirrored_pass(model, image, 96),
        )
    )


if __name__ == "__main__":
    main()
