import importlib.util

import keras
import numpy as np
import pytest
from scipy import ndimage

import keras_unet2015
from keras_unet2015 import ElasticDeform
from tests.testing import assert_config_round_trip
from tests.testing import backend
from tests.testing import run_layer_test
from tests.testing import to_numpy

HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tf.data needs TensorFlow")

# Our "constant" is SciPy's "grid-constant" (the image is surrounded by the
# constant); SciPy's own "constant" interpolates towards it differently.
SCIPY_MODES = {
    "mirror": "mirror",
    "reflect": "reflect",
    "nearest": "nearest",
    "constant": "grid-constant",
}
ORDERS = {"nearest": 0, "bilinear": 1, "bicubic": 3}
# One image size for most tests: on JAX, eager calls compile once per shape.
H, W = 48, 64


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Resets what these tests change, without `clear_session` (slow)."""
    yield
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")


def blobs(shape, seed=0, num_labels=2, smoothness=8.0):
    """Smooth random label images: connected regions, as real masks.

    With the default smoothness, the share of pixels on a region border is
    about that of the ISBI labels (2-3%).
    """
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(
        rng.standard_normal(shape),
        sigma=(0,) + (smoothness,) * (len(shape) - 1),
        mode="wrap",
    )
    edges = np.quantile(noise, np.linspace(0, 1, num_labels + 1)[1:-1])
    return np.digitize(noise, edges).astype("uint8")


def scipy_warp(image, field, order, mode, cval=0.0):
    """`image[i + field[0], j + field[1]]` with SciPy.

    The coordinates are summed in float32, as the layer does: a coordinate
    within 1e-6 of a rounding tie must round the same way for order 0.
    """
    rows, cols = np.meshgrid(
        np.arange(image.shape[0], dtype="float32"),
        np.arange(image.shape[1], dtype="float32"),
        indexing="ij",
    )
    field = field.astype("float32")
    coordinates = np.stack([rows + field[0], cols + field[1]])
    return ndimage.map_coordinates(
        image.astype("float64") if order else image,
        coordinates.astype("float64"),
        order=order,
        mode=mode,
        cval=cval,
    )


def scipy_field(coarse, height, width):
    """Interpolating cubic spline of each coarse grid, mirror boundary."""
    grid_rows, grid_cols = coarse.shape[-2:]
    positions = np.meshgrid(
        np.linspace(0, grid_rows - 1, height),
        np.linspace(0, grid_cols - 1, width),
        indexing="ij",
    )
    return np.stack(
        [
            [
                ndimage.map_coordinates(
                    c.astype("float64"), positions, order=3, mode="mirror"
                )
                for c in sample
            ]
            for sample in coarse
        ]
    )


# === The per-pixel field: bicubic interpolation of the coarse grid ===


@pytest.mark.parametrize(
    "grid_size, height, width",
    [((3, 3), 37, 45), ((4, 5), 30, 64), ((2, 2), 16, 9), ((3, 3), 572, 572)],
)
def test_field_is_cubic_spline_of_grid_as_scipy(grid_size, height, width):
    layer = ElasticDeform(grid_size=grid_size, sigma=10.0, seed=1)
    coarse = to_numpy(
        layer.get_random_transformation(np.zeros((2, height, width, 1)))[
            "displacements"
        ]
    )
    assert coarse.shape == (2, 2) + grid_size
    field = to_numpy(layer.displacement_field(coarse, height, width))
    assert field.shape == (2, 2, height, width)
    np.testing.assert_allclose(
        field, scipy_field(coarse, height, width), atol=1e-4
    )
    # SciPy's zoom (corners to corners) computes the same spline.
    zoomed = ndimage.zoom(
        coarse[0, 1].astype("float64"),
        (height / grid_size[0], width / grid_size[1]),
        order=3,
        mode="mirror",
        grid_mode=False,
    )
    np.testing.assert_allclose(field[0, 1], zoomed, atol=1e-4)


def test_field_interpolates_control_points_and_is_smooth():
    # 3 control points on 21 pixels sit at pixels 0, 10 and 20.
    layer = ElasticDeform(seed=3)
    coarse = np.random.default_rng(0).normal(0, 10, (1, 2, 3, 3))
    field = to_numpy(layer.displacement_field(coarse, 21, 21))
    np.testing.assert_allclose(
        field[:, :, ::10, ::10], coarse, rtol=1e-5, atol=1e-4
    )
    # A cubic spline has a continuous first derivative: no kinks, so the
    # second differences stay small next to the displacements themselves.
    second_difference = np.diff(field, n=2, axis=-1)
    assert np.abs(second_difference).max() < 0.05 * np.abs(coarse).max()


def test_constant_grid_gives_constant_field():
    layer = ElasticDeform()
    coarse = np.zeros((1, 2, 3, 3))
    coarse[:, 0] = 2.5
    coarse[:, 1] = -4.0
    field = to_numpy(layer.displacement_field(coarse, 17, 23))
    np.testing.assert_allclose(field[0, 0], 2.5, atol=1e-5)
    np.testing.assert_allclose(field[0, 1], -4.0, atol=1e-5)


# === The warp equals SciPy with the same field ===


@pytest.mark.parametrize(
    "interpolation, fill_mode",
    [("bilinear", mode) for mode in SCIPY_MODES]
    + [("bicubic", mode) for mode in SCIPY_MODES]
    # Nearest-neighbour is checked in every case on the masks.
    + [("nearest", "mirror")],
)
def test_warp_matches_scipy_map_coordinates(interpolation, fill_mode):
    rng = np.random.default_rng(0)
    images = rng.random((2, H, W, 2)).astype("float32")
    masks = blobs((2, H, W), num_labels=4, smoothness=3.0)[..., None]
    weights = rng.random((2, H, W)).astype("float32") + 0.5
    layer = ElasticDeform(
        sigma=6.0,
        interpolation=interpolation,
        fill_mode=fill_mode,
        fill_value=0.25,
        seed=7,
    )
    transformation = layer.get_random_transformation(images)
    out_images, out_masks, out_weights = layer.transform(
        (images, masks, weights), transformation
    )
    field = to_numpy(
        layer.displacement_field(transformation["displacements"], H, W)
    )
    # The field pushes pixels across the border: the fill mode matters.
    assert np.abs(field).max() > 3.0
    mode = SCIPY_MODES[fill_mode]
    order = ORDERS[interpolation]
    for b in range(2):
        for c in range(2):
            expected = scipy_warp(
                images[b, ..., c], field[b], order, mode, 0.25
            )
            np.testing.assert_allclose(
                to_numpy(out_images)[b, ..., c], expected, atol=1e-4
            )
        expected_mask = scipy_warp(masks[b, ..., 0], field[b], 0, mode)
        np.testing.assert_array_equal(
            to_numpy(out_masks)[b, ..., 0], expected_mask
        )
        expected_weights = scipy_warp(weights[b], field[b], 1, mode)
        np.testing.assert_allclose(
            to_numpy(out_weights)[b], expected_weights, atol=1e-4
        )


@pytest.mark.skipif(
    importlib.util.find_spec("elasticdeform") is None,
    reason="the elasticdeform package is not installed",
)
def test_matches_elasticdeform_package():
    import elasticdeform

    rng = np.random.default_rng(1)
    image = rng.random((H, W)).astype("float32")
    mask = blobs((1, H, W), smoothness=3.0)[0]
    layer = ElasticDeform(seed=2)
    transformation = layer.get_random_transformation(image[None, ..., None])
    out_image, out_mask = layer.transform(
        (image[None, ..., None], mask[None, ..., None]), transformation
    )
    coarse = to_numpy(transformation["displacements"])[0].astype("float64")
    expected_image, expected_mask = elasticdeform.deform_grid(
        [image.astype("float64"), mask], coarse, order=[1, 0], mode="mirror"
    )
    np.testing.assert_allclose(
        to_numpy(out_image)[0, ..., 0], expected_image, atol=1e-4
    )
    agreement = np.mean(to_numpy(out_mask)[0, ..., 0] == expected_mask)
    assert agreement > 0.999


# === Images, masks and weight maps stay aligned ===


def assert_aligned(warped_image, warped_mask, threshold):
    agreement = np.mean((warped_image > threshold) == (warped_mask > 0))
    assert agreement >= 0.995, agreement


def test_image_mask_and_weights_aligned():
    masks = blobs((4, H, W))[..., None]
    images = masks.astype("float32") * 200.0
    weights = masks[..., 0].astype("float32") * 7.0
    layer = ElasticDeform(sigma=10.0, seed=4)
    out_images, out_masks, out_weights = (
        to_numpy(x) for x in layer((images, masks, weights))
    )
    # The deformation moved the content a lot...
    assert np.mean(out_masks != masks) > 0.03
    # ...and moved all three alike.
    assert_aligned(out_images, out_masks, 100.0)
    assert_aligned(out_weights, out_masks[..., 0], 3.5)
    # The check has teeth: a mask warped by another field fails it.
    other_masks = to_numpy(
        ElasticDeform(sigma=10.0, seed=5)((images, masks))[1]
    )
    assert np.mean((out_images > 100.0) == (other_masks > 0)) < 0.97


def test_alignment_on_real_nuclei_mask(shared_data):
    tifffile = pytest.importorskip("tifffile")
    instances = tifffile.imread(
        shared_data / "stardist-dsb2018-nuclei2d" / "mask2d.tif"
    )
    masks = (instances > 0).astype("uint8")[None, ..., None]
    images = masks.astype("float32") * 0.8 + 0.1
    out_images, out_masks = (
        to_numpy(x) for x in ElasticDeform(seed=5)((images, masks))
    )
    assert np.mean(out_masks != masks) > 0.02
    assert_aligned(out_images, out_masks, 0.5)


def test_alignment_on_isbi_membranes(shared_data):
    Image = pytest.importorskip("PIL.Image")
    path = shared_data / "isbi2012" / "train" / "labels" / "00.png"
    masks = (np.array(Image.open(path)) > 127).astype("uint8")[None, ..., None]
    images = masks.astype("float32")
    out_images, out_masks = (
        to_numpy(x) for x in ElasticDeform(seed=6)((images, masks))
    )
    agreement = np.mean((out_images > 0.5) == (out_masks > 0))
    # ISBI's thin membranes put 5% of the pixels on a label border, where
    # a bilinear image thresholded and a nearest-neighbour mask can
    # legitimately differ: SciPy itself, with the same interpolations,
    # agrees on 99.47% to 99.6% of this slice over 20 random fields. A
    # misaligned field scores about 75%.
    assert agreement >= 0.994, agreement


def test_masks_keep_labels_and_dtype():
    labels = np.array([0, 3, 7, 255], "uint8")
    masks = labels[blobs((2, H, W), num_labels=4)]
    images = np.random.default_rng(0).random((2, H, W, 1)).astype("float32")
    for dtype in ("uint8", "int32", "float32"):
        _, out = ElasticDeform(seed=6)((images, masks.astype(dtype)))
        out = to_numpy(out)
        assert out.dtype == np.dtype(dtype)
        assert set(np.unique(out)) <= set(labels.tolist())
        assert len(np.unique(out)) == 4


# === Randomness ===


def test_displacement_statistics_match_sigma():
    layer = ElasticDeform(sigma=10.0, seed=8)
    coarse = to_numpy(
        layer.get_random_transformation(np.zeros((2000, 8, 8, 1)))[
            "displacements"
        ]
    )
    values = coarse.reshape(-1)  # 2000 * 2 * 9 = 36,000 draws
    assert abs(values.mean()) < 0.25  # 4.7 standard errors
    assert abs(values.std() - 10.0) < 0.18  # 4.8 standard errors
    # Row and column displacements are independent (not dx == dy).
    correlation = np.corrcoef(coarse[:, 0].ravel(), coarse[:, 1].ravel())
    assert abs(correlation[0, 1]) < 0.04  # 5.4 standard errors


def test_same_seed_same_fields_and_different_otherwise():
    images = np.random.default_rng(0).random((3, H, W, 1)).astype("float32")
    images[1] = images[0]  # identical samples still get their own fields

    def run(seed):
        return to_numpy(ElasticDeform(seed=seed)(images))

    first = run(11)
    np.testing.assert_array_equal(first, run(11))
    assert np.abs(first - run(12)).max() > 0.1
    assert np.abs(first[0] - first[1]).max() > 0.1
    layer = ElasticDeform(seed=11)
    assert np.abs(to_numpy(layer(images)) - to_numpy(layer(images))).max() > 0.1


def test_training_false_returns_inputs_unchanged():
    images = np.random.default_rng(0).random((2, H, W, 1)).astype("float32")
    masks = blobs((2, H, W))[..., None]
    layer = ElasticDeform(seed=0)
    out_images, out_masks = layer((images, masks), training=False)
    np.testing.assert_array_equal(to_numpy(out_images), images)
    np.testing.assert_array_equal(to_numpy(out_masks), masks)
    assert layer.get_random_transformation(images, training=False) is None


# === Structures, shapes, formats ===


def test_dict_tuple_and_tensor_inputs_get_the_same_field():
    rng = np.random.default_rng(0)
    images = rng.random((2, H, W, 1)).astype("float32")
    masks = blobs((2, H, W))[..., None]
    weights = rng.random((2, H, W)).astype("float32")
    out_tuple = ElasticDeform(seed=9)((images, masks, weights))
    out_dict = ElasticDeform(seed=9)(
        {
            "images": images,
            "segmentation_masks": masks,
            "sample_weights": weights,
            "labels": np.array([1, 0]),
        }
    )
    out_tensor = ElasticDeform(seed=9)(images)
    np.testing.assert_array_equal(
        to_numpy(out_tuple[0]), to_numpy(out_dict["images"])
    )
    np.testing.assert_array_equal(to_numpy(out_tuple[0]), to_numpy(out_tensor))
    np.testing.assert_array_equal(
        to_numpy(out_tuple[1]), to_numpy(out_dict["segmentation_masks"])
    )
    np.testing.assert_array_equal(
        to_numpy(out_tuple[2]), to_numpy(out_dict["sample_weights"])
    )
    np.testing.assert_array_equal(to_numpy(out_dict["labels"]), [1, 0])
    assert tuple(out_tuple[2].shape) == (2, H, W)


def test_unbatched_input_equals_batch_of_one():
    images = np.random.default_rng(0).random((H, W, 1)).astype("float32")
    masks = blobs((1, H, W))[0]  # (rows, cols): no channel axis
    out_image, out_mask = ElasticDeform(seed=10)((images, masks))
    batched_image, batched_mask = ElasticDeform(seed=10)(
        (images[None], masks[None])
    )
    assert tuple(out_image.shape) == (H, W, 1)
    assert tuple(out_mask.shape) == (H, W)
    np.testing.assert_array_equal(
        to_numpy(out_image), to_numpy(batched_image)[0]
    )
    np.testing.assert_array_equal(to_numpy(out_mask), to_numpy(batched_mask)[0])


def test_channels_first_equals_channels_last():
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, H, W)).astype("float32")
    masks = blobs((2, H, W))[:, None]
    first_images, first_masks = ElasticDeform(
        seed=12, data_format="channels_first"
    )((images, masks))
    last_images, last_masks = ElasticDeform(
        seed=12, data_format="channels_last"
    )((images.transpose(0, 2, 3, 1), masks.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(
        to_numpy(first_images),
        to_numpy(last_images).transpose(0, 3, 1, 2),
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        to_numpy(first_masks), to_numpy(last_masks).transpose(0, 3, 1, 2)
    )


def test_layer_contract_and_mixed_precision():
    images = np.random.default_rng(0).random((2, H, W, 1)).astype("float32")
    run_layer_test(
        ElasticDeform,
        {"seed": 1},
        images,
        expected_output_shape=(2, H, W, 1),
        expected_num_trainable_weights=0,
    )
    masks = blobs((2, H, W))[..., None]
    out_images, out_masks = ElasticDeform(seed=1, dtype="mixed_float16")(
        (images, masks)
    )
    assert keras.backend.standardize_dtype(out_images.dtype) == "float16"
    assert keras.backend.standardize_dtype(out_masks.dtype) == "uint8"


def test_config_round_trip():
    layer = ElasticDeform(
        grid_size=(4, 5),
        sigma=7.5,
        interpolation="nearest",
        fill_mode="constant",
        fill_value=1.0,
        data_format="channels_first",
        seed=3,
    )
    clone = assert_config_round_trip(layer)
    assert clone.grid_size == (4, 5)
    assert clone.sigma == 7.5
    assert clone.seed == 3
    images = np.random.default_rng(0).random((1, 1, H, W)).astype("float32")
    np.testing.assert_array_equal(
        to_numpy(layer(images)), to_numpy(clone(images))
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"grid_size": 1}, "grid_size"),
        ({"grid_size": (3, 3, 3)}, "grid_size"),
        ({"sigma": -1.0}, "sigma"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"fill_mode": "wrap"}, "fill_mode"),
        ({"fill_value": "zero"}, "fill_value"),
        ({"seed": 1.5}, "seed"),
        ({"data_format": "NHWC"}, "data_format"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ElasticDeform(**kwargs)


def test_invalid_inputs_raise():
    layer = ElasticDeform()
    images = np.zeros((1, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="masks"):  # would stay unwarped
        layer({"images": images, "masks": images})
    with pytest.raises(ValueError, match="tuple"):
        layer((images, images, images, images))
    with pytest.raises(ValueError, match="rows and columns"):
        layer((images, np.zeros((1, 8, 9, 1), "int32")))
    with pytest.raises(ValueError, match="rank"):
        layer(np.zeros((8, 8), "float32"))


def test_symbolic_call_in_functional_model():
    inputs = keras.Input((H, W, 1))
    outputs = ElasticDeform(seed=0)(inputs)
    assert tuple(outputs.shape) == (None, H, W, 1)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).random((2, H, W, 1)).astype("float32")
    # Inference mode: a model's predict runs with training=False.
    np.testing.assert_array_equal(
        to_numpy(model.predict(images, verbose=0)), images
    )
    assert np.abs(to_numpy(model(images, training=True)) - images).max() > 0.05


# === Where users put it: tf.data, jitted train steps ===


def test_subclasses_keras_data_layer():
    # `ElasticDeform` relies on this private Keras base class (pinned range
    # in pyproject.toml) for tf.data support under every backend.
    from keras.src.layers.preprocessing.data_layer import DataLayer

    assert issubclass(ElasticDeform, DataLayer)


@needs_tf
@pytest.mark.parametrize("structure", ["tuple", "dict", "unbatched"])
def test_tf_data_pipeline(structure):
    import tensorflow as tf

    masks = blobs((4, H, W))[..., None]
    images = masks.astype("float32") * 0.8 + 0.1
    weights = masks[..., 0].astype("float32") * 5.0 + 1.0
    layer = ElasticDeform(seed=13)
    if structure == "dict":
        dataset = tf.data.Dataset.from_tensor_slices(
            {"images": images, "segmentation_masks": masks}
        ).batch(2)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, masks, weights))
        if structure == "tuple":
            dataset = dataset.batch(2)
    dataset = dataset.map(layer)
    outputs = list(dataset)
    assert len(outputs) == (4 if structure == "unbatched" else 2)
    if structure == "dict":
        outputs = [(o["images"], o["segmentation_masks"]) for o in outputs]
    for output in outputs:
        assert all(isinstance(x, tf.Tensor) for x in output)
        assert output[1].dtype == tf.uint8  # labels came back as labels
    out_images = np.concatenate(
        [np.reshape(o[0].numpy(), (-1, H, W)) for o in outputs]
    )
    out_masks = np.concatenate(
        [np.reshape(o[1].numpy(), (-1, H, W)) for o in outputs]
    )
    assert np.mean(out_masks != masks[..., 0]) > 0.02  # deformed
    assert_aligned(out_images, out_masks, 0.5)
    assert set(np.unique(out_masks)) == {0, 1}
    if structure != "dict":
        out_weights = np.concatenate(
            [np.reshape(o[2].numpy(), (-1, H, W)) for o in outputs]
        )
        assert_aligned(out_weights, out_masks, 3.5)


@needs_tf
def test_tf_data_with_unknown_image_sizes():
    import tensorflow as tf

    def generate():
        for shape in ((56, 40), (40, 72)):
            mask = blobs((1,) + shape)[0][..., None]
            yield mask.astype("float32") * 0.8 + 0.1, mask

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, None, 1), tf.float32),
            tf.TensorSpec((None, None, 1), tf.uint8),
        ),
    ).map(ElasticDeform(interpolation="bicubic", seed=14))
    outputs = [(image.numpy(), mask.numpy()) for image, mask in dataset]
    assert [o[0].shape for o in outputs] == [(56, 40, 1), (40, 72, 1)]
    assert_aligned(
        np.concatenate([o[0].ravel() for o in outputs]),
        np.concatenate([o[1].ravel() for o in outputs]),
        0.5,
    )


@pytest.mark.skipif(backend() != "jax", reason="jax.jit")
def test_jax_jit_stateless_call():
    import jax

    masks = blobs((2, H, W))[..., None]
    images = masks.astype("float32")
    layer = ElasticDeform(seed=15)
    state = [v.value for v in layer.non_trainable_variables]

    @jax.jit
    def augment(state, data):
        return layer.stateless_call([], state, data, training=True)

    (out_images, out_masks), new_state = augment(state, (images, masks))
    # Same as an eager call from the same state...
    (eager_images, _), _ = layer.stateless_call(
        [], state, (images, masks), training=True
    )
    np.testing.assert_allclose(out_images, eager_images, atol=1e-4)
    assert_aligned(np.asarray(out_images), np.asarray(out_masks), 0.5)
    # ...and the returned state draws a new field next time.
    (next_images, _), _ = augment(new_state, (images, masks))
    assert np.abs(np.asarray(next_images) - np.asarray(out_images)).max() > 0.5


def test_inside_a_model_train_step():
    # Jitted on JAX (and TensorFlow), an eager train step on PyTorch.
    inputs = keras.Input((16, 16, 1))
    x = ElasticDeform(seed=16)(inputs)
    outputs = keras.layers.Conv2D(2, 3, padding="same")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    images = rng.random((4, 16, 16, 1)).astype("float32")
    labels = blobs((4, 16, 16))
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(images, labels, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(w) for w in model.trainable_weights]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before))


def test_model_with_layer_saves_and_loads(tmp_path):
    inputs = keras.Input((H, W, 1))
    x = ElasticDeform(grid_size=(4, 3), sigma=6.0, seed=17)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(x))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.layers[1]
    assert isinstance(layer, ElasticDeform)
    assert (layer.grid_size, layer.sigma, layer.seed) == ((4, 3), 6.0, 17)
    images = np.random.default_rng(0).random((2, H, W, 1)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(loaded(images)), to_numpy(model(images)), atol=1e-6
    )


def test_exported_from_package():
    assert keras_unet2015.ElasticDeform is ElasticDeform
    assert keras_unet2015.layers.ElasticDeform is ElasticDeform
