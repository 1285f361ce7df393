"""Tests of `OverlapTilePredictor`.

The reference for valid padding is one pass of the model over the whole
mirrored image: the image mirrored by `context_margin` on each side, plus
extra mirrored rows and columns at the bottom and right up to the next valid
input size, cropped to the image. Tiny models (depth 1-2, 2-4 filters) keep
every test fast.
"""

import types

import keras
import numpy as np
import pytest

import keras_unet2015
from keras_unet2015 import sizes
from keras_unet2015.inference.overlap_tile_predictor import OverlapTilePredictor
from tests.testing import skip_if_channels_first_unsupported
from tests.testing import to_numpy


def make_model(
    depth=1,
    input_channels=1,
    num_classes=3,
    filters=4,
    padding="valid",
    activation=None,
    data_format="channels_last",
    fresh=False,
):
    """A tiny `UNet2015` without dropout, random (seeded) weights.

    Models are built once per configuration and shared by the tests that
    only read them (building is the slowest part of these tests); a test
    that changes weights asks for a `fresh` one.
    """
    key = (
        depth,
        input_channels,
        num_classes,
        filters,
        padding,
        activation,
        data_format,
    )
    if fresh or key not in _MODELS:
        keras.utils.set_random_seed(0)
        model = keras_unet2015.UNet2015(
            num_classes=num_classes,
            input_channels=input_channels,
            depth=depth,
            filters=filters,
            dropout_rate=0.0,
            padding=padding,
            activation=activation,
            data_format=data_format,
        )
        if fresh:
            return model
        _MODELS[key] = model
    return _MODELS[key]


_MODELS = {}


def attributes_only(depth=4, padding="valid", num_classes=2, filters=64):
    """The attributes the predictor reads, without building a network.

    Enough for everything decided before the first forward pass: tile
    sizes, grids and argument checks.
    """
    return types.SimpleNamespace(
        depth=depth,
        filters=filters,
        padding=padding,
        activation=None,
        data_format="channels_last",
        input_channels=1,
        num_classes=num_classes,
    )


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def random_image(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def whole_pass(model, image, margin=None):
    """One pass over the whole mirrored image `(n, h, w, c)`, cropped.

    Valid padding: mirror by `context_margin` plus bottom/right up to the
    next valid size. Same padding: mirror by `margin` plus bottom/right up
    to a multiple of `2**depth`.
    """
    n, h, w, _ = image.shape
    if model.padding == "valid":
        margin = model.context_margin
        hp = sizes.input_size_for_output(h, model.depth)
        wp = sizes.input_size_for_output(w, model.depth)
    else:
        unit = 2**model.depth
        hp = -(-(h + 2 * margin) // unit) * unit
        wp = -(-(w + 2 * margin) // unit) * unit
    padded = np.pad(
        image,
        ((0, 0), (margin, hp - h - margin), (margin, wp - w - margin), (0, 0)),
        mode="reflect",
    )
    y = to_numpy(model.predict_on_batch(padded)).astype("float64")
    if model.activation is None:
        y = softmax(y)
    if model.padding == "valid":
        return y[:, :h, :w]
    return y[:, margin : margin + h, margin : margin + w]


def tiles_of(model, tile):
    """All valid tile sizes from the smallest usable one up to `tile`."""
    smallest = sizes.input_size_for_output(2**model.depth, model.depth)
    return sizes.valid_input_sizes(smallest, tile + 1, model.depth)


# === Mirroring ===


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_read_mirrored_equals_numpy_reflect_pad_beyond_image(size):
    model = make_model(depth=1)
    predictor = OverlapTilePredictor(model, tile_size=18, verbose=0)
    image = random_image((size, size + 2))
    # Margins up to four times the image: repeated reflection.
    for before, after in [(0, 0), (1, 2), (size, 3), (4 * size + 3, 7)]:
        expected = np.pad(
            image, ((before, after), (after, before)), mode="reflect"
        )
        actual = predictor.read_mirrored(
            image,
            rows=(-before, size + after),
            cols=(-after, size + 2 + before),
        )
        np.testing.assert_array_equal(actual, expected)


def test_read_mirrored_keeps_layout_of_batches_and_channels():
    model = make_model(depth=1, input_channels=2)
    predictor = OverlapTilePredictor(model, tile_size=18, verbose=0)
    batch = random_image((2, 4, 5, 2))
    expected = np.pad(batch, ((0, 0), (9, 1), (2, 11), (0, 0)), "reflect")
    actual = predictor.read_mirrored(batch, rows=(-9, 5), cols=(-2, 16))
    np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(
        predictor.read_mirrored(batch[0], rows=(-9, 5), cols=(-2, 16)),
        expected[0],
    )


def test_prediction_of_image_smaller_than_margin_uses_reflection():
    # A 3x5 image with a 20 px margin (depth 2): the tile is mostly
    # repeated reflections; the whole-pass reference uses numpy.pad.
    model = make_model(depth=2)
    image = random_image((3, 5))
    actual = OverlapTilePredictor(model, verbose=0).predict(image)
    expected = whole_pass(model, image[None, :, :, None])[0]
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert actual.shape == (3, 5, 3)


# === Seams: tiled == whole mirrored pass ===


def integer_model(depth, seed):
    """A model whose arithmetic is exact in float32 for small integers.

    Kernels in {-1, 0, 1} (the head's divided by 64, still exact) and zero
    biases: every sum is a small dyadic number, so any order of summation,
    and so any convolution algorithm, gives the same bits.
    """
    model = make_model(depth=depth, input_channels=2, fresh=True)
    rng = np.random.default_rng(seed)
    weights = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) == 1:
            weights.append(np.zeros(shape, "float32"))
            continue
        kernel = rng.choice([-1.0, 0.0, 1.0], size=shape, p=[0.3, 0.3, 0.4])
        if "head" in variable.path:
            kernel = kernel / 64
        weights.append(kernel.astype("float32"))
    model.set_weights(weights)
    return model


@pytest.mark.parametrize("depth", [1, 2])
def test_seams_are_bit_exact_with_exact_arithmetic(depth):
    model = integer_model(depth, seed=depth)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 3, size=(37, 54, 2)).astype("float32")
    m = model.context_margin
    hp = sizes.input_size_for_output(37, depth)
    wp = sizes.input_size_for_output(54, depth)
    padded = np.pad(
        image, ((m, hp - 37 - m), (m, wp - 54 - m), (0, 0)), "reflect"
    )
    logits = to_numpy(model.predict_on_batch(padded[None]))[0, :37, :54]
    # The test is only meaningful if the network does not output a constant.
    assert np.unique(logits).size > 100
    assert np.array_equal(logits, np.round(logits * 64) / 64)
    expected = softmax(logits)
    for tile in tiles_of(model, 100)[::4][:3]:
        predictor = OverlapTilePredictor(model, tile_size=tile, verbose=0)
        grid = predictor.tile_grid(37, 54)
        actual = predictor.predict(image)
        np.testing.assert_array_equal(
            actual, expected, err_msg=f"tile {tile}, grid {grid}"
        )


@pytest.mark.parametrize(
    "depth, tile, shape, activation",
    [
        (1, 18, (1, 37, 29, 1), None),  # smallest tile: output 2 px
        (1, 30, (1, 5, 3, 1), "softmax"),  # image smaller than a tile
        (1, 42, (2, 75, 60, 2), None),  # batch, 2 channels
        (2, 44, (1, 31, 57, 1), "softmax"),  # smallest tile at depth 2
        (2, 56, (3, 23, 64, 2), None),
        (2, 72, (1, 101, 47, 1), None),  # odd, non-square, 3x1 tiles
    ],
)
def test_tiled_prediction_equals_whole_mirrored_pass(
    depth, tile, shape, activation
):
    channels = shape[-1]
    model = make_model(
        depth=depth,
        input_channels=channels,
        num_classes=3,
        filters=4,
        activation=activation,
    )
    image = random_image(shape)
    predictor = OverlapTilePredictor(model, tile_size=tile, verbose=0)
    actual = predictor.predict(image)
    expected = whole_pass(model, image)
    assert actual.shape == shape[:3] + (3,)
    assert actual.dtype == np.float32
    # Float rounding only: the measured maximum is below 4e-6 on every
    # backend (different convolution algorithms for different sizes).
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
    # The same for the layouts without batch or channel axis.
    if channels == 1:
        np.testing.assert_allclose(
            predictor.predict(image[..., 0]), actual, atol=1e-6, rtol=0
        )
        np.testing.assert_allclose(
            predictor.predict(image[0, ..., 0]), actual[0], atol=1e-6
        )
    else:
        np.testing.assert_allclose(
            predictor.predict(image[0]), actual[0], atol=1e-6, rtol=0
        )


def test_misaligned_tile_differs_from_whole_pass():
    # Control for the seam tests: a tile that starts 2 px (not a multiple
    # of 2**depth = 4) into the mirrored image gives a clearly different
    # output, so a tolerance of 1e-5 does detect misalignment.
    model = make_model(depth=2)
    image = random_image((1, 60, 60, 1))
    m = model.context_margin
    padded = np.pad(
        image, ((0, 0), (m, m + 40), (m, m + 40), (0, 0)), "reflect"
    )
    tile = 68
    whole = softmax(to_numpy(model.predict_on_batch(padded[:, :148, :148])))
    for offset, aligned in [(4, True), (8, True), (2, False), (6, False)]:
        part = padded[:, offset : offset + tile, offset : offset + tile]
        tiled = softmax(to_numpy(model.predict_on_batch(part)))
        out = tile - 2 * m
        region = whole[:, offset : offset + out, offset : offset + out]
        difference = np.abs(tiled - region).max()
        if aligned:
            assert difference < 1e-5
        else:
            assert difference > 1e-3


def test_tile_grid_of_the_paper_network():
    # Hand-computed: 572 -> 388 output, offsets in steps of 384 (388
    # rounded down to a multiple of 16), the last tile at the first
    # multiple of 16 that reaches the end of the image.
    model = attributes_only(depth=4)
    predictor = OverlapTilePredictor(model, tile_size=572, verbose=0)
    grid = predictor.tile_grid(512, 2048)
    assert grid.tile_shape == (572, 572)
    assert grid.output_shape == (388, 388)
    assert grid.margin == 92
    assert grid.rows == (-92, 36)  # outputs start at 0 and 128
    assert grid.cols == (-92, 292, 676, 1060, 1444, 1572)
    # An axis that fits one smaller tile gets the smallest covering tile.
    small = predictor.tile_grid(100, 388)
    assert small.tile_shape == (284, 572)  # 284 -> 100
    assert small.rows == (-92,)
    assert small.cols == (-92,)


@pytest.mark.parametrize("depth, tile", [(1, 22), (2, 60)])
def test_tile_grid_offsets_are_aligned_and_cover_the_image(depth, tile):
    model = attributes_only(depth=depth)
    predictor = OverlapTilePredictor(model, tile_size=tile, verbose=0)
    unit = 2**depth
    for height in [1, 7, 30, 31, 95, 200]:
        grid = predictor.tile_grid(height, 3)
        starts = [r + grid.margin for r in grid.rows]
        assert all(s % unit == 0 for s in starts)
        covered = np.zeros(height, bool)
        for s in starts:
            covered[s : s + grid.output_shape[0]] = True
        assert covered.all()
        assert starts[-1] < height


# === Labels, out=, memmaps, array-likes ===


def test_labels_are_the_argmax_of_probabilities():
    model = make_model(depth=1)
    image = random_image((2, 33, 41))
    predictor = OverlapTilePredictor(model, tile_size=30, verbose=0)
    probabilities = predictor.predict(image)
    labels = predictor.predict(image, output="labels")
    assert labels.shape == (2, 33, 41)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=-1))
    assert set(np.unique(labels)) <= {0, 1, 2}
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-6)


def test_out_is_written_in_place_and_returned():
    model = make_model(depth=1)
    image = random_image((27, 35))
    predictor = OverlapTilePredictor(model, tile_size=26, verbose=0)
    expected = predictor.predict(image)
    out = np.full((27, 35, 3), -1.0, np.float64)
    result = predictor.predict(image, out=out)
    assert result is out
    np.testing.assert_allclose(out, expected, atol=1e-7)
    labels = np.zeros((27, 35), np.uint8)
    predictor.predict(image, out=labels, output="labels")
    np.testing.assert_array_equal(labels, expected.argmax(-1))


def test_memmap_input_and_output(tmp_path):
    model = make_model(depth=1, input_channels=2)
    image = random_image((2, 45, 38, 2))
    source = np.memmap(
        tmp_path / "image.dat", "float32", mode="w+", shape=image.shape
    )
    source[:] = image
    source.flush()
    source = np.memmap(
        tmp_path / "image.dat", "float32", mode="r", shape=image.shape
    )
    out = np.memmap(
        tmp_path / "out.dat", "float32", mode="w+", shape=(2, 45, 38, 3)
    )
    predictor = OverlapTilePredictor(model, tile_size=28, verbose=0)
    result = predictor.predict(source, out=out)
    assert result is out
    out.flush()
    on_disk = np.fromfile(tmp_path / "out.dat", "float32").reshape(out.shape)
    np.testing.assert_allclose(on_disk, whole_pass(model, image), atol=1e-5)


class SliceOnlyArray:
    """An array-like that only supports slicing, as zarr or h5py do.

    Converting it as a whole fails, and the largest block read is recorded.
    """

    def __init__(self, array):
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.largest_read = 0

    def __getitem__(self, index):
        block = self._array[index]
        self.largest_read = max(self.largest_read, block.size)
        return block.copy()

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array must not be converted")


def test_slice_only_array_like_is_read_one_tile_at_a_time():
    model = make_model(depth=1)
    image = random_image((90, 70))
    source = SliceOnlyArray(image)
    predictor = OverlapTilePredictor(model, tile_size=26, verbose=0)
    actual = predictor.predict(source)
    np.testing.assert_allclose(
        actual, whole_pass(model, image[None, :, :, None])[0], atol=1e-5
    )
    assert source.largest_read <= 26 * 26


def test_tensor_and_integer_inputs():
    model = make_model(depth=1)
    image = np.random.default_rng(0).integers(0, 255, (21, 19), np.uint8)
    predictor = OverlapTilePredictor(model, tile_size=30, verbose=0)
    expected = predictor.predict(image.astype("float32"))
    np.testing.assert_array_equal(predictor.predict(image), expected)
    tensor = keras.ops.convert_to_tensor(image.astype("float32"))
    np.testing.assert_array_equal(predictor.predict(tensor), expected)


def test_channels_first_model_matches_channels_last():
    skip_if_channels_first_unsupported("channels_first")
    last = make_model(depth=1, input_channels=2)
    first = make_model(
        depth=1, input_channels=2, data_format="channels_first", fresh=True
    )
    first.set_weights(last.get_weights())
    image = random_image((29, 33, 2))
    expected = OverlapTilePredictor(last, tile_size=24, verbose=0).predict(
        image
    )
    predictor = OverlapTilePredictor(first, tile_size=24, verbose=0)
    actual = predictor.predict(image.transpose(2, 0, 1))
    assert actual.shape == (3, 29, 33)
    np.testing.assert_allclose(actual, expected.transpose(2, 0, 1), atol=1e-5)
    labels = predictor.predict(image.transpose(2, 0, 1), output="labels")
    np.testing.assert_array_equal(labels, expected.argmax(-1))


# === Batching, memory budget, progress ===


def test_tiles_are_batched(monkeypatch):
    model = make_model(depth=1)
    image = random_image((2, 40, 40))
    predictor = OverlapTilePredictor(
        model, tile_size=26, batch_size=3, verbose=0
    )
    expected = predictor.predict(image)
    seen = []
    forward = model.predict_on_batch

    def spy(x):
        seen.append(x.shape)
        return forward(x)

    monkeypatch.setattr(model, "predict_on_batch", spy)
    actual = predictor.predict(image)
    np.testing.assert_array_equal(actual, expected)
    # 40 px with 10 px outputs: 4 tiles per axis, 2 images: 32 tiles.
    assert [s[0] for s in seen] == [3] * 10 + [2]
    assert all(s[1:] == (26, 26, 1) for s in seen)


def test_tile_size_from_memory_budget():
    # The paper's network: about 851 float32 maps per input pixel (3404
    # bytes); 2 GiB fit 794x794 px, and the largest valid tile below is
    # 780 = 16 * 45 + 60.
    model = attributes_only()  # only the widths enter the estimate
    assert OverlapTilePredictor(model, verbose=0).tile_size == (780, 780)
    small = OverlapTilePredictor(model, memory_budget=3404 * 572**2)
    assert small.tile_size == (572, 572)
    with pytest.raises(ValueError, match="too small for the smallest"):
        OverlapTilePredictor(model, memory_budget=1e6)


def test_batch_size_from_memory_budget(monkeypatch):
    # Depth 1, 4 filters, 1 channel, 3 classes: 14 * 4 * 0.5 + 2 * 4 / 2
    # + 1 + 3 = 36 floats = 144 bytes per pixel; a 22x22 tile takes 69696.
    model = make_model(depth=1)
    predictor = OverlapTilePredictor(
        model, tile_size=22, memory_budget=4 * 69696 + 1, verbose=0
    )
    seen = []
    forward = model.predict_on_batch
    monkeypatch.setattr(
        model, "predict_on_batch", lambda x: seen.append(len(x)) or forward(x)
    )
    predictor.predict(random_image((18, 18)))  # 3 x 3 tiles of 6 px
    assert seen == [4, 4, 1]


def test_progress_bar_and_silence(capsys):
    model = make_model(depth=1)
    image = random_image((20, 20))
    OverlapTilePredictor(model, tile_size=22, verbose=0).predict(image)
    assert capsys.readouterr().out == ""
    OverlapTilePredictor(model, tile_size=22, verbose=1).predict(image)
    printed = capsys.readouterr().out
    assert "16/16" in printed  # 4 x 4 tiles


def test_progress_callback_counts_every_tile():
    model = make_model(depth=1)
    image = random_image((2, 40, 30))
    predictor = OverlapTilePredictor(
        model, tile_size=26, batch_size=3, verbose=0
    )
    grid = predictor.tile_grid(40, 30)
    expected_total = 2 * len(grid.rows) * len(grid.cols)
    assert expected_total == 2 * 4 * 3  # 10 px outputs
    calls = []
    actual = predictor.predict(
        image, progress=lambda done, total: calls.append((done, total))
    )
    np.testing.assert_array_equal(actual, predictor.predict(image))
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert done[-1] == expected_total
    assert {t for _, t in calls} == {expected_total}
    assert len(calls) == -(-expected_total // 3)  # once per batch
    with pytest.raises(ValueError, match="progress"):
        predictor.predict(image, progress=10)


# === Test-time augmentation ===


def symmetrize(model):
    """Makes every kernel invariant under the 8 dihedral transforms.

    A valid U-Net whose kernels are symmetric is equivariant under flips
    and transposes: every max-pool sees an even size, so its pixel pairs
    map onto pixel pairs.
    """
    weights = []
    for w in model.get_weights():
        if w.ndim == 4:
            variants = []
            for k in range(4):
                r = np.rot90(w, k, axes=(0, 1))
                variants += [r, r[::-1]]
            w = np.mean(variants, axis=0)
        weights.append(w)
    model.set_weights(weights)
    return model


@pytest.mark.parametrize("tta", ["flips", "dihedral"])
def test_tta_of_an_equivariant_model_equals_plain_prediction(tta):
    model = symmetrize(make_model(depth=2, fresh=True))
    # 36 + 2 * 20 and 52 + 2 * 20 are valid sizes: the mirrored border is
    # the same on all sides, so flipping the image flips the tiles.
    image = random_image((36, 52))
    plain = OverlapTilePredictor(model, tile_size=60, verbose=0)
    augmented = OverlapTilePredictor(model, tile_size=60, tta=tta, verbose=0)
    expected = plain.predict(image)
    np.testing.assert_allclose(augmented.predict(image), expected, atol=1e-5)
    # The model is equivariant indeed: a flipped image gives the flipped
    # prediction.
    np.testing.assert_allclose(
        plain.predict(image[::-1]), expected[::-1], atol=1e-5
    )


@pytest.mark.parametrize("tta", ["flips", "dihedral"])
def test_tta_averages_transformed_predictions(tta):
    # A 14x14 image is exactly the output of one 30x30 tile (depth 1), so
    # the mirrored tile of a transformed image is the transformed tile.
    model = make_model(depth=1)
    image = random_image((14, 14))
    plain = OverlapTilePredictor(model, tile_size=30, verbose=0)
    transforms = [
        (lambda x, k=k: np.rot90(x, k), lambda y, k=k: np.rot90(y, -k))
        for k in range(4)
    ]
    if tta == "flips":
        transforms = [
            (lambda x: x, lambda y: y),
            (np.fliplr, np.fliplr),
            (np.flipud, np.flipud),
            (transforms[2][0], transforms[2][1]),  # both flips
        ]
    else:
        transforms += [
            (
                lambda x, k=k: np.rot90(np.fliplr(x), k),
                lambda y, k=k: np.fliplr(np.rot90(y, -k)),
            )
            for k in range(4)
        ]
    expected = np.mean(
        [undo(plain.predict(do(image).copy())) for do, undo in transforms],
        axis=0,
    )
    augmented = OverlapTilePredictor(model, tile_size=30, tta=tta, verbose=0)
    actual = augmented.predict(image)
    np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert np.abs(actual - plain.predict(image)).max() > 1e-3


def test_tta_with_non_square_tiles():
    model = symmetrize(make_model(depth=1, fresh=True))
    image = random_image((9, 40))  # tiles of 26 x 40 px
    predictor = OverlapTilePredictor(
        model, tile_size=40, tta="dihedral", verbose=0
    )
    assert predictor.tile_grid(9, 40).tile_shape == (26, 40)
    np.testing.assert_allclose(
        predictor.predict(image),
        whole_pass(model, image[None, :, :, None])[0],
        atol=1e-5,
    )


# === Same padding ===


@pytest.mark.parametrize("depth", [1, 2])
def test_same_padding_tiles_join_exactly_with_default_margin(depth):
    model = make_model(depth=depth, padding="same")
    unit = 2**depth
    image = random_image((1, 40 * unit // 2, 48 * unit // 2, 1))
    predictor = OverlapTilePredictor(model, tile_size=28 * unit, verbose=0)
    margin = predictor.margin
    assert margin == {1: 10, 2: 24}[depth]  # context margin + 2, rounded up
    grid = predictor.tile_grid(*image.shape[1:3])
    assert len(grid.rows) * len(grid.cols) > 2
    actual = predictor.predict(image)
    np.testing.assert_allclose(
        actual, whole_pass(model, image, margin), atol=1e-5
    )
    # Versus a plain pass over the unmirrored image: equal away from the
    # image border; within the margin the plain pass sees zeros where the
    # predictor sees the mirrored image, and differs.
    plain = softmax(to_numpy(model.predict_on_batch(image)))
    inner = (slice(None), slice(margin, -margin), slice(margin, -margin))
    np.testing.assert_allclose(actual[inner], plain[inner], atol=1e-5)
    assert np.abs(actual - plain).max() > 1e-3


def test_same_padding_small_margin_errs_only_near_tile_borders():
    # With a margin below the reach of an output pixel (context_margin + 2
    # = 22 px at depth 2), kept pixels closer than 22 - margin to the edge
    # of their tile's output see the zero padding of the tile border: not
    # exact there, exact elsewhere.
    model = make_model(depth=2, padding="same")
    image = random_image((1, 160, 160, 1))
    margin = 8
    predictor = OverlapTilePredictor(
        model, tile_size=96, margin=margin, verbose=0
    )
    actual = predictor.predict(image)
    error = np.abs(actual - whole_pass(model, image, margin))[0]
    error = error.max(axis=-1)
    grid = predictor.tile_grid(160, 160)
    starts = [r + margin for r in grid.rows]
    assert starts == [0, 80]
    output = grid.output_shape[0]
    interior = np.zeros(160, bool)
    for start, stop in zip(starts, starts[1:] + [160]):
        for p in range(start, stop):
            reach = 22 - margin
            interior[p] = p - start >= reach and start + output - 1 - p > reach
    assert interior.sum() > 80
    inner = interior[:, None] & interior[None, :]
    assert error[inner].max() < 1e-5
    assert error.max() > 1e-4


# === Errors ===


def test_invalid_tile_size_names_nearest_valid_sizes():
    model = attributes_only(depth=4)
    with pytest.raises(ValueError, match="556 or 572"):
        OverlapTilePredictor(model, tile_size=570)
    with pytest.raises(ValueError, match="Use a tile of at least 204"):
        OverlapTilePredictor(model, tile_size=188)  # output 4 < 16
    with pytest.raises(ValueError, match="tile_size"):
        OverlapTilePredictor(model, tile_size=(572, 572, 1))
    same = attributes_only(depth=2, padding="same")
    with pytest.raises(ValueError, match="60 or 64"):
        OverlapTilePredictor(same, tile_size=62)


@pytest.mark.parametrize(
    "channels, shape, match",
    [
        (1, (10,), "rank 1"),
        (1, (1, 1, 10, 10, 1), "rank 5"),
        (1, (0, 10), "empty"),
        (1, (2, 0, 10, 1), "empty"),
        (1, (2, 10, 10, 3), "expects 1 input channels"),
        (2, (10, 10, 3), "expects 2 input channels"),
        (2, (1, 10, 10, 3), "expects 2 input channels"),
        (2, (10, 10), "Add a channel axis"),
    ],
)
def test_bad_image_shapes(channels, shape, match):
    model = make_model(depth=1, input_channels=channels)
    predictor = OverlapTilePredictor(model, tile_size=18, verbose=0)
    with pytest.raises(ValueError, match=match):
        predictor.predict(np.zeros(shape, "float32"))


def test_bad_image_values_and_dtypes():
    model = make_model(depth=1)
    predictor = OverlapTilePredictor(model, tile_size=18, verbose=0)
    for bad in (np.nan, np.inf):
        image = np.zeros((12, 12), "float32")
        image[5, 7] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            predictor.predict(image)
    with pytest.raises(ValueError, match="real numeric dtype"):
        predictor.predict(np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="real numeric dtype"):
        predictor.predict(np.zeros((5, 5), complex))


def test_bad_out_arrays():
    model = make_model(depth=1)
    predictor = OverlapTilePredictor(model, tile_size=18, verbose=0)
    image = np.zeros((6, 7), "float32")
    with pytest.raises(ValueError, match=r"\(6, 7, 3\)"):
        predictor.predict(image, out=np.zeros((6, 7), "float32"))
    with pytest.raises(ValueError, match="floating dtype"):
        predictor.predict(image, out=np.zeros((6, 7, 3), "int32"))
    with pytest.raises(ValueError, match="integer dtype"):
        predictor.predict(
            image, out=np.zeros((6, 7), "float32"), output="labels"
        )
    many = attributes_only(depth=1, num_classes=300)
    with pytest.raises(ValueError, match="cannot hold labels up to 299"):
        OverlapTilePredictor(many, tile_size=18, verbose=0).predict(
            image, out=np.zeros((6, 7), "uint8"), output="labels"
        )
    with pytest.raises(ValueError, match="output"):
        predictor.predict(image, output="logits")


def test_bad_arguments():
    model = make_model(depth=1)
    with pytest.raises(ValueError, match="tta"):
        OverlapTilePredictor(model, tile_size=18, tta="rotations")
    with pytest.raises(ValueError, match="same-padding models only"):
        OverlapTilePredictor(model, tile_size=18, margin=4)
    with pytest.raises(ValueError, match="batch_size"):
        OverlapTilePredictor(model, tile_size=18, batch_size=0)
    with pytest.raises(ValueError, match="memory_budget"):
        OverlapTilePredictor(model, memory_budget=-1)
    with pytest.raises(ValueError, match="verbose"):
        OverlapTilePredictor(model, tile_size=18, verbose=3)
    plain = keras.Sequential([keras.layers.Conv2D(2, 1)])
    with pytest.raises(ValueError, match="without"):
        OverlapTilePredictor(plain, tile_size=18)


def test_exported_at_top_level():
    assert keras_unet2015.OverlapTilePredictor is OverlapTilePredictor
    assert "OverlapTilePredictor" in keras_unet2015.__all__


@pytest.mark.parametrize(
    "data_format, shape, kind",
    [
        ("channels_last", (40, 50, 3), "RGB"),
        ("channels_last", (40, 50, 4), "RGBA"),
        ("channels_first", (40, 50, 3), "RGB"),
    ],
)
def test_rgb_image_into_a_gray_model_is_refused(data_format, shape, kind):
    # It used to be read as a batch of 40 images 3 px wide, silently.
    model = attributes_only(depth=1, filters=4)
    model.data_format = data_format
    predictor = OverlapTilePredictor(model, tile_size=18, verbose=0)
    with pytest.raises(ValueError) as error:
        predictor.predict(np.zeros(shape, "float32"))
    message = str(error.value)
    assert f"shape {shape}" in message
    assert f"looks like an {kind} image" in message
    assert "Convert it to gray values" in message


def test_gray_batches_and_explicit_narrow_batches_are_still_read():
    model = make_model(depth=1)
    predictor = OverlapTilePredictor(model, tile_size=18, verbose=0)
    batch = random_image((3, 12, 14))
    result = predictor.predict(batch)
    assert result.shape == (3, 12, 14, 3)
    np.testing.assert_allclose(result[1], predictor.predict(batch[1]))
    # A last axis of 3 longer than the first is not an RGB image.
    assert predictor.predict(random_image((2, 12, 3))).shape == (2, 12, 3, 3)
    # Many images 3 px wide: a 4D batch with its channel axis says so.
    narrow = random_image((5, 12, 3))
    result = predictor.predict(narrow[..., None])
    assert result.shape == (5, 12, 3, 3)
    np.testing.assert_allclose(result[2], predictor.predict(narrow[2]))
