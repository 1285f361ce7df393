"""Draws `docs/img/prediction_isbi.png`: a held-out ISBI 2012 slice segmented.

A trained model (the `.keras` file written by `keras-unet2015 train`)
segments one held-out training slice whole with `OverlapTilePredictor`
(mirrored border, exact tiling). Panels (each scaled to 256 px): the slice;
its membrane label; the predicted probability of cell interior; and the
comparison of the mask (probability > 0.5) with the label: agreement in
gray values of the label, predicted membrane where the label has cell in
red, missed membrane in blue. The slice's pixel and Rand errors are
printed in the title. Uses NumPy and Pillow only.

The figure in the docs shows the shipped preset `unet2015_isbi2012_16f`
(trained on slices 0-24 by `keras-unet2015 reproduce isbi2012`, see the
training page):

    python docs/scripts/make_prediction_figure.py \\
        --model keras_unet2015/presets/unet2015_isbi2012_16f/model.keras
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

ROOT = Path(__file__).resolve().parents[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained .keras")
    parser.add_argument("--data", default=ROOT.parent / "shared" / "data")
    parser.add_argument("--slice", type=int, default=29)
    parser.add_argument(
        "--out", default=ROOT / "docs" / "img" / "prediction_isbi.png"
    )
    args = parser.parse_args()

    import keras

    import keras_unet2015
    from keras_unet2015 import datasets
    from keras_unet2015 import metrics

    (x_train, y_train), _ = datasets.isbi2012.load_data(
        Path(args.data) / "isbi2012"
    )
    image, label = x_train[args.slice], y_train[args.slice] > 0
    model = keras.saving.load_model(args.model)
    predictor = keras_unet2015.OverlapTilePredictor(model, verbose=0)
    probability = predictor.predict(datasets.to_float_image(image))[..., 1]
    scores = metrics.evaluate(probability, label)
    mask = probability > 0.5

    comparison = np.repeat((label * 200 + 40)[..., None], 3, -1)
    comparison[~mask & label] = (220, 30, 30)  # membrane predicted in cell
    comparison[mask & ~label] = (30, 90, 230)  # membrane missed
    panels = [
        (f"held-out slice {args.slice:02d}", gray(image, 0, 255)),
        ("label (white = cell)", gray(label, 0, 1)),
        ("P(cell interior)", gray(probability, 0, 1)),
        (
            "mask > 0.5: red extra, blue missed",
            Image.fromarray(comparison.astype(np.uint8)),
        ),
    ]
    canvas = Image.new(
        "RGB",
        (len(panels) * (PANEL + GAP) - GAP, PANEL + 2 * TITLE),
        "white",
    )
    text = ImageDraw.Draw(canvas)
    text.text(
        (2, 4),
        f"pixel error {scores['pixel_error']:.4f}, Rand error "
        f"{scores['rand_error']:.4f} (ISBI 2012 measures, this slice)",
        fill="black",
    )
    for i, (title, panel) in enumerate(panels):
        x0 = i * (PANEL + GAP)
        resample = Image.NEAREST if i in (1, 3) else Image.LANCZOS
        canvas.paste(panel.resize((PANEL, PANEL), resample), (x0, 2 * TITLE))
        text.text((x0 + 2, TITLE + 4), title, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, optimize=True)
    print(f"Wrote {args.out}: {scores}")


if __name__ == "__main__":
    main()
