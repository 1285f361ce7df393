"""Speed and memory of the full U-Net (572x572 tile) on one backend.

Measures, on the current Keras backend (`KERAS_BACKEND`), in one run:

- `keras`: `keras_unet2015.UNet2015()` (the paper's network), inference with
  `predict_on_batch` and one SGD (momentum 0.99) training step with
  `train_on_batch`, sparse softmax cross-entropy on the 388x388 output;
- `reference`: the same network written directly in the backend's own
  framework with no Keras layers (PyTorch channels-last `nn.Module`, a jitted
  pure-JAX function, TensorFlow `tf.nn` ops in a `tf.function`), same loss,
  same optimizer.

Each variant runs in its own subprocess so that its peak memory (max RSS of
that process) is its own. Times are medians over `--repeats` runs after
`--warmup` runs. GFLOP/s counts the multiply-adds of every convolution,
up-convolution and the head (`forward_gflop`: 300.86 GFLOP per 572x572
tile for 64 filters, 18.88 for 16) and 3x that per training step (forward
+ two backward products), a convention.

`--filters 16,32,64` measures the widths CPU users train (one row pair per
width, same run). `--precision mixed_bfloat16` runs both variants in bf16
with float32 weights (Keras's policy; `torch.autocast` and bf16-cast
parameters in the references), `--device gpu` on the first accelerator
(`benchmarks/bench_gpu.py` runs the GPU set).

Usage:

    KERAS_BACKEND=jax python benchmarks/bench_model.py [--repeats 5]
    KERAS_BACKEND=torch python benchmarks/bench_model.py --filters 16,32,64

Prints a table and the ratio keras / reference for forward and training;
`--json PATH` also writes the numbers.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

TILE = 572
OUT = 388
DEPTH = 4


def widths(filters):
    """Channels of the four levels and of the bottom for `filters`."""
    return [filters * 2**i for i in range(DEPTH)], filters * 2**DEPTH


def forward_gflop(filters, tile=TILE, classes=2):
    """Multiply-adds x 2 of one forward pass over a `tile` x `tile` input."""
    levels, bottom = widths(filters)
    flop, size, cin, skips = 0, tile, 1, []
    for cout in levels:
        for c in (cin, cout):
            size -= 2
            flop += 2 * 9 * c * cout * size * size
        skips.append(cout)
        cin = cout
        size //= 2
    for c in (cin, bottom):
        size -= 2
        flop += 2 * 9 * c * bottom * size * size
    cin = bottom
    for cout in levels[::-1]:
        flop += 2 * 4 * cin * cout * size * size  # 2x2 up-convolution
        size *= 2
        for c in (2 * cout, cout):
            size -= 2
            flop += 2 * 9 * c * cout * size * size
        cin = cout
    flop += 2 * cin * classes * size * size  # 1x1 head
    return flop / 1e9


def median_time(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


# --------------------------------------------------------------------------
# Variants (each runs in a subprocess)
# --------------------------------------------------------------------------
def run_keras(args):
    import numpy as np

    try:
        import torch  # noqa: F401  (import before tensorflow)
    except ImportError:
        pass
    import keras

    from keras_unet2015 import UNet2015

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(args.precision)
    model = UNet2015(filters=args.filters, upconv_implementation=args.upconv)
    model.compile(
        optimizer=keras.optimizers.SGD(1e-4, momentum=0.99),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.rand(args.batch, TILE, TILE, 1).astype("float32")
    y = (np.random.rand(args.batch, OUT, OUT) > 0.5).astype("int32")

    def forward():
        np.asarray(model.predict_on_batch(x))

    def train():
        float(model.train_on_batch(x, y))

    return forward, train


def run_reference(args):
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    return {
        "torch": torch_reference,
        "jax": jax_reference,
        "tensorflow": tensorflow_reference,
    }[backend](args)


def torch_reference(args):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    levels, bottom = widths(args.filters)
    device = "cuda" if args.device == "gpu" else "cpu"
    mixed = args.precision == "mixed_bfloat16"

    def double_conv(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [1] + levels
            self.down = nn.ModuleList(
                double_conv(chans[i], chans[i + 1]) for i in range(4)
            )
            self.bottom = double_conv(levels[-1], bottom)
            ups = [bottom] + levels[::-1]
            self.upconvs = nn.ModuleList(
                nn.ConvTranspose2d(ups[i], ups[i + 1], 2, stride=2)
                for i in range(4)
            )
            self.up = nn.ModuleList(
                double_conv(ups[i], ups[i + 1]) for i in range(4)
            )
            self.head = nn.Conv2d(levels[0], 2, 1)

        def forward(self, x):
            skips = []
            for i, block in enumerate(self.down):
                x = block(x)
                if i == 3:
                    x = F.dropout(x, 0.5, self.training)
                skips.append(x)
                x = F.max_pool2d(x, 2)
            x = F.dropout(self.bottom(x), 0.5, self.training)
            for upconv, block, skip in zip(self.upconvs, self.up, skips[::-1]):
                x = upconv(x)
                c = (skip.shape[-1] - x.shape[-1]) // 2
                skip = skip[:, :, c : c + x.shape[-2], c : c + x.shape[-1]]
                x = block(torch.cat([skip, x], dim=1))
            return self.head(x)

    fmt = torch.channels_last
    model = UNet().to(device=device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.99)
    x = torch.rand(args.batch, 1, TILE, TILE, device=device)
    x = x.to(memory_format=fmt)
    y = torch.from_numpy(
        (np.random.rand(args.batch, OUT, OUT) > 0.5).astype("int64")
    ).to(device)

    def autocast():
        return torch.autocast(device, torch.bfloat16, enabled=mixed)

    def forward():
        model.eval()
        with torch.inference_mode(), autocast():
            model(x).float().cpu().numpy()

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        float(loss)

    return forward, train


def _init_params(rng_normal, filters):
    """He-normal weights for the reference nets: name -> (shape) arrays."""
    params = {}
    levels, bottom = widths(filters)
    chans = [1] + levels

    def conv(name, cin, cout, k=3):
        params[name] = (
            rng_normal((k, k, cin, cout)) * (2.0 / (k * k * cin)) ** 0.5,
            rng_normal((cout,)) * 0.0,
        )

    for i in range(4):
        conv(f"d{i}a", chans[i], chans[i + 1])
        conv(f"d{i}b", chans[i + 1], chans[i + 1])
    conv("ba", levels[-1], bottom)
    conv("bb", bottom, bottom)
    ups = [bottom] + levels[::-1]
    for i in range(4):
        params[f"t{i}"] = (
            rng_normal((ups[i], 4 * ups[i + 1])) * (2.0 / ups[i]) ** 0.5,
            rng_normal((ups[i + 1],)) * 0.0,
        )
        conv(f"u{i}a", 2 * ups[i + 1], ups[i + 1])
        conv(f"u{i}b", ups[i + 1], ups[i + 1])
    conv("head", levels[0], 2, k=1)
    return params


def jax_reference(args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        jnp.asarray,
        _init_params(
            lambda s: rng.standard_normal(s).astype("float32"), args.filters
        ),
    )
    compute = jnp.bfloat16 if args.precision == "mixed_bfloat16" else None

    def conv(x, p, relu=True):
        y = jax.lax.conv_general_dilated(
            x, p[0], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        y = y + p[1]
        return jax.nn.relu(y) if relu else y

    def pool(x):
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    def upconv(x, p):
        b, h, w, _ = x.shape
        f = p[1].shape[0]
        y = (x @ p[0]).reshape(b, h, w, 2, 2, f) + p[1]
        return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, f)

    def dropout(x, key):
        if key is None:
            return x
        keep = jax.random.bernoulli(key, 0.5, x.shape)
        return jnp.where(keep, x / 0.5, 0.0).astype(x.dtype)

    def net(params, x, key=None):
        if compute is not None:
            params = jax.tree_util.tree_map(lambda p: p.astype(compute), params)
            x = x.astype(compute)
        keys = [None, None] if key is None else list(jax.random.split(key))
        skips = []
        for i in range(4):
            x = conv(conv(x, params[f"d{i}a"]), params[f"d{i}b"])
            if i == 3:
                x = dropout(x, keys[0])
            skips.append(x)
            x = pool(x)
        x = dropout(conv(conv(x, params["ba"]), params["bb"]), keys[1])
        for i in range(4):
            x = upconv(x, params[f"t{i}"])
            skip = skips[3 - i]
            c = (skip.shape[1] - x.shape[1]) // 2
            skip = skip[:, c : c + x.shape[1], c : c + x.shape[2]]
            x = jnp.concatenate([skip, x], axis=-1)
            x = conv(conv(x, params[f"u{i}a"]), params[f"u{i}b"])
        return conv(x, params["head"], relu=False)

    def loss_fn(params, x, y, key):
        logits = net(params, x, key).astype(jnp.float32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[..., None], -1))

    @jax.jit
    def train_step(params, velocity, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
        velocity = jax.tree_util.tree_map(
            lambda v, g: 0.99 * v - 1e-4 * g, velocity, grads
        )
        params = jax.tree_util.tree_map(lambda p, v: p + v, params, velocity)
        return params, velocity, loss

    predict = jax.jit(net)
    x = jnp.asarray(rng.random((args.batch, TILE, TILE, 1), dtype="float32"))
    y = jnp.asarray((rng.random((args.batch, OUT, OUT)) > 0.5).astype("int32"))
    state = {
        "params": params,
        "velocity": jax.tree_util.tree_map(jnp.zeros_like, params),
        "key": jax.random.PRNGKey(0),
    }

    def forward():
        np.asarray(predict(state["params"], x).astype(jnp.float32))

    def train():
        state["key"], key = jax.random.split(state["key"])
        state["params"], state["velocity"], loss = train_step(
            state["params"], state["velocity"], x, y, key
        )
        float(loss)

    return forward, train


def tensorflow_reference(args):
    import numpy as np
    import tensorflow as tf

    if args.precision != "float32":
        sys.exit("The TensorFlow reference is float32 only.")
    rng = np.random.default_rng(0)
    raw = _init_params(
        lambda s: rng.standard_normal(s).astype("float32"), args.filters
    )
    params = {k: (tf.Variable(w), tf.Variable(b)) for k, (w, b) in raw.items()}
    variables = [v for pair in params.values() for v in pair]
    velocity = [tf.Variable(tf.zeros_like(v)) for v in variables]

    def conv(x, p, relu=True):
        y = tf.nn.bias_add(tf.nn.conv2d(x, p[0], 1, "VALID"), p[1])
        return tf.nn.relu(y) if relu else y

    def upconv(x, p):
        shape = tf.shape(x)
        f = p[1].shape[0]
        y = tf.reshape(
            tf.matmul(tf.reshape(x, (-1, x.shape[-1])), p[0]),
            (shape[0], shape[1], shape[2], 4 * f),
        )
        y = tf.nn.depth_to_space(y, 2)
        return y + p[1]

    def net(x, training):
        skips = []
        for i in range(4):
            x = conv(conv(x, params[f"d{i}a"]), params[f"d{i}b"])
            if i == 3 and training:
                x = tf.nn.dropout(x, 0.5)
            skips.append(x)
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        x = conv(conv(x, params["ba"]), params["bb"])
        if training:
            x = tf.nn.dropout(x, 0.5)
        for i in range(4):
            x = upconv(x, params[f"t{i}"])
            skip = skips[3 - i]
            c = (skip.shape[1] - x.shape[1]) // 2
            skip = skip[:, c : c + x.shape[1], c : c + x.shape[2]]
            x = tf.concat([skip, x], axis=-1)
            x = conv(conv(x, params[f"u{i}a"]), params[f"u{i}b"])
        return conv(x, params["head"], relu=False)

    @tf.function
    def predict(x):
        return net(x, False)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = net(x, True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
            )
        grads = tape.gradient(loss, variables)
        for v, m, g in zip(variables, velocity, grads):
            m.assign(0.99 * m - 1e-4 * g)
            v.assign_add(m)
        return loss

    x = tf.constant(rng.random((args.batch, TILE, TILE, 1), dtype="float32"))
    y = tf.constant((rng.random((args.batch, OUT, OUT)) > 0.5).astype("int32"))

    def forward():
        predict(x).numpy()

    def train():
        float(train_step(x, y))

    return forward, train


def child(args):
    variant = {"keras": run_keras, "reference": run_reference}[args.variant]
    forward, train = variant(args)
    fwd, fwd_all = median_time(forward, args.warmup, args.repeats)
    trn, trn_all = median_time(train, args.warmup, args.repeats)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "RESULT "
        + json.dumps(
            {
                "forward_s": fwd,
                "train_s": trn,
                "forward_all": fwd_all,
                "train_all": trn_all,
                "peak_rss_mib": peak_mib,
            }
        )
    )


def measure(args, variant, filters):
    """Runs one variant in a subprocess; its RESULT line as a dict."""
    cmd = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--filters",
        str(filters),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--upconv",
        args.upconv,
        "--precision",
        args.precision,
        "--device",
        args.device,
        "--batch",
        str(args.batch),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [
        line for line in proc.stdout.splitlines() if line.startswith("RESULT")
    ]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{variant} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--upconv",
        default="auto",
        choices=["auto", "matmul", "conv_transpose"],
        help="UpConvolution2D implementation of the Keras model",
    )
    parser.add_argument(
        "--filters",
        default="64",
        help="comma-separated first-level widths, e.g. 16,32,64 (64)",
    )
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "mixed_bfloat16"],
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write results")
    parser.add_argument("--variant", choices=["keras", "reference"])
    args = parser.parse_args()
    if args.variant:
        args.filters = int(args.filters)
        child(args)
        return

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    filters = [int(f) for f in args.filters.split(",")]
    print(
        f"U-Net 572x572 -> 388x388, batch {args.batch}, backend={backend}, "
        f"device={args.device}, precision={args.precision}, "
        f"cpus={os.cpu_count()}, repeats={args.repeats}, upconv={args.upconv}"
    )
    header = (
        f"{'filters':>7} {'variant':<10} {'forward s':>10} {'GFLOP/s':>8} "
        f"{'train s':>9} {'GFLOP/s':>8} {'peak RSS MiB':>13}"
    )
    print(header)
    rows = []
    for width in filters:
        gflop = forward_gflop(width) * args.batch
        results = {
            variant: measure(args, variant, width)
            for variant in ("reference", "keras")
        }
        for name, r in results.items():
            print(
                f"{width:>7} {name:<10} {r['forward_s']:>10.3f} "
                f"{gflop / r['forward_s']:>8.1f} {r['train_s']:>9.3f} "
                f"{3 * gflop / r['train_s']:>8.1f} "
                f"{r['peak_rss_mib']:>13.0f}",
                flush=True,
            )
        k, ref = results["keras"], results["reference"]
        ratios = (
            k["forward_s"] / ref["forward_s"],
            k["train_s"] / ref["train_s"],
        )
        print(
            f"{width:>7} ratio keras/reference: forward {ratios[0]:.2f}x, "
            f"training step {ratios[1]:.2f}x",
            flush=True,
        )
        rows.append(
            {
                "filters": width,
                "forward_gflop": gflop,
                "results": results,
                "forward_ratio": ratios[0],
                "train_ratio": ratios[1],
            }
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {
                    "backend": backend,
                    "device": args.device,
                    "precision": args.precision,
                    "batch": args.batch,
                    "repeats": args.repeats,
                    "rows": rows,
                },
                file,
                indent=1,
            )


if __name__ == "__main__":
    main()
