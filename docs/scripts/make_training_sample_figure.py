"""Draws `docs/img/training_sample_isbi.png`: one training sample of ISBI 2012.

A sample of `keras_unet2015.datasets.TrainingSampleStream` as the `train`
command draws it for the paper's network: a 572x572 input tile cut from
training slice 00 mirrored at its border, warped by `ElasticDeform` (3x3
grid, sigma 10 px), and the label and weight map of the 388x388 output
window, warped by the same field. Panels (each scaled to 256 px): the slice
with the mirrored border and the tile (yellow) and output window (cyan)
outlined; the warped input tile with its output window; the label and the
weight map of the output window. Uses NumPy and Pillow only.

Usage (from the repository root):

    python docs/scripts/make_training_sample_figure.py [--data ../shared/data]
"""

import argparse
from pathlib import Path

import numpy as np
from _panels import GAP
from _panels import PANEL
from _panels import TITLE
from _panels import gray
from PIL import Image
from PIL import ImageDraw

from keras_unet2015 import datasets
from keras_unet2015 import training
from keras_unet2015.layers.elastic_deform import ElasticDeform

ROOT = Path(__file__).resolve().parents[2]
INPUT, OUTPUT, MARGIN = 572, 388, 92


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--out", default=ROOT / "docs" / "img" / "training_sample_isbi.png"
    )
    args = parser.parse_args()
    (x_train, y_train), _ = datasets.isbi2012.load_data(
        Path(args.data) / "isbi2012"
    )
    image, label = x_train[0], y_train[0]
    targets, weights = training.prepare_targets([label], "binary")
    common = dict(
        input_size=INPUT, output_size=OUTPUT, steps_per_epoch=1, seed=4
    )
    stream = datasets.TrainingSampleStream(
        [image],
        targets,
        weights,
        augmentation=ElasticDeform(sigma=10.0),
        **common,
    )
    x, y, w = stream[0]
    # Where the tile lies in the mirrored slice (before the warp).
    _, top, left = stream.sampler.locate(0, 0, 0)
    row, col = top, left  # tile corner in the slice mirrored by MARGIN
    padded = np.pad(image.astype(np.float32) / 255.0, MARGIN, mode="reflect")

    scale = PANEL / padded.shape[0]
    overview = gray(padded, 0, 1).resize((PANEL, PANEL), Image.LANCZOS)
    draw = ImageDraw.Draw(overview)
    inner = MARGIN * scale, (MARGIN + 512) * scale
    draw.rectangle([inner[0], inner[0], inner[1], inner[1]], outline="white")
    draw.rectangle(
        [
            col * scale,
            row * scale,
            (col + INPUT) * scale,
            (row + INPUT) * scale,
        ],
        outline=(255, 220, 0),
        width=2,
    )
    out0 = (col + MARGIN) * scale, (row + MARGIN) * scale
    draw.rectangle(
        [out0[0], out0[1], out0[0] + OUTPUT * scale, out0[1] + OUTPUT * scale],
        outline=(0, 220, 255),
        width=2,
    )
    tile = gray(x[0, ..., 0], 0, 1).resize((PANEL, PANEL), Image.LANCZOS)
    tile_scale = PANEL / INPUT
    ImageDraw.Draw(tile).rectangle(
        [
            MARGIN * tile_scale,
            MARGIN * tile_scale,
            (MARGIN + OUTPUT) * tile_scale,
            (MARGIN + OUTPUT) * tile_scale,
        ],
        outline=(0, 220, 255),
        width=2,
    )
    labels = gray(y[0], 0, 1).resize((PANEL, PANEL), Image.NEAREST)
    weight_panel = gray(w[0], 0, float(w.max())).resize(
        (PANEL, PANEL), Image.LANCZOS
    )
    panels = [
        ("slice 00, mirrored; tile, output", overview),
        ("572 px input tile, warped", tile),
        ("388 px label (1 = cell)", labels),
        (f"388 px weight map (max {w.max():.1f})", weight_panel),
    ]
    canvas = Image.new(
        "RGB", (len(panels) * (PANEL + GAP) - GAP, PANEL + TITLE), "white"
    )
    text = ImageDraw.Draw(canvas)
    for i, (title, panel) in enumerate(panels):
        x0 = i * (PANEL + GAP)
        canvas.paste(panel, (x0, TITLE))
        text.text((x0 + 2, 4), title, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
