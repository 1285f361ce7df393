"""Random training tiles cut from mirrored images (shared by both streams).

The paper trains on large tiles whose output covers part of a training
image and whose input sees the full context of that output; where the
context reaches beyond the image it is mirrored (NumPy `mode="reflect"`, as
the authors' scripts do). `TileSampler` draws such tiles: it mirrors every
image, label map and weight map once, then each sample is a slice. The
label and weight tiles have the *input* size here, so that an augmentation
can warp image, labels and weights together with the full context; the
streams crop them to the output size afterwards (`center_crop`).

Every sample is a pure function of `(seed, epoch, index, slot)`: the same
key always gives the same tile, whichever worker computes it and in
whichever order, which makes training runs reproducible and resumable.
"""

import numpy as np

from keras_unet2015 import _label_checks
from keras_unet2015.datasets import io


def standardize_size(size, name):
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool)
            for s in size
        )
        or min(size) < 1
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a (height, width) tuple of "
            f"positive ints. Received: {name}={size!r}"
        )
    return (int(size[0]), int(size[1]))


def _as_list(arrays, name):
    if arrays is None:
        return None
    if isinstance(arrays, np.ndarray):
        if arrays.ndim < 2:
            raise ValueError(
                f"`{name}` must be a list of 2D arrays or an array of them. "
                f"Received an array of shape {arrays.shape}."
            )
        if arrays.ndim == 2:
            return [arrays]
        return [arrays[i] for i in range(arrays.shape[0])]
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError(f"`{name}` is empty.")
    return arrays


def center_crop(array, size, axes=(1, 2)):
    """Crops the center `size` of `array` along two axes."""
    slices = [slice(None)] * array.ndim
    for axis, target in zip(axes, size):
        extra = array.shape[axis] - target
        if extra < 0 or extra % 2:
            raise ValueError(
                f"Cannot center-crop axis {axis} of size {array.shape[axis]} "
                f"to {target}: the difference must be even and >= 0."
            )
        slices[axis] = slice(extra // 2, extra // 2 + target)
    return array[tuple(slices)]


def _check_num_classes(num_classes):
    if num_classes is None:
        return None
    return _label_checks.check_num_classes(
        num_classes, "None or a positive int (the classes of the model)"
    )


def _check_ignore_class(ignore_class):
    if ignore_class is None:
        return None
    if isinstance(ignore_class, bool) or not isinstance(
        ignore_class, (int, np.integer)
    ):
        raise ValueError(
            "`ignore_class` must be None or an integer label value. "
            f"Received: ignore_class={ignore_class!r}"
        )
    return int(ignore_class)


class TileSampler:
    """Draws aligned random tiles of mirrored images, labels and weights.

    Args:
        images: list of `(height, width)` or `(height, width, channels)`
            arrays, or an array `(n, height, width[, channels])`. Converted
            with `keras_unet2015.datasets.io.to_float_image`.
        labels: list or array of `(height, width)` integer class maps.
        weights: `None` or list or array of `(height, width)` weight maps;
            `None` gives weight 1 everywhere.
        input_size: `(height, width)` of the input tiles.
        output_size: `(height, width)` of the network output for them.
        seed: int. Base seed.
        num_classes: int or `None`. Labels must lie in `[0, num_classes)`
            (or equal `ignore_class`); `None` only rejects negative labels
            and 0/255 masks.
        ignore_class: int or `None`. A label value that is no class (the
            loss's `ignore_class`).

    Labels and weight maps are checked once, here: labels must be integer
    class indices (`_label_checks.check_class_labels`) and weights finite
    and non-negative (`_label_checks.check_weights`).
    """

    def __init__(
        self,
        images,
        labels,
        weights,
        input_size,
        output_size,
        seed,
        num_classes=None,
        ignore_class=None,
    ):
        images = _as_list(images, "images")
        labels = _as_list(labels, "labels")
        weights = _as_list(weights, "weights")
        if images is None or labels is None:
            raise ValueError("`images` and `labels` are required.")
        if len(images) != len(labels):
            raise ValueError(
                f"Got {len(images)} images but {len(labels)} label maps; "
                "they must match one to one."
            )
        if weights is not None and len(weights) != len(images):
            raise ValueError(
                f"Got {len(images)} images but {len(weights)} weight maps; "
                "they must match one to one."
            )
        self.input_size = standardize_size(input_size, "input_size")
        self.output_size = standardize_size(output_size, "output_size")
        margins = []
        for axis in (0, 1):
            extra = self.input_size[axis] - self.output_size[axis]
            if extra < 0 or extra % 2:
                raise ValueError(
                    "`input_size` must exceed `output_size` by an even "
                    f"number of pixels on each axis (the context the "
                    f"network crops). Received: input_size="
                    f"{self.input_size}, output_size={self.output_size}"
                )
            margins.append(extra // 2)
        self.margin = tuple(margins)
        self.seed = int(seed)
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_class = _check_ignore_class(ignore_class)

        channels = None
        self._images, self._labels, self._weights = [], [], []
        self._pads, self._areas = [], []
        for i, (image, label) in enumerate(zip(images, labels)):
            image = io.to_float_image(image)
            if image.ndim == 2:
                image = image[..., None]
            if image.ndim != 3:
                raise ValueError(
                    f"Image {i} has shape {image.shape}: expected (height, "
                    "width) or (height, width, channels)."
                )
            if channels is None:
                channels = image.shape[-1]
            elif image.shape[-1] != channels:
                raise ValueError(
                    f"Image {i} has {image.shape[-1]} channels, image 0 has "
                    f"{channels}; all images need the same channels."
                )
            label = np.asarray(label)
            if label.shape != image.shape[:2]:
                raise ValueError(
                    f"Label map {i} has shape {label.shape} but its image is "
                    f"{image.shape[:2]}."
                )
            if not np.issubdtype(label.dtype, np.integer):
                raise ValueError(
                    f"Label map {i} has dtype {label.dtype}; expected integer "
                    "class indices (see datasets.standardize_labels)."
                )
            _label_checks.check_class_labels(
                label,
                f"Label map {i}",
                num_classes=self.num_classes,
                ignore_class=self.ignore_class,
            )
            if weights is None:
                weight = None
            else:
                weight = np.asarray(weights[i])
                if weight.shape != image.shape[:2]:
                    raise ValueError(
                        f"Weight map {i} has shape {weight.shape} but its "
                        f"image is {image.shape[:2]}."
                    )
                _label_checks.check_weights(weight, f"Weight map {i}")
                weight = weight.astype(np.float32, copy=False)
            # Mirror so that any output window inside the image (or, for
            # images smaller than the output, the window holding the image)
            # has its full input context.
            pads = []
            for axis in (0, 1):
                short = max(0, self.output_size[axis] - image.shape[axis])
                pads.append(self.margin[axis] + short)
            pad = ((pads[0], pads[0]), (pads[1], pads[1]))
            self._images.append(np.pad(image, pad + ((0, 0),), "reflect"))
            self._labels.append(np.pad(label.astype(np.int32), pad, "reflect"))
            self._weights.append(
                None if weight is None else np.pad(weight, pad, "reflect")
            )
            self._pads.append(tuple(pads))
            self._areas.append(image.shape[0] * image.shape[1])
        self.channels = channels
        self.num_images = len(self._images)
        areas = np.asarray(self._areas, np.float64)
        self._probabilities = areas / areas.sum()

    def rng(self, epoch, index, slot):
        """The generator of one sample, from its key."""
        return np.random.default_rng(
            [self.seed, int(epoch), int(index), int(slot)]
        )

    def locate(self, epoch, index, slot):
        """Where a sample's output window lies.

        Images are picked with probability proportional to their area, and
        the output window uniformly among the positions inside the image
        (or holding the image, when it is smaller than the window).

        Returns:
            `(image_index, top, left)`: the output window's top-left corner
            in the image's own coordinates. The input tile starts
            `margin` pixels above and left of it, in the mirrored image.
        """
        rng = self.rng(epoch, index, slot)
        n = int(rng.choice(self.num_images, p=self._probabilities))
        corner = []
        for axis in (0, 1):
            size = self._images[n].shape[axis] - 2 * self._pads[n][axis]
            out = self.output_size[axis]
            low, high = min(0, size - out), max(0, size - out)
            corner.append(int(rng.integers(low, high + 1)))
        return n, corner[0], corner[1]

    def sample(self, epoch, index, slot):
        """One tile: `(image, labels, weights)` at the input size.

        Returns `float32 (h, w, channels)`, `int32 (h, w)`, `float32 (h, w)`
        cut at `locate(epoch, index, slot)` from the mirrored arrays.
        """
        n, top, left = self.locate(epoch, index, slot)
        row = top + self._pads[n][0] - self.margin[0]
        col = left + self._pads[n][1] - self.margin[1]
        rows = slice(row, row + self.input_size[0])
        cols = slice(col, col + self.input_size[1])
        weights = self._weights[n]
        if weights is None:
            weight_tile = np.ones(self.input_size, np.float32)
        else:
            weight_tile = weights[rows, cols]
        return (
            self._images[n][rows, cols],
            self._labels[n][rows, cols],
            (weight_tile),
        )

    def batch(self, epoch, index, batch_size):
        """`batch_size` stacked samples of the key `(epoch, index)`."""
        samples = [self.sample(epoch, index, s) for s in range(batch_size)]
        images, labels, weights = zip(*samples)
        return np.stack(images), np.stack(labels), np.stack(weights)
