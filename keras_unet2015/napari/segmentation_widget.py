"""The napari dock widget: segment an image layer with a trained U-Net."""

import threading

import napari
import napari.layers
from magicgui import widgets
from napari.qt.threading import create_worker
from napari.utils.notifications import notification_manager
from napari.utils.notifications import show_error
from napari.utils.notifications import show_info
from qtpy.QtCore import QObject
from qtpy.QtCore import Signal

from keras_unet2015.napari import segmentation

FILE_CHOICE = "a .keras file..."
TTA_CHOICES = ("none", "flips", "dihedral")


class SegmentationWidget(widgets.Container):
    """Segments an image layer with a trained U-Net, in a worker thread.

    The napari widget of the plugin (Plugins > Segment with U-Net 2015,
    also under Layers > Segment). It predicts a 2D gray image, or every
    plane of a stack of 2D images (a 3D layer), with
    `keras_unet2015.OverlapTilePredictor`, in a worker thread with a
    progress bar over the tiles, and adds the results as layers named
    after the input (`"<name> probabilities"`, `"<name> labels"`,
    `"<name> instances"`) with the input's scale and translation; a layer
    of that name and type from an earlier run is updated instead. Models
    are loaded once per source
    (`keras_unet2015.napari.segmentation.load_model`). Errors (a wrong
    channel count, an unreadable file, a model that is not a `UNet2015`,
    an invalid tile size) are shown as napari notifications.

    Args:
        napari_viewer: `napari.Viewer`. The viewer whose layers are read
            and written.

    Example:

    ```python
    viewer = napari.Viewer()
    viewer.window.add_plugin_dock_widget(
        "keras-unet2015", "Segment with U-Net 2015"
    )
    ```
    """

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.worker = None
        self._cancel = threading.Event()
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._on_progress)

        presets = _presets()
        self.image_layer = widgets.ComboBox(
            name="image_layer",
            label="image",
            choices=self._image_layers,
            tooltip="A 2D gray image, or a stack of 2D images (3D layer): "
            "every plane is segmented.",
        )
        self.model = widgets.ComboBox(
            name="model",
            label="model",
            choices=presets + [FILE_CHOICE],
            value=presets[0] if presets else FILE_CHOICE,
            tooltip="A trained preset, or a UNet2015 saved as a .keras file.",
        )
        self.model_file = widgets.FileEdit(
            name="model_file",
            label="model file",
            mode="r",
            filter="*.keras",
            tooltip="A keras_unet2015.UNet2015 saved with model.save().",
        )
        self.tile_size = widgets.LineEdit(
            name="tile_size",
            label="tile size",
            value="auto",
            tooltip="Largest input tile in pixels, a valid input size of "
            "the model (e.g. 572), or auto: the largest tile whose "
            "activations fit into the memory below.",
        )
        self.memory = widgets.SpinBox(
            name="memory",
            label="memory (MiB)",
            value=2048,
            min=16,
            max=2**20,
            step=256,
            tooltip="Memory the activations of the tiles in flight may "
            "take: sets the auto tile size and how many tiles go into one "
            "forward pass.",
        )
        self.tta = widgets.ComboBox(
            name="tta",
            label="TTA",
            choices=TTA_CHOICES,
            value="none",
            tooltip="Test-time augmentation: average over 4 flips or the 8 "
            "flips and rotations (4x or 8x slower).",
        )
        self.rescale = widgets.CheckBox(
            name="rescale",
            label="scale to [0, 1]",
            value=True,
            tooltip="uint8 / 255, other images by their minimum and "
            "maximum, as in training.",
        )
        self.output_probabilities = widgets.CheckBox(
            name="output_probabilities",
            label="probabilities",
            value=True,
            tooltip="Image layer: the foreground class's probability.",
        )
        self.output_labels = widgets.CheckBox(
            name="output_labels",
            label="labels",
            value=False,
            tooltip="Labels layer: the most probable class of each pixel.",
        )
        self.output_instances = widgets.CheckBox(
            name="output_instances",
            label="instances",
            value=False,
            tooltip="Labels layer: connected components of foreground "
            "probability above the threshold.",
        )
        self.foreground_class = widgets.SpinBox(
            name="foreground_class",
            label="foreground class",
            value=1,
            min=0,
            max=255,
            tooltip="The class shown as probabilities and cut into "
            "instances (1 = cell for the ISBI 2012 preset).",
        )
        self.threshold = widgets.FloatSpinBox(
            name="threshold",
            label="threshold",
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="Instances: connected components of pixels whose "
            "foreground probability is above this.",
        )
        self.run_button = widgets.PushButton(name="run_button", text="Run")
        self.cancel_button = widgets.PushButton(
            name="cancel_button", text="Cancel", enabled=False
        )
        self.progress = widgets.ProgressBar(
            name="progress", label="tiles", value=0, min=0, max=1
        )
        self.status = widgets.Label(name="status", value="")
        self.extend(
            [
                self.image_layer,
                self.model,
                self.model_file,
                self.tile_size,
                self.memory,
                self.tta,
                self.rescale,
                self.output_probabilities,
                self.output_labels,
                self.output_instances,
                self.foreground_class,
                self.threshold,
                widgets.Container(
                    widgets=[self.run_button, self.cancel_button],
                    layout="horizontal",
                    labels=False,
                ),
                self.progress,
                self.status,
            ]
        )
        self.model.changed.connect(self._on_model_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._on_model_changed()
        self.reset_choices()

    # === Public API ===
    @property
    def running(self):
        """Whether a segmentation is in progress."""
        return self.worker is not None

    def model_source(self):
        """The preset name or `.keras` path the model is loaded from."""
        if self.model.value == FILE_CHOICE:
            value = self.model_file.value
            return "" if value is None or str(value) in ("", ".") else value
        return self.model.value

    def run(self):
        """Starts segmenting the chosen layer; returns the worker or None.

        Checks that need no model happen here, on the main thread; the
        model is loaded (or taken from the cache) and run in the worker.
        """
        if self.running:
            return None
        layer = self.image_layer.value
        if layer is None:
            show_error("U-Net 2015: add or choose an image layer first.")
            return None
        if layer.multiscale:
            show_error(
                f"U-Net 2015: {layer.name!r} is a multiscale image; add its "
                "full-resolution level as a layer of its own to segment it."
            )
            return None
        outputs = tuple(
            name
            for name, box in (
                ("probabilities", self.output_probabilities),
                ("labels", self.output_labels),
                ("instances", self.output_instances),
            )
            if box.value
        )
        if not outputs:
            show_error("U-Net 2015: tick at least one output.")
            return None
        try:
            tile_size = segmentation.parse_tile_size(self.tile_size.value)
        except ValueError as error:
            show_error(f"U-Net 2015: {error}")
            return None
        source = self.model_source()
        target = {
            "name": layer.name,
            "scale": tuple(layer.scale),
            "translate": tuple(layer.translate),
            "metadata": {
                "model": str(source),
                "tile_size": tile_size,
                "tta": _tta(self.tta.value),
            },
        }
        self._cancel.clear()
        self.worker = create_worker(
            _work,
            source,
            layer.data,
            dict(
                outputs=outputs,
                tile_size=tile_size,
                memory_budget=self.memory.value * 2**20,
                tta=_tta(self.tta.value),
                foreground_class=self.foreground_class.value,
                threshold=self.threshold.value,
                rescale=self.rescale.value,
                rgb=bool(layer.rgb),
            ),
            self._report_progress,
            _start_thread=False,
            _ignore_errors=True,
        )
        self.worker.returned.connect(lambda result: self._done(target, result))
        self.worker.finished.connect(self._finished)
        self._set_running(True, f"Segmenting {layer.name}...")
        self.worker.start()
        return self.worker

    def cancel(self):
        """Stops the running segmentation after the current batch."""
        if self.running:
            self._cancel.set()
            self.status.value = "Cancelling..."

    # === Internals ===
    def _image_layers(self, _widget=None):
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, napari.layers.Image)
        ]

    def _on_model_changed(self, *_):
        self.model_file.enabled = self.model.value == FILE_CHOICE

    def _report_progress(self, done, total):
        # Called in the worker thread; the signal is queued to the widget.
        if self._cancel.is_set():
            raise _Cancelled()
        self._relay.progressed.emit(done, total)

    def _on_progress(self, done, total):
        self.progress.max = total
        self.progress.value = done
        if not self._cancel.is_set():
            self.status.value = f"{done} / {total} tiles"

    def _set_running(self, running, message):
        self.run_button.enabled = not running
        self.cancel_button.enabled = running
        self.status.value = message
        if running:
            self.progress.value = 0

    def _finished(self):
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def _done(self, target, result):
        if isinstance(result, _Failure):
            self._fail(result.error)
            return
        for output, data in result.items():
            self._show(target, output, data)
        self.status.value = f"Done: {target['name']}"

    def _fail(self, error):
        if isinstance(error, _Cancelled):
            self.status.value = "Cancelled"
            show_info("U-Net 2015: segmentation cancelled.")
            return
        self.status.value = "Failed"
        if isinstance(error, (ValueError, OSError)):
            show_error(f"U-Net 2015: {error}")
        else:  # Not a foreseen error: show it with its traceback.
            notification_manager.receive_error(
                type(error), error, error.__traceback__
            )

    def _show(self, target, output, data):
        name = f"{target['name']} {output}"
        if output == "probabilities":
            kind = napari.layers.Image
        else:
            kind = napari.layers.Labels
        placement = {
            "scale": target["scale"],
            "translate": target["translate"],
        }
        metadata = {"keras_unet2015": target["metadata"]}
        if name in self.viewer.layers and isinstance(
            self.viewer.layers[name], kind
        ):
            layer = self.viewer.layers[name]
            layer.data = data
            layer.scale = placement["scale"]
            layer.translate = placement["translate"]
            layer.metadata.update(metadata)
            return layer
        if output == "probabilities":
            return self.viewer.add_image(
                data,
                name=name,
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                opacity=0.5,
                metadata=metadata,
                **placement,
            )
        return self.viewer.add_labels(
            data, name=name, opacity=0.5, metadata=metadata, **placement
        )


def _presets():
    import keras_unet2015

    return list(keras_unet2015.UNet2015.list_presets())


class _ProgressRelay(QObject):
    """Carries progress from the worker thread to the main thread."""

    progressed = Signal(int, int)


class _Cancelled(Exception):
    pass


class _Failure:
    """An error of the worker, returned rather than raised.

    Returned values reach `_done` on the main thread, which shows the error;
    a raised one would go to napari's generic error handler instead.
    """

    def __init__(self, error):
        self.error = error


def _tta(choice):
    return None if choice == "none" else choice


def _work(source, data, options, progress):
    try:
        model = segmentation.load_model(source)
        return segmentation.segment_image(
            data, model, progress=progress, **options
        )
    except Exception as error:
        return _Failure(error)
