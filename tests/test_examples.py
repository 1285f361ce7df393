"""Runs every example of `examples/` in its quick mode, so none can rot.

Each example runs in a subprocess with the active `KERAS_BACKEND`, as a
user would start it, and the test checks what the example promises: it
exits cleanly, writes its outputs, and prints measures in their range.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import keras_unet2015
from tests.testing import backend

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_S = 600


def run_example(name, output_dir, **env_vars):
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND=backend(),
        KERAS_UNET2015_EXAMPLE_QUICK="1",
        KERAS_UNET2015_EXAMPLE_OUTPUT=str(output_dir),
        **{k: str(v) for k, v in env_vars.items()},
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"{name} failed with exit code {result.returncode}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    assert f"Backend: {backend()} | quick mode: True" in result.stdout
    return result.stdout


def printed_value(stdout, name):
    """The float of a `name: value` line; fails when it is missing."""
    match = re.search(
        rf"^{name}: ([-+0-9.eE]+|nan)$", stdout, flags=re.MULTILINE
    )
    assert match, f"no `{name}: <value>` line in the output:\n{stdout}"
    return float(match.group(1))


def assert_png(path, shape=None):
    assert path.is_file(), f"{path} was not written"
    image = keras_unet2015.datasets.read_image(path)
    if shape is not None:
        assert image.shape == shape
    return image


def test_isbi2012_example(tmp_path, shared_data):
    stdout = run_example(
        "isbi2012_segmentation.py",
        tmp_path,
        KERAS_UNET2015_ISBI_DIR=shared_data / "isbi2012",
    )
    for name in ("pixel_error", "rand_error", "jaccard"):
        assert 0.0 <= printed_value(stdout, name) <= 1.0
    assert "4 training slices, 1 validation slices" in stdout
    # Training wrote its checkpoint and log, and the best model by the
    # validation Rand error.
    run = tmp_path / "run"
    for file in ("model.keras", "best.keras", "training_log.csv"):
        assert (run / file).is_file(), f"{run / file} was not written"
    # The figure: image | gap | probability | gap | label, 512 px high.
    figure = assert_png(
        tmp_path / "prediction_vs_label.png", (512, 3 * 512 + 2 * 8)
    )
    label_panel = figure[:, 2 * 512 + 16 :]
    (_, y_train), _ = keras_unet2015.datasets.isbi2012.load_data(
        shared_data / "isbi2012"
    )
    # Slice 25 is the first of the held-out tail (slices 25-29); the quick
    # mode validates on it alone. Its label is drawn as is.
    np.testing.assert_array_equal(label_panel, y_train[25] * 255)


def test_custom_dataset_example_synthetic(tmp_path):
    stdout = run_example("custom_dataset.py", tmp_path)
    seg = printed_value(stdout, "seg_score")
    assert 0.0 <= seg <= 1.0
    assert 0.0 <= printed_value(stdout, "rand_error") <= 1.0
    # 5 images, the last one held out (validation fraction 0.2).
    assert "validation ['cells_04']" in stdout
    instances = tifffile.imread(tmp_path / "cells_04_instances.tif")
    assert instances.shape == (128, 128)
    # Touching cells were cut apart: the target has more regions than the
    # merged foreground would.
    match = re.search(
        r"(\d+) instance ids, (\d+) regions if merged; (\d+) pixels between "
        r"touching cells become background; (\d+) separate regions",
        stdout,
    )
    assert match, stdout
    ids, merged, cut, regions = (int(g) for g in match.groups())
    assert cut > 0
    assert merged < regions <= ids


def test_custom_dataset_example_nuclei(tmp_path, shared_data):
    # The DSB 2018 nuclei image cut into four quadrants: a folder of real
    # images with instance labels, as a user would bring.
    nuclei = shared_data / "stardist-dsb2018-nuclei2d"
    image = tifffile.imread(nuclei / "img2d.tif")
    mask = tifffile.imread(nuclei / "mask2d.tif")
    data = tmp_path / "data"
    for i, (rows, cols) in enumerate(
        (r, c)
        for r in (slice(0, 256), slice(256, 512))
        for c in (
            slice(0, 256),
            slice(256, 512),
        )
    ):
        keras_unet2015.datasets.write_image(
            data / "images" / f"nuclei_{i}.tif", image[rows, cols]
        )
        keras_unet2015.datasets.write_image(
            data / "labels" / f"nuclei_{i}.tif", mask[rows, cols]
        )
    output = tmp_path / "output"
    stdout = run_example(
        "custom_dataset.py", output, KERAS_UNET2015_CUSTOM_DATA=data
    )
    assert 0.0 <= printed_value(stdout, "seg_score") <= 1.0
    assert 0.0 <= printed_value(stdout, "rand_error") <= 1.0
    assert "validation ['nuclei_3']" in stdout
    instances = tifffile.imread(output / "nuclei_3_instances.tif")
    assert instances.shape == (256, 256)


def test_large_image_example(tmp_path, shared_data):
    stdout = run_example(
        "large_image_prediction.py",
        tmp_path,
        KERAS_UNET2015_ISBI_DIR=shared_data / "isbi2012",
    )
    # The mosaic of 2x2 test slices, as written and as read back.
    mosaic = tifffile.imread(tmp_path / "mosaic.tif")
    _, x_test = keras_unet2015.datasets.isbi2012.load_data(
        shared_data / "isbi2012"
    )
    np.testing.assert_array_equal(mosaic[:512, 512:], x_test[1])
    np.testing.assert_array_equal(mosaic[512:, :512], x_test[2])
    labels = tifffile.imread(tmp_path / "labels.tif")
    probabilities = tifffile.imread(tmp_path / "probabilities.tif")
    assert labels.shape == (1024, 1024)
    assert probabilities.shape == (1024, 1024, 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    # Labels are the argmax of the probabilities, tile by tile.
    confident = np.abs(probabilities[..., 1] - 0.5) > 1e-4
    np.testing.assert_array_equal(
        labels[confident], np.argmax(probabilities, -1)[confident]
    )
    assert printed_value(stdout, "cell fraction") == pytest.approx(
        labels.mean(), abs=1e-4
    )
    # Seamless: the window across a tile border matches one forward pass.
    assert "cross the tile border" in stdout
    assert printed_value(stdout, "max difference tiles vs one pass") < 1e-4
    assert_png(tmp_path / "tile_grid.png", (256, 256))
