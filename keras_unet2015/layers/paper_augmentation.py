import math

import keras

from keras_unet2015.layers import _warp
from keras_unet2015.layers._base_augmentation import BaseGeometricAugmentation
from keras_unet2015.layers._base_augmentation import standardize_grid_size
from keras_unet2015.layers._base_augmentation import unpack
from keras_unet2015.layers.random_gray_value import adjust_gray_values
from keras_unet2015.layers.random_gray_value import draw_gray_value_parameters
from keras_unet2015.layers.random_gray_value import standardize_range

FLIP_MODES = ("horizontal_and_vertical", "horizontal", "vertical", None)


def _check_non_negative(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < 0
    ):
        raise ValueError(
            f"`{name}` must be a non-negative number. "
            f"Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="keras_unet2015")
class PaperAugmentation(BaseGeometricAugmentation):
    """The U-Net paper's data augmentation, in one layer.

    The paper trains on very few images and augments them with "shift and
    rotation invariance as well as robustness to deformations and gray
    value variations", above all random elastic deformations (see
    `ElasticDeform`). It gives no ranges except for the deformation; the
    defaults here follow its intent for microscopy, where orientation
    carries no meaning: any rotation, both flips, a shift of up to 10% of
    the tile, the paper's 3 x 3 grid with 10 px standard deviation, and mild
    gray-value changes. Every range is a parameter.

    All geometric parts are fused into a single resampling, so the image is
    interpolated once, not once per step. For every sample the layer draws
    an elastic field `d` (as `ElasticDeform`), an angle, flips `F` (a sign
    per axis) and a shift `s`, and reads output pixel `p` from the input at

        c + R(angle) F (p + d(p) - c) - s

    where `c` is the image centre and `R` rotates the content
    counter-clockwise for positive angles. Pixels read from beyond the
    border are mirrored by default. The same coordinates serve the image
    (`interpolation`), the segmentation mask (nearest neighbour) and the
    weight map (bilinear). Then the image alone gets the gray-value
    variation of `RandomGrayValue` (gamma, contrast, brightness).

    Reference:

    - [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597),
      section 3.1.

    Args:
        rotation_range: float. Angles are drawn uniformly from
            `[-rotation_range, rotation_range]` degrees; 0 disables
            rotation. Defaults to `180.0` (any orientation).
        shift_range: float. Shifts are drawn uniformly from
            `[-shift_range, shift_range]` times the number of rows (for the
            row shift) and columns (for the column shift); 0 disables them.
            Defaults to `0.1`.
        flip_mode: str or None. `"horizontal_and_vertical"` (each axis
            flipped independently with probability 1/2), `"horizontal"`
            (left-right only), `"vertical"` (up-down only) or `None`.
            Defaults to `"horizontal_and_vertical"`.
        grid_size: int or tuple of 2 ints. Control points of the elastic
            deformation along rows and columns. Defaults to `(3, 3)`.
        sigma: float. Standard deviation in pixels of the elastic
            displacements at the control points; 0 disables the
            deformation. Defaults to `10.0`.
        brightness_range: tuple `(low, high)` or None. Brightness offset as
            a fraction of `value_range`. Defaults to `(-0.1, 0.1)`.
        contrast_range: tuple `(low, high)` or None. Contrast factor.
            Defaults to `(0.8, 1.2)`.
        gamma_range: tuple `(low, high)` or None. Gamma exponent, drawn
            log-uniformly. Defaults to `(0.8, 1.25)`.
        value_range: tuple `(low, high)`. Range of the image values (the
            gray-value step maps it to [0, 1] and clips the result to it).
            Defaults to `(0.0, 1.0)`.
        interpolation: str. Image interpolation: `"bilinear"`, `"bicubic"`
            or `"nearest"`. Defaults to `"bilinear"`.
        fill_mode: str. `"mirror"`, `"reflect"`, `"nearest"` or
            `"constant"`, as in `ElasticDeform`. Defaults to `"mirror"`.
        fill_value: float. Image value beyond the border with
            `fill_mode="constant"`. Defaults to `0.0`.
        data_format: str. `"channels_last"` or `"channels_first"`, or `None`
            for `keras.config.image_data_format()`. Defaults to `None`.
        seed: int or None. Seed of the random draws. Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        data: images (rank 3 or 4), a dict with `"images"` (and optionally
            `"segmentation_masks"`, `"sample_weights"`, `"labels"`) or a
            tuple `(images, segmentation_masks[, sample_weights])`, as for
            `ElasticDeform`.
        training: bool. If `False`, `data` is returned unchanged. Defaults
            to `True`.

    Input shape:
        Any of the structures above.

    Output shape:
        The same structure and shapes. Images and weight maps have the
        layer's compute dtype; masks keep their dtype.

    Example:

    ```python
    import tensorflow as tf

    images = np.random.rand(4, 64, 64, 1).astype("float32")
    masks = np.random.randint(0, 2, (4, 64, 64, 1)).astype("int32")
    weights = np.ones((4, 64, 64), "float32")
    augment = keras_unet2015.layers.PaperAugmentation(seed=0)
    images, masks, weights = augment((images, masks, weights))  # eager

    # In a tf.data pipeline, under any backend:
    dataset = tf.data.Dataset.from_tensor_slices((images, masks, weights))
    dataset = dataset.shuffle(30).batch(1).map(augment)
    ```
    """

    def __init__(
        self,
        rotation_range=180.0,
        shift_range=0.1,
        flip_mode="horizontal_and_vertical",
        grid_size=(3, 3),
        sigma=10.0,
        brightness_range=(-0.1, 0.1),
        contrast_range=(0.8, 1.2),
        gamma_range=(0.8, 1.25),
        value_range=(0.0, 1.0),
        interpolation="bilinear",
        fill_mode="mirror",
        fill_value=0.0,
        data_format=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(
            interpolation=interpolation,
            fill_mode=fill_mode,
            fill_value=fill_value,
            data_format=data_format,
            seed=seed,
            **kwargs,
        )
        if flip_mode not in FLIP_MODES:
            raise ValueError(
                f"`flip_mode` must be one of {FLIP_MODES}. "
                f"Received: flip_mode={flip_mode!r}"
            )
        self.rotation_range = _check_non_negative(
            rotation_range, "rotation_range"
        )
        self.shift_range = _check_non_negative(shift_range, "shift_range")
        self.flip_mode = flip_mode
        self.grid_size = standardize_grid_size(grid_size)
        self.sigma = _check_non_negative(sigma, "sigma")
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
        """Draws the per-sample parameters for a batch.

        Returns:
            `None` if `training` is `False`, else a dict of float32 tensors:
            `"displacements"` `(batch, 2, grid_rows, grid_cols)` (elastic
            row and column displacements in pixels at the control points),
            `"angles"` `(batch,)` in radians, `"flips"` `(batch, 2)` (-1 to
            flip the rows / the columns, else 1), `"shifts"` `(batch, 2)` in
            pixels, and the gray-value parameters `"gamma"`, `"contrast"`,
            `"brightness"` `(batch,)` of the enabled variations.
        """
        if not training:
            return None
        xp = self.backend
        seeds = self._seeds(seed)
        batch_size = self._batch_size(data)
        shape = xp.core.shape(unpack(data)[0])
        if self.data_format == "channels_last":
            spatial = shape[-3:-1]
        else:
            spatial = shape[-2:]
        size = xp.core.cast(xp.numpy.stack(list(spatial)), "float32")

        def uniform(shape, low, high):
            return xp.random.uniform(
                shape, minval=low, maxval=high, dtype="float32", seed=seeds()
            )

        transformation = {
            "displacements": xp.random.normal(
                (batch_size, 2) + self.grid_size,
                stddev=self.sigma,
                dtype="float32",
                seed=seeds(),
            ),
            "angles": uniform((batch_size,), -1.0, 1.0)
            * (self.rotation_range * math.pi / 180.0),
            "shifts": uniform((batch_size, 2), -1.0, 1.0)
            * (self.shift_range * size),
        }
        flip = xp.numpy.where(uniform((batch_size, 2), 0.0, 1.0) < 0.5, -1, 1)
        mask = {
            "horizontal_and_vertical": (1, 1),
            "horizontal": (0, 1),
            "vertical": (1, 0),
            None: (0, 0),
        }[self.flip_mode]
        mask = xp.convert_to_tensor(mask, dtype="bool")
        transformation["flips"] = xp.core.cast(
            xp.numpy.where(mask, flip, 1), "float32"
        )
        transformation.update(
            draw_gray_value_parameters(
                xp,
                batch_size,
                self.brightness_range,
                self.contrast_range,
                self.gamma_range,
                seeds,
            )
        )
        return transformation

    def _sampling_grid(self, transformation, height, width):
        xp = self.backend
        rows = xp.numpy.arange(height, dtype="float32")[None, :, None]
        cols = xp.numpy.arange(width, dtype="float32")[None, None, :]
        if self.sigma > 0:
            field = _warp.upsample_displacements(
                xp, transformation["displacements"], height, width
            )
            rows = rows + field[:, 0]
            cols = cols + field[:, 1]
        center_row = (xp.core.cast(height, "float32") - 1.0) / 2.0
        center_col = (xp.core.cast(width, "float32") - 1.0) / 2.0

        def per_sample(x):
            return xp.numpy.reshape(x, (-1, 1, 1))

        flips = transformation["flips"]
        rows = (rows - center_row) * per_sample(flips[:, 0])
        cols = (cols - center_col) * per_sample(flips[:, 1])
        cos = per_sample(xp.numpy.cos(transformation["angles"]))
        sin = per_sample(xp.numpy.sin(transformation["angles"]))
        shifts = transformation["shifts"]
        source_rows = (
            cos * rows + sin * cols + center_row - per_sample(shifts[:, 0])
        )
        source_cols = (
            cos * cols - sin * rows + center_col - per_sample(shifts[:, 1])
        )
        return source_rows, source_cols

    def _augment(self, images, masks, weights, transformation):
        images, masks, weights = super()._augment(
            images, masks, weights, transformation
        )
        images = adjust_gray_values(
            self.backend, images, transformation, self.value_range
        )
        return images, masks, weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rotation_range": self.rotation_range,
                "shift_range": self.shift_range,
                "flip_mode": self.flip_mode,
                "grid_size": self.grid_size,
                "sigma": self.sigma,
                "brightness_range": self.brightness_range,
                "contrast_range": self.contrast_range,
                "gamma_range": self.gamma_range,
                "value_range": self.value_range,
            }
        )
        return config
