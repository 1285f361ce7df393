import math

import keras

from keras_unet2015.layers._base_augmentation import BaseAugmentation


def standardize_range(value, name, positive=False):
    """Validates a `(low, high)` range argument; `None` disables it."""
    if value is None:
        return None
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(
            isinstance(v, bool) or not isinstance(v, (int, float))
            for v in value
        )
        or value[0] > value[1]
        or (positive and value[0] <= 0)
    ):
        requirement = "positive numbers" if positive else "numbers"
        raise ValueError(
            f"`{name}` must be None (disabled) or a tuple `(low, high)` of "
            f"two {requirement} with low <= high. "
            f"Received: {name}={value!r}"
        )
    return (float(value[0]), float(value[1]))


def draw_gray_value_parameters(
    xp, batch_size, brightness_range, contrast_range, gamma_range, seeds
):
    """Per-sample gamma, contrast and brightness of the enabled variations.

    `seeds` is a function giving the seed of each draw.
    """
    parameters = {}
    if gamma_range is not None:
        log_gamma = xp.random.uniform(
            (batch_size,),
            minval=math.log(gamma_range[0]),
            maxval=math.log(gamma_range[1]),
            dtype="float32",
            seed=seeds(),
        )
        parameters["gamma"] = xp.numpy.exp(log_gamma)
    if contrast_range is not None:
        parameters["contrast"] = xp.random.uniform(
            (batch_size,),
            minval=contrast_range[0],
            maxval=contrast_range[1],
            dtype="float32",
            seed=seeds(),
        )
    if brightness_range is not None:
        parameters["brightness"] = xp.random.uniform(
            (batch_size,),
            minval=brightness_range[0],
            maxval=brightness_range[1],
            dtype="float32",
            seed=seeds(),
        )
    return parameters


def adjust_gray_values(xp, images, parameters, value_range):
    """Applies gamma, then contrast, then brightness; clips to the range.

    `images` is float32 `(batch, rows, cols, channels)`. Values are first
    mapped from `value_range` to [0, 1] (and clipped there); gamma is
    `x ** gamma`, contrast scales the distance to each image's per-channel
    mean, brightness adds a fraction of the range.
    """
    low, high = value_range
    scale = high - low
    x = xp.numpy.clip((images - low) / scale, 0.0, 1.0)
    if "gamma" in parameters:
        x = xp.numpy.power(x, parameters["gamma"][:, None, None, None])
    if "contrast" in parameters:
        mean = xp.numpy.mean(x, axis=(1, 2), keepdims=True)
        contrast = parameters["contrast"][:, None, None, None]
        x = (x - mean) * contrast + mean
    if "brightness" in parameters:
        x = x + parameters["brightness"][:, None, None, None]
    return xp.numpy.clip(x, 0.0, 1.0) * scale + low


@keras.saving.register_keras_serializable(package="keras_unet2015")
class RandomGrayValue(BaseAugmentation):
    """Random gray-value variation of images: gamma, contrast, brightness.

    The paper lists "gray value variations" among its augmentations without
    ranges; this layer draws, for every sample, a gamma factor
    (log-uniformly, so that `g` and `1 / g` are equally likely), a contrast
    factor and a brightness offset (uniformly) from the given ranges. With
    `x` the image mapped from `value_range` to [0, 1]:
    `x = x ** gamma`, then `x = (x - mean) * contrast + mean` (per image and
    channel), then `x = x + brightness`, clipped to [0, 1] and mapped back.

    Only images change: segmentation masks and weight maps in a dict or
    tuple input pass through unchanged, so the layer can sit anywhere in an
    augmentation pipeline for `(images, masks, weights)`.

    Reference:

    - [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597),
      section 3.1.

    Args:
        brightness_range: tuple `(low, high)` or None. Offset added to the
            image, as a fraction of `value_range`; `None` disables it.
            Defaults to `(-0.1, 0.1)`.
        contrast_range: tuple `(low, high)` of positive numbers, or None.
            Factor scaling the deviation from the mean; `None` disables it.
            Defaults to `(0.8, 1.2)`.
        gamma_range: tuple `(low, high)` of positive numbers, or None.
            Exponent applied to the image in [0, 1]; `None` disables it.
            Defaults to `(0.8, 1.25)`.
        value_range: tuple `(low, high)`. Range of the image values, e.g.
            `(0, 255)` for 8-bit images; outputs are clipped to it. Defaults
            to `(0.0, 1.0)`.
        data_format: str. `"channels_last"` or `"channels_first"`, or `None`
            for `keras.config.image_data_format()`. Defaults to `None`.
        seed: int or None. Seed of the random draws. Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        data: images (rank 3 or 4), a dict with `"images"` (and optionally
            `"segmentation_masks"`, `"sample_weights"`, `"labels"`) or a
            tuple `(images, segmentation_masks[, sample_weights])`.
        training: bool. If `False`, `data` is returned unchanged. Defaults
            to `True`.

    Input shape:
        Any of the structures above.

    Output shape:
        The same structure and shapes; images in the layer's compute dtype.

    Example:

    ```python
    layer = keras_unet2015.layers.RandomGrayValue(value_range=(0, 255))
    images = np.random.randint(0, 256, (4, 64, 64, 1)).astype("float32")
    masks = np.random.randint(0, 2, (4, 64, 64, 1)).astype("int32")
    images, masks = layer((images, masks))  # masks unchanged
    ```
    """

    def __init__(
        self,
        brightness_range=(-0.1, 0.1),
        contrast_range=(0.8, 1.2),
        gamma_range=(0.8, 1.25),
        value_range=(0.0, 1.0),
        data_format=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(data_format=data_format, seed=seed, **kwargs)
        self.brightness_range = standardize_range(
            brightness_range, "brightness_range"
        )
        self.contrast_range = standardize_range(
            contrast_range, "contrast_range", positive=True
        )
        self.gamma_range = standardize_range(
            gamma_range, "gamma_range", positive=True
        )
        value_range = standardize_range(value_range, "value_range")
        if value_range is None or value_range[0] == value_range[1]:
            raise ValueError(
                "`value_range` must be a tuple `(low, high)` with low < high. "
                f"Received: value_range={value_range!r}"
            )
        self.value_range = value_range

    def get_random_transformation(self, data, training=True, seed=None):
        """Draws per-sample gray-value parameters for a batch.

        Returns:
            A dict with float32 tensors of shape `(batch,)` under
            `"gamma"`, `"contrast"` and `"brightness"` (the enabled ones),
            or `None` if `training` is `False`.
        """
        if not training:
            return None
        return draw_gray_value_parameters(
            self.backend,
            self._batch_size(data),
            self.brightness_range,
            self.contrast_range,
            self.gamma_range,
            self._seeds(seed),
        )

    def _augment(self, images, masks, weights, transformation):
        images = adjust_gray_values(
            self.backend, images, transformation, self.value_range
        )
        return images, masks, weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "brightness_range": self.brightness_range,
                "contrast_range": self.contrast_range,
                "gamma_range": self.gamma_range,
                "value_range": self.value_range,
            }
        )
        return config
