import numbers

import keras
import numpy as np
from keras import ops

from keras_unet2015 import _label_checks
from keras_unet2015.backend_utils import standardize_data_format

_LOW_PRECISION = ("float16", "bfloat16")


@keras.saving.register_keras_serializable(package="keras_unet2015")
class WeightedPixelLoss(keras.losses.Loss):
    """Pixel-wise softmax cross-entropy with per-pixel weights.

    The loss of the U-Net paper: a softmax over the classes at every pixel,
    combined with the cross-entropy and weighted per pixel,
    `E = -sum_x w(x) * log p_{l(x)}(x)`. The weights `w(x)` come in the
    Keras way, as `sample_weight`: `model.fit(x, y, sample_weight=w)` or a
    dataset that yields `(x, y, w)`. Build them with
    `keras_unet2015.weight_maps.unet_weight_map`. A per-pixel weight map
    has shape `(batch, height, width)`; a per-image weight `(batch,)` works
    too.

    With valid convolutions the network's output is smaller than its input
    tile (388 vs 572 px in the paper). Labels and weight maps given at the
    input size are center-cropped to the prediction's size automatically;
    the size difference must be even, and labels smaller than the
    prediction raise an error. The sizes are checked whenever they are
    known when the loss is traced (always on JAX and PyTorch).

    The loss is computed in float32 even when the model runs in
    `"mixed_float16"` or `"mixed_bfloat16"`, from logits with a stable
    log-softmax, or from probabilities clipped to `[epsilon, 1 - epsilon]`.

    What the loss checks, the same on every backend:

    - Integer labels given as NumPy arrays (calling the loss yourself) must
      be whole numbers in `[0, classes)` (the classes of `y_pred`) or
      `ignore_class`, and a NumPy `sample_weight` must be finite and
      non-negative; otherwise a `ValueError` says what was found and
      where. One-hot labels are not checked.
    - Labels given as tensors, as inside `model.fit`, are not read: in a
      compiled step (JAX, TensorFlow) no error can be raised, and reading
      them in an eager step (PyTorch) would stop the device every step.
      A label that is no class there (negative, too large, fractional)
      makes the loss of its pixel NaN on every backend (not a wrapped,
      clamped or truncated class): the logged loss turns NaN, while the
      gradients of the other pixels stay finite. Check the data where it
      enters instead: `keras_unet2015.training.prepare_targets`,
      `keras_unet2015.datasets.TrainingSampleStream` and
      `make_tf_dataset` check labels and weight maps when they are built.
      Tensor weights are used as given.

    Reductions (`reduction`):

    - `"sum_over_batch_size"` (Keras's default) and `"mean"`: the weighted
      sum divided by the number of pixels (the non-ignored ones when
      `ignore_class` is set). Independent of the tile size: the usual
      choice with Keras optimizers' default learning rates.
    - `"sum"`: the paper's energy, the weighted sum over all pixels and
      images. It grows with the tile size (150,544 output pixels for the
      paper's tile), so the learning rate must be scaled down accordingly.
    - `"mean_with_sample_weight"`: the weighted sum divided by the sum of
      the weights (a weighted average).
    - `"none"` or `None`: the weighted per-pixel losses, shape
      `(batch, height, width)` of the prediction.

    Reference:

    - [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597)

    Args:
        from_logits: bool. Whether `y_pred` holds logits (the default output
            of `UNet2015`) or probabilities (`UNet2015(activation="softmax")`).
            Defaults to `True`.
        ignore_class: int or `None`. A label value whose pixels get weight
            0 and do not count in the mean (e.g. 255 for unlabelled pixels).
            Only for integer labels. Defaults to `None`.
        data_format: str. `"channels_last"` or `"channels_first"`: where the
            class axis of `y_pred` (and of one-hot labels) is. `None` uses
            `keras.config.image_data_format()`. Defaults to `None`.
        reduction: str or `None`. One of `"sum_over_batch_size"`, `"mean"`,
            `"sum"`, `"mean_with_sample_weight"`, `"none"` or `None`, see
            above. Defaults to `"sum_over_batch_size"`.
        name: str. Name of the loss. Defaults to `"weighted_pixel_loss"`.
        dtype: dtype of the computation, or `None` for
            `keras.backend.floatx()`. Half-precision dtypes are promoted to
            float32. Defaults to `None`.

    Call arguments:
        y_true: integer class labels of shape `(batch, height, width)` or
            `(batch, height, width, 1)` (`(batch, 1, height, width)` for
            `"channels_first"`), or one-hot labels with the class axis where
            `y_pred` has it. The spatial size may exceed the prediction's by
            an even number of pixels.
        y_pred: logits or probabilities, `(batch, height, width, classes)`
            or `(batch, classes, height, width)`.
        sample_weight: optional weights: a weight map `(batch, height,
            width)` (or with a singleton channel axis) at the size of
            `y_true` or of `y_pred`, or one weight per image `(batch,)`.

    Example:

    ```python
    model = keras_unet2015.UNet2015(depth=2, filters=8)
    model.compile(
        optimizer=keras.optimizers.SGD(1e-2, momentum=0.99),
        loss=keras_unet2015.WeightedPixelLoss(),
    )
    # Labels and weight maps at the input tile size (92x92); the model's
    # output is 52x52 and both are center-cropped to it.
    images, labels, instances = keras_unet2015.datasets.make_touching_cells(
        4, 92
    )
    weights = np.stack(
        [keras_unet2015.weight_maps.unet_weight_map(i) for i in instances]
    )
    model.fit(images[..., None], labels, sample_weight=weights, epochs=1)
    ```
    """

    def __init__(
        self,
        from_logits=True,
        ignore_class=None,
        data_format=None,
        reduction="sum_over_batch_size",
        name="weighted_pixel_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not isinstance(from_logits, bool):
            raise ValueError(
                "`from_logits` must be True (y_pred holds logits) or False "
                f"(probabilities). Received: from_logits={from_logits!r}"
            )
        if ignore_class is not None and (
            isinstance(ignore_class, bool)
            or not isinstance(ignore_class, numbers.Integral)
        ):
            raise ValueError(
                "`ignore_class` must be None or an integer label value. "
                f"Received: ignore_class={ignore_class!r}"
            )
        self.from_logits = from_logits
        self.ignore_class = None if ignore_class is None else int(ignore_class)
        self.data_format = standardize_data_format(data_format)
        self._dtype_argument = dtype
        if keras.backend.standardize_dtype(self.dtype) in _LOW_PRECISION:
            self._compute_dtype = "float32"
        else:
            self._compute_dtype = keras.backend.standardize_dtype(self.dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Overrides `Loss.__call__`: the base class applies `sample_weight`
        # to the output of `call`, and a weight map at the input tile size
        # would not match a valid-convolution prediction. Here it is
        # cropped like the labels.
        with keras.name_scope(self.name):
            y_pred = self._standardize_prediction(y_pred)
            losses, valid = self._pixel_losses(y_true, y_pred)
            weights = self._pixel_weights(sample_weight, y_pred)
            values = losses if weights is None else losses * weights
            if valid is not None:
                values = ops.where(valid, values, ops.zeros_like(values))
            return self._reduce(values, weights, valid)

    def call(self, y_true, y_pred):
        # The unweighted per-pixel losses, (batch, height, width).
        y_pred = self._standardize_prediction(y_pred)
        losses, valid = self._pixel_losses(y_true, y_pred)
        if valid is not None:
            losses = ops.where(valid, losses, ops.zeros_like(losses))
        return losses

    # === Internals ===

    def _standardize_prediction(self, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        if len(y_pred.shape) != 4:
            raise ValueError(
                "`y_pred` must be a 4D tensor (batch, height, width, classes) "
                "for channels_last or (batch, classes, height, width) for "
                f"channels_first. Received shape {tuple(y_pred.shape)}."
            )
        y_pred = ops.cast(y_pred, self._compute_dtype)
        if self.data_format == "channels_first":
            y_pred = ops.moveaxis(y_pred, 1, -1)
        return y_pred

    def _pixel_losses(self, y_true, y_pred):
        """Per-pixel cross-entropy (B, H, W) and the non-ignored mask."""
        num_classes = y_pred.shape[-1]
        labels_array = y_true if _is_numpy(y_true) else None
        y_true = ops.convert_to_tensor(y_true)
        rank = len(y_true.shape)
        one_hot = False
        if rank == 4:
            axis = 1 if self.data_format == "channels_first" else -1
            channels = y_true.shape[axis]
            if self.data_format == "channels_first":
                y_true = ops.moveaxis(y_true, 1, -1)
            if channels == 1:
                y_true = ops.squeeze(y_true, axis=-1)
            elif channels is not None and channels == num_classes:
                one_hot = True
            else:
                raise ValueError(
                    "4D `y_true` must hold integer labels with a channel "
                    f"axis of size 1, or one-hot labels with {num_classes} "
                    "channels (the classes of `y_pred`), with the channel "
                    f"axis where data_format={self.data_format!r} puts it. "
                    f"Received y_true of shape {tuple(y_true.shape)}."
                )
        elif rank != 3:
            raise ValueError(
                "`y_true` must have shape (batch, height, width) of integer "
                "labels, or be 4D with a class axis. Received shape "
                f"{tuple(y_true.shape)}."
            )
        y_true = _center_crop(y_true, y_pred, "y_true")

        if self.from_logits:
            log_probs = ops.log_softmax(y_pred, axis=-1)
        else:
            epsilon = keras.config.epsilon()
            probs = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
            log_probs = ops.log(ops.clip(probs, epsilon, 1.0 - epsilon))

        if one_hot:
            if self.ignore_class is not None:
                raise ValueError(
                    "`ignore_class` applies to integer labels only. Received "
                    f"one-hot y_true of shape {tuple(y_true.shape)} with "
                    f"ignore_class={self.ignore_class}. Give the pixels to "
                    "ignore an all-zero one-hot row instead."
                )
            y_true = ops.cast(y_true, self._compute_dtype)
            return -ops.sum(y_true * log_probs, axis=-1), None

        if labels_array is not None and num_classes is not None:
            _label_checks.check_class_labels(
                labels_array,
                "`y_true`",
                num_classes=num_classes,
                ignore_class=self.ignore_class,
            )
        labels, known, valid = self._label_indices(y_true, y_pred)
        picked = ops.take_along_axis(
            log_probs, ops.expand_dims(labels, axis=-1), axis=-1
        )
        losses = -ops.squeeze(picked, axis=-1)
        # A label that is no class (and not `ignore_class`) gives NaN, the
        # same on every backend, instead of a backend's own gather result
        # (wrapped, clamped, NaN or an error).
        nan = ops.full_like(losses, float("nan"))
        return ops.where(known, losses, nan), valid

    def _label_indices(self, y_true, y_pred):
        """Safe gather indices, and masks of the known and non-ignored.

        `known` is False where the label is no class in `[0, num_classes)`
        (negative, too large, fractional, NaN) and not `ignore_class`;
        `valid` is False at `ignore_class` (`None` without one). The
        indices are 0 wherever the label is not a class.
        """
        num_classes = y_pred.shape[-1]
        if num_classes is None:
            num_classes = ops.shape(y_pred)[-1]
        dtype = keras.backend.standardize_dtype(y_true.dtype)
        if "float" in dtype:
            # Compared as floats: 0.7 must not truncate to class 0.
            values = ops.cast(y_true, "float32")
            is_class = ops.equal(ops.floor(values), values)
        else:
            values = ops.cast(y_true, "int32")
            is_class = ops.ones_like(values, dtype="bool")
        is_class = ops.logical_and(is_class, ops.greater_equal(values, 0))
        if not isinstance(num_classes, int):
            num_classes = ops.cast(num_classes, values.dtype)
        is_class = ops.logical_and(is_class, ops.less(values, num_classes))
        labels = ops.cast(
            ops.where(is_class, values, ops.zeros_like(values)), "int32"
        )
        if self.ignore_class is None:
            return labels, is_class, None
        valid = ops.not_equal(values, self.ignore_class)
        known = ops.logical_or(is_class, ops.logical_not(valid))
        labels = ops.where(valid, labels, ops.zeros_like(labels))
        return labels, known, valid

    def _pixel_weights(self, sample_weight, y_pred):
        """Weights broadcastable to the (B, H, W) losses, or None."""
        if sample_weight is None:
            return None
        if _is_numpy(sample_weight):
            _label_checks.check_weights(sample_weight, "`sample_weight`")
        weights = ops.cast(
            ops.convert_to_tensor(sample_weight), self._compute_dtype
        )
        shape = tuple(weights.shape)
        rank = len(shape)
        if rank == 1 or (rank == 2 and shape[1] == 1):
            return ops.reshape(weights, (-1, 1, 1))
        if rank == 4:
            axis = 1 if self.data_format == "channels_first" else -1
            if shape[axis] != 1:
                raise ValueError(
                    "A 4D `sample_weight` must have a channel axis of size 1 "
                    f"(data_format={self.data_format!r}). Received shape "
                    f"{shape}. Pass a (batch, height, width) weight map."
                )
            weights = ops.squeeze(weights, axis=axis)
        elif rank != 3:
            raise ValueError(
                "`sample_weight` must be a weight map (batch, height, width) "
                "or one weight per image (batch,). Received shape "
                f"{shape}."
            )
        return _center_crop(weights, y_pred, "sample_weight")

    def _reduce(self, values, weights, valid):
        reduction = self.reduction
        if reduction is None or reduction == "none":
            return values
        total = ops.sum(values)
        if reduction == "sum":
            return total
        if reduction == "mean_with_sample_weight" and weights is not None:
            weights = ops.broadcast_to(weights, ops.shape(values))
            if valid is not None:
                weights = ops.where(valid, weights, ops.zeros_like(weights))
            divisor = ops.sum(weights)
        elif valid is not None:
            divisor = ops.sum(ops.cast(valid, values.dtype))
        else:
            divisor = ops.cast(ops.size(values), values.dtype)
        return _scale_for_distribution(ops.divide_no_nan(total, divisor))

    # === Config ===

    def get_config(self):
        config = super().get_config()
        dtype = self._dtype_argument
        if isinstance(dtype, keras.DTypePolicy):
            dtype = keras.dtype_policies.serialize(dtype)
        config.update(
            {
                "from_logits": self.from_logits,
                "ignore_class": self.ignore_class,
                "data_format": self.data_format,
                "dtype": dtype,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


def _is_numpy(x):
    """Whether `x` is concrete NumPy data, checked with NumPy in `__call__`.

    Backend tensors are not inspected: inside a compiled step their values
    are unknown, and reading them in an eager step would stop the device
    every step.
    """
    return isinstance(x, (np.ndarray, np.generic))


def _center_crop(x, y_pred, name):
    """Center-crops the spatial axes 1 and 2 of `x` to those of `y_pred`."""
    in_size = tuple(x.shape[1:3])
    out_size = tuple(y_pred.shape[1:3])
    if all(isinstance(size, int) for size in in_size + out_size):
        if in_size == out_size:
            return x
        for axis, size_in, size_out in zip(
            ("height", "width"), in_size, out_size
        ):
            if size_in < size_out:
                raise ValueError(
                    f"`{name}` is smaller than the prediction: its {axis} is "
                    f"{size_in}, the prediction's is {size_out}. Give "
                    f"`{name}` at the prediction's size or at the input "
                    "tile's size (it is center-cropped)."
                )
            if (size_in - size_out) % 2:
                raise ValueError(
                    f"`{name}` cannot be center-cropped to the prediction: "
                    f"its {axis} is {size_in}, the prediction's is "
                    f"{size_out}, and the difference {size_in - size_out} is "
                    "odd. With valid convolutions give it at the input "
                    "tile's size (`model.output_size(input_size)` is the "
                    "prediction's size)."
                )
        top = (in_size[0] - out_size[0]) // 2
        left = (in_size[1] - out_size[1]) // 2
        return x[:, top : top + out_size[0], left : left + out_size[1]]
    # Sizes only known at run time (a TensorFlow graph traced with unknown
    # spatial dimensions): crop with dynamic offsets.
    x_shape = ops.shape(x)
    pred_shape = ops.shape(y_pred)
    top = (x_shape[1] - pred_shape[1]) // 2
    left = (x_shape[2] - pred_shape[2]) // 2
    return x[:, top : top + pred_shape[1], left : left + pred_shape[2]]


def _scale_for_distribution(value):
    """Divides a mean loss by the replica count under `tf.distribute`.

    Keras's built-in losses do the same for their mean reductions.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            value = value * ops.cast(1.0 / replicas, value.dtype)
    return value
