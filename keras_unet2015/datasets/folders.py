"""Loading paired image/label folders (PNG, TIFF) for training and evaluation.

The layout is the common one: a folder of images and a folder of label
images, paired by file name without suffix (`images/07.png` goes with
`labels/07.png` or `labels/07.tif`). A multi-page TIFF image goes with a
multi-page TIFF label file of the same number of pages; each page is one
sample.

Three kinds of label images are understood (`label_mode`):

- `"binary"`: two values, such as the ISBI 2012 labels (0 = membrane,
  255 = cell). The smaller value becomes class 0 and the larger class 1.
- `"classes"`: class indices `0 .. num_classes - 1` already.
- `"instances"`: instance annotations, one integer id per object and 0 for
  background (the Cell Tracking Challenge and StarDist convention). Turn
  them into a U-Net target with borders between touching objects with
  `keras_unet2015.weight_maps`.
"""

from pathlib import Path

import numpy as np

from keras_unet2015.datasets import io

LABEL_MODES = ("binary", "classes", "instances")
COLOR_MODES = ("grayscale", "rgb", "keep")


def _describe_values(values, limit=8):
    shown = ", ".join(str(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} distinct values)"
    return shown


def standardize_labels(labels, label_mode="binary", num_classes=None, name=""):
    """Checks a label image and converts it to class indices or instance ids.

    Args:
        labels: NumPy array `(height, width)` (or `(height, width, c)` with
            identical channels, as some tools save gray labels as RGB).
        label_mode: str. `"binary"`, `"classes"` or `"instances"` (see the
            module docstring). Defaults to `"binary"`.
        num_classes: int or `None`. Number of classes for
            `label_mode="classes"`; required there. Defaults to `None`.
        name: str. What to call the labels in error messages (a file name).
            Defaults to `""`.

    Returns:
        `uint8` class indices for `"binary"` and `"classes"`, `int32`
        instance ids for `"instances"`.

    Raises:
        ValueError: for unexpected label values, with the values found and
            how to fix it.

    Example:

    ```python
    >>> labels = np.array([[0, 255], [255, 0]], "uint8")  # a binary mask
    >>> keras_unet2015.datasets.standardize_labels(labels)
    array([[0, 1],
           [1, 0]], dtype=uint8)
    ```
    """
    where = f" in {name}" if name else ""
    if label_mode not in LABEL_MODES:
        raise ValueError(
            f"`label_mode` must be one of {LABEL_MODES}. Received: "
            f"label_mode={label_mode!r}"
        )
    labels = np.asarray(labels)
    if labels.ndim == 3:
        channels = labels.shape[-1]
        if channels in (3, 4) and all(
            np.array_equal(labels[..., 0], labels[..., c]) for c in (1, 2)
        ):
            labels = labels[..., 0]
        elif channels in (1, 2):  # gray, or gray and alpha
            labels = labels[..., 0]
        else:
            raise ValueError(
                f"Label image{where} has shape {labels.shape}: expected a "
                "single-channel image (height, width). Color label images "
                "are only accepted when all channels are equal."
            )
    if labels.ndim != 2:
        raise ValueError(
            f"Label image{where} has shape {labels.shape}: expected "
            "(height, width)."
        )
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(
            labels != np.round(labels)
        ):
            raise ValueError(
                f"Label image{where} holds non-integer values (dtype "
                f"{labels.dtype}). Labels must be integers: class indices, "
                "0/255 masks or instance ids. Was a probability map or a "
                "resized (interpolated) label image passed by mistake?"
            )
    values = np.unique(labels)
    if label_mode == "binary":
        if len(values) > 2:
            raise ValueError(
                f"Unexpected label values{where}: found "
                f"{_describe_values(values.tolist())}. Binary labels must "
                "have two values (such as 0 = background/membrane and "
                "255 = cell). For instance annotations (one id per object) "
                "use label_mode='instances'; for more than two classes use "
                "label_mode='classes'. JPEG-compressed masks also show "
                "extra values: save masks as PNG or TIFF."
            )
        if len(values) == 2:
            return (labels == values[1]).astype(np.uint8)
        return np.full(labels.shape, int(values[0] != 0), np.uint8)
    if values.size and values[0] < 0:
        raise ValueError(
            f"Unexpected label values{where}: found negative values "
            f"({_describe_values(values.tolist())}). Labels must be "
            "non-negative integers."
        )
    if label_mode == "classes":
        if num_classes is None:
            raise ValueError(
                "`num_classes` is required with label_mode='classes'."
            )
        if values.size and values[-1] >= num_classes:
            raise ValueError(
                f"Unexpected label values{where}: found "
                f"{_describe_values(values.tolist())}, but with "
                f"num_classes={num_classes} the classes are 0.."
                f"{num_classes - 1}. For 0/255 masks use "
                "label_mode='binary'; for instance ids use "
                "label_mode='instances'."
            )
        return labels.astype(np.uint8 if num_classes <= 256 else np.int32)
    return labels.astype(np.int32)


def _to_color_mode(image, color_mode, name):
    if color_mode == "keep":
        return image
    if image.ndim == 2:
        if color_mode == "rgb":
            return np.repeat(image[..., None], 3, axis=-1)
        return image
    if image.ndim == 3 and image.shape[-1] in (1, 2, 3, 4):
        if image.shape[-1] in (1, 2):  # gray, or gray and alpha
            image = image[..., 0]
            return _to_color_mode(image, color_mode, name)
        rgb = image[..., :3]
        if color_mode == "rgb":
            return rgb
        # ITU-R 601 luma, as Pillow's "L" conversion.
        gray = (
            rgb[..., 0].astype(np.float32) * 0.299
            + rgb[..., 1].astype(np.float32) * 0.587
            + rgb[..., 2].astype(np.float32) * 0.114
        )
        if np.issubdtype(image.dtype, np.integer):
            gray = np.round(gray).astype(image.dtype)
        return gray
    raise ValueError(
        f"Image {name} has shape {image.shape}: expected (height, width) or "
        "(height, width, channels) with 1 to 4 channels."
    )


def _split_pages(array, name):
    """A file's array as a list of 2D samples (pages of a TIFF stack)."""
    # A 3D array whose last axis is short is one color image; otherwise it
    # is a stack of 2D pages (multi-page TIFF).
    is_stack = array.ndim == 4 or (
        array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4)
    )
    if is_stack:
        return [array[i] for i in range(array.shape[0])]
    if array.ndim in (2, 3):
        return [array]
    raise ValueError(f"{name} has an unsupported shape {array.shape}.")


def load_image_folder(folder, color_mode="grayscale", return_names=False):
    """Loads every image of a folder, sorted by file name.

    Multi-page TIFF files contribute one image per page.

    Args:
        folder: str or `Path`. A folder of PNG/TIFF/JPEG images.
        color_mode: str. `"grayscale"` converts color images to gray values,
            `"rgb"` gives 3 channels, `"keep"` keeps the files' channels.
            Defaults to `"grayscale"`.
        return_names: bool. Also return a name per image (the file stem,
            with `[page]` for TIFF stacks). Defaults to `False`.

    Returns:
        A list of NumPy arrays with the files' dtypes, or `(images, names)`
        with `return_names=True`.

    Raises:
        FileNotFoundError: if the folder does not exist.
        ValueError: if the folder holds no image, or a file cannot be read.

    Example:

    ```python
    >>> images, names = keras_unet2015.datasets.load_image_folder(
    ...     "../shared/data/isbi2012/train/images", return_names=True
    ... )
    >>> len(images), images[0].shape, names[:2]
    (30, (512, 512), ['00', '01'])
    ```
    """
    if color_mode not in COLOR_MODES:
        raise ValueError(
            f"`color_mode` must be one of {COLOR_MODES}. Received: "
            f"color_mode={color_mode!r}"
        )
    paths = io.list_images(folder)
    if not paths:
        raise ValueError(
            f"No image files in {folder}. Expected files ending in "
            f"{', '.join(io.IMAGE_SUFFIXES)}."
        )
    images, names = [], []
    for path in paths:
        pages = _split_pages(io.read_image(path), path)
        for page, image in enumerate(pages):
            images.append(_to_color_mode(image, color_mode, path))
            names.append(
                path.stem if len(pages) == 1 else f"{path.stem}[{page}]"
            )
    return (images, names) if return_names else images


def pair_files(images_dir, labels_dir):
    """Pairs image and label files by name without suffix.

    Args:
        images_dir: str or `Path`. Folder of images.
        labels_dir: str or `Path`. Folder of label images.

    Returns:
        A list of `(image_path, label_path)` tuples sorted by name.

    Raises:
        FileNotFoundError: if a folder does not exist.
        ValueError: if a folder is empty, if the counts differ or if some
            files have no partner; the message names them.

    Example:

    ```python
    >>> pairs = keras_unet2015.datasets.pair_files(
    ...     "../shared/data/isbi2012/train/images",
    ...     "../shared/data/isbi2012/train/labels",
    ... )
    >>> [(image.name, label.name) for image, label in pairs[:2]]
    [('00.png', '00.png'), ('01.png', '01.png')]
    ```
    """
    image_paths = io.list_images(images_dir)
    label_paths = io.list_images(labels_dir)
    if not image_paths:
        raise ValueError(f"No image files in {images_dir}.")
    if not label_paths:
        raise ValueError(f"No label files in {labels_dir}.")
    images_by_stem = _by_stem(image_paths, images_dir)
    labels_by_stem = _by_stem(label_paths, labels_dir)
    missing_labels = sorted(set(images_by_stem) - set(labels_by_stem))
    missing_images = sorted(set(labels_by_stem) - set(images_by_stem))
    if missing_labels or missing_images:
        lines = [
            f"Mismatched image and label files: {len(image_paths)} images "
            f"in {images_dir}, {len(label_paths)} labels in {labels_dir}. "
            "Images and labels are paired by file name without suffix."
        ]
        if missing_labels:
            lines.append(
                "Images without a label: "
                f"{_describe_values(missing_labels, 5)}."
            )
        if missing_images:
            lines.append(
                "Labels without an image: "
                f"{_describe_values(missing_images, 5)}."
            )
        raise ValueError(" ".join(lines))
    return [
        (images_by_stem[stem], labels_by_stem[stem])
        for stem in sorted(images_by_stem)
    ]


def _by_stem(paths, folder):
    by_stem = {}
    for path in paths:
        if path.stem in by_stem:
            raise ValueError(
                f"Two files in {folder} have the same name without suffix: "
                f"{by_stem[path.stem].name} and {path.name}. Keep one."
            )
        by_stem[path.stem] = path
    return by_stem


def load_paired_folders(
    images_dir,
    labels_dir,
    label_mode="binary",
    num_classes=None,
    color_mode="grayscale",
    return_names=False,
):
    """Loads a folder of images and a folder of matching label images.

    Example layout (the one of `../shared/data/isbi2012`):

    ```
    train/images/00.png  train/labels/00.png
    train/images/01.png  train/labels/01.png
    ```

    Args:
        images_dir: str or `Path`. Folder of images.
        labels_dir: str or `Path`. Folder of label images with the same file
            names (any supported suffix).
        label_mode: str. `"binary"`, `"classes"` or `"instances"`, see
            `standardize_labels`. Defaults to `"binary"`.
        num_classes: int or `None`. Required for `label_mode="classes"`.
            Defaults to `None`.
        color_mode: str. `"grayscale"`, `"rgb"` or `"keep"`. Defaults to
            `"grayscale"`.
        return_names: bool. Also return one name per sample. Defaults to
            `False`.

    Returns:
        `(images, labels)`, two lists of NumPy arrays (images in their file
        dtype, labels as class indices or instance ids); with
        `return_names=True`, `(images, labels, names)`.

    Raises:
        FileNotFoundError: if a folder or file is missing.
        ValueError: for mismatched file names or counts, unreadable images,
            image and label sizes that differ, or unexpected label values;
            each message names the file.

    Example:

    ```python
    images, labels = keras_unet2015.datasets.load_paired_folders(
        "../shared/data/isbi2012/train/images",
        "../shared/data/isbi2012/train/labels",
    )
    len(images), images[0].shape, labels[0].max()  # 30, (512, 512), 1
    ```
    """
    if color_mode not in COLOR_MODES:
        raise ValueError(
            f"`color_mode` must be one of {COLOR_MODES}. Received: "
            f"color_mode={color_mode!r}"
        )
    images, labels, names = [], [], []
    for image_path, label_path in pair_files(images_dir, labels_dir):
        image_pages = _split_pages(io.read_image(image_path), image_path)
        label_pages = _split_pages(io.read_image(label_path), label_path)
        if len(image_pages) != len(label_pages):
            raise ValueError(
                f"{image_path} holds {len(image_pages)} image(s) but "
                f"{label_path} holds {len(label_pages)} label image(s); "
                "they must match page for page."
            )
        for page, (image, label) in enumerate(zip(image_pages, label_pages)):
            name = (
                image_path.stem
                if len(image_pages) == 1
                else f"{image_path.stem}[{page}]"
            )
            image = _to_color_mode(image, color_mode, image_path)
            label = standardize_labels(
                label, label_mode, num_classes, name=str(label_path)
            )
            if image.shape[:2] != label.shape:
                raise ValueError(
                    f"Image {image_path} is {image.shape[:2]} but its label "
                    f"{label_path} is {label.shape}; they must have the "
                    "same height and width."
                )
            images.append(image)
            labels.append(label)
            names.append(name)
    if return_names:
        return images, labels, names
    return images, labels


def stem(path):
    """File name without suffix (used to name outputs after inputs)."""
    return Path(path).stem
