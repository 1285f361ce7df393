"""`reproduce_isbi2012` and `keras-unet2015 reproduce`: the learning curve,
the evaluation of the best checkpoint, resuming and the recipe guard, on the
real ISBI 2012 slices with a tiny network."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from keras_unet2015 import metrics
from keras_unet2015 import reproduce
from keras_unet2015 import training
from keras_unet2015.datasets import isbi2012
from keras_unet2015.inference.overlap_tile_predictor import OverlapTilePredictor

# Depth 2, 2 filters, 124 px tiles: seconds per epoch on a CPU.
TINY = dict(
    depth=2,
    filters=2,
    input_size=124,
    epochs=2,
    steps_per_epoch=2,
    dropout=0.0,
    augmentation="none",
    validation_freq=1,
    optimizer="sgd",
    learning_rate=0.001,
    schedule="constant",
)


@pytest.fixture
def isbi(shared_data):
    return shared_data / "isbi2012"


def _rows(run):
    return reproduce.read_learning_curve(run / training.CSV_LOG_NAME)


def test_writes_curve_and_scores_the_best_checkpoint(isbi, tmp_path):
    run = tmp_path / "run"
    result = reproduce.reproduce_isbi2012(run, data_dir=isbi, verbose=0, **TINY)
    assert result["finished"]
    assert not (run / training.BACKUP_DIR_NAME).exists()
    curve = _rows(run)
    # One row per epoch with the step count and the accumulated wall time.
    assert curve["steps"] == [2.0, 4.0]
    assert 0 < curve["wall_time"][0] < curve["wall_time"][1]
    assert all(np.isfinite(curve["val_rand_error"]))
    assert result["steps"] == 4
    with Image.open(run / reproduce.CURVE_NAME) as image:
        assert image.size == (900, 420)
    saved = json.loads((run / reproduce.RESULTS_NAME).read_text())
    assert saved["tta_none"]["rand_error"] == result["tta_none"]["rand_error"]
    # The scores are those of best.keras on slices 25-29, computed here
    # independently with the predictor and the metrics.
    best = keras.saving.load_model(run / "best.keras", compile=False)
    (x, y), _ = isbi2012.load_data(isbi)
    for tta in ("none", "dihedral"):
        predictor = OverlapTilePredictor(
            best, tta=None if tta == "none" else tta, verbose=0
        )
        probabilities = np.stack(
            [
                predictor.predict(x[i] / np.float32(255))[..., 1]
                for i in range(25, 30)
            ]
        )
        expected = metrics.evaluate(probabilities, y[25:30])
        for key in ("pixel_error", "rand_error", "jaccard"):
            assert result[f"tta_{tta}"][key] == pytest.approx(
                expected[key], abs=1e-9
            )
    best_epoch = json.loads((run / "best.json").read_text())["epoch"]
    assert result["best_epoch"] == best_epoch
    assert result["best_steps"] == 2 * (best_epoch + 1)


def test_time_limited_calls_end_exactly_as_one_uninterrupted_run(
    isbi, tmp_path
):
    recipe = dict(TINY, epochs=3, dropout=0.5, augmentation="paper")
    reproduce.reproduce_isbi2012(
        tmp_path / "whole",
        data_dir=isbi,
        evaluate=False,
        verbose=0,
        **recipe,
    )
    run = tmp_path / "split"
    first = reproduce.reproduce_isbi2012(
        run,
        data_dir=isbi,
        time_limit=1e-6,
        evaluate=False,
        verbose=0,
        **recipe,
    )
    # Stopped after its first whole epoch, scored, and resumable.
    assert not first["finished"]
    assert (run / training.BACKUP_DIR_NAME).is_dir()
    assert _rows(run)["steps"] == [2.0]
    assert np.isfinite(_rows(run)["val_rand_error"][0])
    keras.utils.set_random_seed(123)  # a new process: other global state
    second = reproduce.reproduce_isbi2012(
        run, data_dir=isbi, evaluate=False, verbose=0, **recipe
    )
    assert second["finished"]
    assert not (run / training.BACKUP_DIR_NAME).exists()
    curve = _rows(run)
    assert curve["epoch"] == [0.0, 1.0, 2.0]
    assert curve["steps"] == [2.0, 4.0, 6.0]
    assert curve["wall_time"][1] > curve["wall_time"][0]
    # Same tiles, augmentation, dropout masks and optimizer state: the
    # split run ends with the weights and losses of the uninterrupted one.
    whole = keras.saving.load_model(tmp_path / "whole" / "model.keras")
    split = keras.saving.load_model(run / "model.keras")
    for a, b in zip(whole.get_weights(), split.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        _rows(tmp_path / "whole")["loss"], curve["loss"]
    )


def test_other_recipe_in_the_same_folder_is_refused(isbi, tmp_path):
    run = tmp_path / "run"
    reproduce.reproduce_isbi2012(
        run, data_dir=isbi, evaluate=False, verbose=0, **TINY
    )
    before = (run / training.CSV_LOG_NAME).read_text()
    with pytest.raises(ValueError, match=r"filters: 2 -> 3.*restart"):
        reproduce.reproduce_isbi2012(
            run, data_dir=isbi, verbose=0, **dict(TINY, filters=3)
        )
    # Nothing of the first run was touched.
    assert (run / training.CSV_LOG_NAME).read_text() == before
    reproduce.reproduce_isbi2012(
        run,
        data_dir=isbi,
        restart=True,
        evaluate=False,
        verbose=0,
        **dict(TINY, filters=3),
    )
    assert _rows(run)["steps"] == [2.0, 4.0]
    saved = json.loads((run / reproduce.RECIPE_NAME).read_text())
    assert saved["recipe"]["filters"] == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"class_weights": "inverse"}, "class_weights"),
        ({"filters": 0}, "filters"),
        ({"learning_rates": 0.1}, "Unknown recipe keys"),
    ],
)
def test_bad_recipe_values_are_rejected_before_training(
    isbi, tmp_path, override, message
):
    with pytest.raises(ValueError, match=message):
        reproduce.reproduce_isbi2012(
            tmp_path / "run", data_dir=isbi, verbose=0, **{**TINY, **override}
        )
    assert not (tmp_path / "run").exists()


def test_adam_recipe_uses_adam(isbi, tmp_path):
    run = tmp_path / "run"
    reproduce.reproduce_isbi2012(
        run,
        data_dir=isbi,
        evaluate=False,
        verbose=0,
        **dict(TINY, epochs=1, optimizer="adam", learning_rate=1e-4),
    )
    model = keras.saving.load_model(run / "model.keras", compile=True)
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)


def test_plot_learning_curve_draws_each_series(tmp_path):
    curve = {
        "steps": [100.0, 200.0, 300.0],
        "loss": [1.0, 0.8, 0.6],
        "val_pixel_error": [0.2, 0.15, 0.1],
        "val_rand_error": [0.9, 0.5, 0.3],
    }
    reproduce.plot_learning_curve(curve, tmp_path / "c.png")
    pixels = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))
    colours = {tuple(p) for p in pixels.reshape(-1, 3)}
    for colour in ((40, 40, 40), (30, 100, 200), (200, 50, 40)):
        assert colour in colours


def test_cli_reproduce_trains_evaluates_and_reports(isbi, tmp_path, capsys):
    from keras_unet2015 import cli

    run = tmp_path / "run"
    argv = [
        "reproduce", "isbi2012", "--data", str(isbi),
        "--output-dir", str(run), "--verbose", "2",
        "--depth", "2", "--filters", "2", "--input-size", "124",
        "--epochs", "1", "--steps-per-epoch", "2", "--dropout", "0",
        "--augmentation", "none", "--optimizer", "adam",
        "--learning-rate", "0.0001",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    saved = json.loads((run / reproduce.RESULTS_NAME).read_text())
    assert saved["recipe"]["optimizer"] == "adam"
    assert saved["recipe"]["filters"] == 2
    assert "Run finished: 2 steps" in out
    rand = saved["tta_dihedral"]["rand_error"]
    assert "tta=dihedral: pixel error" in out and f"{rand:.4f}" in out
    # Another recipe in the same folder: a clear error, exit code 2.
    assert cli.main([*argv[:-1], "0.001"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate: 0.0001 -> 0.001" in err and "--restart" in err
    assert cli.main([*argv, "--time-limit", "0"]) == 2
    assert "--time-limit must be positive" in capsys.readouterr().err
