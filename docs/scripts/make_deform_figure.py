"""Draws `docs/img/elastic_deformation_isbi.png`: the paper's deformation.

Panels, for ISBI 2012 training slice 00 (512x512, shown at half size): the
EM image with a 32 px line grid and the 3x3 control points, each with the
displacement drawn 3x magnified; the image deformed by `ElasticDeform`
(paper settings: 3x3 grid, sigma = 10 px, bicubic field, mirrored border)
with the grid deformed alike; the deformed label (nearest neighbour); the
deformed weight map (`unet_weight_map` of the label, bilinear). One field
serves all panels. The control-point displacements come from NumPy's random
generator with a fixed seed, so the figure is the same on every backend.
Uses NumPy and Pillow only.

Usage (from the repository root):

    python docs/scripts/make_deform_figure.py [--data ../shared/data]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_unet2015 import ElasticDeform
from keras_unet2015 import weight_maps

ROOT = Path(__file__).resolve().parents[2]
SEED = 3
SIGMA = 10.0
GRID = 3
GRID_STEP = 32
MAGNIFY = 3.0
TITLE = 20
MARGIN = 14  # room around each panel for the arrows at the border
LINE_WIDTH = 3
# Anchors of matplotlib's "magma" colour map, interpolated linearly.
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
LINE_COLOUR = np.array((255, 210, 0), np.float64)


def colorize(values, top):
    """RGB uint8 image of `values` in [0, top] with the magma anchors."""
    position = np.clip(values / top, 0, 1) * (len(MAGMA) - 1)
    low = np.floor(position).astype(int).clip(0, len(MAGMA) - 2)
    fraction = (position - low)[..., None]
    rgb = MAGMA[low] * (1 - fraction) + MAGMA[low + 1] * fraction
    return rgb.round().astype(np.uint8)


def with_lines(gray, lines):
    """Gray image with a line image (values in [0, 1]) drawn over it."""
    rgb = np.repeat(gray[..., None].astype(np.float64), 3, axis=2)
    alpha = np.clip(lines, 0, 1)[..., None] * 0.8
    return (rgb * (1 - alpha) + LINE_COLOUR * alpha).round().astype(np.uint8)


def half(rgb):
    """Half-size RGB image (2x2 mean)."""
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    rgb = rgb[:h, :w].astype(np.float64)
    return (
        rgb.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round()
    ).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "img" / "elastic_deformation_isbi.png",
    )
    args = parser.parse_args()

    isbi = args.data / "isbi2012" / "train"
    image = np.array(Image.open(isbi / "images" / "00.png"))
    labels = np.array(Image.open(isbi / "labels" / "00.png"))
    weights = weight_maps.unet_weight_map(weight_maps.isbi_instances(labels))
    size = image.shape[0]
    lines = np.zeros(image.shape, np.float32)
    for offset in range(LINE_WIDTH):
        lines[GRID_STEP // 2 + offset :: GRID_STEP] = 1.0
        lines[:, GRID_STEP // 2 + offset :: GRID_STEP] = 1.0

    # The field, from fixed control-point displacements: (1, 2, 3, 3).
    displacements = np.random.default_rng(SEED).normal(
        0.0, SIGMA, (1, 2, GRID, GRID)
    )
    layer = ElasticDeform(grid_size=GRID, sigma=SIGMA)
    # Image and line grid as two channels: bilinear; label: nearest;
    # weight map: bilinear.
    channels = np.stack([image.astype(np.float32), lines], axis=-1)[None]
    deformed, deformed_labels, deformed_weights = (
        np.asarray(x)
        for x in layer.transform(
            (
                channels,
                labels[None, ..., None],
                weights[None].astype("float32"),
            ),
            {"displacements": displacements.astype("float32")},
        )
    )
    deformed_image = np.clip(deformed[0, ..., 0], 0, 255)
    deformed_lines = deformed[0, ..., 1]
    deformed_labels = deformed_labels[0, ..., 0]
    deformed_weights = deformed_weights[0]

    top = float(np.ceil(weights.max()))
    panels = [
        ("ISBI slice, 3x3 grid (arrows x3)", half(with_lines(image, lines))),
        ("deformed image", half(with_lines(deformed_image, deformed_lines))),
        (
            "deformed label (nearest)",
            half(np.repeat(deformed_labels[..., None], 3, axis=2)),
        ),
        (
            f"deformed weight map (0-{top:.0f})",
            half(colorize(deformed_weights, top)),
        ),
    ]
    side = panels[0][1].shape[0]
    step = side + 2 * MARGIN
    figure = Image.new(
        "RGB", (step * len(panels), side + TITLE + 2 * MARGIN), "white"
    )
    draw = ImageDraw.Draw(figure)
    for k, (title, panel) in enumerate(panels):
        figure.paste(
            Image.fromarray(panel), (k * step + MARGIN, TITLE + MARGIN)
        )
        draw.text((k * step + MARGIN, 4), title, fill="black")
    # Control points (output pixel p reads the input at p + d(p): the
    # content at p + d moves to p), arrows from p + d to p, magnified.
    for i in range(GRID):
        for j in range(GRID):
            p = np.array([i, j]) * (size - 1) / (GRID - 1) / 2
            source = p + MAGNIFY * displacements[0, :, i, j] / 2
            p = p + (TITLE + MARGIN, MARGIN)
            source = source + (TITLE + MARGIN, MARGIN)
            draw.line(
                [(source[1], source[0]), (p[1], p[0])],
                fill=(230, 20, 20),
                width=2,
            )
            draw.ellipse(
                [(p[1] - 3, p[0] - 3), (p[1] + 3, p[0] + 3)],
                fill=(230, 20, 20),
            )
    # An adaptive palette keeps the PNG small.
    figure = figure.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out, optimize=True)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB); "
        f"control-point displacements (px): "
        f"{np.round(displacements[0], 1).tolist()}"
    )


if __name__ == "__main__":
    main()
