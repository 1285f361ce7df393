import csv
import json
import math

import keras
import numpy as np
import pytest

from keras_unet2015 import datasets
from keras_unet2015 import metrics
from keras_unet2015 import training
from keras_unet2015 import weight_maps
from keras_unet2015.callbacks import SegmentationMetrics
from keras_unet2015.inference.overlap_tile_predictor import OverlapTilePredictor
from keras_unet2015.losses.weighted_pixel_loss import WeightedPixelLoss
from keras_unet2015.models.unet2015 import UNet2015

# depth 1: 44 -> 28 px; tiny and fast on every backend.
INPUT, OUTPUT = 44, 28


@pytest.fixture(scope="module")
def cells():
    images, labels, instances = datasets.make_touching_cells(
        4, 48, cell_radius=6, seed=0
    )
    targets, weights = training.prepare_targets(
        list(instances[:3]), "instances"
    )
    return images, labels, instances, targets, weights


def _setup(cells, dropout=0.5, seed=1, learning_rate=0.01):
    images, _, _, targets, weights = cells
    keras.utils.set_random_seed(seed)
    model = UNet2015(depth=1, filters=4, dropout_rate=dropout)
    stream = datasets.TrainingSampleStream(
        images[:3],
        targets,
        weights,
        input_size=INPUT,
        output_size=OUTPUT,
        steps_per_epoch=2,
        seed=3,
    )
    training.compile_model(model, learning_rate=learning_rate)
    return model, stream


def test_paper_defaults():
    optimizer = training.make_optimizer()
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == pytest.approx(0.99)
    assert float(optimizer.learning_rate) == pytest.approx(
        training.DEFAULT_LEARNING_RATE
    )
    model = UNet2015(depth=1, filters=4)
    training.compile_model(model)
    assert isinstance(model.loss, WeightedPixelLoss)
    assert model.loss.from_logits is True
    softmax = UNet2015(depth=1, filters=4, activation="softmax")
    training.compile_model(softmax)
    assert softmax.loss.from_logits is False


def test_learning_rate_schedules():
    cosine = training.learning_rate_schedule(0.1, "cosine", total_steps=100)
    assert float(cosine(0)) == pytest.approx(0.1)
    assert float(cosine(50)) == pytest.approx(0.05)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-7)
    warm = training.learning_rate_schedule(
        0.1, "cosine", total_steps=100, warmup_steps=10
    )
    assert float(warm(5)) == pytest.approx(0.05)
    assert float(warm(10)) == pytest.approx(0.1)
    decay = training.learning_rate_schedule(0.1, "exponential", 100, 0, 0.1)
    assert float(decay(100)) == pytest.approx(0.01)
    assert float(decay(50)) == pytest.approx(0.1 * 0.1**0.5)
    with pytest.raises(ValueError, match="total_steps"):
        training.learning_rate_schedule(0.1, "cosine")
    with pytest.raises(ValueError, match="schedule"):
        training.learning_rate_schedule(0.1, "linear")


def test_prepare_targets_uses_the_paper_weight_maps(cells):
    _, labels, instances, _, _ = cells
    targets, weights = training.prepare_targets(list(labels[:2]), "binary")
    for label, target, weight in zip(labels, targets, weights):
        np.testing.assert_array_equal(target, label)
        expected = weight_maps.unet_weight_map(label.astype(bool))
        np.testing.assert_array_equal(weight, expected)
    targets, weights = training.prepare_targets([instances[2]], "instances")
    expected_target, expected_weight = weight_maps.target_and_weight_map(
        instances[2]
    )
    np.testing.assert_array_equal(targets[0], expected_target)
    np.testing.assert_array_equal(weights[0], expected_weight)
    # The border term puts more weight on the gaps between cells.
    gap = (instances[2] == 0) & (weights[0] > 0)
    assert weights[0][gap].max() > 5.0


def test_training_lowers_the_loss(cells):
    model, stream = _setup(cells, dropout=0.0, learning_rate=0.01)
    stream.steps_per_epoch = 4
    history = training.fit(model, stream, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_resume_after_interruption_gives_the_same_weights(cells, tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("simulated interruption")

    model, stream = _setup(cells)
    training.fit(model, stream, epochs=3, output_dir=tmp_path / "a", verbose=0)
    expected = [keras.ops.convert_to_numpy(w) for w in model.weights]

    model, stream = _setup(cells)
    with pytest.raises(RuntimeError, match="simulated"):
        training.fit(
            model,
            stream,
            epochs=3,
            output_dir=tmp_path / "b",
            callbacks=[Interrupt()],
            verbose=0,
        )
    assert (tmp_path / "b" / training.BACKUP_DIR_NAME).is_dir()
    # A new process: different initial weights and global seed.
    model, stream = _setup(cells, seed=99)
    history = training.fit(
        model, stream, epochs=3, output_dir=tmp_path / "b", verbose=0
    )
    assert len(history.history["loss"]) == 1  # only the missing epoch ran
    got = [keras.ops.convert_to_numpy(w) for w in model.weights]
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)
    # The backups are removed after a finished run; the log has all epochs.
    assert not (tmp_path / "b" / training.BACKUP_DIR_NAME).exists()
    assert not (tmp_path / "b" / training.RANDOM_STATE_NAME).exists()
    with open(tmp_path / "b" / training.CSV_LOG_NAME) as file:
        rows = list(csv.DictReader(file))
    with open(tmp_path / "a" / training.CSV_LOG_NAME) as file:
        reference = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    # The learning curve: optimizer steps after each epoch, and the
    # training time summed over both invocations (it only grows).
    assert [row["steps"] for row in rows] == ["2", "4", "6"]
    times = [float(row["wall_time"]) for row in rows]
    assert 0 < times[0] < times[1] < times[2]
    for row in rows + reference:
        del row["wall_time"]
    assert rows == reference


def test_checkpoints_and_validation_metrics(cells, tmp_path):
    images, labels, _, _, _ = cells
    model, stream = _setup(cells, dropout=0.0)
    history = training.fit(
        model,
        stream,
        epochs=3,
        output_dir=tmp_path,
        validation_images=images[3:],
        validation_labels=labels[3:],
        validation_freq=2,
        verbose=0,
    )
    logs = history.history
    # Evaluated at epoch 2 and after the last epoch (3), nan at epoch 1.
    assert math.isnan(logs["val_rand_error"][0])
    assert all(np.isfinite(logs["val_rand_error"][1:]))
    # The logged values are the package's metrics of the final model.
    predictor = OverlapTilePredictor(model, verbose=0)
    probabilities = predictor.predict(images[3])[..., 1]
    expected = metrics.evaluate(probabilities[None], labels[3:])
    assert logs["val_pixel_error"][-1] == pytest.approx(expected["pixel_error"])
    assert logs["val_rand_error"][-1] == pytest.approx(expected["rand_error"])
    assert logs["val_jaccard"][-1] == pytest.approx(expected["jaccard"])
    reloaded = keras.saving.load_model(tmp_path / training.CHECKPOINT_NAME)
    for a, b in zip(reloaded.weights, model.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )
    # best.keras is the model of the lowest logged Rand error (epochs
    # without evaluation log nan and are skipped).
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["value"] == pytest.approx(np.nanmin(logs["val_rand_error"]))
    assert best["epoch"] in (1, 2)
    best_model = keras.saving.load_model(
        tmp_path / training.BEST_CHECKPOINT_NAME
    )
    probabilities = OverlapTilePredictor(best_model, verbose=0).predict(
        images[3]
    )[..., 1]
    assert metrics.rand_error(probabilities, labels[3]) == pytest.approx(
        best["value"]
    )
    with open(tmp_path / training.CSV_LOG_NAME) as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 and "val_rand_error" in rows[0]


def test_time_limit_stops_after_the_current_batch(cells, tmp_path):
    images, labels, _, _, _ = cells
    model, stream = _setup(cells, dropout=0.0)
    history = training.fit(
        model,
        stream,
        epochs=5,
        output_dir=tmp_path,
        validation_images=images[3:],
        validation_labels=labels[3:],
        validation_freq=4,
        time_limit=1e-9,
        verbose=0,
    )
    # One batch, then the epoch ends as usual: logged and checkpointed, and
    # the stopped model is scored although epoch 1 is no validation epoch.
    assert len(history.history["loss"]) == 1
    assert np.isfinite(history.history["val_rand_error"][0])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1
    assert (tmp_path / training.CHECKPOINT_NAME).is_file()
    # The run stopped before its last epoch: the backup is kept, and the
    # same call resumes with epoch 2 instead of starting over.
    assert (tmp_path / training.BACKUP_DIR_NAME).is_dir()
    assert (tmp_path / training.RANDOM_STATE_NAME).is_file()
    model, stream = _setup(cells, dropout=0.0)
    history = training.fit(
        model, stream, epochs=2, output_dir=tmp_path, verbose=0
    )
    assert len(history.history["loss"]) == 1
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert steps == 1 + stream.steps_per_epoch
    assert not (tmp_path / training.BACKUP_DIR_NAME).exists()
    assert not (tmp_path / training.RANDOM_STATE_NAME).exists()
    with pytest.raises(ValueError, match="time_limit"):
        training.fit(model, stream, epochs=1, time_limit=0)


def test_segmentation_metrics_callback_validates():
    with pytest.raises(ValueError, match="2 images but 1"):
        SegmentationMetrics([np.zeros((8, 8))] * 2, [np.zeros((8, 8))])
    with pytest.raises(ValueError, match="shape"):
        SegmentationMetrics([np.zeros((8, 8))], [np.zeros((8, 9))])
    with pytest.raises(ValueError, match="frequency"):
        SegmentationMetrics([np.zeros((8, 8))], [np.zeros((8, 8))], 0)


def test_fit_needs_a_compiled_model(cells):
    model = UNet2015(depth=1, filters=4)
    with pytest.raises(ValueError, match="compile_model"):
        training.fit(model, None, epochs=1)
