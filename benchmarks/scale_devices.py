"""Data-parallel training on 1 vs N virtual JAX devices: tiles/s and weights.

Trains the same U-Net from the same initial weights on the same global
batches, once on one JAX CPU device and once with
`keras.distribution.DataParallel` over `--devices` virtual CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`, read when JAX starts,
so each run is its own subprocess). It prints the training throughput in
tiles per second for each, their ratio, and the largest difference of the
weights after all steps.

This checks that scaling out is *correct* (the data-parallel run follows
the single-device run, step after step, up to the order of floating-point
sums); it is not a speed claim: virtual devices share the machine's CPU
cores, so no speed-up is expected from them. On real GPUs or TPUs the
same script, with `--devices` set to their number, measures the speed-up.

The paper's optimizer is used (SGD, momentum 0.99). The first step
(compilation) is not timed; the weights are compared after every step,
the timed ones and the first.

Usage:

    python benchmarks/scale_devices.py [--devices 8] [--steps 5]
        [--batch-size 8] [--depth 2] [--filters 8] [--input-size 92]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _batches(args, output_size):
    rng = np.random.default_rng(args.seed)
    count = (args.steps + 1) * args.batch_size
    x = rng.random((count, args.input_size, args.input_size, 1), np.float32)
    y = rng.integers(0, 2, (count, output_size, output_size)).astype("int32")
    w = rng.random((count, output_size, output_size), np.float32) + 0.5
    return x, y, w


def _child(args):
    """One run, in a process started with the wanted number of devices."""
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    import keras_unet2015

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            # Wait for the step to finish (JAX dispatches asynchronously).
            float(logs["loss"])
            self.ends.append(time.perf_counter())

    work = Path(args.workdir)
    devices = len(keras.distribution.list_devices())
    if devices != args.child:
        raise SystemExit(f"expected {args.child} devices, JAX sees {devices}")
    name = "data_parallel" if args.child > 1 else "none"
    with keras_unet2015.distribution.distribution_scope(name) as strategy:
        keras.utils.set_random_seed(args.seed)
        model = keras_unet2015.UNet2015(
            depth=args.depth, filters=args.filters, dropout_rate=0.0
        )
        initial = work / "initial.npz"
        if initial.is_file():
            with np.load(initial) as saved:
                model.set_weights(
                    [saved[f"arr_{i}"] for i in range(len(model.weights))]
                )
        else:
            np.savez(initial, *model.get_weights())
        keras_unet2015.training.compile_model(
            model, learning_rate=args.learning_rate
        )
        x, y, w = _batches(args, model.output_size(args.input_size))
        times = StepTimes()
        start = time.perf_counter()
        model.fit(
            x,
            y,
            sample_weight=w,
            batch_size=args.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[times],
        )
    np.savez(work / f"final_{args.child}.npz", *model.get_weights())
    compile_seconds = times.ends[0] - start
    seconds = times.ends[-1] - times.ends[0]
    print(
        json.dumps(
            {
                "devices": devices,
                "replicas": keras_unet2015.distribution.num_replicas(strategy),
                "first_step_seconds": compile_seconds,
                "tiles_per_second": args.steps * args.batch_size / seconds,
            }
        )
    )


def _run(args, devices, workdir):
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}",
    )
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        str(devices),
        "--workdir",
        str(workdir),
        *(
            f"--{key.replace('_', '-')}={value}"
            for key, value in vars(args).items()
            if key not in ("child", "workdir")
        ),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"run on {devices} devices failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="global batch (8)"
    )
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=92)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--child", type=int, default=None, help=argparse.SUPPRESS
    )
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return _child(args)
    if args.devices < 2 or args.batch_size % args.devices:
        parser.error(
            "--devices must be at least 2 and divide --batch-size; got "
            f"--devices {args.devices}, --batch-size {args.batch_size}"
        )
    with tempfile.TemporaryDirectory() as workdir:
        single = _run(args, 1, workdir)
        parallel = _run(args, args.devices, workdir)
        n_weights = len(np.load(Path(workdir) / "final_1.npz").files)
        with (
            np.load(Path(workdir) / "final_1.npz") as a,
            np.load(Path(workdir) / f"final_{args.devices}.npz") as b,
            np.load(Path(workdir) / "initial.npz") as c,
        ):
            keys = [f"arr_{i}" for i in range(n_weights)]
            difference = max(np.abs(a[k] - b[k]).max() for k in keys)
            largest = max(np.abs(a[k]).max() for k in keys)
            moved = max(np.abs(a[k] - c[k]).max() for k in keys)
    print(
        f"UNet2015 depth {args.depth}, {args.filters} filters, "
        f"{args.input_size} px tiles, global batch {args.batch_size}, "
        f"{args.steps + 1} SGD steps (first one not timed), JAX CPU"
    )
    print(
        f"1 device:           {single['tiles_per_second']:8.2f} tiles/s "
        f"(first step {single['first_step_seconds']:.1f} s)"
    )
    print(
        f"{args.devices} virtual devices:  "
        f"{parallel['tiles_per_second']:8.2f} tiles/s "
        f"(first step {parallel['first_step_seconds']:.1f} s, "
        f"{parallel['replicas']} replicas)"
    )
    ratio = parallel["tiles_per_second"] / single["tiles_per_second"]
    print(f"ratio {args.devices} / 1 devices: {ratio:.2f}x")
    print(
        f"max |weight difference| after {args.steps + 1} steps: "
        f"{difference:.3g} (largest weight {largest:.3g}, largest change "
        f"from the initial weights {moved:.3g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
