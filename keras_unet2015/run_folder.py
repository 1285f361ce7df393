"""Run folders that survive a crash: atomic files, the run record, resume.

Every file the package writes into a run folder goes through
`atomic_write`: it is written to a temporary file in the same folder,
flushed to disk (`fsync`) and renamed over the old file, so a reader (or a
resumed run) sees either the complete old file or the complete new one,
never a partial one, whatever moment the process is killed at.

`RunRecord` is the run folder's `run.json`: what the folder holds (the
configuration of the run, a fingerprint of its data, the backend) and how
far it got (`"running"`, `"finished"`, `"diverged"`). The command line and
`keras_unet2015.reproduce` check it before they train: the same command
resumes, another configuration or other data is refused with the
differences and the way out (`--restart` or another folder), and a
finished run is not trained again.

Example:

```python
record = keras_unet2015.run_folder.RunRecord("run")
record.start({"filters": 16, "epochs": 10}, data="0123abcd")
record.status  # "running"
```
"""

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np

__all__ = ["RunRecord", "RunMismatchError", "atomic_write", "fingerprint"]

RECORD_NAME = "run.json"
STATUSES = ("running", "finished", "diverged")

# Test harness for the kill-and-resume tests, which stop real training
# processes at chosen writes. `KERAS_UNET2015_TEST_KILL_AT="NAME:PHASE:N"`
# kills the process with SIGKILL at the N-th atomic write (default 1) of a
# file named NAME (a NAME ending in "-" matches names starting with it),
# in PHASE "partial" (half of the temporary file written, not renamed) or
# "renamed" (the new file in place, the next step not done).
# `KERAS_UNET2015_TEST_WRITE_LOG=PATH` appends "NAME" of every atomic
# write to PATH before it starts.
_KILL_ENV = "KERAS_UNET2015_TEST_KILL_AT"
_LOG_ENV = "KERAS_UNET2015_TEST_WRITE_LOG"
_matches = 0


def _matches_spec(name):
    spec = os.environ.get(_KILL_ENV)
    if not spec:
        return None
    target, _, rest = spec.partition(":")
    phase, _, number = rest.partition(":")
    hit = name == target or (target.endswith("-") and name.startswith(target))
    return (phase or "renamed", int(number or 1)) if hit else None


def _log_write(name):
    global _matches
    log = os.environ.get(_LOG_ENV)
    if log:
        with open(log, "a") as file:
            file.write(name + "\n")
    if _matches_spec(name) is not None:
        _matches += 1


def _kill_point(name, phase, temporary=None):
    spec = _matches_spec(name)
    if spec is None or spec != (phase, _matches):
        return
    if temporary is not None and temporary.is_dir():
        files = [f for f in temporary.rglob("*") if f.is_file()]
        temporary = max(files, key=lambda f: f.stat().st_size, default=None)
    if temporary is not None and temporary.is_file():
        size = temporary.stat().st_size
        with open(temporary, "r+b") as file:
            file.truncate(size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path):
    """Flushes a file, or a folder and every file in it, to disk."""
    path = Path(path)
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync(child)
    _fsync(path)


def atomic_write(path, write):
    """Writes `path` atomically: complete new content or the old file.

    Args:
        path: str or `Path`. The file (or folder) to write.
        write: callable taking the temporary path to write to. It must
            write there (a file or a folder); its name keeps the suffix of
            `path` (Keras checks `.keras` and `.weights.h5` suffixes).

    The temporary path is a hidden name in the same folder
    (`.NAME.partial-PID` plus the suffix). It is flushed to disk and renamed
    onto `path` with `os.replace` (atomic for files on POSIX and Windows;
    an existing folder is first moved aside, then deleted), and the parent
    folder's entry is flushed too. If `write` fails, the temporary path is
    deleted and `path` is untouched.

    Example:

    ```python
    >>> from pathlib import Path
    >>> keras_unet2015.run_folder.atomic_write(
    ...     "note.txt", lambda p: Path(p).write_text("done")
    ... )
    >>> Path("note.txt").read_text()
    'done'
    ```
    """
    path = Path(path)
    temporary = temporary_path(path)
    _log_write(path.name)
    try:
        write(temporary)
        if not temporary.exists():
            raise RuntimeError(
                f"The writer of {path} did not write its temporary file "
                f"{temporary}."
            )
        _kill_point(path.name, "partial", temporary)
        commit_temporary(temporary, path)
    except BaseException:
        _remove(temporary)
        raise
    _kill_point(path.name, "renamed")


def temporary_path(path):
    """The (deleted) temporary path `atomic_write` writes `path` through.

    A hidden name in the same folder, keeping the suffix of `path`; with
    `commit_temporary`, for writers that fill several temporary paths
    before any is renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = (
        "".join(path.suffixes[-2:])
        if path.name.endswith(".weights.h5")
        else path.suffix
    )
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    temporary = path.with_name(f".{stem}.partial-{os.getpid()}{suffix}")
    _remove(temporary)
    return temporary


def commit_temporary(temporary, path):
    """Flushes `temporary` to disk and renames it onto `path` (atomic)."""
    temporary, path = Path(temporary), Path(path)
    fsync_tree(temporary)
    if temporary.is_dir() and path.is_dir():
        aside = path.with_name(f".{path.name}.old-{os.getpid()}")
        _remove(aside)
        os.replace(path, aside)
        os.replace(temporary, path)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(temporary, path)
    _fsync(path.parent)


def _remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_text(path, text):
    """`atomic_write` of a text file (UTF-8)."""
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def write_json(path, value):
    """`atomic_write` of a JSON file (indented, sorted keys kept as given)."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def save_model(model, path):
    """`model.save(path)`, atomically: a kill never leaves a partial file."""
    atomic_write(path, model.save)


def remove_partial_files(folder):
    """Deletes temporary files a killed process left in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.name.startswith(".") and (
            ".partial-" in child.name or ".old-" in child.name
        ):
            _remove(child)


def fingerprint(*arrays):
    """SHA-256 (hex, 16 digits) of a list of arrays: shapes, dtypes, bytes.

    Two runs on the same images and labels get the same fingerprint; any
    changed pixel, shape or dtype changes it.

    Args:
        *arrays: arrays, or (nested) lists of arrays, such as the images
            and the labels of a training set.

    Returns:
        A string of 16 hexadecimal digits.

    Example:

    ```python
    >>> a = np.zeros((2, 2), "uint8")
    >>> keras_unet2015.run_folder.fingerprint([a]) == (
    ...     keras_unet2015.run_folder.fingerprint([a.copy()])
    ... )
    True
    ```
    """
    digest = hashlib.sha256()

    def add(value):
        if isinstance(value, (list, tuple)):
            digest.update(f"list{len(value)}".encode())
            for item in value:
                add(item)
            return
        array = np.ascontiguousarray(value)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())

    for array in arrays:
        add(array)
    return digest.hexdigest()[:16]


class RunMismatchError(ValueError):
    """A run folder holds another run than the one asked for.

    Raised by `RunRecord.check` (and so by `keras-unet2015 train` and
    `reproduce`) with the changed settings, before anything is written.

    Example:

    ```python
    record = keras_unet2015.run_folder.RunRecord("run")
    record.start({"filters": 16})
    try:
        record.check({"filters": 32})
    except keras_unet2015.run_folder.RunMismatchError as error:
        print(error)  # ... (filters: 16 -> 32). ... --restart ...
    ```
    """


class RunRecord:
    """The `run.json` of a run folder: configuration, data and status.

    Args:
        output_dir: str or `Path`. The run folder.

    Example:

    ```python
    record = keras_unet2015.run_folder.RunRecord("run")
    record.start({"epochs": 3}, data="ab12")
    record.set_status("finished")
    keras_unet2015.run_folder.RunRecord("run").status  # "finished"
    ```
    """

    def __init__(self, output_dir):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / RECORD_NAME

    def read(self):
        """The record as a dict, or `None` when the folder has none."""
        if not self.path.is_file():
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RunMismatchError(
                f"{self.path} is not valid JSON ({error}). It was not "
                "written by this version of keras-unet2015 (its writes are "
                "atomic); pass --restart (restart=True) to start the run "
                "over, or use another output folder."
            ) from None

    @property
    def status(self):
        """`None` (no record), `"running"`, `"finished"` or `"diverged"`."""
        record = self.read()
        return None if record is None else record.get("status")

    def check(self, config, data=None, what="run"):
        """Raises `RunMismatchError` if the folder holds another run.

        Args:
            config: dict of the settings that define the run (JSON values).
            data: `None` or the `fingerprint` of the training data.
            what: str. How to call the run in messages (`"run"`,
                `"recipe"`).

        Returns:
            The folder's status (`None` for a new folder).
        """
        record = self.read()
        if record is None:
            return None
        saved = record.get("config") or {}
        changed = {
            key: (saved.get(key, "<unset>"), config.get(key, "<unset>"))
            for key in sorted(set(saved) | set(config))
            if saved.get(key, "<unset>") != config.get(key, "<unset>")
        }
        problems = []
        if changed:
            problems.append(
                ", ".join(
                    f"{key}: {old!r} -> {new!r}"
                    for key, (old, new) in changed.items()
                )
            )
        if data is not None and record.get("data") not in (None, data):
            problems.append(
                "other training data (fingerprint "
                f"{record.get('data')} -> {data})"
            )
        if problems:
            raise RunMismatchError(
                f"{self.output_dir} holds a {what} with other settings "
                f"({'; '.join(problems)}). Nothing was changed. Use another "
                "output folder, or --restart (restart=True) to delete that "
                "run and start over."
            )
        return record.get("status")

    def start(self, config, data=None, **extra):
        """Records a new or resumed run (`status="running"`)."""
        record = self.read() or {}
        record.update(extra)
        record.update({"config": config, "data": data, "status": "running"})
        write_json(self.path, record)

    def set_status(self, status, **extra):
        """Updates the status (and more fields) of an existing record."""
        if status not in STATUSES:
            raise ValueError(
                f"`status` must be one of {STATUSES}. Received: {status!r}"
            )
        record = self.read() or {}
        record.update(extra)
        record["status"] = status
        write_json(self.path, record)
