"""Trained U-Nets: `UNet2015.from_preset(name)` and their model cards.

A preset is a trained model plus its model card (`metadata.json`: data and
terms, recipe, steps, hardware, wall time, held-out scores, citation).
Presets up to about 10 MB ship inside the wheel, in a folder of this
package (`keras_unet2015/presets/NAME/model.keras` and `metadata.json`).
Larger ones are registered with a release URL and the file's SHA-256 and
fetched once with `keras.utils.get_file` into the Keras cache
(`~/.keras/models/keras_unet2015`, or under `KERAS_HOME`).

Example:

```python
>>> "unet2015_isbi2012_16f" in keras_unet2015.presets.list_presets()
True
```
"""

import copy
import json
import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
CACHE_SUBDIR = "keras_unet2015"

# name -> {"url": ..., "sha256": ..., "metadata": {...}} for presets fetched
# from a release; presets inside the package are found by their folder.
_REMOTE = {}


def _bundled():
    return sorted(
        path.name
        for path in _HERE.iterdir()
        if (path / MODEL_FILE).is_file() and (path / METADATA_FILE).is_file()
    )


def list_presets():
    """Names of the trained models `UNet2015.from_preset` knows.

    Returns:
        A sorted list of preset names: those shipped in the package and
        those registered with `register_preset`.

    Example:

    ```python
    >>> keras_unet2015.presets.list_presets()  # doctest: +ELLIPSIS
    [...'unet2015_isbi2012_16f'...]
    ```
    """
    return sorted(set(_bundled()) | set(_REMOTE))


def register_preset(name, url, sha256, metadata):
    """Registers a preset fetched from `url` (a `.keras` file).

    Args:
        name: str. Preset name (ISBI 2012 presets have `isbi2012` in it).
        url: str. Where the `.keras` file is downloaded from (`https://`
            or, for a mirror on disk, `file://`).
        sha256: str. SHA-256 of the file; a download that does not match
            is rejected.
        metadata: dict. The model card (see `preset_metadata`).

    Example:

    A preset mirrored on disk (a release URL works the same way):

    ```python
    import hashlib
    from pathlib import Path

    keras_unet2015.UNet2015(depth=1, filters=2).save("tiny.keras")
    digest = hashlib.sha256(Path("tiny.keras").read_bytes()).hexdigest()
    keras_unet2015.presets.register_preset(
        "tiny_untrained",
        Path("tiny.keras").resolve().as_uri(),
        sha256=digest,
        metadata={"description": "an untrained depth-1 U-Net"},
    )
    model = keras_unet2015.UNet2015.from_preset(
        "tiny_untrained", cache_dir="cache"
    )
    keras_unet2015.presets.unregister_preset("tiny_untrained")
    ```
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string. Got {name!r}")
    if name in _bundled():
        raise ValueError(f"{name!r} is a preset shipped in the package.")
    sha256 = str(sha256).lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(
            f"`sha256` must be 64 hex digits. Received: {sha256!r}"
        )
    _REMOTE[name] = {"url": url, "sha256": sha256, "metadata": dict(metadata)}


def unregister_preset(name):
    """Removes a preset added with `register_preset`.

    Args:
        name: str. The preset's name.

    Example:

    ```python
    keras_unet2015.presets.unregister_preset("not_registered")  # no error
    ```
    """
    _REMOTE.pop(name, None)


def _unknown(name):
    return ValueError(
        f"Unknown preset {name!r}. Known presets: {list_presets()}. A local "
        "`.keras` file or a folder holding `model.keras` works too."
    )


def preset_metadata(name):
    """The model card of a preset, as a dict.

    Args:
        name: str. A name from `list_presets()`.

    Returns:
        A dict with the card's fields (for the ISBI 2012 presets:
        `description`, `data`, `data_terms`, `recipe`, `steps`,
        `hardware`, `wall_time_s`, `scores`, `citation`, ...).

    Example:

    ```python
    >>> card = keras_unet2015.presets.preset_metadata("unet2015_isbi2012_16f")
    >>> sorted(card["scores"])
    ['tta_dihedral', 'tta_none']
    ```
    """
    if name in _REMOTE:
        return copy.deepcopy(_REMOTE[name]["metadata"])
    if name in _bundled():
        return json.loads((_HERE / name / METADATA_FILE).read_text())
    raise _unknown(name)


def preset_path(preset, cache_dir=None):
    """The local `.keras` file of a preset name, folder or file.

    Args:
        preset: str or `Path`. A name from `list_presets()` (a registered
            remote preset is downloaded and checked against its SHA-256
            the first time), a folder holding `model.keras`, or a `.keras`
            file.
        cache_dir: `None` or str. Cache folder for downloads; `None` uses
            Keras's (`~/.keras`, or `KERAS_HOME`). Defaults to `None`.

    Returns:
        The `Path` of the `.keras` file.

    Example:

    ```python
    >>> keras_unet2015.presets.preset_path("unet2015_isbi2012_16f").name
    'model.keras'
    ```
    """
    import keras

    name = os.fspath(preset)
    if name in _REMOTE:
        entry = _REMOTE[name]
        if cache_dir is not None:
            # get_file falls back to /tmp/.keras for a folder it cannot
            # write to, which includes one that does not exist yet.
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        path = keras.utils.get_file(
            fname=f"{name}.keras",
            origin=entry["url"],
            file_hash=entry["sha256"],
            hash_algorithm="sha256",
            cache_subdir=CACHE_SUBDIR,
            cache_dir=cache_dir,
        )
        return Path(path)
    if name in _bundled():
        return _HERE / name / MODEL_FILE
    path = Path(name)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        raise FileNotFoundError(
            f"The folder {path} has no {MODEL_FILE}: a preset folder holds "
            f"the model as {MODEL_FILE} (and optionally {METADATA_FILE})."
        )
    if path.suffix == ".keras":
        if not path.is_file():
            raise FileNotFoundError(f"Model file not found: {path}")
        return path
    raise _unknown(name)


def load_preset(preset, cache_dir=None):
    """Loads a preset as a `UNet2015` (not compiled).

    Args:
        preset: str or `Path`. See `preset_path`.
        cache_dir: `None` or str. See `preset_path`.

    Returns:
        The trained `keras_unet2015.UNet2015`.

    Example:

    ```python
    >>> model = keras_unet2015.presets.load_preset("unet2015_isbi2012_16f")
    >>> model.filters, model.output_size(572)
    (16, 388)
    ```
    """
    import keras

    # Registers the package's classes for deserialisation.
    from keras_unet2015.models.unet2015 import UNet2015

    path = preset_path(preset, cache_dir=cache_dir)
    model = keras.saving.load_model(path, compile=False)
    if not isinstance(model, UNet2015):
        raise ValueError(
            f"{path} holds a {type(model).__name__}, not a UNet2015."
        )
    return model
