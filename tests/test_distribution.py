"""Multi-device training: the same weights as one device on the same batch.

Several devices need flags read when JAX or TensorFlow starts, so those
checks run in one subprocess per backend (8 virtual JAX CPU devices; 2
logical TensorFlow CPU devices), which also runs `keras-unet2015 train
--distribute`. PyTorch's DistributedDataParallel runs in 2 gloo processes.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import keras_unet2015
from keras_unet2015 import distribution
from keras_unet2015.cli import main
from keras_unet2015.datasets import make_touching_cells

BACKEND = keras.backend.backend()

# One data-parallel step is compared with one single-device step on the same
# global batch of 8 tiles: a depth-2 net, 44 -> 4 px, no dropout, plain SGD
# (the update is -lr * gradient, so only the order of sums differs).
DEPTH, FILTERS, INPUT_SIZE, OUTPUT_SIZE, BATCH = 2, 4, 44, 4, 8
LEARNING_RATE = 0.1

# Shared by the subprocesses: the batch, the model and the two steps.
_COMMON = f"""
import contextlib
import io
import json
import sys

import keras
import numpy as np

import keras_unet2015 as ku
from keras_unet2015.cli import main

out_dir, cells = sys.argv[1], sys.argv[2]


def batch():
    rng = np.random.default_rng(0)
    x = rng.random(({BATCH}, {INPUT_SIZE}, {INPUT_SIZE}, 1), np.float32)
    y = rng.integers(0, 2, ({BATCH}, {OUTPUT_SIZE}, {OUTPUT_SIZE}))
    w = rng.random(({BATCH}, {OUTPUT_SIZE}, {OUTPUT_SIZE}), np.float32)
    return x, y.astype("int32"), w + 0.5


def one_step(model):
    ku.training.compile_model(
        model, optimizer=keras.optimizers.SGD({LEARNING_RATE})
    )
    x, y, w = batch()
    model.fit(x, y, sample_weight=w, batch_size={BATCH}, epochs=1,
              verbose=0, shuffle=False)
    return model.get_weights()


def new_model():
    return ku.UNet2015(depth={DEPTH}, filters={FILTERS}, dropout_rate=0.0)


def cli(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "--images", cells + "/images", "--labels",
                     cells + "/labels", "--depth", "{DEPTH}", "--filters",
                     "{FILTERS}", "--input-size", "{INPUT_SIZE}",
                     "--augmentation", "none", "--no-validation",
                     "--epochs", "1", "--steps-per-epoch", "1",
                     "--verbose", "0", *args])
    return code, err.getvalue()


def run(strategy_name):
    keras.utils.set_random_seed(1)
    model = new_model()
    initial = model.get_weights()
    single = one_step(model)
    with ku.distribution.distribution_scope(strategy_name) as strategy:
        replicas = ku.distribution.num_replicas(strategy)
        model = new_model()
        model.set_weights(initial)
        parallel = one_step(model)
        copies = placement(model.weights[0])
        stream = ku.datasets.TrainingSampleStream(
            [batch()[0][0, ..., 0]], [np.zeros(({INPUT_SIZE},) * 2, int)],
            input_size={INPUT_SIZE}, output_size={OUTPUT_SIZE},
            batch_size=replicas // 2,
        )
        try:
            ku.training.fit(model, stream, epochs=1, verbose=0)
            fit_error = ""
        except ValueError as error:
            fit_error = str(error)
    arrays = {{}}
    for name, weights in (("initial", initial), ("single", single),
                          ("parallel", parallel)):
        arrays.update({{f"{{name}}_{{i}}": v for i, v in enumerate(weights)}})
    np.savez(out_dir + "/weights.npz", **arrays)
    code, err = cli("--distribute", strategy_name, "--output-dir",
                    out_dir + "/run", "--batch-size", str(replicas))
    bad_code, bad_err = cli("--distribute", strategy_name, "--output-dir",
                            out_dir + "/bad", "--batch-size",
                            str(replicas + 1))
    return dict(replicas=replicas, copies=copies, num_weights=len(initial),
                fit_error=fit_error, cli_code=code, cli_err=err,
                bad_code=bad_code, bad_err=bad_err)
"""

_JAX_CHILD = (
    _COMMON
    + """
def placement(variable):  # devices holding the variable
    return len(variable.value.sharding.device_set)


print(json.dumps(run("data_parallel")))
"""
)

_TF_CHILD = (
    """
import tensorflow as tf

(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
"""
    + _COMMON
    + """
def placement(variable):  # replicas of the variable
    return len(variable.value.values)


print(json.dumps(run("mirrored")))
"""
)


def _cell_folders(root):
    images, labels, _ = make_touching_cells(3, 64, cell_radius=7, seed=2)
    for i, (image, label) in enumerate(zip(images, labels)):
        for folder, array in (
            ("images", (image * 255).round().astype(np.uint8)),
            ("labels", label * 255),
        ):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / f"{i:02d}.png")
    return root


def _run_child(tmp_path, source, env):
    script = tmp_path / "child.py"
    script.write_text(source)
    cells = _cell_folders(tmp_path / "cells")
    result = subprocess.run(
        [sys.executable, script, tmp_path, cells],
        capture_output=True,
        text=True,
        env=dict(os.environ, KERAS_BACKEND=BACKEND, **env),
        timeout=540,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_same_step(tmp_path, report):
    n = report["num_weights"]
    with np.load(tmp_path / "weights.npz") as saved:
        initial, single, parallel = (
            [saved[f"{name}_{i}"] for i in range(n)]
            for name in ("initial", "single", "parallel")
        )
    # The step moved the weights, by far more than the tolerance.
    moved = max(np.abs(s - i).max() for s, i in zip(single, initial))
    assert moved > 1e-3
    for s, p in zip(single, parallel):
        np.testing.assert_allclose(p, s, rtol=1e-5, atol=1e-6)


def _assert_cli_and_batch_checks(tmp_path, report, replicas):
    assert report["replicas"] == replicas
    assert report["copies"] == replicas  # the weights are on every device
    # `fit` refuses a global batch that does not split over the replicas.
    assert f"multiple of {replicas}" in report["fit_error"]
    assert report["cli_code"] == 0, report["cli_err"]
    assert (tmp_path / "run" / "model.keras").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["batch_size"] == replicas
    log = (tmp_path / "run" / "training_log.csv").read_text().splitlines()
    assert len(log) == 2  # header and one epoch
    loss = float(log[1].split(",")[log[0].split(",").index("loss")])
    assert np.isfinite(loss)
    assert report["bad_code"] == 2
    assert f"multiple of {replicas}" in report["bad_err"]


@pytest.mark.skipif(BACKEND != "jax", reason="DataParallel is the JAX path")
def test_jax_data_parallel_step_equals_single_device_step(tmp_path):
    flags = os.environ.get("XLA_FLAGS", "")
    report = _run_child(
        tmp_path,
        _JAX_CHILD,
        {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=8"},
    )
    _assert_same_step(tmp_path, report)
    _assert_cli_and_batch_checks(tmp_path, report, replicas=8)


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="MirroredStrategy is the TF path"
)
def test_tf_mirrored_step_equals_single_device_step(tmp_path):
    report = _run_child(tmp_path, _TF_CHILD, {})
    _assert_same_step(tmp_path, report)
    _assert_cli_and_batch_checks(tmp_path, report, replicas=2)


# === Backend checks (no subprocess) ===


@pytest.mark.parametrize("name", ["data_parallel", "mirrored", "tpu"])
def test_strategy_of_another_backend_is_a_clear_error(name):
    needed = distribution.REQUIRED_BACKEND[name]
    for backend in ("jax", "tensorflow", "torch"):
        if backend == needed:
            assert distribution.check_strategy(name, backend) == name
            continue
        with pytest.raises(ValueError) as info:
            distribution.check_strategy(name, backend)
        message = str(info.value)
        assert f"active backend is {backend!r}" in message
        assert f"needs the {needed!r} Keras backend" in message
        assert f"KERAS_BACKEND={needed}" in message


def test_unknown_strategy_and_misplaced_options_are_errors():
    with pytest.raises(ValueError, match="Unknown distribution strategy"):
        distribution.check_strategy("horovod")
    with pytest.raises(ValueError, match="option of 'data_parallel'"):
        distribution.make_strategy("none", device_mesh=object())
    with pytest.raises(ValueError, match="multiple of 4"):
        distribution.check_batch_size(6, 4)
    distribution.check_batch_size(8, 4)


def test_none_scope_is_one_replica():
    with distribution.distribution_scope("none") as strategy:
        assert strategy is None
        assert distribution.num_replicas(strategy) == 1
        assert distribution.active_num_replicas() == 1


def test_cli_rejects_a_strategy_of_another_backend(tmp_path, capsys):
    other = "mirrored" if BACKEND == "jax" else "data_parallel"
    code = main(
        ["--backend", BACKEND, "train", "--images", str(tmp_path),
         "--labels", str(tmp_path), "--output-dir", str(tmp_path / "run"),
         "--distribute", other]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert f"active backend is {BACKEND!r}" in err
    assert f"KERAS_BACKEND={distribution.REQUIRED_BACKEND[other]}" in err
    assert not (tmp_path / "run").exists()  # failed before doing anything


# === PyTorch: DistributedDataParallel around the Keras model ===

_TORCH_WORKER = """
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import keras
import keras_unet2015 as ku

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo")
torch.set_num_threads(1)
with np.load(sys.argv[1]) as saved:
    x, y, w = saved["x"], saved["y"], saved["w"]
    initial = [saved[f"w{i}"] for i in range(int(saved["n"]))]
model = ku.UNet2015(depth=%(depth)d, filters=%(filters)d, dropout_rate=0.0)
model.set_weights(initial)
ddp = torch.nn.parallel.DistributedDataParallel(model)
optimizer = torch.optim.SGD(ddp.parameters(), lr=%(lr)r)
loss_fn = ku.WeightedPixelLoss(from_logits=True)
part = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
optimizer.zero_grad()
loss = loss_fn(
    torch.from_numpy(y[part]),
    ddp(torch.from_numpy(x[part])),
    sample_weight=torch.from_numpy(w[part]),
)
loss.backward()
optimizer.step()
np.savez(sys.argv[2] + f"_{rank}.npz", *model.get_weights())
dist.destroy_process_group()
""" % {"depth": DEPTH, "filters": FILTERS, "lr": LEARNING_RATE}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(BACKEND != "torch", reason="DDP is the PyTorch path")
def test_torch_ddp_step_equals_single_process_step(tmp_path):
    import torch

    rng = np.random.default_rng(0)
    x = rng.random((4, INPUT_SIZE, INPUT_SIZE, 1), np.float32)
    y = rng.integers(0, 2, (4, OUTPUT_SIZE, OUTPUT_SIZE)).astype("int32")
    w = rng.random((4, OUTPUT_SIZE, OUTPUT_SIZE), np.float32) + 0.5
    model = keras_unet2015.UNet2015(
        depth=DEPTH, filters=FILTERS, dropout_rate=0.0
    )
    initial = model.get_weights()
    np.savez(
        tmp_path / "inputs.npz",
        x=x, y=y, w=w, n=len(initial),
        **{f"w{i}": v for i, v in enumerate(initial)},
    )  # fmt: skip
    script = tmp_path / "worker.py"
    script.write_text(_TORCH_WORKER)
    port = str(_free_port())
    workers = [
        subprocess.Popen(
            [sys.executable, script, tmp_path / "inputs.npz", tmp_path / "ddp"],
            env=dict(
                os.environ,
                KERAS_BACKEND="torch",
                RANK=str(rank),
                WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    errors = [worker.communicate(timeout=300)[1] for worker in workers]
    for worker, error in zip(workers, errors):
        assert worker.returncode == 0, error[-3000:]

    # The reference: one process, one step on the whole batch.
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss = keras_unet2015.WeightedPixelLoss(from_logits=True)(
        torch.from_numpy(y), model(x), sample_weight=torch.from_numpy(w)
    )
    loss.backward()
    optimizer.step()
    single = model.get_weights()
    assert max(np.abs(s - i).max() for s, i in zip(single, initial)) > 1e-3
    for rank in range(2):
        with np.load(tmp_path / f"ddp_{rank}.npz") as saved:
            parallel = [saved[f"arr_{i}"] for i in range(len(single))]
        for s, p in zip(single, parallel):
            np.testing.assert_allclose(p, s, rtol=1e-5, atol=1e-6)


# === TensorFlow XLA (what a TPU needs) and the static-shape pipeline ===

_needs_tf = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="jit_compile=True is checked on TF"
)


@_needs_tf
def test_tf_fit_step_with_jit_compile_equals_without():
    # Depth 1 (44 -> 28 px) has every kind of layer and compiles faster.
    rng = np.random.default_rng(3)
    x = rng.random((2, INPUT_SIZE, INPUT_SIZE, 1), np.float32)
    y = rng.integers(0, 2, (2, 28, 28)).astype("int32")
    w = rng.random((2, 28, 28), np.float32) + 0.5
    model = keras_unet2015.UNet2015(depth=1, filters=FILTERS, dropout_rate=0.0)
    initial = model.get_weights()
    results = {}
    for jit in (False, True):
        model.set_weights(initial)
        keras_unet2015.training.compile_model(
            model,
            optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.99),
            jit_compile=jit,
        )
        history = model.fit(x, y, sample_weight=w, batch_size=2, verbose=0)
        assert model.jit_compile is jit
        results[jit] = history.history["loss"][0], model.get_weights()
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-5)
    for a, b in zip(results[True][1], results[False][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@_needs_tf
def test_tf_weighted_loss_under_xla_equals_numpy():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 2, (2, 6, 6)).astype("int32")
    w = rng.random((2, 6, 6)).astype(np.float32)
    loss = keras_unet2015.WeightedPixelLoss(from_logits=True)
    value = tf.function(loss, jit_compile=True)(y, logits, sample_weight=w)
    # The paper's energy: weighted cross-entropy of the softmax, averaged.
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(value, np.mean(-w * picked), rtol=1e-5)


@_needs_tf
@pytest.mark.parametrize("name", ["ElasticDeform", "PaperAugmentation"])
def test_tf_augmentation_compiles_with_xla(name):
    import tensorflow as tf

    rng = np.random.default_rng(5)
    data = (
        rng.random((2, 32, 32, 1), np.float32),
        rng.integers(0, 2, (2, 32, 32)).astype("float32"),
        rng.random((2, 32, 32), np.float32),
    )
    layer = getattr(keras_unet2015, name)(seed=7)
    # The whole call (random draws and warp) compiles with static shapes.
    # XLA draws other random numbers than TF's kernels (the stateless
    # algorithm is chosen per device), so the warp is compared below for
    # one given transformation.
    call = tf.function(lambda d: layer(d, training=True), jit_compile=True)
    for out, source in zip(call(data), data):
        assert out.shape == source.shape
        assert np.abs(np.asarray(out) - source).max() > 1e-3  # it deformed
    transformation = layer.get_random_transformation(data, seed=11)
    warp = tf.function(layer.transform, jit_compile=True)
    with_xla = warp(data, transformation)
    without = layer.transform(data, transformation)
    for a, b in zip(with_xla, without):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@_needs_tf
def test_tf_dataset_has_static_shapes():
    images, labels, _ = make_touching_cells(2, 64, cell_radius=7, seed=2)
    dataset = keras_unet2015.datasets.make_tf_dataset(
        images,
        labels,
        input_size=INPUT_SIZE,
        output_size=OUTPUT_SIZE,
        batch_size=2,
        augmentation=keras_unet2015.PaperAugmentation(seed=1),
    )
    shapes = [tuple(spec.shape) for spec in dataset.element_spec]
    # Fully defined, batch dimension included, as XLA on a TPU needs.
    assert shapes == [
        (2, INPUT_SIZE, INPUT_SIZE, 1),
        (2, OUTPUT_SIZE, OUTPUT_SIZE),
        (2, OUTPUT_SIZE, OUTPUT_SIZE),
    ]
    x, y, w = next(iter(dataset))
    assert tuple(x.shape) == shapes[0] and tuple(w.shape) == shapes[2]
