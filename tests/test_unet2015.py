import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_unet2015
from keras_unet2015 import UNet2015
from keras_unet2015 import WeightedPixelLoss
from keras_unet2015.backend_utils import tensorflow_lacks_channels_first
from keras_unet2015.layers import UpConvolution2D
from tests.testing import assert_allclose
from tests.testing import assert_config_round_trip
from tests.testing import backend
from tests.testing import skip_if_channels_first_unsupported
from tests.testing import to_numpy

TINY = dict(depth=2, filters=4, dropout_rate=0.0)


def conv_layers(model):
    return [
        layer
        for layer in model.layers
        if isinstance(
            layer,
            (
                keras.layers.Conv2D,
                keras.layers.Conv2DTranspose,
                UpConvolution2D,
            ),
        )
    ]


# --------------------------------------------------------------------------
# A plain NumPy forward pass of the U-Net, written from the paper's
# description layer by layer, independent of the package code.
# --------------------------------------------------------------------------
def np_conv(x, kernel, bias, padding, relu=True):
    """x (H, W, C), kernel (kh, kw, C, F): cross-correlation like Keras."""
    kh, kw = kernel.shape[:2]
    if padding == "same":
        x = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out_h, out_w = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    out = np.zeros((out_h, out_w, kernel.shape[-1]), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += x[i : i + out_h, j : j + out_w] @ kernel[i, j]
    out += bias
    return np.maximum(out, 0) if relu else out


def np_pool(x):
    h, w, c = x.shape
    return x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))


def np_upconv(x, kernel, bias):
    """out[2i + a, 2j + b, f] = sum_c x[i, j, c] * kernel[a, b, f, c] + b."""
    h, w, _ = x.shape
    filters = kernel.shape[2]
    out = np.zeros((2 * h, 2 * w, filters))
    for a in range(2):
        for b in range(2):
            out[a::2, b::2] = x @ kernel[a, b].T + bias
    return out


def np_center_crop(x, h, w):
    top = (x.shape[0] - h) // 2
    left = (x.shape[1] - w) // 2
    return x[top : top + h, left : left + w]


def np_unet(model, image):
    """Reference forward pass (inference) for one (H, W, C) image."""
    w = {layer.name: layer.get_weights() for layer in model.layers}
    x = image.astype(np.float64)
    skips = []
    for level in range(1, model.depth + 1):
        x = np_conv(x, *w[f"contract{level}_conv1"], model.padding)
        x = np_conv(x, *w[f"contract{level}_conv2"], model.padding)
        skips.append(x)
        x = np_pool(x)
    x = np_conv(x, *w["bottom_conv1"], model.padding)
    x = np_conv(x, *w["bottom_conv2"], model.padding)
    for level in range(model.depth, 0, -1):
        x = np_upconv(x, *w[f"expand{level}_upconv"])
        skip = np_center_crop(skips[level - 1], x.shape[0], x.shape[1])
        x = np.concatenate([skip, x], axis=-1)
        x = np_conv(x, *w[f"expand{level}_conv1"], model.padding)
        x = np_conv(x, *w[f"expand{level}_conv2"], model.padding)
    x = np_conv(x, *w["head_conv"], model.padding, relu=False)
    if model.activation == "softmax":
        x = np.exp(x - x.max(-1, keepdims=True))
        x /= x.sum(-1, keepdims=True)
    return x


# --------------------------------------------------------------------------
# Architecture as in the paper
# --------------------------------------------------------------------------
def test_paper_defaults_parameter_and_conv_count():
    model = UNet2015(num_classes=2)
    assert model.count_params() == 31_030_658
    assert len(conv_layers(model)) == 23
    assert model.context_margin == 92
    assert model.output_size(572) == 388
    assert model.output_size((572, 700)) == (388, 516)
    assert model.input_size_for_output(388) == 572
    # Channels per level as in Fig. 1.
    widths = [
        layer.filters
        for layer in conv_layers(model)
        if layer.name.endswith("conv2")
    ]
    assert widths == [64, 128, 256, 512, 1024, 512, 256, 128, 64]
    assert model.get_layer("head_conv").kernel.shape == (1, 1, 64, 2)
    assert model.get_layer("expand4_upconv").kernel.shape == (2, 2, 512, 1024)


def test_dropout_placement_as_in_caffe_ports():
    model = UNet2015()
    dropouts = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Dropout)
    ]
    assert [d.name for d in dropouts] == ["contract4_dropout", "bottom_dropout"]
    assert all(d.rate == 0.5 for d in dropouts)
    # The level-4 dropout also feeds the skip connection.
    crop = model.get_layer("expand4_crop")
    assert crop.input is model.get_layer("contract4_dropout").output


def test_layer_names_read_like_the_figure():
    model = UNet2015(depth=2, filters=4)
    names = [layer.name for layer in model.layers]
    assert names == [
        "image",
        "contract1_conv1",
        "contract1_conv2",
        "contract1_pool",
        "contract2_conv1",
        "contract2_conv2",
        "contract2_dropout",
        "contract2_pool",
        "bottom_conv1",
        "bottom_conv2",
        "bottom_dropout",
        "expand2_crop",
        "expand2_upconv",
        "expand2_concat",
        "expand2_conv1",
        "expand2_conv2",
        "expand1_crop",
        "expand1_upconv",
        "expand1_concat",
        "expand1_conv1",
        "expand1_conv2",
        "head_conv",
    ]
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    summary = "\n".join(lines)
    assert 'Model: "unet2015"' in summary
    assert "expand1_upconv" in summary and "(UpConvolution2D)" in summary


def test_paper_initializer_is_untruncated_gaussian_with_fan_in_std():
    keras.utils.set_random_seed(0)
    model = UNet2015(depth=1, filters=64, dropout_rate=0.0)
    kernel = to_numpy(model.get_layer("contract1_conv2").kernel).ravel()
    std = np.sqrt(2.0 / (3 * 3 * 64))
    assert abs(kernel.std() / std - 1) < 0.02
    # A truncated normal (he_normal) has no values beyond 2 std.
    assert np.mean(np.abs(kernel) > 2 * std) > 0.03
    up = to_numpy(model.get_layer("expand1_upconv").kernel).ravel()
    # One output pixel of the up-convolution sees C_in = 128 inputs.
    assert abs(up.std() / np.sqrt(2.0 / 128) - 1) < 0.05


def test_paper_normal_draws_the_documented_numpy_values_on_every_backend():
    from keras_unet2015.models.unet2015 import PaperNormal

    shape = (3, 3, 16, 8)
    initializer = PaperNormal(seed=7)
    values = to_numpy(initializer(shape, dtype="float32"))
    # Independent expectation: NumPy's generator with the same seed, scaled
    # by sqrt(2 / fan_in), fan_in = 3 * 3 * 16, whatever the backend.
    expected = np.random.default_rng(7).standard_normal(shape, np.float32)
    expected *= np.float32(np.sqrt(2.0 / 144))
    np.testing.assert_array_equal(values, expected)
    # An integer seed gives the same values at every call (as in Keras).
    np.testing.assert_array_equal(to_numpy(initializer(shape)), values)
    explicit = to_numpy(PaperNormal(stddev=0.5, seed=7)((1000,)))
    np.testing.assert_allclose(
        explicit,
        np.random.default_rng(7).standard_normal(1000, np.float32) * 0.5,
    )
    clone = PaperNormal.from_config(PaperNormal(stddev=0.5).get_config())
    assert clone.stddev == 0.5
    restored = keras.initializers.deserialize(
        keras.initializers.serialize(PaperNormal(stddev=0.25, seed=3))
    )
    assert isinstance(restored, PaperNormal) and restored.stddev == 0.25
    np.testing.assert_array_equal(
        to_numpy(restored((4, 4))),
        np.random.default_rng(3).standard_normal((4, 4), np.float32)
        * np.float32(0.25),
    )


def test_paper_normal_with_a_seed_generator_draws_with_keras():
    from keras_unet2015.models.unet2015 import PaperNormal

    initializer = PaperNormal(seed=keras.random.SeedGenerator(1))
    first = to_numpy(initializer((3, 3, 64, 64)))
    second = to_numpy(initializer((3, 3, 64, 64)))
    assert not np.array_equal(first, second)  # the generator advances
    assert abs(first.std() / np.sqrt(2.0 / 576) - 1) < 0.02


@pytest.mark.parametrize(
    "padding, depth, size, out",
    [
        ("valid", 1, 18, 2),
        ("valid", 1, 64, 48),
        ("valid", 2, 44, 4),
        ("valid", 2, 60, 20),
        ("valid", 3, 92, 4),
        ("same", 2, 12, 12),
        ("same", 1, 10, 10),
        ("same", 3, 40, 40),
    ],
)
def test_output_shapes(padding, depth, size, out):
    model = UNet2015(depth=depth, filters=2, padding=padding, num_classes=3)
    y = model(np.zeros((2, size, size, 1), "float32"))
    assert tuple(y.shape) == (2, out, out, 3)
    assert model.output_size(size) == out


def test_non_square_and_rgb_and_none_spatial_dims():
    model = UNet2015(input_channels=3, depth=2, filters=2)
    assert model.input_shape == (None, None, None, 3)
    y = model(np.zeros((1, 44, 76, 3), "float32"))
    assert tuple(y.shape) == (1, 4, 36, 2)


def test_invalid_concrete_sizes_raise_with_nearest_valid_sizes():
    with pytest.raises(ValueError, match="556 or 572"):
        UNet2015(image_size=570)
    model = UNet2015(depth=2, filters=2)
    with pytest.raises(ValueError, match=r"Invalid input height 50.*48 or 52"):
        model(np.zeros((1, 50, 44, 1), "float32"))
    with pytest.raises(ValueError, match="input width 46"):
        model(np.zeros((1, 44, 46, 1), "float32"))
    same = UNet2015(depth=2, filters=2, padding="same")
    with pytest.raises(ValueError, match="12 or 16"):
        same(np.zeros((1, 14, 16, 1), "float32"))


def test_fixed_image_size():
    model = UNet2015(depth=2, filters=2, image_size=(44, 60))
    assert model.input_shape == (None, 44, 60, 1)
    assert model.output_shape == (None, 4, 20, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_classes=0),
        dict(input_channels=1.5),
        dict(depth=0),
        dict(filters=True),
        dict(dropout_rate=1.0),
        dict(padding="full"),
        dict(activation="relu"),
        dict(image_size=(572,)),
        dict(data_format="NHWC"),
        dict(upconv_implementation="fft"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="Received"):
        UNet2015(**kwargs)


# --------------------------------------------------------------------------
# Numerics against the NumPy reference
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "padding, activation, channels",
    [("valid", None, 1), ("valid", "softmax", 3), ("same", None, 2)],
)
def test_forward_matches_numpy_reference(padding, activation, channels):
    keras.utils.set_random_seed(1)
    model = UNet2015(
        num_classes=3,
        input_channels=channels,
        depth=2,
        filters=4,
        padding=padding,
        activation=activation,
    )
    # Non-zero biases so that their placement is tested too.
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.random.normal(0, 0.1, layer.bias.shape))
    size = 60 if padding == "valid" else 16
    images = np.random.rand(2, size, size + 16, channels).astype("float32")
    got = to_numpy(model(images, training=False))
    expected = np.stack([np_unet(model, image) for image in images])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("implementation", ["matmul", "conv_transpose"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_up_convolution_equals_conv2d_transpose(implementation, data_format):
    skip_if_channels_first_unsupported(data_format)
    rng = np.random.default_rng(0)
    shape = (2, 5, 7, 6) if data_format == "channels_last" else (2, 6, 5, 7)
    x = rng.normal(size=shape).astype("float32")
    up = UpConvolution2D(
        4, data_format=data_format, implementation=implementation
    )
    reference = keras.layers.Conv2DTranspose(
        4, 2, strides=2, data_format=data_format
    )
    up.build(shape)
    reference.build(shape)
    kernel = rng.normal(size=(2, 2, 4, 6)).astype("float32")
    bias = rng.normal(size=(4,)).astype("float32")
    up.set_weights([kernel, bias])
    reference.set_weights([kernel, bias])
    assert_allclose(up(x), reference(x), atol=1e-5, rtol=1e-5)
    per_image = [
        np_upconv(
            img if data_format == "channels_last" else img.transpose(1, 2, 0),
            kernel,
            bias,
        )
        for img in x
    ]
    expected = np.stack(per_image)
    if data_format == "channels_first":
        expected = expected.transpose(0, 3, 1, 2)
    assert_allclose(up(x), expected, atol=1e-5, rtol=1e-5)


def test_up_convolution_gradients_equal_conv2d_transpose():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 4, 3)).astype("float32")
    target = rng.normal(size=(1, 8, 8, 2)).astype("float32")

    def gradients(layer):
        inputs = keras.Input((4, 4, 3))
        model = keras.Model(inputs, layer(inputs))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        model.layers[1].set_weights([kernel, bias])
        model.train_on_batch(x, target)
        return [
            w - to_numpy(v)
            for w, v in zip((kernel, bias), model.layers[1].weights)
        ]

    kernel = rng.normal(size=(2, 2, 2, 3)).astype("float32")
    bias = rng.normal(size=(2,)).astype("float32")
    ours = gradients(UpConvolution2D(2, implementation="matmul"))
    theirs = gradients(keras.layers.Conv2DTranspose(2, 2, strides=2))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_up_convolution_layer_contract():
    layer = UpConvolution2D(3, implementation="matmul")
    assert_config_round_trip(layer)
    symbolic = layer(keras.Input((None, 5, 4)))
    assert tuple(symbolic.shape) == (None, None, 10, 3)
    assert layer.compute_output_shape((2, 3, None, 4)) == (2, 6, None, 3)
    with pytest.raises(ValueError, match="filters"):
        UpConvolution2D(0)
    with pytest.raises(ValueError, match="implementation"):
        UpConvolution2D(2, implementation="scatter")


def test_implementations_give_same_model_outputs():
    keras.utils.set_random_seed(2)
    a = UNet2015(**TINY, upconv_implementation="matmul")
    b = UNet2015(**TINY, upconv_implementation="conv_transpose")
    b.set_weights(a.get_weights())
    x = np.random.rand(1, 60, 60, 1).astype("float32")
    assert_allclose(a(x), b(x), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------
# Data formats, dtypes, training
# --------------------------------------------------------------------------
def test_channels_first_on_tensorflow_cpu_is_a_clear_error():
    if not tensorflow_lacks_channels_first():
        pytest.skip("this backend runs channels_first convolutions")
    model = UNet2015(**TINY, data_format="channels_first")
    x = np.zeros((1, 1, 60, 60), "float32")
    for run in (model, lambda x: model.predict(x, verbose=0)):
        with pytest.raises(ValueError, match="data_format='channels_last'"):
            run(x)
    # Building, saving and loading still work (e.g. to run on a GPU later).
    assert model.output_shape == (None, 2, None, None)


def test_channels_first_equals_channels_last():
    skip_if_channels_first_unsupported("channels_first")
    keras.utils.set_random_seed(3)
    last = UNet2015(**TINY, input_channels=2, data_format="channels_last")
    first = UNet2015(**TINY, input_channels=2, data_format="channels_first")
    first.set_weights(last.get_weights())
    x = np.random.rand(1, 60, 44, 2).astype("float32")
    y_last = to_numpy(last(x))
    y_first = to_numpy(first(x.transpose(0, 3, 1, 2)))
    assert y_first.shape == (1, 2, 20, 4)
    np.testing.assert_allclose(
        y_first.transpose(0, 2, 3, 1), y_last, atol=1e-5, rtol=1e-5
    )
    assert first.output_size((60, 44)) == (20, 4)


def test_global_image_data_format_is_used_and_serialized():
    skip_if_channels_first_unsupported("channels_first")
    keras.config.set_image_data_format("channels_first")
    model = UNet2015(**TINY)
    assert model.data_format == "channels_first"
    keras.config.set_image_data_format("channels_last")
    clone = UNet2015.from_config(model.get_config())
    assert clone.data_format == "channels_first"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    model = UNet2015(**TINY, dtype=policy)
    compute = policy.split("_")[1]
    assert all(
        keras.backend.standardize_dtype(w.dtype) == "float32"
        for w in model.weights
    )
    y = model(np.random.rand(1, 60, 60, 1).astype("float32"))
    assert keras.backend.standardize_dtype(y.dtype) == compute
    assert np.isfinite(to_numpy(keras.ops.cast(y, "float32"))).all()


def test_model_dtype_policy_gives_loss_scaling_and_is_saved():
    # `dtype=` on the model (not only the global policy) must reach
    # `compile`, which adds loss scaling for float16, and the config.
    model = UNet2015(**TINY, dtype="mixed_float16")
    assert model.dtype_policy.name == "mixed_float16"
    model.compile(optimizer="sgd", loss=WeightedPixelLoss())
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    clone = UNet2015.from_config(model.get_config())
    assert clone.dtype_policy.name == "mixed_float16"
    assert clone.get_layer("contract1_conv1").compute_dtype == "float16"
    bfloat = UNet2015(**TINY, dtype="mixed_bfloat16")
    bfloat.compile(optimizer="sgd", loss=WeightedPixelLoss())
    assert not isinstance(bfloat.optimizer, keras.optimizers.LossScaleOptimizer)


def test_global_mixed_precision_policy():
    keras.config.set_dtype_policy("mixed_float16")
    model = UNet2015(**TINY)
    assert model.dtype_policy.name == "mixed_float16"
    assert all(
        keras.backend.standardize_dtype(w.dtype) == "float32"
        for w in model.weights
    )


def test_one_fit_step_decreases_the_loss():
    keras.utils.set_random_seed(4)
    model = UNet2015(**TINY)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.rand(2, 60, 60, 1).astype("float32")
    y = (x[:, 20:40, 20:40, 0] > 0.5).astype("int32")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < before


# --------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------
def test_config_round_trip():
    model = UNet2015(
        num_classes=3,
        input_channels=2,
        depth=2,
        filters=4,
        dropout_rate=0.25,
        padding="same",
        activation="softmax",
        image_size=(None, 32),
        name="my_unet",
    )
    clone = assert_config_round_trip(model)
    assert clone.name == "my_unet"
    assert clone.count_params() == model.count_params()
    assert keras_unet2015.UNet2015 is UNet2015


def test_keras_file_round_trip(tmp_path):
    keras.utils.set_random_seed(5)
    model = UNet2015(**TINY, activation="softmax")
    x = np.random.rand(1, 60, 60, 1).astype("float32")
    expected = to_numpy(model(x))
    path = tmp_path / "unet.keras"
    model.save(path)
    # safe_mode=True is Keras's default: no lambdas or unsafe code needed.
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, UNet2015)
    assert loaded.get_config() == model.get_config()
    assert_allclose(loaded(x), expected, atol=1e-6)


CROSS_BACKEND_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    try:
        import torch  # noqa: F401  (before tensorflow)
    except ImportError:
        pass
    import keras
    import keras_unet2015  # noqa: F401  (registers the classes)
    model = keras.saving.load_model(sys.argv[1], safe_mode=True)
    x = np.load(sys.argv[2])
    y = keras.ops.convert_to_numpy(model(x, training=False))
    np.save(sys.argv[3], y)
    print(json.dumps({"backend": keras.backend.backend(),
                      "class": type(model).__name__}))
    """
)


@pytest.mark.parametrize("other", ["jax", "tensorflow", "torch"])
def test_cross_backend_equality(tmp_path, other):
    """Weights saved on this backend give the same outputs on the others."""
    if other == backend():
        pytest.skip("same backend: covered by test_keras_file_round_trip")
    keras.utils.set_random_seed(6)
    model = UNet2015(num_classes=3, input_channels=2, depth=2, filters=4)
    x = np.random.rand(2, 60, 76, 2).astype("float32")
    expected = to_numpy(model(x, training=False))
    model.save(tmp_path / "unet.keras")
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run.py"
    script.write_text(CROSS_BACKEND_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND=other)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "unet.keras"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info == {"backend": other, "class": "UNet2015"}
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------
# Full-size network (marked large; run once per backend in CI)
# --------------------------------------------------------------------------
@pytest.mark.large
def test_full_size_tile_572_to_388_and_training_step():
    keras.utils.set_random_seed(7)
    model = UNet2015()
    model.compile(
        optimizer=keras.optimizers.SGD(1e-4, momentum=0.99),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.rand(1, 572, 572, 1).astype("float32")
    y = (np.random.rand(1, 388, 388) > 0.5).astype("int32")
    logits = model(x, training=False)
    assert tuple(logits.shape) == (1, 388, 388, 2)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    # The matmul up-convolution equals Conv2DTranspose on the full model too.
    reference = UNet2015(upconv_implementation="conv_transpose")
    reference.set_weights(model.get_weights())
    assert_allclose(
        model(x, training=False),
        reference(x, training=False),
        atol=1e-4,
        rtol=1e-4,
    )


# --------------------------------------------------------------------------
# Errors inside fit, evaluate and predict leave a usable model
# --------------------------------------------------------------------------
def _compiled_tiny_model():
    keras.utils.set_random_seed(7)
    model = UNet2015(**TINY)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _assert_model_usable(model, weights, x, expected, tmp_path):
    """Same weights, same predictions, and the model still saves."""
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    model.save(tmp_path / "after_error.keras")
    loaded = keras.saving.load_model(tmp_path / "after_error.keras")
    assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)


class _Batches(keras.utils.PyDataset):
    """Batches of one tile; `sizes[i]` is the tile size of batch `i`.

    With `fail_on_read=n`, the n-th and every later read raise `OSError`.
    """

    def __init__(self, sizes, fail_on_read=None):
        super().__init__()
        self.sizes = sizes
        self.fail_on_read = fail_on_read
        self.reads = 0

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, index):
        self.reads += 1
        if self.fail_on_read and self.reads >= self.fail_on_read:
            raise OSError("could not read batch (simulated disk error)")
        size = self.sizes[index]
        x = np.zeros((1, size, size, 1), "float32")
        return x, np.zeros((1, size - 40, size - 40), "int32")


@pytest.mark.parametrize("method", ["predict", "predict_on_batch"])
def test_invalid_size_in_predict_is_the_package_error_and_keeps_weights(
    method, tmp_path
):
    # On JAX, Keras detaches the weights during `predict`; an exception
    # used to leave them detached ("'NoneType' object is not callable" in
    # every later call). On TensorFlow a second `predict` runs a graph
    # traced without sizes, which raised a raw ConcatOp error.
    model = _compiled_tiny_model()
    x = np.random.rand(2, 60, 60, 1).astype("float32")
    expected = model.predict(x, verbose=0)
    weights = model.get_weights()
    run = getattr(model, method)
    kwargs = {"verbose": 0} if method == "predict" else {}
    with pytest.raises(ValueError, match="Invalid input height 61"):
        run(np.zeros((2, 61, 61, 1), "float32"), **kwargs)
    with pytest.raises(ValueError, match="expects 1 input channels"):
        run(np.zeros((2, 60, 60, 3), "float32"), **kwargs)
    _assert_model_usable(model, weights, x, expected, tmp_path)


@pytest.mark.parametrize("method", ["predict", "evaluate", "fit"])
def test_invalid_size_in_a_later_batch_keeps_weights(method, tmp_path):
    model = _compiled_tiny_model()
    x = np.random.rand(1, 60, 60, 1).astype("float32")
    expected = model.predict(x, verbose=0)
    weights = model.get_weights()
    run = getattr(model, method)
    # TensorFlow meets the size only in the compiled graph: the message
    # there names the cause instead of the raw ConcatOp error.
    with pytest.raises(ValueError, match="[Ii]nvalid (input )?height"):
        run(_Batches([60, 61]), verbose=0)
    if method == "fit":
        # Depending on the backend's data adapter the first SGD step ran
        # before the error or not; the model keeps whatever state it has.
        weights = model.get_weights()
        expected = model.predict(x, verbose=0)
    _assert_model_usable(model, weights, x, expected, tmp_path)


@pytest.mark.parametrize("method", ["predict", "evaluate", "fit"])
def test_failing_data_loader_in_the_first_step_keeps_weights(method, tmp_path):
    model = _compiled_tiny_model()
    x = np.random.rand(1, 60, 60, 1).astype("float32")
    expected = model.predict(x, verbose=0)
    weights = model.get_weights()
    # The first read builds or checks the model; the second is step 1.
    data = _Batches([60, 60], fail_on_read=2)
    with pytest.raises(OSError, match="simulated disk error"):
        getattr(model, method)(data, verbose=0)
    assert model.optimizer.iterations.numpy() == 0
    _assert_model_usable(model, weights, x, expected, tmp_path)


@pytest.mark.parametrize("padding, out", [("valid", 20), ("same", 60)])
def test_predict_of_an_empty_batch_is_an_empty_result(padding, out):
    # Keras's `predict` raised UnboundLocalError (no batch to concatenate).
    model = UNet2015(**TINY, padding=padding, num_classes=3)
    result = model.predict(np.zeros((0, 60, 60, 1), "float32"), verbose=0)
    assert result.shape == (0, out, out, 3)
    assert result.dtype == np.float32
    with pytest.raises(ValueError, match="Invalid input height 61"):
        model.predict(np.zeros((0, 61, 60, 1), "float32"), verbose=0)


LOAD_WITHOUT_IMPORT_SCRIPT = textwrap.dedent(
    """
    import sys
    try:
        import torch  # noqa: F401  (before tensorflow)
    except ImportError:
        pass
    import keras
    try:
        keras.saving.load_model(sys.argv[1])
    except TypeError as error:
        print("without the import:", error)
    import keras_unet2015  # noqa: F401  (registers the classes)
    print("with the import:", type(keras.saving.load_model(sys.argv[1])))
    """
)


def test_loading_a_keras_file_needs_the_package_imported(tmp_path):
    # As docs/how-to/saving.md says: Keras imports the module named in the
    # file only for its own packages (keras, keras_hub, ...), so the
    # classes are known only once `keras_unet2015` is imported.
    path = tmp_path / "unet.keras"
    UNet2015(**TINY).save(path)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_IMPORT_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        env=dict(os.environ, KERAS_BACKEND=backend()),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "without the import: Could not locate class 'UNet2015'" in result.stdout
    )
    assert (
        "with the import: <class 'keras_unet2015.models.unet2015.UNet2015'>"
        in result.stdout
    )
