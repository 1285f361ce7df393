"""Scaling out: data-parallel training on several devices and Dask.

Two parts, each a script of its own that this one runs:

- `devices` (`benchmarks/scale_devices.py`): tiles/s of one data-parallel
  training step on 1 vs N virtual JAX CPU devices on the same global batch,
  and the largest weight difference after the steps. On a CPU machine this
  is a check that scaling is correct, not a speed claim.
- `dask` (`benchmarks/scale_dask.py`): `keras_unet2015.segment_dask` on a
  `dask.distributed.LocalCluster` against `OverlapTilePredictor` in memory
  on a 4096x4096 image: wall time, overhead ratio, peak memory per worker
  (for a 2048 and a 4096 image with the same chunks) and exact equality.

Usage:

    python benchmarks/bench_scale.py                 # both, default sizes
    python benchmarks/bench_scale.py devices --help  # options of one part
    python benchmarks/bench_scale.py dask --filters 16
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_dask  # noqa: E402
import scale_devices  # noqa: E402

PARTS = {"devices": scale_devices.main, "dask": scale_dask.main}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv and argv[0] in PARTS:
        return PARTS[argv[0]](argv[1:]) or 0
    if argv:
        print(
            f"Unknown part {argv[0]!r}; expected one of {sorted(PARTS)}.",
            file=sys.stderr,
        )
        return 2
    status = 0
    for name, part in PARTS.items():
        print(f"=== {name} ===", flush=True)
        status = status or (part([]) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
