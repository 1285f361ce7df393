"""Deterministic train/validation splits.

Serial-section EM stacks such as ISBI 2012 have strongly correlated
neighbouring slices, so a random split leaks near-copies of training slices
into the validation set. The default here is therefore a *tail* split: the
last slices (in file order) are held out, as in the ISBI 2012 recipe of this
package (train on slices 0-24, validate on 25-29). A seeded random split is
available for collections of independent images.
"""

import math

import numpy as np

SPLIT_MODES = ("tail", "random")


def parse_indices(text):
    """Parses an index list such as `"25-29"` or `"0,3,7-9"`.

    Ranges are inclusive on both ends, as people write slice ranges.

    Args:
        text: str. Comma-separated integers and `start-stop` ranges.

    Returns:
        A sorted list of unique non-negative ints.

    Raises:
        ValueError: for anything that is not such a list.

    Example:

    ```python
    >>> keras_unet2015.datasets.parse_indices("25-29")
    [25, 26, 27, 28, 29]
    ```
    """
    indices = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                start, stop = (int(p) for p in part.split("-", 1))
                if start > stop or start < 0:
                    raise ValueError
                indices.update(range(start, stop + 1))
            else:
                value = int(part)
                if value < 0:
                    raise ValueError
                indices.add(value)
        except ValueError:
            raise ValueError(
                f"Invalid index list {text!r}: expected comma-separated "
                "non-negative integers and inclusive ranges such as "
                "'25-29' or '0,3,7-9'."
            ) from None
    if not indices:
        raise ValueError(f"Invalid index list {text!r}: it is empty.")
    return sorted(indices)


def train_validation_split(
    num_samples,
    validation_fraction=0.2,
    validation_indices=None,
    mode="tail",
    seed=None,
):
    """Splits sample indices `0 .. num_samples - 1` into train and validation.

    The split is deterministic: `"tail"` holds out the last
    `ceil(validation_fraction * num_samples)` samples (at least one, and at
    least one left for training); `"random"` draws that many with a NumPy
    generator seeded by `seed`. Explicit `validation_indices` override both.

    Args:
        num_samples: int. Number of samples, at least 2.
        validation_fraction: float in `(0, 1)`. Share of samples held out.
            Defaults to `0.2`.
        validation_indices: `None`, a list of ints or a string such as
            `"25-29"`. Explicit held-out samples. Defaults to `None`.
        mode: str. `"tail"` or `"random"`. Defaults to `"tail"`.
        seed: int or `None`. Seed of the `"random"` mode (`None` means 0, so
            that the split is still reproducible). Defaults to `None`.

    Returns:
        `(train_indices, validation_indices)`, two sorted lists of ints.

    Example:

    ```python
    >>> keras_unet2015.datasets.train_validation_split(30, 1 / 6)
    ([0, 1, ..., 24], [25, 26, 27, 28, 29])
    ```
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise ValueError(
            f"`num_samples` must be an int. Received: {num_samples!r}"
        )
    if num_samples < 2:
        raise ValueError(
            "A train/validation split needs at least 2 samples. Received: "
            f"num_samples={num_samples}"
        )
    if validation_indices is not None:
        if isinstance(validation_indices, str):
            validation_indices = parse_indices(validation_indices)
        held_out = sorted({int(i) for i in validation_indices})
        bad = [i for i in held_out if not 0 <= i < num_samples]
        if bad:
            raise ValueError(
                f"Validation indices {bad} are out of range for "
                f"{num_samples} samples (valid: 0..{num_samples - 1})."
            )
        if not held_out or len(held_out) == num_samples:
            raise ValueError(
                "The validation indices must leave at least one sample for "
                f"training and hold out at least one. Received: {held_out}"
            )
    else:
        if mode not in SPLIT_MODES:
            raise ValueError(
                f"`mode` must be one of {SPLIT_MODES}. Received: {mode!r}"
            )
        if not 0 < validation_fraction < 1:
            raise ValueError(
                "`validation_fraction` must be in (0, 1). Received: "
                f"{validation_fraction!r}"
            )
        count = math.ceil(round(validation_fraction * num_samples, 9))
        count = min(max(count, 1), num_samples - 1)
        if mode == "tail":
            held_out = list(range(num_samples - count, num_samples))
        else:
            rng = np.random.default_rng(0 if seed is None else seed)
            held_out = sorted(
                int(i) for i in rng.choice(num_samples, count, replace=False)
            )
    held = set(held_out)
    train = [i for i in range(num_samples) if i not in held]
    return train, held_out
