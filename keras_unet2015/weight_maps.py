"""The paper's per-pixel weight maps, in NumPy and SciPy.

Ronneberger et al. (2015) train with a pixel-wise weighted cross-entropy
whose weight map is precomputed from each ground-truth segmentation:

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

`w_c` balances the class frequencies, and `d1`, `d2` are the distances to
the border of the nearest and the second-nearest cell. The second term puts
a large weight on the thin background gaps between touching cells, so that
the network learns to separate them. This module computes these maps, the
class-balancing term and the separation borders between touching instances.
It runs on the CPU in the data pipeline, on NumPy arrays; pass its output to
`WeightedPixelLoss` as `sample_weight`.

Conventions used by every function here:

- Label images are 2D `(height, width)` or batches `(batch, height, width)`.
- An integer array is an instance label image: 0 is background, every other
  value is one cell. Ids need not be consecutive.
- A boolean array is a binary mask (`True` = cell); its cells are its
  connected components, with 4-connectivity (`connectivity=1`, the default)
  or 8-connectivity (`connectivity=2`).
- Distances are Euclidean, in pixels, between pixel centres: a background
  pixel next to a cell is at distance 1 from it. Only pixels inside the image
  count; the image border is not a cell border.

Reference:

- [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597), Section 3.
"""

import math
import numbers
import warnings

import numpy as np
from scipy import ndimage

DEFAULT_W0 = 10.0
DEFAULT_SIGMA = 5.0
DEFAULT_TOLERANCE = 1e-6


# === Public functions ===


def label_instances(mask, connectivity=1):
    """Instance labels of a binary mask: one id per connected component.

    Args:
        mask: array-like of bool or integers, `(height, width)` or
            `(batch, height, width)`. Non-zero pixels are cells.
        connectivity: int. `1` joins pixels that share an edge
            (4-connectivity), `2` also pixels that share a corner
            (8-connectivity). `1` keeps cells apart that only meet at a
            corner across a one-pixel diagonal membrane. Defaults to `1`.

    Returns:
        An `int32` array of the mask's shape: 0 for background, ids
        `1..n` for the `n` components (numbered per image in a batch).

    Example:

    ```python
    mask = np.array([[1, 1, 0, 1],
                     [0, 0, 0, 1]], bool)
    keras_unet2015.weight_maps.label_instances(mask)
    # array([[1, 1, 0, 2],
    #        [0, 0, 0, 2]], dtype=int32)
    ```
    """
    mask = _check_label_array(mask, "mask")
    structure = _structure(connectivity)
    return _map_images(
        lambda image: ndimage.label(image != 0, structure=structure)[0].astype(
            np.int32, copy=False
        ),
        mask,
    )


def isbi_instances(label_image, connectivity=1):
    """Cell instances of an ISBI 2012 label image (0 = membrane, 255 = cell).

    The ISBI 2012 EM labels mark membranes with 0 and cell interiors with
    255. The cells are the connected components of the 255 pixels and the
    membranes are background, which is the input `unet_weight_map` and
    `border_weight_map` expect.

    Args:
        label_image: integer array-like, `(height, width)` or
            `(batch, height, width)`, with values 0 and 255 only.
        connectivity: int. Connectivity of the cells, as in
            `label_instances`: `1` (4-connectivity, the default) does not
            let cells leak into each other through diagonal gaps in a
            membrane. Defaults to `1`.

    Returns:
        An `int32` instance label image of the same shape.

    Example:

    ```python
    from PIL import Image

    path = "../shared/data/isbi2012/train/labels/00.png"
    labels = np.array(Image.open(path))  # 0 = membrane, 255 = cell
    instances = keras_unet2015.weight_maps.isbi_instances(labels)
    weights = keras_unet2015.weight_maps.unet_weight_map(instances)
    ```
    """
    label_image = _check_label_array(label_image, "label_image")
    values = np.unique(label_image)
    if not np.isin(values, (0, 255)).all():
        raise ValueError(
            "An ISBI 2012 label image holds only the values 0 (membrane) "
            "and 255 (cell). Received values "
            f"{values[:10].tolist()}{' ...' if values.size > 10 else ''}. "
            "Threshold the labels first (e.g. `labels > 127`) and pass the "
            "boolean mask to `label_instances`."
        )
    return label_instances(label_image == 255, connectivity=connectivity)


def separate_touching_cells(instances, connectivity=2):
    """Cuts background borders between touching instances.

    The paper's targets have a thin background gap between touching cells
    ("computed using morphological operations"); instance annotations such
    as the DSB 2018 nuclei often do not. This function sets to background
    every cell pixel whose neighbourhood holds a pixel of a *different* cell
    (a grey-value dilation and erosion of the label image that disagree).
    Both sides of a contact are cut, so the result does not depend on the
    order of the ids and touching cells end up two pixels apart. Pixels that
    touch no other cell, and the ids, are unchanged. Thin parts of a cell
    that lie entirely on a contact disappear.

    Use `instances > 0` of the result as the binary U-Net target and the
    result itself for `unet_weight_map`, or call `target_and_weight_map`,
    which does all three.

    Args:
        instances: integer instance labels (0 = background),
            `(height, width)` or `(batch, height, width)`.
        connectivity: int. Neighbourhood that decides whether two cells
            touch: `1` for the 4 edge neighbours, `2` for all 8 neighbours.
            With `2` the separated cells do not even meet at a corner, so
            their binary target keeps them apart under either connectivity.
            Defaults to `2`.

    Returns:
        The instance labels with the contact pixels set to 0, same shape
        and dtype as `instances`.

    Example:

    ```python
    instances = np.array([[1, 1, 2, 2],
                          [1, 1, 2, 2]])
    keras_unet2015.weight_maps.separate_touching_cells(instances)
    # array([[1, 0, 0, 2],
    #        [1, 0, 0, 2]])
    ```
    """
    instances = _check_instances(instances)
    footprint = _structure(connectivity)
    if instances.ndim == 3:
        footprint = footprint[None]
    # "nearest" padding only repeats pixels that are already in the 3x3
    # neighbourhood, so the image edge never looks like another cell.
    largest = ndimage.maximum_filter(
        instances, footprint=footprint, mode="nearest"
    )
    # Background must not count as a different cell: lift it above every id
    # before taking the neighbourhood minimum. (Just above: SciPy's minimum
    # filter mishandles values near the int64 limit.)
    top = int(instances.max(initial=0)) + 1
    lifted = instances
    if top > np.iinfo(instances.dtype).max:
        lifted = instances.astype(np.int64)
    lifted = np.where(instances == 0, top, lifted)
    smallest = ndimage.minimum_filter(
        lifted, footprint=footprint, mode="nearest"
    )
    contact = (instances != 0) & ((largest != instances) | (smallest != lifted))
    return np.where(contact, 0, instances).astype(instances.dtype)


def border_distances(labels, max_distance=None, connectivity=1):
    """Distances `d1`, `d2` to the nearest and second-nearest cell.

    For every pixel, `d1` is the Euclidean distance to the nearest pixel of
    the nearest cell and `d2` to the nearest pixel of the second-nearest
    (different) cell. Inside a cell `d1` is 0 and `d2` is the distance to
    the nearest other cell. Missing cells give `inf` (no cell: both `inf`;
    one cell: `d2` is `inf`).

    With `max_distance`, only distances up to it are computed: any `d1` or
    `d2` larger than `max_distance` is returned as `inf`, and every returned
    finite value is exact. The cost then grows with the number of pixels
    plus the number of cells: each cell's distance transform runs on its
    bounding box grown by `max_distance` only. With `max_distance=None`
    every distance is computed (one transform per cell over the whole
    image: slow for many cells).

    Args:
        labels: integer instance labels or a boolean mask,
            `(height, width)` or `(batch, height, width)`.
        max_distance: float or `None`. Largest distance of interest, in
            pixels. Defaults to `None`.
        connectivity: int. Connectivity used to label a boolean mask, see
            `label_instances`. Defaults to `1`.

    Returns:
        A tuple `(d1, d2)` of `float64` arrays of the input's shape.

    Example:

    ```python
    instances = np.array([[1, 0, 0, 2]])
    d1, d2 = keras_unet2015.weight_maps.border_distances(instances)
    d1  # array([[0., 1., 1., 0.]])
    d2  # array([[3., 2., 2., 3.]])
    ```
    """
    instances = _as_instances(labels, connectivity)
    max_distance = _check_max_distance(max_distance)
    d1 = np.empty(instances.shape)
    d2 = np.empty(instances.shape)
    images = instances[None] if instances.ndim == 2 else instances
    out1 = d1[None] if instances.ndim == 2 else d1
    out2 = d2[None] if instances.ndim == 2 else d2
    for image, first, second in zip(images, out1, out2):
        first_sq, second_sq, missing = _two_nearest_squared(
            _cells(image), max_distance
        )
        for sq, out in ((first_sq, first), (second_sq, second)):
            np.sqrt(sq, out=out, dtype=np.float64)
            out[sq == missing] = np.inf
            if max_distance is not None:
                out[out > max_distance] = np.inf
    return d1, d2


def border_weight_map(
    labels,
    w0=DEFAULT_W0,
    sigma=DEFAULT_SIGMA,
    tolerance=DEFAULT_TOLERANCE,
    connectivity=1,
):
    """The border term `w0 * exp(-(d1 + d2)**2 / (2 * sigma**2))`.

    The term is applied to background pixels only: the gaps between cells
    that the paper wants the network to learn. Cell pixels get 0 (the
    paper's pitfall list includes applying it to the cells too). `d1` and
    `d2` are the distances of `border_distances`: where there is no second
    cell (an image with fewer than two cells) the term is 0. The image
    border is not a cell border, so a gap between a cell and the image edge
    gets no weight. Integer labels whose cells all carry one id in several
    separate regions (a 0/255 mask passed as instances) warn, as in
    `unet_weight_map`.

    Exactness: the term is below `tolerance * w0` wherever
    `d1 + d2 > D = sigma * sqrt(2 * ln(1 / tolerance))` (26.3 px for the
    defaults). Because a background pixel has `d1 >= 1`, only cells within
    `D - 1` px matter, so each cell's distance transform runs on its
    bounding box grown by `D - 1` px and the cost grows with pixels plus
    cells instead of their product. The result differs from the exact
    term by at most `tolerance * w0` (1e-5 for the defaults), and only at
    pixels where the exact term is itself below that; everywhere else it
    is exact. `tolerance=0` computes the exact term (one full-image
    transform per cell, slow).

    Args:
        labels: integer instance labels (0 = background) or a boolean
            mask, `(height, width)` or `(batch, height, width)`.
        w0: float. Height of the border term. Defaults to `10.0`.
        sigma: float. Width of the border term, in pixels. Defaults to
            `5.0`.
        tolerance: float in `[0, 1)`. Largest error allowed, as a fraction
            of `w0`. Defaults to `1e-6`.
        connectivity: int. Connectivity used to label a boolean mask, see
            `label_instances`. Defaults to `1`.

    Returns:
        A `float32` array of the input's shape.

    Example:

    ```python
    instances = np.zeros((64, 64), "int32")
    instances[10:30, 10:30] = 1
    instances[10:30, 33:50] = 7  # a 3-pixel gap between the two cells
    border = keras_unet2015.weight_maps.border_weight_map(instances)
    border[20, 31]  # d1 = d2 = 2: 10 * exp(-16 / 50) = 7.26
    ```
    """
    instances = _as_instances(labels, connectivity)
    w0, sigma = _check_w0_sigma(w0, sigma)
    cutoff = _cutoff(sigma, tolerance)
    _warn_if_mask_as_instances(labels, instances)
    return _border_term(instances, w0, sigma, cutoff)


def _border_term(instances, w0, sigma, cutoff):
    """`border_weight_map` of checked instances (see there)."""
    out = np.zeros(instances.shape, np.float32)
    images = instances[None] if instances.ndim == 2 else instances
    outputs = out[None] if instances.ndim == 2 else out
    for image, result in zip(images, outputs):
        background = image == 0
        first_sq, second_sq, missing = _border_distances_squared(
            image, background, cutoff
        )
        if cutoff is None:
            needed = second_sq != missing
        else:
            needed = second_sq <= math.floor(cutoff * cutoff)
        needed &= background
        where = np.flatnonzero(needed)
        total = np.sqrt(first_sq.ravel()[where], dtype=np.float64)
        total += np.sqrt(second_sq.ravel()[where], dtype=np.float64)
        result.ravel()[where] = w0 * np.exp(
            -(total * total) / (2.0 * sigma * sigma)
        )
    return out


def balanced_class_weights(targets, num_classes=2):
    """Inverse class frequencies, normalised to a mean pixel weight of 1.

    `weight[c] = n / (k * n_c)` with `n` the number of pixels, `n_c` the
    pixels of class `c` and `k` the number of classes present (scikit-learn's
    `"balanced"` rule). Every class then carries the same total weight and
    the mean weight over the pixels is 1. Classes that do not occur get
    weight 1. Pass one image for per-image weights, or a whole data set (an
    array or a list of arrays of any shapes) for data-set weights.

    Args:
        targets: integer class-index array, or a list of them. Values must
            be in `[0, num_classes)`.
        num_classes: int. Number of classes. Defaults to `2` (background and
            cell).

    Returns:
        A `float64` array of shape `(num_classes,)`.

    Example:

    ```python
    target = np.array([[0, 0, 0, 1]])
    keras_unet2015.weight_maps.balanced_class_weights(target)
    # array([0.66666667, 2.        ])
    ```
    """
    num_classes = _check_num_classes(num_classes)
    if isinstance(targets, (list, tuple)):
        arrays = [_check_targets(t, num_classes) for t in targets]
    else:
        arrays = [_check_targets(targets, num_classes)]
    counts = sum(_class_counts(array, num_classes) for array in arrays)
    return _balanced_from_counts(counts)


def class_weight_map(target, class_weights="balanced", num_classes=2):
    """The class-balancing term `w_c(x)` of a class-index target.

    Args:
        target: integer class-index map, `(height, width)` or
            `(batch, height, width)`, values in `[0, num_classes)`.
        class_weights: `"balanced"`, `None`, a sequence of `num_classes`
            floats or a dict `{class: weight}`. `"balanced"` uses
            `balanced_class_weights` of each image on its own (compute them
            once over a data set and pass the array for data-set weights);
            `None` gives every pixel weight 1. Defaults to `"balanced"`.
        num_classes: int. Number of classes; ignored when `class_weights`
            is a sequence or a dict. Defaults to `2`.

    Returns:
        A `float32` array of the target's shape.

    Example:

    ```python
    target = np.array([[0, 0, 0, 1]])
    keras_unet2015.weight_maps.class_weight_map(target, [1.0, 5.0])
    # array([[1., 1., 1., 5.]], dtype=float32)
    ```
    """
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                '`class_weights` must be "balanced", None, a sequence of '
                "floats or a dict {class: weight}. "
                f"Received: class_weights={class_weights!r}"
            )
        num_classes = _check_num_classes(num_classes)
        target = _check_targets(target, num_classes, ranks=(2, 3))
        return _map_images(
            lambda image: _lookup(
                _balanced_from_counts(_class_counts(image, num_classes)),
                image,
            ),
            target,
        )
    if class_weights is None:
        target = _check_targets(target, None, ranks=(2, 3))
        return np.ones(target.shape, np.float32)
    table = _class_weight_table(class_weights)
    target = _check_targets(target, table.size, ranks=(2, 3))
    return _lookup(table, target)


def unet_weight_map(
    labels,
    w0=DEFAULT_W0,
    sigma=DEFAULT_SIGMA,
    class_weights="balanced",
    tolerance=DEFAULT_TOLERANCE,
    connectivity=1,
):
    """The paper's weight map: class balance `w_c` plus the border term.

    The class term `w_c` is computed on the binary target (0 = background,
    1 = cell) with `class_weight_map`, and the border term on the
    background pixels with `border_weight_map` (see there for the
    tolerance). Cells that touch without a background gap get no border
    weight between them: separate them first with
    `separate_touching_cells`, or use `target_and_weight_map`.

    Defined results for special inputs: an image without cells gets
    `w = w_c` (1 everywhere with `"balanced"`); an image with one cell has
    no second-nearest cell and gets `w = w_c`; cells touching the image
    border are measured inside the image only. Empty labels (an image or a
    batch with no pixel) raise a `ValueError`.

    Integer labels are instance ids. An image whose cells all carry one id
    in several separate regions is what a 0/255 mask passed as instances
    looks like (the ISBI 2012 labels: one id, 255): it is one cell, and
    the border term is 0. That gives a `UserWarning` saying how to pass
    the mask (`labels == 255`, a boolean mask whose connected components
    are the cells). One cell in one piece does not warn.

    Args:
        labels: integer instance labels (0 = background) or a boolean
            mask, `(height, width)` or `(batch, height, width)`.
        w0: float. Height of the border term. Defaults to `10.0`.
        sigma: float. Width of the border term, in pixels. Defaults to
            `5.0`.
        class_weights: `"balanced"` (inverse class frequency per image),
            `None` (no balancing, `w_c = 1`), or explicit weights
            `(background, cell)` as a sequence or a dict. Defaults to
            `"balanced"`.
        tolerance: float in `[0, 1)`. Largest error of the border term, as a
            fraction of `w0`; `0` is exact and slow. Defaults to `1e-6`.
        connectivity: int. Connectivity used to label a boolean mask, see
            `label_instances`. Defaults to `1`.

    Returns:
        A `float32` weight map of the input's shape, to be passed as
        `sample_weight` with `WeightedPixelLoss`.

    Example:

    ```python
    from PIL import Image

    root = "../shared/data/isbi2012/train"
    image = np.array(Image.open(f"{root}/images/00.png"), "float32") / 255
    labels = np.array(Image.open(f"{root}/labels/00.png"))
    weights = keras_unet2015.weight_maps.unet_weight_map(labels == 255)
    target = (labels == 255).astype("uint8")

    # A small network for a quick look; the paper's is UNet2015().
    model = keras_unet2015.UNet2015(depth=2, filters=8, padding="same")
    model.compile(optimizer="sgd", loss=keras_unet2015.WeightedPixelLoss())
    model.fit(
        image[None, :128, :128, None],
        target[None, :128, :128],
        sample_weight=weights[None, :128, :128],
        verbose=0,
    )
    ```
    """
    instances = _as_instances(labels, connectivity)
    w0, sigma = _check_w0_sigma(w0, sigma)
    cutoff = _cutoff(sigma, tolerance)
    _warn_if_mask_as_instances(labels, instances)
    weights = class_weight_map(instances != 0, class_weights, num_classes=2)
    weights += _border_term(instances, w0, sigma, cutoff)
    return weights


def target_and_weight_map(
    labels,
    separate=True,
    w0=DEFAULT_W0,
    sigma=DEFAULT_SIGMA,
    class_weights="balanced",
    tolerance=DEFAULT_TOLERANCE,
    connectivity=1,
):
    """Binary U-Net target and weight map from an instance annotation.

    Turns an instance label image (such as the DSB 2018 nuclei masks) into
    the paper's training pair: touching instances are cut apart with
    `separate_touching_cells` (8-neighbourhood), the target is 1 on the
    remaining cell pixels and 0 elsewhere, and the weight map is
    `unet_weight_map` of the separated instances.

    Args:
        labels: integer instance labels (0 = background) or a boolean
            mask, `(height, width)` or `(batch, height, width)`.
        separate: bool. Whether to cut touching instances apart. Defaults
            to `True`.
        w0: float. Height of the border term. Defaults to `10.0`.
        sigma: float. Width of the border term, in pixels. Defaults to
            `5.0`.
        class_weights: class term, as in `unet_weight_map`. Defaults to
            `"balanced"`.
        tolerance: float. Border-term tolerance, as in `unet_weight_map`.
            Defaults to `1e-6`.
        connectivity: int. Connectivity used to label a boolean mask, see
            `label_instances`. Defaults to `1`.

    Returns:
        A tuple `(target, weights)`: a `uint8` array with 0 (background)
        and 1 (cell), and a `float32` weight map, both of the input's shape.

    Example:

    ```python
    import tifffile

    path = "../shared/data/stardist-dsb2018-nuclei2d/mask2d.tif"
    instances = tifffile.imread(path)  # one id per nucleus
    target, weights = keras_unet2015.weight_maps.target_and_weight_map(
        instances
    )
    ```
    """
    instances = _as_instances(labels, connectivity)
    if separate:
        instances = separate_touching_cells(instances)
    weights = unet_weight_map(
        instances,
        w0=w0,
        sigma=sigma,
        class_weights=class_weights,
        tolerance=tolerance,
    )
    return (instances != 0).astype(np.uint8), weights


# === Core ===


# Radius of the first, short-range pass of `_border_distances_squared`: it
# covers the two-pixel gaps that `separate_touching_cells` cuts.
_FIRST_PASS_DISTANCE = 4


def _border_distances_squared(image, background, cutoff):
    """`d1**2`, `d2**2` at the background pixels, exact up to `cutoff`.

    In packed tissue most background pixels lie in thin gaps between two
    cells, so both cells are within a few pixels. There a first pass with
    boxes grown by `_FIRST_PASS_DISTANCE` settles most pixels (their two
    nearest cells are then known exactly) and a second pass with the full
    `cutoff` runs only near the background pixels left over. Where the
    background is thick (membranes several pixels wide, isolated nuclei),
    most of it is far from a second cell, the first pass would settle
    little and one full pass is cheaper. The two passes are used when at
    most a tenth of the background pixels have background 2 px away in all
    four axis directions. Both ways give the same values; values at cell
    pixels are meaningless.
    """
    cells = _cells(image)
    if cutoff is None or cutoff <= 2 * _FIRST_PASS_DISTANCE:
        return _two_nearest_squared(cells, cutoff, region=background)
    if _thick_fraction(background) > 0.1:
        return _two_nearest_squared(cells, cutoff, region=background)
    first, second, missing = _two_nearest_squared(cells, _FIRST_PASS_DISTANCE)
    unresolved = second > _FIRST_PASS_DISTANCE**2
    unresolved &= background
    if unresolved.any():
        late_first, late_second, _ = _two_nearest_squared(
            cells, cutoff, region=unresolved
        )
        np.copyto(first, late_first, where=unresolved)
        np.copyto(second, late_second, where=unresolved)
    return first, second, missing


def _thick_fraction(background, step=2):
    """Fraction of background pixels with background `step` px away in all
    four axis directions (0 for two-pixel gaps between cells)."""
    thick = background.copy()
    thick[step:] &= background[:-step]
    thick[:-step] &= background[step:]
    thick[:, step:] &= background[:, :-step]
    thick[:, :-step] &= background[:, step:]
    return np.count_nonzero(thick) / max(np.count_nonzero(background), 1)


def _cells(instances):
    """The cells of a 2D label image: `(labels, ids, boxes)`.

    `boxes[k]` is the bounding box of the cell with label `ids[k]` in
    `labels` (`None` when that id does not occur).
    """
    labels, ids = _compact_ids(instances)
    return labels, ids, ndimage.find_objects(labels, max_label=ids.size)


def _two_nearest_squared(cells, max_distance, region=None):
    """Squared distances to the nearest and second-nearest cell of a 2D map.

    Runs one Euclidean feature transform per cell on the cell's bounding box
    grown by `floor(max_distance)` (the whole image when `None`) and keeps
    the two smallest values per pixel with running minima. Each cell is
    visited once, so the two values belong to different cells. Values up to
    `max_distance` are exact: every pixel within that distance of a cell
    lies in the cell's grown box (pixel coordinates are integers and a
    Euclidean distance is at least the Chebyshev distance), and a feature
    transform is exact at every pixel whose nearest cell pixel lies in the
    transform's box.

    With a boolean `region`, only the values at the region's pixels are
    needed: a cell's box is then shrunk to the region pixels in its grown
    box, grown again by `max_distance` (which still holds every cell pixel
    within `max_distance` of them), and cells with no region pixel nearby
    are skipped. Values outside the region are then meaningless.

    Returns `(first, second, missing)`: integer arrays and the sentinel that
    marks "no cell found".
    """
    labels, ids, boxes = cells
    height, width = labels.shape
    dtype = np.int32 if height * height + width * width < 2**31 else np.int64
    missing = np.iinfo(dtype).max
    first = np.full(labels.shape, missing, dtype)
    second = np.full(labels.shape, missing, dtype)
    if max_distance is None:
        margin = max(height, width)
    else:
        margin = math.floor(max_distance)
    rows = np.arange(height, dtype=dtype)[:, None]
    cols = np.arange(width, dtype=dtype)[None, :]
    for label, box in zip(ids, boxes):
        if box is None:
            continue
        top = max(box[0].start - margin, 0)
        bottom = min(box[0].stop + margin, height)
        left = max(box[1].start - margin, 0)
        right = min(box[1].stop + margin, width)
        if region is not None:
            local = region[top:bottom, left:right]
            hit_rows = np.flatnonzero(local.any(axis=1))
            if hit_rows.size == 0:
                continue
            hit_cols = np.flatnonzero(local.any(axis=0))
            top, bottom = (
                max(top + hit_rows[0] - margin, top),
                min(top + hit_rows[-1] + 1 + margin, bottom),
            )
            left, right = (
                max(left + hit_cols[0] - margin, left),
                min(left + hit_cols[-1] + 1 + margin, right),
            )
        outside = labels[top:bottom, left:right] != label
        if region is not None and outside.all():
            continue  # no pixel of this cell near the region
        nearest = ndimage.distance_transform_edt(
            outside, return_distances=False, return_indices=True
        ).astype(dtype, copy=False)
        # Squared distance to the nearest pixel of this cell, in place.
        squared, scratch = nearest[0], nearest[1]
        np.subtract(squared, rows[: bottom - top], out=squared)
        np.multiply(squared, squared, out=squared)
        np.subtract(scratch, cols[:, : right - left], out=scratch)
        np.multiply(scratch, scratch, out=scratch)
        np.add(squared, scratch, out=squared)
        # Running two smallest values (each cell is visited once, so they
        # belong to two different cells).
        window_first = first[top:bottom, left:right]
        window_second = second[top:bottom, left:right]
        np.maximum(window_first, squared, out=scratch)
        np.minimum(window_second, scratch, out=window_second)
        np.minimum(window_first, squared, out=window_first)
    return first, second, missing


def _compact_ids(instances):
    """Instances with ids small enough for `find_objects`, and the id table.

    `find_objects` returns one entry per id up to the largest, so very large
    or sparse ids (e.g. 64-bit hashes) are renumbered first. Returns the
    label array to use and `ids`, where `ids[k]` is the label of entry `k`.
    """
    largest = int(instances.max()) if instances.size else 0
    if largest <= 4 * instances.size + 1024:
        return instances, np.arange(1, largest + 1)
    values, inverse = np.unique(instances, return_inverse=True)
    inverse = inverse.reshape(instances.shape).astype(np.intp)
    if values[0] != 0:
        inverse += 1
    count = int(inverse.max()) if inverse.size else 0
    return inverse, np.arange(1, count + 1)


# === Validation ===


def _check_label_array(labels, name):
    labels = np.asarray(labels)
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`{name}` must be an integer instance label image or a boolean "
            f"mask. Received an array of dtype {labels.dtype}. Cast whole-"
            "number float labels with `labels.astype(np.int32)`, or pass "
            "`probabilities > 0.5` for a soft mask."
        )
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"`{name}` must have shape (height, width) or (batch, height, "
            f"width). Received shape {labels.shape}. Remove a trailing "
            "channel axis with `labels[..., 0]`."
        )
    if (
        labels.dtype != bool
        and labels.dtype.kind == "i"
        and labels.size
        and labels.min() < 0
    ):
        raise ValueError(
            f"`{name}` must not hold negative ids (0 is background, positive "
            f"values are cells). Received a minimum of {labels.min()}."
        )
    return labels


def _check_instances(labels):
    labels = _check_label_array(labels, "instances")
    if labels.dtype == bool:
        raise ValueError(
            "`instances` must be an integer instance label image, not a "
            "boolean mask: a mask has no ids to separate. Label it first "
            "with `keras_unet2015.weight_maps.label_instances(mask)`."
        )
    return labels


def _as_instances(labels, connectivity):
    labels = _check_label_array(labels, "labels")
    if labels.size == 0:
        raise ValueError(
            f"`labels` is empty (shape {labels.shape}): a label image needs "
            "at least one pixel, and a batch at least one image. Check the "
            "crop or the file the labels come from."
        )
    if labels.dtype == bool:
        return label_instances(labels, connectivity=connectivity)
    _structure(connectivity)
    return labels


def _warn_if_mask_as_instances(labels, instances):
    """Warns about integer labels that look like a binary mask.

    An image whose cells all carry one id, in several separate regions, is
    what a 0/255 (or 0/1) mask passed as instances looks like: it is one
    cell, and the border term (which needs two) is 0. It can also be a
    legitimate cell in pieces (cut by a crop), hence a warning.
    """
    if np.asarray(labels).dtype == bool:
        return
    images = instances[None] if instances.ndim == 2 else instances
    suspects = []
    for index, image in enumerate(images):
        ids = image[image != 0]
        if ids.size == 0 or ids.min() != ids.max():
            continue
        regions = ndimage.label(image != 0, structure=_structure(2))[1]
        if regions > 1:
            suspects.append((index, int(ids[0]), regions))
    if not suspects:
        return
    index, value, regions = suspects[0]
    if instances.ndim == 2:
        subject = "`labels` holds"
    else:
        subject = f"`labels` image {index} of the batch"
        if len(suspects) > 1:
            subject += f" (and {len(suspects) - 1} more)"
        subject += " holds"
    warnings.warn(
        f"{subject} one instance id, {value}, in {regions} "
        "separate regions: a binary mask passed as instance labels (such "
        "as the ISBI 2012 labels, 0 = membrane, 255 = cell). As instances "
        "that is one cell, and the border term, which needs two cells, is "
        f"0 everywhere. Pass the mask as booleans, `labels == {value}` "
        "(its connected components are the cells), or the ids of "
        "`weight_maps.isbi_instances(labels)` / `label_instances(labels)`"
        "; with `training.prepare_targets` use `label_mode='binary'` "
        "(`--label-mode binary` on the command line). If it really is one "
        "cell in several pieces (cut by a crop), ignore this warning.",
        UserWarning,
        stacklevel=3,
    )


def _structure(connectivity):
    if connectivity not in (1, 2) or isinstance(connectivity, bool):
        raise ValueError(
            "`connectivity` must be 1 (edge neighbours, 4-connectivity) or 2 "
            "(edge and corner neighbours, 8-connectivity). "
            f"Received: connectivity={connectivity!r}"
        )
    return ndimage.generate_binary_structure(2, connectivity)


def _map_images(fn, array):
    if array.ndim == 2:
        return fn(array)
    return np.stack([fn(image) for image in array])


def _check_max_distance(max_distance):
    if max_distance is None:
        return None
    if (
        not isinstance(max_distance, numbers.Real)
        or isinstance(max_distance, bool)
        or not max_distance >= 0
    ):
        raise ValueError(
            "`max_distance` must be None or a non-negative number of "
            f"pixels. Received: max_distance={max_distance!r}"
        )
    if math.isinf(max_distance):
        return None
    return float(max_distance)


def _check_w0_sigma(w0, sigma):
    for name, value in (("w0", w0), ("sigma", sigma)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise ValueError(
                f"`{name}` must be a number. Received: {name}={value!r}"
            )
    if not (math.isfinite(w0) and w0 >= 0):
        raise ValueError(
            f"`w0` must be a non-negative finite number. Received: w0={w0!r}"
        )
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(
            "`sigma` must be a positive finite number of pixels (the paper "
            f"uses 5; it is not sigma squared). Received: sigma={sigma!r}"
        )
    return float(w0), float(sigma)


def _cutoff(sigma, tolerance):
    """Largest cell distance that can matter at the given tolerance.

    The term is below `tolerance * w0` when `d1 + d2 > D` with
    `D = sigma * sqrt(2 ln(1 / tolerance))`; a background pixel has
    `d1 >= 1`, so a cell farther than `D - 1` never matters.
    """
    if (
        not isinstance(tolerance, numbers.Real)
        or isinstance(tolerance, bool)
        or not 0 <= tolerance < 1
    ):
        raise ValueError(
            "`tolerance` must be a number in [0, 1) (a fraction of `w0`; 0 "
            f"is exact). Received: tolerance={tolerance!r}"
        )
    if tolerance == 0:
        return None
    reach = sigma * math.sqrt(2.0 * math.log(1.0 / tolerance))
    return max(reach - 1.0, 0.0)


def _check_num_classes(num_classes):
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        raise ValueError(
            "`num_classes` must be a positive integer. "
            f"Received: num_classes={num_classes!r}"
        )
    return int(num_classes)


def _check_targets(target, num_classes, ranks=None):
    target = np.asarray(target)
    if target.dtype != bool and not np.issubdtype(target.dtype, np.integer):
        raise ValueError(
            "Class targets must be integer class indices. Received an array "
            f"of dtype {target.dtype}."
        )
    if ranks is not None and target.ndim not in ranks:
        raise ValueError(
            "The target must have shape (height, width) or (batch, height, "
            f"width). Received shape {target.shape}."
        )
    if target.dtype == bool:
        if num_classes is not None and num_classes < 2 and target.any():
            raise ValueError(
                f"Class targets must be smaller than num_classes="
                f"{num_classes}. Received a boolean target with True values."
            )
        return target
    if target.size and target.min() < 0:
        raise ValueError(
            "Class targets must be non-negative class indices. Received a "
            f"minimum of {target.min()}."
        )
    if num_classes is not None and target.size and target.max() >= num_classes:
        raise ValueError(
            f"Class targets must be smaller than num_classes={num_classes}. "
            f"Received a maximum of {target.max()}. Pass a binary target "
            "(`instances > 0`), or more class weights."
        )
    return target


def _class_counts(target, num_classes):
    """Pixels per class of a validated target (bool or integer)."""
    if num_classes <= 2:
        ones = np.count_nonzero(target)
        return np.array([target.size - ones, ones][:num_classes], np.int64)
    return np.bincount(target.ravel(), minlength=num_classes)


def _lookup(table, target):
    """`table[target]` as float32; a select for two classes (faster)."""
    table = np.asarray(table, np.float32)
    if table.size == 2:
        return np.where(target.astype(bool, copy=False), table[1], table[0])
    return table[target]


def _balanced_from_counts(counts):
    weights = np.ones(counts.shape, np.float64)
    present = counts > 0
    if present.any():
        weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def _class_weight_table(class_weights):
    if isinstance(class_weights, dict):
        keys = list(class_weights)
        if not keys or any(
            isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0
            for k in keys
        ):
            raise ValueError(
                "A `class_weights` dict must map non-negative class indices "
                f"to weights. Received: class_weights={class_weights!r}"
            )
        table = np.full(max(keys) + 1, np.nan)
        for key, value in class_weights.items():
            table[key] = value
        if np.isnan(table).any():
            missing = np.flatnonzero(np.isnan(table)).tolist()
            raise ValueError(
                f"`class_weights` has no weight for classes {missing}. "
                f"Received: class_weights={class_weights!r}"
            )
    else:
        try:
            table = np.asarray(class_weights, dtype=np.float64)
        except (TypeError, ValueError):
            table = None
        if table is None or table.ndim != 1 or table.size == 0:
            raise ValueError(
                '`class_weights` must be "balanced", None, a sequence of '
                "floats or a dict {class: weight}. "
                f"Received: class_weights={class_weights!r}"
            )
    if not np.isfinite(table).all() or (table < 0).any():
        raise ValueError(
            "Class weights must be finite and non-negative. "
            f"Received: class_weights={class_weights!r}"
        )
    return table.astype(np.float32)
