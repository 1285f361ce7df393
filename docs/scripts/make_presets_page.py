"""Write docs/presets.md: the model card of every shipped preset.

The cards come from `keras_unet2015/presets/*/metadata.json`, which
`scripts/make_preset.py` writes from a finished reproduction run, so the
page states exactly what the shipped files do (and
`tests/test_presets.py` checks the page against the cards).

Usage: `python docs/scripts/make_presets_page.py [--check]`
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "keras_unet2015" / "presets"
PAGE = ROOT / "docs" / "presets.md"

INTRO = """\
# Trained models (presets)

`UNet2015.from_preset(name)` returns a trained U-Net (configuration and
weights), ready for `OverlapTilePredictor`, `keras-unet2015 predict
--preset NAME` or further training; `UNet2015.list_presets()` lists the
names. Presets up to about 10 MB ship inside the wheel and load offline;
larger ones are registered with a release URL and a SHA-256
(`keras_unet2015.presets.register_preset`) and downloaded once with
`keras.utils.get_file`. A folder holding `model.keras`, or any `.keras`
file, works as a preset too.

```python
import keras_unet2015

model = keras_unet2015.UNet2015.from_preset("unet2015_isbi2012_16f")
predictor = keras_unet2015.OverlapTilePredictor(model, tta="dihedral")
# probabilities = predictor.predict(image / 255.0)[..., 1]   # cell interior
```

```bash
keras-unet2015 predict --preset unet2015_isbi2012_16f --output-dir out slices/
```

Each card below is generated from the preset's `metadata.json` by
`docs/scripts/make_presets_page.py`; the scores were measured on the shipped
file, and `tests/test_presets.py` segments the held-out slices with it under
JAX, TensorFlow and PyTorch and checks the scores again. How the runs were
made, and the runs that chose the recipe, are on the
[Training recipe](training.md) page.
"""


def _card(card):
    recipe = card["recipe"]
    scores = card["scores"]
    lines = [
        f"## `{card['name']}`",
        "",
        card["description"],
        "",
        "| held-out ISBI 2012 slices 25-29 | pixel error | Rand error "
        "| IoU (cell, at 0.5) |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("tta_none", "plain"),
        ("tta_dihedral", 'with `tta="dihedral"` (8 rotations and flips)'),
    ):
        s = scores[key]
        lines.append(
            f"| {label} | {s['pixel_error']:.4f} | {s['rand_error']:.4f} "
            f"| {s['jaccard']:.3f} |"
        )
    paper = card.get("paper", {})
    if paper:
        lines.append(
            f"| paper (hidden test labels, 64 filters, 7 rotations) | "
            f"{paper['pixel_error']:.4f} | {paper['rand_error']:.4f} | |"
        )
    arch = card["architecture"]
    hours = card["wall_time_s"] / 3600
    lines += [
        "",
        f"- **Network**: `UNet2015(depth={arch['depth']}, "
        f"filters={arch['filters']})`, {arch['parameters']:,} parameters; "
        f"input {arch['input']}; output {arch['output']}.",
        f"- **Data**: {card['data']}",
        f"- **Terms**: {card['data_terms']}",
        "- **Recipe**: "
        + ", ".join(f"`{k}={v}`" for k, v in recipe.items())
        + ".",
        f"- **Command**: `{card['command']}`.",
        f"- **Training**: {card['steps']:,} steps of one tile in "
        f"{hours:.2f} h of training ({card['training_backend']} backend); "
        f"the shipped weights are the best checkpoint by validation Rand "
        f"error, after {card['best_steps']:,} steps.",
        f"- **Hardware**: {card['hardware']}.",
        f"- **Software**: Keras {card['software']['keras']}, scored with the "
        f"{card['software']['backend']} backend, Python "
        f"{card['software']['python']}.",
        f"- **Scored on**: {card['scored_on']}.",
        f"- **Licence**: {card['license']}.",
        "- **Cite**:",
    ]
    lines += [f"    - {c}" for c in card["citation"]]
    return "\n".join(lines) + "\n"


def render():
    cards = [
        json.loads((d / "metadata.json").read_text())
        for d in sorted(PRESETS.iterdir())
        if (d / "metadata.json").is_file()
    ]
    return INTRO + "\n" + "\n".join(_card(c) for c in cards)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run {__file__}", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"Wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
