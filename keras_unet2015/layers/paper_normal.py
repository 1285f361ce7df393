"""The paper's weight initialisation, shared by `UNet2015`'s layers."""

import math

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="keras_unet2015")
class PaperNormal(keras.initializers.VarianceScaling):
    """The paper's untruncated Gaussian, drawn with NumPy.

    The same distribution as `keras.initializers.VarianceScaling(scale=2.0,
    mode="fan_in", distribution="untruncated_normal")` (std
    `sqrt(2 / fan_in)`, or `stddev` when given), with the same seed
    semantics: an integer seed (Keras draws one for `seed=None`) gives the
    same values at every call. The values come from NumPy's generator
    seeded with it, so a seed gives the same weights on every backend, and
    JAX does not compile a random-number kernel for every weight shape
    (about 60 compilations, 10-20 s on a CPU, for the paper's network). A
    `keras.random.SeedGenerator` seed draws with Keras as usual.

    Args:
        stddev: float or `None`. Standard deviation; `None` uses
            `sqrt(2 / fan_in)`. Defaults to `None`.
        seed: int, `keras.random.SeedGenerator` or `None`. Defaults to
            `None`.
    """

    def __init__(self, stddev=None, seed=None):
        super().__init__(
            scale=2.0,
            mode="fan_in",
            distribution="untruncated_normal",
            seed=seed,
        )
        self.stddev = stddev

    def __call__(self, shape, dtype=None):
        if not isinstance(self.seed, int):
            if self.stddev is None:
                return super().__call__(shape, dtype=dtype)
            return keras.random.normal(
                shape, stddev=self.stddev, dtype=dtype, seed=self.seed
            )
        stddev = self.stddev
        if stddev is None:
            # Keras's fan_in: receptive field size times input channels.
            fan_in = shape[0] if len(shape) < 3 else math.prod(shape[:-1])
            stddev = math.sqrt(2.0 / max(1, fan_in))
        rng = np.random.default_rng(self.seed)
        values = rng.standard_normal(tuple(shape), dtype=np.float32)
        values *= np.float32(stddev)
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        if dtype in ("float32", "float64", "float16"):
            return keras.ops.convert_to_tensor(values.astype(dtype))
        return keras.ops.cast(keras.ops.convert_to_tensor(values), dtype)

    def get_config(self):
        return {"stddev": self.stddev, "seed": super().get_config()["seed"]}
