"""Draws `docs/img/overlap_tile_isbi.png`: the overlap-tile strategy.

Left: ISBI 2012 training slice 00 (512x512) extended by mirroring, as
`OverlapTilePredictor` reads it, with the tile grid of the paper's network
(depth 4) for 316x316 input tiles (132x132 outputs): output tiles start
every 128 px (multiples of 16), the yellow square is the image, everything
outside it is mirrored (shown lighter). Two tiles are highlighted: input
tile (thick outline) and its output (filled). Right: the top-left input
tile at full resolution, with the image border and the output it gives.

The tile grid and the mirrored pixels come from the predictor itself
(`tile_grid` and `read_mirrored`); the network's weights play no role, so a
narrow model is built. Uses NumPy and Pillow only for drawing.

Usage (from the repository root):

    python docs/scripts/make_tiling_figure.py [--data ../shared/data]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

import keras_unet2015

ROOT = Path(__file__).resolve().parents[2]
TILE = 316
TITLE = 34
GAP = 12
IMAGE_BORDER = (255, 214, 0)
GRID = (0, 190, 255)
HIGHLIGHTS = ((230, 40, 40), (40, 200, 70))


def label(draw, xy, text, color="black"):
    """Text on a white box, readable over the micrograph."""
    font = ImageFont.load_default(size=13)
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
    draw.rectangle((x0 - 2, y0 - 2, x1 + 2, y1 + 2), fill="white")
    draw.text(xy, text, fill=color, font=font)


def blend(rgb, color, alpha):
    return (rgb * (1 - alpha) + np.array(color) * alpha).round()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "img" / "overlap_tile_isbi.png",
    )
    args = parser.parse_args()

    image = np.array(
        Image.open(args.data / "isbi2012" / "train" / "images" / "00.png")
    )
    size = image.shape[0]
    model = keras_unet2015.UNet2015(filters=2)  # the grid needs depth only
    predictor = keras_unet2015.OverlapTilePredictor(
        model, tile_size=TILE, verbose=0
    )
    grid = predictor.tile_grid(size, size)
    margin = grid.margin
    out_size = grid.output_shape[0]
    first, last = grid.rows[0], grid.rows[-1] + TILE
    extended = predictor.read_mirrored(
        image, rows=(first, last), cols=(first, last)
    ).astype(np.float64)

    # Left panel: mirrored context lighter, the image as it is.
    rgb = np.repeat(extended[..., None], 3, axis=2)
    inside = np.zeros(extended.shape, bool)
    inside[-first : -first + size, -first : -first + size] = True
    rgb[~inside] = blend(rgb[~inside], (255, 255, 255), 0.45)
    for (row, col), color in zip(((0, 0), (1, 2)), HIGHLIGHTS):
        top = grid.rows[row] + margin - first
        left = grid.cols[col] + margin - first
        region = np.s_[top : top + out_size, left : left + out_size]
        rgb[region] = blend(rgb[region], color, 0.35)
    scale = 2
    left_panel = Image.fromarray(rgb.astype(np.uint8)).resize(
        (rgb.shape[1] // scale, rgb.shape[0] // scale), Image.LANCZOS
    )
    draw = ImageDraw.Draw(left_panel)

    def box(top, left, extent, color, width):
        draw.rectangle(
            (
                (left - first) // scale,
                (top - first) // scale,
                (left - first + extent) // scale - 1,
                (top - first + extent) // scale - 1,
            ),
            outline=color,
            width=width,
        )

    for row in grid.rows:
        for col in grid.cols:
            box(row + margin, col + margin, out_size, GRID, 1)
    box(0, 0, size, IMAGE_BORDER, 2)
    for (row, col), color in zip(((0, 0), (1, 2)), HIGHLIGHTS):
        box(grid.rows[row], grid.cols[col], TILE, color, 3)

    # Right panel: the top-left input tile at full resolution.
    tile = predictor.read_mirrored(
        image,
        rows=(grid.rows[0], grid.rows[0] + TILE),
        cols=(grid.cols[0], grid.cols[0] + TILE),
    ).astype(np.float64)
    tile_rgb = np.repeat(tile[..., None], 3, axis=2)
    outside = np.ones(tile.shape, bool)
    outside[margin:, margin:] = False
    tile_rgb[outside] = blend(tile_rgb[outside], (255, 255, 255), 0.45)
    right_panel = Image.fromarray(tile_rgb.astype(np.uint8))
    draw = ImageDraw.Draw(right_panel)
    draw.line((margin, margin, TILE, margin), fill=IMAGE_BORDER, width=2)
    draw.line((margin, margin, margin, TILE), fill=IMAGE_BORDER, width=2)
    draw.rectangle(
        (margin, margin, margin + out_size - 1, margin + out_size - 1),
        outline=HIGHLIGHTS[0],
        width=2,
    )
    draw.rectangle((0, 0, TILE - 1, TILE - 1), outline=HIGHLIGHTS[0], width=3)
    label(draw, (margin + 6, margin + 6), f"output {out_size}x{out_size}")
    label(draw, (6, 6), f"mirrored context ({margin} px)")
    label(draw, (margin + 6, TILE - 24), "image from here (yellow)")

    height = max(left_panel.height, right_panel.height) + TITLE
    width = left_panel.width + GAP + right_panel.width
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(left_panel, (0, TITLE))
    canvas.paste(right_panel, (left_panel.width + GAP, TITLE))
    draw = ImageDraw.Draw(canvas)
    label(
        draw,
        (2, 0),
        f"ISBI slice 00 ({size} px), mirrored; tiles {TILE} -> {out_size}",
    )
    label(
        draw,
        (2, 15),
        f"outputs every {grid.rows[1] - grid.rows[0]} px; yellow: image",
    )
    label(
        draw,
        (left_panel.width + GAP + 2, 0),
        f"top-left input tile, {TILE}x{TILE} px",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True
    )
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB); "
        f"grid rows {grid.rows}, tile {grid.tile_shape}, output "
        f"{grid.output_shape}"
    )


if __name__ == "__main__":
    main()
