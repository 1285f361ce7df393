"""Draws `docs/img/architecture.png`: the U-Net of the paper's Fig. 1.

The diagram is read from the real model: `keras_unet2015.UNet2015(
image_size=572)` is built, and the spatial size and the number of channels
of every feature map are taken from its layers' outputs (no number is
written into this script). Each blue box is a multi-channel feature map,
its height grows with the spatial size and its width with the number of
channels; white boxes are the cropped copies of the contracting path that
are concatenated with the up-convolved maps. Arrows as in the paper: conv
3x3 + ReLU (blue), copy and crop (gray), max pool 2x2 (red), up-conv 2x2
(green), conv 1x1 (teal). Uses Pillow only.

Usage (from the repository root):

    python docs/scripts/make_architecture_figure.py [--depth 4] [--filters 64]
"""

import argparse
from pathlib import Path

from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

import keras_unet2015

ROOT = Path(__file__).resolve().parents[2]
INPUT_SIZE = 572
CONV, CROP, POOL, UP, HEAD = (
    (30, 110, 200),
    (140, 140, 140),
    (210, 40, 40),
    (40, 160, 70),
    (0, 150, 150),
)
BOX_FILL = (120, 170, 230)
STEP = 30  # horizontal gap between boxes, where the conv arrows go
LABEL = 14  # room for the channel count above a box


def font(size):
    return ImageFont.load_default(size=size)


def feature_maps(model):
    """`{layer name: (size, channels)}` of every layer output of the model."""
    maps = {}
    for layer in model.layers:
        shape = layer.output.shape
        if model.data_format == "channels_first":
            maps[layer.name] = (shape[2], shape[1])
        else:
            maps[layer.name] = (shape[1], shape[3])
    return maps


def box_width(channels):
    return 3 + channels // 16


def box_height(size, scale):
    return max(8, round(size * scale))


def arrow(draw, start, end, color, width=2):
    (x0, y0), (x1, y1) = start, end
    draw.line((x0, y0, x1, y1), fill=color, width=width)
    head = 5
    if x0 == x1:  # vertical
        sign = 1 if y1 > y0 else -1
        points = [(x1, y1), (x1 - head, y1 - sign * head)]
        points.append((x1 + head, y1 - sign * head))
    else:
        points = [(x1, y1), (x1 - head, y1 - head), (x1 - head, y1 + head)]
    draw.polygon(points, fill=color)


def vertical_text(image, xy, text, size=11):
    """Text rotated by 90 degrees, its lower left corner at `xy`."""
    box = ImageDraw.Draw(image).textbbox((0, 0), text, font=font(size))
    patch = Image.new("RGBA", (box[2] + 2, box[3] + 2), (255, 255, 255, 0))
    ImageDraw.Draw(patch).text((1, 0), text, fill="black", font=font(size))
    patch = patch.rotate(90, expand=True)
    image.paste(patch, (xy[0], xy[1] - patch.size[1]), patch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "img" / "architecture.png"
    )
    args = parser.parse_args()
    model = keras_unet2015.UNet2015(
        depth=args.depth, filters=args.filters, image_size=INPUT_SIZE
    )
    maps = feature_maps(model)
    depth = model.depth
    scale = 260 / INPUT_SIZE

    # The boxes along the U, level by level: (level, kind, layer names).
    columns = [(0, "input", [model.layers[0].name])]
    for level in range(1, depth + 1):
        for conv in (1, 2):
            columns.append((level - 1, "conv", [f"contract{level}_conv{conv}"]))
    columns += [(depth, "conv", [f"bottom_conv{c}"]) for c in (1, 2)]
    for level in range(depth, 0, -1):
        columns.append(
            (
                level - 1,
                "concat",
                [f"contract{level}_conv2", f"expand{level}_upconv"],
            )
        )
        for conv in (1, 2):
            columns.append((level - 1, "conv", [f"expand{level}_conv{conv}"]))
    columns.append((0, "head", ["head_conv"]))

    # Row of each level: tall enough for its largest box and the labels.
    row_height = {}
    for level, _, names in columns:
        height = box_height(maps[names[-1]][0], scale)
        row_height[level] = max(row_height.get(level, 0), height)
    row_top = {0: 30}
    for level in range(1, depth + 1):
        row_top[level] = row_top[level - 1] + row_height[level - 1] + 46

    # Horizontal positions: a new level starts under the previous box.
    placed = []
    x = 40
    previous_level = 0
    for level, kind, names in columns:
        widths = [box_width(maps[name][1]) for name in names]
        if level > previous_level:  # down a max-pool: same x
            x = placed[-1][1]
        placed.append((level, x, kind, names, widths))
        x += sum(widths) + STEP + (10 if level < previous_level else 0)
        previous_level = level
    width = x + 30
    height = row_top[depth] + row_height[depth] + 120

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def top(level, size):
        return row_top[level] + (row_height[level] - box_height(size, scale))

    right_edge = {}  # layer name -> (x, y middle) of its box's right side
    previous = None
    for level, x0, kind, names, widths in placed:
        size, _ = maps[names[-1]]
        h = box_height(size, scale)
        y0 = top(level, size)
        if kind == "concat":  # where the copied map was drawn
            source_right, _ = right_edge[names[0]]
        xs = x0
        for name, w in zip(names, widths):
            is_copy = kind == "concat" and name.startswith("contract")
            fill = "white" if is_copy or kind == "input" else BOX_FILL
            draw.rectangle((xs, y0, xs + w, y0 + h), fill=fill, outline="black")
            if not is_copy:  # the copy's channels are written on the left
                text = str(maps[name][1])
                tw = draw.textlength(text, font=font(10))
                draw.text(
                    (xs + w / 2 - tw / 2, y0 - LABEL), text, "black", font(10)
                )
                right_edge[name] = (xs + w, y0 + h // 2)
            xs += w
        vertical_text(image, (x0 - 13, y0 + h), f"{size} x {size}", 10)
        middle = y0 + h // 2
        if previous is not None:
            p_level, p_right, p_middle, p_x0 = previous
            if level == p_level:
                color = HEAD if kind == "head" else CONV
                arrow(draw, (p_right + 1, middle), (x0 - 1, middle), color)
            elif level > p_level:  # max-pool down
                px = p_x0 + 4
                arrow(
                    draw, (px, p_middle + 8), (px, top(level, size) - 14), POOL
                )
            else:  # up-conv
                arrow(
                    draw, (p_right + 3, p_middle), (p_right + 3, y0 + h + 4), UP
                )
        if kind == "concat":
            arrow(draw, (source_right + 2, middle), (x0 - 1, middle), CROP)
        previous = (level, xs, middle, x0)

    # Legend.
    legend = [
        ("conv 3x3, ReLU", CONV),
        ("copy and crop", CROP),
        ("max pool 2x2", POOL),
        ("up-conv 2x2", UP),
        ("conv 1x1", HEAD),
    ]
    lx, ly = width - 190, row_top[depth] + 10
    for text, color in legend:
        arrow(draw, (lx, ly + 7), (lx + 40, ly + 7), color)
        draw.text((lx + 48, ly), text, fill="black", font=font(12))
        ly += 20
    parameters = f"{model.count_params():,} parameters"
    caption = (
        f"UNet2015(depth={depth}, filters={args.filters}): "
        f"{INPUT_SIZE} x {INPUT_SIZE} input -> "
        f"{model.output_size(INPUT_SIZE)} x {model.output_size(INPUT_SIZE)} "
        f"output, {parameters}"
    )
    draw.text((40, height - 30), caption, fill="black", font=font(13))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(f"Wrote {args.out} ({image.size[0]}x{image.size[1]})")


if __name__ == "__main__":
    main()
