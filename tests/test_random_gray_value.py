import importlib.util

import keras
import numpy as np
import pytest

import keras_unet2015
from keras_unet2015.layers import RandomGrayValue
from tests.testing import assert_config_round_trip
from tests.testing import to_numpy

H, W = 48, 64


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Resets what these tests change, without `clear_session` (slow)."""
    yield
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")


def reference(images, gamma, contrast, brightness, value_range):
    """The documented mapping, per sample, in float64 NumPy."""
    low, high = value_range
    outputs = []
    for image, g, c, b in zip(
        images.astype("float64"), gamma, contrast, brightness
    ):
        x = np.clip((image - low) / (high - low), 0, 1) ** g
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = np.clip((x - mean) * c + mean + b, 0, 1)
        outputs.append(x * (high - low) + low)
    return np.stack(outputs)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (0.0, 255.0)])
def test_matches_numpy_reference(value_range):
    rng = np.random.default_rng(0)
    images = (rng.random((3, H, W, 2)) * value_range[1]).astype("float32")
    layer = RandomGrayValue(value_range=value_range, seed=1)
    transformation = layer.get_random_transformation(images)
    output = to_numpy(layer.transform(images, transformation))
    parameters = {k: to_numpy(v) for k, v in transformation.items()}
    expected = reference(
        images,
        parameters["gamma"],
        parameters["contrast"],
        parameters["brightness"],
        value_range,
    )
    np.testing.assert_allclose(output, expected, atol=1e-5 * value_range[1])
    # A random call draws new parameters: the image changes.
    assert (
        np.abs(to_numpy(layer(images)) - images).max() > 1e-3 * value_range[1]
    )


def test_parameters_lie_in_their_ranges():
    layer = RandomGrayValue(
        brightness_range=(-0.2, 0.1),
        contrast_range=(0.5, 1.5),
        gamma_range=(0.5, 2.0),
        seed=2,
    )
    parameters = {
        k: to_numpy(v)
        for k, v in layer.get_random_transformation(
            np.zeros((2000, 4, 4, 1))
        ).items()
    }
    for name, (low, high) in (
        ("brightness", (-0.2, 0.1)),
        ("contrast", (0.5, 1.5)),
        ("gamma", (0.5, 2.0)),
    ):
        values = parameters[name]
        assert values.shape == (2000,)
        assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6
        # The draws cover the range.
        assert values.min() < low + 0.05 * (high - low)
        assert values.max() > high - 0.05 * (high - low)
    # Gamma is log-uniform: as often above 1 as below for (0.5, 2).
    # (Standard errors: 0.009 and 0.011.)
    assert abs(np.mean(np.log(parameters["gamma"]))) < 0.04
    assert abs(np.mean(parameters["gamma"] > 1.0) - 0.5) < 0.05


def test_masks_and_weights_pass_through_unchanged():
    rng = np.random.default_rng(0)
    images = rng.random((2, H, W, 1)).astype("float32")
    masks = rng.integers(0, 3, (2, H, W, 1)).astype("int32")
    weights = rng.random((2, H, W)).astype("float32")
    layer = RandomGrayValue(seed=3)
    out_images, out_masks, out_weights = layer((images, masks, weights))
    np.testing.assert_array_equal(to_numpy(out_masks), masks)
    np.testing.assert_array_equal(to_numpy(out_weights), weights)
    assert to_numpy(out_masks).dtype == np.int32
    assert np.abs(to_numpy(out_images) - images).max() > 1e-3
    outputs = layer({"images": images, "segmentation_masks": masks})
    np.testing.assert_array_equal(
        to_numpy(outputs["segmentation_masks"]), masks
    )


def test_mapping_is_monotonic_per_image():
    # Gray values are remapped, not shuffled: the order of the pixels of one
    # image is kept (ties aside), so edges stay where they are.
    images = np.linspace(0, 1, H * W, dtype="float32").reshape(1, H, W, 1)
    output = to_numpy(RandomGrayValue(seed=4)(images)).ravel()
    assert np.all(np.diff(output) >= -1e-6)


def test_disabled_variations_leave_images_unchanged():
    images = np.random.default_rng(0).random((2, H, W, 1)).astype("float32")
    layer = RandomGrayValue(
        brightness_range=None, contrast_range=None, gamma_range=None
    )
    np.testing.assert_allclose(to_numpy(layer(images)), images, atol=1e-6)


def test_training_false_and_config():
    images = np.random.default_rng(0).random((2, H, W, 1)).astype("float32")
    layer = RandomGrayValue(
        brightness_range=(-0.05, 0.05),
        contrast_range=None,
        gamma_range=(0.9, 1.1),
        value_range=(0, 255),
        data_format="channels_first",
        seed=5,
    )
    np.testing.assert_array_equal(
        to_numpy(layer(images, training=False)), images
    )
    clone = assert_config_round_trip(layer)
    assert clone.contrast_range is None
    assert clone.value_range == (0.0, 255.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"brightness_range": 0.1},
        {"contrast_range": (1.2, 0.8)},
        {"gamma_range": (0.0, 1.0)},
        {"value_range": (1, 1)},
        {"value_range": None},
    ],
)
def test_invalid_arguments_raise(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        RandomGrayValue(**kwargs)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="tf.data needs TensorFlow",
)
def test_tf_data_pipeline():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.random((4, H, W, 1)).astype("float32")
    masks = rng.integers(0, 2, (4, H, W, 1)).astype("uint8")
    dataset = (
        tf.data.Dataset.from_tensor_slices((images, masks))
        .batch(2)
        .map(RandomGrayValue(seed=6))
    )
    outputs = list(dataset)
    out_images = np.concatenate([o[0].numpy() for o in outputs])
    out_masks = np.concatenate([o[1].numpy() for o in outputs])
    assert outputs[0][1].dtype == tf.uint8
    np.testing.assert_array_equal(out_masks, masks)
    assert np.abs(out_images - images).max() > 1e-3
    assert out_images.min() >= 0.0 and out_images.max() <= 1.0


def test_exported():
    assert keras_unet2015.layers.RandomGrayValue is RandomGrayValue
