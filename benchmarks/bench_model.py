"""Speed and memory of the full U-Net (572x572 tile, batch 1) on one backend.

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
`--warmup` runs. GFLOP/s uses 300.86 GFLOP per forward pass at 572x572 and
3x that per training step (forward + two backward products), a convention.

Usage:

    KERAS_BACKEND=jax python benchmarks/bench_model.py [--repeats 5]

Prints a table and the ratio keras / reference for forward and training.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

FORWARD_GFLOP = 300.86
TILE = 572
OUT = 388
LEVELS = [64, 128, 256, 512]
BOTTOM = 1024


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
    model = UNet2015(upconv_implementation=args.upconv)
    model.compile(
        optimizer=keras.optimizers.SGD(1e-4, momentum=0.99),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.rand(1, TILE, TILE, 1).astype("float32")
    y = (np.random.rand(1, OUT, OUT) > 0.5).astype("int32")

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
            widths = [1] + LEVELS
            self.down = nn.ModuleList(
                double_conv(widths[i], widths[i + 1]) for i in range(4)
            )
            self.bottom = double_conv(LEVELS[-1], BOTTOM)
            ups = [BOTTOM] + LEVELS[::-1]
            self.upconvs = nn.ModuleList(
                nn.ConvTranspose2d(ups[i], ups[i + 1], 2, stride=2)
                for i in range(4)
            )
            self.up = nn.ModuleList(
                double_conv(ups[i], ups[i + 1]) for i in range(4)
            )
            self.head = nn.Conv2d(64, 2, 1)

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
    model = UNet().to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.99)
    x = torch.rand(1, 1, TILE, TILE).to(memory_format=fmt)
    y = torch.from_numpy((np.random.rand(1, OUT, OUT) > 0.5).astype("int64"))

    def forward():
        model.eval()
        with torch.inference_mode():
            model(x).numpy()

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        float(loss)

    return forward, train


def _init_params(rng_normal):
    """He-normal weights for the reference nets: name -> (shape) arrays."""
    params = {}
    widths = [1] + LEVELS

    def conv(name, cin, cout, k=3):
        params[name] = (
            rng_normal((k, k, cin, cout)) * (2.0 / (k * k * cin)) ** 0.5,
            rng_normal((cout,)) * 0.0,
        )

    for i in range(4):
        conv(f"d{i}a", widths[i], widths[i + 1])
        conv(f"d{i}b", widths[i + 1], widths[i + 1])
    conv("ba", LEVELS[-1], BOTTOM)
    conv("bb", BOTTOM, BOTTOM)
    ups = [BOTTOM] + LEVELS[::-1]
    for i in range(4):
        params[f"t{i}"] = (
            rng_normal((ups[i], 4 * ups[i + 1])) * (2.0 / ups[i]) ** 0.5,
            rng_normal((ups[i + 1],)) * 0.0,
        )
        conv(f"u{i}a", 2 * ups[i + 1], ups[i + 1])
        conv(f"u{i}b", ups[i + 1], ups[i + 1])
    conv("head", 64, 2, k=1)
    return params


def jax_reference(args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        jnp.asarray,
        _init_params(lambda s: rng.standard_normal(s).astype("float32")),
    )

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
        return jnp.where(keep, x / 0.5, 0.0)

    def net(params, x, key=None):
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
        logits = net(params, x, key)
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
    x = jnp.asarray(rng.random((1, TILE, TILE, 1), dtype="float32"))
    y = jnp.asarray((rng.random((1, OUT, OUT)) > 0.5).astype("int32"))
    state = {
        "params": params,
        "velocity": jax.tree_util.tree_map(jnp.zeros_like, params),
        "key": jax.random.PRNGKey(0),
    }

    def forward():
        np.asarray(predict(state["params"], x))

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

    rng = np.random.default_rng(0)
    raw = _init_params(lambda s: rng.standard_normal(s).astype("float32"))
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

    x = tf.constant(rng.random((1, TILE, TILE, 1), dtype="float32"))
    y = tf.constant((rng.random((1, OUT, OUT)) > 0.5).astype("int32"))

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
    parser.add_argument("--variant", choices=["keras", "reference"])
    args = parser.parse_args()
    if args.variant:
        child(args)
        return

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    results = {}
    for variant in ("reference", "keras"):
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--repeats",
            str(args.repeats),
            "--warmup",
            str(args.warmup),
            "--upconv",
            args.upconv,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [
            line
            for line in proc.stdout.splitlines()
            if line.startswith("RESULT")
        ]
        if proc.returncode != 0 or not lines:
            sys.exit(f"{variant} failed:\n{proc.stderr[-4000:]}")
        results[variant] = json.loads(lines[-1][len("RESULT ") :])

    print(
        f"U-Net 572x572 -> 388x388, batch 1, backend={backend}, "
        f"cpus={os.cpu_count()}, repeats={args.repeats}, upconv={args.upconv}"
    )
    header = (
        f"{'variant':<10} {'forward s':>10} {'GFLOP/s':>8} {'train s':>9} "
        f"{'GFLOP/s':>8} {'peak RSS MiB':>13}"
    )
    print(header)
    for name, r in results.items():
        print(
            f"{name:<10} {r['forward_s']:>10.3f} "
            f"{FORWARD_GFLOP / r['forward_s']:>8.1f} {r['train_s']:>9.3f} "
            f"{3 * FORWARD_GFLOP / r['train_s']:>8.1f} "
            f"{r['peak_rss_mib']:>13.0f}"
        )
    k, ref = results["keras"], results["reference"]
    print(
        f"ratio keras/reference: forward "
        f"{k['forward_s'] / ref['forward_s']:.2f}x, training step "
        f"{k['train_s'] / ref['train_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
