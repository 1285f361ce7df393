"""Kill-and-resume: real training processes killed at many points.

A `keras-unet2015 train` run is killed with SIGKILL in the middle of its
file writes (half of a temporary file written) and just after them (the new
file in place, the next step not done), at every kind of file it writes;
after each kill the same command is started again. The run that survives
all the kills must end exactly as an uninterrupted run: the same weights,
best model, learning curve and status, and no temporary file left.

The kill points come from the package's test harness
(`keras_unet2015.run_folder._KILL_ENV`); one more kill comes from outside,
from a watcher that kills the process as soon as the temporary folder of
an epoch's training state appears (a real asynchronous kill, wherever the
write is at that moment).
"""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest

from keras_unet2015 import run_folder
from tests.testing import write_cell_folders

BACKEND = keras.backend.backend()

pytestmark = pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="kill-and-resume processes run on JAX and PyTorch (CI time); "
    "the run-folder code is the same on every backend",
)

TRAIN_OPTIONS = (
    "--validation-indices", "4-5",
    "--depth", "1",
    "--filters", "4",
    "--input-size", "44",
    "--epochs", "4",
    "--steps-per-epoch", "2",
    "--learning-rate", "0.01",
    "--verbose", "0",
)  # fmt: skip

# (file, phase, occurrence in that process). In order: each process is
# killed at its first write of the kind, so the chain walks through the
# writes of epoch 0, commits it, then goes on to later epochs and the end.
KILLS = (
    ("run.json", "partial", 1),
    ("model.keras", "partial", 1),
    ("model.keras", "renamed", 1),
    ("best.keras", "partial", 1),
    ("best.json", "renamed", 1),
    ("training_log.csv", "partial", 1),
    ("epoch-", "partial", 1),
    ("epoch-", "renamed", 1),
    ("watch", ".epoch-000001.partial-", None),
    ("model.keras", "partial", 2),
    ("run.json", "partial", 2),
    ("run.json", "renamed", 2),
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_cell_folders(tmp_path_factory.mktemp("cells"))


def _command(folders, run):
    return [
        sys.executable, "-m", "keras_unet2015", "train",
        "--images", str(folders / "images"),
        "--labels", str(folders / "labels"),
        "--output-dir", str(run),
        *TRAIN_OPTIONS,
    ]  # fmt: skip


def _env(**extra):
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    env.pop(run_folder._KILL_ENV, None)
    env.update(extra)
    return env


def _watch_and_kill(process, folder, prefix):
    """Kills `process` as soon as a file starting with `prefix` appears."""

    def watch():
        while process.poll() is None:
            if folder.is_dir() and any(
                p.name.startswith(prefix) for p in folder.iterdir()
            ):
                process.send_signal(signal.SIGKILL)
                return
            time.sleep(0.001)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _rows(run):
    with open(run / "training_log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        del row["wall_time"]
    return rows


def _weights(path):
    model = keras.saving.load_model(path, compile=False)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_runs_killed_at_every_kind_of_write_end_as_uninterrupted(
    folders, tmp_path
):
    reference = tmp_path / "reference"
    log = tmp_path / "reference_writes.txt"
    done = subprocess.run(
        _command(folders, reference),
        env=_env(**{run_folder._LOG_ENV: str(log)}),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = log.read_text().split()
    kinds = {"epoch-" if n.startswith("epoch-") else n for n in written}
    # Every kind of file a run writes is killed at least once.
    assert {kind for kind, _, _ in KILLS} - {"watch"} == kinds - {"config.json"}

    run = tmp_path / "run"
    killed = []
    for kind, phase, number in KILLS:
        log = tmp_path / f"writes_{len(killed)}.txt"
        env = {run_folder._LOG_ENV: str(log)}
        if kind != "watch":
            env[run_folder._KILL_ENV] = f"{kind}:{phase}:{number}"
        process = subprocess.Popen(
            _command(folders, run),
            env=_env(**env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if kind == "watch":
            _watch_and_kill(process, run / "backup", phase)
        _, err = process.communicate(timeout=600)
        assert process.returncode == -signal.SIGKILL, (kind, phase, err[-3000:])
        killed.append((kind, phase, log.read_text().split()[-1]))
    # The harness killed each process at the write it was asked to.
    for kind, phase, last in killed:
        if kind != "watch":
            assert last.startswith(kind), (kind, phase, last)

    again = subprocess.run(
        _command(folders, run), env=_env(), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]

    for name in ("model.keras", "best.keras"):
        for a, b in zip(_weights(reference / name), _weights(run / name)):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert json.loads((run / "best.json").read_text()) == json.loads(
        (reference / "best.json").read_text()
    )
    assert _rows(run) == _rows(reference)
    assert [row["epoch"] for row in _rows(run)] == ["0", "1", "2", "3"]
    assert run_folder.RunRecord(run).status == "finished"
    assert not (run / "backup").exists()
    leftovers = [p.name for p in run.rglob("*") if ".partial-" in p.name]
    assert leftovers == []
