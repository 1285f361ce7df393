import hashlib

import keras
import numpy as np
import pytest
import tifffile
from PIL import Image

from keras_unet2015 import datasets
from keras_unet2015.datasets import isbi2012
from keras_unet2015.layers.elastic_deform import ElasticDeform


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def _pil(path):
    return np.asarray(Image.open(path))


# === ISBI 2012 ===


def test_isbi2012_slices_on_real_data(shared_data):
    root = shared_data / "isbi2012"
    (x_train, y_train), x_test = isbi2012.load_data(root)
    assert x_train.shape == y_train.shape == x_test.shape == (30, 512, 512)
    assert x_train.dtype == y_train.dtype == np.uint8
    for i in (0, 17, 29):
        np.testing.assert_array_equal(
            x_train[i], _pil(root / "train" / "images" / f"{i:02d}.png")
        )
        raw = _pil(root / "train" / "labels" / f"{i:02d}.png")
        # 255 (cell interior) becomes class 1, 0 (membrane) class 0.
        np.testing.assert_array_equal(y_train[i], (raw == 255).astype(np.uint8))
        np.testing.assert_array_equal(
            x_test[i], _pil(root / "test" / "images" / f"{i:02d}.png")
        )
    # Membranes are 16.8-27.0 % of every slice (measured).
    membrane = 1.0 - y_train.reshape(30, -1).mean(axis=1)
    assert np.all((membrane > 0.16) & (membrane < 0.28))


def test_isbi2012_tiff_volumes_equal_slices(shared_data, tmp_path):
    root = shared_data / "isbi2012"
    pages = [3, 4, 5]
    images = np.stack(
        [_pil(root / "train" / "images" / f"{i:02d}.png") for i in pages]
    )
    labels = np.stack(
        [_pil(root / "train" / "labels" / f"{i:02d}.png") for i in pages]
    )
    tifffile.imwrite(
        tmp_path / "train-volume.tif", images, photometric="minisblack"
    )
    tifffile.imwrite(
        tmp_path / "train-labels.tif", labels, photometric="minisblack"
    )
    (x_train, y_train), x_test = isbi2012.load_data(tmp_path)
    assert x_test is None
    np.testing.assert_array_equal(x_train, images)
    np.testing.assert_array_equal(y_train, (labels == 255).astype(np.uint8))
    tifffile.imwrite(
        tmp_path / "test-volume.tif", images[:2], photometric="minisblack"
    )
    _, x_test = isbi2012.load_data(tmp_path)
    np.testing.assert_array_equal(x_test, images[:2])


def test_isbi2012_checksums_match_the_real_files(shared_data):
    files = isbi2012.github_urls()
    assert len(files) == 90
    assert len({url for _, url, _ in files}) == 90
    for relative, url, expected in files:
        assert isbi2012.GITHUB_COMMIT in url
        digest = hashlib.sha256(
            (shared_data / "isbi2012" / relative).read_bytes()
        ).hexdigest()
        assert digest == expected, relative


def test_isbi2012_download_requests_checked_files(tmp_path, monkeypatch):
    calls = []

    def fake_get_file(**kwargs):
        calls.append(kwargs)
        return str(tmp_path / kwargs["cache_subdir"] / kwargs["fname"])

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    assert isbi2012.download(tmp_path) == tmp_path
    assert len(calls) == 90
    first = calls[0]
    assert first["fname"] == "00.png"
    assert first["cache_subdir"] == "train/images"
    assert first["cache_dir"] == str(tmp_path)
    assert first["origin"].endswith("/data/membrane/train/image/0.png")
    assert all(len(c["file_hash"]) == 64 for c in calls)  # sha256
    calls.clear()
    isbi2012.download(tmp_path, source="challenge")
    assert [c["fname"] for c in calls] == [
        "train-volume.tif",
        "train-labels.tif",
        "test-volume.tif",
    ]
    with pytest.raises(ValueError, match="source"):
        isbi2012.download(tmp_path, source="kaggle")


def test_isbi2012_missing_data_explains_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download"):
        isbi2012.load_data(tmp_path)


# === Paired folders ===


def test_paired_folders_on_real_isbi(shared_data):
    root = shared_data / "isbi2012" / "train"
    images, labels, names = datasets.load_paired_folders(
        root / "images", root / "labels", return_names=True
    )
    assert names == [f"{i:02d}" for i in range(30)]
    assert all(image.shape == (512, 512) for image in images)
    raw = _pil(root / "labels" / "07.png")
    np.testing.assert_array_equal(labels[7], (raw == 255).astype(np.uint8))


def test_instance_annotations_on_real_nuclei(shared_data, tmp_path):
    source = shared_data / "stardist-dsb2018-nuclei2d"
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    image = tifffile.imread(source / "img2d.tif")
    mask = tifffile.imread(source / "mask2d.tif")
    tifffile.imwrite(tmp_path / "images" / "nuclei.tif", image)
    tifffile.imwrite(tmp_path / "labels" / "nuclei.tif", mask)
    images, labels = datasets.load_paired_folders(
        tmp_path / "images", tmp_path / "labels", label_mode="instances"
    )
    assert images[0].dtype == np.uint16
    np.testing.assert_array_equal(images[0], image)
    assert labels[0].dtype == np.int32
    np.testing.assert_array_equal(labels[0], mask)
    assert len(np.unique(labels[0])) - 1 == 125  # README: 125 nuclei
    with pytest.raises(ValueError, match="label_mode='instances'"):
        datasets.load_paired_folders(tmp_path / "images", tmp_path / "labels")


def test_multi_page_tiff_pairs_page_by_page(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 20, 24), dtype=np.uint8)
    labels = (rng.random((3, 20, 24)) > 0.5).astype(np.uint8) * 255
    datasets.write_image(tmp_path / "im" / "stack.tif", images)
    datasets.write_image(tmp_path / "lb" / "stack.tiff", labels)
    got_images, got_labels, names = datasets.load_paired_folders(
        tmp_path / "im", tmp_path / "lb", return_names=True
    )
    assert names == ["stack[0]", "stack[1]", "stack[2]"]
    for i in range(3):
        np.testing.assert_array_equal(got_images[i], images[i])
        np.testing.assert_array_equal(got_labels[i], labels[i] // 255)
    datasets.write_image(tmp_path / "lb" / "stack.tiff", labels[:2])
    with pytest.raises(ValueError, match="page for page"):
        datasets.load_paired_folders(tmp_path / "im", tmp_path / "lb")


@pytest.fixture
def good_folder(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        _png(
            tmp_path / "images" / f"{name}.png",
            rng.integers(0, 255, (16, 16), np.uint8),
        )
        _png(
            tmp_path / "labels" / f"{name}.png",
            (rng.random((16, 16)) > 0.5).astype(np.uint8) * 255,
        )
    return tmp_path


def test_bad_folders_give_clear_errors(good_folder):
    images, labels = good_folder / "images", good_folder / "labels"
    assert len(datasets.load_paired_folders(images, labels)[0]) == 3

    with pytest.raises(FileNotFoundError, match="nowhere"):
        datasets.load_paired_folders(good_folder / "nowhere", labels)

    (labels / "c.png").unlink()
    with pytest.raises(
        ValueError, match=r"3 images .* 2 labels.*without a label: c"
    ):
        datasets.load_paired_folders(images, labels)

    _png(labels / "c.png", np.zeros((16, 16), np.uint8))
    (images / "b.png").write_bytes(b"this is not a PNG")
    with pytest.raises(ValueError, match=r"Could not read image file .*b\.png"):
        datasets.load_paired_folders(images, labels)

    _png(images / "b.png", np.zeros((16, 16), np.uint8))
    _png(labels / "a.png", np.array([[0, 128, 255, 255]] * 4, np.uint8))
    with pytest.raises(ValueError, match=r"a\.png.*0, 128, 255"):
        datasets.load_paired_folders(images, labels)

    _png(labels / "a.png", np.zeros((15, 16), np.uint8))
    with pytest.raises(ValueError, match="same height and width"):
        datasets.load_paired_folders(images, labels)

    _png(labels / "a.png", np.zeros((16, 16), np.uint8))
    _png(labels / "a.tif", np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="same name without suffix"):
        datasets.load_paired_folders(images, labels)

    empty = good_folder / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="No image files"):
        datasets.load_paired_folders(empty, labels)


def test_standardize_labels():
    binary = datasets.standardize_labels(np.array([[0, 255], [255, 0]]))
    np.testing.assert_array_equal(binary, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(
        datasets.standardize_labels(np.array([[3, 7]])), [[0, 1]]
    )
    np.testing.assert_array_equal(
        datasets.standardize_labels(np.full((2, 2), 255)), np.ones((2, 2))
    )
    rgb = np.repeat(np.array([[0, 255]], np.uint8)[..., None], 3, -1)
    np.testing.assert_array_equal(datasets.standardize_labels(rgb), [[0, 1]])
    classes = datasets.standardize_labels(
        np.array([[0, 2, 1]]), "classes", num_classes=3
    )
    np.testing.assert_array_equal(classes, [[0, 2, 1]])
    with pytest.raises(ValueError, match="num_classes=2"):
        datasets.standardize_labels(np.array([[0, 2]]), "classes", 2)
    with pytest.raises(ValueError, match="non-integer"):
        datasets.standardize_labels(np.array([[0.0, 0.5]]))
    with pytest.raises(ValueError, match="negative"):
        datasets.standardize_labels(np.array([[0, -1]]), "instances")
    with pytest.raises(ValueError, match="label_mode"):
        datasets.standardize_labels(np.array([[0, 1]]), "semantic")


def test_to_float_image():
    np.testing.assert_allclose(
        datasets.to_float_image(np.array([0, 51, 255], np.uint8)),
        [0.0, 0.2, 1.0],
    )
    # 16-bit microscopy images use part of their range: min-max scaled.
    scaled = datasets.to_float_image(np.array([10, 110, 210], np.uint16))
    np.testing.assert_allclose(scaled, [0.0, 0.5, 1.0])
    kept = np.array([0.2, 0.4], np.float32)
    np.testing.assert_array_equal(datasets.to_float_image(kept), kept)
    with pytest.raises(ValueError, match="NaN"):
        datasets.to_float_image(np.array([np.nan, 1.0]))


# === Split ===


def test_split_is_documented_and_deterministic():
    train, held = datasets.train_validation_split(30, 1 / 6)
    assert held == [25, 26, 27, 28, 29]
    assert train == list(range(25))
    assert datasets.parse_indices("25-29") == held
    assert datasets.train_validation_split(30, validation_indices="25-29") == (
        train,
        held,
    )
    first = datasets.train_validation_split(20, 0.25, mode="random", seed=3)
    again = datasets.train_validation_split(20, 0.25, mode="random", seed=3)
    other = datasets.train_validation_split(20, 0.25, mode="random", seed=4)
    assert first == again != other
    assert len(first[1]) == 5
    assert sorted(first[0] + first[1]) == list(range(20))
    assert datasets.parse_indices("0,3,7-9") == [0, 3, 7, 8, 9]
    with pytest.raises(ValueError, match="out of range"):
        datasets.train_validation_split(10, validation_indices=[10])
    with pytest.raises(ValueError, match="at least one"):
        datasets.train_validation_split(2, validation_indices=[0, 1])
    with pytest.raises(ValueError, match="Invalid index list"):
        datasets.parse_indices("5-2")


# === Synthetic touching cells ===


def test_synthetic_cells_deterministic_and_touching():
    images, labels, instances = datasets.make_touching_cells(
        3, (64, 80), cell_radius=8, seed=7
    )
    again = datasets.make_touching_cells(3, (64, 80), cell_radius=8, seed=7)
    other = datasets.make_touching_cells(3, (64, 80), cell_radius=8, seed=8)
    for a, b in zip((images, labels, instances), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(images, other[0])
    assert images.shape == (3, 64, 80) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(labels, instances > 0)
    for inst in instances:
        # No two different cells are 4-neighbours: a border separates them.
        for a, b in ((inst[1:], inst[:-1]), (inst[:, 1:], inst[:, :-1])):
            both = (a > 0) & (b > 0)
            assert np.all(a[both] == b[both])
        # ...and many cells touch across a border two pixels wide (each
        # cell loses border_width=1 pixel towards its neighbour).
        left, right = inst[:, :-3], inst[:, 3:]
        gap = (inst[:, 1:-2] == 0) & (inst[:, 2:-1] == 0)
        touching = (left > 0) & (right > 0) & (left != right) & gap
        assert touching.sum() > 20
        assert inst.max() > 10
    # Borders are dark, cells bright.
    cell = images[instances > 0].mean()
    gap = images[instances == 0].mean()
    assert cell - gap > 0.2


# === Training-sample stream ===


def _identity_data(seed=0, size=(40, 52)):
    """Labels, an image equal to them and weights that encode them."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((2,) + size) > 0.5).astype(np.int32)
    labels = np.stack(
        [
            np.kron(
                lab[: size[0] // 4, : size[1] // 4], np.ones((4, 4), np.int32)
            )
            for lab in labels
        ]
    )
    images = labels.astype(np.float32)
    weights = 1.0 + 3.0 * labels.astype(np.float32)
    return images, labels, weights


def test_stream_shapes_and_alignment_without_augmentation():
    images, labels, weights = _identity_data()
    stream = datasets.TrainingSampleStream(
        images,
        labels,
        weights,
        input_size=(44, 36),
        output_size=(20, 12),
        batch_size=3,
        steps_per_epoch=4,
    )
    assert len(stream) == 4
    x, y, w = stream[2]
    assert x.shape == (3, 44, 36, 1) and x.dtype == np.float32
    assert y.shape == (3, 20, 12) and y.dtype == np.int32
    assert w.shape == (3, 20, 12) and w.dtype == np.float32
    center = x[:, 12:32, 12:24, 0]
    np.testing.assert_array_equal(y, center.astype(np.int32))
    np.testing.assert_array_equal(w, 1.0 + 3.0 * center)


def test_stream_tiles_come_from_the_mirrored_image():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (10, 13)).astype(np.uint8)
    labels = rng.integers(0, 2, (10, 13))
    # The input (30 px) is larger than the image: context is mirrored
    # beyond it, repeatedly, as numpy.pad(mode="reflect").
    stream = datasets.TrainingSampleStream(
        image[None],
        labels[None],
        input_size=30,
        output_size=8,
        steps_per_epoch=6,
    )
    padded = np.pad(image.astype(np.float32) / 255.0, 40, mode="reflect")
    for index in range(6):
        x = stream[index][0][0, :, :, 0]
        found = [
            (r, c)
            for r in range(-11, 3)
            for c in range(-11, 6)
            if np.array_equal(padded[40 + r : 70 + r, 40 + c : 70 + c], x)
        ]
        # Exactly one window, whose output part lies inside the image.
        assert len(found) == 1
        r, c = found[0]
        assert 0 <= r + 11 <= 10 - 8 and 0 <= c + 11 <= 13 - 8


def test_stream_is_a_function_of_seed_epoch_and_index():
    images, labels, weights = _identity_data(1)
    make = lambda seed: datasets.TrainingSampleStream(  # noqa: E731
        images,
        labels,
        weights,
        input_size=28,
        output_size=12,
        batch_size=2,
        steps_per_epoch=3,
        seed=seed,
    )
    a, b = make(0), make(0)
    for part_a, part_b in zip(a[1], b[1]):
        np.testing.assert_array_equal(part_a, part_b)
    assert not np.array_equal(a[0][0], a[1][0])
    assert not np.array_equal(a[0][0], make(1)[0][0])
    first = a[0][0]
    a.on_epoch_end()
    assert a.epoch == 1 and not np.array_equal(a[0][0], first)
    a.set_epoch(0)
    np.testing.assert_array_equal(a[0][0], first)
    fixed = datasets.TrainingSampleStream(
        images, labels, input_size=28, output_size=12, vary_with_epoch=False
    )
    before = fixed[0][0]
    fixed.on_epoch_end()
    np.testing.assert_array_equal(fixed[0][0], before)


def test_stream_gives_the_same_batches_from_worker_threads():
    from concurrent.futures import ThreadPoolExecutor

    images, labels, weights = _identity_data(6)
    stream = datasets.TrainingSampleStream(
        images,
        labels,
        weights,
        input_size=28,
        output_size=12,
        batch_size=2,
        steps_per_epoch=4,
        augmentation=ElasticDeform(sigma=3.0),
        workers=2,
    )
    sequential = [stream[i] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(stream.__getitem__, reversed(range(4))))
    for expected, got in zip(sequential, reversed(threaded)):
        for a, b in zip(expected, got):
            np.testing.assert_array_equal(a, b)


def test_stream_channels_first_layout():
    images, labels, weights = _identity_data(2)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    rgb[..., 1] *= 0.5
    common = dict(input_size=28, output_size=12, batch_size=2, seed=4)
    last = datasets.TrainingSampleStream(rgb, labels, **common)[0]
    first = datasets.TrainingSampleStream(
        rgb, labels, data_format="channels_first", **common
    )[0]
    assert first[0].shape == (2, 3, 28, 28)
    np.testing.assert_array_equal(first[0], np.transpose(last[0], (0, 3, 1, 2)))
    np.testing.assert_array_equal(first[1], last[1])


def test_stream_alignment_after_elastic_deformation():
    images, labels, weights = _identity_data(3, size=(64, 64))
    stream = datasets.TrainingSampleStream(
        images,
        labels,
        weights,
        input_size=60,
        output_size=36,
        batch_size=2,
        steps_per_epoch=3,
        augmentation=ElasticDeform(sigma=6.0, seed=1),
    )
    plain = datasets.TrainingSampleStream(
        images,
        labels,
        weights,
        input_size=60,
        output_size=36,
        batch_size=2,
        steps_per_epoch=3,
    )
    x, y, w = stream[1]
    assert x.shape == (2, 60, 60, 1) and y.shape == w.shape == (2, 36, 36)
    assert not np.array_equal(x, plain[1][0])  # it did deform
    assert set(np.unique(y)) <= {0, 1}
    center = x[:, 12:48, 12:48, 0]
    # The image equals the labels: after the same warp it still does,
    # except where bilinear and nearest interpolation disagree on edges.
    assert np.mean((center > 0.5) == (y == 1)) >= 0.99
    # Weights and image are both interpolated bilinearly: equal fields give
    # equal values.
    np.testing.assert_allclose(w, 1.0 + 3.0 * center, atol=1e-4)
    # The seed comes from the batch's key: the same batch again.
    np.testing.assert_array_equal(stream[1][0], x)


def test_stream_validation_errors():
    images, labels, weights = _identity_data()
    with pytest.raises(ValueError, match="2 images but 1 label"):
        datasets.TrainingSampleStream(
            images, labels[:1], input_size=28, output_size=12
        )
    with pytest.raises(ValueError, match="dtype float"):
        datasets.TrainingSampleStream(
            images, labels.astype(float), input_size=28, output_size=12
        )
    with pytest.raises(ValueError, match="even number"):
        datasets.TrainingSampleStream(
            images, labels, input_size=28, output_size=13
        )
    with pytest.raises(ValueError, match="batch_size"):
        datasets.TrainingSampleStream(
            images, labels, input_size=28, output_size=12, batch_size=0
        )
    with pytest.raises(ValueError, match="Weight map 0"):
        datasets.TrainingSampleStream(
            images, labels, weights[:, :10], input_size=28, output_size=12
        )


def _stream_makers():
    """Both streams, built on the same checks."""
    makers = [datasets.TrainingSampleStream]
    try:
        import tensorflow  # noqa: F401

        makers.append(datasets.make_tf_dataset)
    except ImportError:
        pass
    return makers


@pytest.mark.parametrize("make", _stream_makers())
def test_streams_reject_labels_that_are_no_class(make):
    images, labels, _ = _identity_data()
    sizes = dict(input_size=28, output_size=12)
    # ISBI-style 0/255 labels: today both streams pass them to the loss.
    with pytest.raises(ValueError) as error:
        make(images, labels * 255, **sizes)
    message = str(error.value)
    assert message.startswith("Label map 0 is not a map of class indices")
    assert "label_mode='binary'" in message and "labels // 255" in message
    bad = labels.copy()
    bad[1, 3, 4] = 2
    with pytest.raises(ValueError, match=r"Label map 1 must hold integer "
                       r"class labels in \[0, 2\); found 2 \(1 pixel, the "
                       r"first at \(3, 4\)\)"):  # fmt: skip
        make(images, bad, num_classes=2, **sizes)
    make(images, bad, num_classes=3, **sizes)  # 2 is a class of 3
    bad[1, 3, 4] = -1
    with pytest.raises(ValueError, match="non-negative class indices; fou"):
        make(images, bad, **sizes)
    with pytest.raises(ValueError, match="`ignore_class=-1`"):
        make(images, bad, num_classes=2, **sizes)
    # The loss's ignore_class is no class but a valid label.
    make(images, bad, num_classes=2, ignore_class=-1, **sizes)
    with pytest.raises(ValueError, match="num_classes"):
        make(images, labels, num_classes=0, **sizes)
    with pytest.raises(ValueError, match="ignore_class"):
        make(images, labels, ignore_class=0.5, **sizes)


@pytest.mark.parametrize("make", _stream_makers())
def test_streams_reject_weights_that_are_nan_or_negative(make):
    images, labels, weights = _identity_data()
    sizes = dict(input_size=28, output_size=12)
    for value, match in (
        (np.nan, r"Weight map 1 holds NaN/negative values: NaN at 1 pixel "
                 r"\(the first at \(2, 3\)\)"),
        (-1.0, r"negative at 1 pixel \(the first at \(2, 3\)\)"),
        (np.inf, "infinite at 1 pixel"),
    ):  # fmt: skip
        bad = weights.copy()
        bad[1, 2, 3] = value
        with pytest.raises(ValueError, match=match):
            make(images, labels, bad, **sizes)
    zero = weights.copy()
    zero[1] = 0.0  # zero weights leave pixels out: valid
    make(images, labels, zero, **sizes)


def test_checked_stream_gives_the_same_batches():
    images, labels, weights = _identity_data()
    common = dict(input_size=28, output_size=12, batch_size=2, seed=5)
    plain = datasets.TrainingSampleStream(images, labels, weights, **common)
    checked = datasets.TrainingSampleStream(
        images, labels, weights, num_classes=2, ignore_class=255, **common
    )
    assert (checked.num_classes, checked.ignore_class) == (2, 255)
    for a, b in zip(plain[0], checked[0]):
        np.testing.assert_array_equal(a, b)


# === tf.data and TFRecord ===


def test_tf_dataset_shapes_alignment_and_determinism():
    pytest.importorskip("tensorflow")
    images, labels, weights = _identity_data(4, size=(64, 64))
    common = dict(input_size=60, output_size=36, batch_size=2, seed=3)
    dataset = datasets.make_tf_dataset(images, labels, weights, **common)
    x, y, w = (np.asarray(t) for t in next(iter(dataset)))
    assert x.shape == (2, 60, 60, 1) and x.dtype == np.float32
    assert y.shape == w.shape == (2, 36, 36) and y.dtype == np.int32
    center = x[:, 12:48, 12:48, 0]
    np.testing.assert_array_equal(y, center.astype(np.int32))
    np.testing.assert_array_equal(w, 1.0 + 3.0 * center)
    again = next(
        iter(datasets.make_tf_dataset(images, labels, weights, **common))
    )
    np.testing.assert_array_equal(np.asarray(again[0]), x)

    def warped():
        dataset = datasets.make_tf_dataset(
            images,
            labels,
            weights,
            augmentation=ElasticDeform(sigma=6.0, seed=2),
            **common,
        )
        iterator = iter(dataset)
        return [[np.asarray(t) for t in next(iterator)] for _ in range(3)]

    batches = warped()
    # A seeded layer gives the same batches on every run.
    for batch, again in zip(batches, warped()):
        for a, b in zip(batch, again):
            np.testing.assert_array_equal(a, b)
    x, y, w = batches[0]
    center = x[:, 12:48, 12:48, 0]
    assert not np.array_equal(y, center.astype(np.int32))  # it did deform
    assert np.mean((center > 0.5) == (y == 1)) >= 0.99
    np.testing.assert_allclose(w, 1.0 + 3.0 * center, atol=1e-4)


def test_tfrecord_round_trip(tmp_path):
    pytest.importorskip("tensorflow")
    images, labels, weights = _identity_data(5)
    stream = datasets.TrainingSampleStream(
        images,
        labels,
        weights,
        input_size=28,
        output_size=12,
        batch_size=2,
        steps_per_epoch=3,
    )
    path = tmp_path / "samples.tfrecord"
    assert datasets.write_tfrecord(path, stream) == 6
    records = [
        tuple(np.asarray(t) for t in sample)
        for sample in datasets.read_tfrecord(path)
    ]
    assert len(records) == 6
    for index in range(3):
        batch = stream[index]
        for slot in range(2):
            for got, expected in zip(records[2 * index + slot], batch):
                np.testing.assert_array_equal(got, expected[slot])
    endless = datasets.make_tf_dataset(
        images, labels, input_size=28, output_size=12
    )
    with pytest.raises(ValueError, match="num_batches"):
        datasets.write_tfrecord(tmp_path / "x.tfrecord", endless)
    assert (
        datasets.write_tfrecord(tmp_path / "y.tfrecord", endless, num_batches=2)
        == 2
    )
