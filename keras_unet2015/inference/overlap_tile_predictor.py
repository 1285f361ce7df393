import collections
import math

import keras
import numpy as np

from keras_unet2015 import sizes

TTA_MODES = (None, "flips", "dihedral")
OUTPUTS = ("probabilities", "labels")

# Each transform is (flip rows, flip columns, transpose), applied in that
# order to the input tile and undone in the reverse order on the output.
_TRANSFORMS = {
    None: ((False, False, False),),
    "flips": (
        (False, False, False),
        (False, True, False),
        (True, False, False),
        (True, True, False),
    ),
    "dihedral": (
        (False, False, False),
        (False, True, False),
        (True, False, False),
        (True, True, False),
        (False, False, True),
        (False, True, True),
        (True, False, True),
        (True, True, True),
    ),
}

_REQUIRED_ATTRIBUTES = (
    "depth",
    "padding",
    "activation",
    "data_format",
    "input_channels",
    "num_classes",
)

TileGrid = collections.namedtuple(
    "TileGrid", ["tile_shape", "output_shape", "margin", "rows", "cols"]
)
TileGrid.__doc__ = """Where `OverlapTilePredictor` puts its tiles on an image.

Attributes:
    tile_shape: `(height, width)` of every input tile.
    output_shape: `(height, width)` of the output every tile contributes.
    margin: context, in pixels, on each side of a tile's output.
    rows: top row of every input tile row, in image coordinates; negative
        values start in the mirrored border.
    cols: left column of every input tile column, in image coordinates.

The output of the tile at `(row, col)` covers image rows
`row + margin ... row + margin + output_shape[0] - 1` (clipped to the image)
and the matching columns.
"""


class OverlapTilePredictor:
    """Segments images of any size with the paper's overlap-tile strategy.

    A U-Net with valid convolutions maps a tile to a smaller output: every
    output pixel needs `model.context_margin` pixels of context on each side
    (92 px for the paper's network). The predictor therefore cuts the image
    into input tiles that overlap by twice that margin, so that the outputs
    of neighbouring tiles join without gaps, and extrapolates the missing
    context at the image border by mirroring (NumPy's `mode="reflect"`: the
    edge pixel is not repeated; margins wider than the image reflect
    repeatedly). The result has exactly the height and width of the input.

    Tiles start at multiples of `2**depth` pixels of the mirrored image, so
    that every max-pool sees the same pixel pairs as in one pass over the
    whole mirrored image: with `padding="valid"` the tiled prediction equals
    that single pass up to floating-point rounding, for every tile size.
    Concretely the reference is: mirror the image by `context_margin` on
    each side, plus extra mirrored rows and columns at the bottom and right
    up to the next valid input size, run the model once, and keep the top
    left `height x width` pixels.

    Models with `padding="same"` keep their output size; there the
    predictor discards `margin` output pixels on each side of every tile
    (mirroring the image by the same amount), so that tile borders, where
    the zero padding of the convolutions acts, are cut away. With the
    default margin (`context_margin + 2`, the widest reach of an output
    pixel, rounded up to a multiple of `2**depth`: 96 px at depth 4) the
    tiles join to the rounding error of one pass over the mirrored image,
    and away from the image border the result equals a plain pass over the
    image; a smaller margin trades exactness at the seams for speed. Near
    the image border a plain pass of a same-padding model differs, as it
    sees zeros there instead of the mirrored image.

    Memory is bounded by the tiles in flight, not by the image: tiles are
    read by slicing, so the image may be a `numpy.memmap` (e.g. a TIFF
    opened with `tifffile.memmap`) or any array-like that supports NumPy
    slicing, and the result can be written into a caller-provided array
    (`out=`), which may be a memmap too.

    Test-time augmentation averages the class probabilities of transformed
    copies of every tile after undoing the transform: `"flips"` (identity,
    left-right, up-down and both, as in the authors' release) or
    `"dihedral"` (the 8 flips and rotations by multiples of 90 degrees).

    Reference:

    - [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597),
      Fig. 2 and Sec. 2.

    Args:
        model: a `keras_unet2015.UNet2015` (or a Keras model exposing the
            same attributes: `depth`, `padding`, `activation`,
            `data_format`, `input_channels`, `num_classes`, and `filters`
            when `tile_size` is `None`). Logits (`activation=None`) are
            turned into probabilities with a softmax; a model with
            `activation="softmax"` is used as is.
        tile_size: `None`, an int or a `(height, width)` tuple. Largest
            input tile. Each side must be a valid input size of the model
            (`model.is_valid_input_size`) whose output keeps at least
            `2**depth` pixels; an axis of the image that fits into a
            smaller tile gets the smallest valid tile that covers it. `None`
            picks the largest square tile whose estimated activations fit
            into `memory_budget`. Defaults to `None`.
        batch_size: `None` or int. Number of tiles per forward pass.
            `None` puts as many tiles into a batch as fit into
            `memory_budget` (at least 1). Defaults to `None`.
        memory_budget: int. Bytes the activations of the tiles in flight
            may take, estimated from the model's widths (all feature maps of
            a tile in float32: about 3.4 kB per tile pixel for the paper's
            network). Used when `tile_size` or `batch_size` is `None`.
            Defaults to `2**31` (2 GiB).
        tta: `None`, `"flips"` or `"dihedral"`. Test-time augmentation.
            Defaults to `None`.
        margin: `None` or int. Same-padding models only: output pixels
            discarded on each side of every tile, and the width of the
            mirrored border. `None` uses `model.context_margin + 2`
            rounded up to a multiple of `2**depth` (96 px at depth 4), the
            smallest margin at which tiles join exactly. Must be `None`
            for valid-padding models, whose margin is fixed by the network.
            Defaults to `None`.
        verbose: int. `0` is silent, `1` shows a progress bar over the
            tiles, `2` prints one line when done. Defaults to `1`.

    Example:

    ```python
    >>> # A small network for a quick run; the paper's is UNet2015().
    >>> model = keras_unet2015.UNet2015(depth=2, filters=8)
    >>> predictor = keras_unet2015.OverlapTilePredictor(
    ...     model, tile_size=188, verbose=0
    ... )
    >>> image = np.random.rand(300, 400).astype("float32")
    >>> predictor.predict(image).shape  # class probabilities
    (300, 400, 2)
    >>> predictor.predict(image, output="labels").shape
    (300, 400)
    >>> grid = predictor.tile_grid(300, 400)
    >>> grid.tile_shape, grid.output_shape, grid.margin
    ((188, 188), (148, 148), 20)
    >>> grid.rows  # top row of each input tile (negative: mirrored)
    (-20, 128, 132)
    ```
    """

    def __init__(
        self,
        model,
        tile_size=None,
        batch_size=None,
        memory_budget=2**31,
        tta=None,
        margin=None,
        verbose=1,
    ):
        missing = [a for a in _REQUIRED_ATTRIBUTES if not hasattr(model, a)]
        if missing:
            raise ValueError(
                "`model` must be a `keras_unet2015.UNet2015` or expose the "
                f"same attributes {_REQUIRED_ATTRIBUTES}. Received a "
                f"{type(model).__name__} without {missing}."
            )
        if model.padding not in sizes.VALID_PADDINGS:
            raise ValueError(
                f"`model.padding` must be one of {sizes.VALID_PADDINGS}. "
                f"Received: {model.padding!r}"
            )
        if model.activation not in (None, "softmax"):
            raise ValueError(
                "`model.activation` must be None (logits) or 'softmax'. "
                f"Received: {model.activation!r}"
            )
        if model.data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                "`model.data_format` must be 'channels_last' or "
                f"'channels_first'. Received: {model.data_format!r}"
            )
        if tta not in TTA_MODES:
            raise ValueError(
                f"`tta` must be one of {TTA_MODES}. Received: tta={tta!r}"
            )
        if verbose not in (0, 1, 2):
            raise ValueError(
                f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}"
            )
        if batch_size is not None and (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or batch_size < 1
        ):
            raise ValueError(
                "`batch_size` must be None or a positive integer. "
                f"Received: batch_size={batch_size!r}"
            )
        if (
            isinstance(memory_budget, bool)
            or not isinstance(memory_budget, (int, float))
            or not memory_budget > 0
        ):
            raise ValueError(
                "`memory_budget` must be a positive number of bytes. "
                f"Received: memory_budget={memory_budget!r}"
            )
        self.model = model
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.tta = tta
        self.verbose = verbose
        self._depth = model.depth
        self._unit = 2**model.depth
        self._padding = model.padding
        self._channels = model.input_channels
        self._num_classes = model.num_classes
        self._channels_first = model.data_format == "channels_first"
        self._bytes_per_pixel = _bytes_per_pixel(model)
        self.margin = self._standardize_margin(margin)
        if tile_size is None:
            self.tile_size = self._tile_size_from_budget()
        else:
            self.tile_size = self._standardize_tile_size(tile_size)

    # === Public API ===
    def predict(self, image, out=None, output="probabilities", progress=None):
        """Predicts class probabilities or labels for an image of any size.

        Args:
            image: a 2D image `(height, width)`, one image with a channel
                axis (`(height, width, channels)`, or `(channels, height,
                width)` for a `"channels_first"` model), or a batch of them
                (`(batch, height, width)` for one-channel models, or 4D).
                A 3D array is read as one image when the model's channel
                axis matches `input_channels`, and as a batch of
                one-channel images otherwise; but a one-channel model
                refuses a 3D array whose last axis has 3 or 4 entries and
                is shorter than the other two (an RGB or RGBA image as
                image files are read: convert it to gray values, or pass a
                batch of such narrow images as 4D).
                Any numeric dtype; values are
                given to the model unchanged, cast to float32. A NumPy
                array, a `numpy.memmap`, a backend tensor, or any array-like
                with `shape`, `dtype` and NumPy-style slicing (read one
                tile at a time).
            out: `None` or an array to write the result into, with exactly
                the shape of the result: a floating dtype for
                probabilities, an integer dtype for labels. May be a
                `numpy.memmap` or an array-like supporting slice
                assignment. Defaults to `None` (a new NumPy array).
            output: `"probabilities"` or `"labels"` (the argmax over the
                classes, computed tile by tile). Defaults to
                `"probabilities"`.
            progress: `None` or a callable `progress(done_tiles,
                total_tiles)`, called after each batch of tiles with the
                number of tiles done so far and the total over all images
                (e.g. to feed a GUI progress bar; independent of
                `verbose`). Defaults to `None`.

        Returns:
            `out`, or a new array: probabilities of shape `(height, width,
            num_classes)` for a 2D or 3D image and `(batch, height, width,
            num_classes)` for a batch (classes first for a
            `"channels_first"` model), float32; or int32 labels of shape
            `(height, width)` or `(batch, height, width)`.
        """
        if output not in OUTPUTS:
            raise ValueError(
                f"`output` must be one of {OUTPUTS}. Received: "
                f"output={output!r}"
            )
        if progress is not None and not callable(progress):
            raise ValueError(
                "`progress` must be None or a callable "
                "`progress(done_tiles, total_tiles)`. Received: "
                f"progress={progress!r}"
            )
        image = _as_array_like(image)
        in_axes = self._image_axes(image.shape)
        dims = dict(zip(in_axes, image.shape))
        num_images = dims.get("n", 1)
        height, width = dims["h"], dims["w"]
        if 0 in image.shape:
            raise ValueError(
                "`image` must not be empty. Received an image of shape "
                f"{tuple(image.shape)}."
            )
        dtype = np.dtype(image.dtype)
        if dtype.kind not in "uif":
            raise ValueError(
                "`image` must have a real numeric dtype (integer or "
                f"floating). Received dtype {dtype}."
            )

        if output == "labels":
            out_axes = tuple(a for a in in_axes if a != "c")
        elif "c" in in_axes:
            out_axes = in_axes
        elif self._channels_first:
            out_axes = ("c",) + in_axes
        else:
            out_axes = in_axes + ("c",)
        out_dims = {"n": num_images, "h": height, "w": width}
        out_dims["c"] = self._num_classes
        out_shape = tuple(out_dims[a] for a in out_axes)
        out = self._check_or_make_out(out, out_shape, output)

        grid = self.tile_grid(height, width)
        rows = _AxisPlan(height, grid.tile_shape[0], grid.margin, self._unit)
        cols = _AxisPlan(width, grid.tile_shape[1], grid.margin, self._unit)
        reader = _ArrayView(image, in_axes)
        writer = _ArrayView(out, out_axes)
        tiles = [
            (n, i, j)
            for n in range(num_images)
            for i in range(len(rows.offsets))
            for j in range(len(cols.offsets))
        ]
        batch_size = self._batch_size_for(grid.tile_shape, len(tiles))
        progbar = None
        if self.verbose:
            progbar = keras.utils.Progbar(
                len(tiles), verbose=self.verbose, unit_name="tile"
            )
        tile_h, tile_w = grid.tile_shape
        for start in range(0, len(tiles), batch_size):
            chunk = tiles[start : start + batch_size]
            batch = np.empty(
                (len(chunk), tile_h, tile_w, self._channels), np.float32
            )
            for b, (n, i, j) in enumerate(chunk):
                _read_tile(reader, n, rows.reads[i], cols.reads[j], batch[b])
            probabilities = self._predict_batch(batch, grid.output_shape)
            if output == "labels":
                result = np.argmax(probabilities, axis=-1).astype(np.int32)
            else:
                result = probabilities
            for b, (n, i, j) in enumerate(chunk):
                r0, r1 = rows.writes[i]
                c0, c1 = cols.writes[j]
                writer.write(
                    n,
                    slice(r0, r1),
                    slice(c0, c1),
                    result[b, r0 - rows.offsets[i] : r1 - rows.offsets[i]][
                        :, c0 - cols.offsets[j] : c1 - cols.offsets[j]
                    ],
                )
            if progbar is not None:
                progbar.update(start + len(chunk))
            if progress is not None:
                progress(start + len(chunk), len(tiles))
        return out

    def tile_grid(self, height, width):
        """The tiles `predict` uses for an image of `height x width`.

        Args:
            height: int. Image height.
            width: int. Image width.

        Returns:
            A `TileGrid` named tuple `(tile_shape, output_shape, margin,
            rows, cols)`: the input tile size, the output each tile
            contributes, the context margin, and the top rows and left
            columns of the input tiles in image coordinates (negative in
            the mirrored border). Row and column starts plus the margin are
            multiples of `2**depth`.
        """
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(
                value, (int, np.integer)
            ):
                raise ValueError(
                    f"`{name}` must be an int. Received: {name}={value!r}"
                )
            if value < 1:
                raise ValueError(
                    f"`{name}` must be at least 1. Received: {name}={value}"
                )
        tile_shape = tuple(
            min(tile, self._smallest_tile_covering(int(size)))
            for tile, size in zip(self.tile_size, (height, width))
        )
        margin = self.margin
        output_shape = tuple(t - 2 * margin for t in tile_shape)
        offsets = [
            _tile_offsets(int(size), out, self._unit)
            for size, out in zip((height, width), output_shape)
        ]
        return TileGrid(
            tile_shape=tile_shape,
            output_shape=output_shape,
            margin=margin,
            rows=tuple(o - margin for o in offsets[0]),
            cols=tuple(o - margin for o in offsets[1]),
        )

    def read_mirrored(self, image, rows, cols):
        """Reads a region of the mirror-extended image, as tiles are read.

        The image is extended beyond its border by reflection without
        repeating the edge pixel (`numpy.pad(mode="reflect")`), repeatedly
        when the region reaches further than the image is wide. Only the
        needed part of `image` is read.

        Args:
            image: an image or batch, as for `predict`.
            rows: `(start, stop)` rows in image coordinates; may be
                negative or beyond the image.
            cols: `(start, stop)` columns in image coordinates.

        Returns:
            A NumPy array in the layout and dtype of `image`, with
            `stop - start` rows and columns.
        """
        image = _as_array_like(image)
        axes = self._image_axes(image.shape)
        if 0 in image.shape:
            raise ValueError(
                "`image` must not be empty. Received an image of shape "
                f"{tuple(image.shape)}."
            )
        dims = dict(zip(axes, image.shape))
        reads = []
        for name, (start, stop), size in (
            ("rows", rows, dims["h"]),
            ("cols", cols, dims["w"]),
        ):
            if not stop > start:
                raise ValueError(
                    f"`{name}` must be (start, stop) with stop > start. "
                    f"Received: {name}={(start, stop)!r}"
                )
            reads.append(_read_plan(np.arange(start, stop), size))
        view = _ArrayView(image, axes)
        region_axes = tuple(a for a in axes if a != "n")
        blocks = []
        for n in range(dims.get("n", 1)):
            block = _gather(view, n, reads[0], reads[1])
            if "c" not in axes:
                block = block[..., 0]
            else:
                block = np.moveaxis(block, -1, region_axes.index("c"))
            blocks.append(block)
        return np.stack(blocks) if "n" in axes else blocks[0]

    # === Internals ===
    def _standardize_margin(self, margin):
        context = sizes.context_margin(self._depth)
        if self._padding == "valid":
            if margin is not None:
                raise ValueError(
                    "`margin` applies to same-padding models only; a valid "
                    f"model crops its context margin ({context} px) "
                    f"itself. Received: margin={margin!r}. Leave it None."
                )
            return context
        if margin is None:
            # Interval propagation through the network shows that an output
            # pixel of a same-padding U-Net of depth >= 2 reads up to
            # `context_margin + 2` pixels to one side (the 2x2 pool and
            # up-convolution make the field asymmetric). Discarding that
            # much, rounded up to whole pooling cells, cuts away every pixel
            # that the zero padding of a tile border reaches.
            return math.ceil((context + 2) / self._unit) * self._unit
        if (
            isinstance(margin, bool)
            or not isinstance(margin, (int, np.integer))
            or margin < 0
        ):
            raise ValueError(
                "`margin` must be None or a non-negative integer. "
                f"Received: margin={margin!r}"
            )
        return int(margin)

    def _smallest_usable_tile(self):
        """Smallest valid tile whose output keeps at least `2**depth` px."""
        return self._smallest_tile_covering(self._unit)

    def _smallest_tile_covering(self, output):
        """Smallest valid tile whose kept output is at least `output` px."""
        if self._padding == "valid":
            return sizes.input_size_for_output(output, self._depth, "valid")
        return math.ceil((output + 2 * self.margin) / self._unit) * self._unit

    def _standardize_tile_size(self, tile_size):
        if isinstance(tile_size, (int, np.integer)) and not isinstance(
            tile_size, bool
        ):
            tile_size = (int(tile_size), int(tile_size))
        if (
            not isinstance(tile_size, (tuple, list))
            or len(tile_size) != 2
            or any(
                isinstance(t, bool) or not isinstance(t, (int, np.integer))
                for t in tile_size
            )
        ):
            raise ValueError(
                "`tile_size` must be None, an int or a (height, width) "
                f"tuple of ints. Received: tile_size={tile_size!r}"
            )
        smallest = self._smallest_usable_tile()
        for size in tile_size:
            size = int(size)
            if size < 1 or not sizes.is_valid_input_size(
                size, self._depth, self._padding
            ):
                below, above = sizes.nearest_valid_input_sizes(
                    max(size, 1), self._depth, self._padding
                )
                nearest = " or ".join(
                    str(s) for s in (below, above) if s is not None
                )
                raise ValueError(
                    f"Invalid `tile_size` {size} for a U-Net of depth "
                    f"{self._depth} with padding='{self._padding}': every "
                    "2x2 max-pool must see an even size "
                    f"(`model.is_valid_input_size`). Nearest valid sizes: "
                    f"{nearest}."
                )
            if size < smallest:
                raise ValueError(
                    f"`tile_size` {size} is too small: its output keeps "
                    f"{size - 2 * self.margin} px, fewer than 2**depth = "
                    f"{self._unit}, so tiles could not start at multiples "
                    f"of {self._unit}. Use a tile of at least {smallest}."
                )
        return tuple(int(s) for s in tile_size)

    def _tile_size_from_budget(self):
        if self._bytes_per_pixel is None:
            raise ValueError(
                "`tile_size` is required for a model without a `filters` "
                "attribute (the memory estimate needs it). Received "
                "tile_size=None."
            )
        smallest = self._smallest_usable_tile()
        largest = int(math.sqrt(self.memory_budget / self._bytes_per_pixel))
        candidates = sizes.valid_input_sizes(
            smallest, largest + 1, self._depth, self._padding
        )
        if not candidates:
            need = smallest**2 * self._bytes_per_pixel
            raise ValueError(
                f"`memory_budget` {self.memory_budget} bytes is too small "
                f"for the smallest usable tile ({smallest}x{smallest}, "
                f"about {need:.3g} bytes). Raise it or pass `tile_size`."
            )
        size = candidates[-1]
        return (size, size)

    def _batch_size_for(self, tile_shape, num_tiles):
        if self.batch_size is not None:
            return min(self.batch_size, num_tiles)
        if self._bytes_per_pixel is None:
            return 1
        per_tile = tile_shape[0] * tile_shape[1] * self._bytes_per_pixel
        return max(1, min(num_tiles, int(self.memory_budget // per_tile)))

    def _image_axes(self, shape):
        return _image_axes(shape, self._channels, self._channels_first)

    def _data_format_name(self):
        return "channels_first" if self._channels_first else "channels_last"

    def _check_or_make_out(self, out, shape, output):
        if out is None:
            dtype = np.int32 if output == "labels" else np.float32
            return np.empty(shape, dtype)
        out_shape = tuple(getattr(out, "shape", ()))
        if out_shape != shape:
            raise ValueError(
                f"`out` must have the shape of the result, {shape} for "
                f"output='{output}'. Received an array of shape "
                f"{out_shape}."
            )
        kind = np.dtype(getattr(out, "dtype", object)).kind
        if output == "labels" and kind not in "iu":
            raise ValueError(
                "`out` must have an integer dtype for output='labels'. "
                f"Received dtype {out.dtype}."
            )
        if output == "probabilities" and kind != "f":
            raise ValueError(
                "`out` must have a floating dtype for "
                f"output='probabilities'. Received dtype {out.dtype}."
            )
        if output == "labels" and np.iinfo(out.dtype).max < (
            self._num_classes - 1
        ):
            raise ValueError(
                f"`out` dtype {out.dtype} cannot hold labels up to "
                f"{self._num_classes - 1}. Use a wider integer dtype."
            )
        return out

    def _predict_batch(self, batch, output_shape):
        """Class probabilities of a batch, channels last, float32."""
        transforms = _TRANSFORMS[self.tta]
        total = None
        for flip_rows, flip_cols, transpose in transforms:
            x = batch
            if flip_rows:
                x = x[:, ::-1]
            if flip_cols:
                x = x[:, :, ::-1]
            if transpose:
                x = x.transpose(0, 2, 1, 3)
            y = self._forward(x)
            if transpose:
                y = y.transpose(0, 2, 1, 3)
            if flip_cols:
                y = y[:, :, ::-1]
            if flip_rows:
                y = y[:, ::-1]
            if y.shape[1:3] != tuple(output_shape):
                raise ValueError(
                    f"The model returned tiles of {y.shape[1:3]} px for "
                    f"input tiles of {batch.shape[1:3]}; expected "
                    f"{tuple(output_shape)} (input minus twice the margin "
                    f"{self.margin})."
                )
            if total is None:
                # `_forward` returns a new array; flips make it a view.
                total = np.ascontiguousarray(y)
            else:
                total += y
        if len(transforms) > 1:
            total /= len(transforms)
        return total

    def _forward(self, x):
        if self._channels_first:
            x = x.transpose(0, 3, 1, 2)
        y = self.model.predict_on_batch(np.ascontiguousarray(x))
        y = np.asarray(keras.ops.convert_to_numpy(y))
        if self._channels_first:
            y = np.moveaxis(y, 1, -1)
        if self._padding == "same" and self.margin:
            m = self.margin
            y = y[:, m : y.shape[1] - m, m : y.shape[2] - m]
        y = np.array(y, np.float32)  # A writable copy for the softmax.
        if self.model.activation is None:
            _softmax_in_place(y)
        return y


def _image_axes(shape, channels, channels_first=False):
    """Names the axes of an image: `h`, `w`, `c` (channels), `n` (images).

    Shared by `OverlapTilePredictor` and `segment_dask` (channels last).
    """
    ndim = len(shape)
    layout = "channels_first" if channels_first else "channels_last"
    channel_index = 0 if channels_first else -1
    if ndim == 2:
        axes = ("h", "w")
    elif ndim == 3:
        if shape[channel_index] == channels:
            axes = ("c", "h", "w") if channels_first else ("h", "w", "c")
        elif channels == 1:
            if shape[-1] in (3, 4) and shape[-1] < min(shape[:2]):
                # An RGB(A) file reads as (height, width, 3 or 4); as a
                # batch it would be `height` images 3 or 4 pixels wide.
                kind = "RGB" if shape[-1] == 3 else "RGBA"
                batch = "(N, 1, H, W)" if channels_first else "(N, H, W, 1)"
                raise ValueError(
                    "The model expects 1 input channel. Received an image "
                    f"of shape {tuple(shape)}, which looks like an {kind} "
                    f"image (last axis of {shape[-1]}); it is not read as "
                    f"a batch of {shape[0]} images of {shape[1]}x"
                    f"{shape[2]} px. "
                    "Convert it to gray values (e.g. "
                    "`image.mean(axis=-1)`), use a model with "
                    f"`input_channels={shape[-1]}`, or pass a batch of "
                    f"narrow images as a 4D array {batch}."
                )
            axes = ("n", "h", "w")
        else:
            raise ValueError(
                f"The model expects {channels} input channels on axis "
                f"{channel_index} ({layout}). Received an image of shape "
                f"{tuple(shape)}. Reorder or select the channels."
            )
    elif ndim == 4:
        channel_index = 1 if channels_first else -1
        if shape[channel_index] != channels:
            raise ValueError(
                f"The model expects {channels} input channels on axis "
                f"{channel_index % 4} ({layout}). Received a batch of shape "
                f"{tuple(shape)}."
            )
        axes = ("n", "c", "h", "w") if channels_first else ("n", "h", "w", "c")
    else:
        raise ValueError(
            "`image` must be 2D (height, width), 3D (one image with a "
            "channel axis, or a batch of one-channel images) or 4D (a "
            f"batch with a channel axis). Received shape {tuple(shape)} "
            f"(rank {ndim})."
        )
    if ndim == 2 and channels != 1:
        raise ValueError(
            f"The model expects {channels} input channels; a 2D image has "
            f"one. Received shape {tuple(shape)}. Add a channel axis."
        )
    return axes


def _softmax_in_place(y):
    """Softmax over the last (class) axis of a float array, in place.

    Loops over the few classes with element-wise operations: NumPy's
    reductions along a short last axis are several times slower.
    """
    num_classes = y.shape[-1]
    peak = y[..., 0].copy()
    for k in range(1, num_classes):
        np.maximum(peak, y[..., k], out=peak)
    y -= peak[..., None]
    np.exp(y, out=y)
    total = y[..., 0].copy()
    for k in range(1, num_classes):
        total += y[..., k]
    y /= total[..., None]


def _bytes_per_pixel(model):
    """Estimated activation bytes per input pixel of one tile.

    Sums, in float32, all feature maps of a U-Net: at level `l` (1 = full
    resolution, `c = filters * 2**(l - 1)` channels, `4**(l - 1)` times
    fewer pixels) two contracting convs, the up-convolution, the
    concatenation (2c) and two expanding convs; the bottom's two convs; the
    input and the output. An upper bound of what a framework keeps alive.
    """
    filters = getattr(model, "filters", None)
    if filters is None:
        return None
    depth = model.depth
    floats = 14 * filters * (1 - 2.0**-depth) + 2 * filters / 2**depth
    floats += model.input_channels + model.num_classes
    return 4 * floats


def _as_array_like(image):
    if keras.ops.is_tensor(image):
        return np.asarray(keras.ops.convert_to_numpy(image))
    if isinstance(image, np.ndarray):
        return image
    if (
        hasattr(image, "shape")
        and hasattr(image, "__getitem__")
        and hasattr(image, "dtype")
    ):
        try:
            np.dtype(image.dtype)
        except TypeError:  # e.g. a tensor of another framework
            return np.asarray(image)
        return image
    return np.asarray(image)


def _reflect(index, size):
    """Maps positions to pixels of an axis mirrored without edge repeats.

    Equal to the indices `numpy.pad(mode="reflect")` reads, also far beyond
    the axis: the mirrored axis is periodic with period `2 * (size - 1)`.
    """
    index = np.asarray(index)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index < size, index, period - index)


def _read_plan(positions, size):
    """`(slice, local indices or None)` reading mirrored `positions`."""
    index = _reflect(positions, size)
    low = int(index.min())
    high = int(index.max()) + 1
    local = index - low
    if local.size == high - low and np.array_equal(
        local, np.arange(high - low)
    ):
        return slice(low, high), None
    return slice(low, high), local


def _tile_offsets(size, output, unit):
    """Output starts (image coordinates) of the tiles along one axis.

    All are multiples of `unit`, consecutive ones at most `output` apart,
    and the last tile reaches the end of the axis.
    """
    if output >= size:
        return [0]
    step = output // unit * unit
    last = math.ceil((size - output) / unit) * unit
    return list(range(0, last, step)) + [last]


class _AxisPlan:
    """Tile reads and writes along one axis."""

    def __init__(self, size, tile, margin, unit):
        output = tile - 2 * margin
        self.offsets = _tile_offsets(size, output, unit)
        self.reads = [
            _read_plan(np.arange(o - margin, o - margin + tile), size)
            for o in self.offsets
        ]
        # Each tile writes up to where the next one starts, so that every
        # pixel is written once.
        ends = self.offsets[1:] + [size]
        self.writes = [
            (o, min(end, o + output, size))
            for o, end in zip(self.offsets, ends)
        ]


class _ArrayView:
    """Reads and writes `(rows, cols, channels)` blocks of one image.

    `axes` names the array's axes with `"n"` (batch), `"h"`, `"w"` and
    `"c"`; only basic slicing is used, so memmaps and other array-likes are
    read and written a block at a time.
    """

    def __init__(self, array, axes):
        self.array = array
        self.axes = axes
        region = [a for a in axes if a != "n"]
        self.has_channels = "c" in region
        order = ["h", "w", "c"] if self.has_channels else ["h", "w"]
        self.to_hwc = [region.index(a) for a in order]
        self.from_hwc = [order.index(a) for a in region]

    def _index(self, n, rows, cols):
        index = {"n": n, "h": rows, "w": cols, "c": slice(None)}
        return tuple(index[a] for a in self.axes)

    def read(self, n, rows, cols):
        block = np.asarray(self.array[self._index(n, rows, cols)])
        block = block.transpose(self.to_hwc)
        return block if self.has_channels else block[..., None]

    def write(self, n, rows, cols, block):
        self.array[self._index(n, rows, cols)] = block.transpose(self.from_hwc)


def _select(block, row_local, col_local):
    """Picks the mirrored rows and columns out of a read block."""
    if row_local is not None and col_local is not None:
        return block[np.ix_(row_local, col_local)]
    if row_local is not None:
        return block[row_local]
    if col_local is not None:
        return block[:, col_local]
    return block


def _gather(view, n, row_read, col_read):
    block = view.read(n, row_read[0], col_read[0])
    return _select(block, row_read[1], col_read[1])


def _read_tile(view, n, row_read, col_read, out):
    """Reads one mirrored tile into `out`, refusing NaN and infinity."""
    rows, cols = row_read[0], col_read[0]
    block = view.read(n, rows, cols)
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        raise ValueError(
            "`image` contains NaN or infinite values (image "
            f"{n}, rows {rows.start}:{rows.stop}, columns "
            f"{cols.start}:{cols.stop}). Replace them before predicting, "
            "e.g. with `numpy.nan_to_num`."
        )
    out[...] = _select(block, row_read[1], col_read[1])
