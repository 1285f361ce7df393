"""Tests of the napari plugin: manifest, widget, sample data.

Headless: Qt runs on its offscreen platform, which has no OpenGL, so the
widget works on napari's viewer model (layers without a canvas); only the
docking test opens a real (hidden) viewer. The widget is driven as a user
would (choose the layer and the model, press Run or call what it calls)
and its layers are compared with `OverlapTilePredictor` run directly on
the same image with the same saved model. napari, npe2 and pytest-qt are
optional: the tests skip without them (and fail on CI, where they are
installed).
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_unet2015  # noqa: E402
from keras_unet2015.napari import sample_data  # noqa: E402
from keras_unet2015.napari import segmentation  # noqa: E402
from tests.testing import backend  # noqa: E402
from tests.testing import require  # noqa: E402

REASON = "the napari plugin's tests need napari, npe2 and pytest-qt"
MANIFEST = Path(keras_unet2015.__file__).parent / "napari" / "napari.yaml"
PLUGIN = "keras-unet2015"
WIDGET = "Segment with U-Net 2015"
TILE = 28  # depth 1: 12 px outputs, 8 px of context on each side
WAIT_MS = 60_000


# === Fixtures ===


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny untrained UNet2015 saved as `.keras`, and the model read back.

    The expectations are computed with the model read back from the file,
    as the widget reads it, so that both run the same weights.
    """
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    keras.utils.set_random_seed(1)
    keras_unet2015.UNet2015(depth=1, filters=4).save(path)
    return path, keras.saving.load_model(path, compile=False)


@pytest.fixture
def qtbot(request):
    require("pytestqt", REASON)
    return request.getfixturevalue("qtbot")


@pytest.fixture
def viewer(qtbot):
    """napari's viewer model, without a window.

    A window's canvas needs OpenGL, which Qt's offscreen platform lacks (CI
    has no display); the widget needs only the layer list, and Qt for its
    own widgets and the worker's signals.
    """
    napari = require("napari", REASON)
    segmentation.clear_model_cache()
    return napari.components.ViewerModel()


def make_widget(viewer, qtbot):
    from keras_unet2015.napari.segmentation_widget import SegmentationWidget

    widget = SegmentationWidget(viewer)
    qtbot.addWidget(widget.native)
    # Docked in a window, napari resets the choices on layer changes.
    viewer.layers.events.inserted.connect(widget.reset_choices)
    viewer.layers.events.removed.connect(widget.reset_choices)
    widget.reset_choices()
    return widget


def use_file(widget, path):
    from keras_unet2015.napari.segmentation_widget import FILE_CHOICE

    widget.model.value = FILE_CHOICE
    widget.model_file.value = path


def run_and_wait(widget, qtbot):
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    return worker


def new_errors(records, start):
    from napari.utils.notifications import NotificationSeverity

    return [
        str(n.message)
        for n in records[start:]
        if n.severity == NotificationSeverity.ERROR
    ]


def random_image(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def direct(model, image, **kwargs):
    """Class probabilities from `OverlapTilePredictor`, channels last."""
    predictor = keras_unet2015.OverlapTilePredictor(
        model, tile_size=TILE, verbose=0, **kwargs
    )
    return predictor.predict(image)


# === Manifest and discovery ===


def test_manifest_validates_and_declares_widget_and_sample():
    npe2 = require("npe2", REASON)
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == PLUGIN
    assert manifest.display_name == "U-Net 2015"
    manifest.validate_imports()  # every python_name imports
    assert [w.display_name for w in manifest.contributions.widgets] == [WIDGET]
    assert [s.key for s in manifest.contributions.sample_data] == [
        "touching_cells"
    ]
    # Also under Layers > Segment, beside the Plugins menu entry.
    segment_menu = manifest.contributions.menus["napari/layers/segment"]
    assert [item.command for item in segment_menu] == [
        manifest.contributions.widgets[0].command
    ]


def test_installed_plugin_is_discovered_by_npe2():
    npe2 = require("npe2", REASON)
    # Through the package's `napari.manifest` entry point, as napari finds
    # it (needs `pip install -e .` after changing pyproject.toml).
    manifest = npe2.PluginManifest.from_distribution("keras-unet2015")
    assert manifest.name == PLUGIN
    manager = npe2.PluginManager()
    manager.discover(include_npe1=False)
    assert manager.get_manifest(PLUGIN).display_name == "U-Net 2015"
    widgets = [w.display_name for w in manager.iter_widgets()]
    samples = {
        plugin: [s.key for s in contributions]
        for plugin, contributions in manager.iter_sample_data()
    }
    assert WIDGET in widgets
    assert samples[PLUGIN] == ["touching_cells"]


def test_napari_docks_the_widget_from_the_plugin(request):
    require("napari", REASON)
    require("pytestqt", REASON)
    from keras_unet2015.napari.segmentation_widget import SegmentationWidget

    viewer = request.getfixturevalue("make_napari_viewer")(show=False)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert isinstance(widget, SegmentationWidget)
    assert widget.model.value == "unet2015_isbi2012_16f"
    assert dock.name == f"{WIDGET} ({PLUGIN})"


def test_importing_the_package_does_not_import_napari_or_qt():
    code = (
        "import sys, keras_unet2015\n"
        "import keras_unet2015.napari.segmentation\n"
        "loaded = [m for m in ('napari', 'qtpy', 'PyQt6', 'magicgui') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env = dict(os.environ, KERAS_BACKEND=backend())
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# === Plain functions (no Qt) ===


def test_segment_image_derives_all_outputs_from_one_prediction(model_file):
    _, model = model_file
    image = random_image((64, 64))
    progress = []
    result = segmentation.segment_image(
        image,
        model,
        outputs=("probabilities", "labels", "instances"),
        tile_size=TILE,
        threshold=0.5,
        progress=lambda done, total: progress.append((done, total)),
    )
    expected = direct(model, image)
    assert result["probabilities"].shape == (64, 64)
    np.testing.assert_allclose(
        result["probabilities"], expected[..., 1], 0, 1e-5
    )
    np.testing.assert_array_equal(result["labels"], expected.argmax(-1))
    np.testing.assert_array_equal(
        result["instances"],
        keras_unet2015.metrics.segment(expected[..., 1], 0.5),
    )
    assert result["labels"].dtype == result["instances"].dtype == np.int32
    # 64 px in 12 px outputs: 6 tiles per axis.
    assert progress[-1] == (36, 36)


def test_segment_image_scales_and_predicts_each_plane(model_file):
    _, model = model_file
    stack = (random_image((3, 40, 48), seed=2) * 255).astype(np.uint8)
    result = segmentation.segment_image(stack, model, tile_size=TILE)
    expected = direct(model, stack / np.float32(255))
    assert result["probabilities"].shape == (3, 40, 48)
    np.testing.assert_allclose(
        result["probabilities"], expected[..., 1], 0, 1e-5
    )
    for plane in range(3):
        alone = direct(model, stack[plane] / np.float32(255))
        np.testing.assert_allclose(
            result["probabilities"][plane], alone[..., 1], 0, 1e-5
        )


def test_segment_image_refuses_wrong_channels_and_shapes(model_file):
    _, model = model_file
    with pytest.raises(ValueError, match="1 input channel; .* 3"):
        segmentation.segment_image(np.zeros((32, 32, 3)), model, rgb=True)
    with pytest.raises(ValueError, match=r"2D .* stack .*\(4D\)"):
        segmentation.segment_image(np.zeros((2, 2, 32, 32)), model)
    with pytest.raises(ValueError, match=r"Foreground class 2 .*\(0\.\.1\)"):
        segmentation.segment_image(
            np.zeros((32, 32)), model, foreground_class=2
        )
    with pytest.raises(ValueError, match="outputs"):
        segmentation.segment_image(np.zeros((32, 32)), model, outputs=())
    with pytest.raises(ValueError, match="too small for the smallest"):
        segmentation.segment_image(
            np.zeros((32, 32)), model, memory_budget=1000
        )


def test_load_model_caches_and_reports_bad_sources(model_file, tmp_path):
    path, _ = model_file
    segmentation.clear_model_cache()
    model = segmentation.load_model(path)
    assert isinstance(model, keras_unet2015.UNet2015)
    assert segmentation.load_model(str(path)) is model  # read once
    preset = segmentation.load_model("unet2015_isbi2012_16f")
    assert preset.filters == 16
    assert segmentation.load_model("unet2015_isbi2012_16f") is preset

    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="Could not load .*garbage.keras"):
        segmentation.load_model(garbage)
    other = tmp_path / "sequential.keras"
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 1)]).save(
        other
    )
    with pytest.raises(ValueError, match="Sequential, not a .*UNet2015"):
        segmentation.load_model(other)
    with pytest.raises(ValueError, match="does not exist"):
        segmentation.load_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="neither a preset"):
        segmentation.load_model("no_such_preset")
    with pytest.raises(ValueError, match="Choose a preset"):
        segmentation.load_model("")


def test_parse_tile_size():
    assert segmentation.parse_tile_size("auto") is None
    assert segmentation.parse_tile_size(" Auto ") is None
    assert segmentation.parse_tile_size("") is None
    assert segmentation.parse_tile_size("572") == 572
    for text in ("0", "-4", "5.5", "large"):
        with pytest.raises(ValueError, match="'auto' or a positive integer"):
            segmentation.parse_tile_size(text)


def test_sample_data_is_one_image_with_its_instances():
    (image, image_kwargs, image_type), (labels, labels_kwargs, labels_type) = (
        sample_data.touching_cells()
    )
    assert (image_type, labels_type) == ("image", "labels")
    assert image.shape == labels.shape == (256, 256)
    assert image.dtype == np.float32 and labels.dtype == np.int32
    assert 0.0 <= image.min() and image.max() <= 1.0
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, len(ids)))
    assert len(ids) > 50  # densely packed cells of radius 14 px
    # Cells are brighter than the dark borders and background between them.
    assert image[labels > 0].mean() > image[labels == 0].mean() + 0.2
    assert image_kwargs["name"] == "touching cells"
    assert labels_kwargs["name"] == "touching cells instances"


# === The widget in a viewer ===


def test_widget_adds_layers_equal_to_direct_prediction(
    viewer, qtbot, model_file
):
    path, model = model_file
    image = random_image((64, 64))
    layer = viewer.add_image(image, name="cells", scale=(2.0, 0.5))
    layer.translate = (10.0, -3.0)
    widget = make_widget(viewer, qtbot)
    assert widget.image_layer.value is layer
    use_file(widget, path)
    widget.tile_size.value = str(TILE)
    widget.output_labels.value = True
    widget.output_instances.value = True
    widget.threshold.value = 0.4
    run_and_wait(widget, qtbot)

    expected = direct(model, image)
    probabilities = viewer.layers["cells probabilities"]
    labels = viewer.layers["cells labels"]
    instances = viewer.layers["cells instances"]
    assert probabilities.data.shape == image.shape
    np.testing.assert_allclose(probabilities.data, expected[..., 1], 0, 1e-5)
    np.testing.assert_array_equal(labels.data, expected.argmax(-1))
    np.testing.assert_array_equal(
        instances.data, keras_unet2015.metrics.segment(expected[..., 1], 0.4)
    )
    assert type(labels).__name__ == type(instances).__name__ == "Labels"
    for output in (probabilities, labels, instances):
        np.testing.assert_array_equal(output.scale, (2.0, 0.5))
        np.testing.assert_array_equal(output.translate, (10.0, -3.0))
    # Progress went over every tile: 6 x 6 tiles of 12 px.
    assert (widget.progress.value, widget.progress.max) == (36, 36)
    assert widget.run_button.enabled and not widget.cancel_button.enabled

    # A second run (now with TTA) updates the layers instead of adding more.
    widget.tta.value = "flips"
    widget.output_labels.value = widget.output_instances.value = False
    run_and_wait(widget, qtbot)
    assert len(viewer.layers) == 4
    np.testing.assert_allclose(
        viewer.layers["cells probabilities"].data,
        direct(model, image, tta="flips")[..., 1],
        0,
        1e-5,
    )


def test_widget_segments_every_plane_of_a_stack(viewer, qtbot, model_file):
    path, model = model_file
    stack = random_image((2, 40, 48), seed=3)
    viewer.add_image(stack, name="stack", scale=(5.0, 1.0, 1.0))
    widget = make_widget(viewer, qtbot)
    use_file(widget, path)
    widget.tile_size.value = str(TILE)
    widget.run_button.native.click()  # the button, not `run()`
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    output = viewer.layers["stack probabilities"]
    assert output.data.shape == (2, 40, 48)
    np.testing.assert_allclose(
        output.data, direct(model, stack)[..., 1], 0, 1e-5
    )
    np.testing.assert_array_equal(output.scale, (5.0, 1.0, 1.0))
    # 40 x 48 px: 4 x 4 tiles per plane.
    assert (widget.progress.value, widget.progress.max) == (32, 32)


def test_widget_shows_errors_and_adds_no_layer(viewer, qtbot, tmp_path):
    from napari.utils.notifications import notification_manager

    garbage = tmp_path / "broken.keras"
    garbage.write_bytes(b"\x00" * 100)
    viewer.add_image(random_image((32, 32)), name="gray")
    widget = make_widget(viewer, qtbot)
    use_file(widget, garbage)
    start = len(notification_manager.records)
    run_and_wait(widget, qtbot)
    errors = new_errors(notification_manager.records, start)
    assert len(errors) == 1 and "Could not load" in errors[0]
    assert "broken.keras" in errors[0]
    assert [layer.name for layer in viewer.layers] == ["gray"]
    assert widget.run_button.enabled and widget.status.value == "Failed"

    # A color layer for a gray-value model: the channel count is refused.
    viewer.add_image(random_image((32, 32, 3)), name="color", rgb=True)
    widget.image_layer.value = viewer.layers["color"]
    widget.model.value = "unet2015_isbi2012_16f"
    start = len(notification_manager.records)
    run_and_wait(widget, qtbot)
    errors = new_errors(notification_manager.records, start)
    assert len(errors) == 1 and "expects 1 input channel" in errors[0]
    assert [layer.name for layer in viewer.layers] == ["gray", "color"]

    # Tile sizes: not a number (checked before starting), or not a valid
    # input size of the model (checked by the predictor).
    widget.image_layer.value = viewer.layers["gray"]
    widget.tile_size.value = "big"
    start = len(notification_manager.records)
    assert widget.run() is None
    errors = new_errors(notification_manager.records, start)
    assert len(errors) == 1 and "'auto' or a positive integer" in errors[0]
    widget.tile_size.value = "570"
    start = len(notification_manager.records)
    run_and_wait(widget, qtbot)
    errors = new_errors(notification_manager.records, start)
    assert len(errors) == 1 and "572" in errors[0]  # the nearest valid size
    assert [layer.name for layer in viewer.layers] == ["gray", "color"]


def test_widget_cancel_stops_before_adding_layers(
    viewer, qtbot, model_file, monkeypatch
):
    path, _ = model_file
    viewer.add_image(random_image((64, 64)), name="gray")
    widget = make_widget(viewer, qtbot)
    use_file(widget, path)
    loading, proceed = threading.Event(), threading.Event()
    load = segmentation.load_model

    def held_load(source):  # in the worker thread
        loading.set()
        proceed.wait(WAIT_MS / 1000)
        return load(source)

    monkeypatch.setattr(segmentation, "load_model", held_load)
    widget.run()
    assert loading.wait(WAIT_MS / 1000)
    assert widget.running and not widget.run_button.enabled
    widget.cancel()
    proceed.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.status.value == "Cancelled"
    assert [layer.name for layer in viewer.layers] == ["gray"]


def test_sample_data_opens_in_napari(viewer):
    import npe2

    # napari discovers installed plugins when its window starts; a bare
    # viewer model (or this test running alone) has to ask for it.
    npe2.PluginManager.instance().discover()
    layers = viewer.open_sample(PLUGIN, "touching_cells")
    assert [layer.name for layer in layers] == [
        "touching cells",
        "touching cells instances",
    ]
    assert type(viewer.layers["touching cells instances"]).__name__ == (
        "Labels"
    )
    assert viewer.layers["touching cells"].data.shape == (256, 256)
