"""Reproduction of the paper's ISBI 2012 experiment, resumable across sessions.

`reproduce_isbi2012(output_dir)` trains a U-Net on ISBI 2012 training
slices 0-24 with a fixed recipe (`ISBI2012_RECIPE`), validates it on slices
25-29 during training (whole slices, `OverlapTilePredictor`), and evaluates
the best checkpoint (lowest validation Rand error) on slices 25-29 with and
without test-time augmentation. Everything goes into `output_dir`:

- `run.json`, `recipe.json`: the recipe of the run, a fingerprint of its
  data and its status. Starting again with another recipe or other data is
  refused (pass `restart=True` to start the folder over); a finished run
  is not trained again (the call only evaluates it);
- `training_log.csv`: the learning curve, one row per epoch: `epoch`,
  `steps` (optimizer steps so far), `wall_time` (seconds of training so
  far, summed over the invocations), `loss`, `val_pixel_error`,
  `val_rand_error`, `val_jaccard`;
- `learning_curve.png`: the same curve drawn;
- `model.keras`, `best.keras`, `best.json`: the last and the best model;
- `backup/`: the training state while the run is unfinished. Starting the
  same run again (also after a `time_limit` stop, a crash or a kill at any
  moment) resumes it exactly where its last complete epoch ended;
- `results.json`: the held-out scores of `best.keras`, plain and with
  `tta="dihedral"` (the paper averaged 7 rotated inputs; the 8 rotations
  and flips of the dihedral group are the closest built-in choice).

The command line runs the same function:
`keras-unet2015 reproduce isbi2012 --output-dir RUN --time-limit 120`.

Example:

```python
results = keras_unet2015.reproduce.reproduce_isbi2012(
    "run", data_dir="isbi2012", time_limit=120 * 60
)
results["tta_none"]["rand_error"], results["tta_dihedral"]["rand_error"]
```
"""

import json
import math
import time
from pathlib import Path

import numpy as np

#: Training and held-out slices of the ISBI 2012 training volume.
TRAIN_SLICES = tuple(range(25))
VALIDATION_SLICES = tuple(range(25, 30))

#: The recipe of `reproduce_isbi2012` (see docs/training.md for the runs
#: that chose it). Keys are the keyword arguments of the function.
ISBI2012_RECIPE = {
    "depth": 4,
    "filters": 16,
    "dropout": 0.5,
    "input_size": 572,
    "optimizer": "adam",
    "learning_rate": 0.0001,
    "momentum": 0.99,
    "schedule": "cosine",
    "warmup_steps": 0,
    "w0": 10.0,
    "sigma": 5.0,
    "class_weights": "balanced",
    "augmentation": "paper",
    "epochs": 60,
    "steps_per_epoch": 100,
    "validation_freq": 2,
    "seed": 0,
}

#: `"sgd"`: the paper's SGD with `momentum`; `"adam"`: Adam (not the
#: paper's; `momentum` is then unused).
OPTIMIZERS = ("sgd", "adam")
RECIPE_NAME = "recipe.json"
RESULTS_NAME = "results.json"
CURVE_NAME = "learning_curve.png"
TTA_MODES = ("none", "dihedral")

# Files of a run folder that `restart=True` removes besides those of
# `training.RUN_FILES` (nothing else).
_RUN_FILES = (
    RECIPE_NAME,
    RESULTS_NAME,
    CURVE_NAME,
    "backup_random_state.tmp.npz",
)


def _recipe(overrides):
    unknown = sorted(set(overrides) - set(ISBI2012_RECIPE))
    if unknown:
        raise ValueError(
            f"Unknown recipe keys {unknown}. Known: {sorted(ISBI2012_RECIPE)}."
        )
    recipe = dict(ISBI2012_RECIPE)
    recipe.update(overrides)
    if recipe["optimizer"] not in OPTIMIZERS:
        raise ValueError(
            f"`optimizer` must be one of {OPTIMIZERS}. Received: "
            f"{recipe['optimizer']!r}"
        )
    if recipe["class_weights"] not in ("balanced", "none"):
        raise ValueError(
            "`class_weights` must be 'balanced' or 'none'. Received: "
            f"{recipe['class_weights']!r}"
        )
    for key in ("depth", "filters", "input_size", "epochs", "steps_per_epoch"):
        value = recipe[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{key}` must be a positive integer. Received: {value!r}"
            )
    return recipe


def _check_run_folder(output_dir, recipe, data, backend, restart):
    """Refuses to mix two recipes in one folder; starts over on `restart`.

    Returns:
        The folder's status: `None` (new), `"running"` or `"finished"`.
    """
    from keras_unet2015 import run_folder
    from keras_unet2015 import training

    record = run_folder.RunRecord(output_dir)
    if restart:
        training.clear_run_folder(output_dir, extra=_RUN_FILES)
    legacy = output_dir / RECIPE_NAME
    if not restart and record.read() is None and legacy.is_file():
        # A run folder of version 0.1.0.dev0 before run.json: its recipe.
        saved = json.loads(legacy.read_text())
        finished = (
            not (output_dir / training.BACKUP_DIR_NAME).exists()
            and (output_dir / training.CHECKPOINT_NAME).is_file()
        )
        record.start(
            saved.get("recipe", {}), None, backend=saved.get("backend")
        )
        if finished:
            record.set_status("finished")
    status = record.check(recipe, data, what="run with another recipe")
    saved_backend = (record.read() or {}).get("backend", backend)
    if status == "running" and saved_backend != backend:
        # Weights and optimizer state load across backends, but the
        # random streams differ: the resumed run is no longer exact.
        print(
            f"Note: {output_dir} was started with the {saved_backend} "
            f"backend and resumes with {backend}; the remaining epochs draw "
            "other dropout masks."
        )
    if status == "diverged":
        raise ValueError(
            f"The run in {output_dir} diverged; resuming it would diverge "
            "again. Use restart=True (--restart) with another recipe, or "
            "another output folder."
        )
    if status != "finished":
        record.start(recipe, data, backend=backend)
    run_folder.write_json(legacy, {"recipe": recipe, "backend": backend})
    return status


def reproduce_isbi2012(
    output_dir,
    data_dir=None,
    time_limit=None,
    restart=False,
    evaluate=True,
    tile_size=None,
    verbose=1,
    **recipe,
):
    """Trains and evaluates the ISBI 2012 reproduction in `output_dir`.

    Args:
        output_dir: str or `Path`. Run folder (see the module docstring).
            Starting again on the same folder resumes the run.
        data_dir: `None`, str or `Path`. ISBI 2012 data in either layout
            `keras_unet2015.datasets.isbi2012.load_data` reads; `None` uses
            its default path. Defaults to `None`.
        time_limit: `None` or float. Seconds of training in this call:
            training stops at the end of the epoch during which the limit
            passed (whole epochs only), and the run stays resumable, so a
            run split into several calls ends exactly as one uninterrupted
            call would. Defaults to `None` (train all epochs).
        restart: bool. Delete the run in `output_dir` and start over.
            Defaults to `False`.
        evaluate: bool. Score `best.keras` on slices 25-29 after training
            (plain and with `tta="dihedral"`) and write `results.json` and
            `learning_curve.png`. Defaults to `True`.
        tile_size: `None` or int. Tile size of the evaluation predictor.
            Defaults to `None`.
        verbose: int. `0` silent, `1` progress bars, `2` a line per epoch.
            Defaults to `1`.
        **recipe: overrides of `ISBI2012_RECIPE` (for example
            `filters=32`, `learning_rate=0.003`).

    Returns:
        A dict: `finished` (all epochs ran), `steps`, `wall_time`, the
        recipe, and with `evaluate` the scores `tta_none` and
        `tta_dihedral` (dicts of `pixel_error`, `rand_error`, `jaccard`)
        of `best_epoch`.

    Example:

    A tiny network for a few steps (the recipe's defaults train the
    16-filter network of the `unet2015_isbi2012_16f` preset):

    ```python
    result = keras_unet2015.reproduce.reproduce_isbi2012(
        "run", data_dir="../shared/data/isbi2012", verbose=0,
        depth=2, filters=2, input_size=124, epochs=1, steps_per_epoch=2,
    )
    result["tta_none"]["rand_error"]  # slices 25-29, best.keras
    ```
    """
    import keras

    from keras_unet2015 import training
    from keras_unet2015.datasets import TrainingSampleStream
    from keras_unet2015.datasets import isbi2012
    from keras_unet2015.models.unet2015 import UNet2015

    recipe = _recipe(recipe)
    if time_limit is not None and not time_limit > 0:
        raise ValueError(
            f"`time_limit` must be positive seconds. Received: {time_limit!r}"
        )
    from keras_unet2015 import run_folder

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (x, y), _ = isbi2012.load_data(data_dir)
    train_x = [x[i] for i in TRAIN_SLICES]
    data = run_folder.fingerprint(x, y)
    status = _check_run_folder(
        output_dir, recipe, data, keras.backend.backend(), restart
    )
    targets, weights = training.prepare_targets(
        [y[i] for i in TRAIN_SLICES],
        w0=recipe["w0"],
        sigma=recipe["sigma"],
        class_weights=(
            None if recipe["class_weights"] == "none" else "balanced"
        ),
    )
    keras.utils.set_random_seed(recipe["seed"])
    model = UNet2015(
        depth=recipe["depth"],
        filters=recipe["filters"],
        dropout_rate=recipe["dropout"],
    )
    stream = TrainingSampleStream(
        train_x,
        targets,
        weights,
        input_size=recipe["input_size"],
        output_size=model.output_size(recipe["input_size"]),
        steps_per_epoch=recipe["steps_per_epoch"],
        augmentation=training.default_augmentation(recipe["augmentation"]),
        seed=recipe["seed"],
        data_format=model.data_format,
    )
    total_steps = recipe["epochs"] * recipe["steps_per_epoch"]
    training.compile_model(
        model,
        optimizer=recipe["optimizer"],
        learning_rate=recipe["learning_rate"],
        momentum=recipe["momentum"],
        schedule=recipe["schedule"],
        total_steps=total_steps,
        warmup_steps=recipe["warmup_steps"],
    )
    if status != "finished":
        training.fit(
            model,
            stream,
            epochs=recipe["epochs"],
            output_dir=output_dir,
            validation_images=[x[i] for i in VALIDATION_SLICES],
            validation_labels=[y[i] for i in VALIDATION_SLICES],
            validation_freq=recipe["validation_freq"],
            validation_tile_size=tile_size,
            time_limit=time_limit,
            time_limit_at="epoch",
            verbose=verbose,
        )
    curve = read_learning_curve(output_dir / training.CSV_LOG_NAME)
    result = {
        "finished": run_folder.RunRecord(output_dir).status == "finished",
        "steps": int(curve["steps"][-1]) if len(curve["steps"]) else 0,
        "wall_time": float(curve["wall_time"][-1]) if curve["steps"] else 0.0,
        "backend": keras.backend.backend(),
        "recipe": recipe,
    }
    if evaluate:
        best = output_dir / training.BEST_CHECKPOINT_NAME
        best_record = json.loads(best.with_suffix(".json").read_text())
        result["best_epoch"] = int(best_record["epoch"])
        result["best_steps"] = _steps_of_epoch(curve, result["best_epoch"])
        best_model = keras.saving.load_model(best, compile=False)
        held_out = [x[i] for i in VALIDATION_SLICES]
        labels = np.stack([y[i] for i in VALIDATION_SLICES])
        for tta in TTA_MODES:
            start = time.perf_counter()
            result[f"tta_{tta}"] = evaluate_held_out(
                best_model, held_out, labels, tta=tta, tile_size=tile_size
            )
            result[f"tta_{tta}"]["seconds"] = time.perf_counter() - start
        run_folder.write_json(output_dir / RESULTS_NAME, result)
        run_folder.atomic_write(
            output_dir / CURVE_NAME,
            lambda path: plot_learning_curve(
                curve,
                path,
                title=f"ISBI 2012, U-Net {recipe['filters']} filters",
            ),
        )
    return result


def evaluate_held_out(model, images, labels, tta="none", tile_size=None):
    """ISBI 2012 measures of `model` on whole images (overlap-tile).

    Args:
        model: a trained `UNet2015` (foreground class 1).
        images: list of 2D images (any numeric dtype, scaled with
            `keras_unet2015.datasets.to_float_image`).
        labels: binary labels, 1 = cell (stack or list of the same sizes).
        tta: `"none"`, `"flips"` or `"dihedral"`. Defaults to `"none"`.
        tile_size: `None` or int. Defaults to `None`.

    Returns:
        `keras_unet2015.metrics.evaluate`'s dict: `pixel_error`,
        `rand_error`, `jaccard`, with counts pooled over the images.

    Example:

    ```python
    >>> model = keras_unet2015.UNet2015.from_preset("unet2015_isbi2012_16f")
    >>> (x, y), _ = keras_unet2015.datasets.isbi2012.load_data(
    ...     "../shared/data/isbi2012"
    ... )
    >>> scores = keras_unet2015.reproduce.evaluate_held_out(
    ...     model, x[29:], y[29:]
    ... )
    >>> sorted(scores)
    ['jaccard', 'pixel_error', 'rand_error']
    ```
    """
    from keras_unet2015 import metrics
    from keras_unet2015.datasets import to_float_image
    from keras_unet2015.inference.overlap_tile_predictor import (
        OverlapTilePredictor,
    )

    predictor = OverlapTilePredictor(
        model,
        tile_size=tile_size,
        tta=None if tta == "none" else tta,
        verbose=0,
    )
    probabilities = np.stack(
        [predictor.predict(to_float_image(image))[..., 1] for image in images]
    )
    scores = metrics.evaluate(probabilities, np.asarray(labels))
    return {key: float(value) for key, value in scores.items()}


def read_learning_curve(csv_path):
    """The columns of a `training_log.csv` as lists of floats.

    Args:
        csv_path: str or `Path` of a CSV log written by
            `keras_unet2015.training.fit`.

    Returns:
        A dict column name -> list of floats (`nan` for empty cells).

    Example:

    ```python
    >>> from pathlib import Path
    >>> _ = Path("log.csv").write_text("epoch,steps,loss\\n0,100,0.9\\n")
    >>> keras_unet2015.reproduce.read_learning_curve("log.csv")["steps"]
    [100.0]
    ```
    """
    import csv

    columns = {}
    with open(csv_path, newline="") as file:
        for row in csv.DictReader(file):
            for key, value in row.items():
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    number = math.nan
                columns.setdefault(key, []).append(number)
    for key in ("steps", "wall_time", "loss"):
        columns.setdefault(key, [])
    return columns


def _steps_of_epoch(curve, epoch):
    for e, steps in zip(curve.get("epoch", []), curve["steps"]):
        if int(e) == epoch:
            return int(steps)
    return None


def plot_learning_curve(curve, path, title="Learning curve"):
    """Draws training loss and validation errors against steps as a PNG.

    Args:
        curve: dict of columns (see `read_learning_curve`): `steps`,
            `loss` and optionally `val_pixel_error` and `val_rand_error`.
        path: str or `Path` of the PNG to write.
        title: str. Defaults to `"Learning curve"`.

    Example:

    ```python
    curve = {
        "steps": [100, 200],
        "loss": [1.0, 0.8],
        "val_rand_error": [0.5, 0.3],
    }
    keras_unet2015.reproduce.plot_learning_curve(curve, "curve.png")
    ```
    """
    from PIL import Image
    from PIL import ImageDraw

    width, height, left, right, top, bottom = 900, 420, 70, 20, 40, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    steps = np.asarray(curve["steps"], np.float64)
    series = [
        ("training loss (left axis)", curve["loss"], (40, 40, 40), "left"),
        (
            "validation pixel error (right axis)",
            curve.get("val_pixel_error", []),
            (30, 100, 200),
            "right",
        ),
        (
            "validation Rand error (right axis)",
            curve.get("val_rand_error", []),
            (200, 50, 40),
            "right",
        ),
    ]
    x_max = float(steps.max()) if steps.size else 1.0
    loss = np.asarray(curve["loss"], np.float64)
    finite = loss[np.isfinite(loss)]
    loss_max = float(finite.max()) * 1.05 if finite.size else 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def point(step, value, scale):
        return (
            left + plot_w * step / max(x_max, 1.0),
            top + plot_h * (1.0 - value / scale),
        )

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text((left, 12), title, fill="black")
    for fraction in np.linspace(0, 1, 6):
        y = top + plot_h * (1 - fraction)
        draw.text((8, y - 6), f"{loss_max * fraction:.2f}", fill=(40, 40, 40))
        draw.text(
            (width - right - 34, y - 6), f"{fraction:.1f}", fill=(200, 50, 40)
        )
        x = left + plot_w * fraction
        draw.text(
            (x - 12, height - bottom + 6),
            f"{x_max * fraction:.0f}",
            fill="black",
        )
    draw.text((width // 2 - 20, height - 22), "steps", fill="black")
    for index, (label, values, color, axis) in enumerate(series):
        values = np.asarray(values, np.float64)
        keep = np.isfinite(values) & np.isfinite(steps[: len(values)])
        scale = loss_max if axis == "left" else 1.0
        points = [
            point(s, v, scale)
            for s, v in zip(steps[: len(values)][keep], values[keep])
        ]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        draw.text((left + 10, top + 8 + 14 * index), label, fill=color)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
