"""The training-sample stream as a `tf.data` pipeline, and TFRecord files.

These functions need TensorFlow (any Keras backend can consume the
resulting `tf.data.Dataset` in `model.fit`). Tiles are drawn by the same
`TileSampler` as `TrainingSampleStream` (mirrored images, labels and weights
at the input size), the augmentation runs inside the pipeline, and labels
and weights are then cropped to the output size.
"""

import numpy as np

from keras_unet2015.backend_utils import standardize_data_format
from keras_unet2015.datasets import tiles


def _import_tensorflow():
    try:
        import tensorflow as tf
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "tf.data pipelines and TFRecord files need TensorFlow. Install "
            "it with `pip install tensorflow` (or `tensorflow-cpu`), or use "
            "keras_unet2015.datasets.TrainingSampleStream, which works on "
            "every backend without TensorFlow."
        ) from error
    return tf


def _crop_and_layout(tf, images, labels, weights, output_size, data_format):
    def crop(array):
        height, width = array.shape[1], array.shape[2]
        top = (height - output_size[0]) // 2
        left = (width - output_size[1]) // 2
        return array[
            :, top : top + output_size[0], left : left + output_size[1]
        ]

    labels = tf.cast(tf.round(tf.cast(labels, tf.float32)), tf.int32)
    if data_format == "channels_first":
        images = tf.transpose(images, (0, 3, 1, 2))
    return (
        tf.cast(images, tf.float32),
        crop(labels),
        tf.cast(crop(weights), tf.float32),
    )


def make_tf_dataset(
    images,
    labels,
    weights=None,
    input_size=572,
    output_size=388,
    batch_size=1,
    augmentation=None,
    seed=0,
    data_format=None,
    num_parallel_calls=None,
    num_classes=None,
    ignore_class=None,
):
    """An endless `tf.data.Dataset` of random training tiles.

    Same tiles and batch layout as `TrainingSampleStream` (see there), as a
    `tf.data` pipeline: sampling runs in parallel `map` calls, the
    augmentation inside the pipeline (Keras preprocessing layers such as
    `ElasticDeform` run there on every backend), then labels and weights are
    cropped to `output_size` and batches are prefetched. Sample `i` of the
    stream is a pure function of `(seed, i)`, and the augmentation runs
    batch after batch, so a seeded augmentation layer gives the same
    batches on every run; use `model.fit(dataset, steps_per_epoch=...)`.
    To resume
    an interrupted run with exactly the same batches, use
    `TrainingSampleStream` instead (a `tf.data` iterator position is not
    part of a Keras checkpoint).

    The NumPy labels and weight maps are checked here, once, before the
    pipeline is built, as in `TrainingSampleStream`: integer class labels
    (see `num_classes`) and finite, non-negative weights.

    Args:
        images: list or array of images, as for `TrainingSampleStream`.
        labels: list or array of integer class maps.
        weights: `None` or list or array of weight maps. Defaults to `None`.
        input_size: int or `(height, width)`. Defaults to `572`.
        output_size: int or `(height, width)`. Defaults to `388`.
        batch_size: int. Defaults to `1`.
        augmentation: `None` or a callable on `(images, labels, weights)`
            batches of TensorFlow tensors at the input size, returning the
            same tuple. Defaults to `None`.
        seed: int. Defaults to `0`.
        data_format: `None`, `"channels_last"` or `"channels_first"`.
            Defaults to `None`.
        num_parallel_calls: `None` or int. Parallel sampling calls; `None`
            uses `tf.data.AUTOTUNE`. Defaults to `None`.
        num_classes: int or `None`. The model's number of classes; labels
            must lie in `[0, num_classes)` (or equal `ignore_class`). `None`
            rejects negative labels and 0/255 masks only. Defaults to
            `None`.
        ignore_class: int or `None`. A label value that is no class, as in
            `WeightedPixelLoss`. Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of `(x, y, sample_weight)` batches.

    Example:

    ```python
    images, labels, _ = keras_unet2015.datasets.make_touching_cells(4, 128)
    dataset = keras_unet2015.datasets.make_tf_dataset(
        images, labels, input_size=124, output_size=36, batch_size=2
    )
    x, y, w = next(iter(dataset))  # (2, 124, 124, 1), (2, 36, 36), ...
    ```
    """
    tf = _import_tensorflow()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValueError(f"`batch_size` must be an int. Received: {batch_size}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: {batch_size}")
    data_format = standardize_data_format(data_format)
    sampler = tiles.TileSampler(
        images,
        labels,
        weights,
        input_size,
        output_size,
        seed,
        num_classes=num_classes,
        ignore_class=ignore_class,
    )
    in_h, in_w = sampler.input_size
    channels = sampler.channels

    def sample(index):
        return sampler.sample(0, int(index), 0)

    def sample_graph(index):
        image, label, weight = tf.numpy_function(
            sample, [index], (tf.float32, tf.int32, tf.float32)
        )
        image.set_shape((in_h, in_w, channels))
        label.set_shape((in_h, in_w))
        weight.set_shape((in_h, in_w))
        return image, label, weight

    parallel = (
        tf.data.AUTOTUNE if num_parallel_calls is None else (num_parallel_calls)
    )
    dataset = tf.data.Dataset.counter().map(
        sample_graph, num_parallel_calls=parallel, deterministic=True
    )
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if augmentation is not None:
        # Sequential on purpose: a seeded layer draws its random state in
        # call order, so parallel calls would hand the draws to batches in
        # a different order on every run.
        dataset = dataset.map(lambda x, y, w: tuple(augmentation((x, y, w))))
    dataset = dataset.map(
        lambda x, y, w: _crop_and_layout(
            tf, x, y, w, sampler.output_size, data_format
        ),
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def write_tfrecord(path, batches, num_batches=None):
    """Writes prepared training samples to a TFRecord file.

    Each sample (one tile of a batch) is stored as a `tf.train.Example` with
    the raw bytes and shapes of its image (`float32`), labels (`int32`) and
    weights (`float32`), so that a costly preparation (weight maps,
    augmentation) can be done once and streamed from disk later with
    `read_tfrecord`.

    Args:
        path: str or `Path`. Output file.
        batches: an iterable of `(x, y, sample_weight)` batches, such as a
            `TrainingSampleStream` or the result of `make_tf_dataset`.
        num_batches: `None` or int. Number of batches to write; `None`
            writes all (required for endless datasets). Defaults to `None`.

    Returns:
        The number of samples written.

    Example:

    ```python
    images, labels, _ = keras_unet2015.datasets.make_touching_cells(4, 128)
    stream = keras_unet2015.datasets.TrainingSampleStream(
        images, labels, input_size=124, output_size=36, batch_size=2,
        steps_per_epoch=3,
    )
    count = keras_unet2015.datasets.write_tfrecord("samples.tfrecord", stream)
    dataset = keras_unet2015.datasets.read_tfrecord("samples.tfrecord")
    x, y, w = next(iter(dataset.batch(2)))  # (2, 124, 124, 1), (2, 36, 36)
    ```
    """
    tf = _import_tensorflow()
    if num_batches is None:
        try:
            len(batches)
        except TypeError:
            raise ValueError(
                "`num_batches` is required for an endless dataset such as "
                "the one of make_tf_dataset."
            ) from None
    if hasattr(batches, "__getitem__") and hasattr(batches, "__len__"):
        total = len(batches) if num_batches is None else num_batches
        iterator = (batches[i] for i in range(total))
    else:
        iterator = iter(batches)
    count = 0

    def feature_bytes(array):
        return tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[array.tobytes()])
        )

    def feature_shape(array):
        return tf.train.Feature(
            int64_list=tf.train.Int64List(value=list(array.shape))
        )

    with tf.io.TFRecordWriter(str(path)) as writer:
        for number, batch in enumerate(iterator):
            if num_batches is not None and number >= num_batches:
                break
            x, y, w = (np.asarray(a) for a in batch)
            for i in range(x.shape[0]):
                xi = np.ascontiguousarray(x[i], np.float32)
                yi = np.ascontiguousarray(y[i], np.int32)
                wi = np.ascontiguousarray(w[i], np.float32)
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "image": feature_bytes(xi),
                            "image_shape": feature_shape(xi),
                            "labels": feature_bytes(yi),
                            "labels_shape": feature_shape(yi),
                            "weights": feature_bytes(wi),
                            "weights_shape": feature_shape(wi),
                        }
                    )
                )
                writer.write(example.SerializeToString())
                count += 1
    return count


def read_tfrecord(paths):
    """Reads samples written by `write_tfrecord` as a `tf.data.Dataset`.

    Args:
        paths: a path or a list of paths of TFRecord files.

    Returns:
        A `tf.data.Dataset` of single `(x, y, sample_weight)` samples; batch
        it (`.batch(n)`) before `model.fit`.

    Example:

    ```python
    images, labels, _ = keras_unet2015.datasets.make_touching_cells(4, 128)
    stream = keras_unet2015.datasets.TrainingSampleStream(
        images, labels, input_size=124, output_size=36, batch_size=2,
        steps_per_epoch=3,
    )
    count = keras_unet2015.datasets.write_tfrecord("samples.tfrecord", stream)
    dataset = keras_unet2015.datasets.read_tfrecord("samples.tfrecord")
    x, y, w = next(iter(dataset.batch(2)))  # (2, 124, 124, 1), (2, 36, 36)
    ```
    """
    tf = _import_tensorflow()
    if isinstance(paths, (str, bytes)) or not hasattr(paths, "__iter__"):
        paths = [paths]
    paths = [str(p) for p in paths]
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "image_shape": tf.io.FixedLenFeature([3], tf.int64),
        "labels": tf.io.FixedLenFeature([], tf.string),
        "labels_shape": tf.io.FixedLenFeature([2], tf.int64),
        "weights": tf.io.FixedLenFeature([], tf.string),
        "weights_shape": tf.io.FixedLenFeature([2], tf.int64),
    }

    def parse(record):
        features = tf.io.parse_single_example(record, spec)
        image = tf.reshape(
            tf.io.decode_raw(features["image"], tf.float32),
            features["image_shape"],
        )
        labels = tf.reshape(
            tf.io.decode_raw(features["labels"], tf.int32),
            features["labels_shape"],
        )
        weights = tf.reshape(
            tf.io.decode_raw(features["weights"], tf.float32),
            features["weights_shape"],
        )
        return image, labels, weights

    return tf.data.TFRecordDataset(paths).map(parse)
