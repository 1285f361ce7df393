import importlib.util
import math

import keras
import numpy as np
import pytest
from scipy import ndimage

import keras_unet2015
from keras_unet2015 import ElasticDeform
from keras_unet2015 import PaperAugmentation
from keras_unet2015.layers import RandomGrayValue
from tests.testing import assert_config_round_trip
from tests.testing import backend
from tests.testing import to_numpy

H, W = 48, 64
NO_GRAY = {
    "brightness_range": None,
    "contrast_range": None,
    "gamma_range": None,
}


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Resets what these tests change, without `clear_session` (slow)."""
    yield
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")


def blobs(shape, seed=0):
    """Smooth random binary masks (2-3% of pixels on a border, as real)."""
    noise = ndimage.gaussian_filter(
        np.random.default_rng(seed).standard_normal(shape),
        sigma=(0, 8, 8),
        mode="wrap",
    )
    return (noise > np.median(noise)).astype("uint8")


def transformation(batch, angles=0.0, flips=(1.0, 1.0), shifts=(0.0, 0.0)):
    """A hand-made transformation without elastic deformation."""
    return {
        "displacements": np.zeros((batch, 2, 3, 3), "float32"),
        "angles": np.broadcast_to(np.float32(angles), (batch,)),
        "flips": np.broadcast_to(np.float32(flips), (batch, 2)),
        "shifts": np.broadcast_to(np.float32(shifts), (batch, 2)),
    }


def assert_aligned(images, masks, threshold):
    agreement = np.mean((images > threshold) == (masks > 0))
    assert agreement >= 0.995, agreement


# === The geometry is what the docstring says ===


def test_rotation_by_90_degrees_is_rot90():
    rng = np.random.default_rng(0)
    images = rng.random((2, 40, 40, 1)).astype("float32")
    masks = rng.integers(0, 5, (2, 40, 40, 1)).astype("int32")
    weights = rng.random((2, 40, 40)).astype("float32")
    layer = PaperAugmentation(**NO_GRAY)
    out_images, out_masks, out_weights = layer.transform(
        (images, masks, weights), transformation(2, angles=math.pi / 2)
    )
    # Positive angles rotate the content counter-clockwise, as np.rot90.
    np.testing.assert_allclose(
        to_numpy(out_images), np.rot90(images, 1, axes=(1, 2)), atol=1e-4
    )
    np.testing.assert_array_equal(
        to_numpy(out_masks), np.rot90(masks, 1, axes=(1, 2))
    )
    np.testing.assert_allclose(
        to_numpy(out_weights), np.rot90(weights, 1, axes=(1, 2)), atol=1e-4
    )


def test_flips_and_shifts_follow_the_documented_formula():
    # Output pixel p reads the input at c + F (p - c) - s, mirrored.
    images = np.random.default_rng(0).random((3, H, W, 1)).astype("float32")
    layer = PaperAugmentation(**NO_GRAY)
    flips = np.array([[-1, 1], [1, -1], [-1, -1]], "float32")
    shifts = np.array([[2, -3], [0, 5], [-4, 0]], "float32")
    t = transformation(3)
    t["flips"], t["shifts"] = flips, shifts
    output = to_numpy(layer.transform(images, t))
    pad = 8
    for b in range(3):
        # Row i reads input row i - s (unflipped) or (H - 1 - i) - s
        # (flipped), i.e. row i + s of the flipped image.
        image = images[b, ..., 0]
        starts = []
        for axis in (0, 1):
            shift = int(shifts[b, axis])
            if flips[b, axis] < 0:
                image = np.flip(image, axis)
                starts.append(pad + shift)
            else:
                starts.append(pad - shift)
        # Mirror without repeating the edge: NumPy's "reflect".
        padded = np.pad(image, pad, mode="reflect")
        expected = padded[starts[0] : starts[0] + H, starts[1] : starts[1] + W]
        np.testing.assert_allclose(output[b, ..., 0], expected, atol=1e-5)


def test_geometry_matches_scipy_with_documented_coordinates():
    rng = np.random.default_rng(1)
    images = rng.random((2, H, W, 1)).astype("float32")
    masks = blobs((2, H, W))[..., None]
    layer = PaperAugmentation(**NO_GRAY, seed=2)
    t = layer.get_random_transformation(images)
    out_images, out_masks = (
        to_numpy(x) for x in layer.transform((images, masks), t)
    )
    t = {k: to_numpy(v).astype("float64") for k, v in t.items()}
    positions = np.meshgrid(
        np.linspace(0, 2, H), np.linspace(0, 2, W), indexing="ij"
    )
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    center = np.array([(H - 1) / 2, (W - 1) / 2])
    for b in range(2):
        # The elastic field: the cubic spline of the grid (SciPy).
        field = [
            ndimage.map_coordinates(g, positions, order=3, mode="mirror")
            for g in t["displacements"][b]
        ]
        u = np.stack([rows + field[0], cols + field[1]]) - center[:, None, None]
        u *= t["flips"][b][:, None, None]
        angle = t["angles"][b]
        rotation = np.array(
            [[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]]
        )
        source = (
            np.einsum("ij,jhw->ihw", rotation, u)
            + (center - t["shifts"][b])[:, None, None]
        )
        expected = ndimage.map_coordinates(
            images[b, ..., 0].astype("float64"), source, order=1, mode="mirror"
        )
        np.testing.assert_allclose(out_images[b, ..., 0], expected, atol=1e-4)
        expected_mask = ndimage.map_coordinates(
            masks[b, ..., 0], source, order=0, mode="mirror"
        )
        # float32 against float64 coordinates: a rare rounding tie may go
        # the other way.
        assert np.mean(out_masks[b, ..., 0] == expected_mask) > 0.999


def test_flips_are_independent_per_axis():
    draws = np.zeros((2000, 8, 8, 1), "float32")
    flips = to_numpy(
        PaperAugmentation(seed=3).get_random_transformation(draws)["flips"]
    )
    # All four combinations, each about a quarter of the time (Keras's
    # RandomFlip("horizontal_and_vertical") flips both axes or neither).
    combinations = flips[:, 0] * 2 + flips[:, 1]
    for value in (-3, -1, 1, 3):
        assert abs(np.mean(combinations == value) - 0.25) < 0.05
    horizontal = to_numpy(
        PaperAugmentation(
            flip_mode="horizontal", seed=3
        ).get_random_transformation(draws)["flips"]
    )
    np.testing.assert_array_equal(horizontal[:, 0], 1.0)
    assert np.mean(horizontal[:, 1] < 0) > 0.4


def test_parameters_lie_in_their_ranges():
    layer = PaperAugmentation(rotation_range=30.0, shift_range=0.25, seed=4)
    t = {
        k: to_numpy(v)
        for k, v in layer.get_random_transformation(
            np.zeros((2000, 40, 80, 1))
        ).items()
    }
    limit = math.radians(30.0)
    assert np.abs(t["angles"]).max() <= limit + 1e-6
    assert np.abs(t["angles"]).max() > 0.95 * limit
    assert np.abs(t["shifts"][:, 0]).max() <= 10.0 + 1e-5
    assert np.abs(t["shifts"][:, 1]).max() <= 20.0 + 1e-5
    assert np.abs(t["shifts"][:, 1]).max() > 19.0
    assert abs(t["displacements"].std() - 10.0) < 0.3
    for name in ("gamma", "contrast", "brightness"):
        assert t[name].shape == (2000,)


# === Alignment and what the gray values touch ===


def test_image_mask_and_weights_stay_aligned():
    masks = blobs((4, H, W))[..., None]
    images = masks.astype("float32") * 0.6 + 0.2
    weights = masks[..., 0].astype("float32") * 4.0 + 1.0
    layer = PaperAugmentation(**NO_GRAY, seed=5)
    out_images, out_masks, out_weights = (
        to_numpy(x) for x in layer((images, masks, weights))
    )
    assert np.mean(out_masks != masks) > 0.1  # rotated, shifted, deformed
    assert_aligned(out_images, out_masks, 0.5)
    assert_aligned(out_weights, out_masks[..., 0], 3.0)


def test_gray_values_change_images_only():
    masks = blobs((2, H, W))[..., None]
    images = masks.astype("float32") * 0.6 + 0.2
    weights = masks[..., 0].astype("float32") + 1.0
    with_gray = PaperAugmentation(seed=6)((images, masks, weights))
    without = PaperAugmentation(**NO_GRAY, seed=6)((images, masks, weights))
    # The same geometric draws: masks and weights are identical...
    np.testing.assert_array_equal(to_numpy(with_gray[1]), to_numpy(without[1]))
    np.testing.assert_allclose(
        to_numpy(with_gray[2]), to_numpy(without[2]), atol=1e-6
    )
    # ...only the image intensities differ.
    assert np.abs(to_numpy(with_gray[0]) - to_numpy(without[0])).max() > 1e-3


def test_keras_pipeline_of_our_layers_stays_aligned():
    # Keras's `Pipeline` passes the whole tuple from layer to layer, so a
    # composition of these layers keeps image, mask and weights together.
    masks = blobs((2, H, W))[..., None]
    images = masks.astype("float32") * 0.6 + 0.2
    weights = masks[..., 0].astype("float32") + 1.0
    pipeline = keras.layers.Pipeline(
        [ElasticDeform(seed=7), RandomGrayValue(seed=8)]
    )
    out_images, out_masks, out_weights = (
        to_numpy(x) for x in pipeline((images, masks, weights))
    )
    elastic_masks = to_numpy(ElasticDeform(seed=7)((images, masks))[1])
    np.testing.assert_array_equal(out_masks, elastic_masks)
    # Gray values are monotonic, so a per-image midpoint still separates.
    for b in range(2):
        threshold = 0.5 * (out_images[b].min() + out_images[b].max())
        assert_aligned(out_images[b], out_masks[b], threshold)
    assert_aligned(out_weights, out_masks[..., 0], 1.5)


# === Seeds, training flag, config ===


def test_seeds_and_training_flag():
    images = np.random.default_rng(0).random((2, H, W, 1)).astype("float32")
    first = to_numpy(PaperAugmentation(seed=9)(images))
    np.testing.assert_array_equal(
        first, to_numpy(PaperAugmentation(seed=9)(images))
    )
    assert (
        np.abs(first - to_numpy(PaperAugmentation(seed=10)(images))).max() > 0.1
    )
    np.testing.assert_array_equal(
        to_numpy(PaperAugmentation(seed=9)(images, training=False)), images
    )


def test_int_seed_gives_reproducible_independent_draws():
    # Data pipelines pass an int seed per sample to `get_random_transformation`.
    layer = PaperAugmentation(seed=14)
    data = np.zeros((2000, 8, 8, 1), "float32")
    first = layer.get_random_transformation(data, seed=5)
    again = layer.get_random_transformation(data, seed=5)
    other = layer.get_random_transformation(data, seed=6)
    for name in first:
        np.testing.assert_array_equal(
            to_numpy(first[name]), to_numpy(again[name])
        )
        assert np.any(to_numpy(first[name]) != to_numpy(other[name]))
    # Each draw has its own seed: angles, shifts and flips are unrelated.
    angles = to_numpy(first["angles"])
    for other_draw in (
        first["shifts"][:, 0],
        first["flips"][:, 0],
        first["gamma"],
    ):
        correlation = np.corrcoef(angles, to_numpy(other_draw))[0, 1]
        assert abs(correlation) < 0.1  # 4.5 standard errors


def test_config_round_trip():
    layer = PaperAugmentation(
        rotation_range=15.0,
        shift_range=0.0,
        flip_mode=None,
        grid_size=4,
        sigma=5.0,
        brightness_range=None,
        gamma_range=(0.5, 2.0),
        value_range=(0, 255),
        interpolation="nearest",
        fill_mode="reflect",
        seed=11,
    )
    clone = assert_config_round_trip(layer)
    assert clone.grid_size == (4, 4)
    assert clone.flip_mode is None
    images = np.random.default_rng(0).random((1, H, W, 1)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(layer(images * 255)), to_numpy(clone(images * 255)), atol=1e-3
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rotation_range": -1}, "rotation_range"),
        ({"shift_range": "0.1"}, "shift_range"),
        ({"flip_mode": "both"}, "flip_mode"),
        ({"sigma": -2.0}, "sigma"),
        ({"grid_size": (3,)}, "grid_size"),
        ({"gamma_range": (1.2, 0.8)}, "gamma_range"),
        ({"value_range": (0, 0)}, "value_range"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaperAugmentation(**kwargs)


# === tf.data and jit ===


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="tf.data needs TensorFlow",
)
def test_tf_data_pipeline():
    import tensorflow as tf

    masks = blobs((4, H, W))[..., None]
    images = masks.astype("float32") * 0.6 + 0.2
    weights = masks[..., 0].astype("float32") * 4.0 + 1.0
    dataset = (
        tf.data.Dataset.from_tensor_slices((images, masks, weights))
        .batch(2)
        .map(PaperAugmentation(**NO_GRAY, seed=12))
    )
    outputs = list(dataset)
    assert outputs[0][1].dtype == tf.uint8
    out_images = np.concatenate([o[0].numpy() for o in outputs])
    out_masks = np.concatenate([o[1].numpy() for o in outputs])
    out_weights = np.concatenate([o[2].numpy() for o in outputs])
    assert np.mean(out_masks != masks) > 0.1
    assert_aligned(out_images, out_masks, 0.5)
    assert_aligned(out_weights, out_masks[..., 0], 3.0)


@pytest.mark.skipif(backend() != "jax", reason="jax.jit")
def test_jax_jit_stateless_call():
    import jax

    masks = blobs((2, H, W))[..., None]
    images = masks.astype("float32") * 0.6 + 0.2
    layer = PaperAugmentation(**NO_GRAY, seed=13)
    state = [v.value for v in layer.non_trainable_variables]
    augment = jax.jit(
        lambda state, data: layer.stateless_call([], state, data, training=True)
    )
    (out_images, out_masks), state = augment(state, (images, masks))
    assert_aligned(np.asarray(out_images), np.asarray(out_masks), 0.5)
    (next_images, _), _ = augment(state, (images, masks))
    assert np.abs(np.asarray(next_images) - np.asarray(out_images)).max() > 0.1


def test_exported():
    assert keras_unet2015.PaperAugmentation is PaperAugmentation
    assert keras_unet2015.layers.PaperAugmentation is PaperAugmentation
