"""Draws `docs/img/weight_map_isbi.png`: the paper's weight map on ISBI 2012.

Panels, for a 256x256 window of training slice 00: the EM image, its label
(white = cell, black = membrane), the weight map `unet_weight_map` of the
label (w0 = 10, sigma = 5 px, balanced class weights) with its colour scale,
and the weight map over the image. Uses NumPy and Pillow only.

Usage (from the repository root):

    python docs/scripts/make_weight_map_figure.py [--data ../shared/data]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_unet2015 import weight_maps

ROOT = Path(__file__).resolve().parents[2]
WINDOW = np.s_[128:384, 128:384]
TITLE = 20
SCALE_WIDTH = 56
GAP = 6

# Anchors of matplotlib's "magma" colour map (perceptually uniform, dark to
# light), interpolated linearly.
MAGMA = np.array(
    [
        (0, 0, 4),
        (28, 16, 68),
        (79, 18, 123),
        (129, 37, 129),
        (181, 54, 122),
        (229, 80, 100),
        (251, 135, 97),
        (254, 194, 135),
        (252, 253, 191),
    ],
    np.float64,
)


def colorize(values, top):
    """RGB uint8 image of `values` in [0, top] with the magma anchors."""
    position = np.clip(values / top, 0, 1) * (len(MAGMA) - 1)
    low = np.floor(position).astype(int).clip(0, len(MAGMA) - 2)
    fraction = (position - low)[..., None]
    rgb = MAGMA[low] * (1 - fraction) + MAGMA[low + 1] * fraction
    return rgb.round().astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "img" / "weight_map_isbi.png",
    )
    args = parser.parse_args()

    isbi = args.data / "isbi2012" / "train"
    image = np.array(Image.open(isbi / "images" / "00.png"))
    labels = np.array(Image.open(isbi / "labels" / "00.png"))
    # The weight map of the whole slice, so that cells cut by the window
    # keep their true neighbours; then the window.
    weights = weight_maps.unet_weight_map(weight_maps.isbi_instances(labels))
    image, labels, weights = image[WINDOW], labels[WINDOW], weights[WINDOW]
    top = float(np.ceil(weights.max()))

    gray = np.repeat(image[..., None], 3, axis=2)
    label_rgb = np.repeat(labels[..., None], 3, axis=2)
    heat = colorize(weights, top)
    overlay = (0.45 * gray + 0.55 * heat).round().astype(np.uint8)
    panels = [
        ("ISBI 2012 slice 00", gray),
        ("label (0 = membrane)", label_rgb),
        ("weight map w(x)", heat),
        ("w(x) over the image", overlay),
    ]

    size = image.shape[0]
    width = len(panels) * (size + GAP) + SCALE_WIDTH
    canvas = Image.new("RGB", (width, size + TITLE), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (title, panel) in enumerate(panels):
        x = index * (size + GAP)
        canvas.paste(Image.fromarray(panel), (x, TITLE))
        draw.text((x + 2, 4), title, fill="black")

    # Colour scale with ticks.
    x = len(panels) * (size + GAP)
    ramp = np.linspace(top, 0, size)[:, None].repeat(14, axis=1)
    canvas.paste(Image.fromarray(colorize(ramp, top)), (x, TITLE))
    for value in np.arange(0, top + 1e-9, 2.0):
        y = TITLE + round((1 - value / top) * (size - 1))
        draw.line((x + 14, y, x + 18, y), fill="black")
        draw.text((x + 20, y - 5), f"{value:g}", fill="black")
    draw.text((x, 4), "w", fill="black")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True
    )
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB); "
        f"weights in the window from {weights.min():.2f} to "
        f"{weights.max():.2f}"
    )


if __name__ == "__main__":
    main()
