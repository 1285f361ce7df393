"""Choosing an installed backend when Keras would default to a missing one."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from keras_unet2015 import _default_backend


@pytest.fixture
def unconfigured(monkeypatch, tmp_path):
    """No KERAS_BACKEND, no keras.json, Keras not imported yet."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.setattr(_default_backend, "chosen_backend", None)
    # setenv/delenv restore KERAS_BACKEND after the test, also when the
    # function under test sets it.
    monkeypatch.setenv("KERAS_BACKEND", "")
    return tmp_path


def fake_installed(monkeypatch, modules):
    monkeypatch.setattr(_default_backend, "_installed", modules.__contains__)


def test_picks_jax_then_torch_when_tensorflow_is_missing(
    unconfigured, monkeypatch
):
    fake_installed(monkeypatch, {"jax", "torch"})
    assert _default_backend.choose_installed_backend() == "jax"
    assert os.environ["KERAS_BACKEND"] == "jax"
    assert _default_backend.chosen_backend == "jax"

    monkeypatch.setenv("KERAS_BACKEND", "")
    fake_installed(monkeypatch, {"torch"})
    assert _default_backend.choose_installed_backend() == "torch"
    assert os.environ["KERAS_BACKEND"] == "torch"


def test_keeps_the_configuration_and_the_tensorflow_default(
    unconfigured, monkeypatch
):
    fake_installed(monkeypatch, {"jax", "torch"})
    # A backend in keras.json is the user's choice.
    (unconfigured / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert _default_backend.choose_installed_backend() is None
    assert os.environ["KERAS_BACKEND"] == ""
    # The default Keras writes into a new keras.json is not a choice: it
    # cannot work without TensorFlow.
    (unconfigured / "keras.json").write_text(
        json.dumps({"backend": "tensorflow"})
    )
    assert _default_backend.choose_installed_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "")
    (unconfigured / "keras.json").unlink()
    # TensorFlow installed: Keras's own default works.
    fake_installed(monkeypatch, {"tensorflow", "jax"})
    assert _default_backend.choose_installed_backend() is None
    # An explicit KERAS_BACKEND is kept.
    fake_installed(monkeypatch, {"jax"})
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert _default_backend.choose_installed_backend() is None
    assert os.environ["KERAS_BACKEND"] == "torch"


def test_nothing_changes_once_keras_is_imported(unconfigured, monkeypatch):
    fake_installed(monkeypatch, {"jax"})
    monkeypatch.setitem(sys.modules, "keras", object())
    assert _default_backend.choose_installed_backend() is None
    assert os.environ["KERAS_BACKEND"] == ""


@pytest.mark.skipif(
    not _default_backend._installed("jax"), reason="needs JAX installed"
)
def test_import_works_without_tensorflow_and_without_configuration(tmp_path):
    # A fresh interpreter in which TensorFlow cannot be imported, as after
    # `pip install "keras-unet2015[jax]"`, and no backend configured.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # `import tensorflow` now fails
        import keras_unet2015
        import keras
        print(keras.backend.backend())
        """
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KERAS_BACKEND", "KERAS_HOME")
    }
    env["KERAS_HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "jax"
