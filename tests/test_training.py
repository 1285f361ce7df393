import csv
import json
import math

import keras
import numpy as np
import pytest

from keras_unet2015 import datasets
from keras_unet2015 import metrics
from keras_unet2015 import run_folder
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
    record = json.loads((tmp_path / "b" / training.RECORD_NAME).read_text())
    assert record["status"] == "finished"
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
    assert run_folder.RunRecord(tmp_path).status == "running"
    model, stream = _setup(cells, dropout=0.0)
    history = training.fit(
        model, stream, epochs=2, output_dir=tmp_path, verbose=0
    )
    assert len(history.history["loss"]) == 1
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert steps == 1 + stream.steps_per_epoch
    assert not (tmp_path / training.BACKUP_DIR_NAME).exists()
    assert run_folder.RunRecord(tmp_path).status == "finished"
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


# --------------------------------------------------------------------------
# Run folders: divergence, finished runs, restart, atomic files
# --------------------------------------------------------------------------
class _BlowUpLearningRate(keras.callbacks.Callback):
    """Sets a huge learning rate from epoch 1 on: the run diverges."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.optimizer.learning_rate.assign(1e30)


def test_divergence_stops_with_a_clear_error_and_keeps_the_good_epoch(
    cells, tmp_path
):
    images, labels, _, _, _ = cells
    model, stream = _setup(cells, dropout=0.0)
    stream.steps_per_epoch = 3
    with pytest.raises(training.TrainingDivergedError) as info:
        training.fit(
            model,
            stream,
            epochs=4,
            output_dir=tmp_path,
            validation_images=images[3:],
            validation_labels=labels[3:],
            callbacks=[_BlowUpLearningRate()],
            verbose=0,
        )
    message = str(info.value)
    assert "in epoch 2" in message
    assert "learning rate" in message and "[0, 1]" in message
    # Nothing of the diverged epoch was saved: the model, the log and the
    # training state are those of epoch 1 (index 0), all finite.
    saved = keras.saving.load_model(tmp_path / training.CHECKPOINT_NAME)
    assert all(
        np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in saved.weights
    )
    with open(tmp_path / training.CSV_LOG_NAME) as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["0"]
    assert int(rows[0]["steps"]) == 3
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == 0
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "epoch-000000"
    ]
    record = run_folder.RunRecord(tmp_path).read()
    assert record["status"] == "diverged"
    assert record["divergence"]["epoch"] == 1


def test_divergence_without_a_run_folder_raises_too(cells):
    model, stream = _setup(cells, dropout=0.0)
    model.optimizer.learning_rate.assign(1e30)
    stream.steps_per_epoch = 3
    with pytest.raises(training.TrainingDivergedError, match="in epoch 1"):
        training.fit(model, stream, epochs=2, verbose=0)


def test_finished_run_is_not_trained_again_and_restart_is_fresh(
    cells, tmp_path
):
    model, stream = _setup(cells)
    training.fit(model, stream, epochs=2, output_dir=tmp_path, verbose=0)
    before = (tmp_path / training.CHECKPOINT_NAME).read_bytes()
    model, stream = _setup(cells)
    with pytest.raises(ValueError, match="finished run.*restart"):
        training.fit(model, stream, epochs=2, output_dir=tmp_path, verbose=0)
    assert (tmp_path / training.CHECKPOINT_NAME).read_bytes() == before
    # A file of the user's in the folder is not touched by a restart.
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / training.CSV_LOG_NAME).write_text("epoch,loss\n7,1.0\n")
    model, stream = _setup(cells, seed=5)
    training.fit(
        model, stream, epochs=1, output_dir=tmp_path, restart=True, verbose=0
    )
    with open(tmp_path / training.CSV_LOG_NAME) as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["0"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert run_folder.RunRecord(tmp_path).status == "finished"


def _reference_and_interrupted_run(cells, tmp_path):
    """Weights of a 3-epoch run, and a run folder interrupted before epoch 3."""
    model, stream = _setup(cells)
    training.fit(model, stream, epochs=3, output_dir=tmp_path / "a", verbose=0)
    expected = [keras.ops.convert_to_numpy(w) for w in model.weights]

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("simulated interruption")

    run = tmp_path / "b"
    model, stream = _setup(cells)
    with pytest.raises(RuntimeError):
        training.fit(
            model, stream, epochs=3, output_dir=run, callbacks=[Interrupt()],
            verbose=0,
        )  # fmt: skip
    return expected, run


def test_resume_uses_the_newest_complete_state_only(cells, tmp_path):
    """A half-written state folder or model file is never read."""
    expected, run = _reference_and_interrupted_run(cells, tmp_path)
    # What a kill in the middle of writing epoch 2 leaves behind: a partial
    # state folder (no state.json) and a truncated temporary model.
    partial = run / "backup" / ".epoch-000002.partial-1"
    partial.mkdir()
    (partial / "state.weights.h5").write_bytes(b"\x89HDF")
    (run / ".model.partial-1.keras").write_bytes(b"PK\x03")
    model, stream = _setup(cells, seed=42)
    training.fit(model, stream, epochs=3, output_dir=run, verbose=0)
    for a, b in zip(expected, model.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    assert not partial.exists()
    assert not (run / ".model.partial-1.keras").exists()


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "log.csv"
    run_folder.write_text(path, "old")

    def fails(temporary):
        with open(temporary, "w") as file:
            file.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_folder.atomic_write(path, fails)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]
    # Keras's suffix checks see the real suffixes in the temporary name.
    seen = []
    run_folder.atomic_write(
        tmp_path / "x.weights.h5", lambda p: seen.append(p.name) or p.touch()
    )
    assert seen[0].endswith(".weights.h5") and seen[0].startswith(".x.")


# === prepare_targets: labels are checked where they enter ===


def _isbi_like_labels():
    """0/255 labels: four cells separated by a one-pixel membrane."""
    labels = np.full((9, 9), 255, np.uint8)
    labels[4, :] = 0
    labels[:, 4] = 0
    return labels


@pytest.mark.parametrize(
    "value, match",
    [
        # Today -1 wraps to 255 as uint8 ("a maximum of 255").
        (-1, r"Label map 1 must hold integer class labels in \[0, 3\); "
             r"found -1 \(1 pixel, the first at \(2, 3\)\)"),
        (3, r"in \[0, 3\); found 3 \(1 pixel"),
        # Today 0.7 truncates to class 0.
        (0.7, r"Label map 1 holds non-integer values \(0\.7; 1 pixel"),
    ],
)  # fmt: skip
def test_prepare_targets_rejects_labels_that_are_no_class(value, match):
    labels = [np.zeros((6, 6)), np.zeros((6, 6))]
    labels[1][2, 3] = value
    for class_weights in ("balanced", None):
        with pytest.raises(ValueError, match=match):
            training.prepare_targets(
                labels,
                label_mode="classes",
                num_classes=3,
                class_weights=class_weights,
            )


def test_prepare_targets_points_0_255_masks_to_binary():
    labels = _isbi_like_labels()
    with pytest.raises(ValueError) as error:
        training.prepare_targets([labels], "classes", num_classes=2)
    assert "found 255 (64 pixels" in str(error.value)
    assert "label_mode='binary'" in str(error.value)
    # Today: one instance (id 255) per map, no border term, silently.
    with pytest.raises(ValueError) as error:
        training.prepare_targets([labels, labels], "instances")
    message = str(error.value)
    assert "found 255 in 4 separate regions" in message
    assert "`--label-mode binary`" in message
    # The fix: binary mode gives the four cells and their border term.
    targets, weights = training.prepare_targets([labels], "binary")
    np.testing.assert_array_equal(targets[0], labels // 255)
    np.testing.assert_array_equal(
        weights[0],
        weight_maps.unet_weight_map(weight_maps.label_instances(labels)),
    )
    assert weights[0][4, 0] > 5  # the membrane between two cells


def test_prepare_targets_on_real_isbi_labels_as_instances(shared_data):
    from PIL import Image

    path = shared_data / "isbi2012" / "train" / "labels" / "00.png"
    labels = np.asarray(Image.open(path))
    with pytest.raises(ValueError, match="label_mode='binary'"):
        training.prepare_targets([labels], label_mode="instances")


def test_prepare_targets_binary_rejects_instance_ids_and_bad_values():
    ids = np.zeros((8, 8), np.int32)
    ids[1:4, 1:4], ids[1:4, 4:7], ids[5:7, 1:4] = 1, 2, 3  # 1, 2 touch
    # Today: merged into one cell (`label > 0`), touching cells lost.
    with pytest.raises(ValueError, match=r"Label map 0 holds the values "
                       r"0, 1, 2, 3, but binary labels hold 0"):  # fmt: skip
        training.prepare_targets([ids], "binary")
    with pytest.raises(ValueError, match="label_mode='instances'"):
        training.prepare_targets([ids], "binary")
    with pytest.raises(ValueError, match="without 0, map them"):
        training.prepare_targets([ids[1:4, 1:7]], "binary")  # values 1, 2
    negative = np.zeros((4, 4), np.int32)
    negative[0, 1] = -1
    for mode in ("binary", "instances"):
        with pytest.raises(ValueError, match=r"negative values \(-1; 1 p"):
            training.prepare_targets([negative], mode)
    with pytest.raises(ValueError, match="non-integer values"):
        training.prepare_targets([np.full((4, 4), 0.7)], "binary")
    with pytest.raises(ValueError, match=r"shape \(4, 4, 1\): expected \("):
        training.prepare_targets([np.zeros((4, 4, 1), np.uint8)], "binary")
    with pytest.raises(ValueError, match="Label map 0 is empty"):
        training.prepare_targets([np.zeros((0, 4), np.uint8)], "binary")
    # Valid labels are unchanged: whole-number floats and booleans too.
    mask = np.zeros((6, 6))
    mask[1:3, 1:3] = 1.0
    targets, weights = training.prepare_targets([mask, mask > 0], "binary")
    for target, weight in zip(targets, weights):
        np.testing.assert_array_equal(target, mask.astype(np.uint8))
        np.testing.assert_array_equal(
            weight, weight_maps.unet_weight_map(mask > 0)
        )


def test_resuming_with_another_model_is_a_short_clear_error(cells, tmp_path):
    model, stream = _setup(cells)
    training.fit(
        model, stream, epochs=3, output_dir=tmp_path, time_limit=1e-9,
        time_limit_at="epoch", verbose=0,
    )  # fmt: skip
    images, _, _, targets, weights = cells
    wider = UNet2015(depth=1, filters=6)
    training.compile_model(wider)
    with pytest.raises(ValueError, match="another model.*restart") as info:
        training.fit(wider, stream, epochs=3, output_dir=tmp_path, verbose=0)
    assert len(str(info.value).splitlines()) == 1
    assert len(str(info.value)) < 800


def test_a_backup_of_the_previous_format_still_resumes(cells, tmp_path):
    """Folders backed up by 0.1.0.dev0 (Keras's BackupAndRestore layout)."""
    expected, run = _reference_and_interrupted_run(cells, tmp_path)
    # Rewrite the state as the previous version left it.
    state = run / "backup" / "epoch-000001"
    (state / "state.weights.h5").rename(run / "backup" / "latest.weights.h5")
    (state / "random_state.npz").rename(run / "backup_random_state.npz")
    (run / "backup" / "training_metadata.json").write_text(
        json.dumps({"epoch": 2, "batch": 0})
    )
    (state / "state.json").unlink()
    state.rmdir()
    model, stream = _setup(cells, seed=42)
    history = training.fit(model, stream, epochs=3, output_dir=run, verbose=0)
    assert len(history.history["loss"]) == 1
    for a, b in zip(expected, model.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    with open(run / training.CSV_LOG_NAME) as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["0", "1", "2"]
    assert not (run / "backup").exists()
    assert not (run / "backup_random_state.npz").exists()
