"""Exported artifacts run in their own runtimes and match Keras.

Every artifact is loaded by its runtime (onnxruntime, `tf.saved_model`,
the LiteRT interpreter) and compared with the Keras model of the calling
backend: max abs difference <= 1e-4.
"""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_unet2015
from keras_unet2015 import export
from keras_unet2015 import sizes
from keras_unet2015.cli import main
from tests import testing

ATOL = 1e-4
SUFFIX = {"onnx": "unet.onnx", "tf_saved_model": "unet", "litert": "u.tflite"}
BACKEND = keras.backend.backend()

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*:DeprecationWarning:onnx.*"),
    pytest.mark.filterwarnings("ignore:.*:DeprecationWarning:tf2onnx.*"),
]


def _runtime(format):
    module = {
        "onnx": "onnxruntime",
        "tf_saved_model": "tensorflow",
        "litert": "ai_edge_litert",
    }[format]
    testing.require(module, f"it runs {format} artifacts")


def _run(path, format, x):
    """Runs the artifact with its runtime's own API (not the package's)."""
    x = np.asarray(x, np.float32)
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    if format == "tf_saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return loaded.serve(tf.constant(x)).numpy()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    out = interpreter.get_output_details()[0]["index"]
    return np.array(interpreter.get_tensor(out))


def _images(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("format", ["onnx", "tf_saved_model", "litert"])
def test_any_size_artifact_matches_keras(format, tmp_path):
    _runtime(format)
    model = keras_unet2015.UNet2015(depth=2, filters=4, dropout_rate=0.0)
    path = export.export_model(model, tmp_path / SUFFIX[format], format)
    assert path == tmp_path / SUFFIX[format] and path.exists()
    # Two valid sizes (44 + 4k), a non-square one, and batch 2.
    for height, width, batch in ((44, 60, 2), (76, 48, 1)):
        x = _images((batch, height, width, 1))
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        got = _run(path, format, x)
        assert got.shape == (batch, height - 40, width - 40, 2)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    # No temporary file is left beside the artifact.
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("format", sorted(export.NATIVE_FORMATS[BACKEND]))
def test_fixed_tile_is_written_by_this_backend(format, tmp_path, monkeypatch):
    _runtime(format)

    def no_subprocess(*args, **kwargs):
        raise AssertionError("a native format must not start a subprocess")

    monkeypatch.setattr(export.subprocess, "run", no_subprocess)
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    path = export.export_model(
        model, tmp_path / SUFFIX[format], format, tile_size=(44, 60)
    )
    x = _images((3, 44, 60, 1), seed=1)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = _run(path, format, x)
    assert got.shape == (3, 28, 44, 2)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    if format == "onnx":
        import onnx

        dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims[1:]] == [44, 60, 1]


def test_channels_first_artifact_keeps_the_layout(tmp_path):
    testing.skip_if_channels_first_unsupported("channels_first")
    _runtime("onnx")
    model = keras_unet2015.UNet2015(
        depth=1, filters=4, data_format="channels_first"
    )
    path = export.export_model(model, tmp_path / "cf.onnx", "onnx")
    x = _images((2, 1, 44, 60), seed=2)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = _run(path, "onnx", x)
    assert got.shape == (2, 2, 28, 44)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_mixed_precision_model_is_exported_in_float32(tmp_path):
    _runtime("onnx")
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    keras.config.set_dtype_policy("float32")
    reference = keras_unet2015.UNet2015(depth=1, filters=4)
    reference.set_weights(model.get_weights())
    path = export.export_model(
        model, tmp_path / "mp.onnx", "onnx", tile_size=44
    )
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path))
    assert session.get_inputs()[0].type == "tensor(float)"
    x = _images((1, 44, 44, 1), seed=3)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.dtype == np.float32
    expected = keras.ops.convert_to_numpy(reference(x, training=False))
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_serving_model_copies_the_weights_and_the_function():
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    served = export.serving_model(model, tile_size=44)
    assert served.input_shape == (None, 44, 44, 1)
    assert served.dtype_policy.name == "float32"
    for a, b in zip(model.get_weights(), served.get_weights()):
        np.testing.assert_array_equal(a, b)
    free = export.serving_model(model)
    assert free.input_shape == (None, None, None, 1)


# === Errors ===


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    model = keras_unet2015.UNet2015(depth=2, filters=4)
    with pytest.raises(ValueError, match=r"`format` must be one of"):
        export.export_model(model, tmp_path / "u.onnx", "torchscript")
    with pytest.raises(ValueError, match=r"`\.onnx` file.*u\.onnx"):
        export.export_model(model, tmp_path / "u.tflite", "onnx")
    with pytest.raises(ValueError, match=r"Invalid tile height 50.*48 or 52"):
        export.export_model(model, tmp_path / "u.onnx", tile_size=50)
    with pytest.raises(ValueError, match=r"must be a `keras_unet2015"):
        export.export_model(keras.Sequential(), tmp_path / "u.onnx")
    with pytest.raises(ValueError, match=r"`batch_size` must be None"):
        export.export_model(model, tmp_path / "u.onnx", batch_size=0)
    with pytest.raises(TypeError, match=r"Only format='bioimageio'"):
        export.export_model(model, tmp_path / "u.onnx", name="x")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_overwrite(tmp_path):
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    target = tmp_path / "u.onnx"
    target.write_bytes(b"user's file")
    with pytest.raises(FileExistsError, match=r"overwrite=True"):
        export.export_model(model, target, "onnx")
    assert target.read_bytes() == b"user's file"


def test_failed_export_leaves_the_old_file_and_no_partial(
    tmp_path, monkeypatch
):
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    target = tmp_path / "u.onnx"
    target.write_bytes(b"old")

    def broken(served, where, *args):
        # _write_native(served, path, format, batch_size) or
        # _write_on_tensorflow(served, [(path, format)], batch_size)
        path = where if isinstance(where, (str, Path)) else where[0][0]
        Path(path).write_bytes(b"half")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export, "_write_native", broken)
    monkeypatch.setattr(export, "_write_on_tensorflow", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export_model(model, target, "onnx", tile_size=44, overwrite=True)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["u.onnx"]


def test_missing_tensorflow_names_what_works(monkeypatch):
    real = importlib.util.find_spec

    def without_tf(name, *args):
        return None if name == "tensorflow" else real(name, *args)

    monkeypatch.setattr(export.importlib.util, "find_spec", without_tf)
    with pytest.raises(ValueError, match=r"pass a fixed `tile_size`.*torch"):
        export._engine_for("onnx", free_size=True, backend="jax")
    with pytest.raises(ValueError, match=r"backends that write 'litert'"):
        export._engine_for("litert", free_size=False, backend="torch")
    assert export._engine_for("onnx", False, backend="torch") == "native"


# === BioImage.IO ===


def _bioimageio_test(package, cwd):
    """`bioimageio test` in a clean process, as the model zoo runs it."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    return subprocess.run(
        [sys.executable, "-m", "bioimageio.core", "test", str(package)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def test_bioimageio_package_validates_and_reproduces(tmp_path):
    testing.require("bioimageio.spec", "it validates BioImage.IO packages")
    testing.require("bioimageio.core", "it runs BioImage.IO model tests")
    from bioimageio.spec import load_model_description

    model = keras_unet2015.UNet2015(depth=2, filters=4)
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (70, 90), dtype=np.uint8)
    package = export.export_model(
        model,
        tmp_path / "unet.zip",
        "bioimageio",
        test_image=image,
        name="Test U-Net",
        authors=[{"name": "A. Person", "affiliation": "Cell Lab"}],
    )

    # What a consumer reads: axes, sizes, processing, weights, citation.
    # (No IO checks here: they would look up the DOI online; the
    # `bioimageio test` below checks the files' hashes.)
    descr = load_model_description(package, perform_io_checks=False)
    assert type(descr).__name__ == "ModelDescr", descr
    (inputs,) = descr.inputs
    assert [a.id for a in inputs.axes] == ["batch", "y", "x", "channel"]
    smallest = sizes.smallest_valid_input(2)
    for axis in inputs.axes[1:3]:
        assert (axis.size.min, axis.size.step) == (smallest, 4)
    (outputs,) = descr.outputs
    for axis in outputs.axes[1:3]:
        assert axis.size.offset == -sizes.size_loss(2)
    assert [p.id for p in inputs.preprocessing][1:2] == ["scale_linear"]
    assert inputs.preprocessing[1].kwargs.gain == pytest.approx(1 / 255)
    assert outputs.postprocessing[0].id == "softmax"
    assert {"onnx", "tensorflow_saved_model_bundle"} <= set(
        descr.weights.available_formats
    )
    assert "10.1007/978-3-319-24574-4_28" in [str(c.doi) for c in descr.cite]
    assert str(descr.license) == "Apache-2.0"

    # The test tensors: a valid-size centre crop of the image and the
    # model's softmax on crop / 255, computed here independently.
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        assert {"rdf.yaml", "cover.png", "README.md"} <= names
        archive.extractall(tmp_path / "unzipped")
    test_input = np.load(tmp_path / "unzipped" / "test_input.npy")
    test_output = np.load(tmp_path / "unzipped" / "test_output.npy")
    # 70 -> 68 and 90 -> 88: the largest valid sizes, centred.
    np.testing.assert_array_equal(test_input[0, ..., 0], image[1:69, 1:89])
    logits = keras.ops.convert_to_numpy(
        model(test_input / np.float32(255), training=False)
    )
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(
        test_output, e / e.sum(-1, keepdims=True), atol=1e-5
    )

    # bioimageio.core runs both weight formats on the test input and on
    # inputs of other valid sizes (its parametrized-size test).
    result = _bioimageio_test(package, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_bioimageio_refuses_bad_names_and_images(tmp_path):
    testing.require("bioimageio.spec", "it validates BioImage.IO packages")
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    with pytest.raises(ValueError, match=r"`name` must be.*\[','\]"):
        export.export_model(
            model, tmp_path / "u.zip", "bioimageio", name="a, b"
        )
    with pytest.raises(ValueError, match=r"1 input channel.*\(40, 40, 3\)"):
        export.export_model(
            model,
            tmp_path / "u.zip",
            "bioimageio",
            test_image=np.zeros((40, 40, 3), np.uint8),
        )
    with pytest.raises(ValueError, match=r"`tile_size` must be None"):
        export.export_model(model, tmp_path / "u.zip", "bioimageio", 44)
    assert list(tmp_path.iterdir()) == []


# === Command line ===


def _export_command(tmp_path, *extra):
    return [
        "export",
        "--model",
        str(tmp_path / "m.keras"),
        "--format",
        "onnx",
        "--output",
        str(tmp_path / "m.onnx"),
        *extra,
    ]


def test_cli_export_writes_an_artifact_that_matches(tmp_path, capsys):
    _runtime("onnx")
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    model.save(tmp_path / "m.keras")
    assert main(_export_command(tmp_path, "--tile-size", "44")) == 0
    assert "Wrote onnx (44 x 44 tiles)" in capsys.readouterr().out
    x = _images((1, 44, 44, 1), seed=5)
    np.testing.assert_allclose(
        _run(tmp_path / "m.onnx", "onnx", x),
        keras.ops.convert_to_numpy(model(x, training=False)),
        atol=ATOL,
        rtol=0,
    )
    # A second run refuses to overwrite, with the way out.
    assert main(_export_command(tmp_path)) != 0
    assert "--overwrite" in capsys.readouterr().err


def test_cli_export_refuses_package_flags_for_other_formats(tmp_path, capsys):
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    model.save(tmp_path / "m.keras")
    assert main(_export_command(tmp_path, "--name", "x")) != 0
    assert "--name only apply to --format bioimageio" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_preset_package_text_carries_the_model_card_scores():
    from keras_unet2015.cli import _preset_package_text

    card = keras_unet2015.presets.preset_metadata("unet2015_isbi2012_16f")
    description, validation = _preset_package_text("unet2015_isbi2012_16f")
    assert description == card["description"]
    rand = card["scores"]["tta_none"]["rand_error"]
    assert f"Rand error {rand:.4f}" in validation
    assert json.dumps(card["data_terms"])[1:20] in validation


def test_docs_table_is_generated_from_the_tested_formats():
    import importlib.util as util

    script = Path(__file__).parents[1] / "docs/scripts/make_export_table.py"
    spec = util.spec_from_file_location("make_export_table", script)
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.PAGE.read_text()
    assert module.page_with_table(text) == text, (
        "docs/how-to/export.md's table is out of date: run "
        "python docs/scripts/make_export_table.py"
    )
    # The table says "Keras" exactly where this backend writes natively.
    row = {
        "jax": 1,
        "tensorflow": 2,
        "torch": 3,
    }[BACKEND]
    for line in module.table().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        format = cells[0].split("`")[1]
        free = "any size" in cells[0]
        native = export._engine_for(format, free) == "native"
        assert (cells[row] == "Keras") == native, line
