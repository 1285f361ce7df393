import keras

from keras_unet2015.layers import _warp
from keras_unet2015.layers._base_augmentation import BaseGeometricAugmentation
from keras_unet2015.layers._base_augmentation import standardize_grid_size


@keras.saving.register_keras_serializable(package="keras_unet2015")
class ElasticDeform(BaseGeometricAugmentation):
    """Random elastic deformation of the U-Net paper.

    Draws, for every sample, a random displacement vector at each point of a
    coarse grid of control points that spans the image (3 x 3 by default;
    the outer points sit on the first and last rows and columns), each
    component from `N(0, sigma^2)` pixels. The displacement of every pixel
    is the bicubic interpolation of the grid: the interpolating cubic
    B-spline through the control values with mirror-symmetric boundary
    conditions, applied separably along rows and columns. (This is
    `scipy.ndimage.map_coordinates(grid, ..., order=3, mode="mirror")` and
    what the `elasticdeform` package does; it is written with backend ops, so
    the field is the same on every backend, unlike
    `keras.ops.image.resize(..., "bicubic")`.) Every output pixel `p` is
    then read from the input at `p + d(p)`.

    One field per sample is applied to everything that belongs to it:
    images with `interpolation`, segmentation masks with nearest-neighbour
    interpolation (labels stay labels, dtype kept) and per-pixel weight maps
    with bilinear interpolation. Pixels read from beyond the border are
    extrapolated by mirroring, as the paper does, by default.

    Unlike `keras.layers.RandomElasticTransform` (a different algorithm:
    smoothed per-pixel noise), the image, its mask and its weight map can
    never get different fields: a dict input with an unknown key raises
    instead of passing the entry through unwarped.

    The layer runs eagerly on NumPy arrays (e.g. in a `keras.utils.PyDataset`
    or a PyTorch `DataLoader`), inside a model or a jitted train step (with
    `stateless_call` on JAX), and in a `tf.data` pipeline under every
    backend, like Keras's image preprocessing layers.

    Reference:

    - [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597),
      section 3.1.

    Args:
        grid_size: int or tuple of 2 ints. Number of control points along the
            rows and the columns, each at least 2. Defaults to `(3, 3)`.
        sigma: float. Standard deviation, in pixels, of each displacement
            component at the control points. Defaults to `10.0`.
        interpolation: str. Interpolation of the images: `"bilinear"`,
            `"bicubic"` (cubic B-spline, as `scipy.ndimage` order 3) or
            `"nearest"`. Masks always use `"nearest"` and weight maps
            `"bilinear"`. Defaults to `"bilinear"`.
        fill_mode: str. How pixels beyond the border are extrapolated:
            `"mirror"` (`d c b | a b c d | c b a`, mirroring without
            repeating the edge pixel: NumPy's `"reflect"`), `"reflect"`
            (`c b a | a b c d | d c b`), `"nearest"` (`a a a | a b c d | d d
            d`) or `"constant"` (images take `fill_value`; masks and weight
            maps take 0, so a weight map marks filled pixels as ignored).
            Defaults to `"mirror"`.
        fill_value: float. Image value outside the border with
            `fill_mode="constant"`. Defaults to `0.0`.
        data_format: str. `"channels_last"` or `"channels_first"`, or `None`
            for `keras.config.image_data_format()`. Defaults to `None`.
        seed: int or None. Seed of the random fields: two layers with the
            same seed produce the same sequence of fields. Defaults to
            `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        data: images, a dict or a tuple. Images are a tensor of rank 4
            `(batch, rows, cols, channels)` or rank 3 (one image), in
            `data_format` order. A dict holds `"images"` and optionally
            `"segmentation_masks"`, `"sample_weights"` and `"labels"`
            (per-image labels, passed through). A tuple is
            `(images, segmentation_masks)` or
            `(images, segmentation_masks, sample_weights)`, as
            `tf.data.Dataset.map` passes them. Masks and weight maps have
            the images' rank (with a channel axis) or one less (none, e.g.
            Keras's per-pixel `sample_weight` of shape `(batch, rows,
            cols)`).
        training: bool. If `False`, `data` is returned unchanged. Defaults
            to `True`.

    Input shape:
        Any of the structures above.

    Output shape:
        The same structure and shapes. Images and weight maps have the
        layer's compute dtype; masks keep their dtype.

    Example:

    ```python
    layer = keras_unet2015.ElasticDeform(seed=1)
    images = np.random.rand(2, 64, 64, 1).astype("float32")
    masks = np.random.randint(0, 2, (2, 64, 64, 1)).astype("int32")
    weights = np.ones((2, 64, 64), "float32")
    images, masks, weights = layer((images, masks, weights))

    # In a tf.data pipeline, under any backend:
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, masks, weights))
    dataset = dataset.batch(2).map(layer)
    ```
    """

    def __init__(
        self,
        grid_size=(3, 3),
        sigma=10.0,
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
        if (
            isinstance(sigma, bool)
            or not isinstance(sigma, (int, float))
            or sigma < 0
        ):
            raise ValueError(
                "`sigma` must be a non-negative number of pixels. "
                f"Received: sigma={sigma!r}"
            )
        self.grid_size = standardize_grid_size(grid_size)
        self.sigma = float(sigma)

    def get_random_transformation(self, data, training=True, seed=None):
        """Draws the coarse displacement grids for a batch.

        Args:
            data: the layer's input (or anything with the same images).
            training: bool. If `False`, returns `None`.
            seed: optional `keras.random.SeedGenerator` or int to draw
                from instead of the layer's own generator (an int makes the
                result a function of that int alone).

        Returns:
            A dict with `"displacements"`: float32 tensor
            `(batch, 2, grid_rows, grid_cols)`, the row and column
            displacements in pixels at the control points.
        """
        if not training:
            return None
        xp = self.backend
        displacements = xp.random.normal(
            (self._batch_size(data), 2) + self.grid_size,
            stddev=self.sigma,
            dtype="float32",
            seed=self._seeds(seed)(),
        )
        return {"displacements": displacements}

    def displacement_field(self, displacements, height, width):
        """Per-pixel displacements interpolated from control-point grids.

        Args:
            displacements: tensor `(batch, 2, grid_rows, grid_cols)`: row
                and column displacements at the control points, as in
                `get_random_transformation(...)["displacements"]`.
            height: int. Number of rows of the images.
            width: int. Number of columns of the images.

        Returns:
            float32 tensor `(batch, 2, height, width)`: `[:, 0]` the row and
            `[:, 1]` the column displacement of every pixel. The output
            pixel `(i, j)` is read from the input at
            `(i + field[:, 0, i, j], j + field[:, 1, i, j])`.
        """
        return self._run(
            "_displacement_field",
            displacements,
            height,
            width,
            static_argnums=(1, 2),
        )

    def _displacement_field(self, displacements, height, width):
        xp = self.backend
        displacements = xp.core.cast(displacements, "float32")
        return _warp.upsample_displacements(xp, displacements, height, width)

    def _sampling_grid(self, transformation, height, width):
        xp = self.backend
        field = self._displacement_field(
            transformation["displacements"], height, width
        )
        rows = xp.numpy.arange(height, dtype="float32")[None, :, None]
        cols = xp.numpy.arange(width, dtype="float32")[None, None, :]
        return rows + field[:, 0], cols + field[:, 1]

    def get_config(self):
        config = super().get_config()
        config.update({"grid_size": self.grid_size, "sigma": self.sigma})
        return config
