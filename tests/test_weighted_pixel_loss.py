import keras
import numpy as np
import pytest

import keras_unet2015
from keras_unet2015 import WeightedPixelLoss
from keras_unet2015 import weight_maps
from tests.testing import assert_config_round_trip
from tests.testing import backend
from tests.testing import skip_if_channels_first_unsupported
from tests.testing import to_numpy

# === NumPy reference ===


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_pixel_losses(labels, logits):
    """-log p_label(x) per pixel, channels-last logits, float64."""
    log_probs = np_log_softmax(logits)
    return -np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def np_softmax(logits):
    return np.exp(np_log_softmax(logits))


def crop(x, size):
    """Center-crops axes 1 and 2 to `size`."""
    top = (x.shape[1] - size[0]) // 2
    left = (x.shape[2] - size[1]) // 2
    return x[:, top : top + size[0], left : left + size[1]]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(2, 5, 6, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(2, 5, 6))
    weights = rng.uniform(0.0, 4.0, size=(2, 5, 6)).astype("float32")
    return logits, labels, weights


# === Config ===


def test_config_round_trip():
    loss = WeightedPixelLoss(
        from_logits=False,
        ignore_class=255,
        data_format="channels_first",
        reduction="sum",
        name="w",
    )
    clone = assert_config_round_trip(loss)
    assert clone.from_logits is False
    assert clone.ignore_class == 255
    assert clone.data_format == "channels_first"
    assert clone.reduction == "sum"
    assert clone.name == "w"
    default = WeightedPixelLoss()
    assert default.from_logits is True
    assert default.reduction == "sum_over_batch_size"
    assert_config_round_trip(WeightedPixelLoss(dtype="mixed_float16"))
    # A NumPy integer (e.g. read from a label file) is stored as an int.
    numpy_ignore = WeightedPixelLoss(ignore_class=np.uint8(255))
    assert type(numpy_ignore.get_config()["ignore_class"]) is int


# === Values against the NumPy reference ===


def test_unweighted(data):
    logits, labels, _ = data
    expected = np_pixel_losses(labels, logits)
    loss = WeightedPixelLoss()
    assert to_numpy(loss(labels, logits)) == pytest.approx(
        expected.mean(), rel=1e-5
    )
    summed = WeightedPixelLoss(reduction="sum")
    assert to_numpy(summed(labels, logits)) == pytest.approx(
        expected.sum(), rel=1e-5
    )
    per_pixel = WeightedPixelLoss(reduction="none")(labels, logits)
    assert tuple(per_pixel.shape) == (2, 5, 6)
    np.testing.assert_allclose(to_numpy(per_pixel), expected, rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(loss.call(labels, logits)), expected, rtol=1e-5
    )


def test_weight_map(data):
    logits, labels, weights = data
    weighted = np_pixel_losses(labels, logits) * weights
    cases = {
        "sum_over_batch_size": weighted.sum() / weighted.size,
        "mean": weighted.sum() / weighted.size,
        "sum": weighted.sum(),
        "mean_with_sample_weight": weighted.sum() / weights.sum(),
    }
    for reduction, expected in cases.items():
        loss = WeightedPixelLoss(reduction=reduction)
        value = to_numpy(loss(labels, logits, sample_weight=weights))
        assert value == pytest.approx(expected, rel=1e-5), reduction
    per_pixel = WeightedPixelLoss(reduction=None)(
        labels, logits, sample_weight=weights
    )
    np.testing.assert_allclose(to_numpy(per_pixel), weighted, rtol=1e-5)


def test_per_image_weights(data):
    logits, labels, _ = data
    image_weights = np.array([0.5, 3.0], "float32")
    expected = np_pixel_losses(labels, logits) * image_weights[:, None, None]
    loss = WeightedPixelLoss(reduction="sum")
    for sample_weight in (image_weights, image_weights[:, None]):
        value = to_numpy(loss(labels, logits, sample_weight=sample_weight))
        assert value == pytest.approx(expected.sum(), rel=1e-5)


def test_zero_weights(data):
    logits, labels, _ = data
    zeros = np.zeros(labels.shape, "float32")
    for reduction in (
        "sum_over_batch_size",
        "sum",
        "mean_with_sample_weight",
    ):
        loss = WeightedPixelLoss(reduction=reduction)
        assert to_numpy(loss(labels, logits, sample_weight=zeros)) == 0.0


def test_ignore_class(data):
    logits, labels, weights = data
    labels = labels.copy()
    labels[0, :2] = 255
    labels[1, :, 0] = 255
    valid = labels != 255
    safe = np.where(valid, labels, 0)
    losses = np_pixel_losses(safe, logits) * weights * valid
    mean = WeightedPixelLoss(ignore_class=255)
    value = to_numpy(mean(labels, logits, sample_weight=weights))
    # The mean is over the non-ignored pixels, as in Keras's losses.
    assert value == pytest.approx(losses.sum() / valid.sum(), rel=1e-5)
    weighted_mean = WeightedPixelLoss(
        ignore_class=255, reduction="mean_with_sample_weight"
    )
    value = to_numpy(weighted_mean(labels, logits, sample_weight=weights))
    assert value == pytest.approx(
        losses.sum() / (weights * valid).sum(), rel=1e-5
    )
    per_pixel = WeightedPixelLoss(ignore_class=255, reduction="none")
    result = to_numpy(per_pixel(labels, logits, sample_weight=weights))
    assert (result[~valid] == 0).all()
    np.testing.assert_allclose(result, losses, rtol=1e-5)


def test_probabilities_equal_logits(data):
    logits, labels, weights = data
    from_logits = WeightedPixelLoss()(labels, logits, sample_weight=weights)
    probabilities = np_softmax(logits).astype("float32")
    from_probs = WeightedPixelLoss(from_logits=False)(
        labels, probabilities, sample_weight=weights
    )
    assert to_numpy(from_probs) == pytest.approx(
        to_numpy(from_logits), rel=1e-5
    )


def test_one_hot_and_channel_axis_labels_equal_sparse(data):
    logits, labels, weights = data
    loss = WeightedPixelLoss(reduction="none")
    expected = to_numpy(loss(labels, logits, sample_weight=weights))
    one_hot = np.eye(3, dtype="float32")[labels]
    np.testing.assert_allclose(
        to_numpy(loss(one_hot, logits, sample_weight=weights)),
        expected,
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        to_numpy(
            loss(labels[..., None], logits, sample_weight=weights[..., None])
        ),
        expected,
        rtol=1e-6,
    )


def test_channels_first(data):
    logits, labels, weights = data
    expected = to_numpy(
        WeightedPixelLoss(reduction="none")(
            labels, logits, sample_weight=weights
        )
    )
    loss = WeightedPixelLoss(data_format="channels_first", reduction="none")
    first = np.transpose(logits, (0, 3, 1, 2))
    np.testing.assert_allclose(
        to_numpy(loss(labels, first, sample_weight=weights)),
        expected,
        rtol=1e-6,
    )
    one_hot_first = np.transpose(np.eye(3)[labels], (0, 3, 1, 2))
    np.testing.assert_allclose(
        to_numpy(loss(one_hot_first, first, sample_weight=weights[:, None])),
        expected,
        rtol=1e-6,
    )


# === Valid-convolution cropping ===


def test_labels_and_weights_at_input_size_are_center_cropped(data):
    logits, _, _ = data
    rng = np.random.default_rng(1)
    # The "input tile" is 4 px larger on each side than the prediction.
    big_labels = rng.integers(0, 3, size=(2, 13, 14))
    big_weights = rng.uniform(0, 5, size=(2, 13, 14)).astype("float32")
    labels, weights = crop(big_labels, (5, 6)), crop(big_weights, (5, 6))
    expected = np_pixel_losses(labels, logits) * weights
    loss = WeightedPixelLoss(reduction="none")
    np.testing.assert_allclose(
        to_numpy(loss(big_labels, logits, sample_weight=big_weights)),
        expected,
        rtol=1e-5,
    )
    # Labels already cropped, weights not (and the other way round).
    np.testing.assert_allclose(
        to_numpy(loss(labels, logits, sample_weight=big_weights)),
        expected,
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        to_numpy(loss(big_labels, logits, sample_weight=weights)),
        expected,
        rtol=1e-5,
    )


def test_sizes_that_cannot_be_cropped_are_rejected(data):
    logits, labels, weights = data
    loss = WeightedPixelLoss()
    odd = np.zeros((2, 8, 6), "int32")  # 3 px taller: odd difference
    with pytest.raises(ValueError, match="difference 3 is odd"):
        loss(odd, logits)
    with pytest.raises(ValueError, match="smaller than the prediction"):
        loss(labels[:, 1:-1], logits)
    with pytest.raises(ValueError, match="`sample_weight`.*odd"):
        loss(labels, logits, sample_weight=np.ones((2, 5, 7), "float32"))


def test_dynamic_sizes_on_tensorflow(data):
    if backend() != "tensorflow":
        pytest.skip("only TensorFlow traces graphs with unknown sizes")
    import tensorflow as tf

    logits, _, _ = data
    rng = np.random.default_rng(2)
    big_labels = rng.integers(0, 3, size=(2, 9, 10)).astype("int32")
    big_weights = rng.uniform(0, 5, size=(2, 9, 10)).astype("float32")
    loss = WeightedPixelLoss(reduction="sum")

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, None, None), tf.int32),
            tf.TensorSpec((None, None, None, 3), tf.float32),
            tf.TensorSpec((None, None, None), tf.float32),
        ]
    )
    def traced(y_true, y_pred, sample_weight):
        return loss(y_true, y_pred, sample_weight=sample_weight)

    expected = (
        np_pixel_losses(crop(big_labels, (5, 6)), logits)
        * crop(big_weights, (5, 6))
    ).sum()
    value = traced(big_labels, logits, big_weights)
    assert to_numpy(value) == pytest.approx(expected, rel=1e-5)


# === Precision, stability, gradients ===


def test_float32_under_mixed_precision(data):
    logits, labels, weights = data
    expected = (np_pixel_losses(labels, logits) * weights).mean()
    keras.config.set_dtype_policy("mixed_float16")
    for loss in (
        WeightedPixelLoss(),
        WeightedPixelLoss(dtype="mixed_float16"),
        WeightedPixelLoss(dtype="float16"),
    ):
        half = keras.ops.convert_to_tensor(logits, "float16")
        value = loss(labels, half, sample_weight=weights)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        # Only the float16 rounding of the logits separates the two.
        assert to_numpy(value) == pytest.approx(expected, rel=1e-3)


def test_extreme_logits_and_probabilities_stay_finite():
    labels = np.array([[[0, 1]]])
    logits = np.array([[[[1e4, -1e4], [3e4, -2e4]]]], "float32")
    value = WeightedPixelLoss(reduction="none")(labels, logits)
    # log-softmax in float64: 0 for the right class, 5e4 for the wrong one.
    np.testing.assert_allclose(to_numpy(value), [[[0.0, 5e4]]], rtol=1e-6)
    probabilities = np.array([[[[1.0, 0.0], [1.0, 0.0]]]], "float32")
    value = WeightedPixelLoss(from_logits=False, reduction="none")(
        labels, probabilities
    )
    epsilon = keras.config.epsilon()
    np.testing.assert_allclose(
        to_numpy(value),
        [[[-np.log1p(-epsilon), -np.log(epsilon)]]],
        rtol=1e-3,
        atol=1e-6,
    )


def gradient(fn, x):
    """d fn(x) / dx on the current backend."""
    if backend() == "jax":
        import jax

        return np.asarray(jax.grad(fn)(x))
    if backend() == "tensorflow":
        import tensorflow as tf

        x = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = fn(x)
        return tape.gradient(value, x).numpy()
    import torch

    x = torch.tensor(x, requires_grad=True)
    fn(x).backward()
    return x.grad.numpy()


def test_gradients_are_finite_and_match_reference(data):
    logits, labels, weights = data
    loss = WeightedPixelLoss(reduction="sum")
    grad = gradient(lambda z: loss(labels, z, sample_weight=weights), logits)
    # d/dz of -w log softmax(z)_l = w (softmax(z) - onehot(l)).
    expected = weights[..., None] * (np_softmax(logits) - np.eye(3)[labels])
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    extreme = (logits * 1e4).astype("float32")
    grad = gradient(lambda z: loss(labels, z, sample_weight=weights), extreme)
    assert np.isfinite(grad).all()
    probs = WeightedPixelLoss(from_logits=False, reduction="sum")
    grad = gradient(
        lambda p: probs(labels, p, sample_weight=weights),
        np_softmax(extreme).astype("float32"),
    )
    assert np.isfinite(grad).all()


# === Bad input ===


def test_bad_arguments_are_rejected(data):
    logits, labels, _ = data
    with pytest.raises(ValueError, match="from_logits"):
        WeightedPixelLoss(from_logits="yes")
    with pytest.raises(ValueError, match="ignore_class"):
        WeightedPixelLoss(ignore_class=1.5)
    with pytest.raises(ValueError, match="data_format"):
        WeightedPixelLoss(data_format="channels_middle")
    with pytest.raises(ValueError, match="reduction"):
        WeightedPixelLoss(reduction="median")
    loss = WeightedPixelLoss()
    with pytest.raises(ValueError, match="4D tensor"):
        loss(labels, logits[..., 0])
    with pytest.raises(ValueError, match="y_true"):
        loss(labels[..., 0], logits)
    with pytest.raises(ValueError, match="one-hot"):
        loss(np.zeros((2, 5, 6, 2), "float32"), logits)
    with pytest.raises(ValueError, match="sample_weight"):
        loss(labels, logits, sample_weight=np.ones((2, 5, 6, 2), "float32"))
    with pytest.raises(ValueError, match="integer labels only"):
        WeightedPixelLoss(ignore_class=0)(np.eye(3)[labels], logits)


# === Bad labels and weights ===


def _with(labels, row, col, value, dtype=None):
    labels = labels.astype(dtype or labels.dtype)
    labels[0, row, col] = value
    return labels


@pytest.mark.parametrize(
    "value, dtype, match",
    [
        # Today: -1 wraps to the last class on every backend.
        (-1, None, r"in \[0, 3\); found -1 \(1 pixel, the first at "),
        (3, None, r"in \[0, 3\); found 3 \(1 pixel"),
        # Today: 0.7 truncates to class 0.
        (0.7, "float32", r"non-integer values \(0\.7; 1 pixel"),
        (np.nan, "float32", "NaN or infinite values"),
    ],
)
def test_numpy_labels_that_are_no_class_are_rejected(data, value, dtype, match):
    logits, labels, weights = data
    bad = _with(labels, 1, 2, value, dtype)
    for loss in (WeightedPixelLoss(), WeightedPixelLoss(reduction="none")):
        with pytest.raises(ValueError, match=match):
            loss(bad, logits, sample_weight=weights)
    with pytest.raises(ValueError, match=match):
        WeightedPixelLoss().call(bad, logits)


def test_numpy_0_255_mask_labels_explain_the_fix():
    # ISBI-style 0/255 labels with a 2-class model: today NaN on JAX,
    # clamped to class 1 on PyTorch, a GatherV2 error on TensorFlow.
    labels = np.zeros((1, 4, 4), np.uint8)
    labels[0, 1:3, 1:3] = 255
    logits = np.zeros((1, 4, 4, 2), "float32")
    with pytest.raises(ValueError) as error:
        WeightedPixelLoss()(labels, logits)
    message = str(error.value)
    assert "found 255 (4 pixels, the first at (0, 1, 1))" in message
    assert "label_mode='binary'" in message and "labels // 255" in message


def test_numpy_ignore_class_labels_stay_accepted(data):
    logits, labels, weights = data
    labels = _with(labels, 0, 0, -1)
    loss = WeightedPixelLoss(ignore_class=-1, reduction="sum")
    valid = labels != -1
    expected = np_pixel_losses(np.where(valid, labels, 0), logits) * valid
    value = to_numpy(loss(labels, logits))
    assert value == pytest.approx(expected.sum(), rel=1e-5)


@pytest.mark.parametrize(
    "value, match",
    [
        (np.nan, r"NaN at 1 pixel \(the first at \(0, 1, 2\)\)"),
        (-0.5, r"negative at 1 pixel \(the first at \(0, 1, 2\)\)"),
        (np.inf, r"infinite at 1 pixel"),
    ],
)
def test_numpy_weights_must_be_finite_and_non_negative(data, value, match):
    logits, labels, weights = data
    bad = _with(weights, 1, 2, value)
    with pytest.raises(ValueError, match=match):
        WeightedPixelLoss()(labels, logits, sample_weight=bad)
    # Zero weights are valid: they leave pixels out.
    WeightedPixelLoss()(labels, logits, sample_weight=np.zeros_like(weights))


def test_tensor_labels_that_are_no_class_give_nan_on_every_backend(data):
    logits, labels, weights = data
    bad = labels.astype("float32")
    bad[0, 0, 0], bad[0, 1, 1], bad[1, 2, 3] = -1, 3, 0.7
    known = np.ones(labels.shape, bool)
    known[0, 0, 0] = known[0, 1, 1] = known[1, 2, 3] = False
    per_pixel = WeightedPixelLoss(reduction="none")
    result = to_numpy(
        per_pixel(keras.ops.convert_to_tensor(bad), logits, weights)
    )
    # NaN exactly where the label is no class; the rest is the reference.
    np.testing.assert_array_equal(np.isnan(result), ~known)
    expected = np_pixel_losses(np.where(known, labels, 0), logits) * weights
    np.testing.assert_allclose(result[known], expected[known], rtol=1e-5)
    # Integer tensors as well, and `ignore_class` still gives 0, not NaN.
    ints = labels.copy()
    ints[0, 0, 0], ints[0, 1, 1], ints[1, 0, 0] = -1, 3, 255
    loss = WeightedPixelLoss(ignore_class=255, reduction="none")
    result = to_numpy(loss(keras.ops.convert_to_tensor(ints), logits))
    assert np.isnan(result[0, 0, 0]) and np.isnan(result[0, 1, 1])
    assert result[1, 0, 0] == 0.0
    assert np.isfinite(np.delete(result.ravel(), [0, 7])).all()
    # The mean is NaN too, while the gradient stays finite: it is the one
    # of the valid pixels alone.
    tensor_labels = keras.ops.convert_to_tensor(bad)
    mean = WeightedPixelLoss(reduction="sum")
    assert np.isnan(to_numpy(mean(tensor_labels, logits, weights)))
    grad = gradient(lambda z: mean(tensor_labels, z, weights), logits)
    safe = np.where(known, labels, 0)
    expected = (weights * known)[..., None] * (
        np_softmax(logits) - np.eye(3)[safe]
    )
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_bad_labels_in_a_compiled_fit_step_give_nan_loss_not_nan_weights():
    x, target, weights = tiny_problem(count=2)
    bad = target.astype("int32") * 255  # a 0/255 mask, 2 classes
    model = tiny_model()
    history = model.fit(
        x, bad, sample_weight=weights, batch_size=2, epochs=1, verbose=0
    )
    assert np.isnan(history.history["loss"][0])
    for weight in model.get_weights():
        assert np.isfinite(weight).all()


# === Training ===


def tiny_problem(count=6, size=36):
    """Blobs to segment, labels and paper weight maps at the input size."""
    rng = np.random.default_rng(0)
    rows, cols = np.indices((size, size))
    images, instances = [], []
    for _ in range(count):
        label = np.zeros((size, size), np.int32)
        for cell in range(1, 5):
            cy, cx = rng.integers(6, size - 6, size=2)
            label[(rows - cy) ** 2 + (cols - cx) ** 2 <= 16] = cell
        instances.append(label)
        noise = rng.normal(scale=0.1, size=(size, size))
        images.append((label > 0) + noise)
    x = np.stack(images)[..., None].astype("float32")
    target, weights = weight_maps.target_and_weight_map(np.stack(instances))
    return x, target, weights


def tiny_model(**kwargs):
    keras.utils.set_random_seed(0)
    model = keras_unet2015.UNet2015(
        depth=1, filters=4, dropout_rate=0.0, padding="valid", **kwargs
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=WeightedPixelLoss()
    )
    return model


def reference_fit_loss(model, x, target, weights):
    """The loss of `evaluate`, from `predict` and the NumPy reference."""
    logits = to_numpy(model.predict(x, verbose=0))
    size = logits.shape[1:3]
    losses = np_pixel_losses(crop(target, size), logits)
    return (losses * crop(weights, size)).mean()


def test_unet_trains_with_weight_maps_in_fit():
    x, target, weights = tiny_problem()
    model = tiny_model()
    assert model.output_size(36) == 20  # labels are cropped by 8 px a side
    before = model.evaluate(
        x, target, sample_weight=weights, batch_size=2, verbose=0
    )
    # The weight maps reach the loss, cropped like the labels.
    assert before == pytest.approx(
        reference_fit_loss(model, x, target, weights), rel=1e-4
    )
    history = model.fit(
        x, target, sample_weight=weights, batch_size=2, epochs=6, verbose=0
    )
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0]
    after = model.evaluate(
        x, target, sample_weight=weights, batch_size=2, verbose=0
    )
    assert after < 0.7 * before


class WeightedBatches(keras.utils.PyDataset):
    def __init__(self, x, y, w, batch_size):
        super().__init__()
        self.x, self.y, self.w, self.batch_size = x, y, w, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        batch = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[batch], self.y[batch], self.w[batch]


def test_unet_trains_from_datasets_yielding_weights():
    import tensorflow as tf

    x, target, weights = tiny_problem()
    datasets = {
        "py_dataset": WeightedBatches(x, target, weights, batch_size=2),
        "tf_data": tf.data.Dataset.from_tensor_slices(
            (x, target, weights)
        ).batch(2),
    }
    model = tiny_model()
    expected = model.evaluate(
        x, target, sample_weight=weights, batch_size=2, verbose=0
    )
    for name, dataset in datasets.items():
        # The third element of each batch is used as the weight map.
        value = model.evaluate(dataset, verbose=0)
        assert value == pytest.approx(expected, rel=1e-5), name
    before = expected
    for name, dataset in datasets.items():
        history = model.fit(dataset, epochs=3, shuffle=False, verbose=0)
        losses = history.history["loss"]
        assert np.isfinite(losses).all() and losses[-1] < losses[0], name
    after = model.evaluate(dataset, verbose=0)
    assert after < 0.7 * before


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_softmax_model_and_data_formats(data_format):
    skip_if_channels_first_unsupported(data_format)
    x, target, weights = tiny_problem(count=2)
    if data_format == "channels_first":
        x = np.transpose(x, (0, 3, 1, 2))
    keras.utils.set_random_seed(0)
    model = keras_unet2015.UNet2015(
        depth=1,
        filters=4,
        dropout_rate=0.0,
        activation="softmax",
        data_format=data_format,
    )
    loss = WeightedPixelLoss(from_logits=False, data_format=data_format)
    model.compile(optimizer="sgd", loss=loss)
    value = model.evaluate(x, target, sample_weight=weights, verbose=0)
    probabilities = to_numpy(model.predict(x, verbose=0))
    if data_format == "channels_first":
        probabilities = np.transpose(probabilities, (0, 2, 3, 1))
    size = probabilities.shape[1:3]
    expected = (
        -np.log(
            np.take_along_axis(
                probabilities, crop(target, size)[..., None], axis=-1
            )[..., 0]
        )
        * crop(weights, size)
    ).mean()
    assert value == pytest.approx(expected, rel=1e-4)


def test_saved_model_keeps_the_loss(tmp_path):
    x, target, weights = tiny_problem(count=2)
    model = tiny_model()
    model.compile(
        optimizer="sgd",
        loss=WeightedPixelLoss(ignore_class=7, reduction="sum"),
    )
    expected = model.evaluate(x, target, sample_weight=weights, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.loss, WeightedPixelLoss)
    assert loaded.loss.get_config() == model.loss.get_config()
    value = loaded.evaluate(x, target, sample_weight=weights, verbose=0)
    assert value == pytest.approx(expected, rel=1e-5)
