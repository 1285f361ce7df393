"""The paper's training recipe, with the modern conveniences as options.

The paper (Sec. 3) trains with stochastic gradient descent, **momentum
0.99**, and **one large tile per batch** ("we favor large input tiles over a
large batch size"), minimising the pixel-wise softmax cross-entropy weighted
by the border weight map. With batch 1 the high momentum makes every update
average over about 100 previous samples. The paper states neither the
learning rate nor the number of iterations; the default learning rate here
(`DEFAULT_LEARNING_RATE`) was chosen for `WeightedPixelLoss`'s default
reduction (the mean over pixels) so that the paper's network trains stably
from the paper's initialisation; tune it for other losses or reductions.

`compile_model` sets the optimizer and the loss; `fit` adds the callbacks a
long run needs: a checkpoint of the model after every epoch (and of the
best one by the validation Rand error), `keras.callbacks.BackupAndRestore`
so that an interrupted run resumes where it stopped, with nothing lost, a
CSV log, an optional TensorBoard log, and the challenge measures on
held-out images (`keras_unet2015.callbacks.SegmentationMetrics`).

Several devices: build the model, `compile_model` and `fit` inside
`keras_unet2015.distribution.distribution_scope(name)` (`"data_parallel"`
on JAX, `"mirrored"` or `"tpu"` on TensorFlow). The batch size is then the
global batch: each of the `N` replicas gets `batch_size / N` tiles, and one
step updates the weights as one single-device step on the whole batch.

Example:

```python
model = keras_unet2015.UNet2015(depth=2, filters=16)
images, labels, _ = keras_unet2015.datasets.make_touching_cells(8, 128)
stream = keras_unet2015.datasets.TrainingSampleStream(
    images[:6], labels[:6], input_size=124, output_size=84,
    steps_per_epoch=50,
)
keras_unet2015.training.compile_model(model)
history = keras_unet2015.training.fit(
    model, stream, epochs=5, output_dir="run",
    validation_images=images[6:], validation_labels=labels[6:],
)
```
"""

import os
import time
from pathlib import Path

import keras

from keras_unet2015 import run_folder
from keras_unet2015.callbacks import run_state
from keras_unet2015.callbacks.run_state import TrainingDivergedError
from keras_unet2015.callbacks.segmentation_metrics import SegmentationMetrics
from keras_unet2015.distribution import active_num_replicas
from keras_unet2015.distribution import check_batch_size

#: The paper's SGD momentum.
PAPER_MOMENTUM = 0.99
#: Default learning rate for `WeightedPixelLoss` averaged over pixels.
DEFAULT_LEARNING_RATE = 0.001
SCHEDULES = ("constant", "cosine", "exponential")
#: Optimizers `make_optimizer` builds: the paper's SGD, and Adam.
OPTIMIZERS = ("sgd", "adam")

CHECKPOINT_NAME = "model.keras"
BEST_CHECKPOINT_NAME = "best.keras"
BACKUP_DIR_NAME = "backup"
RECORD_NAME = run_folder.RECORD_NAME
CSV_LOG_NAME = "training_log.csv"
TENSORBOARD_DIR_NAME = "tensorboard"


def learning_rate_schedule(
    learning_rate=DEFAULT_LEARNING_RATE,
    schedule="constant",
    total_steps=None,
    warmup_steps=0,
    decay_rate=0.1,
):
    """A learning rate or a `keras.optimizers.schedules` schedule.

    Args:
        learning_rate: float. Initial (peak) learning rate. Defaults to
            `DEFAULT_LEARNING_RATE`.
        schedule: str. `"constant"` (the paper's setting, as far as it
            says), `"cosine"` (cosine decay to 0 over `total_steps`, after
            an optional linear warm-up) or `"exponential"` (multiplied by
            `decay_rate` over `total_steps`, continuously). Defaults to
            `"constant"`.
        total_steps: int or `None`. Length of the decay, in optimizer steps;
            required for `"cosine"` and `"exponential"`. Defaults to `None`.
        warmup_steps: int. Linear warm-up steps of `"cosine"` (from 0 to
            `learning_rate`). Defaults to `0`.
        decay_rate: float. Final factor of `"exponential"`. Defaults to
            `0.1`.

    Returns:
        A float (`"constant"`) or a `LearningRateSchedule`.

    Example:

    ```python
    >>> keras_unet2015.training.learning_rate_schedule(0.01)
    0.01
    >>> schedule = keras_unet2015.training.learning_rate_schedule(
    ...     0.01, "cosine", total_steps=1000
    ... )
    >>> round(float(schedule(500)), 6)  # halfway down the cosine
    0.005
    ```
    """
    if schedule not in SCHEDULES:
        raise ValueError(
            f"`schedule` must be one of {SCHEDULES}. Received: {schedule!r}"
        )
    if not learning_rate > 0:
        raise ValueError(
            f"`learning_rate` must be positive. Received: {learning_rate!r}"
        )
    if schedule == "constant":
        return float(learning_rate)
    if total_steps is None or total_steps < 1:
        raise ValueError(
            f"schedule={schedule!r} needs `total_steps` (a positive number "
            f"of optimizer steps). Received: total_steps={total_steps!r}"
        )
    if schedule == "cosine":
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(
                "`warmup_steps` must be in [0, total_steps). Received: "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        if warmup_steps:
            return keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=0.0,
                decay_steps=total_steps - warmup_steps,
                warmup_target=float(learning_rate),
                warmup_steps=warmup_steps,
            )
        return keras.optimizers.schedules.CosineDecay(
            float(learning_rate), decay_steps=total_steps
        )
    return keras.optimizers.schedules.ExponentialDecay(
        float(learning_rate), decay_steps=total_steps, decay_rate=decay_rate
    )


def make_optimizer(
    learning_rate=DEFAULT_LEARNING_RATE,
    momentum=PAPER_MOMENTUM,
    schedule="constant",
    total_steps=None,
    warmup_steps=0,
    clipnorm=None,
    kind="sgd",
):
    """The paper's optimizer, SGD with momentum 0.99, or Adam.

    Args:
        learning_rate: float. Initial learning rate. Defaults to
            `DEFAULT_LEARNING_RATE`.
        momentum: float. Defaults to `0.99` (the paper).
        schedule: str. See `learning_rate_schedule`. Defaults to
            `"constant"`.
        total_steps: int or `None`. See `learning_rate_schedule`.
        warmup_steps: int. See `learning_rate_schedule`. Defaults to `0`.
        clipnorm: float or `None`. Gradient norm clipping (not in the
            paper). Defaults to `None`.
        kind: str. `"sgd"` (the paper's SGD with `momentum`) or `"adam"`
            (`keras.optimizers.Adam`, not the paper's; `momentum` is then
            unused). On ISBI 2012 with a CPU budget, Adam with learning
            rate 1e-4 trains where SGD with momentum 0.99 barely moves in
            the first thousand steps (see the Training recipe page).
            Defaults to `"sgd"`.

    Returns:
        A `keras.optimizers.SGD` or `keras.optimizers.Adam`.

    Example:

    ```python
    >>> optimizer = keras_unet2015.training.make_optimizer()
    >>> type(optimizer).__name__, optimizer.momentum
    ('SGD', 0.99)
    ```
    """
    if kind not in OPTIMIZERS:
        raise ValueError(
            f"`kind` must be one of {OPTIMIZERS}. Received: {kind!r}"
        )
    if not 0 <= momentum < 1:
        raise ValueError(f"`momentum` must be in [0, 1). Received {momentum}")
    rate = learning_rate_schedule(
        learning_rate, schedule, total_steps, warmup_steps
    )
    if kind == "adam":
        return keras.optimizers.Adam(learning_rate=rate, clipnorm=clipnorm)
    return keras.optimizers.SGD(
        learning_rate=rate, momentum=momentum, clipnorm=clipnorm
    )


def default_loss(model):
    """`WeightedPixelLoss` matching the model's output (logits or not).

    Args:
        model: a Keras model; its `activation` attribute (`None` for the
            logits of `UNet2015`, `"softmax"` for probabilities) sets
            `from_logits`. A model without that attribute is taken to
            output logits.

    Returns:
        A `keras_unet2015.WeightedPixelLoss`.

    Example:

    ```python
    >>> model = keras_unet2015.UNet2015(depth=1, filters=4)
    >>> keras_unet2015.training.default_loss(model).from_logits
    True
    ```
    """
    from keras_unet2015.losses.weighted_pixel_loss import WeightedPixelLoss

    activation = getattr(model, "activation", None)
    return WeightedPixelLoss(from_logits=activation is None)


def compile_model(
    model,
    optimizer=None,
    loss=None,
    learning_rate=DEFAULT_LEARNING_RATE,
    momentum=PAPER_MOMENTUM,
    schedule="constant",
    total_steps=None,
    warmup_steps=0,
    metrics=None,
    jit_compile="auto",
):
    """Compiles a U-Net with the paper's optimizer and weighted loss.

    Args:
        model: a `keras_unet2015.UNet2015` (or any Keras segmentation
            model).
        optimizer: `None`, `"sgd"`, `"adam"` or a Keras optimizer; `None`
            and `"sgd"` build the paper's SGD with `make_optimizer(
            learning_rate, momentum, schedule, ...)`, `"adam"` builds Adam
            with the same learning rate and schedule. Defaults to `None`.
        loss: `None` or a Keras loss; `None` uses
            `WeightedPixelLoss(from_logits=...)` matching the model's
            `activation`. Per-pixel weights arrive as `sample_weight`.
            Defaults to `None`.
        learning_rate: float. Defaults to `DEFAULT_LEARNING_RATE`.
        momentum: float. Defaults to `0.99`.
        schedule: str. `"constant"`, `"cosine"` or `"exponential"`.
            Defaults to `"constant"`.
        total_steps: int or `None`. Decay length of a schedule, in steps.
        warmup_steps: int. Warm-up of the cosine schedule. Defaults to `0`.
        metrics: `None` or a list of Keras metrics. Defaults to `None`.
        jit_compile: bool or `"auto"`. Passed to `model.compile`. Defaults
            to `"auto"`.

    Returns:
        The model, compiled.

    Example:

    ```python
    model = keras_unet2015.UNet2015(depth=2, filters=8)
    keras_unet2015.training.compile_model(model, learning_rate=0.01)
    images, labels, _ = keras_unet2015.datasets.make_touching_cells(2, 92)
    model.fit(images[..., None], labels, epochs=1, verbose=0)
    ```
    """
    if optimizer is None or isinstance(optimizer, str):
        optimizer = make_optimizer(
            learning_rate,
            momentum,
            schedule,
            total_steps,
            warmup_steps,
            kind=optimizer or "sgd",
        )
    if loss is None:
        loss = default_loss(model)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=metrics,
        jit_compile=jit_compile,
    )
    return model


def prepare_targets(
    labels,
    label_mode="binary",
    w0=10.0,
    sigma=5.0,
    class_weights="balanced",
    num_classes=2,
    verbose=0,
):
    """Training targets and the paper's weight maps for a list of labels.

    - `"binary"` labels (0 = background, any other value = cell, e.g. the
      ISBI 2012 0/255 labels): the cells are the 4-connected components of
      the non-zero pixels, the weight map is
      `keras_unet2015.weight_maps.unet_weight_map` (class balance plus the
      border term `w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`).
    - `"instances"` (one id per object, 0 = background): touching objects
      are cut apart first (`target_and_weight_map`), then as above.
    - `"classes"` (multi-class maps): the border term needs cells and is not
      used; the weights balance the class frequencies only.

    The labels are checked first, and a `ValueError` names the label map,
    the values found and the fix: every map must be 2D, non-empty, and
    hold non-negative whole numbers; `"binary"` maps at most two values,
    one of them 0 where there are two; `"classes"` maps values in
    `[0, num_classes)` (0/255 masks are pointed to `"binary"`);
    `"instances"` labels in which every map holds a single id in several
    separate regions (binary masks, such as 0/255 labels, passed as
    instances, which would lose the border term) are pointed to
    `"binary"` too.

    Args:
        labels: list or array of label maps `(height, width)`.
        label_mode: str. `"binary"`, `"instances"` or `"classes"`. Defaults
            to `"binary"`.
        w0: float. Border term height (the paper's 10). Defaults to `10.0`.
        sigma: float. Border term width in pixels (the paper's 5). Defaults
            to `5.0`.
        class_weights: `"balanced"`, `None` or explicit weights, as in
            `weight_maps.unet_weight_map`. Defaults to `"balanced"`.
        num_classes: int. Number of classes for `"classes"`. Defaults to
            `2`.
        verbose: int. `1` shows a progress bar. Defaults to `0`.

    Returns:
        `(targets, weights)`: lists of `uint8` class maps (`int32` for
        more than 256 classes) and `float32` weight maps.

    Example:

    ```python
    >>> _, _, instances = keras_unet2015.datasets.make_touching_cells(2, 64)
    >>> targets, weights = keras_unet2015.training.prepare_targets(
    ...     instances, label_mode="instances"
    ... )
    >>> targets[0].dtype, weights[0].dtype, weights[0].shape
    (dtype('uint8'), dtype('float32'), (64, 64))
    >>> bool(weights[0].max() > 5)  # the border term between cells
    True
    ```
    """
    from keras_unet2015 import _label_checks
    from keras_unet2015 import weight_maps

    modes = ("binary", "instances", "classes")
    if label_mode not in modes:
        raise ValueError(
            f"`label_mode` must be one of {modes}. Received: {label_mode!r}"
        )
    labels = [
        _label_checks.check_label_map(label, index, label_mode, num_classes)
        for index, label in enumerate(labels)
    ]
    if label_mode == "instances":
        _label_checks.check_instances_are_not_masks(labels)
    progress = keras.utils.Progbar(len(labels)) if verbose else None
    targets, weights = [], []
    for label in labels:
        if label_mode == "binary":
            target = (label > 0).astype("uint8")
            weight = weight_maps.unet_weight_map(
                target.astype(bool),
                w0=w0,
                sigma=sigma,
                class_weights=class_weights,
            )
        elif label_mode == "instances":
            target, weight = weight_maps.target_and_weight_map(
                label, w0=w0, sigma=sigma, class_weights=class_weights
            )
        else:
            target = label.astype("uint8" if num_classes <= 256 else "int32")
            weight = weight_maps.class_weight_map(
                target, class_weights, num_classes=num_classes
            )
        targets.append(target)
        weights.append(weight)
        if progress is not None:
            progress.add(1)
    return targets, weights


AUGMENTATIONS = ("paper", "elastic", "none")


def default_augmentation(kind="paper", elastic_sigma=10.0, seed=None):
    """The augmentation `keras-unet2015 train` and `demo` use.

    Args:
        kind: str. `"paper"`: `keras_unet2015.PaperAugmentation`, the
            paper's shift, rotation, flips, gray-value variation and elastic
            deformation in one resampling; `"elastic"`:
            `keras_unet2015.ElasticDeform` alone (random displacements on a
            3x3 grid, bicubic interpolation of the field, mirrored
            borders); `"none"`: no augmentation. Defaults to `"paper"`.
        elastic_sigma: float. Standard deviation of the elastic
            displacements in pixels. Defaults to `10.0` (the paper).
        seed: int or `None`. Seed of the layer. Defaults to `None`.

    Returns:
        A Keras preprocessing layer taking and returning `(images, labels,
        weights)`, applied to all three together, or `None`.

    Example:

    ```python
    augment = keras_unet2015.training.default_augmentation(seed=0)
    images = np.random.rand(2, 64, 64, 1).astype("float32")
    labels = np.random.randint(0, 2, (2, 64, 64)).astype("int32")
    weights = np.ones((2, 64, 64), "float32")
    images, labels, weights = augment((images, labels, weights))
    ```
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(
            f"`kind` must be one of {AUGMENTATIONS}. Received: {kind!r}"
        )
    if kind == "none":
        return None
    if kind == "elastic":
        from keras_unet2015.layers.elastic_deform import ElasticDeform

        return ElasticDeform(sigma=elastic_sigma, seed=seed)
    from keras_unet2015.layers.paper_augmentation import PaperAugmentation

    return PaperAugmentation(sigma=elastic_sigma, seed=seed)


class _StreamEpochSync(keras.callbacks.Callback):
    """Keeps a `TrainingSampleStream`'s epoch equal to Keras's epoch.

    Keras calls `on_epoch_begin` before it starts reading the epoch's
    batches, also after `BackupAndRestore` moved the initial epoch, so a
    resumed run reads exactly the batches of an uninterrupted one.
    """

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def on_epoch_begin(self, epoch, logs=None):
        self.stream.set_epoch(epoch)


class _TimeLimit(keras.callbacks.Callback):
    """Stops training once `seconds` of training have passed.

    `at="batch"`: after the batch that exceeds the limit; the epoch then
    ends as usual (validation, checkpoints, logs), shorter than the others.
    `at="epoch"`: after the epoch during which the limit passed, so every
    epoch is whole and a resumed run is exactly an uninterrupted one.
    """

    def __init__(self, seconds, at="batch"):
        super().__init__()
        self.seconds = float(seconds)
        self.at = at
        self.start = None
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def _check(self):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True
            self.stopped_early = True

    def on_train_batch_end(self, batch, logs=None):
        if self.at == "batch":
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        if self.at == "epoch":
            self._check()


def make_callbacks(
    output_dir,
    checkpoint=True,
    resume=True,
    csv_log=True,
    tensorboard=False,
    validation_images=None,
    validation_labels=None,
    validation_freq=1,
    validation_tile_size=None,
    verbose=0,
):
    """The callbacks of a training run writing to `output_dir`.

    Every file is written atomically (`keras_unet2015.run_folder`): a
    process killed at any moment leaves the complete previous file, and
    starting the same run again resumes from the newest complete epoch.

    Args:
        output_dir: str or `Path`. Run folder. Receives `model.keras` (the
            model after the last finished epoch), `best.keras` and
            `best.json` (the model with the lowest validation Rand error,
            its value and epoch; with validation images),
            `training_log.csv`, `run.json` (the run's status), `backup/`
            (while the run is unfinished) and `tensorboard/`.
        checkpoint: bool. Save `model.keras` after every epoch. Defaults to
            `True`.
        resume: bool. Save the training state after every epoch into
            `backup/epoch-NNNNNN/` (weights, optimizer state, the random
            state of dropout, the log rows and the best value so far), and
            resume from the newest complete one when the same run starts
            again. The backup is deleted when the last epoch has run and
            kept when training stopped earlier (a time limit, early
            stopping, a crash), so such a run resumes. Defaults to `True`.
        csv_log: bool. Write `training_log.csv`, one row per epoch: the
            logs of the epoch plus `steps` (optimizer steps so far) and
            `wall_time` (seconds of training so far, over all invocations
            of a resumed run), the run's learning curve. Defaults to
            `True`.
        tensorboard: bool. Write TensorBoard logs. Defaults to `False`.
        validation_images: `None` or held-out images for the challenge
            measures (`SegmentationMetrics`). Defaults to `None`.
        validation_labels: `None` or their binary labels.
        validation_freq: int. Evaluate every this many epochs. Defaults to
            `1`.
        validation_tile_size: `None` or int. Tile size of the validation
            predictor. Defaults to `None`.
        verbose: int. Verbosity of the validation callback. Defaults to `0`.

    Returns:
        A list of callbacks, in the order they must run: the divergence
        check first (a NaN loss or weight stops training and nothing of
        that epoch is saved), then validation (so that later callbacks see
        its values), the checkpoints, the log and the training state.

    Example:

    ```python
    >>> callbacks = keras_unet2015.training.make_callbacks("run")
    >>> [type(c).__name__.lstrip("_") for c in callbacks]
    ['DivergenceWatch', 'ModelCheckpoint', 'LearningCurveLog', 'RunState']
    ```
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    watch = run_state._DivergenceWatch()
    callbacks = [watch]
    has_validation = validation_images is not None
    if has_validation:
        if validation_labels is None:
            raise ValueError(
                "`validation_labels` are required with `validation_images`."
            )
        metrics_callback = SegmentationMetrics(
            validation_images,
            validation_labels,
            frequency=validation_freq,
            tile_size=validation_tile_size,
            verbose=verbose,
        )
        metrics_callback._divergence_watch = watch
        callbacks.append(metrics_callback)
    companions = []
    if checkpoint:
        callbacks.append(
            run_state._ModelCheckpoint(output_dir / CHECKPOINT_NAME, watch)
        )
        if has_validation:
            best = run_state._BestModelCheckpoint(
                output_dir / BEST_CHECKPOINT_NAME, "val_rand_error", watch
            )
            callbacks.append(best)
            companions.append(best)
    if csv_log:
        log = run_state._LearningCurveLog(output_dir / CSV_LOG_NAME, watch)
        callbacks.append(log)
        companions.append(log)
    if tensorboard:
        callbacks.append(
            keras.callbacks.TensorBoard(
                os.fspath(output_dir / TENSORBOARD_DIR_NAME)
            )
        )
    if resume:
        callbacks.append(
            run_state._RunState(
                output_dir / BACKUP_DIR_NAME,
                companions=companions,
                watch=watch,
                record=run_folder.RunRecord(output_dir),
            )
        )
    return callbacks


def fit(
    model,
    train_data,
    epochs,
    output_dir=None,
    validation_images=None,
    validation_labels=None,
    validation_freq=1,
    validation_tile_size=None,
    checkpoint=True,
    resume=True,
    csv_log=True,
    tensorboard=False,
    callbacks=None,
    steps_per_epoch=None,
    time_limit=None,
    verbose=1,
    time_limit_at="batch",
    restart=False,
):
    """Trains a compiled U-Net with checkpoints, resuming and validation.

    Args:
        model: a compiled model (see `compile_model`).
        train_data: a `keras_unet2015.datasets.TrainingSampleStream`, a
            `tf.data.Dataset` or anything `model.fit` takes, yielding
            `(x, y, sample_weight)`. Inside a
            `keras_unet2015.distribution.distribution_scope` its batch size
            is the global batch, split over the replicas; a stream's
            `batch_size` must then be a multiple of their number.
        epochs: int. Number of epochs (the total: a resumed run continues
            up to this number).
        output_dir: `None`, str or `Path`. Run folder for checkpoints,
            backups and logs (see `make_callbacks`); `None` trains without
            them. Defaults to `None`.
        validation_images: `None` or held-out images for the challenge
            measures. Defaults to `None`.
        validation_labels: `None` or their binary labels. Defaults to
            `None`.
        validation_freq: int. Evaluate every this many epochs. Defaults to
            `1`.
        validation_tile_size: `None` or int. Defaults to `None`.
        checkpoint: bool. Defaults to `True`.
        resume: bool. Defaults to `True`.
        csv_log: bool. Defaults to `True`.
        tensorboard: bool. Defaults to `False`.
        callbacks: `None` or a list of extra callbacks, run after the
            package's. Defaults to `None`.
        steps_per_epoch: `None` or int. For endless datasets (such as
            `make_tf_dataset`'s). Defaults to `None`.
        time_limit: `None` or float. Stop after the batch that exceeds this
            many seconds of training; the epoch then ends as usual
            (validation, checkpoints) and the backup is kept, so calling
            `fit` again with the same `output_dir` resumes the run.
            Defaults to `None`.
        verbose: int. Passed to `model.fit`. Defaults to `1`.
        time_limit_at: str. `"batch"`: stop after the batch that exceeds
            `time_limit` (that last epoch is shorter); `"epoch"`: stop after
            the epoch during which it passed, so that a run resumed after
            the stop continues exactly as an uninterrupted run would.
            Defaults to `"batch"`.
        restart: bool. Delete the run in `output_dir` (the files the
            package wrote there: `run.json`, checkpoints, log, backup,
            TensorBoard logs) and start a fresh run. Defaults to `False`.

    Returns:
        The `keras.callbacks.History` of `model.fit`.

    Raises:
        ValueError: if `output_dir` holds a finished run (its `run.json`
            says so) and `restart` is false: training it again would
            overwrite its model.
        keras_unet2015.training.TrainingDivergedError: if the loss or the
            weights became NaN or inf. Training stops in that epoch and
            nothing of it is saved: the run folder keeps the last good
            epoch.

    Example:

    ```python
    images, labels, _ = keras_unet2015.datasets.make_touching_cells(4, 64)
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    keras_unet2015.training.compile_model(model)
    stream = keras_unet2015.datasets.TrainingSampleStream(
        images[:3], labels[:3], input_size=52, output_size=36,
        steps_per_epoch=2,
    )
    history = keras_unet2015.training.fit(
        model, stream, epochs=2, output_dir="run", verbose=0,
        validation_images=images[3:], validation_labels=labels[3:],
    )
    # Interrupted (a time limit, a crash, a kill), the same call resumes
    # from run/backup; run/model.keras and run/best.keras hold the last and
    # the best model.
    ```
    """
    from keras_unet2015.datasets.training_sample_stream import (
        TrainingSampleStream,
    )

    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "The model is not compiled. Call "
            "keras_unet2015.training.compile_model(model) first."
        )
    replicas = active_num_replicas()
    batch_size = getattr(train_data, "batch_size", None)
    if replicas > 1 and isinstance(batch_size, int):
        check_batch_size(batch_size, replicas)
    all_callbacks = []
    if isinstance(train_data, TrainingSampleStream):
        all_callbacks.append(_StreamEpochSync(train_data))
    if output_dir is not None:
        record = run_folder.RunRecord(output_dir)
        if restart:
            clear_run_folder(output_dir)
        elif record.status == "finished":
            raise ValueError(
                f"{output_dir} holds a finished run (its {RECORD_NAME} says "
                "so): training again would overwrite its model. Pass "
                "restart=True (--restart) to train a new run there, or "
                "another output folder."
            )
        if record.status is None:
            record.start(None)
        all_callbacks += make_callbacks(
            output_dir,
            checkpoint=checkpoint,
            resume=resume,
            csv_log=csv_log,
            tensorboard=tensorboard,
            validation_images=validation_images,
            validation_labels=validation_labels,
            validation_freq=validation_freq,
            validation_tile_size=validation_tile_size,
            verbose=verbose,
        )
    elif validation_images is not None:
        all_callbacks.append(
            SegmentationMetrics(
                validation_images,
                validation_labels,
                frequency=validation_freq,
                tile_size=validation_tile_size,
                verbose=verbose,
            )
        )
    if time_limit is not None:
        if not time_limit > 0:
            raise ValueError(
                f"`time_limit` must be positive. Received: {time_limit!r}"
            )
        if time_limit_at not in ("batch", "epoch"):
            raise ValueError(
                "`time_limit_at` must be 'batch' or 'epoch'. Received: "
                f"{time_limit_at!r}"
            )
        limit = _TimeLimit(time_limit, at=time_limit_at)
        if time_limit_at == "epoch":
            # First, so that the validation callback sees the stop in the
            # same epoch end and scores the last epoch.
            all_callbacks.insert(0, limit)
        else:
            all_callbacks.append(limit)
    all_callbacks += list(callbacks or [])
    if output_dir is None:
        watch = run_state._DivergenceWatch()
        all_callbacks.insert(0, watch)
    else:
        watch = next(
            c
            for c in all_callbacks
            if isinstance(c, run_state._DivergenceWatch)
        )
    history = model.fit(
        train_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=all_callbacks,
        verbose=verbose,
        # The batches are random already. Keras's shuffling of their order
        # draws from Python's global generator, which a resumed run does not
        # restore: it would change the order of an epoch's batches.
        shuffle=False,
    )
    if watch.diverged is not None:
        if output_dir is not None:
            run_folder.RunRecord(output_dir).set_status(
                "diverged", divergence=watch.diverged
            )
        raise TrainingDivergedError(watch.message(output_dir))
    return history


#: Files and folders of a run folder that the package writes (and
#: `clear_run_folder` deletes).
RUN_FILES = (
    RECORD_NAME,
    CHECKPOINT_NAME,
    BEST_CHECKPOINT_NAME,
    "best.json",
    CSV_LOG_NAME,
    BACKUP_DIR_NAME,
    TENSORBOARD_DIR_NAME,
    "backup_random_state.npz",
    "config.json",
)


def clear_run_folder(output_dir, extra=()):
    """Deletes the run in `output_dir`: the files the package wrote there.

    Removes `RUN_FILES` (and the names in `extra`) and temporary files of a
    killed process; any other file in the folder is kept.

    Args:
        output_dir: str or `Path`. The run folder.
        extra: names of more files or folders to delete.

    Example:

    ```python
    keras_unet2015.training.clear_run_folder("run")
    # run/ keeps only files the package did not write.
    ```
    """
    import shutil

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return
    run_folder.remove_partial_files(output_dir)
    for name in tuple(RUN_FILES) + tuple(extra):
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
