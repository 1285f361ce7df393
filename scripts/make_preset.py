"""Turn a finished `keras-unet2015 reproduce isbi2012` run into a preset.

Writes `keras_unet2015/presets/NAME/model.keras` (the run's `best.keras`
without optimizer state) and `metadata.json` (the model card: data and its
terms, recipe, steps, hardware, wall time, held-out scores, citation). The
scores are those `reproduce` measured on `best.keras` (`results.json`);
the shipped file is checked to hold exactly its weights, and `--rescore`
measures them again on the shipped file with this process's backend.

Usage (from the repository root):

    KERAS_BACKEND=torch python scripts/make_preset.py RUN_DIR \\
        unet2015_isbi2012_16f --hardware "2-core AMD EPYC (AVX2), no GPU"
"""

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DATA = (
    "ISBI 2012 EM segmentation challenge training volume (30 ssTEM slices "
    "of the Drosophila first instar larva ventral nerve cord, 512 x 512 px, "
    "4 x 4 x 50 nm per pixel; Cardona et al. 2010), as the per-slice PNG "
    "copy of GitHub zhixuhao/unet. Trained on slices 0-24, validated and "
    "scored on slices 25-29 (the challenge's test labels were never "
    "released)."
)
DATA_TERMS = (
    "No data licence is stated by the copy used. The data are the ISBI "
    "2012 challenge's and remain under the organisers' terms: research "
    "data, cite Arganda-Carreras et al. (2015) and Cardona et al. (2010). "
    "The weights are released with the package under Apache-2.0; whether "
    "the data's terms reach the weights is for the user to judge."
)
CITATION = [
    "Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional "
    "Networks for Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, "
    "pp. 234-241. arXiv:1505.04597.",
    "Arganda-Carreras I. et al. (2015) Crowdsourcing the creation of image "
    "segmentation algorithms for connectomics. Front. Neuroanat. 9:142. "
    "doi:10.3389/fnana.2015.00142.",
    "Cardona A. et al. (2010) An integrated micro- and macroarchitectural "
    "analysis of the Drosophila brain by computer-assisted serial section "
    "electron microscopy. PLoS Biol 8(10): e1000502. "
    "doi:10.1371/journal.pbio.1000502.",
]


def cpu_description():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    flags = next(
        (line for line in text.splitlines() if line.startswith("flags")), ""
    )
    simd = [f for f in ("avx512f", "avx2", "fma") if f" {f}" in flags]
    cores = text.count("processor\t:")
    return f"{cores} x {model} ({', '.join(simd)})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--hardware", default=None)
    parser.add_argument("--description", default=None)
    parser.add_argument(
        "--command-options",
        default="",
        help="options of the run's command beyond the recipe, e.g. "
        "'--time-limit 105'",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the shipped file again with this process's backend "
        "(default: the scores of results.json, measured by reproduce on "
        "best.keras, whose weights the shipped file holds exactly)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "isbi2012",
        help="ISBI 2012 folder (default: ../shared/data/isbi2012)",
    )
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from keras_unet2015 import reproduce
    from keras_unet2015.datasets import isbi2012

    if "isbi2012" not in args.name:
        sys.exit("ISBI 2012 presets have 'isbi2012' in their name.")
    results = json.loads((args.run_dir / reproduce.RESULTS_NAME).read_text())
    recipe = results["recipe"]
    out = ROOT / "keras_unet2015" / "presets" / args.name
    out.mkdir(parents=True, exist_ok=True)
    model = keras.saving.load_model(args.run_dir / "best.keras", compile=False)
    model.save(out / "model.keras")
    shipped = keras.saving.load_model(out / "model.keras", compile=False)
    # The shipped file holds exactly the scored checkpoint's weights.
    for a, b in zip(model.get_weights(), shipped.get_weights()):
        np.testing.assert_array_equal(a, b)
    if args.rescore:
        (x, y), _ = isbi2012.load_data(args.data)
        held_out = [x[i] for i in reproduce.VALIDATION_SLICES]
        labels = np.stack([y[i] for i in reproduce.VALIDATION_SLICES])
        scores = {
            f"tta_{tta}": reproduce.evaluate_held_out(
                shipped, held_out, labels, tta=tta
            )
            for tta in reproduce.TTA_MODES
        }
    else:
        scores = {
            f"tta_{tta}": {
                k: v for k, v in results[f"tta_{tta}"].items() if k != "seconds"
            }
            for tta in reproduce.TTA_MODES
        }
    curve = reproduce.read_learning_curve(args.run_dir / "training_log.csv")
    card = {
        "name": args.name,
        "description": args.description
        or (
            f"The paper's U-Net (depth {recipe['depth']}, valid "
            f"convolutions, 572 -> 388 px tiles) with {recipe['filters']} "
            "filters in the first level, trained on ISBI 2012 EM slices to "
            "segment cell interior (class 1) from membrane (class 0)."
        ),
        "architecture": {
            "class": "keras_unet2015.UNet2015",
            "depth": model.depth,
            "filters": model.filters,
            "num_classes": model.num_classes,
            "input_channels": model.input_channels,
            "parameters": int(model.count_params()),
            "input": "gray values scaled to [0, 1] (uint8 / 255)",
            "output": "logits of (membrane, cell); softmax for probabilities",
        },
        "data": DATA,
        "data_terms": DATA_TERMS,
        "recipe": recipe,
        "command": " ".join(
            (
                "keras-unet2015 --backend "
                f"{results['backend']} reproduce isbi2012 --output-dir RUN "
                + " ".join(
                    f"--{k.replace('_', '-')} {v}"
                    for k, v in recipe.items()
                    if k != "seed" and reproduce.ISBI2012_RECIPE.get(k) != v
                )
                + " "
                + args.command_options
            ).split()
        ),
        "steps": int(results["steps"]),
        "best_epoch": results["best_epoch"],
        "best_steps": results["best_steps"],
        "wall_time_s": round(float(results["wall_time"]), 1),
        "training_backend": results["backend"],
        "hardware": args.hardware or cpu_description(),
        "software": {
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "python": platform.python_version(),
        },
        "scores": {
            key: {k: round(v, 6) for k, v in value.items()}
            for key, value in scores.items()
        },
        "scored_on": "ISBI 2012 training slices 25-29 (held out), whole "
        "slices with OverlapTilePredictor; ISBI pixel and Rand error "
        "(1 - maximal F-scores over thresholds 0.0, 0.1, ..., 1.0)",
        "paper": {"pixel_error": 0.0611, "rand_error": 0.0382},
        "validation_curve_rows": len(curve["steps"]),
        "citation": CITATION,
        "license": "Apache-2.0 (weights and code)",
    }
    (out / "metadata.json").write_text(json.dumps(card, indent=2) + "\n")
    size = (out / "model.keras").stat().st_size
    print(f"Wrote {out} ({size / 1e6:.1f} MB)")
    print(json.dumps(card["scores"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
