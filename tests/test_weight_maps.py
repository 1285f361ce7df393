import math

import numpy as np
import pytest
from scipy import ndimage

from keras_unet2015 import weight_maps


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """These tests use NumPy and SciPy only: no Keras state to reset.

    Overrides the conftest fixture, whose `keras.backend.clear_session()`
    costs about half a second per test.
    """
    yield


W0 = 10.0
SIGMA = 5.0
TOLERANCE = 1e-6
# float32 output: allow its rounding on top of the documented tolerance.
FLOAT32_SLACK = 2e-6


# === Independent reference: one full-image EDT per cell ===


def reference_distances(instances):
    """Distances to the nearest and second-nearest cell, by brute force.

    One `distance_transform_edt` per cell over the whole image; the two
    smallest values per pixel are kept as the cells go by.
    """
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    for cell in np.unique(instances):
        if cell == 0:
            continue
        distance = ndimage.distance_transform_edt(instances != cell)
        d2 = np.minimum(d2, np.maximum(d1, distance))
        d1 = np.minimum(d1, distance)
    return d1, d2


def reference_border_term(instances, w0=W0, sigma=SIGMA):
    d1, d2 = reference_distances(instances)
    with np.errstate(invalid="ignore"):
        term = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    term[~np.isfinite(d2)] = 0.0
    term[instances != 0] = 0.0
    return term


def reference_class_term(instances):
    """Inverse class frequency, mean 1 over the image (classes present)."""
    cell = instances != 0
    n = cell.size
    present = [c for c in (False, True) if (cell == c).any()]
    weights = np.ones(cell.shape)
    for c in present:
        weights[cell == c] = n / (len(present) * (cell == c).sum())
    return weights


def random_instances(seed, shape=(48, 56), n_cells=12, touching=False):
    """Random rectangles and disks with non-consecutive ids.

    Some cells overlap the image border; later cells overwrite earlier ones,
    so cells touch each other when `touching` is set.
    """
    rng = np.random.default_rng(seed)
    instances = np.zeros(shape, np.int32)
    rows, cols = np.indices(shape)
    ids = rng.choice(np.arange(1, 5000), size=n_cells, replace=False)
    for cell in ids:
        cy, cx = rng.integers(-3, shape[0] + 3), rng.integers(-3, shape[1] + 3)
        if rng.random() < 0.5:
            r = rng.integers(2, 7)
            region = (rows - cy) ** 2 + (cols - cx) ** 2 <= r * r
        else:
            hy, hx = rng.integers(1, 6, size=2)
            region = (abs(rows - cy) <= hy) & (abs(cols - cx) <= hx)
        if not touching:
            grown = ndimage.binary_dilation(instances != 0, iterations=1)
            region &= ~grown
        instances[region] = cell
    return instances


def voronoi_instances(seed, shape=(64, 64), n_cells=20):
    """A packed tissue: Voronoi cells of random seeds, all touching."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, bool)
    ys = rng.integers(0, shape[0], n_cells)
    xs = rng.integers(0, shape[1], n_cells)
    seeds[ys, xs] = True
    markers = np.zeros(shape, np.int32)
    markers[ys, xs] = 7 * np.arange(1, n_cells + 1)
    _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    return markers[iy, ix]


def assert_within_tolerance(
    fast, reference, border=None, w0=W0, tolerance=TOLERANCE
):
    """Error at most `tolerance * w0`, and only where the border term is
    that small (`border`: the reference border term, when `reference` is a
    full weight map)."""
    border = reference if border is None else border
    error = np.abs(fast.astype(np.float64) - reference)
    assert error.max() <= tolerance * w0 + FLOAT32_SLACK
    large = border > tolerance * w0
    np.testing.assert_allclose(
        fast[large], reference[large], rtol=1e-6, atol=FLOAT32_SLACK
    )


def assert_weight_map_matches_reference(weights, instances):
    border = reference_border_term(instances)
    assert_within_tolerance(
        weights, reference_class_term(instances) + border, border=border
    )


# === Hand-computed values ===


def test_two_cells_hand_computed():
    # Cell 3 fills columns 1-2, cell 8 columns 6-7; background elsewhere.
    instances = np.zeros((5, 9), np.int32)
    instances[:, 1:3] = 3
    instances[:, 6:8] = 8
    weights = weight_maps.unet_weight_map(instances)
    # 45 pixels: 20 cell pixels, 25 background pixels.
    w_cell = 45 / (2 * 20)  # 1.125
    w_background = 45 / (2 * 25)  # 0.9
    outer = w_background + 10 * math.exp(-(7**2) / 50)  # d1 = 1, d2 = 6
    inner = w_background + 10 * math.exp(-(4**2) / 50)  # d1 + d2 = 4
    expected_row = [
        outer,
        w_cell,
        w_cell,
        inner,
        inner,
        inner,
        w_cell,
        w_cell,
        outer,
    ]
    np.testing.assert_allclose(
        weights, np.tile(expected_row, (5, 1)), rtol=1e-6
    )
    assert weights.dtype == np.float32


def test_diagonal_distances_are_euclidean():
    instances = np.zeros((3, 3), np.int32)
    instances[0, 0] = 1
    instances[2, 2] = 2
    d1, d2 = weight_maps.border_distances(instances)
    assert d1[1, 1] == pytest.approx(math.sqrt(2))
    assert d2[1, 1] == pytest.approx(math.sqrt(2))
    assert (d1[1, 0], d2[1, 0]) == pytest.approx((1.0, math.sqrt(5)))
    border = weight_maps.border_weight_map(instances)
    assert border[1, 1] == pytest.approx(10 * math.exp(-8 / 50), rel=1e-6)
    assert border[0, 2] == pytest.approx(10 * math.exp(-16 / 50), rel=1e-6)
    assert border[1, 0] == pytest.approx(
        10 * math.exp(-((1 + math.sqrt(5)) ** 2) / 50), rel=1e-6
    )
    assert border[0, 0] == 0 and border[2, 2] == 0


def test_w0_and_sigma_enter_the_formula_as_written():
    # Not sigma squared, and d1 + d2 rather than d1 - d2.
    instances = np.array([[1, 0, 0, 0, 2]])
    border = weight_maps.border_weight_map(instances, w0=3.0, sigma=2.0)
    # Middle pixel: d1 = d2 = 2; next to a cell: d1 = 1, d2 = 3.
    expected = 3.0 * math.exp(-(4**2) / (2 * 2.0**2))
    np.testing.assert_allclose(
        border[0], [0, expected, expected, expected, 0], rtol=1e-6
    )


# === Against the brute-force reference ===


@pytest.mark.parametrize("seed", range(6))
def test_random_instances_match_reference(seed):
    instances = random_instances(seed, touching=seed % 2 == 1)
    reference = reference_border_term(instances)
    assert reference.max() > 5  # cells close enough to matter
    border = weight_maps.border_weight_map(instances)
    assert_within_tolerance(border, reference)
    assert_weight_map_matches_reference(
        weight_maps.unet_weight_map(instances), instances
    )


@pytest.mark.parametrize("seed", range(3))
def test_packed_tissue_matches_reference(seed):
    # Small cells: a quarter of the image is background.
    instances = weight_maps.separate_touching_cells(voronoi_instances(seed))
    assert_within_tolerance(
        weight_maps.border_weight_map(instances),
        reference_border_term(instances),
    )
    # Large cells, two-pixel gaps, plus a wide gap: little background
    # (the implementation then settles the thin gaps in a first, short-range
    # pass and the wide gap in a second one).
    instances = weight_maps.separate_touching_cells(
        voronoi_instances(seed, shape=(128, 128), n_cells=16)
    )
    instances[60:65, 20:90] = 0
    assert (instances == 0).mean() < 0.15
    reference = reference_border_term(instances)
    assert_within_tolerance(weight_maps.border_weight_map(instances), reference)
    wide_gap = reference[60:65, 20:90]
    assert (wide_gap > 0.1).any() and (wide_gap < 5).any()


def test_exact_mode_and_other_parameters_match_reference():
    instances = random_instances(11, touching=True)
    exact = weight_maps.border_weight_map(instances, tolerance=0)
    np.testing.assert_allclose(
        exact, reference_border_term(instances), rtol=1e-6, atol=1e-7
    )
    coarse = weight_maps.border_weight_map(
        instances, w0=4.0, sigma=2.5, tolerance=1e-3
    )
    assert_within_tolerance(
        coarse,
        reference_border_term(instances, w0=4.0, sigma=2.5),
        border=None,
        w0=4.0,
        tolerance=1e-3,
    )


def test_border_distances_with_max_distance():
    instances = random_instances(5, touching=True)
    d1_ref, d2_ref = reference_distances(instances)
    d1, d2 = weight_maps.border_distances(instances)
    np.testing.assert_allclose(d1, d1_ref)
    np.testing.assert_allclose(d2, d2_ref)
    d1, d2 = weight_maps.border_distances(instances, max_distance=4.5)
    for fast, ref in ((d1, d1_ref), (d2, d2_ref)):
        near = ref <= 4.5
        np.testing.assert_allclose(fast[near], ref[near])
        assert np.isinf(fast[~near]).all()


def test_isbi_labels_match_reference(shared_data):
    from PIL import Image

    # A whole slice, and a 256x256 window of another one (whose cells are
    # cut by the window's edge).
    for name, window in (
        ("00.png", np.s_[:, :]),
        ("17.png", np.s_[128:384, 128:384]),
    ):
        path = shared_data / "isbi2012" / "train" / "labels" / name
        labels = np.array(Image.open(path))[window]
        instances = weight_maps.isbi_instances(labels)
        cells, count = ndimage.label(labels == 255)
        assert instances.max() == count > 30
        np.testing.assert_array_equal(instances != 0, labels == 255)
        weights = weight_maps.unet_weight_map(instances)
        assert_weight_map_matches_reference(weights, instances)
        # A boolean mask of the cells gives the same map.
        np.testing.assert_array_equal(
            weight_maps.unet_weight_map(labels == 255), weights
        )


def test_nuclei_instances_match_reference(shared_data):
    import tifffile

    instances = tifffile.imread(
        shared_data / "stardist-dsb2018-nuclei2d" / "mask2d.tif"
    )
    assert instances.dtype == np.uint16
    separated = weight_maps.separate_touching_cells(instances)
    assert_separated(instances, separated)
    target, weights = weight_maps.target_and_weight_map(instances)
    np.testing.assert_array_equal(target, (separated != 0).astype(np.uint8))
    assert_weight_map_matches_reference(weights, separated)
    # No two nuclei merge in the binary target, under either connectivity.
    components, _ = ndimage.label(target, structure=np.ones((3, 3)))
    for component in range(1, components.max() + 1):
        assert np.unique(separated[components == component]).size == 1


# === Special inputs ===


def test_no_cells():
    instances = np.zeros((6, 7), np.uint8)
    np.testing.assert_array_equal(weight_maps.border_weight_map(instances), 0)
    np.testing.assert_array_equal(weight_maps.unet_weight_map(instances), 1)
    weights = weight_maps.unet_weight_map(instances, class_weights=(2.0, 3.0))
    np.testing.assert_array_equal(weights, 2.0)
    d1, d2 = weight_maps.border_distances(instances)
    assert np.isinf(d1).all() and np.isinf(d2).all()


def test_one_cell_has_no_second_nearest():
    instances = np.zeros((9, 9), np.int64)
    instances[3:5, 2:6] = 42
    d1, d2 = weight_maps.border_distances(instances)
    np.testing.assert_allclose(
        d1, ndimage.distance_transform_edt(instances == 0)
    )
    assert np.isinf(d2).all()
    np.testing.assert_array_equal(weight_maps.border_weight_map(instances), 0)
    weights = weight_maps.unet_weight_map(instances)
    np.testing.assert_allclose(weights, reference_class_term(instances))


def test_cells_touching_the_image_border():
    # The image edge is not a cell: only the gap between the two cells
    # gets a border weight.
    instances = np.array([[5, 0, 0, 0, 9], [5, 0, 0, 0, 9]])
    border = weight_maps.border_weight_map(instances)
    inner = 10 * math.exp(-16 / 50)
    np.testing.assert_allclose(border, [[0, inner, inner, inner, 0]] * 2)


def test_ids_dtype_and_numbering_do_not_matter():
    instances = random_instances(3, touching=True)
    expected = weight_maps.unet_weight_map(instances)
    ids = np.unique(instances)[1:]
    rng = np.random.default_rng(0)
    for new_ids, dtype in (
        (np.arange(1, ids.size + 1), np.uint8),
        (rng.permutation(ids.size) + 1, np.uint16),
        (10**12 + 977 * np.arange(ids.size), np.int64),  # sparse, huge
        (ids * 3, np.uint32),
    ):
        table = np.zeros(instances.max() + 1, np.int64)
        table[ids] = new_ids
        relabelled = table[instances].astype(dtype)
        np.testing.assert_array_equal(
            weight_maps.unet_weight_map(relabelled), expected
        )


def test_boolean_mask_uses_connected_components():
    mask = np.zeros((7, 7), bool)
    mask[1:3, 1:3] = True
    mask[3:5, 3:5] = True  # meets the first square at a corner only
    np.testing.assert_array_equal(
        weight_maps.unet_weight_map(mask),
        weight_maps.unet_weight_map(weight_maps.label_instances(mask)),
    )
    four = weight_maps.border_weight_map(mask, connectivity=1)
    eight = weight_maps.border_weight_map(mask, connectivity=2)
    # Two cells with 4-connectivity: the background corner between them
    # (d1 = d2 = 1) gets the border term; one cell with 8-connectivity.
    assert four[2, 3] == pytest.approx(10 * math.exp(-4 / 50), rel=1e-6)
    np.testing.assert_array_equal(eight, 0)
    assert weight_maps.label_instances(mask, connectivity=1).max() == 2
    assert weight_maps.label_instances(mask, connectivity=2).max() == 1


def test_batches_are_per_image():
    batch = np.stack([random_instances(s) for s in range(3)])
    weights = weight_maps.unet_weight_map(batch)
    assert weights.shape == batch.shape
    for image, result in zip(batch, weights):
        np.testing.assert_array_equal(
            result, weight_maps.unet_weight_map(image)
        )
    d1, d2 = weight_maps.border_distances(batch, max_distance=10)
    np.testing.assert_array_equal(
        d2[1], weight_maps.border_distances(batch[1], max_distance=10)[1]
    )
    masks = batch != 0
    np.testing.assert_array_equal(
        weight_maps.label_instances(masks)[2],
        weight_maps.label_instances(masks[2]),
    )


def test_border_term_is_on_background_only():
    instances = random_instances(8, touching=True)
    weights = weight_maps.unet_weight_map(instances)
    class_term = weight_maps.class_weight_map((instances != 0).astype(np.uint8))
    cells = instances != 0
    np.testing.assert_array_equal(weights[cells], class_term[cells])
    assert (weights[~cells] >= class_term[~cells]).all()


# === Separating touching cells ===


def reference_separation(instances, connectivity):
    """Plain loops: zero every cell pixel with a different cell nearby."""
    if connectivity == 1:
        offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    else:
        offsets = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if (dy, dx) != (0, 0)
        ]
    out = instances.copy()
    height, width = instances.shape
    for y in range(height):
        for x in range(width):
            own = instances[y, x]
            if own == 0:
                continue
            for dy, dx in offsets:
                ny, nx = y + dy, x + dx
                if 0 <= ny < height and 0 <= nx < width:
                    other = instances[ny, nx]
                    if other != 0 and other != own:
                        out[y, x] = 0
    return out


def assert_separated(instances, separated):
    """No two different cells are 8-neighbours; nothing else changed."""
    padded = np.pad(separated, 1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = padded[
                1 + dy : 1 + dy + separated.shape[0],
                1 + dx : 1 + dx + separated.shape[1],
            ]
            clash = (separated != 0) & (shifted != 0) & (shifted != separated)
            assert not clash.any()
    changed = separated != instances
    assert (separated[changed] == 0).all()


def test_separate_touching_cells_hand_example():
    instances = np.array(
        [
            [1, 1, 1, 2, 2],
            [1, 1, 1, 2, 2],
            [0, 0, 0, 0, 0],
            [3, 3, 0, 4, 4],
        ]
    )
    expected = np.array(
        [
            [1, 1, 0, 0, 2],
            [1, 1, 0, 0, 2],
            [0, 0, 0, 0, 0],
            [3, 3, 0, 4, 4],
        ]
    )
    np.testing.assert_array_equal(
        weight_maps.separate_touching_cells(instances), expected
    )


@pytest.mark.parametrize("connectivity", [1, 2])
def test_separate_touching_cells_matches_loops(connectivity):
    instances = voronoi_instances(4, shape=(24, 28), n_cells=9).astype(
        np.uint16
    )
    instances[5:8] = 0  # some background too
    separated = weight_maps.separate_touching_cells(instances, connectivity)
    assert separated.dtype == np.uint16
    np.testing.assert_array_equal(
        separated, reference_separation(instances, connectivity)
    )
    if connectivity == 2:
        assert_separated(instances, separated)
    # Independent of the id order.
    permuted = np.where(instances == 0, 0, 200 - instances).astype(np.uint16)
    np.testing.assert_array_equal(
        weight_maps.separate_touching_cells(permuted, connectivity) != 0,
        separated != 0,
    )


def test_target_and_weight_map_batch():
    batch = np.stack([voronoi_instances(s, shape=(32, 32)) for s in (1, 2)])
    target, weights = weight_maps.target_and_weight_map(batch)
    assert target.dtype == np.uint8 and weights.dtype == np.float32
    for image, t, w in zip(batch, target, weights):
        separated = weight_maps.separate_touching_cells(image)
        np.testing.assert_array_equal(t, separated != 0)
        np.testing.assert_array_equal(w, weight_maps.unet_weight_map(separated))
    target, _ = weight_maps.target_and_weight_map(batch, separate=False)
    np.testing.assert_array_equal(target, 1)


# === Class weights ===


def test_balanced_class_weights_hand_computed():
    target = np.array([[0, 0, 0, 1]])
    np.testing.assert_allclose(
        weight_maps.balanced_class_weights(target), [4 / 6, 4 / 2]
    )
    # A class that does not occur gets weight 1; the others stay balanced.
    np.testing.assert_allclose(
        weight_maps.balanced_class_weights(target, num_classes=3),
        [4 / 6, 4 / 2, 1.0],
    )


def test_balanced_class_weights_over_a_data_set():
    targets = [
        np.array([[0, 1, 1]]),
        np.zeros((4, 5), np.uint8),
        np.ones((2, 2), bool),
    ]
    # 3 + 20 + 4 = 27 pixels: 21 background, 6 cell.
    np.testing.assert_allclose(
        weight_maps.balanced_class_weights(targets),
        [27 / (2 * 21), 27 / (2 * 6)],
    )


def test_class_weight_map_options():
    target = np.array([[0, 0, 0, 1], [1, 1, 0, 0]])
    balanced = weight_maps.class_weight_map(target)
    assert balanced.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(balanced[target == 0], 8 / (2 * 5))
    np.testing.assert_allclose(balanced[target == 1], 8 / (2 * 3))
    np.testing.assert_array_equal(weight_maps.class_weight_map(target, None), 1)
    np.testing.assert_array_equal(
        weight_maps.class_weight_map(target, [1.0, 4.0]),
        np.where(target == 1, 4.0, 1.0),
    )
    np.testing.assert_array_equal(
        weight_maps.class_weight_map(target, {0: 0.5, 1: 2.0}),
        np.where(target == 1, 2.0, 0.5),
    )
    dataset = weight_maps.balanced_class_weights([target, 1 - target])
    np.testing.assert_allclose(
        weight_maps.unet_weight_map(
            target.astype(bool), class_weights=dataset, w0=0.0
        ),
        dataset[target],
    )


# === Errors ===


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.zeros((4, 4), np.float32), "integer instance label image"),
        (np.zeros(4, np.int32), r"shape \(height, width\)"),
        (np.zeros((1, 4, 4, 1), np.int32), r"shape \(height, width\)"),
        (np.array([[0, -1], [2, 3]]), "negative"),
    ],
)
def test_bad_labels_are_rejected(labels, match):
    for fn in (
        weight_maps.unet_weight_map,
        weight_maps.border_weight_map,
        weight_maps.border_distances,
        weight_maps.label_instances,
    ):
        with pytest.raises(ValueError, match=match):
            fn(labels)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -5.0}, "sigma"),
        ({"w0": -1.0}, "w0"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"tolerance": -1e-3}, "tolerance"),
        ({"connectivity": 3}, "connectivity"),
        ({"class_weights": "inverse"}, "class_weights"),
        ({"class_weights": {0: 1.0, 2: 3.0}}, "no weight for classes"),
        ({"class_weights": [1.0, -2.0]}, "non-negative"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, match):
    instances = np.array([[1, 0, 2]])
    with pytest.raises(ValueError, match=match):
        weight_maps.unet_weight_map(instances, **kwargs)


def test_other_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="0 \\(membrane\\) and 255"):
        weight_maps.isbi_instances(np.array([[0, 128, 255]], np.uint8))
    with pytest.raises(ValueError, match="not a boolean mask"):
        weight_maps.separate_touching_cells(np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="smaller than num_classes"):
        weight_maps.class_weight_map(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="max_distance"):
        weight_maps.border_distances(np.ones((2, 2), int), max_distance=-1)


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0), (0, 4, 4)])
def test_empty_labels_are_rejected_clearly(shape):
    # Today: "zero-size array to reduction operation maximum which has no
    # identity" or "need at least one array to stack".
    for fn in (
        weight_maps.unet_weight_map,
        weight_maps.border_weight_map,
        weight_maps.border_distances,
        weight_maps.target_and_weight_map,
    ):
        with pytest.raises(ValueError, match=r"`labels` is empty \(shape"):
            fn(np.zeros(shape, np.int32))


def _isbi_like_mask():
    """0/255 labels with four cells separated by a one-pixel membrane."""
    labels = np.full((9, 9), 255, np.uint8)
    labels[4, :] = 0
    labels[:, 4] = 0
    return labels


def test_a_binary_mask_passed_as_instances_warns():
    labels = _isbi_like_mask()
    # As instances that is one cell: no border term at all.
    with pytest.warns(UserWarning, match="one instance id, 255, in 4 sep"):
        weights = weight_maps.unet_weight_map(labels)
    np.testing.assert_allclose(weights, reference_class_term(labels > 0))
    with pytest.warns(UserWarning, match="`labels == 255`"):
        weight_maps.border_weight_map(labels)
    with pytest.warns(UserWarning, match=r"image 1 of the batch \(and 1 m"):
        weight_maps.unet_weight_map(
            np.stack([np.zeros_like(labels), labels, labels // 255])
        )
    # The fix the warning names: the mask as booleans gives the four cells
    # and their border term, as the reference computes it.
    fixed = weight_maps.unet_weight_map(labels == 255)
    four_cells = ndimage.label(labels == 255)[0]
    assert_weight_map_matches_reference(fixed, four_cells)


def test_one_connected_instance_and_several_ids_do_not_warn():
    # One cell in one piece is a legitimate instance map (w = w_c), and
    # an image with two ids has its border term: neither warns (the
    # suite turns warnings into errors).
    one = np.zeros((9, 9), np.uint8)
    one[2:6, 2:6] = 255
    weight_maps.unet_weight_map(one)
    two = _isbi_like_mask().astype(np.int32)
    two[:4] = np.where(two[:4] > 0, 7, 0)
    assert weight_maps.unet_weight_map(two).max() > 5
