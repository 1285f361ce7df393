"""`segment_dask` on a Dask cluster vs `OverlapTilePredictor` in memory.

For one backend, a U-Net of depth 4 with valid padding (`--filters` 8 by
default, so that a 4096x4096 image takes minutes on a CPU) is saved to a
`.keras` file, and random images are written to zarr stores (chunks of
`--chunk` px). Each configuration runs in a fresh Python process, so that
peak memory is per run:

1. `otp`: the image is read into memory and segmented with
   `OverlapTilePredictor(model, tile_size=T, batch_size=1)`, where `T` is
   the tile `segment_dask` picks by default for the chunks (the smallest
   tile whose output covers a chunk: one tile per chunk); the
   probabilities are saved for the equality check.
2. `dask`: a `dask.distributed.LocalCluster` with `--workers` worker
   processes (`--threads` threads each) runs `segment_dask(path, image)`
   from the zarr store to a zarr store; every worker loads the model from
   the `.keras` path once.

Both sides warm up first (the model is loaded and run once on a tile of
size `T`, which also compiles it for JAX and TensorFlow), outside the timed
part. Reported per run:

- `wall s`: time of the prediction (for `dask`: building the graph,
  scheduling, reading and writing zarr, and the prediction).
- `ratio`: `dask` wall time / `otp` wall time for the same image.
- `peak MB`: peak resident memory (`ru_maxrss`) of the process that
  predicts: the `otp` process, or each Dask worker (max over workers). It
  includes the framework and the model; `base MB` is the resident memory
  of that process after the warm-up, before the prediction.
- `equal`: whether the Dask result equals the in-memory result exactly
  (`numpy.array_equal`), checked for every size run with both.

The claim checked: per-worker peak memory is bounded by the chunks, not by
the image (the same for 2048 and 4096 px images with the same chunks),
while the in-memory predictor holds the whole image and its result.

Usage:

    python benchmarks/scale_dask.py                       # 2048 and 4096
    python benchmarks/scale_dask.py --sizes 4096 --backend tensorflow
    python benchmarks/scale_dask.py --filters 64          # paper widths
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def default_tile(depth, chunk):
    from keras_unet2015 import sizes

    return sizes.input_size_for_output(max(chunk, 2**depth), depth)


def warm_up(path, tile):
    """Loads the model once in this process and runs it on one tile."""
    import numpy as np

    from keras_unet2015.inference import dask_segmentation

    model = dask_segmentation._load_model(path)
    model.predict_on_batch(np.zeros((1, tile, tile, 1), np.float32))
    return rss_mb()


def child_otp(args):
    import numpy as np
    import zarr

    from keras_unet2015 import OverlapTilePredictor

    tile = default_tile(args.depth, args.chunk)
    base = warm_up(args.model, tile)
    from keras_unet2015.inference import dask_segmentation

    model = dask_segmentation._load_model(args.model)
    image = zarr.open_array(args.image, mode="r")[...]
    start = time.perf_counter()
    predictor = OverlapTilePredictor(
        model, tile_size=tile, batch_size=1, verbose=0
    )
    result = predictor.predict(image)
    wall = time.perf_counter() - start
    np.save(args.out, result)
    return {"wall": wall, "peak": peak_mb(), "base": base, "tile": tile}


def child_dask(args):
    import dask.array as da
    import distributed

    import keras_unet2015

    tile = default_tile(args.depth, args.chunk)
    with (
        distributed.LocalCluster(
            n_workers=args.workers,
            threads_per_worker=args.threads,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        base = client.run(warm_up, args.model, tile)
        start = time.perf_counter()
        image = da.from_zarr(args.image)
        result = keras_unet2015.segment_dask(args.model, image)
        result.to_zarr(args.out)
        wall = time.perf_counter() - start
        peaks = client.run(peak_mb)
    return {
        "wall": wall,
        "peak": max(peaks.values()),
        "base": max(base.values()),
        "tile": tile,
        "chunks": [len(c) for c in result.chunks],
    }


def run_child(args, mode, image, out, size):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        mode,
        "--model",
        args.model,
        "--image",
        image,
        "--out",
        out,
        "--chunk",
        str(args.chunk),
        "--depth",
        str(args.depth),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
    ]
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"{mode} {size} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--sizes", default="2048,4096")
    parser.add_argument(
        "--otp-sizes",
        default="4096",
        help="sizes also run in memory (for the ratio and equality check)",
    )
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = (child_otp if args.child == "otp" else child_dask)(args)
        print(json.dumps(result))
        return

    os.environ["KERAS_BACKEND"] = args.backend
    import keras
    import numpy as np
    import zarr

    import keras_unet2015

    folder = tempfile.mkdtemp(prefix="scale_dask_")
    try:
        keras.utils.set_random_seed(0)
        model = keras_unet2015.UNet2015(
            num_classes=2,
            depth=args.depth,
            filters=args.filters,
            dropout_rate=0.0,
        )
        args.model = os.path.join(folder, "unet.keras")
        model.save(args.model)
        sizes_run = [int(s) for s in args.sizes.split(",") if s]
        otp_sizes = {int(s) for s in args.otp_sizes.split(",") if s}
        print(
            f"# scale_dask: backend={args.backend} filters={args.filters} "
            f"depth={args.depth} chunk={args.chunk} workers={args.workers}"
            f"x{args.threads} threads, {os.cpu_count()} CPUs, "
            f"{platform.processor() or platform.machine()}, "
            f"{time.strftime('%Y-%m-%d')}"
        )
        header = (
            f"{'size':>6} {'run':>5} {'tile':>5} {'wall s':>8} {'ratio':>6} "
            f"{'base MB':>8} {'peak MB':>8} {'equal':>6}"
        )
        print(header)
        for size in sizes_run:
            rng = np.random.default_rng(size)
            image_path = os.path.join(folder, f"image{size}.zarr")
            store = zarr.open_array(
                image_path,
                mode="w",
                shape=(size, size),
                chunks=(args.chunk, args.chunk),
                dtype="float32",
            )
            store[...] = rng.random((size, size), dtype=np.float32)
            dask_out = os.path.join(folder, f"dask{size}.zarr")
            d = run_child(args, "dask", image_path, dask_out, size)
            o = None
            if size in otp_sizes:
                otp_out = os.path.join(folder, f"otp{size}.npy")
                o = run_child(args, "otp", image_path, otp_out, size)
                equal = np.array_equal(
                    np.load(otp_out, mmap_mode="r"),
                    zarr.open_array(dask_out, mode="r")[...],
                )
                print(
                    f"{size:>6} {'otp':>5} {o['tile']:>5} {o['wall']:>8.2f} "
                    f"{'':>6} {o['base']:>8.0f} {o['peak']:>8.0f} {'':>6}"
                )
            ratio = f"{d['wall'] / o['wall']:.2f}" if o else "-"
            print(
                f"{size:>6} {'dask':>5} {d['tile']:>5} {d['wall']:>8.2f} "
                f"{ratio:>6} {d['base']:>8.0f} {d['peak']:>8.0f} "
                f"{str(equal) if o else '-':>6}"
            )
            shutil.rmtree(dask_out, ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
