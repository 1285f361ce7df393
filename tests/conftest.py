import importlib.util
import os
from pathlib import Path

import pytest

# Import torch before tensorflow when both are installed (as Keras's own
# conftest does): the other order can segfault.
if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401

import keras  # noqa: E402

SHARED_DATA = Path(
    os.environ.get(
        "KERAS_UNET2015_SHARED_DATA",
        Path(__file__).resolve().parents[2] / "shared" / "data",
    )
)


def pytest_report_header(config):
    return (
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"shared data {SHARED_DATA} "
        f"({'found' if SHARED_DATA.is_dir() else 'absent'})"
    )


@pytest.fixture
def shared_data():
    """Path of `../shared/data`; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data folder {SHARED_DATA} is absent; set "
            "KERAS_UNET2015_SHARED_DATA to the folder holding isbi2012/ "
            "and stardist-dsb2018-nuclei2d/ to run this test"
        )
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts with the default dtype policy and data format."""
    yield
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")
    keras.backend.clear_session()
