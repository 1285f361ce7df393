import math

import keras
import numpy as np

from keras_unet2015 import metrics
from keras_unet2015.datasets import io

MEASURES = ("pixel_error", "rand_error", "jaccard")


class SegmentationMetrics(keras.callbacks.Callback):
    """Computes the ISBI 2012 measures on held-out images during training.

    At the end of every `frequency`-th epoch, each held-out image is
    segmented whole with `keras_unet2015.OverlapTilePredictor` (mirrored
    borders, exact tiling), and the probability of `foreground_class` is
    scored against the labels with `keras_unet2015.metrics`: the pixel
    error, the Rand error (1 - maximal F-scores over thresholds) and the
    foreground IoU at 0.5, with counts pooled over the images when they all
    have the same size (as the challenge does), and averaged over the
    images otherwise. The values are
    added to the epoch's `logs` as `val_pixel_error`, `val_rand_error` and
    `val_jaccard`, so `keras.callbacks.ModelCheckpoint(monitor=
    "val_rand_error")`, `CSVLogger` and `History` see them; place this
    callback before those. Epochs without evaluation log `nan`, so that CSV
    columns stay aligned.

    Args:
        images: list or array of held-out images `(height, width[,
            channels])`, any size and numeric dtype (converted with
            `keras_unet2015.datasets.to_float_image`, as in training).
        labels: list or array of binary label maps of the same sizes
            (label > 0 is the foreground class).
        frequency: int. Evaluate every `frequency` epochs, and always after
            the last one and when training stops early (a callback set
            `model.stop_training` during the epoch). Defaults to `1`.
        foreground_class: int. Class whose probability is scored. Defaults
            to `1` (cell interior in the ISBI labels).
        tile_size: `None`, int or tuple. Tile size of the predictor; `None`
            lets the predictor choose. Defaults to `None`.
        tta: `None`, `"flips"` or `"dihedral"`. Test-time augmentation.
            Defaults to `None`.
        thresholds: `None` or a sequence of floats for the pixel and Rand
            errors (`None`: 0.0, 0.1, ..., 1.0). Defaults to `None`.
        prefix: str. Prefix of the log keys. Defaults to `"val_"`.
        verbose: int. `1` prints the measures after each evaluation.
            Defaults to `0`.

    Example:

    ```python
    images, labels, _ = keras_unet2015.datasets.make_touching_cells(4, 64)
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    keras_unet2015.training.compile_model(model)
    stream = keras_unet2015.datasets.TrainingSampleStream(
        images[:3], labels[:3], input_size=52, output_size=36,
        steps_per_epoch=2,
    )
    callback = keras_unet2015.callbacks.SegmentationMetrics(
        images[3:], labels[3:]
    )
    history = model.fit(stream, epochs=1, callbacks=[callback], verbose=0)
    history.history["val_rand_error"]  # one value per epoch, in [0, 1]
    ```
    """

    def __init__(
        self,
        images,
        labels,
        frequency=1,
        foreground_class=1,
        tile_size=None,
        tta=None,
        thresholds=None,
        prefix="val_",
        verbose=0,
    ):
        super().__init__()
        images = (
            list(images)
            if not isinstance(images, np.ndarray)
            else (
                [images[i] for i in range(images.shape[0])]
                if images.ndim >= 3
                else [images]
            )
        )
        labels = (
            list(labels)
            if not isinstance(labels, np.ndarray)
            else (
                [labels[i] for i in range(labels.shape[0])]
                if labels.ndim == 3
                else [labels]
            )
        )
        if not images:
            raise ValueError("`images` must hold at least one image.")
        if len(images) != len(labels):
            raise ValueError(
                f"Got {len(images)} images but {len(labels)} label maps."
            )
        for i, (image, label) in enumerate(zip(images, labels)):
            if np.shape(image)[:2] != np.shape(label):
                raise ValueError(
                    f"Held-out image {i} has shape {np.shape(image)} but "
                    f"its labels {np.shape(label)}."
                )
        if isinstance(frequency, bool) or not isinstance(frequency, int):
            raise ValueError(
                f"`frequency` must be an int. Received {frequency}"
            )
        if frequency < 1:
            raise ValueError(f"`frequency` must be >= 1. Received {frequency}")
        self.images = [io.to_float_image(image) for image in images]
        self.labels = [np.asarray(label) > 0 for label in labels]
        self.frequency = frequency
        self.foreground_class = foreground_class
        self.tile_size = tile_size
        self.tta = tta
        self.thresholds = thresholds
        self.prefix = prefix
        self.verbose = verbose
        self.history = []

    def _should_evaluate(self, epoch):
        last = self.params.get("epochs") if self.params else None
        # Also when training stops early (a time limit, early stopping
        # that acts on an earlier callback): the final model gets scored.
        return (
            (epoch + 1) % self.frequency == 0
            or (last is not None and epoch + 1 == last)
            or bool(getattr(self.model, "stop_training", False))
        )

    def evaluate(self):
        """Scores the current model; returns a dict of the measures."""
        from keras_unet2015.inference.overlap_tile_predictor import (
            OverlapTilePredictor,
        )

        predictor = OverlapTilePredictor(
            self.model, tile_size=self.tile_size, tta=self.tta, verbose=0
        )
        channel_axis = 0 if self.model.data_format == "channels_first" else -1
        probabilities = []
        for image in self.images:
            if image.ndim == 3 and self.model.data_format == "channels_first":
                image = np.moveaxis(image, -1, 0)
            result = predictor.predict(image)
            probabilities.append(
                np.take(result, self.foreground_class, axis=channel_axis)
            )
        shapes = {p.shape for p in probabilities}
        if len(shapes) == 1:
            results = metrics.evaluate(
                np.stack(probabilities), np.stack(self.labels), self.thresholds
            )
        else:
            per_image = [
                metrics.evaluate(p, lab, self.thresholds)
                for p, lab in zip(probabilities, self.labels)
            ]
            results = {
                key: float(np.mean([r[key] for r in per_image]))
                for key in MEASURES
            }
        return results

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        watch = getattr(self, "_divergence_watch", None)
        diverged = watch is not None and watch.diverged is not None
        if diverged or not self._should_evaluate(epoch):
            # A diverged model (NaN weights) is not scored: `fit` reports
            # the divergence instead.
            for key in MEASURES:
                logs[self.prefix + key] = math.nan
            return
        results = self.evaluate()
        for key in MEASURES:
            logs[self.prefix + key] = float(results[key])
        self.history.append({"epoch": epoch, **results})
        if self.verbose:
            print(
                f"\nEpoch {epoch + 1}: "
                + ", ".join(
                    f"{self.prefix}{key}={results[key]:.4f}" for key in MEASURES
                )
            )
