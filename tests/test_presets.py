"""Trained presets: `UNet2015.from_preset`, `list_presets`, model cards,
remote presets fetched offline from a `file://` mirror, and the shipped
ISBI 2012 model segmenting held-out slices with the scores its card
states, under every backend."""

import hashlib
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_unet2015
from keras_unet2015 import UNet2015
from keras_unet2015 import cli
from keras_unet2015 import presets
from keras_unet2015 import reproduce
from keras_unet2015.datasets import io
from keras_unet2015.datasets import isbi2012

ROOT = Path(__file__).resolve().parent.parent
ISBI_PRESETS = [n for n in presets.list_presets() if "isbi2012" in n]
CARD_FIELDS = (
    "description",
    "data",
    "data_terms",
    "recipe",
    "command",
    "steps",
    "hardware",
    "wall_time_s",
    "scores",
    "citation",
    "license",
)


def test_a_trained_isbi_preset_ships_in_the_package():
    assert "unet2015_isbi2012_16f" in UNet2015.list_presets()
    assert UNet2015.list_presets() == presets.list_presets()
    for name in presets.list_presets():
        card = presets.preset_metadata(name)
        if "ISBI 2012" in card.get("data", ""):
            assert "isbi2012" in name


@pytest.mark.parametrize("name", ISBI_PRESETS)
def test_model_card_is_complete_and_in_the_docs(name):
    card = presets.preset_metadata(name)
    for field in CARD_FIELDS:
        assert card.get(field), f"{name}: model card lacks {field!r}"
    assert any("Ronneberger" in c for c in card["citation"])
    assert set(card["scores"]) == {"tta_none", "tta_dihedral"}
    # The docs page shows the card's numbers.
    page = (ROOT / "docs" / "presets.md").read_text()
    assert f"`{name}`" in page
    for tta in ("tta_none", "tta_dihedral"):
        for key in ("pixel_error", "rand_error"):
            assert f"{card['scores'][tta][key]:.4f}" in page, (tta, key)
    assert f"{card['steps']:,}" in page
    # The shipped file is small enough for the wheel.
    size = presets.preset_path(name).stat().st_size
    assert size < 12_000_000


def test_from_preset_loads_local_file_and_folder(tmp_path):
    model = UNet2015(depth=1, filters=2)
    model.save(tmp_path / "m.keras")
    (tmp_path / "folder").mkdir()
    model.save(tmp_path / "folder" / "model.keras")
    x = np.random.default_rng(0).random((1, 44, 44, 1), np.float32)
    expected = keras.ops.convert_to_numpy(model(x))
    for preset in (tmp_path / "m.keras", str(tmp_path / "folder")):
        loaded = UNet2015.from_preset(preset)
        assert isinstance(loaded, UNet2015)
        actual = keras.ops.convert_to_numpy(loaded(x))
        np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_unknown_or_missing_presets_say_what_exists(tmp_path):
    with pytest.raises(ValueError, match="unet2015_isbi2012_16f"):
        UNet2015.from_preset("no_such_preset")
    with pytest.raises(FileNotFoundError, match="not found"):
        UNet2015.from_preset(tmp_path / "missing.keras")
    with pytest.raises(FileNotFoundError, match="model.keras"):
        UNet2015.from_preset(tmp_path)


def test_a_preset_file_of_another_model_is_rejected(tmp_path):
    import keras

    inputs = keras.Input((8,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    other.save(tmp_path / "dense.keras")
    with pytest.raises(ValueError, match="not a UNet2015"):
        UNet2015.from_preset(tmp_path / "dense.keras")


@pytest.fixture
def mirrored_preset(tmp_path):
    """A remote preset whose release URL is a file:// mirror on disk."""
    model = UNet2015(depth=1, filters=2)
    path = tmp_path / "release" / "tiny.keras"
    path.parent.mkdir()
    model.save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    presets.register_preset(
        "tiny_mirror", path.as_uri(), digest, {"description": "test"}
    )
    yield model, path, digest
    presets.unregister_preset("tiny_mirror")


def test_remote_preset_is_fetched_once_and_checked(tmp_path, mirrored_preset):
    model, path, digest = mirrored_preset
    cache = tmp_path / "cache"
    assert "tiny_mirror" in UNet2015.list_presets()
    loaded = UNet2015.from_preset("tiny_mirror", cache_dir=str(cache))
    cached = cache / presets.CACHE_SUBDIR / "tiny_mirror.keras"
    assert cached.read_bytes() == path.read_bytes()
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert presets.preset_metadata("tiny_mirror") == {"description": "test"}
    # The cache is used: the mirror can disappear.
    path.unlink()
    UNet2015.from_preset("tiny_mirror", cache_dir=str(cache))


def test_remote_preset_with_wrong_hash_is_rejected(tmp_path, mirrored_preset):
    _, path, digest = mirrored_preset
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    presets.register_preset("tiny_mirror", path.as_uri(), wrong, {})
    with pytest.raises(ValueError, match="(?i)corrupt|hash"):
        UNet2015.from_preset("tiny_mirror", cache_dir=str(tmp_path / "c"))


def test_register_preset_checks_its_arguments():
    with pytest.raises(ValueError, match="64 hex"):
        presets.register_preset("x", "https://example.org/x.keras", "abc", {})
    with pytest.raises(ValueError, match="shipped"):
        presets.register_preset(
            "unet2015_isbi2012_16f", "https://example.org/x", "0" * 64, {}
        )


def _held_out(shared_data):
    (x, y), _ = isbi2012.load_data(shared_data / "isbi2012")
    return [x[i] for i in reproduce.VALIDATION_SLICES], np.stack(
        [y[i] for i in reproduce.VALIDATION_SLICES]
    )


@pytest.mark.parametrize("name", ISBI_PRESETS)
def test_shipped_preset_segments_held_out_slices_as_its_card_says(
    name, shared_data
):
    """A change that breaks the trained model (layers, loading, tiling,
    metrics) moves these scores and fails here, on every backend."""
    card = presets.preset_metadata(name)
    model = UNet2015.from_preset(name)
    images, labels = _held_out(shared_data)
    scores = reproduce.evaluate_held_out(model, images, labels, tta="none")
    stated = card["scores"]["tta_none"]
    # Float differences between backends move a few pixels across a
    # threshold: the tolerance is far below any real change of the model.
    assert scores["pixel_error"] == pytest.approx(
        stated["pixel_error"], abs=5e-4
    )
    assert scores["rand_error"] == pytest.approx(stated["rand_error"], abs=3e-3)


def test_cli_predict_with_a_preset_writes_its_segmentation(
    shared_data, tmp_path
):
    image_path = shared_data / "isbi2012" / "train" / "images" / "29.png"
    out = tmp_path / "out"
    code = cli.main(
        [
            "predict",
            "--preset",
            "unet2015_isbi2012_16f",
            "--output-dir",
            str(out),
            "--verbose",
            "0",
            str(image_path),
        ]
    )
    assert code == 0
    probabilities = io.read_image(out / "29_probabilities.tif")
    model = UNet2015.from_preset("unet2015_isbi2012_16f")
    expected = keras_unet2015.OverlapTilePredictor(model, verbose=0).predict(
        io.read_image(image_path) / np.float32(255)
    )[..., 1]
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    mask = io.read_image(out / "29_mask.png")
    np.testing.assert_array_equal(mask > 0, expected > 0.5)


def test_cli_predict_with_unknown_preset_fails_clearly(tmp_path, capsys):
    image = tmp_path / "a.png"
    io.write_image(image, np.zeros((64, 64), np.uint8))
    code = cli.main(
        [
            "predict",
            "--preset",
            "nope",
            "--output-dir",
            str(tmp_path / "out"),
            str(image),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(r"Unknown preset 'nope'.*unet2015_isbi2012_16f", err)


def test_model_card_json_is_valid_on_disk():
    for name in ISBI_PRESETS:
        path = presets.preset_path(name).parent / presets.METADATA_FILE
        card = json.loads(path.read_text())
        assert card["name"] == name
