"""Segmentation measures of the challenges the 2015 U-Net was evaluated on.

ISBI 2012 EM segmentation challenge (Arganda-Carreras et al., 2015), as
computed by the challenge's Fiji evaluation (`trainableSegmentation.metrics`
`PixelError` and `RandError`), on a probability map of *cell interior*
(1 = cell, 0 = membrane; the challenge's convention) against binary labels:

- **pixel error** = 1 - the maximal F-score of pixel similarity: for each
  threshold t, pixels with probability > t are positive; the F-score of
  that classification against the labels (label > 0 is positive) is
  computed from true/false positives and false negatives summed over all
  slices; the error is 1 minus the best F-score over the thresholds.
- **Rand error** = 1 - the maximal F-score of the foreground-restricted
  Rand index: for each threshold t, the segments of the prediction are the
  4-connected components of `probability > t` and those of the ground truth
  the 4-connected components of `label > 0`. Only pixels inside ground-truth
  segments count (membrane pixels of the ground truth are ignored), and
  pixels the prediction puts on a membrane (below the threshold) count as
  segments of their own (singletons). With `n_ij` the number of pixels in
  ground-truth segment i and predicted segment j, `a_i` and `b_j` the
  segment sizes and `c` the singletons, Rand precision is
  `(sum n_ij^2 + c) / (sum b_j^2 + c)` and recall
  `(sum n_ij^2 + c) / sum a_i^2` (the challenge's "N^2 normalization", pairs
  of pixels counted with order and with themselves); the counts are summed
  over slices, and the error is 1 minus the best F-score over thresholds.
  `normalization="pairs"` counts unordered pairs of distinct pixels instead
  (`x^2` becomes `x (x - 1)`, singletons count 0): the convention of the
  SNEMI3D adapted Rand error and of `skimage.metrics.adapted_rand_error`,
  which gives the same value when the prediction leaves no ground-truth
  pixel unassigned.

The thresholds default to 0.0, 0.1, ..., 1.0 as in the challenge's scripts.
These are the measures of the paper's Table 1 (Rand error 0.0382, pixel
error 0.0611 on the hidden test labels); the challenge's leaderboard later
switched to scores after border thinning, which are not implemented here.

Cell tracking challenge (Maška et al., 2014), the paper's Table 2 "IOU":

- **SEG** (`seg_score`): for each ground-truth object R, the predicted
  object S covering more than half of R is its match; the score is the mean
  over ground-truth objects of the Jaccard index `|R & S| / |R | S|` (0 for
  unmatched objects).
- `jaccard_index`: the plain intersection over union of two binary masks.

All functions take NumPy arrays and run on the CPU (SciPy for connected
components); they are meant for validation and evaluation, not for use
inside a compiled training step.
"""

import numpy as np
from scipy import ndimage

#: The challenge's thresholds: 0.0, 0.1, ..., 1.0.
DEFAULT_THRESHOLDS = tuple(np.round(np.linspace(0.0, 1.0, 11), 10))
NORMALIZATIONS = ("n2", "pairs")

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
_EIGHT_CONNECTED = ndimage.generate_binary_structure(2, 2)


def _as_stack(array, name):
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        return array
    raise ValueError(
        f"`{name}` must be a 2D map (height, width) or a stack "
        f"(slices, height, width). Received shape {array.shape}."
    )


def _check_probabilities(probabilities, labels):
    probabilities = _as_stack(probabilities, "probabilities")
    labels = _as_stack(labels, "labels")
    if probabilities.shape != labels.shape:
        raise ValueError(
            f"`probabilities` {probabilities.shape} and `labels` "
            f"{labels.shape} must have the same shape. Pass the probability "
            "of the cell (foreground) class only, e.g. `probs[..., 1]`."
        )
    if not np.issubdtype(probabilities.dtype, np.floating):
        probabilities = probabilities.astype(np.float64)
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("`probabilities` holds NaN or infinite values.")
    if probabilities.size and (
        probabilities.min() < 0.0 or probabilities.max() > 1.0
    ):
        raise ValueError(
            "`probabilities` must lie in [0, 1]. Received values in "
            f"[{probabilities.min()}, {probabilities.max()}]: pass "
            "probabilities (after softmax), not logits."
        )
    return probabilities, _check_labels(labels)


def _check_labels(labels):
    labels = np.asarray(labels)
    if labels.dtype == np.bool_:
        return labels
    if not np.issubdtype(labels.dtype, np.integer):
        if np.any(labels != np.round(labels)):
            raise ValueError(
                "`labels` must be integer (binary) labels. Received "
                f"non-integer values of dtype {labels.dtype}."
            )
    if labels.size and labels.min() < 0:
        raise ValueError("`labels` must be non-negative.")
    return labels > 0


def _check_thresholds(thresholds):
    thresholds = np.asarray(
        DEFAULT_THRESHOLDS if thresholds is None else thresholds, np.float64
    ).ravel()
    if thresholds.size == 0:
        raise ValueError("`thresholds` must not be empty.")
    return thresholds


def _structure(connectivity):
    if connectivity == 4:
        return _FOUR_CONNECTED
    if connectivity == 8:
        return _EIGHT_CONNECTED
    raise ValueError(
        f"`connectivity` must be 4 or 8. Received: {connectivity!r}"
    )


def segment(probabilities, threshold=0.5, connectivity=4):
    """Cell segments of a probability map: connected components above it.

    Args:
        probabilities: array `(height, width)` or `(slices, height, width)`
            of cell (foreground) probabilities.
        threshold: float. Pixels with probability `> threshold` are cell.
            Defaults to `0.5`.
        connectivity: int. `4` (the challenge's choice) or `8`. Defaults to
            `4`.

    Returns:
        `int32` segment ids of the same shape, `1..n` per slice, 0 for
        pixels at or below the threshold.

    Example:

    ```python
    >>> probabilities = np.array([[0.9, 0.8, 0.1, 0.7]])
    >>> keras_unet2015.metrics.segment(probabilities)
    array([[1, 1, 0, 2]], dtype=int32)
    ```
    """
    probabilities = np.asarray(probabilities)
    stack = _as_stack(probabilities, "probabilities")
    structure = _structure(connectivity)
    out = np.zeros(stack.shape, np.int32)
    for i, plane in enumerate(stack):
        out[i] = ndimage.label(plane > threshold, structure=structure)[0]
    return out.reshape(probabilities.shape)


def _rand_sums(true_segments, pred_segments, normalization):
    """(sum_ab, sum_a, sum_b) of one slice, see the module docstring."""
    inside = true_segments > 0
    true_ids = true_segments[inside].astype(np.int64)
    pred_ids = pred_segments[inside].astype(np.int64)
    assigned = pred_ids > 0
    singletons = int(np.count_nonzero(~assigned))

    def squares(counts):
        counts = counts.astype(np.float64)
        if normalization == "n2":
            return float(np.sum(counts * counts))
        return float(np.sum(counts * (counts - 1.0)))

    sum_a = squares(np.unique(true_ids, return_counts=True)[1])
    pred_assigned = pred_ids[assigned]
    sum_b = squares(np.unique(pred_assigned, return_counts=True)[1])
    joint = true_ids[assigned] * (int(pred_ids.max(initial=0)) + 1)
    joint += pred_assigned
    sum_ab = squares(np.unique(joint, return_counts=True)[1])
    if normalization == "n2":
        sum_b += singletons
        sum_ab += singletons
    return sum_ab, sum_a, sum_b


def _f_score(sum_ab, sum_a, sum_b):
    if sum_a + sum_b == 0:
        raise ValueError(
            "The ground truth has no foreground (cell) pixels: the Rand "
            "F-score is undefined."
        )
    return 2.0 * sum_ab / (sum_a + sum_b)


def rand_f_score(true_segments, pred_segments, normalization="n2"):
    """Foreground-restricted Rand F-score of two segmentations.

    Args:
        true_segments: int array `(height, width)` or `(slices, height,
            width)`; ground-truth segment ids, 0 = boundary/background
            (ignored).
        pred_segments: int array of the same shape; predicted segment ids,
            0 = boundary (each such pixel is its own segment).
        normalization: str. `"n2"` (the ISBI 2012 challenge) or `"pairs"`
            (SNEMI3D / scikit-image). Defaults to `"n2"`.

    Returns:
        The F-score in `[0, 1]`, from counts summed over slices; 1 means
        the segmentations agree on the ground-truth foreground.

    Example:

    ```python
    >>> true_segments = np.array([[1, 1, 0, 2, 2]])
    >>> keras_unet2015.metrics.rand_f_score(true_segments, true_segments)
    1.0
    >>> merged = np.array([[1, 1, 1, 1, 1]])  # the two cells merged
    >>> keras_unet2015.metrics.rand_f_score(true_segments, merged) < 1.0
    True
    ```
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}. Received: "
            f"{normalization!r}"
        )
    true_segments = _as_stack(true_segments, "true_segments")
    pred_segments = _as_stack(pred_segments, "pred_segments")
    if true_segments.shape != pred_segments.shape:
        raise ValueError(
            f"`true_segments` {true_segments.shape} and `pred_segments` "
            f"{pred_segments.shape} must have the same shape."
        )
    for name, array in (
        ("true_segments", true_segments),
        ("pred_segments", pred_segments),
    ):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"`{name}` must hold integer segment ids.")
        if array.size and array.min() < 0:
            raise ValueError(f"`{name}` must be non-negative.")
    totals = np.zeros(3)
    for true_slice, pred_slice in zip(true_segments, pred_segments):
        totals += _rand_sums(true_slice, pred_slice, normalization)
    return float(_f_score(*totals))


def rand_error(
    probabilities,
    labels,
    thresholds=None,
    connectivity=4,
    normalization="n2",
    return_details=False,
):
    """ISBI 2012 Rand error: 1 - maximal foreground-restricted Rand F-score.

    See the module docstring for the exact definition.

    Args:
        probabilities: float array `(height, width)` or `(slices, height,
            width)` in `[0, 1]`: probability of cell interior.
        labels: binary labels of the same shape (label > 0 is cell, e.g.
            the ISBI 0/255 labels or 0/1 class indices).
        thresholds: `None` or a sequence of floats. `None` uses 0.0, 0.1,
            ..., 1.0. Defaults to `None`.
        connectivity: int. `4` or `8`, for ground truth and prediction.
            Defaults to `4`.
        normalization: str. `"n2"` or `"pairs"`. Defaults to `"n2"`.
        return_details: bool. Also return a dict with the best threshold
            and the F-score per threshold. Defaults to `False`.

    Returns:
        The Rand error (a float in `[0, 1]`, lower is better), or
        `(error, details)`.

    Example:

    ```python
    >>> labels = np.array([[1, 1, 0, 1, 1]])
    >>> probabilities = np.array([[0.9, 0.8, 0.1, 0.7, 0.9]])
    >>> keras_unet2015.metrics.rand_error(probabilities, labels)
    0.0
    ```
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}. Received: "
            f"{normalization!r}"
        )
    probabilities, foreground = _check_probabilities(probabilities, labels)
    thresholds = _check_thresholds(thresholds)
    structure = _structure(connectivity)
    true_segments = [
        ndimage.label(plane, structure=structure)[0] for plane in foreground
    ]
    scores = []
    for threshold in thresholds:
        totals = np.zeros(3)
        for true_slice, plane in zip(true_segments, probabilities):
            pred_slice = ndimage.label(plane > threshold, structure=structure)
            totals += _rand_sums(true_slice, pred_slice[0], normalization)
        scores.append(_f_score(*totals))
    return _finish(scores, thresholds, return_details)


def pixel_error(probabilities, labels, thresholds=None, return_details=False):
    """ISBI 2012 pixel error: 1 - maximal F-score of pixel similarity.

    See the module docstring for the exact definition.

    Args:
        probabilities: float array `(height, width)` or `(slices, height,
            width)` in `[0, 1]`: probability of cell interior.
        labels: binary labels of the same shape (label > 0 is cell).
        thresholds: `None` or a sequence of floats. `None` uses 0.0, 0.1,
            ..., 1.0. Defaults to `None`.
        return_details: bool. Also return a dict with the best threshold
            and the F-score per threshold. Defaults to `False`.

    Returns:
        The pixel error (a float in `[0, 1]`, lower is better), or
        `(error, details)`.

    Example:

    ```python
    >>> labels = np.array([[1, 1, 0, 0]])
    >>> probabilities = np.array([[0.9, 0.4, 0.2, 0.1]])
    >>> keras_unet2015.metrics.pixel_error(probabilities, labels)
    0.0
    ```
    """
    probabilities, positive = _check_probabilities(probabilities, labels)
    thresholds = _check_thresholds(thresholds)
    total_positive = int(np.count_nonzero(positive))
    scores = []
    for threshold in thresholds:
        predicted = probabilities > threshold
        tp = int(np.count_nonzero(predicted & positive))
        fp = int(np.count_nonzero(predicted)) - tp
        fn = total_positive - tp
        denominator = 2 * tp + fp + fn
        scores.append(1.0 if denominator == 0 else 2.0 * tp / denominator)
    return _finish(scores, thresholds, return_details)


def _finish(scores, thresholds, return_details):
    scores = np.asarray(scores, np.float64)
    best = int(np.argmax(scores))
    error = float(1.0 - scores[best])
    if not return_details:
        return error
    return error, {
        "best_threshold": float(thresholds[best]),
        "thresholds": thresholds.tolist(),
        "f_scores": scores.tolist(),
    }


def jaccard_index(labels, predictions):
    """Intersection over union of two binary masks (foreground = value > 0).

    Args:
        labels: array of ground-truth labels.
        predictions: array of predicted labels of the same shape.

    Returns:
        `|labels & predictions| / |labels | predictions|`, and 1.0 when both
        masks are empty.

    Example:

    ```python
    >>> labels = np.array([[1, 1, 0, 0]])
    >>> predictions = np.array([[1, 0, 0, 1]])
    >>> round(keras_unet2015.metrics.jaccard_index(labels, predictions), 4)
    0.3333
    ```
    """
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"`labels` {labels.shape} and `predictions` {predictions.shape} "
            "must have the same shape."
        )
    a, b = labels > 0, predictions > 0
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(a & b) / union)


def seg_score(true_instances, pred_instances, return_per_object=False):
    """Cell tracking challenge SEG: mean Jaccard index of matched objects.

    A ground-truth object R is matched by the predicted object S that covers
    more than half of its pixels (`|R & S| > 0.5 |R|`; at most one can). The
    score is the mean over ground-truth objects of `|R & S| / |R | S|`, with
    0 for an unmatched object.

    Args:
        true_instances: int array `(height, width)` (or a stack): one id per
            ground-truth object, 0 = background.
        pred_instances: int array of the same shape: predicted object ids,
            0 = background (see `segment` to get them from probabilities).
        return_per_object: bool. Also return a dict `{id: jaccard}`.
            Defaults to `False`.

    Returns:
        The SEG score in `[0, 1]` (higher is better), `nan` if the ground
        truth has no object; or `(score, per_object)`. For stacks, objects
        of every slice are pooled (ids are taken per slice).

    Example:

    Object 1 is matched exactly (Jaccard 1); object 2 is covered by a
    predicted object on half of its pixels only, which is not a match
    (Jaccard 0):

    ```python
    >>> true_instances = np.array([[1, 1, 0, 2, 2]])
    >>> pred_instances = np.array([[3, 3, 0, 0, 4]])
    >>> keras_unet2015.metrics.seg_score(true_instances, pred_instances)
    0.5
    ```
    """
    true_instances = _as_stack(true_instances, "true_instances")
    pred_instances = _as_stack(pred_instances, "pred_instances")
    if true_instances.shape != pred_instances.shape:
        raise ValueError(
            f"`true_instances` {true_instances.shape} and `pred_instances` "
            f"{pred_instances.shape} must have the same shape."
        )
    per_object = {}
    for index, (true_slice, pred_slice) in enumerate(
        zip(true_instances, pred_instances)
    ):
        true_slice = true_slice.astype(np.int64).ravel()
        pred_slice = pred_slice.astype(np.int64).ravel()
        true_ids, true_sizes = np.unique(
            true_slice[true_slice > 0], return_counts=True
        )
        pred_ids, pred_sizes = np.unique(
            pred_slice[pred_slice > 0], return_counts=True
        )
        pred_size = dict(zip(pred_ids.tolist(), pred_sizes.tolist()))
        both = (true_slice > 0) & (pred_slice > 0)
        base = int(pred_slice.max(initial=0)) + 1
        pairs, overlaps = np.unique(
            true_slice[both] * base + pred_slice[both], return_counts=True
        )
        matched = {}
        for pair, overlap in zip(pairs.tolist(), overlaps.tolist()):
            matched.setdefault(pair // base, []).append((pair % base, overlap))
        for true_id, size in zip(true_ids.tolist(), true_sizes.tolist()):
            score = 0.0
            for pred_id, overlap in matched.get(true_id, []):
                if overlap > 0.5 * size:
                    score = overlap / (size + pred_size[pred_id] - overlap)
            key = true_id if len(true_instances) == 1 else (index, true_id)
            per_object[key] = score
    score = float(np.mean(list(per_object.values()))) if per_object else np.nan
    return (score, per_object) if return_per_object else score


def evaluate(probabilities, labels, thresholds=None):
    """All ISBI 2012 measures of a probability map, plus the foreground IoU.

    Args:
        probabilities: float array `(height, width)` or `(slices, height,
            width)`: probability of cell interior.
        labels: binary labels of the same shape (label > 0 is cell).
        thresholds: `None` or a sequence of floats for the pixel and Rand
            errors. Defaults to `None`.

    Returns:
        A dict with `pixel_error`, `rand_error` (1 - maximal F-scores over
        the thresholds) and `jaccard` (intersection over union of
        `probabilities > 0.5` with the cell labels).

    Example:

    ```python
    >>> labels = np.array([[1, 1, 0, 1, 1]])
    >>> probabilities = np.array([[0.9, 0.8, 0.1, 0.7, 0.9]])
    >>> keras_unet2015.metrics.evaluate(probabilities, labels)
    {'pixel_error': 0.0, 'rand_error': 0.0, 'jaccard': 1.0}
    ```
    """
    probabilities, foreground = _check_probabilities(probabilities, labels)
    return {
        "pixel_error": pixel_error(probabilities, foreground, thresholds),
        "rand_error": rand_error(probabilities, foreground, thresholds),
        "jaccard": jaccard_index(foreground, probabilities > 0.5),
    }
