import keras
import numpy as np

from keras_unet2015.backend_utils import standardize_data_format
from keras_unet2015.datasets import tiles

# Key slot of a batch's augmentation seed (tile slots are 0..batch_size-1).
_AUGMENTATION_SLOT = 2**31 - 1


def apply_augmentation(augmentation, images, labels, weights, seed=None):
    """Runs an augmentation on one batch and returns NumPy arrays.

    The augmentation is called with one tuple `(images, labels, weights)`
    (images `(batch, h, w, channels)` or channels first, labels and weights
    `(batch, h, w)`) and must return a tuple of the same three, with the
    same shapes; `keras_unet2015.ElasticDeform` and the paper's pipeline
    follow this convention. When the augmentation is a Keras preprocessing
    layer (it has `get_random_transformation` and `transform`) and `seed`
    is an int, the random transformation is drawn from that seed, so that
    the result depends on the sample only and not on the layer's state.
    """
    data = (images, labels, weights)
    if (
        seed is not None
        and hasattr(augmentation, "get_random_transformation")
        and hasattr(augmentation, "transform")
    ):
        transformation = augmentation.get_random_transformation(
            data, training=True, seed=seed
        )
        result = augmentation.transform(data, transformation)
    else:
        result = augmentation(data)
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise ValueError(
            "The augmentation must return a tuple (images, labels, weights). "
            f"Received: {type(result).__name__}"
        )
    images, labels, weights = (
        np.asarray(keras.ops.convert_to_numpy(a)) for a in result
    )
    return (
        images.astype(np.float32),
        np.rint(labels).astype(np.int32),
        weights.astype(np.float32),
    )


class TrainingSampleStream(keras.utils.PyDataset):
    """Random training tiles with labels and weight maps, as the paper trains.

    Every batch holds `batch_size` input tiles of `input_size` pixels cut
    from randomly chosen training images (chosen with probability
    proportional to their area), at random positions such that the output
    window lies inside the image. Context beyond the image border is
    mirrored (NumPy `mode="reflect"`), as the authors did. The label map and
    the weight map are cut at the input size too, the augmentation (if
    any) warps image, labels and weights together, and then labels and
    weights are center-cropped to `output_size`, the part the network
    predicts.

    Batches are `(x, y, sample_weight)` tuples, the form `model.fit` takes
    and `WeightedPixelLoss` uses: `x` is `float32 (batch, in_h, in_w,
    channels)` (channels first for `"channels_first"`), `y` is `int32
    (batch, out_h, out_w)` class indices and `sample_weight` is `float32
    (batch, out_h, out_w)`.

    Labels and weight maps are checked once, when the stream is built
    (never per batch): labels must be integer class indices (see
    `num_classes`), weights finite and non-negative. A `ValueError` names
    the map, the values found, the first pixel and the fix (a 0/255 mask:
    `label_mode='binary'` or `labels // 255`).

    Each batch is a pure function of `(seed, epoch, index)`: the stream is
    reproducible, gives the same batches with any number of workers, and
    an interrupted training run resumed at epoch `e` sees exactly the
    batches it would have seen (`keras_unet2015.training.fit` keeps
    `epoch` in step with Keras and passes `shuffle=False`: Keras's
    shuffling of the batch order uses Python's global random state). With
    `vary_with_epoch=False` every epoch repeats the same batches (a fixed
    validation set of tiles).

    Args:
        images: list of 2D arrays `(height, width)` or `(height, width,
            channels)`, or one array `(n, height, width[, channels])`. Any
            numeric dtype; converted with
            `keras_unet2015.datasets.to_float_image` (`uint8` / 255).
        labels: list or array of integer class maps `(height, width)`.
        weights: `None` or list or array of weight maps `(height, width)`
            (see `keras_unet2015.weight_maps`). `None` weighs every pixel 1.
            Defaults to `None`.
        input_size: int or `(height, width)`. Input tile size, a valid input
            size of the model. Defaults to `572`.
        output_size: int or `(height, width)`. The model's output size for
            `input_size` (`model.output_size(input_size)`). Defaults to
            `388`.
        batch_size: int. Tiles per batch (the paper uses 1 large tile).
            Defaults to `1`.
        steps_per_epoch: int. Batches per epoch. Defaults to `100`.
        augmentation: `None` or a callable applied to each batch at the
            input size, called as `augmentation((images, labels, weights))`
            and returning the same tuple, such as
            `keras_unet2015.ElasticDeform` or the paper's pipeline. A Keras
            preprocessing layer gets a seed derived from the batch's key
            (`get_random_transformation(..., seed=...)`), so augmented
            batches are reproducible too. Defaults to `None`.
        seed: int. Seed of the tile positions. Defaults to `0`.
        vary_with_epoch: bool. Draw new tiles every epoch. Defaults to
            `True`.
        data_format: `None`, `"channels_last"` or `"channels_first"`.
            Layout of `x`; `None` uses `keras.config.image_data_format()`.
            Defaults to `None`.
        num_classes: int or `None`. The model's number of classes: every
            label must lie in `[0, num_classes)` (or equal
            `ignore_class`). `None` checks what needs no class count:
            negative labels and 0/255 masks are rejected. Defaults to
            `None`.
        ignore_class: int or `None`. A label value that is no class, the
            `ignore_class` of `WeightedPixelLoss` (e.g. 255 for unlabelled
            pixels). Defaults to `None`.
        **kwargs: `workers`, `use_multiprocessing` and `max_queue_size` of
            `keras.utils.PyDataset`.

    Example:

    ```python
    images, labels, _ = keras_unet2015.datasets.make_touching_cells(4, 128)
    stream = keras_unet2015.datasets.TrainingSampleStream(
        images, labels, input_size=124, output_size=36, batch_size=2
    )
    x, y, w = stream[0]
    x.shape, y.shape, w.shape  # (2, 124, 124, 1), (2, 36, 36), (2, 36, 36)
    ```
    """

    def __init__(
        self,
        images,
        labels,
        weights=None,
        input_size=572,
        output_size=388,
        batch_size=1,
        steps_per_epoch=100,
        augmentation=None,
        seed=0,
        vary_with_epoch=True,
        data_format=None,
        num_classes=None,
        ignore_class=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("batch_size", batch_size),
            ("steps_per_epoch", steps_per_epoch),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"`{name}` must be a positive int. Received: {value!r}"
                )
            if value < 1:
                raise ValueError(
                    f"`{name}` must be a positive int. Received: {value!r}"
                )
        if augmentation is not None and not callable(augmentation):
            raise ValueError(
                "`augmentation` must be None or a callable. Received: "
                f"{augmentation!r}"
            )
        self.sampler = tiles.TileSampler(
            images,
            labels,
            weights,
            input_size,
            output_size,
            seed,
            num_classes=num_classes,
            ignore_class=ignore_class,
        )
        self.num_classes = self.sampler.num_classes
        self.ignore_class = self.sampler.ignore_class
        self.input_size = self.sampler.input_size
        self.output_size = self.sampler.output_size
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.augmentation = augmentation
        self.seed = seed
        self.vary_with_epoch = vary_with_epoch
        self.data_format = standardize_data_format(data_format)
        self.epoch = 0

    @property
    def num_batches(self):
        return self.steps_per_epoch

    def __len__(self):
        return self.steps_per_epoch

    def set_epoch(self, epoch):
        """Sets the epoch whose batches `__getitem__` returns."""
        self.epoch = int(epoch)

    def on_epoch_end(self):
        if self.vary_with_epoch:
            self.epoch += 1

    def __getitem__(self, index):
        if not 0 <= index < self.steps_per_epoch:
            raise IndexError(
                f"Batch index {index} out of range for a stream of "
                f"{self.steps_per_epoch} batches per epoch."
            )
        epoch = self.epoch if self.vary_with_epoch else 0
        images, labels, weights = self.sampler.batch(
            epoch, index, self.batch_size
        )
        if self.data_format == "channels_first":
            images = np.transpose(images, (0, 3, 1, 2))
        if self.augmentation is not None:
            seed = int(
                self.sampler.rng(epoch, index, _AUGMENTATION_SLOT).integers(
                    2**31 - 1
                )
            )
            images, labels, weights = apply_augmentation(
                self.augmentation, images, labels, weights, seed=seed
            )
        labels = tiles.center_crop(labels, self.output_size)
        weights = tiles.center_crop(weights, self.output_size)
        return (
            np.ascontiguousarray(images, np.float32),
            np.ascontiguousarray(labels, np.int32),
            np.ascontiguousarray(weights, np.float32),
        )
