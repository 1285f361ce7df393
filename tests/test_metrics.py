import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from keras_unet2015 import metrics

# === Pixel error ===


def test_pixel_error_hand_computed():
    labels = np.array([[1, 0, 1, 0]])
    probabilities = np.array([[0.8, 0.6, 0.3, 0.05]])
    # t = 0.0: all positive, tp 2 fp 2 -> F = 4/6; t = 0.1, 0.2: [1 1 1 0],
    # tp 2 fp 1 -> F = 4/5 (the best); t = 0.3 .. 0.5: [1 1 0 0], tp 1 fp 1
    # fn 1 -> 2/4; t = 0.6, 0.7: [1 0 0 0] -> 2/3; t >= 0.8: none -> 0.
    error, details = metrics.pixel_error(
        probabilities, labels, return_details=True
    )
    assert error == pytest.approx(0.2)
    expected = [4 / 6, 0.8, 0.8, 0.5, 0.5, 0.5, 2 / 3, 2 / 3, 0, 0, 0]
    np.testing.assert_allclose(details["f_scores"], expected)
    assert details["best_threshold"] == pytest.approx(0.1)
    perfect = metrics.pixel_error(
        np.array([[0.9, 0.4, 0.2, 0.1]]), [[1, 1, 0, 0]]
    )
    assert perfect == 0.0


def test_pixel_error_pools_counts_over_slices():
    labels = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]]])
    probabilities = np.array([[[0.9, 0.2, 0.2, 0.2]], [[0.9, 0.9, 0.9, 0.2]]])
    # Only threshold 0.5 matters here (t < 0.2: all positive, F = 6/11;
    # t >= 0.9: none): slice 1 tp 1 fn 1, slice 2 tp 1 fp 2 -> pooled
    # tp 2 fp 2 fn 1 -> F = 4/7 (the mean of per-slice F-scores is
    # different: (2/3 + 1/2) / 2).
    error = metrics.pixel_error(probabilities, labels, thresholds=[0.5])
    assert error == pytest.approx(1 - 4 / 7)
    both = metrics.pixel_error(probabilities, labels)
    assert both == pytest.approx(1 - 4 / 7)


def test_pixel_error_accepts_isbi_label_values(shared_data):
    label = np.asarray(
        Image.open(shared_data / "isbi2012" / "train" / "labels" / "03.png")
    )
    probabilities = np.where(label == 255, 0.7, 0.2)
    assert metrics.pixel_error(probabilities, label) == 0.0
    flipped = 1.0 - probabilities
    assert metrics.pixel_error(flipped, label, thresholds=[0.5]) == 1.0
    # Over all thresholds the best is "everything is cell" (t < 0.3):
    # tp = n_cell, fp = n_membrane -> F = 2p / (1 + p), p the cell share.
    p = np.mean(label == 255)
    expected = 1.0 - 2 * p / (1 + p)
    assert metrics.pixel_error(flipped, label) == pytest.approx(expected)


# === Rand error ===


def test_rand_f_score_hand_computed():
    truth = np.array([[1, 1, 0, 2, 2, 2]])
    pred = np.array([[1, 1, 1, 1, 0, 2]])
    # Inside the ground-truth foreground (pixels 0, 1, 3, 4, 5): n(A,1)=2,
    # n(B,1)=1, n(B,2)=1 and one unassigned pixel (a singleton).
    # n2: sum_ab = 4+1+1+1 = 7, sum_a = 4+9 = 13, sum_b = 9+1+1 = 11.
    assert metrics.rand_f_score(truth, pred) == pytest.approx(14 / 24)
    # pairs: sum_ab = 2, sum_a = 2+6 = 8, sum_b = 6+0 = 6.
    assert metrics.rand_f_score(truth, pred, "pairs") == pytest.approx(4 / 14)
    assert metrics.rand_f_score(truth, truth) == 1.0
    assert metrics.rand_f_score(truth, truth * 7, "pairs") == 1.0


def test_rand_error_hand_computed_merge():
    labels = np.array([[1, 1, 0, 1, 1]])
    probabilities = np.array([[0.95, 0.95, 0.95, 0.95, 0.95]])
    # Below 0.95 the prediction merges both cells: sum_ab = 4+4 = 8,
    # sum_a = 8, sum_b = 16 -> F = 2/3. At 1.0 every pixel is a singleton:
    # sum_ab = 4, sum_a = 8, sum_b = 4 -> F = 2/3 too.
    error, details = metrics.rand_error(
        probabilities, labels, return_details=True
    )
    assert error == pytest.approx(1 / 3)
    np.testing.assert_allclose(details["f_scores"], [2 / 3] * 11)
    # A faint membrane (0.6) separates the cells from threshold 0.6 on.
    probabilities[0, 2] = 0.6
    error, details = metrics.rand_error(
        probabilities, labels, return_details=True
    )
    assert error == 0.0
    assert details["best_threshold"] == pytest.approx(0.6)


def test_rand_error_connectivity():
    # Two cells that meet only at a corner: one segment with 8-connectivity.
    labels = np.array([[1, 0], [0, 1]])
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert metrics.rand_error(probabilities, labels) == 0.0
    assert metrics.rand_error(probabilities, labels, connectivity=8) == 0.0
    merged = np.array([[0.9, 0.9], [0.1, 0.9]])
    # 4-connected: the L-shaped prediction merges the two cells.
    assert metrics.rand_error(merged, labels, thresholds=[0.5]) > 0.0
    with pytest.raises(ValueError, match="connectivity"):
        metrics.rand_error(probabilities, labels, connectivity=6)


def test_rand_matches_skimage_where_definitions_coincide():
    # scikit-image's adapted Rand error counts pairs of distinct pixels and
    # treats label 0 of the test image as one more segment: it equals our
    # "pairs" normalization when the test segmentation assigns every pixel
    # of the ground-truth foreground.
    rng = np.random.default_rng(0)
    for _ in range(5):
        truth = rng.integers(0, 6, (30, 40))
        pred = rng.integers(1, 9, (30, 40))
        ours = 1.0 - metrics.rand_f_score(truth, pred, "pairs")
        theirs = adapted_rand_error(truth, pred)[0]
        assert ours == pytest.approx(theirs, abs=1e-12)


def test_rand_matches_skimage_on_real_isbi_segments(shared_data):
    label = np.asarray(
        Image.open(shared_data / "isbi2012" / "train" / "labels" / "11.png")
    )
    truth = ndimage.label(label == 255)[0]
    # A prediction that merges cells in groups and gives every membrane
    # pixel to a segment (the nearest cell's group).
    _, (rows, cols) = ndimage.distance_transform_edt(
        truth == 0, return_indices=True
    )
    pred = truth[rows, cols] % 11 + 1
    ours = 1.0 - metrics.rand_f_score(truth, pred, "pairs")
    theirs = adapted_rand_error(truth, pred)[0]
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert 0.1 < ours < 1.0
    # With the challenge's n2 normalization the difference to the pairs
    # count is the self-pairs only: tiny on a 512x512 slice.
    n2 = 1.0 - metrics.rand_f_score(truth, pred)
    assert n2 == pytest.approx(ours, abs=1e-3)


def test_rand_error_on_real_labels_perfect_and_merged(shared_data):
    root = shared_data / "isbi2012" / "train" / "labels"
    labels = np.stack(
        [np.asarray(Image.open(root / f"{i:02d}.png")) for i in (25, 26)]
    )
    perfect = np.where(labels == 255, 0.8, 0.1)
    assert metrics.rand_error(perfect, labels) == 0.0
    assert metrics.pixel_error(perfect, labels) == 0.0

    # Bridge the membrane between two large neighbouring cells: a few wrong
    # pixels, but two cells merged.
    label = labels[0]
    truth = ndimage.label(label == 255)[0]
    sizes = np.bincount(truth.ravel()).astype(np.float64)
    sizes[0] = 0
    bridge = None
    for a in np.argsort(sizes)[::-1]:
        near = ndimage.binary_dilation(truth == a, iterations=2)
        for b in np.unique(truth[near]):
            if b in (0, a):
                continue
            candidate = near & (truth == 0)
            candidate &= ndimage.binary_dilation(truth == b, iterations=2)
            touched = np.unique(truth[ndimage.binary_dilation(candidate)])
            if set(touched.tolist()) <= {0, int(a), int(b)}:
                bridge = candidate
                break
        if bridge is not None:
            break
    assert bridge is not None and bridge.sum() > 0
    probabilities = np.where(label == 255, 0.8, 0.1)
    probabilities[bridge] = 0.8
    # Every cell lies in one predicted segment, A and B in the same one:
    # sum_ab = sum_a = S, sum_b = S + 2ab -> Rand error = ab / (S + ab).
    total = np.sum(sizes**2)
    expected_rand = sizes[a] * sizes[b] / (total + sizes[a] * sizes[b])
    rand = metrics.rand_error(probabilities, label)
    assert rand == pytest.approx(expected_rand, rel=1e-9)
    # Pixel error: fp = bridge pixels, fn = 0 -> fp / (2 tp + fp).
    tp, fp = np.sum(label == 255), np.sum(bridge)
    pixel = metrics.pixel_error(probabilities, label)
    assert pixel == pytest.approx(fp / (2 * tp + fp), rel=1e-9)


def test_rand_error_rejects_bad_input():
    labels = np.array([[1, 0], [1, 1]])
    with pytest.raises(ValueError, match="logits"):
        metrics.rand_error(np.array([[2.0, -1.0], [0.5, 0.5]]), labels)
    with pytest.raises(ValueError, match="same shape"):
        metrics.rand_error(np.zeros((2, 3)), labels)
    with pytest.raises(ValueError, match="no foreground"):
        metrics.rand_error(np.zeros((2, 2)), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="integer"):
        metrics.pixel_error(np.zeros((2, 2)), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="normalization"):
        metrics.rand_f_score(labels, labels, "n3")


# === IoU (cell tracking challenge) ===


def test_jaccard_index():
    assert metrics.jaccard_index([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(
        1 / 3
    )
    assert metrics.jaccard_index([0, 0], [0, 0]) == 1.0
    assert metrics.jaccard_index([[255, 0]], [[1, 0]]) == 1.0


def test_seg_score_hand_computed():
    truth = np.zeros((4, 6), int)
    truth[0, 0:4] = 1  # object 1: 4 px
    truth[3, 4:6] = 2  # object 2: 2 px
    pred = np.zeros((4, 6), int)
    pred[0, 1:4] = 5  # covers 3 of 4 px of object 1 ...
    pred[1, 1:3] = 5  # ... and is 5 px large: J = 3 / (4 + 5 - 3) = 0.5
    pred[3, 5] = 9  # covers exactly half of object 2: not > 50 %, J = 0
    score, per_object = metrics.seg_score(truth, pred, return_per_object=True)
    assert per_object == {1: pytest.approx(0.5), 2: 0.0}
    assert score == pytest.approx(0.25)
    assert metrics.seg_score(truth, truth * 3) == 1.0
    assert np.isnan(metrics.seg_score(np.zeros((2, 2), int), truth[:2, :2]))


def test_segment_and_evaluate_agree():
    probabilities = np.array([[0.9, 0.2, 0.8], [0.9, 0.1, 0.7]])
    segments = metrics.segment(probabilities, 0.5)
    np.testing.assert_array_equal(segments, [[1, 0, 2], [1, 0, 2]])
    labels = np.array([[1, 0, 1], [1, 0, 0]])
    result = metrics.evaluate(probabilities, labels)
    assert result["pixel_error"] == metrics.pixel_error(probabilities, labels)
    assert result["rand_error"] == metrics.rand_error(probabilities, labels)
    assert result["jaccard"] == pytest.approx(3 / 4)
