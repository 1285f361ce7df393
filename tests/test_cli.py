import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tifffile
from PIL import Image

from keras_unet2015 import metrics
from keras_unet2015.cli import main
from tests.testing import write_cell_folders

BACKEND = keras.backend.backend()


def _run(capsys, *argv):
    code = main(["--backend", BACKEND, *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cell_folders(tmp_path):
    """Six synthetic images with 0/255 labels, as PNG files."""
    return write_cell_folders(tmp_path)


def test_demo_quick_writes_a_figure_and_metrics(capsys, tmp_path):
    code, out, _ = _run(capsys, "demo", "--quick", "--output-dir", tmp_path)
    assert code == 0
    assert f"backend {BACKEND}" in out
    figure = Image.open(tmp_path / "demo_prediction.png")
    # Five panels of the 96 px held-out image side by side, with titles.
    assert figure.size == (5 * (96 + 4), 96 + 18)
    summary = json.loads((tmp_path / "demo_metrics.json").read_text())
    assert summary["steps"] == 4
    for key in ("pixel_error", "rand_error", "jaccard", "seg"):
        assert 0.0 <= summary[key] <= 1.0
    assert (tmp_path / "model.keras").is_file()
    # Running the demo again in the same folder trains a new demo run.
    code, out, err = _run(capsys, "demo", "--quick", "--output-dir", tmp_path)
    assert code == 0, err
    assert json.loads((tmp_path / "run.json").read_text())["status"] == (
        "finished"
    )


def test_train_predict_evaluate_round_trip(capsys, cell_folders):
    run = cell_folders / "run"
    code, out, err = _run(
        capsys,
        "train",
        "--images", cell_folders / "images",
        "--labels", cell_folders / "labels",
        "--output-dir", run,
        "--validation-indices", "4-5",
        "--depth", "1",
        "--filters", "4",
        "--input-size", "44",
        "--epochs", "2",
        "--steps-per-epoch", "2",
        "--learning-rate", "0.01",
        "--verbose", "0",
    )  # fmt: skip
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["validation_samples"] == ["04", "05"]
    assert config["train_samples"] == ["00", "01", "02", "03"]
    log = (run / "training_log.csv").read_text().splitlines()
    assert len(log) == 3 and "val_rand_error" in log[0]

    predictions = cell_folders / "predictions"
    code, _, err = _run(
        capsys,
        "predict",
        cell_folders / "images" / "04.png",
        cell_folders / "images" / "05.png",
        "--model", run / "model.keras",
        "--output-dir", predictions,
        "--verbose", "0",
    )  # fmt: skip
    assert code == 0, err
    model = keras.saving.load_model(run / "model.keras", compile=False)
    for name in ("04", "05"):
        probabilities = tifffile.imread(
            predictions / f"{name}_probabilities.tif"
        )
        assert probabilities.shape == (64, 64)
        assert probabilities.dtype == np.float32
        assert 0.0 <= probabilities.min() <= probabilities.max() <= 1.0
        mask = np.asarray(Image.open(predictions / f"{name}_mask.png"))
        np.testing.assert_array_equal(mask, (probabilities > 0.5) * 255)
    # The probability map is the model's softmax on the mirrored image.
    image = np.asarray(Image.open(cell_folders / "images" / "04.png"))
    padded = np.pad(image / 255.0, 8, mode="reflect")[None, ..., None]
    logits = keras.ops.convert_to_numpy(model(padded.astype("float32")))
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(logits))[0]
    probabilities = tifffile.imread(predictions / "04_probabilities.tif")
    np.testing.assert_allclose(probabilities, expected[:64, :64, 1], atol=1e-5)

    label_dir = cell_folders / "held_out_labels"
    label_dir.mkdir()
    for name in ("04", "05"):
        (label_dir / f"{name}.png").write_bytes(
            (cell_folders / "labels" / f"{name}.png").read_bytes()
        )
    code, out, err = _run(
        capsys,
        "evaluate",
        "--predictions", predictions,
        "--labels", label_dir,
        "--json", cell_folders / "scores.json",
    )  # fmt: skip
    assert code == 0, err
    scores = json.loads((cell_folders / "scores.json").read_text())
    stack = np.stack(
        [
            tifffile.imread(predictions / f"{n}_probabilities.tif")
            for n in ("04", "05")
        ]
    )
    labels = np.stack(
        [np.asarray(Image.open(label_dir / f"{n}.png")) for n in ("04", "05")]
    )
    expected = metrics.evaluate(stack, labels)
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value)
    assert f"Rand error {expected['rand_error']:.4f}" in out

    # Predicting on the fly gives the same scores.
    code, _, err = _run(
        capsys,
        "evaluate",
        "--model", run / "model.keras",
        "--images", cell_folders / "images",
        "--labels", cell_folders / "labels",
        "--indices", "4-5",
        "--json", cell_folders / "again.json",
    )  # fmt: skip
    assert code == 0, err
    again = json.loads((cell_folders / "again.json").read_text())
    for key in expected:
        assert again[key] == pytest.approx(scores[key], abs=1e-6)


def test_evaluate_on_real_isbi_labels(capsys, shared_data, tmp_path):
    labels = shared_data / "isbi2012" / "train" / "labels"
    for i in (25, 26):
        label = np.asarray(Image.open(labels / f"{i:02d}.png"))
        tifffile.imwrite(
            tmp_path / f"{i:02d}_probabilities.tif",
            np.where(label == 255, 0.9, 0.05).astype(np.float32),
        )
    selected = tmp_path / "labels"
    selected.mkdir()
    for i in (25, 26):
        (selected / f"{i:02d}.png").write_bytes(
            (labels / f"{i:02d}.png").read_bytes()
        )
    code, out, err = _run(
        capsys, "evaluate", "--predictions", tmp_path, "--labels", selected
    )
    assert code == 0, err
    assert "2 images: pixel error 0.0000, Rand error 0.0000" in out


def test_clear_errors(capsys, cell_folders):
    images, labels = cell_folders / "images", cell_folders / "labels"
    train = ["train", "--output-dir", cell_folders / "run", "--depth", "1"]

    code, _, err = _run(capsys, *train, "--images", cell_folders / "nope",
                        "--labels", labels)  # fmt: skip
    assert code == 2 and "Folder not found" in err and "nope" in err

    (labels / "05.png").unlink()
    code, _, err = _run(capsys, *train, "--images", images, "--labels", labels)
    assert code == 2 and "Images without a label: 05" in err

    (labels / "05.png").write_bytes((labels / "04.png").read_bytes())
    (images / "03.png").write_text("not an image")
    code, _, err = _run(capsys, *train, "--images", images, "--labels", labels)
    assert code == 2 and "Could not read image file" in err and "03.png" in err

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(images / "03.png")
    Image.fromarray(np.arange(64 * 64).reshape(64, 64).astype(np.uint8)).save(
        labels / "02.png"
    )
    code, _, err = _run(capsys, *train, "--images", images, "--labels", labels)
    assert code == 2 and "Unexpected label values" in err and "02.png" in err

    (labels / "02.png").write_bytes((labels / "04.png").read_bytes())
    code, _, err = _run(capsys, *train, "--images", images, "--labels", labels,
                        "--input-size", "45")  # fmt: skip
    assert code == 2 and "Nearest valid sizes" in err

    code, _, err = _run(capsys, "predict", images, "--model",
                        cell_folders / "missing.keras", "--output-dir",
                        cell_folders / "out")  # fmt: skip
    assert code == 2 and "Model file not found" in err

    code, _, err = _run(capsys, "evaluate", "--labels", labels)
    assert code == 2 and "either --predictions" in err

    code, _, err = _run(capsys, "evaluate", "--labels", labels,
                        "--predictions", cell_folders)  # fmt: skip
    assert code == 2 and "no probability map" in err


def test_backend_option_selects_the_keras_backend(tmp_path):
    other = "jax" if BACKEND != "jax" else "torch"
    if importlib.util.find_spec(other) is None:
        pytest.skip(f"needs a second backend ({other}) installed")
    label = np.zeros((8, 8), np.uint8)
    label[2:6, 2:6] = 255
    (tmp_path / "labels").mkdir()
    Image.fromarray(label).save(tmp_path / "labels" / "a.png")
    tifffile.imwrite(
        tmp_path / "a_probabilities.tif", (label / 255.0).astype(np.float32)
    )
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    result = subprocess.run(
        [sys.executable, "-m", "keras_unet2015", "--backend", other,
         "evaluate", "--predictions", tmp_path, "--labels",
         tmp_path / "labels"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"backend {other}" in result.stdout
    assert "1 images: pixel error 0.0000" in result.stdout


def _train_tiny(capsys, folders, run, *extra):
    return _run(
        capsys,
        "train",
        "--images", folders / "images",
        "--labels", folders / "labels",
        "--output-dir", run,
        "--validation-indices", "4-5",
        "--depth", "1",
        "--filters", "4",
        "--input-size", "44",
        "--epochs", "1",
        "--steps-per-epoch", "2",
        "--verbose", "1",
        *extra,
    )  # fmt: skip


def test_train_run_folder_refuses_mixes_and_does_not_retrain(
    capsys, cell_folders
):
    run = cell_folders / "run"
    code, out, err = _train_tiny(capsys, cell_folders, run)
    assert code == 0, err
    model_bytes = (run / "model.keras").read_bytes()
    log = (run / "training_log.csv").read_text()

    # The same command on the finished run: nothing to do, nothing changed.
    code, out, err = _train_tiny(capsys, cell_folders, run)
    assert code == 0, err
    assert "finished: nothing to do" in out and "--restart" in out
    assert (run / "model.keras").read_bytes() == model_bytes

    # Other settings: refused, naming the difference and the way out.
    code, _, err = _train_tiny(capsys, cell_folders, run, "--filters", "6")
    assert code == 2
    assert "filters: 4 -> 6" in err and "--restart" in err
    # Other data (one label changed): refused too.
    label = cell_folders / "labels" / "01.png"
    original = label.read_bytes()
    array = np.asarray(Image.open(label)).copy()
    array[:4, :4] = 255 - array[:4, :4]
    Image.fromarray(array).save(label)
    code, _, err = _train_tiny(capsys, cell_folders, run)
    assert code == 2 and "other training data" in err
    label.write_bytes(original)
    assert (run / "model.keras").read_bytes() == model_bytes
    assert (run / "training_log.csv").read_text() == log

    # --restart is a fresh run: a new log, not appended to the old one.
    code, _, err = _train_tiny(
        capsys, cell_folders, run, "--filters", "6", "--restart"
    )
    assert code == 0, err
    rows = (run / "training_log.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("0,")
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["config"]["filters"] == 6


def test_train_divergence_exits_non_zero_with_a_clear_message(
    capsys, cell_folders
):
    run = cell_folders / "run"
    code, out, err = _train_tiny(
        capsys, cell_folders, run, "--learning-rate", "1e30", "--epochs", "2"
    )
    assert code == 1
    assert "Training diverged" in err and "--learning-rate" in err
    assert "Done" not in out
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"
    # The same command does not train into the diverged run again.
    code, _, err = _train_tiny(
        capsys, cell_folders, run, "--learning-rate", "1e30", "--epochs", "2"
    )
    assert code == 2 and "diverged" in err and "--restart" in err


def test_bad_weight_options_and_label_modes_name_the_fix(capsys, cell_folders):
    images, labels = cell_folders / "images", cell_folders / "labels"
    train = ["train", "--images", images, "--labels", labels, "--output-dir",
             cell_folders / "run", "--depth", "1", "--input-size", "44",
             "--epochs", "1", "--steps-per-epoch", "1"]  # fmt: skip
    # Today the layer's error says `sigma`, which reads as --sigma.
    for value in ("-5", "nan"):
        code, _, err = _run(capsys, *train, "--elastic-sigma", value)
        assert code == 2
        assert (
            f"--elastic-sigma (the std of the elastic displacements, px) "
            f"must be a non-negative number, got {float(value)}" in err
        )
    code, _, err = _run(capsys, *train, "--sigma", "0")
    assert code == 2 and "--sigma (the width of the border weight" in err
    code, _, err = _run(capsys, *train, "--w0", "-1")
    assert code == 2 and "--w0 (the height of the border weight" in err
    assert not (cell_folders / "run").exists()  # rejected before any work
    # 0/255 masks read as instances: today one object per image and no
    # border term, silently.
    code, _, err = _run(capsys, *train, "--label-mode", "instances")
    assert code == 2
    assert "label_mode='instances', but every label map holds" in err
    assert "`--label-mode binary`" in err


# --------------------------------------------------------------------------
# predict: nothing lost, nothing silent
# --------------------------------------------------------------------------
def _saved_tiny_model(path, non_finite=False):
    from keras_unet2015 import UNet2015

    keras.utils.set_random_seed(0)
    model = UNet2015(depth=1, filters=2)
    if non_finite:
        weights = model.get_weights()
        weights[0].flat[0] = np.nan
        weights[3].flat[1] = np.inf
        model.set_weights(weights)
    model.save(path)
    return path


def _outputs(*stems):
    return sorted(
        name
        for stem in stems
        for name in (f"{stem}_probabilities.tif", f"{stem}_mask.png")
    )


def _predict(capsys, model, output_dir, *inputs):
    return _run(
        capsys,
        "predict",
        *inputs,
        "--model", model,
        "--output-dir", output_dir,
        "--verbose", "2",
    )  # fmt: skip


def test_predict_refuses_inputs_with_the_same_name(capsys, cell_folders):
    model = _saved_tiny_model(cell_folders / "model.keras")
    images, more = cell_folders / "images", cell_folders / "more"
    more.mkdir()
    for name in ("00.png", "01.png"):
        (more / name).write_bytes((images / name).read_bytes())
    out = cell_folders / "out"
    # It reported "Wrote 16 files" and left 12: 00 and 01 overwritten.
    code, _, err = _predict(capsys, model, out, images, more)
    assert code == 2
    assert "4 input files share a name" in err
    for path in (images / "00.png", more / "00.png", more / "01.png"):
        assert str(path) in err
    assert not out.exists()

    # One file named twice (a folder and a file in it) is predicted once.
    code, stdout, err = _predict(capsys, model, out, images, images / "00.png")
    assert code == 0, err
    assert "Wrote 12 files" in stdout
    assert sorted(os.listdir(out)) == _outputs(*(f"{i:02d}" for i in range(6)))


def test_predict_never_reads_its_own_outputs(capsys, cell_folders):
    model = _saved_tiny_model(cell_folders / "model.keras")
    images = cell_folders / "images"
    before = sorted(os.listdir(images))
    for inputs in ((images,), (images / "00.png",)):
        code, _, err = _predict(capsys, model, images, *inputs)
        assert code == 2
        assert f"--output-dir {images} holds input images" in err
        assert sorted(os.listdir(images)) == before

    # A subfolder is fine: folders are listed without their subfolders,
    # so a second run reads the same 6 images, not the first run's output.
    predictions = images / "predictions"
    code, stdout, err = _predict(capsys, model, predictions, images)
    assert code == 0, err
    code, stdout, err = _predict(
        capsys, model, predictions, images, "--overwrite"
    )
    assert code == 0, err
    assert "Wrote 12 files" in stdout
    assert sorted(os.listdir(predictions)) == _outputs(
        *(f"{i:02d}" for i in range(6))
    )


def test_predict_never_overwrites_without_the_option(capsys, cell_folders):
    model = _saved_tiny_model(cell_folders / "model.keras")
    images, out = cell_folders / "images", cell_folders / "out"
    code, _, err = _predict(
        capsys, model, out, images / "00.png", images / "01.png"
    )
    assert code == 0, err
    first = (out / "01_probabilities.tif").read_bytes()

    # A second run (another model, say) silently replaced 01.
    code, _, err = _predict(
        capsys, model, out, images / "01.png", images / "02.png"
    )
    assert code == 2
    assert "2 output files exist already" in err
    assert "01_probabilities.tif, 01_mask.png" in err
    assert "--overwrite" in err
    assert sorted(os.listdir(out)) == _outputs("00", "01")
    assert (out / "01_probabilities.tif").read_bytes() == first

    # New names may join the folder; --overwrite replaces old ones.
    code, _, err = _predict(capsys, model, out, images / "02.png")
    assert code == 0, err
    code, stdout, err = _predict(
        capsys, model, out, images / "01.png", images / "02.png",
        "--overwrite",
    )  # fmt: skip
    assert code == 0, err
    assert "Wrote 4 files" in stdout
    assert sorted(os.listdir(out)) == _outputs("00", "01", "02")


def test_predict_and_evaluate_refuse_non_finite_weights(capsys, cell_folders):
    model = _saved_tiny_model(cell_folders / "nan.keras", non_finite=True)
    images, out = cell_folders / "images", cell_folders / "out"
    code, _, err = _predict(capsys, model, out, images)
    assert code == 2
    assert "non-finite weights (NaN or infinity) in 2 of" in err
    assert "best.keras" in err
    assert not out.exists()
    code, _, err = _run(
        capsys,
        "evaluate",
        "--model", model,
        "--images", images,
        "--labels", cell_folders / "labels",
    )  # fmt: skip
    assert code == 2
    assert "non-finite weights" in err


def test_truncated_model_file_is_not_reported_as_missing(capsys, cell_folders):
    model = _saved_tiny_model(cell_folders / "model.keras")
    data = model.read_bytes()
    truncated = cell_folders / "truncated.keras"
    truncated.write_bytes(data[: len(data) // 2])
    out = cell_folders / "out"
    code, _, err = _predict(capsys, truncated, out, cell_folders / "images")
    assert code == 2
    assert f"{truncated} is not a valid, complete .keras file" in err
    assert "truncated or corrupt" in err
    assert "File not found" not in err
    assert not out.exists()
