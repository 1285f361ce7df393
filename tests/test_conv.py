"""The package's Conv2D / MaxPooling2D equal Keras's on every backend.

On PyTorch they take a copy-free channels-last path with an inference-time
weight cache; these tests pin that the results, the gradients and the cache
invalidation are exactly those of the Keras layers.
"""

import keras
import numpy as np
import pytest

from keras_unet2015.layers.conv import Conv2D
from keras_unet2015.layers.conv import MaxPooling2D
from tests.testing import assert_allclose
from tests.testing import assert_config_round_trip
from tests.testing import to_numpy


def twin_convs(**kwargs):
    ours = Conv2D(**kwargs)
    theirs = keras.layers.Conv2D(**kwargs)
    ours.build((None, None, None, 3))
    theirs.build((None, None, None, 3))
    rng = np.random.default_rng(0)
    weights = [
        rng.normal(size=w.shape).astype("float32") for w in theirs.weights
    ]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv_equals_keras_conv(padding, activation):
    ours, theirs = twin_convs(
        filters=5, kernel_size=3, padding=padding, activation=activation
    )
    x = np.random.default_rng(1).normal(size=(2, 9, 11, 3)).astype("float32")
    assert_allclose(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    assert_config_round_trip(ours)


def test_conv_gradients_equal_keras_conv():
    ours, theirs = twin_convs(filters=4, kernel_size=3, activation="relu")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(2, 6, 6, 4)).astype("float32")

    def step(layer):
        inputs = keras.Input((8, 8, 3))
        model = keras.Model(inputs, layer(inputs))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.train_on_batch(x, y)
        return [to_numpy(w) for w in layer.weights]

    for a, b in zip(step(ours), step(theirs)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_inference_sees_weight_updates():
    """A cached inference kernel must follow `assign` and training steps."""
    ours, theirs = twin_convs(filters=4, kernel_size=3)
    x = np.random.default_rng(3).normal(size=(1, 7, 7, 3)).astype("float32")
    inputs = keras.Input((7, 7, 3))
    model = keras.Model(inputs, ours(inputs))
    first = to_numpy(model.predict_on_batch(x))
    assert_allclose(first, theirs(x), atol=1e-5, rtol=1e-5)
    new_kernel = to_numpy(ours.kernel) * -2.0
    ours.kernel.assign(new_kernel)
    theirs.kernel.assign(new_kernel)
    second = to_numpy(model.predict_on_batch(x))
    assert_allclose(second, theirs(x), atol=1e-5, rtol=1e-5)
    assert not np.allclose(first, second)


def test_conv_mixed_precision():
    ours, theirs = twin_convs(filters=4, kernel_size=3)
    mixed = Conv2D(filters=4, kernel_size=3, dtype="mixed_bfloat16")
    mixed.build((None, None, None, 3))
    mixed.set_weights(theirs.get_weights())
    x = np.random.default_rng(4).normal(size=(1, 7, 7, 3)).astype("float32")
    out = mixed(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(mixed.kernel.dtype) == "float32"
    assert_allclose(
        keras.ops.cast(out, "float32"), theirs(x), atol=0.1, rtol=0.05
    )


def test_max_pooling_equals_keras():
    x = np.random.default_rng(5).normal(size=(2, 8, 6, 3)).astype("float32")
    ours = MaxPooling2D(2)
    assert_allclose(ours(x), keras.layers.MaxPooling2D(2)(x))
    reference = x.reshape(2, 4, 2, 3, 2, 3).max(axis=(2, 4))
    assert_allclose(ours(x), reference)
    assert_config_round_trip(ours)
