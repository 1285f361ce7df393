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
