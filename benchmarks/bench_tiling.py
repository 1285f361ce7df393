"""Time and peak memory of `OverlapTilePredictor` on large images.

For every backend and image size, one fresh Python process (so that peak
memory is per run) does the following:

1. Builds a `UNet2015` (the paper's network by default, 31 M parameters)
   and writes a random image to a `numpy.memmap` in a temporary folder; the
   result is written to a second memmap through `out=`.
2. Reference: `model.predict_on_batch` on a tile of the same size, as many
   times as the predictor will run tiles (after one warm-up call, which
   also compiles the model for JAX and TensorFlow), once before and once
   after the prediction; `forward` is the mean of the two loops.
3. `OverlapTilePredictor(model, tile_size, batch_size=1).predict(image,
   out=out)`, timed. The model's `predict_on_batch` is wrapped to also
   time the forward passes inside the prediction.

Both memory probes (`tracemalloc` and the sampling thread) run during the
reference loops as well as during the prediction, so that their cost, a few
percent of a core, burdens both sides of the time comparison equally.

Reported per run:

- `predict`: wall time of the tiled prediction, `forward`: wall time of
  the reference forward passes, and two tiling overheads (mirroring,
  slicing, softmax, stitching, writing): `vs ref` = predict / forward - 1,
  against the reference loop (sensitive to load changes between the two
  loops on a shared machine), and `in run` = time outside the model's
  forward passes / time inside them, measured within the same prediction.
- `numpy MB`: `tracemalloc` peak during the prediction over the traced
  memory before it, i.e. the arrays the predictor allocates (tile batches,
  probabilities, index plans); framework tensors are not traced.
- `anon MB`: peak anonymous resident memory of the process during the
  prediction (`RssAnon` from `/proc/self/status`, sampled every 5 ms by a
  thread), and `+anon` its increase over the value before the prediction.
  It counts everything the process allocates (model weights, framework
  buffers, tiles) but not the pages of the memory-mapped image and output
  files, which are page cache and can be dropped by the kernel at any
  time.
- `maxrss`: `resource.getrusage(...).ru_maxrss` at the end of the run (MB),
  the peak resident set including mapped file pages.

The full model needs seconds per 572x572 tile on a CPU, and an 8192x8192
image has 484 tiles: by default the 8192 run (and a 2048 run to compare
memory against) uses a narrower model (`--small-filters`, labelled
`filters=8` in the table); it measures memory and overhead, and its
forward passes are much cheaper, so its overhead ratio is an upper bound
of the full model's.

Usage:

    python benchmarks/bench_tiling.py                    # everything
    python benchmarks/bench_tiling.py --quick            # 512 full + small
    python benchmarks/bench_tiling.py --backends jax --small-sizes ""
    python benchmarks/bench_tiling.py --full-sizes 512,2048,8192  # slow
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

BACKENDS = ("jax", "tensorflow", "torch")


def rss_anon_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakSampler(threading.Thread):
    """Samples `RssAnon` every `interval` seconds until stopped."""

    def __init__(self, interval=0.005):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = rss_anon_bytes()
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_anon_bytes())
            time.sleep(self.interval)

    def reset(self):
        self.peak = rss_anon_bytes()

    def peak_now(self):
        return max(self.peak, rss_anon_bytes())

    def stop(self):
        self._stop_event.set()
        self.join()


def run_one(size, filters, tile, folder):
    """One measurement; runs in a child process with KERAS_BACKEND set."""
    import keras
    import numpy as np

    import keras_unet2015

    keras.utils.set_random_seed(0)
    model = keras_unet2015.UNet2015(num_classes=2, filters=filters)
    rng = np.random.default_rng(0)
    image = np.memmap(
        os.path.join(folder, "image.dat"), "float32", "w+", shape=(size, size)
    )
    for start in range(0, size, 512):
        stop = min(start + 512, size)
        image[start:stop] = rng.random((stop - start, size), "float32")
    image.flush()
    del image
    image = np.memmap(
        os.path.join(folder, "image.dat"), "float32", "r", shape=(size, size)
    )
    out = np.memmap(
        os.path.join(folder, "out.dat"), "float32", "w+", shape=(size, size, 2)
    )
    predictor = keras_unet2015.OverlapTilePredictor(
        model, tile_size=tile, batch_size=1, verbose=0
    )
    grid = predictor.tile_grid(size, size)
    num_tiles = len(grid.rows) * len(grid.cols)
    tile_input = rng.random((1, *grid.tile_shape, 1), "float32")

    def forward_loop():
        start = time.perf_counter()
        for _ in range(num_tiles):
            model.predict_on_batch(tile_input)
        return time.perf_counter() - start

    model.predict_on_batch(tile_input)  # warm-up and compilation
    # The memory probes run during the reference loops too, so that both
    # sides of the comparison pay for them.
    sampler = PeakSampler()
    sampler.start()
    tracemalloc.start()
    forward_before = forward_loop()

    inside = [0.0]
    original = model.predict_on_batch

    def timed_predict_on_batch(x):
        t0 = time.perf_counter()
        result = original(x)
        inside[0] += time.perf_counter() - t0
        return result

    model.predict_on_batch = timed_predict_on_batch
    anon_before = rss_anon_bytes()
    sampler.reset()
    traced_before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    predictor.predict(image, out=out)
    predict = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    anon_peak = sampler.peak_now()
    model.predict_on_batch = original
    out.flush()
    # The reference loop runs before and after the prediction; their mean
    # evens out slow drifts of the machine's load.
    forward = (forward_before + forward_loop()) / 2
    sampler.stop()
    tracemalloc.stop()
    return {
        "backend": keras.backend.backend(),
        "size": size,
        "filters": filters,
        "tile": tile,
        "tiles": num_tiles,
        "predict_s": predict,
        "forward_s": forward,
        "inside_s": inside[0],
        "overhead_vs_ref": predict / forward - 1,
        "overhead_in_run": (predict - inside[0]) / inside[0],
        "numpy_peak_mb": (traced_peak - traced_before) / 2**20,
        "anon_peak_mb": anon_peak / 2**20,
        "anon_increase_mb": (anon_peak - anon_before) / 2**20,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child_main(args):
    with tempfile.TemporaryDirectory(prefix="bench_tiling_") as folder:
        result = run_one(args.size, args.filters, args.tile, folder)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(backend, size, filters, tile):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    command = [
        sys.executable,
        __file__,
        "--child",
        "--size",
        str(size),
        "--filters",
        str(filters),
        "--tile",
        str(tile),
    ]
    process = subprocess.run(command, env=env, capture_output=True, text=True)
    for line in process.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.stderr.write(process.stdout[-2000:] + process.stderr[-4000:])
    raise RuntimeError(f"run failed: {backend} {size} filters={filters}")


def print_row(r):
    print(
        f"{r['backend']:<10} {r['filters']:>7} {r['size']:>5}x{r['size']:<5} "
        f"{r['tiles']:>5} {r['predict_s']:>9.2f} {r['forward_s']:>9.2f} "
        f"{100 * r['overhead_vs_ref']:>+7.1f}% "
        f"{100 * r['overhead_in_run']:>+7.1f}% "
        f"{r['numpy_peak_mb']:>9.1f} {r['anon_peak_mb']:>8.0f} "
        f"{r['anon_increase_mb']:>+7.0f} {r['maxrss_mb']:>7.0f}",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--full-sizes",
        default="512,2048",
        help="image sizes run with the full model (--filters)",
    )
    parser.add_argument(
        "--small-sizes",
        default="2048,8192",
        help="image sizes run with the narrow model (--small-filters)",
    )
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--small-filters", type=int, default=8)
    parser.add_argument("--tile", type=int, default=572)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only 512 with the full model and 2048, 8192 with the small one",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    if args.quick:
        args.full_sizes = "512"
    full = [int(s) for s in args.full_sizes.split(",") if s]
    small = [int(s) for s in args.small_sizes.split(",") if s]
    print(
        f"Overlap-tile prediction, tile {args.tile}x{args.tile}, batch 1, "
        f"image and output as memmaps; {os.cpu_count()} CPU cores."
    )
    print(
        "overhead vs ref = predict / reference forward loop - 1; "
        "in run = time outside the forward passes / time inside them."
    )
    header = (
        f"{'backend':<10} {'filters':>7} {'image':>11} {'tiles':>5} "
        f"{'predict s':>9} {'forward s':>9} {'vs ref':>8} {'in run':>8} "
        f"{'numpy MB':>9} {'anon MB':>8} {'+anon':>7} {'maxrss':>7}"
    )
    print(header)
    print("-" * len(header))
    results = []
    plan = [(args.filters, size) for size in full]
    plan += [(args.small_filters, size) for size in small]
    for backend in args.backends.split(","):
        for filters, size in plan:
            result = spawn(backend, size, filters, args.tile)
            results.append(result)
            print_row(result)
    print()
    for backend in args.backends.split(","):
        for filters in sorted({f for f, _ in plan}, reverse=True):
            rows = {
                r["size"]: r
                for r in results
                if r["backend"] == backend and r["filters"] == filters
            }
            if 2048 in rows and 8192 in rows:
                a, b = rows[2048], rows[8192]
                print(
                    f"{backend} filters={filters}: peak memory 8192 / 2048: "
                    f"anon {b['anon_peak_mb'] / a['anon_peak_mb']:.2f}x, "
                    f"numpy {b['numpy_peak_mb'] / a['numpy_peak_mb']:.2f}x "
                    "(target <= 2x)"
                )
            for size, r in sorted(rows.items()):
                verdict = "ok" if r["overhead_in_run"] <= 0.05 else "over"
                print(
                    f"{backend} filters={filters} {size}: tiling overhead "
                    f"{100 * r['overhead_in_run']:.1f}% in run, "
                    f"{100 * r['overhead_vs_ref']:+.1f}% vs reference loop "
                    f"(target <= 5%: {verdict})"
                )


if __name__ == "__main__":
    main()
