"""Resampling helpers shared by the package's geometric augmentation layers.

Every function takes `xp`, the backend namespace to compute with: a layer's
`self.backend`, which is TensorFlow inside a `tf.data` pipeline whatever the
Keras backend is, and the Keras backend everywhere else. The same code
therefore runs eagerly, under `jax.jit`, in a PyTorch train step and in a
`tf.data` graph (where the batch size, and possibly the image size, are
dynamic tensors rather than Python ints).

Conventions: images are `(batch, rows, cols, channels)`; a sampling grid is
two `(batch, rows, cols)` float32 tensors holding, for every output pixel,
the input row and column it is read from (`output[p] = input[grid[p]]`, as
in `scipy.ndimage.map_coordinates`). Pixel `i` sits at coordinate `i`.
"""

import functools

import numpy as np

FILL_MODES = ("mirror", "reflect", "nearest", "constant")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")

# The cubic B-spline's sampled kernel is (z + 4 + 1/z) / 6; its inverse, the
# filter that turns samples into interpolation coefficients, is
# sqrt(3) * sum_k POLE^|k| z^k with POLE = sqrt(3) - 2. |POLE|^16 < 1e-9,
# so truncating the sum at |k| <= 16 is exact to float32 precision.
_SPLINE_POLE = float(np.sqrt(3.0) - 2.0)
_PREFILTER_RADIUS = 16


def _coefficient_margin(fill_mode):
    """Pixels by which the spline coefficients extend beyond the image.

    With "mirror" and "reflect" the coefficients extend as the signal does,
    so taps are folded into the image and the 4 taps of a cubic spline (1
    pixel before the sample, 2 after) need only a margin of 2. With
    "nearest" and "constant" the coefficients of the extended signal differ
    from the extension of the coefficients near the border; beyond
    `_PREFILTER_RADIUS` pixels they equal the edge value (or the constant)
    to float32 precision, so that is the margin kept.
    """
    if fill_mode in ("mirror", "reflect"):
        return 2
    return _PREFILTER_RADIUS


def fold_indices(xp, indices, size, fill_mode):
    """Maps integer indices into `[0, size)` as `fill_mode` extends a signal.

    `"mirror"` reflects about the edge pixels (`d c b | a b c d | c b a`,
    NumPy's `"reflect"`), `"reflect"` about the pixel edges
    (`c b a | a b c d | d c b`, NumPy's `"symmetric"`); `"nearest"` and
    `"constant"` clamp (the caller masks out-of-range values for
    `"constant"`). Works for indices any distance outside the signal.
    """
    if fill_mode == "mirror":
        period = xp.numpy.maximum(2 * size - 2, 1)
        indices = xp.numpy.mod(indices, period)
        return xp.numpy.where(indices >= size, period - indices, indices)
    if fill_mode == "reflect":
        period = 2 * size
        indices = xp.numpy.mod(indices, period)
        return xp.numpy.where(indices >= size, period - 1 - indices, indices)
    return xp.numpy.clip(indices, 0, size - 1)


def _cubic_bspline_weights(xp, fraction):
    """Weights of the taps at offsets -1, 0, 1, 2 for `fraction` in [0, 1)."""
    f = fraction
    g = 1.0 - f
    f2 = f * f
    f3 = f2 * f
    return (
        g * g * g / 6.0,
        (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0,
        (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0,
        f3 / 6.0,
    )


@functools.lru_cache(maxsize=None)
def _inverse_collocation_matrix(num_points):
    """Inverse of the mirror-boundary cubic B-spline collocation matrix.

    `C[i, j]` is the value at control point `i` of the spline whose only
    non-zero coefficient is `j` (with the coefficients extended by mirroring),
    so `C^-1 @ values` are the coefficients of the interpolating spline; the
    same coefficients `scipy.ndimage.spline_filter1d(mode="mirror")` gives.
    """
    collocation = np.zeros((num_points, num_points))
    for i in range(num_points):
        for offset, weight in ((-1, 1.0), (0, 4.0), (1, 1.0)):
            j = i + offset
            if num_points == 1:
                j = 0
            else:
                period = 2 * num_points - 2
                j %= period
                if j >= num_points:
                    j = period - j
            collocation[i, j] += weight / 6.0
    return np.linalg.inv(collocation).astype("float32")


def spline_interpolation_matrix(xp, num_points, size):
    """Matrix `(size, num_points)` that interpolates control values to pixels.

    The `num_points` control points lie evenly spaced from the first pixel
    (coordinate 0) to the last (coordinate `size - 1`). Row `i` of the matrix
    holds the weights with which the interpolating cubic B-spline through
    the control values, with mirror-symmetric boundary conditions, combines
    them at pixel `i`. This equals
    `scipy.ndimage.map_coordinates(values, [positions], order=3,
    mode="mirror")` and the displacement interpolation of the `elasticdeform`
    package.
    """
    pixels = xp.numpy.arange(size, dtype="float32")
    denominator = xp.numpy.maximum(xp.core.cast(size, "float32") - 1.0, 1.0)
    # Multiply first: the last pixel lands exactly on the last control point.
    positions = pixels * float(num_points - 1) / denominator
    floor = xp.numpy.floor(positions)
    fraction = positions - floor
    first_tap = xp.core.cast(floor, "int32") - 1
    basis = 0.0
    for offset, weight in enumerate(_cubic_bspline_weights(xp, fraction)):
        tap = fold_indices(xp, first_tap + offset, num_points, "mirror")
        one_hot = xp.nn.one_hot(tap, num_points, dtype="float32")
        basis = basis + one_hot * weight[:, None]
    inverse = xp.convert_to_tensor(_inverse_collocation_matrix(num_points))
    return xp.numpy.matmul(basis, inverse)


def upsample_displacements(xp, coarse, height, width):
    """Per-pixel displacements from a coarse grid, by bicubic interpolation.

    Args:
        xp: backend namespace.
        coarse: float32 tensor `(batch, 2, grid_rows, grid_cols)`: row and
            column displacements at the control points.
        height: int or scalar tensor. Number of rows of the image.
        width: int or scalar tensor. Number of columns of the image.

    Returns:
        float32 tensor `(batch, 2, height, width)`.
    """
    grid_rows, grid_cols = coarse.shape[2], coarse.shape[3]
    rows_matrix = spline_interpolation_matrix(xp, grid_rows, height)
    cols_matrix = spline_interpolation_matrix(xp, grid_cols, width)
    partial = xp.numpy.einsum("hi,bcij->bchj", rows_matrix, coarse)
    return xp.numpy.einsum("bchj,wj->bchw", partial, cols_matrix)


def _prefilter_axis(xp, images, axis, fill_mode, fill_values):
    """Cubic B-spline coefficients along `axis` (1 or 2) of `images`.

    The result covers the input extended by `_coefficient_margin(fill_mode)`
    pixels on both sides (as `fill_mode` extends it).
    """
    size = xp.core.shape(images)[axis]
    pad = _coefficient_margin(fill_mode) + _PREFILTER_RADIUS
    indices = xp.numpy.arange(-pad, size + pad, dtype="int32")
    folded = fold_indices(
        xp, indices, size, "nearest" if fill_mode == "constant" else fill_mode
    )
    padded = xp.numpy.take(images, folded, axis=axis)
    if fill_mode == "constant":
        inside = xp.numpy.logical_and(indices >= 0, indices < size)
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        inside = xp.numpy.reshape(inside, shape)
        padded = xp.numpy.where(inside, padded, fill_values)
    # A "valid" convolution with the truncated inverse filter. Channels go
    # to the batch axis so that one 1-channel kernel serves all of them.
    taps = np.arange(-_PREFILTER_RADIUS, _PREFILTER_RADIUS + 1)
    kernel = np.sqrt(3.0) * _SPLINE_POLE ** np.abs(taps)
    kernel_shape = (-1, 1, 1, 1) if axis == 1 else (1, -1, 1, 1)
    kernel = xp.convert_to_tensor(
        kernel.astype("float32").reshape(kernel_shape)
    )
    shape = xp.core.shape(padded)
    stacked = xp.numpy.reshape(
        xp.numpy.transpose(padded, (0, 3, 1, 2)),
        (-1, shape[1], shape[2], 1),
    )
    filtered = xp.nn.conv(stacked, kernel, strides=1, padding="valid")
    filtered_shape = xp.core.shape(filtered)
    filtered = xp.numpy.reshape(
        filtered, (-1, shape[3], filtered_shape[1], filtered_shape[2])
    )
    return xp.numpy.transpose(filtered, (0, 2, 3, 1))


def _take(xp, table, indices):
    """`table[indices]` along axis 0; every index is known to be in bounds.

    `keras.ops.take` accepts negative and out-of-range indices, which costs
    on CPU about as much again as the gather itself: on JAX, `jnp.take`
    checks every index ("fill" mode); on PyTorch, the backend converts the
    indices to int64 and maps negative ones with a `where`. The indices here
    are in bounds by construction, so JAX gathers in "clip" mode and PyTorch
    with `torch.index_select`: the same values, faster.
    """
    if xp.name == "jax":
        import jax.numpy as jnp

        return jnp.take(table, indices, axis=0, mode="clip")
    if xp.name == "torch":
        import torch

        # int32 indices, no copy to int64, no negative-index `where`.
        values = torch.index_select(table, 0, indices.reshape(-1))
        return values.reshape(tuple(indices.shape) + tuple(table.shape[1:]))
    return xp.numpy.take(table, indices, axis=0)


def _interpolate(xp, images, taps, combine):
    """Gathers the pixels at `taps` and combines them.

    Args:
        images: tensor `(batch, h, w, c)`.
        taps: list of `(index, inside)` pairs: flat pixel index
            `(batch, out_h, out_w)` and, for "constant", which taps are
            inside the image (else `None`).
        combine: function from the list of tap values
            `(batch, out_h, out_w, c)` to the output.
    """
    channels = images.shape[-1]
    if channels == 1:
        # On CPU, XLA gathers scalars several times faster than rows of
        # values, even rows of one.
        table = xp.numpy.reshape(images, (-1,))
        return combine(
            [_take(xp, table, index)[..., None] for index, _ in taps]
        )
    if channels is None:  # A dynamic channel count, possible in tf.data.
        channels = xp.core.shape(images)[-1]
    table = xp.numpy.reshape(images, (-1, channels))
    return combine([_take(xp, table, index) for index, _ in taps])


def fold_coordinates(xp, x, size, fill_mode):
    """Maps float coordinates into `[0, size - 1]` as `fill_mode` extends.

    For "mirror", "reflect" and "nearest" (not "constant"), linear and
    nearest-neighbour interpolation at the folded coordinate equal those at
    the original one on the extended signal (`scipy.ndimage` folds the same
    way).
    """
    last = xp.core.cast(size - 1, "float32")
    if fill_mode == "mirror":
        # Symmetric about 0 and `last`, with period `2 * last`. Every step
        # is exact in float32 for the coordinates met in practice (`abs`,
        # `mod` of a value below the period, and `period - x` for
        # `x > period / 2`), so a coordinate lands on the same side of a
        # rounding tie as in SciPy's float64 arithmetic.
        period = xp.numpy.maximum(2.0 * last, 1.0)
        x = _float_mod(xp, xp.numpy.abs(x), period)
        x = xp.numpy.where(x > last, period - x, x)
    elif fill_mode == "reflect":
        # Symmetric about -0.5 and `last + 0.5`: the same on `x + 0.5`.
        period = 2.0 * last + 2.0
        x = _float_mod(xp, xp.numpy.abs(x + 0.5), period)
        x = xp.numpy.where(x > last + 1.0, period - x, x) - 0.5
    return xp.numpy.clip(x, 0.0, last)


def _float_mod(xp, x, period):
    """`x mod period` for `x >= 0`, through `floor`.

    XLA on CPU lowers a float `mod` to a scalar `fmodf` call per element;
    `floor` vectorizes, and this is several times faster. (A result of
    exactly `period` from rounding folds to the same pixel as 0.)
    """
    return x - xp.numpy.floor(x / period) * period


class SamplingGrid:
    """Gather indices and weights shared by every array warped alike.

    Built once per call from the input position `(rows, cols)` of every
    output pixel (two float32 `(batch, height, width)` tensors), so that the
    images, the weight maps and the masks reuse the folding and index
    arithmetic.
    """

    def __init__(self, xp, rows, cols, height, width, fill_mode):
        self.xp = xp
        self.rows = rows
        self.cols = cols
        self.height = height
        self.width = width
        self.fill_mode = fill_mode
        batch = xp.core.shape(rows)[0]
        offsets = xp.numpy.arange(batch, dtype="int32") * (height * width)
        self.offsets = xp.numpy.reshape(offsets, (-1, 1, 1))
        self._folded = None
        self._linear = None
        self._nearest = None

    def _coordinates(self):
        """The coordinates, folded into the image unless "constant"."""
        if self.fill_mode == "constant":
            return self.rows, self.cols
        if self._folded is None:
            self._folded = (
                fold_coordinates(
                    self.xp, self.rows, self.height, self.fill_mode
                ),
                fold_coordinates(
                    self.xp, self.cols, self.width, self.fill_mode
                ),
            )
        return self._folded

    def _index(self, tap_rows, tap_cols):
        """Flat indices, and for "constant" which taps are inside."""
        xp = self.xp
        inside = None
        if self.fill_mode == "constant":
            inside = xp.numpy.logical_and(
                xp.numpy.logical_and(tap_rows >= 0, tap_rows < self.height),
                xp.numpy.logical_and(tap_cols >= 0, tap_cols < self.width),
            )
            tap_rows = xp.numpy.clip(tap_rows, 0, self.height - 1)
            tap_cols = xp.numpy.clip(tap_cols, 0, self.width - 1)
        return self.offsets + tap_rows * self.width + tap_cols, inside

    def linear(self):
        """Indices and inside-masks of the 4 taps, and the 2 fractions."""
        if self._linear is not None:
            return self._linear
        xp = self.xp
        rows, cols = self._coordinates()
        row_floor = xp.numpy.floor(rows)
        col_floor = xp.numpy.floor(cols)
        row_fraction = (rows - row_floor)[..., None]
        col_fraction = (cols - col_floor)[..., None]
        row0 = xp.core.cast(row_floor, "int32")
        col0 = xp.core.cast(col_floor, "int32")
        row1 = row0 + 1
        col1 = col0 + 1
        if self.fill_mode != "constant":
            # The folded coordinate lies in [0, size - 1]; at size - 1 the
            # second tap has weight 0 and is clamped onto the first.
            row1 = xp.numpy.clip(row1, 0, self.height - 1)
            col1 = xp.numpy.clip(col1, 0, self.width - 1)
        taps = [
            self._index(r, c)
            for r, c in ((row0, col0), (row0, col1), (row1, col0), (row1, col1))
        ]
        self._linear = taps, row_fraction, col_fraction
        return self._linear

    def nearest(self):
        """Index (and inside-mask) of the nearest pixel; ties round up."""
        if self._nearest is not None:
            return self._nearest
        xp = self.xp
        rows, cols = self._coordinates()
        tap_rows = xp.core.cast(xp.numpy.floor(rows + 0.5), "int32")
        tap_cols = xp.core.cast(xp.numpy.floor(cols + 0.5), "int32")
        if self.fill_mode != "constant":
            tap_rows = xp.numpy.clip(tap_rows, 0, self.height - 1)
            tap_cols = xp.numpy.clip(tap_cols, 0, self.width - 1)
        self._nearest = self._index(tap_rows, tap_cols)
        return self._nearest


def _fill(xp, values, inside, fill_values):
    if inside is None:
        return values
    return xp.numpy.where(inside[..., None], values, fill_values)


def resample(xp, images, grid, interpolation, fill_values=None):
    """Reads `images` at the input positions held by `grid`.

    Args:
        xp: backend namespace.
        images: tensor `(batch, height, width, channels)`. Float for
            `"bilinear"` and `"bicubic"`; any dtype for `"nearest"`.
        grid: a `SamplingGrid` for images of this height and width.
        interpolation: one of `"nearest"` (order 0; ties round up, as in
            SciPy), `"bilinear"` (order 1) and `"bicubic"` (cubic B-spline,
            order 3, with the exact spline prefilter).
        fill_values: for `"constant"`, a tensor broadcastable to
            `(channels,)` with the value of every channel outside the image.

    Returns:
        Tensor `(batch, out_height, out_width, channels)`, the dtype of
        `images`. It equals `scipy.ndimage.map_coordinates` with `order` 0, 1
        or 3 and `mode` `"mirror"`, `"reflect"`, `"nearest"` or
        `"grid-constant"` for the fill modes `"mirror"`, `"reflect"`,
        `"nearest"` and `"constant"`.
    """
    if interpolation == "bicubic":
        return _resample_bicubic(xp, images, grid, fill_values)
    if interpolation == "nearest":
        index, inside = grid.nearest()
        return _interpolate(
            xp,
            images,
            [(index, inside)],
            lambda values: _fill(xp, values[0], inside, fill_values),
        )
    taps, row_fraction, col_fraction = grid.linear()

    def bilinear(values):
        v00, v01, v10, v11 = (
            _fill(xp, v, inside, fill_values)
            for v, (_, inside) in zip(values, taps)
        )
        top = v00 + (v01 - v00) * col_fraction
        bottom = v10 + (v11 - v10) * col_fraction
        return top + (bottom - top) * row_fraction

    return _interpolate(xp, images, taps, bilinear)


def _resample_bicubic(xp, images, grid, fill_values):
    fill_mode = grid.fill_mode
    height, width = grid.height, grid.width
    coefficients = _prefilter_axis(xp, images, 1, fill_mode, fill_values)
    coefficients = _prefilter_axis(xp, coefficients, 2, fill_mode, fill_values)
    margin = _coefficient_margin(fill_mode)
    table_height = height + 2 * margin
    table_width = width + 2 * margin
    batch = xp.core.shape(grid.rows)[0]
    offsets = xp.numpy.arange(batch, dtype="int32") * (
        table_height * table_width
    )
    offsets = xp.numpy.reshape(offsets, (-1, 1, 1))

    def tap(tap_rows, tap_cols):
        if fill_mode in ("mirror", "reflect"):
            tap_rows = fold_indices(xp, tap_rows, height, fill_mode)
            tap_cols = fold_indices(xp, tap_cols, width, fill_mode)
        tap_rows = tap_rows + margin
        tap_cols = tap_cols + margin
        inside = None
        if fill_mode == "constant":
            inside = xp.numpy.logical_and(
                xp.numpy.logical_and(tap_rows >= 0, tap_rows < table_height),
                xp.numpy.logical_and(tap_cols >= 0, tap_cols < table_width),
            )
        # With "nearest", coefficients beyond the margin equal the edge's.
        tap_rows = xp.numpy.clip(tap_rows, 0, table_height - 1)
        tap_cols = xp.numpy.clip(tap_cols, 0, table_width - 1)
        return offsets + tap_rows * table_width + tap_cols, inside

    row_floor = xp.numpy.floor(grid.rows)
    col_floor = xp.numpy.floor(grid.cols)
    row_weights = _cubic_bspline_weights(xp, (grid.rows - row_floor)[..., None])
    col_weights = _cubic_bspline_weights(xp, (grid.cols - col_floor)[..., None])
    row_floor = xp.core.cast(row_floor, "int32")
    col_floor = xp.core.cast(col_floor, "int32")
    taps = [
        tap(row_floor + (i - 1), col_floor + (j - 1))
        for i in range(4)
        for j in range(4)
    ]

    def bicubic(values):
        output = 0.0
        for i, row_weight in enumerate(row_weights):
            line = 0.0
            for j, col_weight in enumerate(col_weights):
                k = 4 * i + j
                value = _fill(xp, values[k], taps[k][1], fill_values)
                line = line + value * col_weight
            output = output + line * row_weight
        return output

    return _interpolate(xp, coefficients, taps, bicubic)
