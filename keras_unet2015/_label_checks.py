"""Checks of label and weight arrays, run where NumPy data enters.

Labels and weight maps enter the package as NumPy arrays: at
`training.prepare_targets`, at the training sample streams
(`TrainingSampleStream`, `make_tf_dataset`), at the command line (which
goes through both) and at `WeightedPixelLoss` called on NumPy arrays.
Checking them there costs one pass over the data and gives a message that
says what was found, where, and how to fix it. Inside a compiled training
step nothing can be raised, so the streams and `prepare_targets` check
their inputs once, when they are built, and never per batch.
"""

import numpy as np

MASK_HINT = (
    "The labels hold 0 and 255, a 0/255 mask (such as the ISBI 2012 "
    "labels, 0 = membrane, 255 = cell): pass `--label-mode binary` (command "
    "line) or `label_mode='binary'` (`datasets.standardize_labels`, "
    "`training.prepare_targets`), or divide them by 255 (`labels // 255`)."
)


def describe_values(values, limit=8):
    """`0, 1, 255` or `0, 1, 2, ... (300 distinct values)`."""
    values = [_plain(v) for v in values]
    shown = ", ".join(str(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} distinct values)"
    return shown


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float):
        return int(value) if value.is_integer() else float(f"{value:.6g}")
    return value


def _pixels(count):
    count = int(count)
    return f"{count} pixel" if count == 1 else f"{count} pixels"


def _first(mask):
    """`(2, 5)`: the index of the first True pixel, as plain ints."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _is_mask(values):
    values = set(np.asarray(values).tolist())
    return 255 in values and values <= {0, 255}


def whole_number_labels(labels, name):
    """`labels` as a NumPy integer array; raises for other values.

    Booleans and integers pass unchanged. Floats must be finite whole
    numbers (label images saved as floats) and are returned as `int64`.
    """
    labels = np.asarray(labels)
    kind = labels.dtype.kind
    if kind in "biu":
        return labels
    if kind != "f":
        raise ValueError(
            f"{name} must be a numeric array of integer labels. Received "
            f"an array of dtype {labels.dtype}."
        )
    finite = np.isfinite(labels)
    if not finite.all():
        raise ValueError(
            f"{name} holds NaN or infinite values "
            f"({_pixels(np.count_nonzero(~finite))}, the first at "
            f"{_first(~finite)}). Labels must be "
            "integers: class indices, 0/255 masks or instance ids."
        )
    fractional = labels != np.round(labels)
    if fractional.any():
        found = np.unique(labels[fractional])
        raise ValueError(
            f"{name} holds non-integer values ({describe_values(found, 4)}; "
            f"{_pixels(np.count_nonzero(fractional))}, the first at "
            f"{_first(fractional)}). Labels must be whole numbers: class "
            "indices, 0/255 masks or instance ids. Was a probability map "
            "passed (threshold it, `probabilities > 0.5`) or a label image "
            "resized with interpolation (resize labels with nearest-"
            "neighbour interpolation)?"
        )
    return labels.astype(np.int64)


def check_num_classes(num_classes, expected):
    """`num_classes` as an int; raises unless it is a positive integer.

    `expected` says what was expected in the message (e.g. "a positive
    int").
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            f"`num_classes` must be {expected}. Received: "
            f"num_classes={num_classes!r}"
        )
    return int(num_classes)


def check_class_labels(labels, name, num_classes=None, ignore_class=None):
    """Raises unless `labels` are class indices of `num_classes` classes.

    Valid values are the integers in `[0, num_classes)` and
    `ignore_class`. With `num_classes=None` the class count is unknown:
    then negative values (other than `ignore_class`) and 0/255 masks are
    rejected. Returns the labels as an integer (or boolean) array.
    """
    labels = whole_number_labels(labels, name)
    if labels.size == 0:
        return labels
    low, high = int(labels.min()), int(labels.max())
    if num_classes is None:
        if low >= 0 and high != 255:
            return labels  # the usual case, without a pass of np.unique
    elif low >= 0 and high < num_classes:
        return labels
    present = np.unique(labels)
    if ignore_class is not None:
        present = present[present != ignore_class]
    if num_classes is None and _is_mask(present):
        raise ValueError(f"{name} is not a map of class indices. {MASK_HINT}")
    valid = labels >= 0
    if num_classes is not None:
        valid &= labels < num_classes
    if ignore_class is not None:
        valid |= labels == ignore_class
    if valid.all():
        return labels
    bad = ~valid
    found = np.unique(labels[bad])
    if num_classes is None:
        expected = "non-negative class indices"
    else:
        expected = f"integer class labels in [0, {num_classes})"
    if ignore_class is not None:
        expected += f" or the ignore_class {ignore_class}"
    message = (
        f"{name} must hold {expected}; found {describe_values(found, 4)} "
        f"({_pixels(np.count_nonzero(bad))}, the first at {_first(bad)})."
    )
    if _is_mask(present):
        message += f" {MASK_HINT}"
    elif ignore_class is None and found.size == 1:
        value = _plain(found[0])
        message += (
            f" If {value} marks unlabelled pixels, pass "
            f"`ignore_class={value}` (to the loss and the sample stream)"
        )
        if num_classes is not None:
            message += (
                f"; otherwise map the labels to 0..{num_classes - 1}, or "
                "build the model with more classes."
            )
        else:
            message += "."
    elif num_classes is not None:
        message += (
            f" Map the labels to 0..{num_classes - 1}, or build the model "
            "with more classes."
        )
    raise ValueError(message)


def check_weights(weights, name):
    """Raises unless `weights` are finite and non-negative.

    Returns the weights as a float array (`float32` unless they are
    `float64`).
    """
    weights = np.asarray(weights)
    if weights.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must be a numeric array of weights. Received an array "
            f"of dtype {weights.dtype}."
        )
    if weights.dtype.kind != "f":
        weights = weights.astype(np.float32)
    if weights.size == 0:
        return weights
    if np.isfinite(weights).all() and weights.min() >= 0:
        return weights
    problems = []
    for label, mask in (
        ("NaN", np.isnan(weights)),
        ("infinite", np.isinf(weights)),
        ("negative", weights < 0),
    ):
        count = np.count_nonzero(mask)
        if count:
            problems.append(
                f"{label} at {_pixels(count)} (the first at {_first(mask)})"
            )
    raise ValueError(
        f"{name} holds NaN/negative values: {', '.join(problems)}. Weights "
        "must be finite and >= 0 (0 leaves a pixel out of the loss). "
        "Recompute the weight map (`weight_maps.unet_weight_map`), or "
        "repair it with `np.maximum(np.nan_to_num(w, nan=0.0), 0.0)`."
    )


def check_label_map(label, index, label_mode, num_classes):
    """One label map of `training.prepare_targets`, checked.

    Returns it as an integer array (booleans become `uint8`).
    """
    name = f"Label map {index}"
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(
            f"{name} has shape {label.shape}: expected (height, width). "
            "Pass a list of 2D label maps (remove a channel axis with "
            "`label[..., 0]`)."
        )
    if label.size == 0:
        raise ValueError(f"{name} is empty (shape {label.shape}).")
    label = whole_number_labels(label, name)
    if label.dtype == bool:
        label = label.astype(np.uint8)
    if label_mode == "classes":
        check_num_classes(num_classes, "a positive int")
        check_class_labels(label, name, num_classes)
        return label
    low = label.min()
    if low < 0:
        bad = label < 0
        raise ValueError(
            f"{name} holds negative values "
            f"({describe_values(np.unique(label[bad]), 4)}; "
            f"{_pixels(np.count_nonzero(bad))}, the first at {_first(bad)})."
            f" With label_mode="
            f"{label_mode!r} labels are non-negative: 0 is background."
        )
    if label_mode == "binary":
        values = np.unique(label)
        if values.size > 2 or (values.size == 2 and values[0] != 0):
            raise ValueError(
                f"{name} holds the values "
                f"{describe_values(values)}, but binary labels "
                "hold 0 (background) and one other value (cell), such as "
                "the 0/255 ISBI 2012 labels. For instance ids (one per "
                "object) use label_mode='instances' (`--label-mode "
                "instances` on the command line); for class maps "
                "label_mode='classes'; for two values without 0, map them "
                "first (e.g. `labels == labels.max()`)."
            )
    return label


def check_instances_are_not_masks(labels):
    """Raises when `"instances"` labels are binary masks (one id each)."""
    from scipy import ndimage

    pieces = None
    for label in labels:
        ids = label[label != 0]
        if ids.size and ids.min() != ids.max():
            return  # a map with two ids: instance labels
        if ids.size and pieces is None:
            count = ndimage.label(label != 0, structure=np.ones((3, 3)))[1]
            if count > 1:
                pieces = (int(ids[0]), count)
    if pieces is None:
        return  # one connected object per map: a legitimate instance map
    value, count = pieces
    raise ValueError(
        "label_mode='instances', but every label map holds at most one "
        f"object id (found {value} in {count} separate regions of one "
        "map): these are binary masks, not instance labels. As instances "
        "each map would be one object, and the border term between "
        "touching objects (which needs two) would be 0 everywhere. Pass "
        "label_mode='binary' (`--label-mode binary` on the command line), "
        "whose objects are the connected components of the mask, or label "
        "the objects first (`weight_maps.label_instances(labels > 0)`)."
    )
