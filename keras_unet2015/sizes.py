"""Input and output sizes of the U-Net: the arithmetic of valid convolutions.

With unpadded ("valid") 3x3 convolutions every conv layer removes one pixel on
each side, and every 2x2 max-pool needs an even size. For the paper's network
(depth 4) this gives

    input = 16 * k + 60,  output = input - 184,  k >= 8,

so a 572x572 tile gives a 388x388 output, and each output pixel sees 92 pixels
of context on every side. The functions here answer the questions every user
of a valid-convolution U-Net asks, for any depth. They are plain Python and
need no backend.
"""

import math

# Two 3x3 valid convolutions per level remove 2 * (3 - 1) = 4 pixels.
_CONV_LOSS = 4

VALID_PADDINGS = ("valid", "same")


def _check_depth(depth):
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(
            "`depth` must be a positive integer (the number of 2x2 "
            f"max-pool steps; the paper uses 4). Received: depth={depth!r}"
        )


def _check_padding(padding):
    if padding not in VALID_PADDINGS:
        raise ValueError(
            f"`padding` must be one of {VALID_PADDINGS}. "
            f"Received: padding={padding!r}"
        )


def _check_size(size, name="input_size"):
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(
            f"`{name}` must be an integer number of pixels. "
            f"Received: {name}={size!r} of type {type(size).__name__}"
        )


def _simulate(input_size, depth):
    """Walks one spatial size through the valid network.

    Returns the output size, or `None` when the size is not valid (an odd
    size before a max-pool, or a layer with no pixels left).
    """
    size = input_size
    for _ in range(depth):
        size -= _CONV_LOSS
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= _CONV_LOSS  # bottom level
    if size < 1:
        return None
    for _ in range(depth):
        size = 2 * size - _CONV_LOSS
        if size < 1:
            return None
    return size


def size_loss(depth=4, padding="valid"):
    """Total number of pixels the network removes along one axis.

    `12 * 2**depth - 8` for valid padding (184 for the paper's depth 4), and 0
    for `"same"` padding.

    Args:
        depth: int. Number of max-pool steps. Defaults to `4`.
        padding: str. `"valid"` or `"same"`. Defaults to `"valid"`.

    Returns:
        The difference `input_size - output_size`.

    Example:

    ```python
    >>> keras_unet2015.sizes.size_loss(4)
    184
    >>> keras_unet2015.sizes.size_loss(4, padding="same")
    0
    ```
    """
    _check_depth(depth)
    _check_padding(padding)
    if padding == "same":
        return 0
    return 12 * 2**depth - 8


def context_margin(depth=4):
    """Context, in pixels, an output pixel needs on each side of the input.

    This is the radius of the receptive field: 92 px for the paper's network.
    With valid padding it is also what the network crops on each side. A
    same-padding network of depth >= 2 reaches up to 2 px further on one
    side (its pools see zero-padded maps), which is why
    `OverlapTilePredictor` uses a margin of `context_margin + 2`, rounded up
    to a multiple of `2**depth`, for same-padding models.

    Args:
        depth: int. Number of max-pool steps. Defaults to `4`.

    Returns:
        `6 * 2**depth - 4`.

    Example:

    ```python
    >>> keras_unet2015.sizes.context_margin(4)
    92
    ```
    """
    return size_loss(depth, "valid") // 2


def is_valid_input_size(input_size, depth=4, padding="valid"):
    """Whether a spatial size can be fed to the network.

    Args:
        input_size: int. Height or width of the input.
        depth: int. Number of max-pool steps. Defaults to `4`.
        padding: str. `"valid"` or `"same"`. Defaults to `"valid"`.

    Returns:
        `True` when every max-pool sees an even size and the output is at
        least one pixel.

    Example:

    ```python
    >>> keras_unet2015.sizes.is_valid_input_size(572)
    True
    >>> keras_unet2015.sizes.is_valid_input_size(512)
    False
    >>> keras_unet2015.sizes.is_valid_input_size(512, padding="same")
    True
    ```
    """
    _check_size(input_size)
    _check_depth(depth)
    _check_padding(padding)
    if padding == "same":
        return input_size > 0 and input_size % 2**depth == 0
    return _simulate(input_size, depth) is not None


def valid_input_sizes(start, stop, depth=4, padding="valid"):
    """All valid input sizes in `[start, stop)`.

    Args:
        start: int. Smallest size to consider.
        stop: int. One past the largest size to consider.
        depth: int. Number of max-pool steps. Defaults to `4`.
        padding: str. `"valid"` or `"same"`. Defaults to `"valid"`.

    Returns:
        A sorted list of ints.

    Example:

    ```python
    >>> keras_unet2015.sizes.valid_input_sizes(560, 600)
    [572, 588]
    ```
    """
    _check_size(start, "start")
    _check_size(stop, "stop")
    _check_depth(depth)
    _check_padding(padding)
    step = 2**depth
    first = smallest_valid_input(depth, padding)
    if start <= first:
        begin = first
    else:
        begin = first + math.ceil((start - first) / step) * step
    return list(range(begin, stop, step))


def smallest_valid_input(depth=4, padding="valid"):
    """The smallest valid input size: 188 (output 4) for the paper's network.

    Args:
        depth: int. Number of max-pool steps. Defaults to `4`.
        padding: str. `"valid"` or `"same"`. Defaults to `"valid"`.

    Returns:
        An int; all valid sizes are this plus multiples of `2**depth`.

    Example:

    ```python
    >>> keras_unet2015.sizes.smallest_valid_input(4)
    188
    >>> keras_unet2015.sizes.smallest_valid_input(2)
    44
    ```
    """
    _check_depth(depth)
    _check_padding(padding)
    if padding == "same":
        return 2**depth
    # Walk the output size 1, 2, ... backwards; the first output whose input
    # exists is the smallest valid configuration.
    size = 1
    while True:
        candidate = _input_for_output(size, depth)
        if candidate is not None:
            return candidate
        size += 1


def _input_for_output(output_size, depth):
    """Exact input size for an output size, or `None` if there is none."""
    size = output_size
    for _ in range(depth):
        size += _CONV_LOSS
        if size % 2:
            return None
        size //= 2
    size += _CONV_LOSS  # bottom level
    for _ in range(depth):
        size = 2 * size + _CONV_LOSS
    return size


def nearest_valid_input_sizes(input_size, depth=4, padding="valid"):
    """The valid input sizes just below and just above `input_size`.

    Args:
        input_size: int. Any size.
        depth: int. Number of max-pool steps. Defaults to `4`.
        padding: str. `"valid"` or `"same"`. Defaults to `"valid"`.

    Returns:
        A tuple `(below, above)`; `below` is `None` when no valid size is
        smaller. Equal to `(input_size, input_size)` for a valid size.

    Example:

    ```python
    >>> keras_unet2015.sizes.nearest_valid_input_sizes(512)
    (508, 524)
    >>> keras_unet2015.sizes.nearest_valid_input_sizes(572)
    (572, 572)
    ```
    """
    _check_size(input_size)
    if is_valid_input_size(input_size, depth, padding):
        return input_size, input_size
    step = 2**depth
    first = smallest_valid_input(depth, padding)
    if input_size < first:
        return None, first
    below = first + ((input_size - first) // step) * step
    return below, below + step


def check_input_size(input_size, depth=4, padding="valid", name="input size"):
    """Raises a `ValueError` naming the nearest valid sizes if not valid.

    Args:
        input_size: int. Height or width of the input.
        depth: int. Number of max-pool steps. Defaults to `4`.
        padding: str. `"valid"` or `"same"`. Defaults to `"valid"`.
        name: str. What to call the size in the error message.
            Defaults to `"input size"`.

    Raises:
        ValueError: if `input_size` is not valid; the message names the
            nearest valid sizes.

    Example:

    ```python
    >>> keras_unet2015.sizes.check_input_size(572)  # valid: no error
    >>> keras_unet2015.sizes.check_input_size(512)
    Traceback (most recent call last):
        ...
    ValueError: Invalid input size 512 ... sizes: 508 or 524. ...
    ```
    """
    if is_valid_input_size(input_size, depth, padding):
        return
    below, above = nearest_valid_input_sizes(input_size, depth, padding)
    if padding == "same":
        rule = f"a multiple of 2**depth = {2**depth}"
    else:
        rule = (
            "such that every 2x2 max-pool sees an even size and the "
            f"output has at least 1 px: {smallest_valid_input(depth)} + "
            f"{2**depth} * k for k >= 0 (output = input - "
            f"{size_loss(depth)})"
        )
    nearest = [str(s) for s in (below, above) if s is not None]
    raise ValueError(
        f"Invalid {name} {input_size} for a U-Net of depth {depth} with "
        f"padding='{padding}'. The size must be {rule}. Nearest valid "
        f"sizes: {' or '.join(nearest)}. Pad or crop the input to one of "
        f"them, or use `OverlapTilePredictor` for images of any size."
    )


def output_size(input_size, depth=4, padding="valid"):
    """Output size of the network for an input size.

    Args:
        input_size: int. Height or width of the input tile.
        depth: int. Number of max-pool steps. Defaults to `4`.
        padding: str. `"valid"` or `"same"`. Defaults to `"valid"`.

    Returns:
        The output height or width.

    Raises:
        ValueError: if `input_size` is not valid; the message names the
            nearest valid sizes.

    Example:

    ```python
    >>> keras_unet2015.sizes.output_size(572)
    388
    ```
    """
    check_input_size(input_size, depth, padding)
    return input_size - size_loss(depth, padding)


def input_size_for_output(output_size, depth=4, padding="valid"):
    """Smallest valid input size whose output is at least `output_size`.

    For an output size that the network can produce exactly (388 at depth 4)
    this is the exact input size (572); otherwise the output is the next
    larger achievable size.

    Args:
        output_size: int. Wanted output height or width, at least 1.
        depth: int. Number of max-pool steps. Defaults to `4`.
        padding: str. `"valid"` or `"same"`. Defaults to `"valid"`.

    Returns:
        A valid input size.

    Example:

    ```python
    >>> keras_unet2015.sizes.input_size_for_output(388)
    572
    >>> keras_unet2015.sizes.input_size_for_output(500)
    684
    >>> keras_unet2015.sizes.input_size_for_output(501)  # 500 + 16
    700
    ```
    """
    _check_size(output_size, "output_size")
    if output_size < 1:
        raise ValueError(
            f"`output_size` must be at least 1. Received: {output_size}"
        )
    _check_depth(depth)
    _check_padding(padding)
    wanted_input = output_size + size_loss(depth, padding)
    below, above = nearest_valid_input_sizes(wanted_input, depth, padding)
    return wanted_input if below == wanted_input else above
