"""Tests of `segment_dask`.

The reference is `OverlapTilePredictor.predict` on the whole in-memory
image with the same tile size and batch size: the Dask result must equal it
bit for bit (valid and same padding), for any chunking, on the threaded
scheduler and on `dask.distributed`. Tiny models (depth 1-2, 4 filters).
"""

import keras
import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import keras_unet2015  # noqa: E402
from keras_unet2015 import sizes  # noqa: E402
from keras_unet2015.inference import dask_segmentation  # noqa: E402
from keras_unet2015.inference.overlap_tile_predictor import OverlapTilePredictor  # noqa: E402

_MODELS = {}


def make_model(depth=2, input_channels=1, num_classes=3, padding="valid"):
    """A tiny seeded `UNet2015` without dropout, built once per config."""
    key = (depth, input_channels, num_classes, padding)
    if key not in _MODELS:
        keras.utils.set_random_seed(0)
        _MODELS[key] = keras_unet2015.UNet2015(
            num_classes=num_classes,
            input_channels=input_channels,
            depth=depth,
            filters=4,
            dropout_rate=0.0,
            padding=padding,
        )
    return _MODELS[key]


def random_image(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def reference(model, image, output="probabilities", **kwargs):
    """The in-memory overlap-tile prediction the Dask result must equal."""
    predictor = OverlapTilePredictor(model, verbose=0, **kwargs)
    return predictor.predict(image, output=output)


def test_2d_irregular_chunks_equal_predictor():
    model = make_model()
    assert model.context_margin == 20
    image = random_image((150, 130))
    # Chunks of 10 and 5 px are narrower than the 20 px margin.
    chunks = ((60, 10, 50, 30), (25, 70, 5, 30))
    x = da.from_array(image, chunks=chunks)
    result = keras_unet2015.segment_dask(model, x, tile_size=68)
    assert isinstance(result, da.Array)
    assert result.dtype == np.float32
    assert result.chunks == chunks + ((3,),)
    computed = result.compute(scheduler="threads")
    np.testing.assert_array_equal(
        computed, reference(model, image, tile_size=68, batch_size=1)
    )
    np.testing.assert_allclose(computed.sum(axis=-1), 1.0, rtol=1e-5)


def test_default_tile_and_batches_equal_predictor():
    model = make_model()
    image = random_image((128, 100), seed=1)
    x = da.from_array(image, chunks=(64, 48))
    result = keras_unet2015.segment_dask(
        model, x, output="labels", batch_size=3
    )
    # Default: on each axis the smallest tile whose output covers a chunk.
    tile = (
        sizes.input_size_for_output(64, 2),
        sizes.input_size_for_output(48, 2),
    )
    expected = reference(
        model, image, output="labels", tile_size=tile, batch_size=3
    )
    computed = result.compute(scheduler="threads")
    assert computed.dtype == np.int32
    assert result.chunks == x.chunks
    np.testing.assert_array_equal(computed, expected)


def test_stack_labels_with_chunked_slices():
    model = make_model(depth=1)
    stack = random_image((3, 90, 100), seed=2)
    x = da.from_array(stack, chunks=(2, 45, 50))
    result = keras_unet2015.segment_dask(
        model, x, output="labels", tile_size=36
    )
    assert result.shape == (3, 90, 100)
    assert result.chunks == x.chunks
    np.testing.assert_array_equal(
        result.compute(scheduler="threads"),
        reference(model, stack, output="labels", tile_size=36, batch_size=1),
    )


def test_multichannel_stack_probabilities():
    model = make_model(depth=1, input_channels=2, num_classes=2)
    stack = random_image((2, 70, 80, 2), seed=3)
    # The channel axis is split too: it is merged before predicting.
    x = da.from_array(stack, chunks=(1, 35, 40, 1))
    result = keras_unet2015.segment_dask(model, x, tile_size=(40, 36))
    assert result.chunks == ((1, 1), (35, 35), (40, 40), (2,))
    np.testing.assert_array_equal(
        result.compute(scheduler="threads"),
        reference(model, stack, tile_size=(40, 36), batch_size=1),
    )


def test_image_narrower_than_margin_and_same_padding():
    # 12 rows < margin: the mirror reflects several times, as in numpy.pad.
    model = make_model()
    image = random_image((12, 90), seed=4)
    x = da.from_array(image, chunks=(12, 30))
    np.testing.assert_array_equal(
        keras_unet2015.segment_dask(model, x, tile_size=52).compute(),
        reference(model, image, tile_size=52, batch_size=1),
    )
    same = make_model(padding="same")
    image = random_image((70, 75), seed=5)
    x = da.from_array(image, chunks=(30, 40))
    result = keras_unet2015.segment_dask(same, x, tile_size=64, tta="flips")
    np.testing.assert_array_equal(
        result.compute(),
        reference(same, image, tile_size=64, batch_size=1, tta="flips"),
    )


def test_context_reaches_margin_plus_pooling_cell():
    # Why the overlap is `context_margin + 2**depth - 1` and not the margin:
    # at depth 2 (margin 20, cells of 4 px) the output column 48 (first of
    # its pooling cell) depends on input column 48 + 23, not on 48 + 24.
    model = make_model()
    image = random_image((60, 110), seed=10)
    base = reference(model, image, tile_size=132, batch_size=1)
    for column, changes in ((48 + 23, True), (48 + 24, False)):
        perturbed = image.copy()
        perturbed[:, column] += 1.0
        result = reference(model, perturbed, tile_size=132, batch_size=1)
        assert (not np.array_equal(result[:, 48], base[:, 48])) == changes


def test_dask_reflect_boundary_is_not_the_paper_mirror():
    # Why `segment_dask` mirrors itself: Dask's "reflect" repeats the edge
    # pixel (numpy "symmetric"), the overlap-tile mirror does not.
    x = da.from_array(np.arange(6), chunks=3)
    extended = da.overlap.overlap(x, depth=2, boundary="reflect").compute()
    assert list(extended[:2]) == [1, 0]  # symmetric: 1 0 | 0 1 ...
    assert list(np.pad(np.arange(6), 2, mode="reflect")[:2]) == [2, 1]


def test_local_cluster_in_process():
    distributed = pytest.importorskip("distributed")
    model = make_model(depth=1)
    image = random_image((80, 70), seed=6)
    x = da.from_array(image, chunks=(40, 35))
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        result = keras_unet2015.segment_dask(model, x, tile_size=36)
        computed = client.compute(result).result()
    np.testing.assert_array_equal(
        computed, reference(model, image, tile_size=36, batch_size=1)
    )


def test_worker_process_loads_model_file_once(tmp_path):
    distributed = pytest.importorskip("distributed")
    model = make_model(depth=1)
    path = tmp_path / "unet.keras"
    model.save(path)
    image = random_image((80, 70), seed=7)
    x = da.from_array(image, chunks=(20, 35))  # 8 chunks
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        result = keras_unet2015.segment_dask(
            str(path), x, output="labels", tile_size=36
        )
        computed = client.compute(result).result()
        loads = client.run(lambda: dask_segmentation._LOAD_COUNT)
    np.testing.assert_array_equal(
        computed,
        reference(model, image, output="labels", tile_size=36, batch_size=1),
    )
    # One worker process predicted all 8 chunks with one loaded model.
    assert list(loads.values()) == [1]


def test_model_file_loaded_once_per_process(tmp_path):
    model = make_model(depth=1)
    path = tmp_path / "unet.keras"
    model.save(path)
    before = dask_segmentation._LOAD_COUNT
    x = da.from_array(random_image((60, 60), seed=8), chunks=30)
    first = keras_unet2015.segment_dask(path, x, tile_size=36).compute()
    second = keras_unet2015.segment_dask(path, x, tile_size=36).compute()
    assert dask_segmentation._LOAD_COUNT == before + 1
    np.testing.assert_array_equal(first, second)


def test_zarr_in_and_out(tmp_path):
    zarr = pytest.importorskip("zarr")
    model = make_model(depth=1)
    image = random_image((2, 64, 72), seed=9)
    store = zarr.open_array(
        tmp_path / "image.zarr",
        mode="w",
        shape=image.shape,
        chunks=(1, 32, 36),
        dtype="float32",
    )
    store[...] = image
    x = da.from_zarr(str(tmp_path / "image.zarr"))
    labels = keras_unet2015.segment_dask(
        model, x, output="labels", tile_size=36
    )
    labels.to_zarr(str(tmp_path / "labels.zarr"))
    written = zarr.open_array(tmp_path / "labels.zarr", mode="r")
    assert written.chunks == (1, 32, 36)
    np.testing.assert_array_equal(
        written[...],
        reference(model, image, output="labels", tile_size=36, batch_size=1),
    )


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((64, 64), "float32"), "dask.array.from_array"),
        (da.zeros((2, 2, 64, 64, 1), chunks=32), "rank 5"),
        (da.zeros((64, 64, 3), chunks=32), "expects 2 input channels"),
        (da.zeros((64, 64), dtype=bool, chunks=32), "real numeric dtype"),
    ],
)
def test_invalid_images(image, match):
    model = make_model(depth=1, input_channels=2, num_classes=2)
    with pytest.raises(ValueError, match=match):
        keras_unet2015.segment_dask(model, image)


def test_invalid_arguments(tmp_path):
    model = make_model(depth=1)
    x = da.zeros((64, 64), chunks=32)
    with pytest.raises(ValueError, match="`output` must be one of"):
        keras_unet2015.segment_dask(model, x, output="logits")
    with pytest.raises(ValueError, match="positive integer"):
        keras_unet2015.segment_dask(model, x, batch_size=0)
    with pytest.raises(ValueError, match="Invalid `tile_size` 37"):
        keras_unet2015.segment_dask(model, x, tile_size=37)
    with pytest.raises(ValueError, match="path of a `.keras` file"):
        keras_unet2015.segment_dask(str(tmp_path / "unet.h5"), x)
    with pytest.raises(ValueError, match="not a file"):
        keras_unet2015.segment_dask(str(tmp_path / "missing.keras"), x)


def test_nan_is_refused_with_location():
    model = make_model(depth=1)
    image = np.zeros((64, 64), "float32")
    image[40, 50] = np.nan
    x = da.from_array(image, chunks=32)
    result = keras_unet2015.segment_dask(model, x, tile_size=36)
    with pytest.raises(ValueError, match=r"NaN or infinite.*\(1, 1\)"):
        result.compute(scheduler="sync")
