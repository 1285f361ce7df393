"""Speed of `unet_weight_map` against the one-transform-per-cell reference.

The paper's weight map needs, for every pixel, the distances `d1`, `d2` to
the nearest and second-nearest cell. The common implementation runs one
full-image Euclidean distance transform per cell, so its cost grows with
cells x pixels. `keras_unet2015.weight_maps` runs each cell's transform on
the cell's bounding box grown by the distance beyond which the border term
is below `1e-6 * w0` (25 px for sigma = 5), so its cost grows with pixels
plus cells. This script times both on the same maps in the same run and
prints the speedup and the largest difference between the two maps (which
must stay below `1e-6 * w0 = 1e-5`):

- packed synthetic tissue (Voronoi cells of random seeds with a background
  gap between neighbours, like the ISBI membranes) on 512x512 with 10, 50,
  200 and 1000 cells and on 2048x2048 with 1000 cells;
- the real ISBI 2012 training labels (cells = connected components of the
  255 pixels) and the DSB 2018 nuclei instance mask (touching nuclei cut
  apart first), from `../shared/data` or `--data`.

Both compute the whole map `w = w_c + border term` with the same class term;
only the distance computation differs. The reference keeps the two
smallest distances with running minima (memory O(pixels); stacking all
transforms and sorting, as many implementations do, is slower still and
needs cells x pixels memory). For 2048x2048 with 1000 cells the reference
takes minutes: it is timed on `--reference-cells` cells and extrapolated
linearly to all cells (clearly marked), unless `--full-reference` is given.

Timings: wall-clock time, best of `--repeats` runs for the fast map and one
run for the reference; the CPU time of the same runs (`time.process_time`)
is printed too, because the wall time also counts waiting for a busy CPU.

Usage:

    python benchmarks/bench_weight_map.py [--data ../shared/data]
"""

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy import ndimage  # noqa: E402

from keras_unet2015 import weight_maps  # noqa: E402

W0 = 10.0
SIGMA = 5.0


# === Reference: one full-image distance transform per cell ===


def reference_weight_map(instances, cells=None):
    """`w_c` + border term with one full-image EDT per cell.

    With `cells`, only those cells' transforms run (for timing a subset).
    """
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    ids = np.unique(instances)
    ids = ids[ids != 0]
    if cells is not None:
        ids = ids[:cells]
    for cell in ids:
        distance = ndimage.distance_transform_edt(instances != cell)
        d2 = np.minimum(d2, np.maximum(d1, distance))
        d1 = np.minimum(d1, distance)
    border = W0 * np.exp(-((d1 + d2) ** 2) / (2 * SIGMA**2))
    border[(instances != 0) | ~np.isfinite(d2)] = 0.0
    target = (instances != 0).astype(np.uint8)
    return weight_maps.class_weight_map(target) + border


def fast_weight_map(instances):
    return weight_maps.unet_weight_map(instances, w0=W0, sigma=SIGMA)


# === Inputs ===


def packed_tissue(n_cells, size, seed=0):
    """Voronoi cells of `n_cells` random seeds, neighbours 2 px apart."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros((size, size), bool)
    flat = rng.choice(size * size, n_cells, replace=False)
    ys, xs = np.unravel_index(flat, (size, size))
    seeds[ys, xs] = True
    markers = np.zeros((size, size), np.int32)
    markers[ys, xs] = np.arange(1, n_cells + 1)
    _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    return weight_maps.separate_touching_cells(markers[iy, ix])


def real_inputs(data):
    from PIL import Image

    inputs = []
    labels_dir = data / "isbi2012" / "train" / "labels"
    for name in ("00.png", "15.png", "29.png"):
        path = labels_dir / name
        if path.exists():
            labels = np.array(Image.open(path))
            inputs.append(
                (f"ISBI 2012 labels/{name}", weight_maps.isbi_instances(labels))
            )
    nuclei = data / "stardist-dsb2018-nuclei2d" / "mask2d.tif"
    if nuclei.exists():
        import tifffile

        instances = weight_maps.separate_touching_cells(tifffile.imread(nuclei))
        inputs.append(("DSB 2018 nuclei mask2d.tif", instances))
    return inputs


# === Timing ===


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_case(name, instances, repeats, reference_cells, full_reference):
    n_cells = int(np.count_nonzero(np.bincount(instances.ravel())[1:]))
    fast_runs = [timed(fast_weight_map, instances) for _ in range(repeats)]
    fast = fast_runs[0][0]
    fast_wall = min(run[1] for run in fast_runs)
    fast_cpu = min(run[2] for run in fast_runs)

    extrapolated = (
        reference_cells is not None
        and not full_reference
        and n_cells > reference_cells
    )
    if extrapolated:
        # Per-cell cost from a subset, plus the fixed cost of the rest.
        _, sub_wall, sub_cpu = timed(
            reference_weight_map, instances, reference_cells
        )
        _, base_wall, base_cpu = timed(reference_weight_map, instances, 0)
        scale = n_cells / reference_cells
        ref_wall = base_wall + (sub_wall - base_wall) * scale
        ref_cpu = base_cpu + (sub_cpu - base_cpu) * scale
        difference = "n/a"
    else:
        reference, ref_wall, ref_cpu = timed(reference_weight_map, instances)
        difference = f"{np.abs(fast - reference).max():.1e}"
    mark = "*" if extrapolated else " "
    print(
        f"{name:<30} {instances.shape[0]:>4}x{instances.shape[1]:<4} "
        f"{n_cells:>5} | {fast_wall:8.3f} {fast_cpu:8.3f} | "
        f"{ref_wall:9.2f}{mark} {ref_cpu:8.2f}{mark} | "
        f"{ref_wall / fast_wall:8.1f}x {ref_cpu / fast_cpu:7.1f}x | "
        f"{difference}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data",
        help="folder holding isbi2012/ and stardist-dsb2018-nuclei2d/",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--reference-cells",
        type=int,
        default=50,
        help="cells timed for the extrapolated 2048x2048 reference",
    )
    parser.add_argument(
        "--full-reference",
        action="store_true",
        help="run the 2048x2048 reference on all cells (minutes)",
    )
    args = parser.parse_args()

    print(
        f"numpy {np.__version__}, scipy {scipy.__version__}, "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"unet_weight_map(w0={W0}, sigma={SIGMA}, tolerance=1e-6) vs one "
        "full-image EDT per cell; times in seconds."
    )
    header = (
        f"{'map':<30} {'size':>9} {'cells':>5} | {'fast':>8} {'fast':>8} | "
        f"{'reference':>10} {'ref':>8}  | {'speedup':>9} {'speedup':>8} | "
        "max |diff|"
    )
    print(header)
    print(
        f"{'':<30} {'':>9} {'':>5} | {'wall':>8} {'cpu':>8} | "
        f"{'wall':>10} {'cpu':>8}  | {'wall':>9} {'cpu':>8} |"
    )
    print("-" * len(header))
    cases = [
        (f"packed tissue, {n} cells", packed_tissue(n, 512), None)
        for n in (10, 50, 200, 1000)
    ]
    cases.append(
        (
            "packed tissue, 1000 cells",
            packed_tissue(1000, 2048),
            args.reference_cells,
        )
    )
    for name, instances, reference_cells in cases:
        run_case(
            name,
            instances,
            args.repeats,
            reference_cells,
            args.full_reference,
        )
    if args.data.is_dir():
        for name, instances in real_inputs(args.data):
            run_case(name, instances, args.repeats, None, False)
    else:
        print(f"(real data skipped: {args.data} not found; pass --data)")
    print("-" * len(header))
    print(
        "* extrapolated: reference timed on "
        f"{args.reference_cells} cells, scaled linearly to all cells."
    )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
