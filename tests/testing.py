"""Test helpers in the spirit of Keras's `testing.TestCase.run_layer_test`."""

import importlib
import os

import keras
import numpy as np
import pytest


def backend():
    return keras.backend.backend()


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def assert_allclose(actual, desired, atol=1e-6, rtol=1e-6, msg=""):
    np.testing.assert_allclose(
        to_numpy(actual),
        to_numpy(desired),
        atol=atol,
        rtol=rtol,
        err_msg=msg,
    )


def require(module_name, reason):
    """Imports an optional dependency, or skips the test without it.

    On CI (`CI=true`, where requirements/dev.txt installs every optional
    dependency) a missing module fails the test instead: a broken install
    must not turn into a silently skipped suite.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        message = (
            f"{module_name} is not installed ({error}); {reason}. "
            "Install the development requirements: "
            "pip install -r requirements/dev.txt"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def skip_if_channels_first_unsupported(data_format):
    """TensorFlow's CPU kernels lack NCHW convolutions and pooling."""
    if data_format == "channels_first" and backend() == "tensorflow":
        pytest.skip("TensorFlow on CPU has no channels_first conv/pool")


def assert_config_round_trip(obj):
    """`from_config(get_config())` gives an object with the same config.

    Also goes through Keras's serialization registry, so that the class is
    found by its registered name (as `.keras` loading does).
    """
    config = obj.get_config()
    clone = obj.__class__.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(obj)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(obj)
    assert revived.get_config() == config
    return clone


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights=None,
    run_mixed_precision=True,
):
    """Config round trip, symbolic and eager calls, mixed precision."""
    layer = layer_cls(**init_kwargs)
    assert_config_round_trip(layer)

    # Symbolic call with unknown batch size.
    symbolic_in = keras.Input(batch_shape=(None,) + input_data.shape[1:])
    symbolic_out = layer(symbolic_in)
    assert tuple(symbolic_out.shape) == (None,) + expected_output_shape[1:]

    # Eager call.
    out = layer(input_data)
    assert tuple(out.shape) == tuple(expected_output_shape)
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights

    if run_mixed_precision:
        mp_layer = layer_cls(**init_kwargs, dtype="mixed_float16")
        out = mp_layer(input_data)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        for weight in mp_layer.weights:
            assert keras.backend.standardize_dtype(weight.dtype) == "float32"
    return layer


def write_cell_folders(root):
    """Six synthetic touching-cell images with 0/255 labels, as PNG files.

    Writes `root/images/NN.png` and `root/labels/NN.png` (NN = 00..05), the
    layout `keras-unet2015 train --images --labels` reads.
    """
    from PIL import Image

    from keras_unet2015.datasets import make_touching_cells

    images, labels, _ = make_touching_cells(6, 64, cell_radius=7, seed=2)
    for i, (image, label) in enumerate(zip(images, labels)):
        for folder, array in (
            ("images", (image * 255).round().astype(np.uint8)),
            ("labels", label * 255),
        ):
            (root / folder).mkdir(exist_ok=True)
            Image.fromarray(array).save(root / folder / f"{i:02d}.png")
    return root
