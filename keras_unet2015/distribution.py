"""Training on several devices with Keras's and TensorFlow's own machinery.

One name picks the distribution machinery of the active Keras backend:

- `"none"` (any backend): one device, the default.
- `"data_parallel"` (JAX): `keras.distribution.DataParallel`. The weights
  are replicated on every device and each batch is split along its first
  axis; on several hosts, call `keras.distribution.initialize()` first.
- `"mirrored"` (TensorFlow): `tf.distribute.MirroredStrategy`, the same on
  the GPUs (or CPUs) of one machine.
- `"tpu"` (TensorFlow): `tf.distribute.TPUStrategy` on a Cloud TPU.

Build, compile **and** train the model inside `distribution_scope(name)`
(JAX reads the distribution when the weights are created and again when
`fit` splits the batches; TensorFlow when the model is created).

**Batch size.** `batch_size` (of `model.fit`, of
`keras_unet2015.datasets.TrainingSampleStream`, of `keras-unet2015 train
--batch-size`) is the **global** batch: each of the `N` replicas computes the
gradient of `batch_size / N` tiles, and the replicas' gradients are averaged,
so one step on `N` devices updates the weights as one step on one device with
the whole batch (up to the order of floating-point sums). `batch_size` must
be a multiple of `N`; the paper's one tile per batch uses one device.

PyTorch: `model.fit` on the torch backend trains on one device and Keras
has no distribution API for it, so every name but `"none"` raises a
`ValueError` there. The Keras model *is* a `torch.nn.Module`, and PyTorch's
own `torch.nn.parallel.DistributedDataParallel` can wrap it in a training
loop written in PyTorch (see the "Scaling out" page of the documentation).

Example:

```python
with keras_unet2015.distribution.distribution_scope("data_parallel"):
    model = keras_unet2015.UNet2015(depth=2, filters=16)
    keras_unet2015.training.compile_model(model)
    model.fit(x, y, sample_weight=w, batch_size=8)  # 8 GPUs: 1 tile each
```
"""

import contextlib

import keras

__all__ = [
    "active_num_replicas",
    "check_batch_size",
    "check_strategy",
    "distribution_scope",
    "make_strategy",
    "num_replicas",
]

#: The accepted strategy names.
STRATEGIES = ("none", "data_parallel", "mirrored", "tpu")
#: The Keras backend each strategy needs.
REQUIRED_BACKEND = {
    "data_parallel": "jax",
    "mirrored": "tensorflow",
    "tpu": "tensorflow",
}
_STRATEGY_OF_BACKEND = {"jax": "data_parallel", "tensorflow": "mirrored"}


def check_strategy(name, backend=None):
    """Raises `ValueError` unless strategy `name` runs on `backend`.

    Args:
        name: str. One of `STRATEGIES`.
        backend: `None` or str. A Keras backend name; `None` uses the
            active one (`keras.backend.backend()`). Defaults to `None`.

    Returns:
        `name`.

    Example:

    ```python
    keras_unet2015.distribution.check_strategy("mirrored", "tensorflow")
    try:
        keras_unet2015.distribution.check_strategy("mirrored", "jax")
    except ValueError as error:
        print(error)  # ... needs the 'tensorflow' Keras backend ...
    ```
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown distribution strategy {name!r}. Expected one of "
            f"{STRATEGIES}."
        )
    backend = keras.backend.backend() if backend is None else backend
    needed = REQUIRED_BACKEND.get(name)
    if needed is None or needed == backend:
        return name
    if backend == "torch":
        hint = (
            "On PyTorch, `model.fit` trains on one device: use "
            "distribute='none', or wrap the model in "
            "torch.nn.parallel.DistributedDataParallel in a PyTorch "
            "training loop (see the 'Scaling out' documentation page)"
        )
    else:
        hint = (
            f"On the {backend!r} backend use distribute="
            f"{_STRATEGY_OF_BACKEND[backend]!r}"
        )
    raise ValueError(
        f"The distribution strategy {name!r} needs the {needed!r} Keras "
        f"backend, but the active backend is {backend!r}. Set "
        f"KERAS_BACKEND={needed} before starting Python (on the command "
        f"line: --backend {needed}). {hint}."
    )


def make_strategy(name="none", devices=None, device_mesh=None, tpu=None):
    """The Keras distribution or TensorFlow strategy called `name`.

    Args:
        name: str. `"none"`, `"data_parallel"` (JAX), `"mirrored"`
            (TensorFlow) or `"tpu"` (TensorFlow). Defaults to `"none"`.
        devices: `None` or a list of device names. `"data_parallel"`:
            JAX devices such as `["gpu:0", "gpu:1"]`; `"mirrored"`:
            TensorFlow devices such as `["/gpu:0", "/gpu:1"]`. `None` uses
            every device: with JAX on several hosts every device of every
            host (after `keras.distribution.initialize()`); with
            `"mirrored"` every GPU, or every logical CPU device when there
            is no GPU. Defaults to `None`.
        device_mesh: `None` or a one-axis `keras.distribution.DeviceMesh`
            for `"data_parallel"`, instead of `devices`. Defaults to
            `None`.
        tpu: `None` or str. `"tpu"`: the TPU name or `grpc://` address
            for `tf.distribute.cluster_resolver.TPUClusterResolver`;
            `None` or `""` finds the TPU of a Cloud TPU VM or Colab.
            Defaults to `None`.

    Returns:
        `None` (`"none"`), a `keras.distribution.DataParallel` or a
        `tf.distribute.Strategy`.

    Example:

    ```python
    name = {"jax": "data_parallel", "tensorflow": "mirrored"}.get(
        keras.backend.backend(), "none"
    )
    strategy = keras_unet2015.distribution.make_strategy(name)
    print(keras_unet2015.distribution.num_replicas(strategy))  # devices
    ```
    """
    check_strategy(name)
    if name != "data_parallel" and device_mesh is not None:
        raise ValueError(
            "`device_mesh` is an option of 'data_parallel' only. "
            f"Received: name={name!r}, device_mesh={device_mesh!r}"
        )
    if name not in ("data_parallel", "mirrored") and devices is not None:
        raise ValueError(
            "`devices` is an option of 'data_parallel' and 'mirrored' only. "
            f"Received: name={name!r}, devices={devices!r}"
        )
    if name == "none":
        return None
    if name == "data_parallel":
        if devices is not None and device_mesh is not None:
            raise ValueError("Pass `devices` or `device_mesh`, not both.")
        return keras.distribution.DataParallel(
            device_mesh=device_mesh,
            devices=None if devices is None else list(devices),
        )
    import tensorflow as tf

    if name == "mirrored":
        if devices is None and not tf.config.list_logical_devices("GPU"):
            # TensorFlow's default is then one CPU device; several logical
            # CPU devices only exist when they were configured on purpose.
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            devices=None if devices is None else list(devices)
        )
    # The steps of https://www.tensorflow.org/guide/tpu.
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu or ""
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(
            f"No TPU could be reached (tpu={tpu!r}): "
            f"{str(error).rstrip('.')}. Run on a "
            "Cloud TPU VM or Colab TPU runtime, or pass the TPU name or "
            "its grpc:// address as `tpu` (--tpu on the command line)."
        ) from error
    return tf.distribute.TPUStrategy(resolver)


def num_replicas(strategy):
    """The number of model replicas of a `make_strategy` result.

    Args:
        strategy: `None`, a `keras.distribution.DataParallel` or a
            `tf.distribute.Strategy`.

    Returns:
        int. `1` for `None`.

    Example:

    ```python
    strategy = keras_unet2015.distribution.make_strategy("none")
    assert keras_unet2015.distribution.num_replicas(strategy) == 1
    ```
    """
    if strategy is None:
        return 1
    if isinstance(strategy, keras.distribution.DataParallel):
        mesh = strategy.device_mesh
        return int(mesh.shape[mesh.axis_names.index(strategy.batch_dim_name)])
    return int(strategy.num_replicas_in_sync)


def active_num_replicas():
    """Replicas of the distribution or strategy active here (else `1`).

    Returns:
        int. The replicas of the active `keras.distribution` distribution
        (JAX) or `tf.distribute` strategy (TensorFlow); `1` outside them.

    Example:

    ```python
    with keras_unet2015.distribution.distribution_scope("none"):
        assert keras_unet2015.distribution.active_num_replicas() == 1
    ```
    """
    distribution = keras.distribution.distribution()
    if distribution is not None:
        return num_replicas(distribution)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            return num_replicas(tf.distribute.get_strategy())
    return 1


def check_batch_size(batch_size, replicas):
    """Raises `ValueError` unless the global batch splits evenly.

    Args:
        batch_size: int. The global batch size.
        replicas: int. The number of replicas.

    Raises:
        ValueError: if `batch_size` is not a multiple of `replicas`.

    Example:

    ```python
    keras_unet2015.distribution.check_batch_size(8, 4)  # 2 tiles each
    try:
        keras_unet2015.distribution.check_batch_size(6, 4)
    except ValueError as error:
        print(error)  # ... must be a multiple of 4 ... Use 4 or 8.
    ```
    """
    if batch_size % replicas:
        low = max(replicas, batch_size - batch_size % replicas)
        raise ValueError(
            f"The batch size is the global batch, split evenly over the "
            f"{replicas} replicas, so it must be a multiple of {replicas}. "
            f"Received: batch_size={batch_size}. Use {low} or "
            f"{low + replicas}."
        )


@contextlib.contextmanager
def distribution_scope(name="none", devices=None, device_mesh=None, tpu=None):
    """Context manager to build, compile and fit a model on several devices.

    Args:
        name: str. `"none"`, `"data_parallel"` (JAX), `"mirrored"`
            (TensorFlow) or `"tpu"` (TensorFlow). Defaults to `"none"`.
        devices: `None` or a list of device names. See `make_strategy`.
            Defaults to `None`.
        device_mesh: `None` or a `keras.distribution.DeviceMesh`. See
            `make_strategy`. Defaults to `None`.
        tpu: `None` or str. See `make_strategy`. Defaults to `None`.

    Yields:
        The `make_strategy` result (`None` for `"none"`).

    Example:

    ```python
    # "data_parallel" on JAX, "mirrored" on TensorFlow: every device.
    name = {"jax": "data_parallel", "tensorflow": "mirrored"}.get(
        keras.backend.backend(), "none"
    )
    with keras_unet2015.distribution.distribution_scope(name) as strategy:
        replicas = keras_unet2015.distribution.num_replicas(strategy)
        model = keras_unet2015.UNet2015(depth=1, filters=4)  # 44 -> 28 px
        keras_unet2015.training.compile_model(model)
        x = np.random.rand(2 * replicas, 44, 44, 1).astype("float32")
        y = np.random.randint(0, 2, (2 * replicas, 28, 28))
        # The global batch: 2 tiles per replica.
        model.fit(x, y, batch_size=2 * replicas, verbose=0)
    ```
    """
    strategy = make_strategy(name, devices, device_mesh, tpu)
    if strategy is None:
        yield None
        return
    with strategy.scope():
        yield strategy
