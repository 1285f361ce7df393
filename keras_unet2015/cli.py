"""The `keras-unet2015` command line: demo, train, predict, evaluate.

```
keras-unet2015 demo                      # train on synthetic cells, a figure
keras-unet2015 train --images I --labels L --output-dir RUN
keras-unet2015 predict --model RUN/model.keras --output-dir OUT IMAGES...
keras-unet2015 evaluate --predictions OUT --labels L
keras-unet2015 export --model RUN/model.keras --format onnx --output unet.onnx
```

`--backend jax|tensorflow|torch` (before or after the command) selects the
Keras backend. Keras reads `KERAS_BACKEND` once, when it is first imported,
so this module imports nothing from Keras before the arguments are parsed.
If Keras was already imported with another backend (the package's
`__init__` imports it), the command runs again in a fresh interpreter with
`KERAS_BACKEND` set.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from keras_unet2015 import _default_backend

BACKENDS = ("jax", "tensorflow", "torch")
_REEXEC_ENV = "KERAS_UNET2015_CLI_CHILD"


class CommandError(Exception):
    """An error reported to the user without a traceback."""


# === Argument parsing ===


def _add_common(parser, suppress):
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=default,
        help="Keras backend (sets KERAS_BACKEND). Default: the environment's "
        "KERAS_BACKEND or Keras's configured backend.",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=argparse.SUPPRESS if suppress else 0,
        help="Random seed of tiles, augmentation and weights (default 0).",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=argparse.SUPPRESS if suppress else 1,
        help="0 silent, 1 progress bars (default), 2 one line per epoch.",
    )


def _add_model_options(parser, depth, filters, input_size):
    group = parser.add_argument_group("model")
    group.add_argument(
        "--depth", type=int, default=depth, help=f"max-pool steps ({depth})"
    )
    group.add_argument(
        "--filters",
        type=int,
        default=filters,
        help=f"filters of the first level ({filters})",
    )
    group.add_argument(
        "--dropout", type=float, default=0.5, help="dropout rate (0.5)"
    )
    group.add_argument(
        "--padding",
        choices=("valid", "same"),
        default="valid",
        help="'valid' is the paper's network (default)",
    )
    group.add_argument(
        "--input-size",
        type=int,
        default=input_size,
        help=f"training tile size, a valid input size ({input_size})",
    )
    group.add_argument(
        "--mixed-precision",
        choices=("none", "float16", "bfloat16"),
        default="none",
        help="mixed-precision training policy (none)",
    )


def _add_training_options(parser, epochs, steps, learning_rate):
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=epochs, help=f"({epochs})")
    group.add_argument(
        "--steps-per-epoch", type=int, default=steps, help=f"({steps})"
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="tiles per batch, over all devices: each of N devices gets "
        "batch-size / N tiles; the paper uses 1 large tile (1)",
    )
    group.add_argument(
        "--distribute",
        choices=("none", "data_parallel", "mirrored", "tpu"),
        default="none",
        help="train on every device of the machine: 'data_parallel' (JAX, "
        "keras.distribution.DataParallel), 'mirrored' (TensorFlow "
        "MirroredStrategy), 'tpu' (TensorFlow TPUStrategy) (none)",
    )
    group.add_argument(
        "--tpu",
        default=None,
        help="TPU name or grpc:// address for --distribute tpu (default: "
        "the TPU of this Cloud TPU VM)",
    )
    group.add_argument(
        "--learning-rate",
        type=float,
        default=learning_rate,
        help="learning rate (0.001: training.DEFAULT_LEARNING_RATE)",
    )
    group.add_argument(
        "--momentum", type=float, default=0.99, help="SGD momentum (0.99)"
    )
    group.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="sgd",
        help="'sgd': the paper's SGD with --momentum; 'adam': Adam, which "
        "trains much faster on ISBI 2012 at learning rate 1e-4 (sgd)",
    )
    group.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine", "exponential"),
        default="constant",
        help="decay over epochs x steps-per-epoch (constant)",
    )
    group.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        help="linear warm-up steps of the cosine schedule (0)",
    )
    group.add_argument(
        "--w0", type=float, default=10.0, help="border weight w0 (10)"
    )
    group.add_argument(
        "--sigma", type=float, default=5.0, help="border weight sigma (5)"
    )
    group.add_argument(
        "--class-weights",
        choices=("balanced", "none"),
        default="balanced",
        help="class-balancing term w_c (balanced)",
    )
    group.add_argument(
        "--augmentation",
        choices=("paper", "elastic", "none"),
        default="paper",
        help="'paper': shift, rotation, flips, gray values and elastic "
        "deformation; 'elastic': elastic deformation only (paper)",
    )
    group.add_argument(
        "--elastic-sigma",
        type=float,
        default=10.0,
        help="elastic deformation std on the 3x3 grid, px (10)",
    )
    group.add_argument(
        "--workers", type=int, default=1, help="PyDataset worker threads"
    )
    group.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="stop training after this many minutes (the epoch is then "
        "finished: validation, checkpoint); the same command resumes it",
    )


def build_parser():
    """The argument parser of `keras-unet2015`."""
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    parser = argparse.ArgumentParser(
        prog="keras-unet2015",
        description="The original U-Net (Ronneberger et al., 2015) for "
        "Keras 3: train, segment and evaluate microscopy images.",
    )
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="train a small U-Net on synthetic touching cells and write a "
        "prediction figure",
        description="Trains a small but faithful U-Net (valid convolutions, "
        "weighted loss with border weights, elastic deformation, SGD with "
        "momentum 0.99, one tile per batch) on synthetic touching cells, "
        "evaluates it on held-out images and writes a prediction figure. A "
        "few minutes on a CPU.",
    )
    demo.add_argument(
        "--output-dir",
        default="unet2015-demo",
        help="where the figure and the model go (unet2015-demo)",
    )
    demo.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps (default 600; 4 with --quick)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: tiny data, 4 steps, seconds",
    )

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a U-Net on a folder of images and labels",
        description="Trains a U-Net with the paper's recipe on paired "
        "image/label folders. Running the same command again resumes an "
        "interrupted run.",
    )
    data = train.add_argument_group("data")
    data.add_argument("--images", required=True, help="folder of images")
    data.add_argument("--labels", required=True, help="folder of label images")
    data.add_argument(
        "--label-mode",
        choices=("binary", "instances"),
        default="binary",
        help="'binary': two-valued masks, the larger value the cells (e.g. "
        "ISBI 2012: 0 = membrane, 255 = cell); the cells are the "
        "connected components. 'instances': one integer id per object, 0 = "
        "background; touching objects are cut apart. Label images that do "
        "not fit the mode are rejected with the values found (binary)",
    )
    data.add_argument(
        "--validation-indices",
        default=None,
        help="held-out samples in file order, e.g. '25-29'",
    )
    data.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="held-out share, taken from the end (0.2)",
    )
    data.add_argument(
        "--no-validation", action="store_true", help="train on everything"
    )
    data.add_argument(
        "--validation-freq",
        type=int,
        default=1,
        help="compute the challenge measures every N epochs (1)",
    )
    train.add_argument(
        "--output-dir", required=True, help="run folder (checkpoints, logs)"
    )
    train.add_argument(
        "--tensorboard", action="store_true", help="write TensorBoard logs"
    )
    train.add_argument(
        "--restart",
        action="store_true",
        help="delete the run in --output-dir (its model, checkpoints, log "
        "and backup) and train a new one from scratch",
    )
    _add_model_options(train, depth=4, filters=64, input_size=572)
    _add_training_options(train, epochs=10, steps=100, learning_rate=None)

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="segment images of any size with a trained model",
        description="Segments PNG/TIFF images of any size with the "
        "overlap-tile strategy and writes, per image, the foreground "
        "probability (float32 TIFF) and a label mask (PNG). Nothing is "
        "overwritten without --overwrite; inputs whose names collide, an "
        "--output-dir that holds inputs, and a model with NaN or infinite "
        "weights are refused before anything is written.",
    )
    predict.add_argument(
        "inputs", nargs="+", help="image files or folders of images"
    )
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a .keras model")
    source.add_argument(
        "--preset",
        help="a trained model by name (see UNet2015.list_presets(), e.g. "
        "unet2015_isbi2012_16f)",
    )
    predict.add_argument("--output-dir", required=True)
    predict.add_argument(
        "--tile-size", type=int, default=None, help="input tile size"
    )
    predict.add_argument(
        "--tta",
        choices=("none", "flips", "dihedral"),
        default="none",
        help="test-time augmentation (none)",
    )
    predict.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="foreground probability threshold of the mask (0.5)",
    )
    predict.add_argument("--foreground-class", type=int, default=1, help="(1)")
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files of an earlier run in --output-dir "
        "(without it, predict refuses to overwrite any file)",
    )

    reproduce = commands.add_parser(
        "reproduce",
        parents=[common],
        help="reproduce the paper's ISBI 2012 experiment (resumable)",
        description="Trains on ISBI 2012 slices 0-24 with the recipe of "
        "keras_unet2015.reproduce.ISBI2012_RECIPE, validates on slices "
        "25-29, writes the learning curve (CSV and PNG) and scores the best "
        "checkpoint with and without test-time augmentation "
        "(results.json). Running the same command again resumes the run.",
    )
    reproduce.add_argument(
        "experiment", choices=("isbi2012",), help="the experiment to run"
    )
    reproduce.add_argument(
        "--output-dir", required=True, help="run folder (resumable)"
    )
    reproduce.add_argument(
        "--data",
        default=None,
        help="ISBI 2012 folder (default: datasets.isbi2012.default_path())",
    )
    reproduce.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="minutes of training in this call; the run stays resumable",
    )
    reproduce.add_argument(
        "--restart",
        action="store_true",
        help="delete the run in --output-dir and start over",
    )
    reproduce.add_argument(
        "--no-evaluate",
        action="store_true",
        help="skip the final evaluation (results.json, learning_curve.png)",
    )
    from keras_unet2015.reproduce import ISBI2012_RECIPE

    recipe = reproduce.add_argument_group(
        "recipe (defaults: keras_unet2015.reproduce.ISBI2012_RECIPE)"
    )
    for name, kind, choices in (
        ("filters", int, None),
        ("depth", int, None),
        ("dropout", float, None),
        ("input-size", int, None),
        ("optimizer", str, ("sgd", "adam")),
        ("learning-rate", float, None),
        ("momentum", float, None),
        ("schedule", str, ("constant", "cosine", "exponential")),
        ("warmup-steps", int, None),
        ("w0", float, None),
        ("sigma", float, None),
        ("class-weights", str, ("balanced", "none")),
        ("augmentation", str, ("paper", "elastic", "none")),
        ("epochs", int, None),
        ("steps-per-epoch", int, None),
        ("validation-freq", int, None),
    ):
        default = ISBI2012_RECIPE[name.replace("-", "_")]
        recipe.add_argument(
            f"--{name}",
            type=kind,
            choices=choices,
            default=None,
            help=f"({default})",
        )

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="ISBI 2012 pixel and Rand error and IoU on a labelled folder",
        description="Scores probability maps (from `predict`, or predicted "
        "here with --model and --images) against binary labels: ISBI 2012 "
        "pixel error and Rand error (1 - maximal F-scores over thresholds "
        "0.0, 0.1, ..., 1.0) and the foreground IoU at 0.5.",
    )
    evaluate.add_argument(
        "--labels", required=True, help="folder of binary label images"
    )
    evaluate.add_argument(
        "--predictions",
        default=None,
        help="folder of *_probabilities.tif files written by predict",
    )
    evaluate.add_argument("--model", default=None, help="a .keras model")
    evaluate.add_argument(
        "--preset", default=None, help="a trained model by name"
    )
    evaluate.add_argument(
        "--images", default=None, help="images to predict with --model"
    )
    evaluate.add_argument(
        "--indices",
        default=None,
        help="score only these samples in file order, e.g. '25-29'",
    )
    evaluate.add_argument("--tile-size", type=int, default=None)
    evaluate.add_argument(
        "--tta", choices=("none", "flips", "dihedral"), default="none"
    )
    evaluate.add_argument("--foreground-class", type=int, default=1)
    evaluate.add_argument(
        "--json", default=None, help="also write the results to this file"
    )
    export = commands.add_parser(
        "export",
        parents=[common],
        help="write a model as ONNX, TF SavedModel, LiteRT or a BioImage.IO "
        "package",
        description="Writes a trained model for serving runtimes and the "
        "tools biologists use: ONNX (onnxruntime), a TensorFlow SavedModel, "
        "LiteRT (.tflite), or a BioImage.IO model package (.zip) for Fiji "
        "(deepImageJ), ilastik, QuPath and bioimageio.core. The graph is "
        "float32 and takes any valid tile size unless --tile-size fixes "
        "one. Formats Keras cannot write on the current backend are "
        "converted on the TensorFlow backend in a subprocess.",
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a .keras model")
    source.add_argument("--preset", help="a trained model by name")
    export.add_argument(
        "--format",
        required=True,
        choices=("onnx", "tf_saved_model", "litert", "bioimageio"),
    )
    export.add_argument(
        "--output",
        required=True,
        help="file to write (.onnx, .tflite, .zip) or folder (SavedModel)",
    )
    export.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="fix the input tile size (default: any valid size)",
    )
    export.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="fix the batch size (default: free)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing output"
    )
    bioimageio = export.add_argument_group("bioimageio package")
    bioimageio.add_argument("--name", default=None, help="model name")
    bioimageio.add_argument(
        "--description", default=None, help="what the model segments"
    )
    bioimageio.add_argument(
        "--test-image",
        default=None,
        help="an image file (raw pixel values) for the package's test "
        "tensors and cover (default: synthetic cells)",
    )
    bioimageio.add_argument(
        "--preprocessing",
        choices=("divide_by_255", "min_max", "none"),
        default=None,
        help="how pixel values become the network's input (default: from "
        "the test image's dtype, as training reads files)",
    )
    bioimageio.add_argument(
        "--author",
        action="append",
        default=None,
        help="an author's name (repeatable)",
    )
    bioimageio.add_argument(
        "--license", default="Apache-2.0", help="SPDX id (Apache-2.0)"
    )
    return parser


# === Backend selection ===


def _select_backend(backend, argv):
    """Sets KERAS_BACKEND; returns an exit code if the command ran elsewhere.

    Returns `None` when this process can go on with the wanted backend.
    """
    if backend is None:
        return None
    keras_module = sys.modules.get("keras")
    if keras_module is None:
        os.environ["KERAS_BACKEND"] = backend
        return None
    current = keras_module.backend.backend()
    if current == backend:
        return None
    if os.environ.get(_REEXEC_ENV):
        raise CommandError(
            f"Keras is already imported with the {current!r} backend and "
            f"cannot switch to {backend!r}. Set KERAS_BACKEND={backend} "
            "before starting Python."
        )
    env = dict(os.environ, KERAS_BACKEND=backend, **{_REEXEC_ENV: "1"})
    command = [sys.executable, "-m", "keras_unet2015", *argv]
    return subprocess.run(command, env=env).returncode


def main(argv=None):
    """Runs `keras-unet2015` with `argv` (default: `sys.argv[1:]`).

    Returns:
        The exit code: 0 on success, 1 when training diverged, 2 for a
        usage or data error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend is None and _default_backend.chosen_backend:
        print(
            f"Using the {_default_backend.chosen_backend} backend: "
            "KERAS_BACKEND is not set and TensorFlow, the Keras default, "
            "is not installed. Set KERAS_BACKEND or pass --backend to "
            "choose.",
            file=sys.stderr,
        )
    from keras_unet2015.callbacks.run_state import TrainingDivergedError

    try:
        code = _select_backend(args.backend, argv)
        if code is not None:
            return code
        return COMMANDS[args.command](args)
    except TrainingDivergedError as error:
        if os.environ.get("KERAS_UNET2015_DEBUG"):
            raise
        print(f"keras-unet2015 {args.command}: error: {error}", file=sys.stderr)
        return 1
    except (
        CommandError,
        FileNotFoundError,
        NotADirectoryError,
        ValueError,
        ImportError,
    ) as error:
        # Data and usage errors carry messages meant for the user; set
        # KERAS_UNET2015_DEBUG=1 to see the traceback instead.
        if os.environ.get("KERAS_UNET2015_DEBUG"):
            raise
        print(f"keras-unet2015 {args.command}: error: {error}", file=sys.stderr)
        return 2


def _say(args, message):
    if args.verbose:
        print(message, flush=True)


def _check_positive(name, value):
    if value is not None and value < 1:
        raise CommandError(f"--{name} must be at least 1, got {value}.")


# === Shared pieces (Keras imported from here on) ===


def _banner(args):
    import keras

    _say(
        args,
        f"Keras {keras.__version__}, backend {keras.backend.backend()}",
    )


def _check_training_args(args):
    """Fails fast, before data loading and model building."""
    for name in ("epochs", "steps_per_epoch", "batch_size", "workers"):
        _check_positive(name.replace("_", "-"), getattr(args, name))
    _check_positive("depth", args.depth)
    _check_positive("filters", args.filters)
    if not 0 <= args.dropout < 1:
        raise CommandError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.time_limit is not None and not args.time_limit > 0:
        raise CommandError(
            f"--time-limit must be positive, got {args.time_limit}"
        )
    if not 0 <= args.momentum < 1:
        raise CommandError(f"--momentum must be in [0, 1), got {args.momentum}")
    if args.learning_rate is not None and not args.learning_rate > 0:
        raise CommandError(
            f"--learning-rate must be positive, got {args.learning_rate}"
        )
    # Checked here so that the message names the option: the layers and
    # weight maps call all three `sigma`, which would point at --sigma.
    elastic_sigma = getattr(args, "elastic_sigma", None)
    if elastic_sigma is not None and not 0 <= elastic_sigma < float("inf"):
        raise CommandError(
            "--elastic-sigma (the std of the elastic displacements, px) "
            f"must be a non-negative number, got {elastic_sigma}"
        )
    sigma = getattr(args, "sigma", None)
    if sigma is not None and not 0 < sigma < float("inf"):
        raise CommandError(
            "--sigma (the width of the border weight, px; the paper's 5) "
            f"must be positive, got {sigma}"
        )
    w0 = getattr(args, "w0", None)
    if w0 is not None and not 0 <= w0 < float("inf"):
        raise CommandError(
            "--w0 (the height of the border weight; the paper's 10) must "
            f"be non-negative, got {w0}"
        )
    from keras_unet2015 import distribution
    from keras_unet2015 import sizes

    try:
        distribution.check_strategy(getattr(args, "distribute", "none"))
    except ValueError as error:
        raise CommandError(f"--distribute: {error}") from None

    try:
        sizes.check_input_size(
            args.input_size, args.depth, args.padding, name="--input-size"
        )
    except ValueError as error:
        raise CommandError(str(error)) from None


def _build_model(args, input_channels=1):
    import keras

    from keras_unet2015.models.unet2015 import UNet2015

    _check_training_args(args)
    dtype = {
        "none": None,
        "float16": "mixed_float16",
        "bfloat16": "mixed_bfloat16",
    }[args.mixed_precision]
    keras.utils.set_random_seed(args.seed)
    return UNet2015(
        num_classes=2,
        input_channels=input_channels,
        depth=args.depth,
        filters=args.filters,
        dropout_rate=args.dropout,
        padding=args.padding,
        dtype=dtype,
    )


def _augmentation(args):
    from keras_unet2015.training import default_augmentation

    return default_augmentation(args.augmentation, args.elastic_sigma)


def _train(args, model, images, targets, weights, val_images, val_labels):
    from keras_unet2015 import training
    from keras_unet2015.datasets import TrainingSampleStream

    output_size = model.output_size(args.input_size)
    stream = TrainingSampleStream(
        images,
        targets,
        weights,
        input_size=args.input_size,
        output_size=output_size,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        augmentation=_augmentation(args),
        seed=args.seed,
        data_format=model.data_format,
        workers=args.workers,
    )
    time_limit = getattr(args, "time_limit", None)
    learning_rate = args.learning_rate
    if learning_rate is None:
        learning_rate = training.DEFAULT_LEARNING_RATE
    training.compile_model(
        model,
        optimizer=getattr(args, "optimizer", "sgd"),
        learning_rate=learning_rate,
        momentum=args.momentum,
        schedule=args.lr_schedule,
        total_steps=args.epochs * args.steps_per_epoch,
        warmup_steps=args.warmup_steps,
    )
    return training.fit(
        model,
        stream,
        epochs=args.epochs,
        output_dir=args.output_dir,
        validation_images=val_images,
        validation_labels=val_labels,
        validation_freq=getattr(args, "validation_freq", 1),
        tensorboard=getattr(args, "tensorboard", False),
        time_limit=None if time_limit is None else 60.0 * time_limit,
        verbose=args.verbose,
        restart=getattr(args, "fresh_run", False),
    )


# === demo ===


def _run_demo(args):
    import numpy as np

    from keras_unet2015 import metrics
    from keras_unet2015 import training
    from keras_unet2015.datasets import make_touching_cells
    from keras_unet2015.inference.overlap_tile_predictor import (
        OverlapTilePredictor,
    )

    _banner(args)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        num_images, image_size, steps, per_epoch = 3, 96, 4, 2
        args.depth, args.filters, args.input_size = 2, 8, 132
    else:
        num_images, image_size, steps, per_epoch = 10, 256, 600, 100
        args.depth, args.filters, args.input_size = 3, 16, 188
    if args.steps is not None:
        _check_positive("steps", args.steps)
        steps = args.steps
    per_epoch = min(per_epoch, steps)
    args.epochs = max(1, steps // per_epoch)
    args.steps_per_epoch = per_epoch
    args.dropout, args.padding, args.mixed_precision = 0.5, "valid", "none"
    args.time_limit = None
    args.batch_size, args.momentum, args.workers = 1, 0.99, 1
    args.learning_rate, args.lr_schedule, args.warmup_steps = (
        None,
        "constant",
        0,
    )
    args.augmentation, args.elastic_sigma = "elastic", 10.0
    args.tensorboard = False
    # Each demo is a new run: one that already ran in this folder (its
    # run.json says so) is replaced; a folder without one is left alone.
    from keras_unet2015 import run_folder

    args.fresh_run = run_folder.RunRecord(output_dir).status is not None

    _say(
        args,
        f"Synthetic touching cells: {num_images} images of {image_size} px "
        f"(the last {max(1, num_images // 5)} held out). U-Net depth "
        f"{args.depth}, {args.filters} filters, valid convolutions, tiles "
        f"{args.input_size} -> {args.input_size - (12 * 2**args.depth - 8)} "
        f"px, {args.epochs * args.steps_per_epoch} SGD steps (momentum "
        "0.99, one tile per batch), border-weighted loss (w0=10, sigma=5), "
        "elastic deformation (3x3 grid, sigma 10 px).",
    )
    images, labels, instances = make_touching_cells(
        num_images, image_size, seed=args.seed
    )
    held_out = max(1, num_images // 5)
    train_images, val_images = images[:-held_out], images[-held_out:]
    val_labels = labels[-held_out:]
    targets, weights = training.prepare_targets(
        list(instances[:-held_out]), label_mode="instances"
    )
    model = _build_model(args)
    start = time.perf_counter()
    # Scored once, after training, below (no validation during training).
    _train(args, model, train_images, targets, weights, None, None)
    seconds = time.perf_counter() - start

    predictor = OverlapTilePredictor(model, verbose=0)
    probabilities = predictor.predict(val_images[0])[..., 1]
    stack = np.stack([predictor.predict(im)[..., 1] for im in val_images])
    scores = metrics.evaluate(stack, val_labels)
    predicted = metrics.segment(probabilities, 0.5)
    seg = metrics.seg_score(instances[-held_out], predicted)
    figure = output_dir / "demo_prediction.png"
    _, val_weights = training.prepare_targets(
        [instances[-held_out]], "instances"
    )
    _save_figure(
        figure,
        val_images[0],
        val_labels[0],
        val_weights[0],
        probabilities,
        predicted,
    )
    summary = {
        "training_seconds": round(seconds, 1),
        "steps": args.epochs * args.steps_per_epoch,
        "held_out_images": held_out,
        **{k: round(float(v), 4) for k, v in scores.items()},
        "seg": round(float(seg), 4),
    }
    (output_dir / "demo_metrics.json").write_text(json.dumps(summary, indent=2))
    _say(
        args,
        f"Trained in {seconds:.0f} s. Held-out synthetic images: pixel error "
        f"{scores['pixel_error']:.4f}, Rand error {scores['rand_error']:.4f}, "
        f"IoU {scores['jaccard']:.4f}, SEG {seg:.4f}.\n"
        f"Figure: {figure}\nModel: {output_dir / 'model.keras'}",
    )
    return 0


def _save_figure(path, image, labels, weights, probabilities, segments):
    """Input | labels | weight map | probability | segmentation, as a PNG."""
    import numpy as np
    from PIL import Image
    from PIL import ImageDraw

    def gray(array, low=None, high=None):
        array = np.asarray(array, np.float32)
        low = array.min() if low is None else low
        high = array.max() if high is None else high
        scaled = (array - low) / max(high - low, 1e-12)
        return np.repeat((np.clip(scaled, 0, 1) * 255)[..., None], 3, -1)

    rng = np.random.default_rng(0)
    colors = rng.integers(60, 256, (int(segments.max()) + 1, 3))
    colors[0] = 0
    overlay = 0.55 * gray(image, 0, 1) + 0.45 * colors[segments]
    overlay[segments == 0] = gray(image, 0, 1)[segments == 0] * 0.6
    panels = [
        ("input", gray(image, 0, 1)),
        ("ground truth", gray(labels, 0, 1)),
        ("weight map", gray(weights)),
        ("P(cell)", gray(probabilities, 0, 1)),
        ("segmentation", overlay),
    ]
    height, width = np.shape(image)[:2]
    title = 18
    canvas = Image.new(
        "RGB", (len(panels) * (width + 4), height + title), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for i, (name, panel) in enumerate(panels):
        x = i * (width + 4)
        canvas.paste(Image.fromarray(panel.astype(np.uint8)), (x, title))
        draw.text((x + 4, 3), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


# === train ===


# `train` options that do not change what a run computes: a folder resumed
# with other values of these is the same run.
_NOT_RUN_SETTINGS = frozenset(
    (
        "command",
        "backend",
        "verbose",
        "output_dir",
        "restart",
        "time_limit",
        "workers",
        "images",
        "labels",
        "tensorboard",
    )
)


def _run_train(args):
    import shutil

    import keras

    from keras_unet2015 import run_folder
    from keras_unet2015 import training
    from keras_unet2015.datasets import load_paired_folders
    from keras_unet2015.datasets import train_validation_split
    from keras_unet2015.distribution import check_batch_size
    from keras_unet2015.distribution import distribution_scope
    from keras_unet2015.distribution import num_replicas

    _banner(args)
    _check_training_args(args)
    _check_positive("validation-freq", args.validation_freq)
    images, labels, names = load_paired_folders(
        args.images,
        args.labels,
        label_mode=args.label_mode,
        return_names=True,
    )
    if args.no_validation:
        train_ids, val_ids = list(range(len(images))), []
    else:
        if len(images) < 2:
            raise CommandError(
                "A validation split needs at least 2 samples; pass "
                "--no-validation to train on a single image."
            )
        train_ids, val_ids = train_validation_split(
            len(images),
            validation_fraction=args.validation_fraction,
            validation_indices=args.validation_indices,
        )
    output_dir = Path(args.output_dir)
    config = {
        key: value
        for key, value in vars(args).items()
        if isinstance(value, (str, int, float, bool, type(None)))
    }
    config["train_samples"] = [names[i] for i in train_ids]
    config["validation_samples"] = [names[i] for i in val_ids]
    identity = {
        key: value
        for key, value in config.items()
        if key not in _NOT_RUN_SETTINGS
    }
    data = run_folder.fingerprint(images, labels)
    record = run_folder.RunRecord(output_dir)
    if args.restart:
        training.clear_run_folder(output_dir)
    else:
        status = record.check(identity, data)
        if status == "finished":
            # A kill between recording the end and deleting the backup
            # leaves it behind; it is of no use any more.
            shutil.rmtree(output_dir / training.BACKUP_DIR_NAME, True)
            _say(
                args,
                f"{output_dir} holds this run, finished: nothing to do. "
                f"Model: {output_dir / training.CHECKPOINT_NAME}. Pass "
                "--restart to train it again from scratch.",
            )
            return 0
        if status == "diverged":
            raise CommandError(
                f"The run in {output_dir} diverged "
                f"({record.read().get('divergence')}); resuming it would "
                "diverge again. Pass --restart (with a lower "
                "--learning-rate) to train a new run, or use another "
                "--output-dir."
            )
        if status is not None:
            _say(args, f"Resuming the run in {output_dir}.")
    output_dir.mkdir(parents=True, exist_ok=True)
    record.start(identity, data, backend=keras.backend.backend())
    _say(
        args,
        f"{len(images)} samples: training on {len(train_ids)}, validating "
        f"on {len(val_ids)} ({', '.join(names[i] for i in val_ids) or '-'})."
        f" Computing weight maps (w0={args.w0}, sigma={args.sigma})...",
    )
    run_folder.write_json(output_dir / "config.json", config)

    targets, weights = training.prepare_targets(
        [labels[i] for i in train_ids],
        label_mode=args.label_mode,
        w0=args.w0,
        sigma=args.sigma,
        class_weights=None if args.class_weights == "none" else "balanced",
        verbose=args.verbose == 1,
    )
    channels = {img.shape[-1] if img.ndim == 3 else 1 for img in images}
    if len(channels) != 1:
        raise CommandError(
            f"The images have different channel counts {sorted(channels)}."
        )
    val_images = [images[i] for i in val_ids] or None
    if args.label_mode == "instances":
        # Touching objects must stay apart in the reference segmentation.
        from keras_unet2015.weight_maps import separate_touching_cells

        val_labels = [separate_touching_cells(labels[i]) > 0 for i in val_ids]
    else:
        val_labels = [labels[i] > 0 for i in val_ids]
    val_labels = val_labels or None
    start = time.perf_counter()
    # The weights must be created, compiled and trained in the scope.
    with distribution_scope(args.distribute, tpu=args.tpu) as strategy:
        replicas = num_replicas(strategy)
        check_batch_size(args.batch_size, replicas)
        if strategy is not None:
            _say(
                args,
                f"--distribute {args.distribute}: {replicas} replicas, "
                f"{args.batch_size // replicas} tiles each per step.",
            )
        model = _build_model(args, input_channels=channels.pop())
        history = _train(
            args,
            model,
            [images[i] for i in train_ids],
            targets,
            weights,
            val_images,
            val_labels,
        )
    seconds = time.perf_counter() - start
    final = {
        key: values[-1]
        for key, values in history.history.items()
        if values and key.startswith(("val_", "loss"))
    }
    _say(
        args,
        f"Done in {seconds:.0f} s. Last epoch: "
        + ", ".join(f"{k}={v:.4f}" for k, v in sorted(final.items()))
        + f"\nModel: {output_dir / training.CHECKPOINT_NAME}",
    )
    return 0


# === predict ===


def _expand_inputs(inputs):
    """The image files of `inputs` (files and folders), each once."""
    from keras_unet2015.datasets import io

    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = io.list_images(path)
            if not found:
                raise CommandError(f"No image files in {path}.")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"Input not found: {path}")
    # A file named twice (a folder and a file in it) is predicted once.
    unique = {}
    for path in files:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _output_names(stem):
    """The files `predict` may write for an input named `stem`."""
    # The mask is a PNG for one page and a TIFF for a stack: both count.
    return (
        f"{stem}_probabilities.tif",
        f"{stem}_mask.png",
        f"{stem}_mask.tif",
    )


def _check_outputs(files, output_dir, overwrite):
    """Refuses outputs that collide, overwrite, or land among the inputs.

    Runs before the model is loaded, so that nothing is written when a
    check fails.
    """
    output = output_dir.resolve()
    inside = [path for path in files if path.parent.resolve() == output]
    if inside:
        raise CommandError(
            f"--output-dir {output_dir} holds input images "
            f"({_some(p.name for p in inside)}): predict never writes into "
            "a folder it reads, or a later run would segment its own "
            "*_probabilities.tif and *_mask.png files. Choose another "
            f"folder, e.g. --output-dir {output_dir / 'predictions'}."
        )
    by_stem = {}
    for path in files:
        # casefold: on macOS and Windows `A.png` and `a.png` give one file.
        by_stem.setdefault(path.stem.casefold(), []).append(path)
    collisions = [paths for paths in by_stem.values() if len(paths) > 1]
    if collisions:
        listed = _some(
            (
                f"{paths[0].stem}: {', '.join(map(str, paths))}"
                for paths in collisions
            ),
            separator="; ",
        )
        raise CommandError(
            f"{sum(map(len, collisions))} input files share a name and "
            f"would write the same output files ({listed}). Rename them, "
            "or predict each folder into its own --output-dir."
        )
    if overwrite:
        return
    existing = [
        name
        for path in files
        for name in _output_names(path.stem)
        if (output_dir / name).exists()
    ]
    if existing:
        raise CommandError(
            f"{len(existing)} output files exist already in {output_dir} "
            f"({_some(existing)}). Pass --overwrite to replace them, or "
            "choose another --output-dir."
        )


def _some(names, limit=5, separator=", "):
    """`a, b, c` or `a, b, c and 4 more`."""
    names = list(names)
    text = separator.join(names[:limit])
    if len(names) > limit:
        text += f" and {len(names) - limit} more"
    return text


def _load_model(path, preset=None):
    import keras

    if preset is not None:
        from keras_unet2015 import presets

        try:
            model = presets.load_preset(preset)
        except ValueError as error:
            raise CommandError(f"--preset: {error}") from None
        _check_finite_weights(model, f"--preset {preset}")
        return model
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise CommandError(_load_error_message(path, error)) from error
    _check_finite_weights(model, path)
    return model


def _load_error_message(path, error):
    """Why a model file did not load, in the user's terms."""
    import zipfile

    if path.suffix != ".keras":
        return f"Could not load the model {path}: {error}"
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(8)
    if head.startswith(b"\x89HDF"):
        return (
            f"{path} is an HDF5 file (a legacy .h5 model or a weights "
            "file), not a .keras file. Save the model with "
            "`model.save('model.keras')`."
        )
    if not zipfile.is_zipfile(path):
        return (
            f"{path} is not a valid, complete .keras file (a zip archive; "
            f"this file of {size} bytes has no readable archive "
            "directory): it is truncated or corrupt, e.g. by an "
            "interrupted copy or save. Copy it again, or use another "
            "checkpoint of the run (best.keras, model.keras)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as zip_error:
        damaged = str(zip_error)
        names = set()
    if damaged is not None:
        return (
            f"{path} is a corrupt .keras file ({damaged} does not read "
            "back intact). Copy it again, or use another checkpoint of the "
            "run."
        )
    missing = [n for n in ("config.json", "model.weights.h5") if n not in names]
    if missing:
        return (
            f"{path} is an incomplete .keras file: it lacks "
            f"{' and '.join(missing)}."
        )
    return f"Could not load the model {path}: {error}"


def _check_finite_weights(model, source):
    """Refuses a model whose weights hold NaN or infinity."""
    import keras
    import numpy as np

    bad = [
        weight.path
        for weight in model.weights
        if not np.isfinite(keras.ops.convert_to_numpy(weight)).all()
    ]
    if bad:
        raise CommandError(
            f"The model {source} has non-finite weights (NaN or infinity) "
            f"in {len(bad)} of {len(model.weights)} weight tensors (e.g. "
            f"{bad[0]}): its training diverged, and every prediction "
            "would be meaningless. Use an earlier checkpoint of the run "
            "(e.g. best.keras), or train again with a lower "
            "--learning-rate."
        )


def _predict_probabilities(predictor, model, image, foreground_class):
    """Foreground probability of a 2D image (any dtype)."""
    import numpy as np

    from keras_unet2015.datasets import to_float_image

    if not 0 <= foreground_class < model.num_classes:
        raise CommandError(
            f"--foreground-class {foreground_class} is not a class of the "
            f"model (0..{model.num_classes - 1})."
        )
    from keras_unet2015.datasets.folders import _to_color_mode

    mode = "grayscale" if model.input_channels == 1 else "rgb"
    x = to_float_image(_to_color_mode(image, mode, "the image"))
    if model.input_channels not in (1, 3):
        raise CommandError(
            f"The model expects {model.input_channels} channels; predict "
            "handles gray-value (1) and RGB (3) models."
        )
    if model.input_channels > 1 and x.ndim == 2:
        raise CommandError(
            f"The model expects {model.input_channels} channels, but an "
            "image is gray-valued."
        )
    if x.ndim == 3 and model.data_format == "channels_first":
        x = np.moveaxis(x, -1, 0)
    result = predictor.predict(x)
    axis = 0 if model.data_format == "channels_first" else -1
    return np.take(result, foreground_class, axis=axis)


def _images_of_file(path):
    from keras_unet2015.datasets.folders import _split_pages
    from keras_unet2015.datasets.io import read_image

    array = read_image(path)
    return _split_pages(array, path)


def _make_predictor(args, model):
    from keras_unet2015.inference.overlap_tile_predictor import (
        OverlapTilePredictor,
    )

    return OverlapTilePredictor(
        model,
        tile_size=args.tile_size,
        tta=None if args.tta == "none" else args.tta,
        verbose=0,
    )


def _run_predict(args):
    import keras
    import numpy as np

    from keras_unet2015.datasets import io

    _banner(args)
    if not 0.0 <= args.threshold <= 1.0:
        raise CommandError(
            f"--threshold must be in [0, 1], got {args.threshold}"
        )
    files = _expand_inputs(args.inputs)
    output_dir = Path(args.output_dir)
    _check_outputs(files, output_dir, args.overwrite)
    model = _load_model(args.model, args.preset)
    predictor = _make_predictor(args, model)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    progress = keras.utils.Progbar(len(files)) if args.verbose == 1 else None
    for path in files:
        pages = _images_of_file(path)
        probabilities = np.stack(
            [
                _predict_probabilities(
                    predictor, model, page, args.foreground_class
                )
                for page in pages
            ]
        ).astype(np.float32)
        masks = (probabilities > args.threshold).astype(np.uint8) * 255
        if len(pages) == 1:
            probabilities, masks = probabilities[0], masks[0]
        io.write_image(
            output_dir / f"{path.stem}_probabilities.tif", probabilities
        )
        suffix = ".png" if masks.ndim == 2 else ".tif"
        io.write_image(output_dir / f"{path.stem}_mask{suffix}", masks)
        written += 2
        if progress is not None:
            progress.add(1)
    _say(args, f"Wrote {written} files to {output_dir}")
    return 0


# === evaluate ===


def _run_evaluate(args):
    import keras
    import numpy as np

    from keras_unet2015 import metrics
    from keras_unet2015.datasets import folders
    from keras_unet2015.datasets import io
    from keras_unet2015.datasets import parse_indices

    _banner(args)
    sources = [args.predictions, args.model, args.preset]
    if sum(source is not None for source in sources) != 1:
        raise CommandError(
            "Pass either --predictions (probability maps from predict), or "
            "--model or --preset together with --images."
        )
    if args.predictions is None and args.images is None:
        raise CommandError("--model and --preset need --images to predict on.")
    label_paths = io.list_images(args.labels)
    if not label_paths:
        raise CommandError(f"No label files in {args.labels}.")
    if args.predictions is not None:
        prediction_dir = Path(args.predictions)
        if not prediction_dir.is_dir():
            raise FileNotFoundError(f"Folder not found: {prediction_dir}")
        pairs = []
        missing = []
        for label_path in label_paths:
            candidate = prediction_dir / f"{label_path.stem}_probabilities.tif"
            if candidate.is_file():
                pairs.append((candidate, label_path))
            else:
                missing.append(candidate.name)
        if missing:
            raise CommandError(
                f"{len(missing)} of {len(label_paths)} labels have no "
                f"probability map in {prediction_dir} (e.g. {missing[0]}). "
                "Run `keras-unet2015 predict` on the matching images first."
            )
    else:
        pairs = folders.pair_files(args.images, args.labels)
    if args.indices is not None:
        wanted = parse_indices(args.indices)
        bad = [i for i in wanted if i >= len(pairs)]
        if bad:
            raise CommandError(
                f"--indices {bad} out of range for {len(pairs)} samples."
            )
        pairs = [pairs[i] for i in wanted]
    model = predictor = None
    if args.predictions is None:
        model = _load_model(args.model, args.preset)
        predictor = _make_predictor(args, model)
    probabilities, labels = [], []
    progress = keras.utils.Progbar(len(pairs)) if args.verbose == 1 else None
    for source, label_path in pairs:
        label = folders.standardize_labels(
            io.read_image(label_path), "binary", name=str(label_path)
        )
        if predictor is None:
            probability = io.read_image(source).astype(np.float32)
        else:
            page = _images_of_file(source)
            if len(page) != 1:
                raise CommandError(f"{source}: multi-page images not supported")
            probability = _predict_probabilities(
                predictor, model, page[0], args.foreground_class
            )
        if probability.shape != label.shape:
            raise CommandError(
                f"{source} is {probability.shape} but {label_path} is "
                f"{label.shape}."
            )
        probabilities.append(probability)
        labels.append(label)
        if progress is not None:
            progress.add(1)
    shapes = {p.shape for p in probabilities}
    if len(shapes) == 1:
        results = metrics.evaluate(np.stack(probabilities), np.stack(labels))
    else:
        per_image = [
            metrics.evaluate(p, lab) for p, lab in zip(probabilities, labels)
        ]
        results = {
            key: float(np.mean([r[key] for r in per_image]))
            for key in per_image[0]
        }
    results = {key: float(value) for key, value in results.items()}
    results["num_images"] = len(pairs)
    print(
        f"{len(pairs)} images: pixel error {results['pixel_error']:.4f}, "
        f"Rand error {results['rand_error']:.4f}, "
        f"IoU {results['jaccard']:.4f}"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


# === reproduce ===


def _run_reproduce(args):
    from keras_unet2015 import reproduce

    _banner(args)
    if args.time_limit is not None and not args.time_limit > 0:
        raise CommandError(
            f"--time-limit must be positive, got {args.time_limit}"
        )
    # Every recipe key but the seed is an option (the seed is --seed).
    overrides = {
        name: getattr(args, name)
        for name in reproduce.ISBI2012_RECIPE
        if name != "seed" and getattr(args, name) is not None
    }
    overrides["seed"] = args.seed
    result = reproduce.reproduce_isbi2012(
        args.output_dir,
        data_dir=args.data,
        time_limit=None if args.time_limit is None else 60 * args.time_limit,
        restart=args.restart,
        evaluate=not args.no_evaluate,
        verbose=args.verbose,
        **overrides,
    )
    state = "finished" if result["finished"] else "unfinished (resumable)"
    lines = [
        f"Run {state}: {result['steps']} steps, "
        f"{result['wall_time'] / 60:.1f} min of training."
    ]
    for tta in reproduce.TTA_MODES:
        scores = result.get(f"tta_{tta}")
        if scores:
            lines.append(
                f"best.keras (epoch {result['best_epoch']}), slices 25-29, "
                f"tta={tta}: pixel error {scores['pixel_error']:.4f}, "
                f"Rand error {scores['rand_error']:.4f}"
            )
    _say(args, "\n".join(lines))
    return 0


# === export ===


def _preset_package_text(preset):
    """Description and validation text of a preset's BioImage.IO package."""
    from keras_unet2015 import presets

    card = presets.preset_metadata(preset)
    scores = card.get("scores", {})
    lines = []
    for key, label in (("tta_none", "plain"), ("tta_dihedral", "dihedral")):
        if key in scores:
            lines.append(
                f"- {label} prediction: pixel error "
                f"{scores[key]['pixel_error']:.4f}, Rand error "
                f"{scores[key]['rand_error']:.4f}"
            )
    validation = None
    if lines:
        validation = "\n".join(
            [f"Scored on {card.get('scored_on', 'held-out data')}:", ""]
            + lines
            + ["", f"Training data: {card.get('data', 'see the model card')}"]
        )
        if card.get("data_terms"):
            validation += f"\n\nData terms: {card['data_terms']}"
    return card.get("description"), validation


def _run_export(args):
    from keras_unet2015 import export

    _banner(args)
    _check_positive("tile-size", args.tile_size)
    _check_positive("batch-size", args.batch_size)
    model = _load_model(args.model, args.preset)
    options = {}
    if args.format == "bioimageio":
        if args.batch_size is not None:
            raise CommandError(
                "--batch-size does not apply to a bioimageio package: its "
                "batch is always free."
            )
        description, validation = (None, None)
        if args.preset is not None:
            description, validation = _preset_package_text(args.preset)
        options = dict(
            name=args.name,
            description=args.description or description,
            validation=validation,
            test_image=args.test_image,
            preprocessing=args.preprocessing,
            license=args.license,
        )
        if args.author:
            options["authors"] = tuple(args.author)
    else:
        bioimageio_only = [
            flag
            for flag, value in (
                ("--name", args.name),
                ("--description", args.description),
                ("--test-image", args.test_image),
                ("--preprocessing", args.preprocessing),
                ("--author", args.author),
            )
            if value is not None
        ]
        if bioimageio_only:
            raise CommandError(
                f"{', '.join(bioimageio_only)} only apply to --format "
                f"bioimageio, not {args.format}."
            )
        options = dict(batch_size=args.batch_size)
    try:
        path = export.export_model(
            model,
            args.output,
            format=args.format,
            tile_size=args.tile_size,
            overwrite=args.overwrite,
            **options,
        )
    except (ValueError, FileExistsError, ImportError) as error:
        raise CommandError(str(error)) from None
    size = (
        "any valid tile size"
        if args.tile_size is None
        else (f"{args.tile_size} x {args.tile_size} tiles")
    )
    _say(args, f"Wrote {args.format} ({size}) to {path}")
    return 0


COMMANDS = {
    "demo": _run_demo,
    "train": _run_train,
    "reproduce": _run_reproduce,
    "predict": _run_predict,
    "evaluate": _run_evaluate,
    "export": _run_export,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
