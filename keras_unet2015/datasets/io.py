"""Reading and writing microscopy images (PNG, TIFF and other 2D formats).

PNG, JPEG, BMP and GIF files are read with Pillow; TIFF files (single- or
multi-page) with tifffile. Both are imported only when a file needs them, so
that the rest of the package works without them; a missing one raises an
`ImportError` that says what to install.
"""

from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PILLOW_SUFFIXES


def _import_pillow():
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "Reading and writing PNG/JPEG images needs Pillow. Install it "
            "with `pip install pillow`."
        ) from error
    return Image


def _import_tifffile():
    try:
        import tifffile
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "Reading and writing TIFF images needs tifffile. Install it with "
            "`pip install tifffile`."
        ) from error
    return tifffile


def is_image_file(path):
    """Whether `path` has a suffix this module can read."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder):
    """Image files of a folder, sorted by name.

    Args:
        folder: str or `Path`. The folder.

    Returns:
        A sorted list of `Path`s of the files whose suffix is one of `.png`,
        `.tif`, `.tiff`, `.jpg`, `.jpeg`, `.bmp`, `.gif` (any case). Hidden
        files are skipped.

    Raises:
        FileNotFoundError: if the folder does not exist.
        NotADirectoryError: if `folder` is a file.

    Example:

    ```python
    >>> paths = keras_unet2015.datasets.list_images(
    ...     "../shared/data/isbi2012/train/images"
    ... )
    >>> len(paths), paths[0].name, paths[-1].name
    (30, '00.png', '29.png')
    ```
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"Folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"Expected a folder, got a file: {folder}")
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and is_image_file(path)
    )


def read_image(path):
    """Reads a 2D image, or a stack of 2D images from a multi-page TIFF.

    Args:
        path: str or `Path`. A PNG, JPEG, BMP, GIF or TIFF file.

    Returns:
        A NumPy array with the file's own dtype: `(height, width)` for a
        gray-value image, `(height, width, channels)` for a color image, or
        `(pages, height, width[, channels])` for a multi-page TIFF. Palette
        PNGs are returned as their palette indices (how label images are
        usually stored).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file cannot be decoded as an image; the message
            names the file.

    Example:

    ```python
    >>> image = keras_unet2015.datasets.read_image(
    ...     "../shared/data/isbi2012/train/images/00.png"
    ... )
    >>> image.shape, image.dtype
    ((512, 512), dtype('uint8'))
    ```
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            tifffile = _import_tifffile()
            array = tifffile.imread(path)
        else:
            image_module = _import_pillow()
            with image_module.open(path) as image:
                image.load()
                if image.mode in ("I;16", "I;16B", "I;16L"):
                    array = np.asarray(image, dtype=np.uint16)
                else:
                    array = np.asarray(image)
    except ImportError:
        raise
    except Exception as error:
        raise ValueError(
            f"Could not read image file {path}: {error}. Expected a PNG, "
            "JPEG, BMP, GIF or TIFF image."
        ) from error
    array = np.asarray(array)
    if array.ndim < 2 or 0 in array.shape:
        raise ValueError(
            f"Image file {path} holds an array of shape {array.shape}; "
            "expected a 2D image (height, width[, channels])."
        )
    return array


def write_image(path, array):
    """Writes a 2D array as PNG or TIFF (chosen by the suffix).

    PNG takes `uint8` or `uint16` gray-value images and `uint8` RGB images;
    TIFF takes any dtype (use it for float probability maps) and stacks
    `(pages, height, width)`, written as one gray-value page each.

    Args:
        path: str or `Path`. Output file; its folder is created.
        array: NumPy array `(height, width)`, `(height, width, 3)` or, for
            TIFF, `(pages, height, width)`.

    Example:

    ```python
    >>> probabilities = np.random.rand(2, 64, 64).astype("float32")
    >>> keras_unet2015.datasets.write_image("out/probs.tif", probabilities)
    >>> back = keras_unet2015.datasets.read_image("out/probs.tif")
    >>> back.shape, bool((back == probabilities).all())
    ((2, 64, 64), True)
    ```

    The file is written atomically (`keras_unet2015.run_folder.atomic_write`):
    an interrupted write leaves the previous file, or none, never a partial
    image.
    """
    from keras_unet2015 import run_folder

    path = Path(path)
    array = np.asarray(array)
    suffix = path.suffix.lower()
    if suffix not in TIFF_SUFFIXES and suffix not in PILLOW_SUFFIXES:
        raise ValueError(
            f"Cannot write {path}: unknown image suffix {suffix!r}. Use "
            "one of .png, .tif, .tiff."
        )
    if suffix not in TIFF_SUFFIXES and array.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"Cannot write a {array.dtype} array as {suffix}: convert it to "
            "uint8 or uint16 first, or write a .tif file."
        )
    run_folder.atomic_write(path, lambda temporary: _write(temporary, array))


def _write(path, array):
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        tifffile = _import_tifffile()
        # Say it explicitly: tifffile would store a 3-page stack as RGB.
        is_rgb = array.ndim == 3 and array.shape[-1] in (3, 4)
        tifffile.imwrite(
            path, array, photometric="rgb" if is_rgb else "minisblack"
        )
        return
    image_module = _import_pillow()
    image_module.fromarray(array).save(path)


def to_float_image(image):
    """Converts an image to `float32` in `[0, 1]`, the network's input range.

    `uint8` images are divided by 255. Other integer images (16-bit
    microscopy often uses only part of its range) and float images outside
    `[0, 1]` are rescaled by their own minimum and maximum. Float images
    already inside `[0, 1]` are kept as they are.

    Args:
        image: NumPy array of any numeric dtype.

    Returns:
        A `float32` array of the same shape.

    Raises:
        ValueError: if the image holds NaN or infinite values.

    Example:

    ```python
    >>> keras_unet2015.datasets.to_float_image(np.array([0, 51, 255], "uint8"))
    array([0. , 0.2, 1. ], dtype=float32)
    >>> keras_unet2015.datasets.to_float_image(np.array([100, 300], "uint16"))
    array([0., 1.], dtype=float32)
    ```
    """
    image = np.asarray(image)
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    was_float = np.issubdtype(image.dtype, np.floating)
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise ValueError(
            "The image holds NaN or infinite values; clean it before use."
        )
    low, high = float(image.min()), float(image.max())
    if was_float and low >= 0.0 and high <= 1.0:
        return image
    if high == low:
        return np.zeros_like(image)
    return (image - np.float32(low)) / np.float32(high - low)
