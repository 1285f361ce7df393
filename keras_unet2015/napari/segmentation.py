"""What the napari widget computes, as plain functions on NumPy arrays.

Nothing here imports napari or Qt: the widget calls these functions in a
worker thread, and they can be used (and tested) without a GUI.
"""

import collections
import threading
from pathlib import Path

import numpy as np

OUTPUTS = ("probabilities", "labels", "instances")
TTA_MODES = (None, "flips", "dihedral")

# Loaded models by source: ("preset", name) or ("file", path, mtime, size),
# so that a `.keras` file written again is loaded again. Few entries: a
# model holds its weights in memory.
_CACHE_SIZE = 2
_cache = collections.OrderedDict()
_cache_lock = threading.Lock()


def load_model(source):
    """Loads a `UNet2015` from a preset name or a `.keras` file, once.

    The model is cached per source (the file's path, modification time and
    size for a file), so that running the widget again does not read the
    model again; the two most recently used models are kept.

    Args:
        source: str or `Path`. A name from
            `keras_unet2015.UNet2015.list_presets()`, or the path of a
            `.keras` file holding a `keras_unet2015.UNet2015`.

    Returns:
        The `keras_unet2015.UNet2015`, not compiled.

    Raises:
        ValueError: if `source` is empty, not a preset nor an existing
            `.keras` file, cannot be read as a Keras model, or holds a
            model that is not a `UNet2015`.
    """
    import keras_unet2015

    key = _cache_key(source)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        if key[0] == "preset":
            model = keras_unet2015.UNet2015.from_preset(key[1])
        else:
            model = _load_file(Path(key[1]))
        _cache[key] = model
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return model


def clear_model_cache():
    """Forgets the models `load_model` has loaded."""
    with _cache_lock:
        _cache.clear()


def parse_tile_size(text):
    """The tile size typed into the widget: `None` for "auto", or an int.

    Args:
        text: str. `"auto"` (any case), empty, or a positive integer.

    Returns:
        `None` or the int.

    Raises:
        ValueError: for anything else.
    """
    text = str(text).strip()
    if text.lower() in ("", "auto"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            "The tile size must be 'auto' or a positive integer (a valid "
            f"input size of the model, e.g. 572). Received: {text!r}"
        )
    return value


def segment_image(
    image,
    model,
    outputs=("probabilities",),
    tile_size=None,
    memory_budget=2**31,
    tta=None,
    foreground_class=1,
    threshold=0.5,
    rescale=True,
    rgb=False,
    progress=None,
):
    """Segments a 2D image or a stack of 2D images with overlap-tile.

    Runs `keras_unet2015.OverlapTilePredictor` once over all planes and
    derives every requested output from the same class probabilities.

    Args:
        image: array-like. A 2D gray image `(height, width)`, a stack of
            them `(planes, height, width)` (each plane is predicted on its
            own), or, for a model with `input_channels > 1`, an image with
            its channels last (`rgb=True`): `(height, width, channels)` or
            `(planes, height, width, channels)`.
        model: a `keras_unet2015.UNet2015`.
        outputs: sequence of `"probabilities"`, `"labels"` and
            `"instances"`. Defaults to `("probabilities",)`.
        tile_size: `None` or int. Largest input tile; `None` picks it from
            `memory_budget`. Defaults to `None`.
        memory_budget: int. Bytes the activations of the tiles in flight
            may take (`OverlapTilePredictor`'s `memory_budget`): sets the
            automatic tile size and the number of tiles per forward pass.
            Defaults to `2**31` (2 GiB).
        tta: `None`, `"flips"` or `"dihedral"`. Test-time augmentation.
            Defaults to `None`.
        foreground_class: int. Class whose probability is returned and
            thresholded into instances. Defaults to `1`.
        threshold: float. Instances are the 4-connected components of
            pixels whose foreground probability is `> threshold`. Defaults
            to `0.5`.
        rescale: bool. Scale each plane to `[0, 1]` as training does
            (`keras_unet2015.datasets.to_float_image`: `uint8` / 255,
            other integers and floats outside `[0, 1]` by their minimum and
            maximum). Defaults to `True`.
        rgb: bool. Whether the last axis of `image` holds channels.
            Defaults to `False`.
        progress: `None` or a callable `progress(done_tiles, total_tiles)`,
            passed to `OverlapTilePredictor.predict`. Defaults to `None`.

    Returns:
        A dict from each requested output to an array of the image's
        spatial shape (`(height, width)` or `(planes, height, width)`):
        `"probabilities"` float32 foreground probabilities, `"labels"`
        int32 argmax classes, `"instances"` int32 segment ids (`1..n` per
        plane, 0 elsewhere, as `keras_unet2015.metrics.segment`).
    """
    import keras_unet2015
    from keras_unet2015.datasets import to_float_image

    outputs = tuple(outputs)
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown or not outputs:
        raise ValueError(
            f"`outputs` must be a non-empty selection of {OUTPUTS}. "
            f"Received: outputs={outputs!r}"
        )
    if tta not in TTA_MODES:
        raise ValueError(f"`tta` must be one of {TTA_MODES}. Received: {tta!r}")
    num_classes = model.num_classes
    if not 0 <= foreground_class < num_classes:
        raise ValueError(
            f"Foreground class {foreground_class} is not a class of the "
            f"model, which has {num_classes} classes (0..{num_classes - 1})."
        )
    planes, spatial_shape = _standardize_image(image, model, rgb)
    if rescale:
        planes = np.stack([to_float_image(plane) for plane in planes])
    if model.data_format == "channels_first":
        planes = np.moveaxis(planes, -1, 1)
    predictor = keras_unet2015.OverlapTilePredictor(
        model,
        tile_size=tile_size,
        memory_budget=memory_budget,
        tta=tta,
        verbose=0,
    )
    probabilities = predictor.predict(planes, progress=progress)
    if model.data_format == "channels_first":
        probabilities = np.moveaxis(probabilities, 1, -1)
    result = {}
    foreground = probabilities[..., foreground_class]
    if "probabilities" in outputs:
        result["probabilities"] = foreground.reshape(spatial_shape)
    if "labels" in outputs:
        labels = np.argmax(probabilities, axis=-1).astype(np.int32)
        result["labels"] = labels.reshape(spatial_shape)
    if "instances" in outputs:
        instances = keras_unet2015.metrics.segment(foreground, threshold)
        result["instances"] = instances.reshape(spatial_shape)
    return result


def _standardize_image(image, model, rgb):
    """`(planes, height, width, channels)` of an image, and its 2D shape."""
    image = np.asarray(image)
    channels = model.input_channels
    if image.dtype.kind not in "uif":
        raise ValueError(
            "The image must hold real numbers (integers or floats). "
            f"Received dtype {image.dtype}."
        )
    if rgb:
        if image.shape[-1] != channels:
            raise ValueError(
                f"The model expects {channels} input channel"
                f"{'s' if channels > 1 else ''}; the layer is a color image "
                f"with {image.shape[-1]}. Convert it to "
                f"{'gray values' if channels == 1 else f'{channels} channels'}"
                " first (right-click the layer > Split RGB makes one gray "
                "layer per channel)."
            )
        if image.ndim not in (3, 4):
            raise ValueError(
                "A color image must be (height, width, channels) or a stack "
                f"(planes, height, width, channels). Received shape "
                f"{image.shape}."
            )
        spatial_shape = image.shape[:-1]
        planes = image.reshape((-1,) + image.shape[-3:])
        return planes, spatial_shape
    if channels != 1:
        raise ValueError(
            f"The model expects {channels} input channels; the layer has "
            "gray values (one channel). Choose a color layer with "
            f"{channels} channels."
        )
    if image.ndim not in (2, 3):
        raise ValueError(
            "The image must be 2D (height, width) or a stack of 2D images "
            f"(planes, height, width). Received shape {image.shape} "
            f"({image.ndim}D); split it first (right-click the layer > "
            "Split Stack)."
        )
    spatial_shape = image.shape
    planes = image.reshape((-1,) + image.shape[-2:] + (1,))
    return planes, spatial_shape


def _cache_key(source):
    import keras_unet2015

    if source is None or not str(source).strip():
        raise ValueError("Choose a preset or a `.keras` file to load.")
    if isinstance(source, str) and source in (
        keras_unet2015.UNet2015.list_presets()
    ):
        return ("preset", source)
    path = Path(source).expanduser()
    if path.suffix != ".keras":
        raise ValueError(
            f"{str(source)!r} is neither a preset "
            f"({', '.join(keras_unet2015.UNet2015.list_presets())}) nor a "
            "`.keras` file."
        )
    if not path.is_file():
        raise ValueError(f"The model file {path} does not exist.")
    path = path.resolve()
    stat = path.stat()
    return ("file", str(path), stat.st_mtime_ns, stat.st_size)


def _load_file(path):
    import keras

    import keras_unet2015

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(
            f"Could not load {path} as a Keras model: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(model, keras_unet2015.UNet2015):
        raise ValueError(
            f"{path} holds a {type(model).__name__}, not a "
            "keras_unet2015.UNet2015: the widget segments with U-Nets "
            "saved by this package (`model.save('model.keras')`)."
        )
    return model
