import math

import keras
from keras import ops

from keras_unet2015.backend_utils import standardize_data_format
from keras_unet2015.layers.paper_normal import PaperNormal

IMPLEMENTATIONS = ("auto", "matmul", "conv_transpose")


@keras.saving.register_keras_serializable(package="keras_unet2015")
class UpConvolution2D(keras.layers.Layer):
    """The U-Net's 2x2 stride-2 "up-convolution", computed fast.

    A transposed convolution with a 2x2 kernel and stride 2 has no
    overlapping windows: every input pixel writes one 2x2 output block on its
    own. It is therefore exactly a per-pixel matrix product from `C_in` to
    `4 * filters` channels followed by a depth-to-space rearrangement. That
    formulation avoids the scatter-style gradient of a general transposed
    convolution, which makes a U-Net training step several times slower on
    some backends (JAX on CPU in particular).

    The weights are stored in the layout of `keras.layers.Conv2DTranspose`
    (`kernel` of shape `(2, 2, filters, C_in)`, `bias` of shape `(filters,)`)
    and the result equals `Conv2DTranspose(filters, 2, strides=2)` with the
    same weights, so weights move freely between the two.

    The default initializer is the paper's Gaussian with standard deviation
    `sqrt(2 / N)` where `N` is the number of incoming nodes of one output
    neuron. In a 2x2 stride-2 up-convolution each output pixel receives from
    exactly one input pixel, so `N = C_in`. (Keras's `fan_in` for a
    `Conv2DTranspose` kernel, like Caffe's MSRA filler, counts
    `4 * filters = 2 * C_in` instead.)

    Reference:

    - [Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597)

    Args:
        filters: int. Number of output channels.
        use_bias: bool. Whether to add a bias. Defaults to `True`.
        kernel_initializer: initializer for the kernel, or `None` for the
            paper's `N(0, 2 / C_in)`. Defaults to `None`.
        bias_initializer: initializer for the bias. Defaults to `"zeros"`.
        kernel_regularizer: optional regularizer for the kernel.
        bias_regularizer: optional regularizer for the bias.
        data_format: str. `"channels_last"` or `"channels_first"`, or `None`
            for `keras.config.image_data_format()`. Defaults to `None`.
        implementation: str. `"matmul"` (matrix product + depth-to-space),
            `"conv_transpose"` (Keras's transposed convolution) or `"auto"`
            (the faster one on the current backend: `"conv_transpose"` on
            TensorFlow, `"matmul"` elsewhere). Both give the same result.
            Defaults to `"auto"`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a 4D tensor, the feature map to up-sample.

    Input shape:
        4D tensor `(batch, rows, cols, channels)` for `"channels_last"` or
        `(batch, channels, rows, cols)` for `"channels_first"`.

    Output shape:
        4D tensor with twice the rows and cols and `filters` channels.

    Example:

    ```python
    >>> layer = keras_unet2015.layers.UpConvolution2D(filters=8)
    >>> y = layer(np.ones((1, 5, 7, 16), "float32"))
    >>> tuple(y.shape)
    (1, 10, 14, 8)
    ```
    """

    def __init__(
        self,
        filters,
        use_bias=True,
        kernel_initializer=None,
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        data_format=None,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (
            isinstance(filters, bool)
            or not isinstance(filters, int)
            or filters < 1
        ):
            raise ValueError(
                "`filters` must be a positive integer. "
                f"Received: filters={filters!r}"
            )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"`implementation` must be one of {IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}"
            )
        self.filters = filters
        self.use_bias = use_bias
        self.kernel_initializer = (
            None
            if kernel_initializer is None
            else keras.initializers.get(kernel_initializer)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.data_format = standardize_data_format(data_format)
        self.implementation = implementation
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _resolved_implementation(self):
        if self.implementation != "auto":
            return self.implementation
        if keras.backend.backend() == "tensorflow":
            return "conv_transpose"
        return "matmul"

    def build(self, input_shape):
        channel_axis = -1 if self.data_format == "channels_last" else 1
        in_channels = input_shape[channel_axis]
        if in_channels is None:
            raise ValueError(
                "The channel dimension of the input to "
                f"{self.__class__.__name__} must be known. "
                f"Received: input_shape={input_shape}"
            )
        initializer = self.kernel_initializer
        if initializer is None:
            # The paper's N(0, 2 / C_in), drawn like the other kernels.
            initializer = PaperNormal(stddev=math.sqrt(2.0 / in_channels))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(2, 2, self.filters, in_channels),
            initializer=initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={channel_axis: in_channels}
        )

    def call(self, inputs):
        if self._resolved_implementation() == "conv_transpose":
            outputs = ops.conv_transpose(
                inputs,
                self.kernel,
                strides=2,
                padding="valid",
                data_format=self.data_format,
            )
            if self.use_bias:
                if self.data_format == "channels_last":
                    outputs = outputs + self.bias
                else:
                    outputs = outputs + ops.reshape(
                        self.bias, (1, self.filters, 1, 1)
                    )
            return outputs
        return self._matmul_call(inputs)

    def _matmul_call(self, inputs):
        filters = self.filters
        # (2, 2, F, C) -> (C, 2, 2, F) -> (C, 4F): column (a, b, f) holds the
        # weights that write output pixel (2i + a, 2j + b), channel f.
        kernel = ops.reshape(
            ops.transpose(self.kernel, (3, 0, 1, 2)), (-1, 4 * filters)
        )
        if self.data_format == "channels_first":
            inputs = ops.transpose(inputs, (0, 2, 3, 1))
        shape = ops.shape(inputs)
        batch, rows, cols = shape[0], shape[1], shape[2]
        outputs = ops.matmul(inputs, kernel)  # (B, H, W, 4F)
        if self.use_bias:
            outputs = outputs + ops.tile(self.bias, (4,))
        outputs = ops.reshape(outputs, (batch, rows, cols, 2, 2, filters))
        if self.data_format == "channels_first":
            outputs = ops.transpose(outputs, (0, 5, 1, 3, 2, 4))
            return ops.reshape(outputs, (batch, filters, rows * 2, cols * 2))
        outputs = ops.transpose(outputs, (0, 1, 3, 2, 4, 5))
        return ops.reshape(outputs, (batch, rows * 2, cols * 2, filters))

    def compute_output_shape(self, input_shape):
        def double(size):
            return None if size is None else 2 * size

        if self.data_format == "channels_last":
            batch, rows, cols, _ = input_shape
            return (batch, double(rows), double(cols), self.filters)
        batch, _, rows, cols = input_shape
        return (batch, self.filters, double(rows), double(cols))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "use_bias": self.use_bias,
                "kernel_initializer": (
                    None
                    if self.kernel_initializer is None
                    else keras.initializers.serialize(self.kernel_initializer)
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "data_format": self.data_format,
                "implementation": self.implementation,
            }
        )
        return config
