"""GPU benchmark: UNet2015 against plain PyTorch and plain JAX, fp32 and bf16.

Runs `benchmarks/bench_model.py` on the accelerator for the PyTorch and the
JAX backend, each in float32 and in bf16 mixed precision (Keras's
`mixed_bfloat16` policy; `torch.autocast` / bf16-cast parameters in the
references): forward pass and one SGD training step of the paper's network
(572 x 572 tile, 64 filters), the Keras model and the framework's own
reference on the same device, in one run. Writes `gpu_bench.json` and a
Markdown table `gpu_bench.md` (with the device's name) to `--out`.

Prepared for one call of the `device` tool (a 10-minute limit), on a
machine whose Python has PyTorch and JAX but not Keras. Here, once:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: \\
        --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl \\
        keras==3.15.1 namex optree

then run, carrying `.whl`:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && \\
        python3 benchmarks/bench_gpu.py --out $OUT

A dry run on the CPU at a tiny width checks the script end to end:

    python benchmarks/bench_gpu.py --device cpu --filters 4 --repeats 1 \\
        --warmup 1 --batch 1 --out /tmp/gpu_dry
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = (
    ("torch", "float32"),
    ("torch", "mixed_bfloat16"),
    ("jax", "float32"),
    ("jax", "mixed_bfloat16"),
)


def device_name(device):
    if device != "gpu":
        return f"CPU ({os.cpu_count()} cores)"
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception as error:  # pragma: no cover - depends on the machine
        return f"unknown GPU ({error})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the results")
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--filters", default="64")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480,
        help="skip the runs that would start after this many seconds (480)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    results, skipped = [], []
    for backend, precision in RUNS:
        if time.time() - start > args.budget_s:
            skipped.append(f"{backend} {precision}")
            continue
        target = out / f"{backend}_{precision}.json"
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONUNBUFFERED="1")
        if backend == "jax":
            # Leave the GPU's memory to one process at a time, as allocated.
            env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        cmd = [
            sys.executable,
            str(HERE / "bench_model.py"),
            "--device",
            args.device,
            "--precision",
            precision,
            "--filters",
            args.filters,
            "--batch",
            str(args.batch),
            "--repeats",
            str(args.repeats),
            "--warmup",
            str(args.warmup),
            "--json",
            str(target),
        ]
        began = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr, flush=True)
            skipped.append(f"{backend} {precision} (failed)")
            continue
        record = json.loads(target.read_text())
        record["wall_s"] = time.time() - began
        results.append(record)

    name = device_name(args.device)
    (out / "gpu_bench.json").write_text(
        json.dumps(
            {"device": name, "runs": results, "skipped": skipped}, indent=1
        )
    )
    lines = [
        f"Device: {name}; tile 572 x 572, batch {args.batch}, median of "
        f"{args.repeats} after {args.warmup} warm-up runs.",
        "",
        "| backend | precision | filters | forward s, UNet2015 / plain | "
        "train step s, UNet2015 / plain | train TFLOP/s, UNet2015 |",
        "|---|---|---|---|---|---|",
    ]
    for record in results:
        for row in record["rows"]:
            k = row["results"]["keras"]
            ref = row["results"]["reference"]
            tflops = 3 * row["forward_gflop"] / k["train_s"] / 1000
            lines.append(
                f"| {record['backend']} | {record['precision']} | "
                f"{row['filters']} | {k['forward_s']:.4f} / "
                f"{ref['forward_s']:.4f} ({row['forward_ratio']:.2f}x) | "
                f"{k['train_s']:.4f} / {ref['train_s']:.4f} "
                f"({row['train_ratio']:.2f}x) | {tflops:.1f} |"
            )
    if skipped:
        lines += ["", "Not run: " + ", ".join(skipped)]
    (out / "gpu_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
