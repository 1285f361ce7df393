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
from keras_unet2015.datasets import make_touching_cells

BACKEND = keras.backend.backend()


def _run(capsys, *argv):
    code = main(["--backend", BACKEND, *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cell_folders(tmp_path):
    """Six synthetic images with 0/255 labels, as PNG files."""
    images, labels, _ = make_touching_cells(6, 64, cell_radius=7, seed=2)
    for i, (image, label) in enumerate(zip(images, labels)):
        for folder, array in (
            ("images", (image * 255).round().astype(np.uint8)),
            ("labels", label * 255),
        ):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(array).save(tmp_path / folder / f"{i:02d}.png")
    return tmp_path


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
