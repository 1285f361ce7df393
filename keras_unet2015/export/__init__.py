"""Export a `UNet2015` for serving: ONNX, TF SavedModel, LiteRT, BioImage.IO.

A network with valid convolutions maps a tile to a smaller output, and only
some tile sizes are valid (`keras_unet2015.sizes`). Serving runtimes want
graphs with known shapes, so `export_model` first builds the graph it
writes (`serving_model`): a float32 copy of the model that takes any valid
tile size (`tile_size=None`) or one fixed tile (`tile_size=572`), the batch
size left free. It then writes the artifact:

| format | written to | run by |
|---|---|---|
| `"onnx"` | `.onnx` file | onnxruntime |
| `"tf_saved_model"` | folder | `tf.saved_model.load`, TF Serving |
| `"litert"` | `.tflite` file | the LiteRT interpreter (`ai_edge_litert`) |
| `"bioimageio"` | `.zip` package | deepImageJ, ilastik, `bioimageio.core` |

Graphs that take any valid size are written on the TensorFlow backend
(only its converters keep the spatial sizes symbolic through the
crop-and-concat); fixed-size graphs by the current backend where Keras can
write the format there (`NATIVE_FORMATS`). Otherwise the conversion runs on
the TensorFlow backend in a subprocess, from the same weights (TensorFlow
must be installed); the artifact computes the same function: the tests
compare every artifact with the Keras model of the calling backend.

Example:

```python
import numpy as np
import keras_unet2015

model = keras_unet2015.UNet2015(depth=1, filters=4)
keras_unet2015.export.export_model(model, "unet.onnx", tile_size=44)

import onnxruntime

session = onnxruntime.InferenceSession("unet.onnx")
x = np.zeros((1, 44, 44, 1), "float32")
logits = session.run(None, {session.get_inputs()[0].name: x})[0]
logits.shape  # (1, 28, 28, 2): a 44 px tile gives 28 px of output
```
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_unet2015 import run_folder
from keras_unet2015 import sizes

__all__ = ["export_model", "run_artifact", "serving_model"]

FORMATS = ("onnx", "tf_saved_model", "litert", "bioimageio")

# The formats Keras 3.15 writes on each backend with the packages this
# project installs (checked by tests/test_export.py). The others go through
# the TensorFlow backend in a subprocess: PyTorch's SavedModel export fails
# in `torch.export` (dynamic shapes of a one-input model), LiteRT needs
# `litert-torch` on PyTorch and is refused by Keras on JAX, and ONNX on JAX
# needs `jax2onnx`.
NATIVE_FORMATS = {
    "jax": ("tf_saved_model",),
    "tensorflow": ("onnx", "tf_saved_model", "litert"),
    "torch": ("onnx",),
}

# A SavedModel whose "serve" endpoint returns a dict, as bioimageio.core
# wants (internal: used by `export_bioimageio`).
BIOIMAGEIO_SAVED_MODEL = "_bioimageio_saved_model"

SUFFIXES = {"onnx": ".onnx", "litert": ".tflite", "bioimageio": ".zip"}


_ENGINE_ENV = "KERAS_UNET2015_EXPORT_ENGINE"


def _check_unet(model):
    from keras_unet2015.models.unet2015 import UNet2015

    if not isinstance(model, UNet2015):
        raise ValueError(
            "`model` must be a `keras_unet2015.UNet2015` (load a `.keras` "
            "file with `keras.saving.load_model` after `import "
            f"keras_unet2015`). Received: {type(model).__name__}"
        )


def _standardize_tile(tile_size, model):
    if tile_size is None:
        return (None, None)
    if isinstance(tile_size, int) and not isinstance(tile_size, bool):
        tile_size = (tile_size, tile_size)
    if (
        not isinstance(tile_size, (tuple, list))
        or len(tile_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) for s in tile_size)
    ):
        raise ValueError(
            "`tile_size` must be None, an int or a (height, width) tuple of "
            f"ints. Received: tile_size={tile_size!r}"
        )
    for axis, size in zip(("height", "width"), tile_size):
        sizes.check_input_size(
            size, model.depth, model.padding, name=f"tile {axis}"
        )
    return tuple(tile_size)


def serving_model(model, tile_size=None):
    """The graph `export_model` writes: float32, the model's weights.

    A copy of `model` built for any valid input size or for one
    (`image_size`), with the float32 dtype policy (a mixed-precision or
    bfloat16 model is cast: ONNX and LiteRT converters and most runtimes
    want float32), computing
    in `"channels_last"` inside. A `"channels_first"` model keeps its
    layout at the inputs and outputs (a transpose on each side), so the
    artifact takes what the model takes on every runtime, including
    TensorFlow on CPUs, which has no channels-first convolutions.

    Args:
        model: a `keras_unet2015.UNet2015`.
        tile_size: `None`, an int or `(height, width)`: the input size of
            the graph, a valid size for the model (`keras_unet2015.sizes`).
            Defaults to `None`: any valid size (height and width each
            `keras_unet2015.sizes.smallest_valid_input(depth)` plus a
            multiple of `2**depth`).

    Returns:
        A built Keras model: a `UNet2015`, or for a `"channels_first"`
        model a functional model around one.

    Example:

    ```python
    >>> model = keras_unet2015.UNet2015(depth=1, filters=4)
    >>> served = keras_unet2015.export.serving_model(model, tile_size=44)
    >>> served.input_shape, served.output_shape
    ((None, 44, 44, 1), (None, 28, 28, 2))
    >>> keras_unet2015.export.serving_model(model).input_shape
    (None, None, None, 1)
    ```
    """
    from keras_unet2015.models.unet2015 import UNet2015

    _check_unet(model)
    tile = _standardize_tile(tile_size, model)
    config = model.get_config()
    config.update(image_size=tile, dtype="float32", data_format="channels_last")
    config.pop("name", None)
    inner = UNet2015.from_config(config)
    weights = [
        keras.ops.convert_to_numpy(keras.ops.cast(w, "float32"))
        for w in model.weights
    ]
    if len(weights) != len(inner.weights):
        raise RuntimeError(
            f"The serving copy has {len(inner.weights)} weights, the model "
            f"{len(weights)}: please report this as a bug."
        )
    inner.set_weights(weights)
    if model.data_format == "channels_last":
        return inner
    inputs = keras.Input((model.input_channels, *tile), name="image")
    x = keras.layers.Permute((2, 3, 1), name="to_channels_last")(inputs)
    x = inner(x)
    outputs = keras.layers.Permute((3, 1, 2), name="to_channels_first")(x)
    return keras.Model(inputs, outputs, name=f"{inner.name}_channels_first")


def _check_path(path, format, overwrite):
    path = Path(path)
    suffix = SUFFIXES.get(format)
    if suffix is not None and path.suffix != suffix:
        raise ValueError(
            f"A {format!r} export is written to a `{suffix}` file. Received "
            f"path={str(path)!r}; use e.g. {str(path.with_suffix(suffix))!r}."
        )
    if format == "tf_saved_model" and path.suffix in (".keras", ".h5"):
        raise ValueError(
            "A 'tf_saved_model' export is a folder, not a "
            f"`{path.suffix}` file. Received path={str(path)!r}."
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists. Pass overwrite=True (`--overwrite` on the "
            "command line) to replace it, or choose another path."
        )
    if path.exists() and path.is_dir() != (format == "tf_saved_model"):
        kind = "folder" if path.is_dir() else "file"
        raise FileExistsError(
            f"{path} is a {kind}, and a {format!r} export would replace it "
            "by a " + ("folder" if kind == "file" else "file") + ": remove "
            "it first, or choose another path."
        )
    return path


def _check_format(format):
    if format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {FORMATS}. Received: format={format!r}"
        )


def _engine_for(format, free_size, backend=None):
    """`"native"` or `"tensorflow"`: which backend writes `format`."""
    backend = backend or keras.backend.backend()
    if backend == "tensorflow" or (
        not free_size and format in NATIVE_FORMATS.get(backend, ())
    ):
        return "native"
    if importlib.util.find_spec("tensorflow") is None:
        native = [b for b, f in NATIVE_FORMATS.items() if format in f]
        if free_size:
            raise ValueError(
                f"A {format!r} graph that takes any valid tile size is "
                "written on the TensorFlow backend, and TensorFlow is not "
                "installed. Install it (`pip install tensorflow`; the "
                "export then runs there in a subprocess), or pass a fixed "
                f"`tile_size` (e.g. 572): Keras writes a fixed-size "
                f"{format!r} graph on {', '.join(native)}."
            )
        raise ValueError(
            f"Keras cannot write a {format!r} export on the {backend!r} "
            f"backend, and TensorFlow, which writes it for the other "
            "backends, is not installed. Install it "
            "(`pip install tensorflow`), or export on one of the backends "
            f"that write {format!r}: {', '.join(native)} (the weights are "
            "the same on every backend)."
        )
    return "tensorflow"


def _input_signature(served, batch_size):
    shape = (batch_size,) + tuple(served.input_shape[1:])
    return [keras.InputSpec(shape=shape, dtype="float32")]


def _write_native(served, path, format, batch_size):
    with warnings.catch_warnings():
        # Keras 3.15 calls torch.onnx's TorchScript-based exporter, which
        # torch 2.13 deprecates; nothing the user can change.
        warnings.filterwarnings(
            "ignore", "The feature will be removed", DeprecationWarning
        )
        if keras.backend.backend() == "torch":
            import torch

            # Tracing for a fixed tile runs Keras's Python shape checks
            # (`Cropping2D`) once; their values are constants of that tile,
            # which is what the graph is for (the tests compare it).
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        _write_native_now(served, path, format, batch_size)


def _write_native_now(served, path, format, batch_size):
    signature = _input_signature(served, batch_size)
    if format == BIOIMAGEIO_SAVED_MODEL:
        # bioimageio.core calls the "serve" endpoint through
        # `keras.layers.TFSMLayer` and wants a dict of outputs.
        archive = keras.export.ExportArchive()
        archive.track(served)
        archive.add_endpoint(
            name="serve",
            fn=lambda x: {"output0": served(x, training=False)},
            input_signature=signature,
        )
        archive.write_out(str(path), verbose=False)
        return
    served.export(
        str(path), format=format, verbose=False, input_signature=signature
    )


def _write_on_tensorflow(served, jobs, batch_size):
    """Writes `jobs` (`(path, format)` pairs) on the TensorFlow backend.

    In one subprocess, from the served model saved to a temporary
    `.keras` file: the weights are the same on every backend.
    """
    with tempfile.TemporaryDirectory(prefix="keras_unet2015_export_") as tmp:
        saved = Path(tmp) / "served.keras"
        served.save(saved)
        job = {
            "model": str(saved),
            "jobs": [[str(path), format] for path, format in jobs],
            "batch_size": batch_size,
        }
        env = dict(
            os.environ,
            KERAS_BACKEND="tensorflow",
            TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            **{_ENGINE_ENV: "1"},
        )
        code = (
            "import sys; from keras_unet2015 import export; "
            "export._engine_main(sys.argv[1])"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, json.dumps(job)],
            env=env,
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        formats = ", ".join(repr(format) for _, format in jobs)
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise RuntimeError(
            f"The {formats} export on the TensorFlow backend (subprocess "
            f"{sys.executable}) failed with exit code {result.returncode}:\n"
            f"{tail}"
        )


def _engine_main(job):
    """Entry point of the TensorFlow subprocess of `_write_on_tensorflow`."""
    job = json.loads(job)
    import keras_unet2015  # noqa: F401  (registers the classes)

    served = keras.saving.load_model(job["model"], compile=False)
    for path, format in job["jobs"]:
        _write_native(served, path, format, job["batch_size"])


def _write(served, jobs, batch_size):
    """Writes `(path, format)` jobs, each atomically, on the right engine."""
    free_size = None in tuple(served.input_shape[1:])
    engines = {
        format: _engine_for(
            "tf_saved_model" if format == BIOIMAGEIO_SAVED_MODEL else format,
            free_size,
        )
        for _, format in jobs
    }
    temporaries = [run_folder.temporary_path(path) for path, _ in jobs]
    try:
        other = []
        for temporary, (_, format) in zip(temporaries, jobs):
            if engines[format] == "native":
                _write_native(served, temporary, format, batch_size)
            else:
                other.append((temporary, format))
        if other:
            _write_on_tensorflow(served, other, batch_size)
        for temporary, (path, _) in zip(temporaries, jobs):
            run_folder.commit_temporary(temporary, path)
    finally:
        for temporary in temporaries:
            run_folder._remove(temporary)


def export_model(
    model,
    path,
    format="onnx",
    tile_size=None,
    batch_size=None,
    overwrite=False,
    **kwargs,
):
    """Writes `model` as an ONNX, SavedModel, LiteRT or BioImage.IO artifact.

    The artifact computes what `model` computes (logits for
    `activation=None`, probabilities for `"softmax"`), in float32. It
    takes `(batch, height, width, channels)` tensors (`(batch, channels,
    height, width)` for a `"channels_first"` model) of a valid tile size
    and returns the model's output for them: for valid padding, the centre
    of the tile, `model.size_loss` pixels smaller (388 for 572). Sizes
    that are not valid fail in the runtime (a shape error of a
    concatenation): pad or crop to a valid size (`keras_unet2015.sizes`).
    For images of any size, tile them as `OverlapTilePredictor` does
    (tiles overlapping by twice `model.context_margin`, the image border
    mirrored), or keep the Keras model.

    A graph for any valid size (`tile_size=None`) is written on the
    TensorFlow backend; a fixed-size graph by the current backend where
    Keras can write the format there (`NATIVE_FORMATS`). Otherwise the
    conversion runs on the TensorFlow backend in a subprocess, from the
    same weights; TensorFlow must be installed for that.

    The artifact is written under a temporary name and renamed when
    complete: a failed or interrupted export leaves no partial file.

    Args:
        model: a `keras_unet2015.UNet2015`, trained or not.
        path: str or `Path`. Where to write: a `.onnx` file, a folder for
            `"tf_saved_model"`, a `.tflite` file, a `.zip` for
            `"bioimageio"`.
        format: str. One of `FORMATS`: `"onnx"`, `"tf_saved_model"`,
            `"litert"`, `"bioimageio"`. Defaults to `"onnx"`.
        tile_size: `None`, an int or `(height, width)`: the input size the
            artifact takes, a valid size for the model. Defaults to `None`:
            any valid size.
        batch_size: `None` or an int. `None` leaves the batch size free
            (LiteRT interpreters then resize their input to the batch they
            are given). Defaults to `None`.
        overwrite: bool. Replace an existing `path`. Defaults to `False`
            (an existing path raises `FileExistsError`).
        **kwargs: for `format="bioimageio"`, the arguments of
            `keras_unet2015.export.bioimageio.export_bioimageio` (name,
            description, test image, preprocessing, ...).

    Returns:
        The `Path` written.

    Raises:
        ValueError: for an unknown format, a path with the wrong suffix, an
            invalid tile size (the message names the nearest valid ones),
            or a format no installed backend can write (the message names
            what can).
        FileExistsError: if `path` exists and `overwrite` is False.

    Example:

    ```python
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    keras_unet2015.export.export_model(
        model, "unet_savedmodel", format="tf_saved_model", tile_size=44
    )
    ```
    """
    _check_format(format)
    _check_unet(model)
    if format == "bioimageio":
        from keras_unet2015.export.bioimageio import export_bioimageio

        return export_bioimageio(
            model,
            path,
            tile_size=tile_size,
            overwrite=overwrite,
            **kwargs,
        )
    if kwargs:
        raise TypeError(
            f"Unexpected arguments for format={format!r}: "
            f"{sorted(kwargs)}. Only format='bioimageio' takes more options."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(
            "`batch_size` must be None (free) or a positive int. Received: "
            f"batch_size={batch_size!r}"
        )
    path = _check_path(path, format, overwrite)
    served = serving_model(model, tile_size)
    _write(served, [(path, format)], batch_size)
    return path


def run_artifact(path, format, x):
    """Runs an exported artifact in its own runtime on a NumPy batch.

    For checking an export: onnxruntime for `"onnx"`, `tf.saved_model.load`
    for `"tf_saved_model"`, the LiteRT interpreter (`ai_edge_litert`, or
    `tf.lite` without it) for `"litert"`.

    Args:
        path: str or `Path`. The artifact `export_model` wrote.
        format: str. `"onnx"`, `"tf_saved_model"` or `"litert"`.
        x: float32 array of the artifact's input shape (any batch size for
            a free batch).

    Returns:
        The output as a NumPy array.

    Example:

    ```python
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    path = keras_unet2015.export.export_model(model, "u.onnx", tile_size=44)
    x = np.zeros((1, 44, 44, 1), "float32")
    keras_unet2015.export.run_artifact(path, "onnx", x).shape  # (1, 28, 28, 2)
    ```
    """
    x = np.asarray(x, np.float32)
    path = str(path)
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(
            path, providers=["CPUExecutionProvider"]
        )
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    if format == "tf_saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        return loaded.serve(tf.constant(x)).numpy()
    if format == "litert":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - depends on the install
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        interpreter = Interpreter(model_path=path)
        details = interpreter.get_input_details()[0]
        if tuple(details["shape"]) != x.shape:
            interpreter.resize_tensor_input(details["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(details["index"], x)
        interpreter.invoke()
        output = interpreter.get_output_details()[0]["index"]
        return np.array(interpreter.get_tensor(output))
    raise ValueError(
        "`format` must be 'onnx', 'tf_saved_model' or 'litert'. "
        f"Received: format={format!r}"
    )
