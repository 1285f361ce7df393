"""Crash-safe run-folder callbacks of `keras_unet2015.training.fit`.

A training run writes, after every epoch, `model.keras`, `best.keras` and
`best.json`, `training_log.csv` and the training state needed to resume
(`backup/epoch-NNNNNN/`: weights with optimizer state, the random state of
dropout, the log rows and the best value so far). Every file is written
with `keras_unet2015.run_folder.atomic_write`, and the state folder of an
epoch appears in one rename once it is complete, so a process killed at
any moment leaves the previous complete state: starting the run again
resumes from the newest complete epoch and ends with the weights of an
uninterrupted run.

The callbacks are private: `keras_unet2015.training.make_callbacks` builds
them in the order they must run.
"""

import csv
import io
import json
import math
import re
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from keras_unet2015 import run_folder

STATE_PREFIX = "epoch-"
STATE_WEIGHTS = "state.weights.h5"
STATE_RANDOM = "random_state.npz"
STATE_JSON = "state.json"
_STATE_PATTERN = re.compile(rf"^{STATE_PREFIX}(\d+)$")


class TrainingDivergedError(RuntimeError):
    """Training stopped because the loss or the weights became NaN or inf.

    Raised by `keras_unet2015.training.fit` after the epoch in which the
    training loss (checked after every batch) or a weight (after every
    epoch) stopped being finite. Nothing of that epoch is saved; the message
    names the epoch, the optimizer step and the learning rate.

    Example:

    ```python
    model = keras_unet2015.UNet2015(depth=1, filters=4)
    keras_unet2015.training.compile_model(model, learning_rate=1e30)
    images, labels, _ = keras_unet2015.datasets.make_touching_cells(2, 48)
    stream = keras_unet2015.datasets.TrainingSampleStream(
        images, labels, input_size=44, output_size=28, steps_per_epoch=3
    )
    try:
        keras_unet2015.training.fit(model, stream, epochs=1, verbose=0)
    except keras_unet2015.training.TrainingDivergedError as error:
        print(error)  # Training diverged: the training loss became nan ...
    ```
    """


class _DivergenceWatch(keras.callbacks.Callback):
    """Stops training at the first non-finite loss or weight.

    Checks the loss after every batch and the trainable weights after
    every epoch. Runs first, so that the callbacks after it (validation,
    checkpoints, state, log) see `diverged` and keep the last good files.
    """

    def __init__(self):
        super().__init__()
        self.diverged = None
        self.epoch = 0

    def on_train_begin(self, logs=None):
        self.diverged = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _stop(self, what):
        iterations = getattr(self.model.optimizer, "iterations", None)
        step = None
        if iterations is not None:
            step = int(keras.ops.convert_to_numpy(iterations))
        self.diverged = {"epoch": self.epoch, "step": step, "what": what}
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.diverged is not None or loss is None:
            return
        value = float(keras.ops.convert_to_numpy(loss))
        if not math.isfinite(value):
            self._stop(f"the training loss became {value}")

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged is not None:
            return
        for variable in self.model.trainable_variables:
            value = keras.ops.convert_to_numpy(variable)
            if not np.isfinite(value).all():
                self._stop(f"the weights of {variable.path} became non-finite")
                return

    def message(self, output_dir=None):
        """The error message of a diverged run."""
        info = self.diverged
        where = f"in epoch {info['epoch'] + 1}"
        if info["step"] is not None:
            where += f" (optimizer step {info['step']})"
        learning_rate = ""
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            try:
                rate = float(
                    keras.ops.convert_to_numpy(optimizer.learning_rate)
                )
                learning_rate = f" (now {rate:.3g})"
            except (TypeError, ValueError):
                pass
        kept = (
            f" The files of the last good epoch are kept in {output_dir}; "
            "nothing of the diverged epoch was saved."
            if output_dir is not None
            else ""
        )
        return (
            f"Training diverged: {info['what']} {where}.{kept} Lower the "
            f"learning rate{learning_rate} (--learning-rate), check that "
            "the images are scaled to [0, 1] and the labels are class "
            "indices (see keras_unet2015.datasets.to_float_image), then "
            "start the run over (--restart, or another output folder)."
        )


def _skip(watch):
    return watch is not None and watch.diverged is not None


class _ModelCheckpoint(keras.callbacks.Callback):
    """Saves the model after every epoch, atomically."""

    def __init__(self, path, watch=None):
        super().__init__()
        self.path = Path(path)
        self.watch = watch

    def on_epoch_end(self, epoch, logs=None):
        if not _skip(self.watch):
            run_folder.save_model(self.model, self.path)


class _BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever a monitored error reaches a new minimum.

    Unlike `keras.callbacks.ModelCheckpoint(save_best_only=True)`, epochs
    without a value (`nan`, logged by `SegmentationMetrics` between
    evaluations) are skipped instead of becoming the reference (Keras
    compares later values with the first one it sees, and every comparison
    with `nan` is false). The best value and its epoch go into a JSON file
    next to the model and into the run's state, so a resumed run continues
    from them.
    """

    def __init__(self, path, monitor, watch=None):
        super().__init__()
        self.path = Path(path)
        self.record = self.path.with_suffix(".json")
        self.monitor = monitor
        self.watch = watch
        self.best = math.inf
        self.best_epoch = None

    def get_state(self):
        if self.best_epoch is None:
            return None
        return {"value": self.best, "epoch": self.best_epoch}

    def set_state(self, state):
        self.best = math.inf if state is None else float(state["value"])
        self.best_epoch = None if state is None else int(state["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        if _skip(self.watch):
            return
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or value >= self.best:
            return
        self.best, self.best_epoch = float(value), epoch
        run_folder.save_model(self.model, self.path)
        run_folder.write_json(
            self.record,
            {"monitor": self.monitor, "value": self.best, "epoch": epoch},
        )


class _LearningCurveLog(keras.callbacks.Callback):
    """The CSV learning curve: one row per epoch, rewritten atomically.

    Adds `steps` (the optimizer's iteration count after the epoch) and
    `wall_time` (seconds of training so far, summed over the invocations
    of a resumed run) to the epoch logs and writes the rows of all epochs
    so far to the CSV file (columns `epoch`, then the log keys sorted, as
    `keras.callbacks.CSVLogger`). A resumed run restores the rows of the
    epochs its state holds, so the log never has a missing, repeated or
    partial row.
    """

    def __init__(self, csv_path, watch=None):
        super().__init__()
        self.csv_path = Path(csv_path)
        self.watch = watch
        self.rows = []
        self.offset = 0.0
        self.start = None

    def get_state(self):
        return {"rows": self.rows, "wall_time": self._wall_time()}

    def set_state(self, state):
        self.rows = [dict(row) for row in state.get("rows", [])]
        self.offset = float(state.get("wall_time", 0.0))
        self.start = time.perf_counter()

    def _wall_time(self):
        if self.start is None:
            return self.offset
        return self.offset + time.perf_counter() - self.start

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if _skip(self.watch) or logs is None:
            return
        iterations = getattr(self.model.optimizer, "iterations", None)
        if iterations is not None:
            logs["steps"] = int(keras.ops.convert_to_numpy(iterations))
        logs["wall_time"] = self._wall_time()
        row = {"epoch": epoch}
        for key in sorted(logs):
            row[key] = _plain(logs[key])
        self.rows.append(row)
        self.write()

    def write(self):
        keys = []
        for row in self.rows:
            keys += [key for key in row if key not in keys]
        keys = ["epoch"] + sorted(key for key in keys if key != "epoch")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        run_folder.write_text(self.csv_path, buffer.getvalue())


def _plain(value):
    """A JSON-able Python number or string of a log value."""
    if isinstance(value, (int, float, str)):
        return value
    try:
        array = keras.ops.convert_to_numpy(value)
    except Exception:  # noqa: BLE001 - a non-tensor log value
        return str(value)
    return array.item() if array.size == 1 else str(array.tolist())


def _number(text):
    """A CSV cell as an int, a float or the string itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class _RunState(keras.callbacks.Callback):
    """Saves the training state after every epoch; resumes from it.

    After every epoch (unless the run diverged), writes
    `backup/epoch-NNNNNN/` with the weights and optimizer state
    (`state.weights.h5`), the random state of the layers' seed generators
    and of PyTorch (`random_state.npz`, so dropout draws the masks of an
    uninterrupted run), and `state.json` (the epoch, the log rows, the best
    value). The folder is written under a temporary name and renamed when
    complete; then the older states are deleted. At the start of training
    the newest complete state is restored: weights, optimizer, random
    state, log and best value, and training continues with the next epoch.

    When the last epoch has run, the run record says `"finished"` and the
    backup is deleted. A run stopped earlier (a time limit, early
    stopping, a crash) keeps it and resumes from it.
    """

    def __init__(self, backup_dir, companions=(), watch=None, record=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.companions = {type(c).__name__: c for c in companions}
        self.watch = watch
        self.record = record
        self.last_epoch = None
        self.restored_epoch = None

    # --- state files ---
    def states(self):
        """The complete state folders, oldest first: `[(epoch, path)]`."""
        if not self.backup_dir.is_dir():
            return []
        found = []
        for child in self.backup_dir.iterdir():
            match = _STATE_PATTERN.match(child.name)
            if match and (child / STATE_JSON).is_file():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def _seed_variables(self):
        return [
            v
            for v in self.model.non_trainable_variables
            if "seed_generator_state" in v.path
        ]

    def _write_state(self, folder, epoch):
        folder = Path(folder)
        folder.mkdir()
        self.model.save_weights(folder / STATE_WEIGHTS)
        random = {
            f"state_{i}": keras.ops.convert_to_numpy(v)
            for i, v in enumerate(self._seed_variables())
        }
        if keras.backend.backend() == "torch":
            # Unseeded dropout on PyTorch draws from torch's global
            # generator, not from the layer's SeedGenerator.
            import torch

            random["torch"] = torch.get_rng_state().numpy()
        np.savez(folder / STATE_RANDOM, **random)
        state = {
            "epoch": epoch,
            "format": 1,
            "shapes": [list(v.shape) for v in self.model.weights],
        }
        for name, companion in self.companions.items():
            state[name] = companion.get_state()
        (folder / STATE_JSON).write_text(json.dumps(state))

    def _restore(self, epoch, folder):
        model = self.model
        if not model.built:
            raise ValueError(
                "The model must be built before `fit` resumes a run. Call "
                "it on a batch of data first."
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        state = json.loads((folder / STATE_JSON).read_text())
        shapes = [list(v.shape) for v in model.weights]
        saved_shapes = state.get("shapes")
        if saved_shapes is not None and saved_shapes != shapes:
            mismatch = next(
                (
                    i
                    for i, (a, b) in enumerate(zip(saved_shapes, shapes))
                    if a != b
                ),
                min(len(saved_shapes), len(shapes)),
            )
            detail = (
                f"{len(saved_shapes)} weight arrays saved, {len(shapes)} in "
                "the model"
                if len(saved_shapes) != len(shapes)
                else f"weight {mismatch}: saved shape "
                f"{tuple(saved_shapes[mismatch])}, model "
                f"{tuple(shapes[mismatch])}"
            )
            raise ValueError(
                f"The training state in {self.backup_dir} does not fit this "
                f"model ({detail}): the folder holds the run of another "
                "model. Pass restart=True (--restart) to delete that run, or "
                "use another output folder."
            )
        model.load_weights(folder / STATE_WEIGHTS)
        variables = self._seed_variables()
        with np.load(folder / STATE_RANDOM) as saved:
            for i, variable in enumerate(variables):
                variable.assign(saved[f"state_{i}"])
            torch_state = saved["torch"] if "torch" in saved.files else None
        if torch_state is not None and keras.backend.backend() == "torch":
            import torch

            torch.set_rng_state(torch.from_numpy(torch_state))
        for name, companion in self.companions.items():
            companion.set_state(state.get(name))
        model._initial_epoch = epoch + 1
        self.restored_epoch = epoch

    def _restore_legacy(self):
        """Resumes a run backed up by version 0.1.0.dev0 before this one.

        That version kept `keras.callbacks.BackupAndRestore`'s
        `backup/latest.weights.h5` and `training_metadata.json`, the random
        state in `backup_random_state.npz` and appended to the CSV log.
        """
        metadata = self.backup_dir / "training_metadata.json"
        weights = self.backup_dir / "latest.weights.h5"
        if not (metadata.is_file() and weights.is_file()):
            return False
        output_dir = self.backup_dir.parent
        epoch = int(json.loads(metadata.read_text())["epoch"]) - 1
        legacy = self.backup_dir / ".legacy"
        shutil.rmtree(legacy, ignore_errors=True)
        legacy.mkdir()
        shutil.copy(weights, legacy / STATE_WEIGHTS)
        random = output_dir / "backup_random_state.npz"
        if random.is_file():
            shutil.copy(random, legacy / STATE_RANDOM)
        else:
            np.savez(legacy / STATE_RANDOM)
        state = {"epoch": epoch, "format": 1}
        log = self.companions.get("_LearningCurveLog")
        if log is not None and log.csv_path.is_file():
            with open(log.csv_path, newline="") as file:
                rows = [
                    {k: _number(v) for k, v in row.items()}
                    for row in csv.DictReader(file)
                    if int(row["epoch"]) <= epoch
                ]
            wall = [r["wall_time"] for r in rows if "wall_time" in r]
            state["_LearningCurveLog"] = {
                "rows": rows,
                "wall_time": float(wall[-1]) if wall else 0.0,
            }
        best = self.companions.get("_BestModelCheckpoint")
        if best is not None and best.record.is_file():
            saved = json.loads(best.record.read_text())
            state["_BestModelCheckpoint"] = {
                "value": saved["value"],
                "epoch": saved["epoch"],
            }
        (legacy / STATE_JSON).write_text(json.dumps(state))
        self._restore(epoch, legacy)
        shutil.rmtree(legacy, ignore_errors=True)
        return True

    # --- callback ---
    def on_train_begin(self, logs=None):
        run_folder.remove_partial_files(self.backup_dir)
        run_folder.remove_partial_files(self.backup_dir.parent)
        states = self.states()
        if states:
            self._restore(*states[-1])
        else:
            self._restore_legacy()
        for _, folder in states[:-1]:
            shutil.rmtree(folder, ignore_errors=True)

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch
        if _skip(self.watch):
            return
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        path = self.backup_dir / f"{STATE_PREFIX}{epoch:06d}"
        run_folder.atomic_write(path, lambda p: self._write_state(p, epoch))
        for old_epoch, folder in self.states():
            if old_epoch != epoch:
                shutil.rmtree(folder, ignore_errors=True)

    def finished_all_epochs(self):
        last = self.last_epoch
        if last is None:
            last = self.restored_epoch
        epochs = (self.params or {}).get("epochs")
        return last is not None and epochs is not None and last + 1 >= epochs

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None
        if _skip(self.watch) or not self.finished_all_epochs():
            return
        if self.record is not None:
            self.record.set_status("finished")
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        legacy = self.backup_dir.parent / "backup_random_state.npz"
        if legacy.is_file():
            legacy.unlink()
