"""Draws `docs/img/napari_widget.png`: the napari widget beside an EM slice.

Opens a napari window, adds one held-out ISBI 2012 training slice (the
preset was trained on slices 0-24), docks the plugin's widget from its
manifest, segments the slice with the shipped preset
`unet2015_isbi2012_16f` (probabilities and instances) exactly as a click
on Run does, and saves a screenshot of the whole window, scaled down.

Needs napari with a Qt binding and a display with OpenGL; on a machine
without one, run it under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" \\
        python docs/scripts/make_napari_screenshot.py
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

ROOT = Path(__file__).resolve().parents[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=ROOT.parent / "shared" / "data")
    parser.add_argument("--slice", type=int, default=27)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument(
        "--out", default=ROOT / "docs" / "img" / "napari_widget.png"
    )
    args = parser.parse_args()

    import napari
    import numpy as np
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    path = Path(args.data) / "isbi2012" / "train" / "images"
    path = path / f"{args.slice:02d}.png"
    image = np.asarray(Image.open(path))

    viewer = napari.Viewer(title="napari: U-Net 2015", show=True)
    viewer.window.resize(1500, 860)
    viewer.add_image(image, name=f"ISBI 2012 slice {args.slice}")
    _, widget = viewer.window.add_plugin_dock_widget(
        "keras-unet2015", "Segment with U-Net 2015"
    )
    widget.model.value = "unet2015_isbi2012_16f"
    widget.output_probabilities.value = True
    widget.output_instances.value = True
    start = time.perf_counter()
    widget.run()
    while widget.running:
        QApplication.processEvents()
        time.sleep(0.05)
    print(f"Segmented {path.name} in {time.perf_counter() - start:.1f} s")
    name = viewer.layers[0].name
    for suffix in ("probabilities", "instances"):
        if f"{name} {suffix}" not in viewer.layers:
            raise SystemExit(f"no '{name} {suffix}' layer: {widget.status}")
    viewer.layers[f"{name} probabilities"].visible = False
    viewer.layers.selection.active = viewer.layers[f"{name} instances"]
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)

    shot = viewer.screenshot(canvas_only=False, flash=False)
    picture = Image.fromarray(shot[..., :3])
    height = round(picture.height * args.width / picture.width)
    picture = picture.resize((args.width, height), Image.LANCZOS)
    # A palette keeps the PNG small; the screenshot has few colours
    # besides the EM slice's grays.
    picture = picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    picture.save(args.out, optimize=True)
    print(f"Wrote {args.out} ({Path(args.out).stat().st_size / 1e3:.0f} kB)")
    viewer.close()


if __name__ == "__main__":
    main()
