"""The loss, the augmentation and the predictor with models of other packages.

`docs/how-to/other_models.md` shows these recipes; the tests keep them
true. keras-cv is optional (the `keras-cv` extra): its tests are skipped
when it is not installed.
"""

import keras
import numpy as np
import pytest
from keras import layers

import keras_unet2015
from tests.testing import assert_allclose
from tests.testing import backend
from tests.testing import to_numpy

# A same-padding encoder-decoder of depth 2 (two 2x2 poolings). Its output
# pixels read at most 23 px to one side: 20 px from its ten 3x3
# convolutions at three resolutions (1 + 1 + 2 + 2 + 4 + 4 + 2 + 2 + 1 + 1)
# and up to 3 px more from the pooling and upsampling phases (measured by
# `test_plain_model_reach`). The predictor's margin must cover that reach
# and be a multiple of 2**depth: 24 px.
PLAIN_DEPTH = 2
PLAIN_REACH = 23
PLAIN_MARGIN = 24


class PredictorAdapter:
    """What `OverlapTilePredictor` needs to know about a non-U-Net model."""

    padding = "same"
    data_format = "channels_last"

    def __init__(self, model, depth, num_classes, input_channels, activation):
        self.model = model
        self.depth = depth
        self.num_classes = num_classes
        self.input_channels = input_channels
        self.activation = activation

    def predict_on_batch(self, x):
        return self.model.predict_on_batch(x)


def plain_segmentation_model(filters=4, num_classes=2, input_channels=1):
    """A small U-Net-like Keras functional model with same padding."""

    def block(x, width):
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        return layers.Conv2D(width, 3, padding="same", activation="relu")(x)

    inputs = keras.Input((None, None, input_channels))
    c1 = block(inputs, filters)
    c2 = block(layers.MaxPooling2D(2)(c1), 2 * filters)
    bottom = block(layers.MaxPooling2D(2)(c2), 4 * filters)
    u2 = layers.Concatenate()([layers.UpSampling2D(2)(bottom), c2])
    u2 = block(u2, 2 * filters)
    u1 = layers.Concatenate()([layers.UpSampling2D(2)(u2), c1])
    u1 = block(u1, filters)
    logits = layers.Conv2D(num_classes, 1)(u1)
    return keras.Model(inputs, logits)


def _softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)


def _mirrored_pass(model, image, margin, unit, softmax=True):
    """One pass over the image mirrored by `margin`, cropped back."""
    height, width = image.shape
    padded_h = -(-(height + 2 * margin) // unit) * unit
    padded_w = -(-(width + 2 * margin) // unit) * unit
    padded = np.pad(
        image,
        (
            (margin, padded_h - height - margin),
            (margin, padded_w - width - margin),
        ),
        mode="reflect",
    )
    out = to_numpy(model.predict_on_batch(padded[None, :, :, None]))[0]
    out = _softmax(out) if softmax else out
    return out[margin : margin + height, margin : margin + width]


def _weighted_cross_entropy(probabilities, labels, weights):
    """Mean over pixels of `-w * log p[label]`, in NumPy."""
    picked = np.take_along_axis(probabilities, labels[..., None], -1)[..., 0]
    return float(np.mean(-weights * np.log(picked)))


def _touching_cells_batch(num_images=2, size=64):
    images, labels, instances = keras_unet2015.datasets.make_touching_cells(
        num_images, size, cell_radius=8, seed=3
    )
    targets, weights = keras_unet2015.training.prepare_targets(
        instances, label_mode="instances"
    )
    return (
        images[..., None].astype("float32"),
        np.stack(targets).astype("int32"),
        np.stack(weights).astype("float32"),
    )


def test_plain_model_reach():
    keras.utils.set_random_seed(0)
    model = plain_segmentation_model()
    image = np.random.default_rng(0).random((96, 96), "float32")
    # One changed pixel per pooling phase (offsets 0..3 mod 4), all in one
    # batch with the unchanged image first.
    positions = (40, 41, 42, 43)
    batch = np.stack([image] * (len(positions) + 1))[..., None]
    for index, position in enumerate(positions, start=1):
        batch[index, position, position, 0] += 10.0
    outputs = to_numpy(model.predict_on_batch(batch))
    reach = 0
    for index, position in enumerate(positions, start=1):
        diff = np.abs(outputs[index] - outputs[0]).max(-1)
        rows, cols = np.nonzero(diff > 0)
        reach = max(
            reach,
            position - rows.min(),
            rows.max() - position,
            position - cols.min(),
            cols.max() - position,
        )
    # The receptive field is the one the margin is derived from: the margin
    # covers it and is the smallest multiple of 2**depth that does.
    assert reach == PLAIN_REACH
    assert PLAIN_MARGIN == -(-reach // 2**PLAIN_DEPTH) * 2**PLAIN_DEPTH


def test_plain_model_trains_with_loss_and_paper_augmentation():
    keras.utils.set_random_seed(1)
    model = plain_segmentation_model()
    images, targets, weights = _touching_cells_batch()
    augment = keras_unet2015.PaperAugmentation(seed=4)
    aug_images, aug_targets, aug_weights = (
        to_numpy(a) for a in augment((images, targets, weights))
    )
    # The augmentation warps image, labels and weights together: labels
    # stay class indices and weights stay in the range of the weight maps.
    assert aug_images.shape == images.shape
    assert set(np.unique(aug_targets)) <= {0, 1}
    assert aug_weights.min() >= weights.min() - 1e-4
    assert aug_weights.max() <= weights.max() + 1e-4
    assert not np.allclose(aug_images, images)

    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.99),
        loss=keras_unet2015.WeightedPixelLoss(from_logits=True),
    )
    probabilities = _softmax(to_numpy(model.predict_on_batch(aug_images)))
    expected = _weighted_cross_entropy(
        probabilities, aug_targets.astype("int64"), aug_weights
    )
    loss = model.evaluate(
        aug_images,
        aug_targets.astype("int32"),
        sample_weight=aug_weights,
        verbose=0,
    )
    assert loss == pytest.approx(expected, rel=1e-4)

    before = [to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(
        aug_images,
        aug_targets.astype("int32"),
        sample_weight=aug_weights,
        epochs=1,
        verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(w) for w in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("tile_size", [80, (64, 96)])
def test_plain_model_tiles_equal_one_mirrored_pass(tile_size):
    keras.utils.set_random_seed(2)
    model = plain_segmentation_model()
    adapter = PredictorAdapter(
        model, PLAIN_DEPTH, 2, input_channels=1, activation=None
    )
    predictor = keras_unet2015.OverlapTilePredictor(
        adapter,
        tile_size=tile_size,
        margin=PLAIN_MARGIN,
        batch_size=8,
        verbose=0,
    )
    image = np.random.default_rng(1).random((100, 130), "float32")
    grid = predictor.tile_grid(100, 130)
    assert len(grid.rows) * len(grid.cols) > 1  # really tiled
    tiled = predictor.predict(image)
    reference = _mirrored_pass(
        model, image, PLAIN_MARGIN, 2**PLAIN_DEPTH, softmax=True
    )
    assert tiled.shape == (100, 130, 2)
    assert_allclose(tiled, reference, atol=1e-5)

    # Away from the border (margin px) it is also a plain pass of the
    # model over the image, whose zero padding only reaches the border.
    crop = image[:96, :128]
    plain = _softmax(to_numpy(model.predict_on_batch(crop[None, ..., None])))
    tiled_crop = predictor.predict(crop)
    m = PLAIN_MARGIN
    assert_allclose(tiled_crop[m:-m, m:-m], plain[0, m:-m, m:-m], atol=1e-5)


def test_plain_model_too_small_margin_shows_seams():
    # Control: without a margin the zero padding of every tile border
    # reaches into the kept output, and the tiles disagree with one pass.
    keras.utils.set_random_seed(2)
    model = plain_segmentation_model()
    adapter = PredictorAdapter(
        model, PLAIN_DEPTH, 2, input_channels=1, activation=None
    )
    predictor = keras_unet2015.OverlapTilePredictor(
        adapter, tile_size=32, margin=0, batch_size=9, verbose=0
    )
    image = np.random.default_rng(1).random((96, 96), "float32")
    tiled = predictor.predict(image)
    plain = _softmax(to_numpy(model.predict_on_batch(image[None, ..., None])))
    assert np.abs(tiled - plain[0]).max() > 1e-3


# === keras-cv DeepLabV3Plus (optional extra) ===

# keras-cv's DeepLabV3Plus takes the backbone's stride-4 (P2) and stride-32
# (P5) features: input sizes must be multiples of 32.
DEEPLAB_DEPTH = 5


def _deeplab(keras_cv):
    """A small DeepLabV3Plus built from a config, without any download."""
    backbone = keras_cv.models.ResNetV2Backbone(
        stackwise_filters=[8, 8, 16, 16],
        stackwise_blocks=[2, 2, 2, 2],
        stackwise_strides=[1, 2, 2, 2],
        block_type="block",
        include_rescaling=False,
        input_shape=(None, None, 1),
    )
    pyramid = keras_cv.layers.SpatialPyramidPooling(
        dilation_rates=[6, 12, 18], num_channels=16
    )
    return keras_cv.models.DeepLabV3Plus(
        num_classes=2,
        backbone=backbone,
        spatial_pyramid_pooling=pyramid,
        projection_filters=8,
    )


@pytest.fixture
def keras_cv():
    module = pytest.importorskip(
        "keras_cv", reason="keras-cv is not installed (extra `keras-cv`)"
    )
    if backend() == "jax":
        pytest.skip(
            "keras-cv's DeepLabV3Plus runs on JAX, but compiling its forward "
            "and training steps took 85 s on the development CPU; it is "
            "tested on TensorFlow (keras-cv's own backend) and PyTorch."
        )
    return module


# Keras warns that the backbone's unused final normalization gets no
# gradient (DeepLabV3Plus reads the features before it).
@pytest.mark.filterwarnings("ignore:Gradients do not exist:UserWarning")
def test_deeplab_v3_plus_with_weighted_loss_and_predictor(keras_cv):
    keras.utils.set_random_seed(5)
    model = _deeplab(keras_cv)
    images, targets, weights = _touching_cells_batch(num_images=2, size=64)

    probabilities = to_numpy(model.predict_on_batch(images))
    assert probabilities.shape == (2, 64, 64, 2)
    assert_allclose(probabilities.sum(-1), np.ones((2, 64, 64)), atol=1e-5)

    # DeepLabV3Plus ends with a softmax: the loss takes probabilities.
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.99),
        loss=keras_unet2015.WeightedPixelLoss(from_logits=False),
    )
    expected = _weighted_cross_entropy(
        probabilities, targets.astype("int64"), weights
    )
    loss = model.evaluate(images, targets, sample_weight=weights, verbose=0)
    assert loss == pytest.approx(expected, rel=1e-4)
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(
        images, targets, sample_weight=weights, epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(w) for w in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))

    adapter = PredictorAdapter(
        model, DEEPLAB_DEPTH, 2, input_channels=1, activation="softmax"
    )
    predictor = keras_unet2015.OverlapTilePredictor(
        adapter, tile_size=96, margin=16, verbose=0
    )
    image = np.random.default_rng(2).random((100, 150), "float32")
    grid = predictor.tile_grid(100, 150)
    assert grid.tile_shape == (96, 96)
    assert len(grid.rows) == 2 and len(grid.cols) == 3
    result = predictor.predict(image)
    assert result.shape == (100, 150, 2)
    assert_allclose(result.sum(-1), np.ones((100, 150)), atol=1e-5)
    # DeepLab's image pooling branch sees the whole tile, so tiles are not
    # exact against one pass; each output pixel is its tile's prediction
    # on the mirrored image, the tile's margin cut away.
    row, col = grid.rows[1], grid.cols[2]
    window = predictor.read_mirrored(image, (row, row + 96), (col, col + 96))
    own = to_numpy(model.predict_on_batch(window[None, ..., None]))[0]
    top, left = row + 16, col + 16
    assert_allclose(
        result[top:, left:],
        own[16 : 16 + 100 - top, 16 : 16 + 150 - left],
        atol=1e-5,
    )
