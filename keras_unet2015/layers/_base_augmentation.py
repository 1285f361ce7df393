"""Base classes of the package's augmentation layers.

The layers subclass Keras's `DataLayer`
(`keras.src.layers.preprocessing.data_layer`), the base of Keras's own image
preprocessing layers: inside a `tf.data` pipeline it switches `self.backend`
to TensorFlow whatever the Keras backend is, so the layers run in `tf.data`
under JAX and PyTorch too. No public Keras API offers this. `DataLayer` and
`keras.src.utils.backend_utils.DynamicBackend` have the same source in Keras
3.12.0, 3.13.0, 3.14.0 and 3.15.1 (pin `keras>=3.12,<3.16`);
`tests/test_elastic_deform.py` covers the import and the `tf.data` path on
every backend.
"""

import itertools
import json
import sys

import keras
import numpy as np
from keras.src.layers.preprocessing.data_layer import DataLayer

from keras_unet2015.backend_utils import standardize_data_format
from keras_unet2015.layers import _warp

IMAGES = "images"
SEGMENTATION_MASKS = "segmentation_masks"
SAMPLE_WEIGHTS = "sample_weights"
# Keys a geometric transformation leaves alone (per-image class labels).
PASS_THROUGH_KEYS = ("labels",)
DICT_KEYS = (IMAGES, SEGMENTATION_MASKS, SAMPLE_WEIGHTS) + PASS_THROUGH_KEYS
# `jax.jit`-compiled methods for eager calls on JAX, by class and config.
_JITTED_METHODS = {}


def unpack(data):
    """Splits `data` into images, masks, weights and a function to re-pack.

    `data` is an image tensor, a dict with the keys of `DICT_KEYS`, or an
    `(images,)`, `(images, segmentation_masks)` or
    `(images, segmentation_masks, sample_weights)` tuple (or list), as
    `tf.data.Dataset.map` and `keras.utils.PyDataset` yield them.
    """
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(DICT_KEYS))
        if IMAGES not in data or unknown:
            raise ValueError(
                "A dict input must hold an 'images' entry and may hold "
                f"'{SEGMENTATION_MASKS}' (warped with nearest-neighbour "
                f"interpolation), '{SAMPLE_WEIGHTS}' (per-pixel weight maps, "
                "warped linearly) and 'labels' (passed through). Received "
                f"keys: {sorted(data)}. Rename the entries, or remove the "
                "ones the layer must not see: an entry it does not know "
                "would otherwise stay unwarped and misaligned."
            )

        def pack_dict(images, masks, weights):
            outputs = dict(data)
            outputs[IMAGES] = images
            if SEGMENTATION_MASKS in data:
                outputs[SEGMENTATION_MASKS] = masks
            if SAMPLE_WEIGHTS in data:
                outputs[SAMPLE_WEIGHTS] = weights
            return outputs

        return (
            data[IMAGES],
            data.get(SEGMENTATION_MASKS),
            data.get(SAMPLE_WEIGHTS),
            pack_dict,
        )
    if isinstance(data, (tuple, list)):
        if not 1 <= len(data) <= 3:
            raise ValueError(
                "A tuple input must be `(images,)`, `(images, "
                "segmentation_masks)` or `(images, segmentation_masks, "
                f"sample_weights)`. Received a tuple of {len(data)} items."
            )
        items = list(data) + [None] * (3 - len(data))

        def pack_tuple(images, masks, weights):
            outputs = [images, masks, weights][: len(data)]
            return outputs if isinstance(data, list) else tuple(outputs)

        return items[0], items[1], items[2], pack_tuple
    return data, None, None, lambda images, masks, weights: images


def standardize_grid_size(grid_size):
    """Validates a grid size: an int or 2 ints, each at least 2."""
    if isinstance(grid_size, int) and not isinstance(grid_size, bool):
        grid_size = (grid_size, grid_size)
    if (
        not isinstance(grid_size, (tuple, list))
        or len(grid_size) != 2
        or any(
            isinstance(g, bool) or not isinstance(g, int) or g < 2
            for g in grid_size
        )
    ):
        raise ValueError(
            "`grid_size` must be an integer >= 2 or a tuple of two such "
            "integers (control points along the rows and the columns). "
            f"Received: grid_size={grid_size!r}"
        )
    return tuple(grid_size)


def _cast_in_own_framework(x, dtype):
    """Casts `x` with the framework that made it (TensorFlow in tf.data)."""
    tf = sys.modules.get("tensorflow")
    if (
        tf is not None
        and not isinstance(x, keras.KerasTensor)
        and tf.is_tensor(x)
    ):
        return tf.cast(x, dtype)
    return keras.ops.cast(x, dtype)


class BaseAugmentation(DataLayer):
    """Structure handling, seeding and `tf.data` support of the layers.

    Subclasses implement `get_random_transformation(data, training, seed)`
    and `_augment(images, masks, weights, transformation)`, which receives
    float32 images and float32 weights in `(batch, rows, cols, channels)`
    layout (masks in their own dtype) and returns them in the same layout.
    """

    def __init__(self, data_format=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int)
        ):
            raise ValueError(
                f"`seed` must be an integer or None. Received: seed={seed!r}"
            )
        self.data_format = standardize_data_format(data_format)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        # No weights to create (as `keras.layers.Dropout`): built at once, so
        # that `stateless_call` works before a first call.
        self.built = True

    def __call__(self, data, *more_data, **kwargs):
        # `tf.data.Dataset.map` unpacks tuple elements into positional
        # arguments: `layer(x, y, w)` means `layer((x, y, w))`.
        if more_data:
            data = (data,) + more_data
        # Inside tf.data, `DataLayer` casts every input to the compute dtype.
        # Masks hold labels: hand them back in the dtype they came in.
        masks = unpack(data)[1]
        mask_dtype = getattr(masks, "dtype", None)
        outputs = super().__call__(data, **kwargs)
        if mask_dtype is None:
            return outputs
        mask_dtype = keras.backend.standardize_dtype(mask_dtype)
        images, out_masks, weights, pack = unpack(outputs)
        if keras.backend.standardize_dtype(out_masks.dtype) != mask_dtype:
            out_masks = _cast_in_own_framework(out_masks, mask_dtype)
            outputs = pack(images, out_masks, weights)
        return outputs

    def _eager_on_jax(self, args):
        """Whether this is an eager JAX computation (not traced, not tf)."""
        if self.backend.name != "jax":
            return False
        import jax

        return not any(
            isinstance(x, jax.core.Tracer) for x in keras.tree.flatten(args)
        )

    def _run(self, method_name, *args, static_argnums=()):
        """Calls a pure method, compiled with `jax.jit` if eager on JAX.

        Run eagerly, JAX compiles each of the hundred-odd small ops of a
        warp separately for every new shape (seconds); one `jax.jit` of the
        whole method compiles once and runs much faster. The compiled
        function is shared by all layers of the same class and config (the
        method depends on nothing else). Inside a trace (a user's `jax.jit`,
        `stateless_call` in a train step), in `tf.data` and on other
        backends, the method runs as is.
        """
        method = getattr(self, method_name)
        if not self._eager_on_jax(args):
            return method(*args)
        import jax

        config = self.get_config()
        for key in ("name", "seed", "trainable"):
            config.pop(key, None)
        key = (
            type(self),
            method_name,
            static_argnums,
            json.dumps(config, sort_keys=True, default=repr),
        )
        if key not in _JITTED_METHODS:
            _JITTED_METHODS[key] = jax.jit(
                method, static_argnums=static_argnums
            )
        return _JITTED_METHODS[key](*args)

    def _seeds(self, seed):
        """A function giving the seed of each successive random draw.

        A `keras.random.SeedGenerator` (the layer's own for `seed=None`)
        advances by itself. An int seed (as a data pipeline passes to make
        a sample's augmentation depend on the sample only) is expanded into
        independent int seeds with NumPy's `SeedSequence`: reusing one int
        for every draw would correlate, say, the angle and the flips.
        """
        if seed is None:
            seed = self._get_seed_generator(self.backend.name)
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            draws = itertools.count()
            return lambda: int(
                np.random.SeedSequence([int(seed), next(draws)]).generate_state(
                    1
                )[0]
            )
        return lambda: seed

    def _batch_size(self, data):
        images = unpack(data)[0]
        shape = self.backend.core.shape(images)
        self._check_image_rank(shape)
        return shape[0] if len(shape) == 4 else 1

    def _check_image_rank(self, shape):
        if len(shape) not in (3, 4):
            raise ValueError(
                f"{self.__class__.__name__} expects images of rank 3 "
                "(rows, cols, channels) or 4 (batch, rows, cols, channels) "
                f"in {self.data_format} order. Received: shape={shape}"
            )

    def _to_canonical(self, x, image_rank, name):
        """`(batch, rows, cols, channels)` view of `x` and its inverse.

        `x` is an image-like tensor of rank `image_rank` (with a channel axis
        where `data_format` says) or `image_rank - 1` (no channel axis, as
        Keras's per-pixel `sample_weight`).
        """
        xp = self.backend
        rank = len(x.shape)
        if rank not in (image_rank, image_rank - 1):
            raise ValueError(
                f"`{name}` must have the rank of the images ({image_rank}, "
                f"with a channel axis) or one less (no channel axis). "
                f"Received: {name}.shape={tuple(x.shape)}"
            )
        batched = image_rank == 4
        has_channels = rank == image_rank
        if not batched:
            x = xp.numpy.expand_dims(x, 0)
        if not has_channels:
            x = xp.numpy.expand_dims(x, -1)
        elif self.data_format == "channels_first":
            x = xp.numpy.transpose(x, (0, 2, 3, 1))

        def restore(y):
            if not has_channels:
                y = xp.numpy.squeeze(y, -1)
            elif self.data_format == "channels_first":
                y = xp.numpy.transpose(y, (0, 3, 1, 2))
            if not batched:
                y = xp.numpy.squeeze(y, 0)
            return y

        return x, restore

    def _check_spatial_shapes(self, images, masks, weights):
        image_shape = tuple(images.shape)
        axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        if len(image_shape) == 3:
            axes = tuple(a - 1 for a in axes)
        expected = tuple(image_shape[a] for a in axes)
        for name, x in ((SEGMENTATION_MASKS, masks), (SAMPLE_WEIGHTS, weights)):
            if x is None:
                continue
            # With a channel axis the spatial axes sit where the images'
            # do; without one, they are the last two axes.
            if len(x.shape) == len(image_shape):
                spatial = tuple(x.shape[a] for a in axes)
            else:
                spatial = tuple(x.shape)[-2:]
            for e, s in zip(expected, spatial):
                if e is not None and s is not None and e != s:
                    raise ValueError(
                        f"`{name}` must have the rows and columns of the "
                        f"images {expected}. Received: {name}.shape="
                        f"{tuple(x.shape)}, images.shape={image_shape}"
                    )

    def call(self, data, training=True):
        if not training:
            return data
        images, masks, weights, pack = unpack(data)
        transformation = self.get_random_transformation(data, training=True)
        return pack(
            *self._run("_apply", images, masks, weights, transformation)
        )

    def _apply(self, images, masks, weights, transformation):
        """Applies `transformation` to whichever of the three is given."""
        xp = self.backend
        image_rank = len(images.shape)
        self._check_image_rank(images.shape)
        self._check_spatial_shapes(images, masks, weights)
        images, restore_images = self._to_canonical(images, image_rank, IMAGES)
        images = xp.core.cast(images, "float32")
        restore_masks = restore_weights = None
        if masks is not None:
            masks, restore_masks = self._to_canonical(
                masks, image_rank, SEGMENTATION_MASKS
            )
        if weights is not None:
            weights, restore_weights = self._to_canonical(
                weights, image_rank, SAMPLE_WEIGHTS
            )
            weights = xp.core.cast(weights, "float32")
        images, masks, weights = self._augment(
            images, masks, weights, transformation
        )
        images = xp.core.cast(restore_images(images), self.compute_dtype)
        if masks is not None:
            masks = restore_masks(masks)
        if weights is not None:
            weights = xp.core.cast(restore_weights(weights), self.compute_dtype)
        return images, masks, weights

    def transform(self, data, transformation):
        """Applies a given transformation to `data`.

        Args:
            data: what `call` accepts: images, a dict or a tuple.
            transformation: the output of `get_random_transformation` for
                data of the same batch size.

        Returns:
            `data` transformed, in the same structure.
        """
        images, masks, weights, pack = unpack(data)
        return pack(
            *self._run("_apply", images, masks, weights, transformation)
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, data, training=True):
        images, masks, weights, pack = unpack(data)

        def spec(x, dtype):
            if x is None:
                return None
            return keras.KerasTensor(x.shape, dtype=dtype)

        return pack(
            spec(images, self.compute_dtype),
            spec(masks, getattr(masks, "dtype", None)),
            spec(weights, self.compute_dtype),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"data_format": self.data_format, "seed": self.seed})
        return config


class BaseGeometricAugmentation(BaseAugmentation):
    """A random resampling applied alike to images, masks and weight maps.

    Subclasses implement `get_random_transformation` and
    `_sampling_grid(transformation, height, width)`, which returns the input
    row and column (two float32 `(batch, height, width)` tensors) every
    output pixel is read from.
    """

    def __init__(
        self,
        interpolation="bilinear",
        fill_mode="mirror",
        fill_value=0.0,
        data_format=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(data_format=data_format, seed=seed, **kwargs)
        if interpolation not in _warp.INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {_warp.INTERPOLATIONS}. "
                f"Received: interpolation={interpolation!r}"
            )
        if fill_mode not in _warp.FILL_MODES:
            raise ValueError(
                f"`fill_mode` must be one of {_warp.FILL_MODES}. "
                f"Received: fill_mode={fill_mode!r}"
            )
        if isinstance(fill_value, bool) or not isinstance(
            fill_value, (int, float)
        ):
            raise ValueError(
                "`fill_value` must be a number. "
                f"Received: fill_value={fill_value!r}"
            )
        self.interpolation = interpolation
        self.fill_mode = fill_mode
        self.fill_value = float(fill_value)

    def _augment(self, images, masks, weights, transformation):
        xp = self.backend
        shape = xp.core.shape(images)
        rows, cols = self._sampling_grid(transformation, shape[1], shape[2])
        grid = _warp.SamplingGrid(
            xp, rows, cols, shape[1], shape[2], self.fill_mode
        )
        images = _warp.resample(
            xp,
            images,
            grid,
            self.interpolation,
            xp.convert_to_tensor(self.fill_value, dtype="float32"),
        )
        if weights is not None:
            weights = _warp.resample(
                xp,
                weights,
                grid,
                "bilinear",
                xp.convert_to_tensor(0.0, dtype="float32"),
            )
        if masks is not None:
            masks = _warp.resample(
                xp,
                masks,
                grid,
                "nearest",
                xp.numpy.zeros((), dtype=masks.dtype),
            )
        return images, masks, weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "interpolation": self.interpolation,
                "fill_mode": self.fill_mode,
                "fill_value": self.fill_value,
            }
        )
        return config
