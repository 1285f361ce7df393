"""Picks an installed Keras backend when none is configured.

Keras falls back to TensorFlow when neither `KERAS_BACKEND` nor
`~/.keras/keras.json` names a backend (and its first import writes that
default into a new `keras.json`), and then fails at `import keras` if
TensorFlow is not installed, which is the case after
`pip install "keras-unet2015[jax]"` or `[torch]`. Before Keras is first
imported, this module sets `KERAS_BACKEND` to the installed backend in that
case (JAX first, then PyTorch). It changes nothing when `KERAS_BACKEND` is
set, when `keras.json` names another backend, when TensorFlow is installed
or when Keras is already imported.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

#: The backend chosen here, or `None` when the configuration was kept.
chosen_backend = None


def _configured_backend():
    """The backend named by the user, `None` for none or the default."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME")
    base = Path(home) if home else Path(os.path.expanduser("~")) / ".keras"
    config = base / "keras.json"
    try:
        backend = json.loads(config.read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    # "tensorflow" in keras.json is what Keras writes there by itself.
    return None if backend == "tensorflow" else backend


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def choose_installed_backend():
    """Sets `KERAS_BACKEND` when Keras would otherwise fail to import.

    Returns:
        The backend it set, or `None`.
    """
    global chosen_backend
    if "keras" in sys.modules or _configured_backend():
        return None
    if _installed("tensorflow"):
        return None
    for backend, module in (("jax", "jax"), ("torch", "torch")):
        if _installed(module):
            os.environ["KERAS_BACKEND"] = backend
            chosen_backend = backend
            return backend
    return None
