"""Small helpers shared by the package's layers and models."""

import keras

DATA_FORMATS = ("channels_last", "channels_first")


def standardize_data_format(data_format):
    """Resolves `None` to `keras.config.image_data_format()` and validates."""
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"`data_format` must be one of {DATA_FORMATS} or None. "
            f"Received: data_format={data_format!r}"
        )
    return data_format


def tensorflow_lacks_channels_first():
    """Whether TensorFlow is the backend and no GPU can run NCHW kernels.

    TensorFlow's CPU kernels for 2D convolution, its gradient and pooling
    only take NHWC (`channels_last`) data; Keras passes `channels_first`
    data to them unchanged, and the graph then fails with "The Conv2D op
    currently only supports the NHWC tensor format on the CPU".
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


def check_data_format_runs(data_format, owner):
    """Raises a clear error where `data_format` cannot run on this backend."""
    if data_format == "channels_first" and tensorflow_lacks_channels_first():
        raise ValueError(
            f"{owner} with data_format='channels_first' cannot run on the "
            "TensorFlow backend without a GPU: TensorFlow's CPU kernels for "
            "convolution and pooling only take channels_last (NHWC) data. "
            "Use data_format='channels_last' (transpose the input with "
            "`np.moveaxis(x, 1, -1)`; the weights are the same, "
            "`model.set_weights(...)` copies them), or run on the JAX or "
            "PyTorch backend."
        )
