import contextlib

import keras
import numpy as np

from keras_unet2015 import sizes
from keras_unet2015.backend_utils import check_data_format_runs
from keras_unet2015.backend_utils import standardize_data_format
from keras_unet2015.layers.conv import Conv2D
from keras_unet2015.layers.conv import MaxPooling2D
from keras_unet2015.layers.paper_normal import PaperNormal
from keras_unet2015.layers.up_convolution import UpConvolution2D

ACTIVATIONS = (None, "softmax")


def paper_initializer():
    """The paper's initializer: Gaussian with std `sqrt(2 / fan_in)`.

    Not truncated, unlike Keras's `"he_normal"`.
    """
    return PaperNormal()


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )


def _skip_crop(depth, level):
    """Pixels to crop on each side of the level-`level` skip connection.

    With valid convolutions the up-sampled map at level `level` (1 = full
    resolution) is smaller than the contracting map by a constant that does
    not depend on the input size: 8 px at the deepest level, and
    `16 + 2 * delta(level + 1)` above it (176, 80, 32, 8 for depth 4).
    """
    delta = 8
    for _ in range(depth - level):
        delta = 16 + 2 * delta
    return delta // 2


@keras.saving.register_keras_serializable(package="keras_unet2015")
class UNet2015(keras.Model):
    """The original U-Net of Ronneberger, Fischer and Brox (2015).

    The defaults build the network of the paper's Fig. 1 exactly: a
    contracting path of four levels, each two unpadded 3x3 convolutions with
    ReLU followed by a 2x2 max-pool with stride 2 (64, 128, 256, 512
    channels); a bottom level of two 3x3 convolutions with 1024 channels; an
    expanding path of four levels, each a 2x2 stride-2 up-convolution that
    halves the channels, concatenation with the center-cropped feature map
    of the same contracting level, and two 3x3 convolutions with ReLU; and a
    1x1 convolution to `num_classes`. That is 23 convolution layers and
    31,030,658 parameters for one input channel and two classes. A 572x572
    input tile gives a 388x388 output; every output pixel sees 92 px of
    context on each side (`model.context_margin`).

    Dropout with rate 0.5 sits "at the end of the contracting path": after
    the last ReLU of the deepest contracting level (its output also feeds the
    skip connection) and after the last ReLU of the bottom level, as in ports
    of the authors' Caffe model. Kernels are drawn from the paper's untruncated
    Gaussian with standard deviation `sqrt(2 / N)`, `N` the number of incoming
    nodes of one neuron. The concatenation puts the cropped skip connection
    first, then the up-sampled features.

    With `padding="valid"` (the paper's choice) the spatial size must satisfy
    `input = 2**depth * k + c` (`16 * k + 60` at depth 4); use
    `model.output_size`, `model.input_size_for_output` and
    `model.valid_input_sizes` to pick one, and `OverlapTilePredictor` for
    images of any size. `padding="same"` is the common variant whose output
    has the input's size (input a multiple of `2**depth`); it is not the
    paper's network.

    The model returns per-pixel logits by default (`activation=None`), the
    numerically safest input for `WeightedPixelLoss(from_logits=True)`. With
    `activation="softmax"` it returns class probabilities, as the paper's
    figure does; then use `WeightedPixelLoss(from_logits=False)`.
    `OverlapTilePredictor` reads the activation from the model and always
    returns probabilities.

    `fit`, `evaluate`, `predict` and the `*_on_batch` methods are Keras's,
    with three safeguards: array inputs of an invalid size or channel count
    raise the same `ValueError` as `model(x)` on every backend, before
    Keras compiles a step; `predict` of an empty batch returns an empty
    array; and on JAX an exception inside them leaves the weights in
    place (Keras's JAX trainer would leave the model without them; see
    the FAQ's "Known issues").

    Reference:

    - [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597)

    Args:
        num_classes: int. Number of output classes. Defaults to `2`.
        input_channels: int. Number of image channels (1 for the paper's
            gray-value images, 3 for RGB). Defaults to `1`.
        depth: int. Number of 2x2 max-pool steps. Defaults to `4`.
        filters: int. Number of filters of the first level; doubled at each
            level down. Defaults to `64`.
        dropout_rate: float. Dropout rate at the end of the contracting path;
            `0` disables dropout. Defaults to `0.5`.
        padding: str. `"valid"` (the paper's unpadded convolutions) or
            `"same"` (output size equals input size). Defaults to `"valid"`.
        activation: `None` or `"softmax"`. Activation of the final 1x1
            convolution: `None` returns logits. Defaults to `None`.
        image_size: `None`, an int or a tuple `(height, width)` of ints or
            `None`s. Fixed spatial size of the input; `None` accepts any
            valid size at call time. A concrete size is validated. Defaults
            to `None`.
        data_format: str. `"channels_last"` or `"channels_first"`, or `None`
            for `keras.config.image_data_format()`. Defaults to `None`.
        dtype: a dtype or dtype policy (e.g. `"mixed_float16"`) for all
            layers, or `None` for the global policy. Defaults to `None`.
        upconv_implementation: str. How the up-convolutions compute:
            `"auto"` (fastest on the backend), `"matmul"` or
            `"conv_transpose"`. All give the same result and share the
            `Conv2DTranspose` weight layout. Defaults to `"auto"`.
        **kwargs: base model keyword arguments such as `name`.

    Input shape:
        `(batch, height, width, input_channels)` for `"channels_last"`, or
        `(batch, input_channels, height, width)` for `"channels_first"`.

    Output shape:
        `(batch, out_height, out_width, num_classes)` (or channels first),
        with `out = in - 184` for the paper's valid network and
        `out = in` for `padding="same"`.

    Example:

    ```python
    >>> model = keras_unet2015.UNet2015(num_classes=2)
    >>> model.count_params()
    31030658
    >>> model.output_size(572)
    388
    >>> logits = model(np.zeros((1, 572, 572, 1), "float32"))
    >>> tuple(logits.shape)
    (1, 388, 388, 2)
    ```
    """

    def __init__(
        self,
        num_classes=2,
        input_channels=1,
        depth=4,
        filters=64,
        dropout_rate=0.5,
        padding="valid",
        activation=None,
        image_size=None,
        data_format=None,
        dtype=None,
        upconv_implementation="auto",
        **kwargs,
    ):
        _positive_int(num_classes, "num_classes")
        _positive_int(input_channels, "input_channels")
        _positive_int(depth, "depth")
        _positive_int(filters, "filters")
        if not 0 <= dropout_rate < 1:
            raise ValueError(
                "`dropout_rate` must be in [0, 1). "
                f"Received: dropout_rate={dropout_rate!r}"
            )
        if padding not in sizes.VALID_PADDINGS:
            raise ValueError(
                f"`padding` must be one of {sizes.VALID_PADDINGS}. "
                f"Received: padding={padding!r}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"`activation` must be one of {ACTIVATIONS} (None returns "
                f"logits). Received: activation={activation!r}"
            )
        image_size = _standardize_image_size(image_size)
        for axis, size in zip(("height", "width"), image_size):
            if size is not None:
                sizes.check_input_size(
                    size, depth, padding, name=f"input {axis}"
                )
        data_format = standardize_data_format(data_format)
        channel_axis = -1 if data_format == "channels_last" else 1

        # === Functional Model ===
        if data_format == "channels_last":
            input_shape = (*image_size, input_channels)
        else:
            input_shape = (input_channels, *image_size)
        inputs = keras.Input(shape=input_shape, name="image")

        def conv(x, n_filters, name):
            return Conv2D(
                n_filters,
                3,
                padding=padding,
                activation="relu",
                kernel_initializer=paper_initializer(),
                data_format=data_format,
                dtype=dtype,
                name=name,
            )(x)

        def dropout(x, name):
            if dropout_rate == 0:
                return x
            return keras.layers.Dropout(dropout_rate, dtype=dtype, name=name)(x)

        x = inputs
        skips = []
        for level in range(1, depth + 1):
            n_filters = filters * 2 ** (level - 1)
            x = conv(x, n_filters, f"contract{level}_conv1")
            x = conv(x, n_filters, f"contract{level}_conv2")
            if level == depth:
                x = dropout(x, f"contract{level}_dropout")
            skips.append(x)
            x = MaxPooling2D(
                2,
                data_format=data_format,
                dtype=dtype,
                name=f"contract{level}_pool",
            )(x)
        x = conv(x, filters * 2**depth, "bottom_conv1")
        x = conv(x, filters * 2**depth, "bottom_conv2")
        x = dropout(x, "bottom_dropout")
        for level in range(depth, 0, -1):
            n_filters = filters * 2 ** (level - 1)
            x = UpConvolution2D(
                n_filters,
                data_format=data_format,
                implementation=upconv_implementation,
                dtype=dtype,
                name=f"expand{level}_upconv",
            )(x)
            skip = skips[level - 1]
            if padding == "valid":
                skip = keras.layers.Cropping2D(
                    _skip_crop(depth, level),
                    data_format=data_format,
                    dtype=dtype,
                    name=f"expand{level}_crop",
                )(skip)
            x = keras.layers.Concatenate(
                axis=channel_axis, dtype=dtype, name=f"expand{level}_concat"
            )([skip, x])
            x = conv(x, n_filters, f"expand{level}_conv1")
            x = conv(x, n_filters, f"expand{level}_conv2")
        outputs = Conv2D(
            num_classes,
            1,
            kernel_initializer=paper_initializer(),
            data_format=data_format,
            dtype=dtype,
            name="head_conv",
        )(x)
        if activation == "softmax":
            outputs = keras.layers.Softmax(
                axis=channel_axis, dtype=dtype, name="head_softmax"
            )(outputs)
        kwargs.setdefault("name", "unet2015")
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        if dtype is not None:
            # Functional models do not keep their `dtype`: set it, so that
            # `compile` adds loss scaling for "mixed_float16" and the
            # policy is saved in the config.
            self.dtype_policy = keras.dtype_policies.get(dtype)

        # === Config ===
        self.num_classes = num_classes
        self.input_channels = input_channels
        self.depth = depth
        self.filters = filters
        self.dropout_rate = dropout_rate
        self.padding = padding
        self.activation = activation
        self.image_size = image_size
        self.data_format = data_format
        self.upconv_implementation = upconv_implementation

    # === Size helpers ===
    @property
    def context_margin(self):
        """Context (px) an output pixel needs on each side: 92 by default."""
        return sizes.context_margin(self.depth)

    @property
    def size_loss(self):
        """`input_size - output_size`: 184 for valid, 0 for same padding."""
        return sizes.size_loss(self.depth, self.padding)

    def output_size(self, input_size):
        """Output height (or width) for an input height (or width).

        Accepts an int or a `(height, width)` tuple and returns the same
        kind. Raises a `ValueError` that names the nearest valid sizes when
        the size is not valid.
        """
        return _per_axis(
            lambda s: sizes.output_size(s, self.depth, self.padding),
            input_size,
        )

    def input_size_for_output(self, output_size):
        """Smallest valid input size whose output is at least `output_size`.

        Accepts an int or a `(height, width)` tuple and returns the same
        kind.
        """
        return _per_axis(
            lambda s: sizes.input_size_for_output(s, self.depth, self.padding),
            output_size,
        )

    def valid_input_sizes(self, start, stop):
        """All valid input sizes in `[start, stop)`, ascending."""
        return sizes.valid_input_sizes(start, stop, self.depth, self.padding)

    def is_valid_input_size(self, input_size):
        """Whether an int or `(height, width)` size can be fed to the model."""
        result = _per_axis(
            lambda s: sizes.is_valid_input_size(s, self.depth, self.padding),
            input_size,
        )
        return all(result) if isinstance(result, tuple) else result

    def call(self, inputs, training=None, mask=None):
        self._check_spatial_shape(inputs)
        if not isinstance(inputs, keras.KerasTensor):
            check_data_format_runs(self.data_format, "UNet2015")
        return super().call(inputs, training=training, mask=mask)

    def _check_spatial_shape(self, inputs):
        self._check_spatial_sizes(getattr(inputs, "shape", None))

    def _check_spatial_sizes(self, shape):
        if shape is None or len(shape) != 4:
            return  # Functional input validation reports rank errors.
        if self.data_format == "channels_last":
            spatial = shape[1:3]
        else:
            spatial = shape[2:4]
        for axis, size in zip(("height", "width"), spatial):
            if isinstance(size, int):
                sizes.check_input_size(
                    size, self.depth, self.padding, name=f"input {axis}"
                )

    def _check_array_input(self, x):
        """Validates array inputs before Keras compiles a step for them.

        Inside the compiled steps of `fit`, `evaluate` and `predict` the
        spatial sizes may be unknown (TensorFlow relaxes them when it
        retraces), so `call` cannot check them there: an invalid size would
        fail deep in the graph. Datasets and generators are not read ahead.
        """
        if isinstance(x, dict) and len(x) == 1:
            (x,) = x.values()
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 4:
            return
        shape = tuple(None if s is None else int(s) for s in shape)
        self._check_spatial_sizes(shape)
        channel_axis = -1 if self.data_format == "channels_last" else 1
        if shape[channel_axis] not in (None, self.input_channels):
            raise ValueError(
                f"The model expects {self.input_channels} input channels on "
                f"axis {channel_axis % 4} ({self.data_format}). Received an "
                f"input of shape {shape}."
            )

    def _empty_prediction(self, x):
        """The result of `predict` for a batch of 0 images, or `None`."""
        if isinstance(x, dict) and len(x) == 1:
            (x,) = x.values()
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 4 or shape[0] != 0:
            return None
        if self.data_format == "channels_last":
            spatial = tuple(int(s) for s in shape[1:3])
            out = (0, *self.output_size(spatial), self.num_classes)
        else:
            spatial = tuple(int(s) for s in shape[2:4])
            out = (0, self.num_classes, *self.output_size(spatial))
        dtype = keras.backend.standardize_dtype(self.outputs[0].dtype)
        return np.zeros(out, dtype)

    # === Training and inference ===
    # The overrides validate array inputs first, keep the weights on JAX
    # when the call fails, and name the cause of TensorFlow's concatenation
    # errors (see `_trainer_call`).
    def fit(self, *args, **kwargs):
        self._check_array_input(args[0] if args else kwargs.get("x"))
        with _trainer_call(self):
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self._check_array_input(args[0] if args else kwargs.get("x"))
        with _trainer_call(self):
            return super().evaluate(*args, **kwargs)

    def predict(
        self, x, batch_size=None, verbose="auto", steps=None, callbacks=None
    ):
        self._check_array_input(x)
        empty = self._empty_prediction(x)
        if empty is not None:
            # Keras fails on an empty array (no batch to concatenate).
            return empty
        with _trainer_call(self):
            return super().predict(
                x,
                batch_size=batch_size,
                verbose=verbose,
                steps=steps,
                callbacks=callbacks,
            )

    def train_on_batch(self, x, *args, **kwargs):
        self._check_array_input(x)
        with _trainer_call(self):
            return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        self._check_array_input(x)
        with _trainer_call(self):
            return super().test_on_batch(x, *args, **kwargs)

    def predict_on_batch(self, x):
        self._check_array_input(x)
        with _trainer_call(self):
            return super().predict_on_batch(x)

    # === Config ===
    @classmethod
    def from_preset(cls, preset, cache_dir=None):
        """Loads a trained U-Net: a preset name, a folder or a `.keras` file.

        The ISBI 2012 presets (names with `isbi2012`) were trained on ISBI
        2012 training slices 0-24 by `keras-unet2015 reproduce isbi2012`;
        their model cards (`keras_unet2015.presets.preset_metadata`, and
        the documentation's Presets page) give the data and its terms, the
        recipe, steps, hardware, wall time and held-out scores. Presets
        shipped in the package load offline; larger ones are downloaded
        once from their release URL and checked against their SHA-256.

        Args:
            preset: str or `Path`. A name from `UNet2015.list_presets()`,
                a folder holding `model.keras`, or a `.keras` file.
            cache_dir: `None` or str. Download cache of remote presets;
                `None` uses Keras's (`~/.keras`, or `KERAS_HOME`).
                Defaults to `None`.

        Returns:
            The trained `UNet2015`, not compiled (compile it with
            `keras_unet2015.training.compile_model` to train further).

        Example:

        ```python
        >>> model = keras_unet2015.UNet2015.from_preset(
        ...     "unet2015_isbi2012_16f"
        ... )
        >>> model.count_params()
        1940834
        ```
        """
        from keras_unet2015 import presets

        return presets.load_preset(preset, cache_dir=cache_dir)

    @staticmethod
    def list_presets():
        """Names of the trained models `UNet2015.from_preset` loads.

        Returns:
            A sorted list of names.

        Example:

        ```python
        >>> "unet2015_isbi2012_16f" in keras_unet2015.UNet2015.list_presets()
        True
        ```
        """
        from keras_unet2015 import presets

        return presets.list_presets()

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "num_classes": self.num_classes,
            "input_channels": self.input_channels,
            "depth": self.depth,
            "filters": self.filters,
            "dropout_rate": self.dropout_rate,
            "padding": self.padding,
            "activation": self.activation,
            "image_size": self.image_size,
            "data_format": self.data_format,
            "upconv_implementation": self.upconv_implementation,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


@contextlib.contextmanager
def _trainer_call(model):
    """Wraps Keras's `fit`, `evaluate`, `predict` and `*_on_batch`."""
    with _weights_kept_on_error(model):
        try:
            yield
        except Exception as error:
            if not _is_tensorflow_concat_error(error):
                raise
            unit = 2**model.depth
            examples = model.valid_input_sizes(1, 1 + 4 * unit)[:3]
            raise ValueError(
                "An input of invalid height or width reached the network "
                "inside a compiled TensorFlow step: a skip connection and "
                "the up-sampled map could not be concatenated (TensorFlow "
                "does not know the sizes when it traces, so the size check "
                f"of `call` cannot run). A U-Net of depth {model.depth} with "
                f"padding='{model.padding}' takes sizes such as "
                f"{', '.join(map(str, examples))}, ... "
                "(`model.is_valid_input_size`). Check the sizes your data "
                "yields, or use `OverlapTilePredictor` for images of any "
                "size."
            ) from error


def _is_tensorflow_concat_error(error):
    return (
        keras.backend.backend() == "tensorflow"
        and type(error).__name__ == "InvalidArgumentError"
        and "Concat" in str(error)
    )


def _jax_state_variables(model):
    """The variables Keras's JAX trainer detaches during a call."""
    variables = list(model.trainable_variables)
    variables += model.non_trainable_variables
    variables += model.metrics_variables
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += optimizer.variables
    return variables


def _usable(value):
    return value is not None and not (
        hasattr(value, "is_deleted") and value.is_deleted()
    )


@contextlib.contextmanager
def _weights_kept_on_error(model):
    """On JAX, puts the variables back when `fit`/`evaluate`/`predict` fail.

    Keras's JAX trainer (read in 3.15.1, inside the pinned range) detaches
    the values of the model's variables (`variable._value = None`,
    "purging" them to save memory) before its first compiled step, and
    attaches the new values (`jax_state_sync()`) only after the last one.
    An exception in between (an invalid input size, a failing data loader,
    Ctrl-C) skips that sync in `predict` and `evaluate`, and in `fit` when
    the first step fails: the model is left without weights, and every
    later call, `get_weights` and `save` raise `TypeError: 'NoneType'
    object is not callable`. This restores the state of the last completed
    step where Keras holds one, and otherwise the values from before the
    call. Values that the failed computation consumed (donated buffers)
    cannot come back; the error then says so. A no-op on the other
    backends.
    """
    if keras.backend.backend() != "jax":
        yield
        return
    # Keras keeps the values in the private `_value`; there is no public
    # API for detached variables (`variable.value` raises on them).
    before = {id(v): v._value for v in _jax_state_variables(model)}
    try:
        yield
    except BaseException as error:
        lost = _restore_jax_state(model, before)
        if lost:
            error.add_note(
                f"{len(lost)} variables of the model (e.g. {lost[0]}) were "
                "consumed by the failed JAX computation and are lost; "
                "reload the model from its last saved file."
            )
        raise


def _restore_jax_state(model, before):
    """Reattaches detached variables; returns the paths of lost ones."""
    state = getattr(model, "_jax_state", None) or {}
    pairs = (
        ("trainable_variables", model.trainable_variables),
        ("non_trainable_variables", model.non_trainable_variables),
        ("metrics_variables", model.metrics_variables),
    )
    if getattr(model, "optimizer", None) is not None:
        pairs += (("optimizer_variables", model.optimizer.variables),)
    # The state of the last completed step, if Keras holds one.
    for key, variables in pairs:
        values = state.get(key) or ()
        for variable, value in zip(variables, values):
            if variable._value is None and _usable(value):
                variable._value = value
    model._jax_state = None
    model._jax_state_synced = True
    lost = []
    for variable in _jax_state_variables(model):
        if variable._value is None:
            value = before.get(id(variable))
            if _usable(value):
                variable._value = value
            else:
                lost.append(variable.path)
    return lost


def _standardize_image_size(image_size):
    if image_size is None:
        return (None, None)
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return (image_size, image_size)
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        for size in image_size:
            if size is not None and (
                isinstance(size, bool) or not isinstance(size, int)
            ):
                break
        else:
            return tuple(image_size)
    raise ValueError(
        "`image_size` must be None, an int or a (height, width) tuple of "
        f"ints or Nones. Received: image_size={image_size!r}"
    )


def _per_axis(fn, size):
    if isinstance(size, (tuple, list)):
        return tuple(fn(s) for s in size)
    return fn(size)
