"""`Conv2D` and `MaxPooling2D` with a copy-free channels-last path on PyTorch.

Keras's PyTorch backend runs a channels-last convolution by copying the input
to a contiguous NCHW tensor, converting it back to channels-last memory, and
permuting the result, which costs about as much as the convolution itself for
the U-Net's large, thin feature maps. A contiguous NHWC tensor permuted to
NCHW *is* a channels-last tensor in PyTorch's sense, so no copy is needed:
these subclasses call `torch.nn.functional` directly on that view (with the
bias fused into the convolution). On every other backend, and for options the
fast path does not cover, they are exactly the Keras layers. Weights, configs
and results are the same as Keras's.
"""

import keras


def _torch_fast_path(data_format):
    return keras.backend.backend() == "torch" and data_format == "channels_last"


def _to_torch_layout(kernel):
    kh, kw, cin, cout = kernel.shape
    flat = kernel.reshape(kh * kw * cin, cout).t().contiguous()
    return flat.view(cout, kh, kw, cin).permute(0, 3, 1, 2)


@keras.saving.register_keras_serializable(package="keras_unet2015")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a copy-free channels-last PyTorch path.

    Identical to `keras.layers.Conv2D` (same arguments, weights and results);
    on the PyTorch backend with `channels_last` data, stride 1, no dilation
    and one group it calls `torch.nn.functional.conv2d` on a channels-last
    view of the input instead of copying it to NCHW and back.

    Takes exactly the arguments of `keras.layers.Conv2D`.

    Example:

    ```python
    layer = keras_unet2015.layers.conv.Conv2D(8, 3, activation="relu")
    y = layer(np.ones((1, 10, 10, 1), "float32"))
    y.shape  # (1, 8, 8, 8)
    ```
    """

    def call(self, inputs):
        if not (
            _torch_fast_path(self.data_format)
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
        ):
            return super().call(inputs)
        import torch.nn.functional as F

        kernel = self._torch_kernel()
        bias = keras.ops.convert_to_tensor(self.bias) if self.use_bias else None
        outputs = F.conv2d(
            inputs.permute(0, 3, 1, 2),
            kernel,
            bias,
            padding=self.padding,
        ).permute(0, 2, 3, 1)
        if self.activation is keras.activations.relu:
            # The convolution's fresh output is not needed by its backward
            # pass, so ReLU may overwrite it (as `nn.ReLU(inplace=True)`).
            return F.relu(outputs, inplace=True)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _torch_kernel(self):
        """The kernel as a channels-last `(F, C, kh, kw)` torch tensor.

        oneDNN convolves several times faster with a channels-last weight,
        and the Keras layout `(kh, kw, C, F)` reaches it with one 2D
        transpose. Without gradients (inference) the result is cached until
        the variable changes.
        """
        import torch

        value = self.kernel.value
        # `value` is the stored tensor itself unless a stateless scope or
        # mixed-precision autocast substitutes another one: cache only then.
        if torch.is_grad_enabled() or value is not self.kernel._value:
            return _to_torch_layout(value)
        key = (id(value), value._version, value.data_ptr())
        cached = getattr(self, "_torch_kernel_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, _to_torch_layout(value))
            self._torch_kernel_cache = cached
        return cached[1]


@keras.saving.register_keras_serializable(package="keras_unet2015")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` with a copy-free channels-last PyTorch path.

    Identical to `keras.layers.MaxPooling2D`; on the PyTorch backend with
    `channels_last` data and `"valid"` padding it pools a channels-last view
    of the input instead of copying it to NCHW and back.

    Takes exactly the arguments of `keras.layers.MaxPooling2D`.

    Example:

    ```python
    layer = keras_unet2015.layers.conv.MaxPooling2D(2)
    y = layer(np.ones((1, 10, 10, 3), "float32"))
    y.shape  # (1, 5, 5, 3)
    ```
    """

    def call(self, inputs):
        if not (_torch_fast_path(self.data_format) and self.padding == "valid"):
            return super().call(inputs)
        import torch.nn.functional as F

        return F.max_pool2d(
            inputs.permute(0, 3, 1, 2),
            kernel_size=self.pool_size,
            stride=self.strides,
        ).permute(0, 2, 3, 1)
