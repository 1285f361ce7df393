import json
import os
import threading
import types
import uuid
import zipfile

import numpy as np

from keras_unet2015 import sizes
from keras_unet2015.backend_utils import standardize_data_format
from keras_unet2015.inference import overlap_tile_predictor as otp
from keras_unet2015.inference.overlap_tile_predictor import OverlapTilePredictor

OUTPUTS = ("probabilities", "labels")

# Models loaded from `.keras` files, one per (path, modification time) and
# process: a Dask worker loads a model once and reuses it for all its blocks.
_MODEL_CACHE = {}
_MODEL_CACHE_LOCK = threading.Lock()
# Number of models this process loaded from files (read by the tests through
# `Client.run` to check that every worker loads once).
_LOAD_COUNT = 0
# One lock per model object: the forward passes of one model run one at a
# time (Keras models are not documented as thread-safe; the backend uses all
# cores for one pass anyway), while reading, mirroring, the softmax and the
# argmax of other blocks run in parallel.
_FORWARD_LOCKS = {}


def segment_dask(
    model,
    image,
    output="probabilities",
    tile_size=None,
    batch_size=1,
    memory_budget=2**31,
    tta=None,
    margin=None,
):
    """Segments a Dask array (a 2D image or a stack of 2D slices) lazily.

    Images too large for memory (a zarr store, a TIFF stack) are segmented
    chunk by chunk with the paper's overlap-tile strategy on Dask, on the
    local threaded scheduler or on a `dask.distributed` cluster. Every chunk
    is extended from its neighbours with `dask.array.map_overlap` by the
    reach of an output pixel's context, and predicted tile by tile with the
    machinery of `keras_unet2015.OverlapTilePredictor`. That reach is the
    predictor's margin (`model.context_margin` for valid padding: 92 px at
    depth 4) plus `2**depth - 1` px: the context of a pixel is aligned to
    the 2x2 pooling cells, so a pixel inside a cell reaches further than the
    margin to one side (107 px at depth 4, measured by perturbing single
    input columns). An overlap of only the margin would change the pixels
    next to chunk borders.

    The result equals `OverlapTilePredictor(model, tile_size=T,
    batch_size=B, memory_budget=M, tta=A, margin=G).predict(image)` on the
    whole image exactly (bit for bit), for any chunking, where `T` is the
    tile size used here (`tile_size`, or its default below) and the other
    arguments are those given here. This holds because every chunk computes
    the very tiles of the in-memory predictor: the same tile shape at the
    same image positions, at the same position within a batch of the same
    size (floating-point results of the backends' convolutions depend on
    the tile and batch shapes, not on the contents of other tiles of a
    batch or of input pixels outside an output pixel's context). Pixels of
    a tile that lie outside the chunk and its overlap do not reach the
    output pixels the chunk keeps; they are filled with the nearest
    available pixel.

    Border: the image is mirrored without repeating the edge pixel
    (`numpy.pad(mode="reflect")`), as `OverlapTilePredictor` does. Dask's
    own `boundary="reflect"` repeats the edge pixel (it is NumPy's
    `"symmetric"`), so the overlap is built with `boundary="none"` and
    each border chunk mirrors its own pixels (an edge chunk with its overlap
    always holds every pixel the mirror needs).

    Chunking: any chunking of the spatial axes works. Spatial chunks
    smaller than the overlap are merged with their neighbours first (Dask's
    overlap needs chunks at least as large as the overlap), and the result
    is re-chunked back, so it always has the chunks of the input. The slice
    axis stays chunked as it is; the channel axis is merged into one chunk.
    A tile that spans two chunks is computed by both: chunks that are
    multiples of `2**depth` (e.g. 1024) with the default `tile_size` give
    one tile per chunk and no repeated work.

    The model: pass the model object for the local threaded scheduler and
    for a `LocalCluster` (the object is put into the task graph once and
    each worker process unpickles it once). For a real cluster pass the
    path of a `.keras` file that every worker can read (a shared file
    system): each worker process loads it once, on its first chunk, and
    reuses it (cached by path and modification time), and the task graph
    stays small.

    Padding: both paddings work. A `"same"` model uses the margin of
    `OverlapTilePredictor` (`margin`, by default `context_margin + 2`
    rounded up to a multiple of `2**depth`), plus `2**depth - 1` px, as
    the overlap.

    Reference:

    - [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597),
      Fig. 2 and Sec. 2.

    Args:
        model: a `keras_unet2015.UNet2015` (or a model with the attributes
            `OverlapTilePredictor` needs), or a `str` / `os.PathLike` path
            to a `.keras` file of one.
        image: a `dask.array.Array`, channels last: `(height, width)`,
            `(height, width, channels)`, `(slices, height, width)` for a
            one-channel model, or `(slices, height, width, channels)`. A 3D
            array is one image when its last axis has `input_channels`
            entries, and a stack of one-channel slices otherwise, except
            that a one-channel model refuses a last axis of 3 or 4 that is
            shorter than the other two (an RGB or RGBA image; the rule of
            `OverlapTilePredictor.predict`). Channels last also for a
            `"channels_first"` model. Any real numeric dtype.
        output: `"probabilities"` or `"labels"`. Defaults to
            `"probabilities"`.
        tile_size: `None`, an int or a `(height, width)` tuple. Input tile
            size, as for `OverlapTilePredictor`. `None` takes, on each
            axis, the smallest valid tile whose output covers the largest
            chunk, capped by the default tile of `OverlapTilePredictor` for
            `memory_budget`. Defaults to `None`.
        batch_size: int. Tiles per forward pass, as for
            `OverlapTilePredictor(batch_size=...)`. With more than one, a
            chunk whose tiles do not fill a batch of the in-memory
            predictor fills it with zeros (this keeps the result exact, at
            the cost of the extra tiles). Defaults to `1`.
        memory_budget: int. Bytes, as for `OverlapTilePredictor`; only used
            to cap the default `tile_size`. Defaults to `2**31`.
        tta: `None`, `"flips"` or `"dihedral"`. Test-time augmentation, as
            for `OverlapTilePredictor`. Defaults to `None`.
        margin: `None` or int. Same-padding models only, as for
            `OverlapTilePredictor`. Defaults to `None`.

    Returns:
        A lazy `dask.array.Array` with the spatial shape and the chunks of
        `image`: float32 probabilities with a last axis of `num_classes`
        (replacing the channel axis if `image` has one), or int32 labels
        without a channel axis. Nothing is computed until you call
        `.compute()`, `.to_zarr(...)` or `dask.array.store`.

    Example:

    ```python
    import dask.array as da

    # A small network for a quick run; the paper's is UNet2015().
    model = keras_unet2015.UNet2015(depth=2, filters=8)
    image = da.random.random((600, 500), chunks=256).astype("float32")
    labels = keras_unet2015.segment_dask(model, image, output="labels")
    labels.to_zarr("labels.zarr")  # or labels.compute(): (600, 500) int32
    ```
    """
    da = _import_dask_array()
    if not isinstance(image, da.Array):
        raise ValueError(
            "`image` must be a `dask.array.Array`. Received an object of "
            f"type {type(image).__name__}. Wrap an in-memory array with "
            "`dask.array.from_array(image, chunks=1024)`, open a zarr store "
            "with `dask.array.from_zarr`, or use "
            "`keras_unet2015.OverlapTilePredictor` directly."
        )
    if output not in OUTPUTS:
        raise ValueError(
            f"`output` must be one of {OUTPUTS}. Received: output={output!r}"
        )
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(
            "`batch_size` must be a positive integer. Received: "
            f"batch_size={batch_size!r}"
        )
    model_ref, loaded = _standardize_model(model)
    dtype = np.dtype(image.dtype)
    if dtype.kind not in "uif":
        raise ValueError(
            "`image` must have a real numeric dtype (integer or floating). "
            f"Received dtype {dtype}."
        )
    if 0 in image.shape:
        raise ValueError(
            "`image` must not be empty. Received an array of shape "
            f"{tuple(image.shape)}."
        )
    # Channels last, whatever the model's data format.
    axes = otp._image_axes(image.shape, loaded.input_channels)
    h_axis, w_axis = axes.index("h"), axes.index("w")
    height, width = int(image.shape[h_axis]), int(image.shape[w_axis])

    # The predictor validates tile_size, batch_size, tta and margin, and
    # fixes the margin: the overlap depth.
    has_filters = getattr(loaded, "filters", None) is not None
    predictor = OverlapTilePredictor(
        loaded,
        tile_size=tile_size
        if tile_size is not None or has_filters
        else _largest_tile(loaded),
        batch_size=batch_size,
        memory_budget=memory_budget,
        tta=tta,
        margin=margin,
        verbose=0,
    )
    # The overlap: the reach of an output pixel's context. It is aligned
    # to the 2x2 pooling cells, so a pixel inside a cell of `2**depth` px
    # reaches up to `2**depth - 1` px further than the margin (measured:
    # 107 px at depth 4 for a margin of 92). Chunk borders fall anywhere,
    # so the overlap covers the farthest reach.
    depth = predictor.margin + 2**loaded.depth - 1

    # === Chunks ===
    input_chunks = image.chunks
    chunks = list(image.chunks)
    for axis in (h_axis, w_axis):
        chunks[axis] = _merge_small_chunks(image.chunks[axis], depth)
    if "c" in axes:
        chunks[-1] = (image.shape[-1],)
    chunks = tuple(chunks)
    if chunks != image.chunks:
        image = image.rechunk(chunks)

    if tile_size is None:
        unit = 2**loaded.depth
        # Smallest tile covering the largest chunk, capped by the budget.
        tile_size = tuple(
            min(cap, predictor._smallest_tile_covering(max(max(c), unit)))
            for cap, c in zip(
                predictor.tile_size, (chunks[h_axis], chunks[w_axis])
            )
        )
        predictor = OverlapTilePredictor(
            loaded,
            tile_size=tile_size,
            batch_size=batch_size,
            tta=tta,
            margin=margin,
            verbose=0,
        )
    grid = predictor.tile_grid(height, width)
    plan = _Plan(
        axes=axes,
        height=height,
        width=width,
        num_slices=int(image.shape[0]) if "n" in axes else 1,
        tile_shape=grid.tile_shape,
        margin=grid.margin,
        unit=2**loaded.depth,
        batch_size=batch_size,
        starts=[_starts(c) for c in chunks],
        depth=depth,
        output=output,
        predictor_kwargs=dict(
            tile_size=grid.tile_shape,
            batch_size=batch_size,
            tta=tta,
            margin=margin,
            verbose=0,
        ),
    )

    # === Graph ===
    out_chunks = list(chunks)
    kwargs = {}
    if output == "labels":
        out_dtype = np.dtype(np.int32)
        if "c" in axes:
            out_chunks.pop()
            kwargs["drop_axis"] = len(axes) - 1
    else:
        out_dtype = np.dtype(np.float32)
        if "c" in axes:
            out_chunks[-1] = (loaded.num_classes,)
        else:
            out_chunks.append((loaded.num_classes,))
            kwargs["new_axis"] = len(axes)
    # The overlap on every spatial axis split into several chunks (an axis
    # held in one chunk has no neighbours to borrow from).
    overlap_depth = {
        a: depth if axes[a] in "hw" and len(chunks[a]) > 1 else 0
        for a in range(len(axes))
    }
    result = da.map_overlap(
        _predict_block,
        image,
        depth=overlap_depth,
        boundary="none",
        trim=False,
        allow_rechunk=False,
        chunks=tuple(out_chunks),
        dtype=out_dtype,
        meta=np.empty((0,) * len(out_chunks), out_dtype),
        model=model_ref,
        plan=plan,
        **kwargs,
    )
    # Give back the chunks of the input where small chunks were merged.
    wanted = [input_chunks[a] for a in range(len(axes)) if axes[a] != "c"]
    if output == "probabilities":
        wanted.append((loaded.num_classes,))
    wanted = tuple(wanted)
    if result.chunks != wanted:
        result = result.rechunk(wanted)
    return result


class _Plan:
    """Everything a task needs besides its block and the model."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _import_dask_array():
    try:
        import dask.array as da
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "`keras_unet2015.segment_dask` needs Dask. Install it with "
            "`pip install 'keras-unet2015[dask]'` (or `pip install "
            "'dask[array,distributed]'`)."
        ) from error
    return da


def _standardize_model(model):
    """`(what goes into the graph, a model object to read attributes)`."""
    if isinstance(model, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(model))
        if not path.endswith(".keras"):
            raise ValueError(
                "`model` must be a Keras model or the path of a `.keras` "
                f"file. Received the path {path!r}. Save the model with "
                "`model.save('unet.keras')`."
            )
        if not os.path.isfile(path):
            raise ValueError(
                f"`model` is the path {path!r}, which is not a file. Pass "
                "the path of a saved `.keras` model that every Dask worker "
                "can read."
            )
        return path, _model_attributes(path)
    import dask

    # One key in the graph: each worker unpickles the model once, and the
    # threaded scheduler passes this very object.
    return (
        dask.delayed(model, name=f"unet2015-model-{uuid.uuid4().hex}"),
        model,
    )


def _model_attributes(path):
    """What the driver needs of a saved model, read without building it.

    A `UNet2015` is described by the `config.json` inside the `.keras`
    file; only the workers load the weights. Other models are loaded.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise ValueError(
            f"`model` is the path {path!r}, which is not a Keras `.keras` "
            f"file ({error}). Save the model with `model.save(path)`."
        ) from error
    if config.get("registered_name") != "keras_unet2015>UNet2015":
        return _load_model(path)
    config = config["config"]
    return types.SimpleNamespace(
        depth=config["depth"],
        filters=config["filters"],
        padding=config["padding"],
        activation=config["activation"],
        data_format=standardize_data_format(config["data_format"]),
        input_channels=config["input_channels"],
        num_classes=config["num_classes"],
    )


def _load_model(path):
    """The model saved at `path`, loaded once per process and file version."""
    global _LOAD_COUNT
    import keras

    key = (path, os.stat(path).st_mtime_ns)
    with _MODEL_CACHE_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = keras.saving.load_model(path)
            _LOAD_COUNT += 1
        return _MODEL_CACHE[key]


def _forward_lock(model):
    with _MODEL_CACHE_LOCK:
        return _FORWARD_LOCKS.setdefault(id(model), threading.Lock())


def _largest_tile(model):
    """A valid tile larger than any chunk (no memory estimate to cap it)."""
    return sizes.nearest_valid_input_sizes(2**20, model.depth, model.padding)[0]


def _merge_small_chunks(chunks, depth):
    """Merges chunks smaller than `depth` with their neighbours."""
    if len(chunks) == 1 or min(chunks) >= depth:
        return tuple(chunks)
    merged = []
    for c in chunks:
        if merged and merged[-1] < depth:
            merged[-1] += c
        else:
            merged.append(c)
    if len(merged) > 1 and merged[-1] < depth:
        merged[-2] += merged.pop()
    return tuple(merged)


def _starts(chunks):
    return tuple(np.cumsum((0,) + tuple(chunks))[:-1].tolist())


def _predict_block(block, model=None, plan=None, block_id=None):
    """Predicts the chunk `block_id` from its block and overlap."""
    if isinstance(model, str):
        model = _load_model(model)
    axes = plan.axes
    h_axis, w_axis = axes.index("h"), axes.index("w")
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        raise ValueError(
            "`image` contains NaN or infinite values (in the chunk "
            f"{tuple(block_id[: len(axes)])}). Replace them before "
            "predicting, e.g. with `image.map_blocks(numpy.nan_to_num)`."
        )
    # Global extent of the inner chunk and of the extended block.
    spans = []
    for axis, size in ((h_axis, plan.height), (w_axis, plan.width)):
        index = block_id[axis]
        starts = plan.starts[axis]
        start = starts[index]
        stop = starts[index + 1] if index + 1 < len(starts) else size
        low = start - plan.depth if index > 0 else start
        spans.append((start, stop, low, low + block.shape[axis]))
    if "n" in axes:
        first_slice = plan.starts[0][block_id[0]]
        slices = range(block.shape[0])
    else:
        first_slice = 0
        slices = range(1)
        block = block[None]
    if "c" not in axes:
        block = block[..., None]

    (r_start, r_stop, r_low, r_high), (c_start, c_stop, c_low, c_high) = spans
    rows = otp._AxisPlan(
        plan.height, plan.tile_shape[0], plan.margin, plan.unit
    )
    cols = otp._AxisPlan(plan.width, plan.tile_shape[1], plan.margin, plan.unit)
    row_tiles = _tiles_touching(rows.writes, r_start, r_stop)
    col_tiles = _tiles_touching(cols.writes, c_start, c_stop)
    row_reads = {
        i: _local_indices(
            rows.offsets[i],
            plan.tile_shape[0],
            plan,
            plan.height,
            r_low,
            r_high,
        )
        for i in row_tiles
    }
    col_reads = {
        j: _local_indices(
            cols.offsets[j], plan.tile_shape[1], plan, plan.width, c_low, c_high
        )
        for j in col_tiles
    }

    num_rows, num_cols = len(rows.offsets), len(cols.offsets)
    num_tiles = plan.num_slices * num_rows * num_cols
    batch = min(plan.batch_size, num_tiles)
    # Tiles of this chunk, grouped by the batch of the in-memory predictor
    # they belong to (it enumerates slices, tile rows, tile columns).
    groups = {}
    for n in slices:
        for i in row_tiles:
            for j in col_tiles:
                index = ((first_slice + n) * num_rows + i) * num_cols + j
                groups.setdefault(index // batch, []).append(
                    (index % batch, n, i, j)
                )

    predictor = OverlapTilePredictor(model, **plan.predictor_kwargs)
    grid_out = tuple(t - 2 * plan.margin for t in plan.tile_shape)
    channels = block.shape[-1]
    num_classes = model.num_classes
    out = np.empty(
        (len(slices), r_stop - r_start, c_stop - c_start, num_classes),
        np.float32,
    )
    lock = _forward_lock(model)
    for number, members in sorted(groups.items()):
        size = min(batch, num_tiles - number * batch)
        tiles = np.zeros(
            (size,) + tuple(plan.tile_shape) + (channels,), np.float32
        )
        for position, n, i, j in members:
            tiles[position] = block[n][np.ix_(row_reads[i], col_reads[j])]
        with lock:
            probabilities = predictor._predict_batch(tiles, grid_out)
        for position, n, i, j in members:
            r0, r1 = rows.writes[i]
            c0, c1 = cols.writes[j]
            r0, r1 = max(r0, r_start), min(r1, r_stop)
            c0, c1 = max(c0, c_start), min(c1, c_stop)
            ro, co = rows.offsets[i], cols.offsets[j]
            out[n, r0 - r_start : r1 - r_start, c0 - c_start : c1 - c_start] = (
                probabilities[position, r0 - ro : r1 - ro, c0 - co : c1 - co]
            )
    if plan.output == "labels":
        out = np.argmax(out, axis=-1).astype(np.int32)
    return out if "n" in axes else out[0]


def _tiles_touching(writes, start, stop):
    """Tiles whose written part overlaps `[start, stop)`."""
    return [i for i, (w0, w1) in enumerate(writes) if w0 < stop and w1 > start]


def _local_indices(offset, tile, plan, size, low, high):
    """Rows (or columns) of one tile, as indices into the extended block.

    The tile reads image positions `offset - margin ...`, mirrored without
    edge repeats; positions outside the block's extent `[low, high)` lie
    outside the context of every output pixel the chunk keeps and take the
    nearest available pixel.
    """
    positions = np.arange(offset - plan.margin, offset - plan.margin + tile)
    source = otp._reflect(positions, size)
    return np.clip(source, low, high - 1) - low
