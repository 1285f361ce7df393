"""Throughput of `ElasticDeform` against SciPy and the `elasticdeform` package.

Every method deforms the same 572x572 image + label mask + weight map with
the paper's augmentation (3x3 grid, sigma = 10 px, bicubic field, mirrored
border; image and weights linear, mask nearest) and the script prints
samples per second, for one sample and for a batch of 8, all measured in
the same run:

- `ElasticDeform` on the current Keras backend: jitted (`jax.jit` over
  `stateless_call`) on JAX, a `tf.function` graph on TensorFlow and eager
  on PyTorch;
- `ElasticDeform` inside a `tf.data` pipeline (`dataset.map(layer)`),
  whatever the backend, when TensorFlow is installed;
- the SciPy reference: `scipy.ndimage.zoom` (order 3) for the field and
  `scipy.ndimage.map_coordinates` (order 1 for image and weights, 0 for the
  mask) for the warps, one sample at a time;
- `elasticdeform.deform_random_grid` (skipped, with a message, when the
  package is absent: `pip install --no-binary elasticdeform elasticdeform`).

With `--train-step`, it also times one training step of the full
`UNet2015` (572x572 input, batch 1) on the same backend, to show whether
augmentation keeps up with training. `--torch-threads 1` runs PyTorch with
one intra-op thread, as in a `DataLoader` worker.

Timings are the best of `--repeats` runs after a warm-up run.

Usage:

    KERAS_BACKEND=jax python benchmarks/bench_augment.py [--train-step]
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

try:  # Import torch before TensorFlow (as the test suite does).
    import torch
except ImportError:
    pass

import keras  # noqa: E402

import keras_unet2015  # noqa: E402

SIZE = 572
GRID = 3
SIGMA = 10.0


def make_inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    images = ndimage.gaussian_filter(
        rng.random((batch, SIZE, SIZE)), sigma=(0, 3, 3)
    ).astype("float32")
    masks = (images > images.mean()).astype("uint8")
    weights = rng.random((batch, SIZE, SIZE)).astype("float32") + 0.5
    return images[..., None], masks[..., None], weights


def timed(function, repeats):
    """Best wall-clock seconds of `function()` over `repeats` runs.

    After a warm-up run (compilation). The best run, as `timeit` advises,
    is the least disturbed by other processes on a shared machine.
    """
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def scipy_reference(images, masks, weights, rng):
    """The paper's deformation with SciPy, one sample at a time.

    The field is the cubic spline of the grid by `ndimage.zoom` (the same
    field as `map_coordinates(order=3, mode="mirror")` on the pixel
    positions, computed faster); the warps are `map_coordinates`.
    """
    rows, cols = np.meshgrid(
        np.arange(SIZE, dtype="float64"),
        np.arange(SIZE, dtype="float64"),
        indexing="ij",
    )
    outputs = []
    for image, mask, weight in zip(images, masks, weights):
        coarse = rng.normal(0.0, SIGMA, (2, GRID, GRID))
        field = [
            ndimage.zoom(
                c, SIZE / GRID, order=3, mode="mirror", grid_mode=False
            )
            for c in coarse
        ]
        coordinates = np.stack([rows + field[0], cols + field[1]])
        outputs.append(
            (
                ndimage.map_coordinates(
                    image[..., 0], coordinates, order=1, mode="mirror"
                ),
                ndimage.map_coordinates(
                    mask[..., 0], coordinates, order=0, mode="mirror"
                ),
                ndimage.map_coordinates(
                    weight, coordinates, order=1, mode="mirror"
                ),
            )
        )
    return outputs


def elasticdeform_reference(elasticdeform, images, masks, weights):
    return [
        elasticdeform.deform_random_grid(
            [image[..., 0], mask[..., 0], weight],
            sigma=SIGMA,
            points=GRID,
            order=[1, 0, 1],
            mode="mirror",
        )
        for image, mask, weight in zip(images, masks, weights)
    ]


def backend_runner(layer, data):
    """A function running `layer` on `data` as the backend runs it best."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        state = [v.value for v in layer.non_trainable_variables]

        @jax.jit
        def step(state, data):
            return layer.stateless_call([], state, data, training=True)

        data = tuple(jax.numpy.asarray(x) for x in data)
        holder = {"state": state}

        def run():
            outputs, holder["state"] = step(holder["state"], data)
            jax.block_until_ready(outputs)

        return run, "jax.jit(stateless_call)"
    if backend == "tensorflow":
        import tensorflow as tf

        data = tuple(tf.convert_to_tensor(x) for x in data)
        function = tf.function(lambda data: layer(data, training=True))

        def run():
            outputs = function(data)
            [x.numpy() for x in outputs]

        return run, "tf.function"
    import torch

    data = tuple(torch.as_tensor(x) for x in data)

    def run():
        with torch.no_grad():
            outputs = layer(data, training=True)
        [x.cpu() for x in outputs]

    return run, "eager"


def tf_data_runner(layer, data, batch):
    import tensorflow as tf

    dataset = (
        tf.data.Dataset.from_tensors(tuple(x[0] for x in data))
        .repeat(batch * 4)
        .batch(batch)
        .map(layer)
    )

    def run():
        for _ in dataset:
            pass

    return run, batch * 4


def train_step_seconds(repeats):
    model = keras_unet2015.UNet2015()
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.99),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.rand(1, SIZE, SIZE, 1).astype("float32")
    y = np.random.randint(0, 2, (1, 388, 388)).astype("int32")
    return timed(lambda: model.train_on_batch(x, y), repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-step", action="store_true")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="PyTorch intra-op threads (as in a DataLoader worker: 1)",
    )
    args = parser.parse_args()
    backend = keras.backend.backend()
    if args.torch_threads is not None and backend == "torch":
        torch.set_num_threads(args.torch_threads)
    print(
        f"keras {keras.__version__}, backend {backend}, "
        f"{SIZE}x{SIZE} image + mask + weight map, grid {GRID}x{GRID}, "
        f"sigma {SIGMA}, best of {args.repeats} runs"
        + (
            f", {torch.get_num_threads()} PyTorch threads"
            if backend == "torch"
            else ""
        )
    )
    rows = []  # (method, batch, seconds per sample)
    references = {}
    for batch in (1, 8):
        data = make_inputs(batch)
        layer = keras_unet2015.ElasticDeform(
            grid_size=GRID, sigma=SIGMA, seed=0
        )
        run, how = backend_runner(layer, data)
        rows.append(
            (
                f"ElasticDeform ({backend}, {how})",
                batch,
                timed(run, args.repeats) / batch,
            )
        )
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            print("tf.data: skipped, TensorFlow is not installed")
        else:
            run, samples = tf_data_runner(
                keras_unet2015.ElasticDeform(seed=0), data, batch
            )
            rows.append(
                (
                    f"ElasticDeform (tf.data on {backend})",
                    batch,
                    timed(run, args.repeats) / samples,
                )
            )
        rng = np.random.default_rng(0)
        seconds = (
            timed(lambda: scipy_reference(*data, rng), args.repeats) / batch
        )
        rows.append(("scipy.ndimage (zoom + map_coordinates)", batch, seconds))
        references[("scipy", batch)] = seconds
        try:
            import elasticdeform
        except ImportError:
            print(
                "elasticdeform: skipped, the package is not installed "
                "(pip install --no-binary elasticdeform elasticdeform)"
            )
        else:
            seconds = (
                timed(
                    lambda: elasticdeform_reference(elasticdeform, *data),
                    args.repeats,
                )
                / batch
            )
            rows.append(("elasticdeform.deform_random_grid", batch, seconds))
            references[("elasticdeform", batch)] = seconds

    print()
    print(
        f"{'method':48s} {'batch':>5s} {'ms/sample':>10s} "
        f"{'samples/s':>10s} {'vs scipy':>9s} {'vs elasticdeform':>17s}"
    )
    for method, batch, seconds in rows:
        ratios = []
        for name in ("scipy", "elasticdeform"):
            reference = references.get((name, batch))
            ratios.append(f"{reference / seconds:.1f}x" if reference else "-")
        print(
            f"{method:48s} {batch:5d} {seconds * 1e3:10.2f} "
            f"{1.0 / seconds:10.1f} {ratios[0]:>9s} {ratios[1]:>17s}"
        )
    if args.train_step:
        seconds = train_step_seconds(max(1, min(args.repeats, 3)))
        fastest_ours = min(
            s for m, b, s in rows if m.startswith("ElasticDeform")
        )
        slowest_ours = max(
            s for m, b, s in rows if m.startswith("ElasticDeform")
        )
        print()
        print(
            f"UNet2015 training step (572x572, batch 1, {backend}): "
            f"{seconds * 1e3:.0f} ms = {1.0 / seconds:.2f} samples/s; "
            f"augmentation is {seconds / slowest_ours:.0f}x to "
            f"{seconds / fastest_ours:.0f}x faster than training"
        )


if __name__ == "__main__":
    main()
