import pytest

from keras_unet2015 import sizes


def brute_force_valid(input_size, depth):
    """Independent check: walk the paper's layer list one layer at a time."""
    size = input_size
    for _ in range(depth):
        for _ in range(2):  # two 3x3 valid convs
            size -= 2
            if size < 1:
                return None
        if size % 2:
            return None  # the 2x2 pool would drop a row
        size //= 2
    for _ in range(2):
        size -= 2
        if size < 1:
            return None
    for _ in range(depth):
        size *= 2  # up-convolution
        for _ in range(2):
            size -= 2
            if size < 1:
                return None
    return size


def test_paper_tile():
    assert sizes.output_size(572) == 388
    assert sizes.input_size_for_output(388) == 572
    assert sizes.context_margin() == 92
    assert sizes.size_loss() == 184


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_valid_sizes_match_layer_by_layer_walk(depth):
    expected = [
        s for s in range(1, 700) if brute_force_valid(s, depth) is not None
    ]
    assert sizes.valid_input_sizes(1, 700, depth) == expected
    for s in range(1, 700):
        assert sizes.is_valid_input_size(s, depth) == (s in expected)
    for s in expected:
        assert sizes.output_size(s, depth) == brute_force_valid(s, depth)
        assert s - sizes.output_size(s, depth) == 2 * sizes.context_margin(
            depth
        )


def test_paper_rule_16k_plus_60():
    valid = sizes.valid_input_sizes(0, 1000)
    assert valid[0] == 188  # smallest: 188 -> 4
    assert sizes.output_size(188) == 4
    assert all((s - 60) % 16 == 0 for s in valid)
    assert sizes.smallest_valid_input(4) == 188
    # depth 1: 18 -> 14 | 7 -> 3 -> up 6 -> 2
    assert sizes.smallest_valid_input(1) == 18
    assert sizes.output_size(18, depth=1) == 2


@pytest.mark.parametrize("wanted", [1, 4, 5, 100, 388, 389, 500])
def test_input_size_for_output_is_smallest_sufficient(wanted):
    got = sizes.input_size_for_output(wanted)
    assert sizes.is_valid_input_size(got)
    assert sizes.output_size(got) >= wanted
    smaller = [s for s in sizes.valid_input_sizes(0, got) if s < got]
    assert all(sizes.output_size(s) < wanted for s in smaller)


def test_same_padding_sizes():
    assert sizes.valid_input_sizes(0, 70, padding="same") == [16, 32, 48, 64]
    assert sizes.output_size(512, padding="same") == 512
    assert sizes.size_loss(padding="same") == 0
    with pytest.raises(ValueError, match="multiple of 2\\*\\*depth = 16"):
        sizes.output_size(500, padding="same")


def test_invalid_size_error_names_nearest_valid_sizes():
    with pytest.raises(ValueError) as info:
        sizes.output_size(570)
    message = str(info.value)
    assert "570" in message
    assert "556 or 572" in message
    with pytest.raises(ValueError, match="Nearest valid sizes: 188"):
        sizes.output_size(100)
    assert sizes.nearest_valid_input_sizes(570) == (556, 572)
    assert sizes.nearest_valid_input_sizes(572) == (572, 572)
    assert sizes.nearest_valid_input_sizes(10) == (None, 188)


@pytest.mark.parametrize(
    "call",
    [
        lambda: sizes.output_size(572.0),
        lambda: sizes.output_size(572, depth=0),
        lambda: sizes.output_size(572, padding="full"),
        lambda: sizes.input_size_for_output(0),
        lambda: sizes.valid_input_sizes(0, "10"),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
