"""The ISBI 2012 EM segmentation challenge data (the paper's EM data set).

30 training and 30 test slices of 512x512 pixels from a serial-section TEM
stack of the Drosophila first instar larva ventral nerve cord (Cardona et
al. 2010), with binary training labels: 255 (white) for cell interior and 0
(black) for membranes. The test labels were never released. The 2015 U-Net
won the challenge's warping-error ranking with this data.

`load_data` reads either layout the data is found in:

- the original multi-page TIFF volumes of the challenge, `train-volume.tif`,
  `train-labels.tif` and `test-volume.tif` (30 pages each), or
- per-slice images `train/images/NN.png`, `train/labels/NN.png` and
  `test/images/NN.png` (NN = 00..29), as `download()` stores them.

Please cite Arganda-Carreras et al. (2015), "Crowdsourcing the creation of
image segmentation algorithms for connectomics", Front. Neuroanat. 9:142,
and Cardona et al. (2010), PLoS Biol 8(10): e1000502, when you use the data.
No licence is stated for the data; treat them as research data.
"""

import os
from pathlib import Path

import numpy as np

from keras_unet2015.datasets import folders
from keras_unet2015.datasets import io

NUM_SLICES = 30
SLICE_SHAPE = (512, 512)

# Per-slice PNGs of the GitHub repository zhixuhao/unet, pinned to a commit
# (the data files last changed in 909ae9b, 2018-06-09). They decode to the
# same arrays as the per-slice TIFFs of that repository's commit 4b939a4.
GITHUB_COMMIT = "b45af4d458437d8281cc218a07fd4380818ece4a"
GITHUB_BASE_URL = (
    f"https://raw.githubusercontent.com/zhixuhao/unet/{GITHUB_COMMIT}/"
    "data/membrane/"
)

# The challenge's own TIFF volumes. The server asks for a (free)
# registration and has been unreliable; the MD5 sums are those used by
# third-party loaders and were not verified by this package.
CHALLENGE_BASE_URL = (
    "http://brainiac2.mit.edu/isbi_challenge/sites/default/files/"
)
CHALLENGE_FILES = {
    "train-volume.tif": "465461edbe0254630c4ec5577f1e7764",
    "train-labels.tif": "657fe6b728c6dd0152e295c6d800001d",
    "test-volume.tif": "9767660d7abe4e0ecbdd0061a16058ad",
}

_TRAIN_IMAGES_SHA256 = (
    "12c0ed6f42fc09f512abf6b354f217c950e4c8223b57a0315449b62a14556523",
    "2cfc7ee635a6f85d5faf5c82a71d3a37bf5af4784b554964e3e07193e3ee2166",
    "fe60d8d4f93102666a23a18d718b4b59fab8e616987d11c5072f4a87fac7301f",
    "636d16cbb02f99dda4c9fb6db98dfba066142afa981ffdcfaf54453982e8250c",
    "991fb3a8e4abc73da1d6159ca28fa4397f0a8351f30a8ba3669c86414d2ce239",
    "7e9d9fb787664336d6f2cd68b23986f04527e7f8f494410983b4d70c6de1de3b",
    "7c0a87933ffc72f4ff02f5996d9c3f69fe9a0b5277507415743ad8afb5e5d308",
    "19f2c25716107d41008c83ba8a814ae47a090e00dea766dde38dce1f00899270",
    "a8979e4abd1a10af9ca75e614d97875659adbd8ee3a68eba483bf556cfe3023d",
    "730ebf435ab0f6e625d342552ad03736799fd660d0c6af744674c61a46aa082a",
    "7c3717bcd48c4b7e5c878d7f0b809b8687a4e6fac471f3863de320a82ee72b8a",
    "dd7857b25ca1417f87c282750e22c50947f75e81fa032d4e0c96b902c9dc9757",
    "9f8eff9239bb764d51524a998387a7babcff9f62161804651b030b81aabd5ab8",
    "377e5cdbcd7f0ac7336f482fc7ead7446887863f26769b3841fe98aadca77dad",
    "f50d2d77acd2df564c5f0f40b1b24cd929f5944460aa4cd90c422cb5cef33a59",
    "3e13fdea09accc14f46fb2f3ffa1e882cdd9c53b28a6842c4c10229692c7d1a4",
    "ffc951c12450f94129582c16fd0d4b165c4a31469b0c42d966f07c183d3132e2",
    "0f4f7e8e0619e4c7d517ac68d3789a3b6248253747717eac418bb7d32bef4de3",
    "1bb1edd50595861743d14e1955dfa5d3c9395fb87563eca6dc81433bf9df49de",
    "999b55633f8d7082add72082656e9532c5c3d97203b376eb317f09ba88a5a5b7",
    "9153d14bfd15955fab576ea23281c4f23104b45dceed6e03e0b254607f50a1b2",
    "9ad07cf4f67984f17a08aa63e6d92d395ce55f5132e6ff4fa6d95d6890ea7f97",
    "6278609b4c42a7cb43212de0e2e2ceded758bafe0856fb56214ce658a61668e4",
    "9ef4e9fbc838b9791af83a36918d729a0ea2e90ebc71c4a3c4554059f9379756",
    "f0f917b9c3e9c96d16ea287aff9b05ecf4de88bc61d478e4aefcb64932fba70c",
    "e0154737e76392e8bf94fb2c0dfa5ddad4b53aeec942a0a8cdd8ba63443e6072",
    "d0ff11e09b0ee0c817334946e746a38ab621161d5f9c46af95c68b851f8d9a1a",
    "eed8e8bee1db8fe7af39b5b43ecf14282c5c33eca0959726eea06f662027eacc",
    "974df4b51e8905bdaabe61e80496cbf331f5c9aa9ddc2cb94113f58c2b7d2837",
    "d9ae868509c610a69acbf3d69cde4f36a8e344cbbc444f93c917bf7b9f3e784f",
)
_TRAIN_LABELS_SHA256 = (
    "13b67edd7607a1f284c09170c96a27d38422b0ffaf88024ea5b689acb5e1b4b0",
    "cff60a00de2901e67165c91d7708d784e4c5bcc9d1c8c677922c905d63bbc3d1",
    "a578af998c017f56763b81941c4dc612dde5731809b2cea0e8ebc37aecb84dbb",
    "c8ae3b843fed02e09411a24c10850160922c331041b17c2674025f05a99b8834",
    "a2f19c01b5d982a97923a0d29e64127a05e3f496731480ac9d9d302b5427f7ff",
    "2dd5779118f6f4d87f88ec112f1cea20663b50acb8c748b0db1f23eda82b5118",
    "2b0984e9f31fb41d4c5f4a754a3e080036b7321a0cbd9591a62010d20a574ce7",
    "2ebc8c835999589bfd7d80d81f83d24e5c41138362b0faafef0f009e1ce82144",
    "db979010ca4fbdb38c8b32d455aed0da90d598153f2a0046b63d02a6efa32b9e",
    "8ee6c79adbb740595c4d61776e065e7164c00d52c7dd7562b5279041e7f3567b",
    "b0156cc8186b0ee521927ac95645b406a42d27564607a6fea3a59c34add78f7c",
    "e47b3aa0cfb3106476af1666e631d45bd16dbf2aff88260ee65d16e4134332db",
    "85a7a899c0b72b81633ad122887ba5161d650385d7775a5b3074eb00131b3620",
    "88549c22fd647312d6b37e17d33e90800d347d60ccb1156a8dde5e67394f9f3d",
    "bcd775017eb4fdbdfe7ad6cc6420b2f16aa9d0576894d08370edcf564b46680a",
    "59a854887b504ff00a5b4b93b2299bbc0bf0cbe54dea58d2b31969229b28b369",
    "b34eb88cdc3313a6f4190f5753465df7f69d8f3c243a5c25427b1b99ecfe2499",
    "4fa076cbeb744803d987dc46cf308dc3026408e7a5188838e30e25fe3ea67dbe",
    "bd009dda57f204804732f592ed1d41ba18961d83c492413fe71548efa4a288d9",
    "bf38407c55b6033c1677230228ecb100a11294aa74a7b92e5edfdc4abadcfef9",
    "7af7296f2e892866669d4e4f9c0d4178987e6ec6e7d0751ec238d1bbe2da9c55",
    "772c722acb2eac01769b53fa5037a3d62745e53102398bf9b2202df605cadda4",
    "b19f5533ec24077a2395a085fe53af75dd350ef03798c4ff40ba9ebecb2ee0ad",
    "2d8f1df5c9ee83e59eb2d709eb153b0570f12e726690f586154b01b0a88bb540",
    "6ab02d922b5c937ecfe2a479be87a5d3e5ef950dc48da09d31f37b47d899ca9c",
    "c5ea59aca7789dd507ac31c4a82bbd4c172f9e3544f8e040442c20d1dfa9e16d",
    "b056fae9f358111b6c9e2494bdba645f206be581959b8d3763e97d62a65dd961",
    "5be3823a57c82b632cead6eb09f438c6010a244dc0975f2a3e466f45d2c06840",
    "c0b0e2a2b7aad46919d1afc980f7d5e39101fb07948ce65d9cac802d8b47682e",
    "1e8839a97178914171defd6a97158f06fcac1fc3f0d45f2acdff9c49ab3fced9",
)
_TEST_IMAGES_SHA256 = (
    "3c67a0f520d6504eecffe20fc2799287cad05e3d8915466c4127ee8463db03b6",
    "73b2d6c585dd130b9e04c06ce4f7dd2c21496bc760c6088b948933d7a3ff44d8",
    "33d0ba0f00760a8223d33e0d00f1fbd8992783c216f9fc386a2c7d62a31a3263",
    "0507ff479733fefcbc00c68dc1b848dd7c15546e49241414d5a05beaf2092fbf",
    "c75debf18db3b7e4476712d28bb6925e1d3b99287fc8808a3f8611f1f1ac9e6c",
    "e2756965f5f7162c9bee9f05d6a6856d0ca310c736644000234cae634883c8f6",
    "832c23a05680902deec4efe639373892b2cdc83ecfcdd6bc7b90f6f1d474379c",
    "e673e89ac632bc3f13ff6dcd9d0f733b39d6618f21f015ed4106e1f32b3518f1",
    "8064a6d599edadb9ebd0d23b3fe1a61a0c165445e2dfc1289af4e16509424344",
    "6fe32299f09cfbff582cb90a39d1bd9214614a675be99e6729686f3a4d9b5a5f",
    "8f907e1cfc8593527fb48c7fe08ba80eb380e0bfc0cdfe5eec8da0044eec0309",
    "27ae843bb0a63ceded00acb182469a20292d70d717dc16296e6e1ea3e760dc7f",
    "eb9eacb4cd836e84a36655e59c67c6ffc9be860ade97e585d21b1caf721acb2b",
    "f7d454b79c73789c644c56d38a1adc57614fd45bbdaaeab25ad84aa9f36188f1",
    "5e68324d85e271a23fb96da4425d12fb182ccad885edf63b5a33a4929e9f3788",
    "874d88be3e6fb24ff4cc70cae292ec27462365c418a332631cb2ab17bac1bb47",
    "69e09074fd73e5e9458067e77ba1d42bb212c350413f01b64e5d7269a1130588",
    "95468c5106091112bff1fe694f06ac7af5f1b052e700fcbbe4492bcdd8cf47bf",
    "090accd8da157be1f739a2bde77335216209ec854351d18d7d328ea2d3065c6a",
    "fe7e8dd86300e462c2574f1c409510bb8bcb8b3ceb3c2bb28583e7241ab22f05",
    "260b6e3e43a1c63da9779992ca90e692cd04e854029ef2f964010daf58ff4daf",
    "cd82df9e4f7aa44a8d1172d4bac6f50dd3bc6dd063c1b3ad65647c4bc7749042",
    "242289a02a83161b98553606654c17868818bdea638bc25c1208298501b92bfa",
    "496786c0636607b2e086528d517e00c4444270d40972940c70f7ca93cc0cc173",
    "a1979d58bceac2cd352a4aeb7a047c0e92d94c52a3cbc60abac67bb7a68865a1",
    "8a078743880a854f2127cc59425c5a47bbf348b31ac2524cf7621eb108748c5a",
    "2643df636a202d53bdc870bd1239db761d1b586e048cb6ddeb83310c9b76f6f4",
    "36c4983e85e127a622e395842642dd0762657831901e70ff94647f3f808e53fe",
    "0c2d296e0cd652b69198e9399e91bf2693101e58a8c878c6fe5a902d2b9448c5",
    "e417ddbdcfed6b08b1c97d5a7796ed5b167ccc4caaf1226dc41dbb69cd724e25",
)

# Local layout -> (path in the GitHub repository, sha256 sums by slice).
_GITHUB_FOLDERS = {
    "train/images": ("train/image", _TRAIN_IMAGES_SHA256),
    "train/labels": ("train/label", _TRAIN_LABELS_SHA256),
    "test/images": ("test", _TEST_IMAGES_SHA256),
}

SOURCES = ("github", "challenge")


def default_path():
    """Where `download` and `load_data` put and look for the data.

    `$KERAS_HOME/datasets/isbi2012`, that is `~/.keras/datasets/isbi2012`
    unless the `KERAS_HOME` environment variable says otherwise.

    Returns:
        A `Path`.

    Example:

    ```python
    path = keras_unet2015.datasets.isbi2012.default_path()
    path.parts[-2:]  # ('datasets', 'isbi2012')
    ```
    """
    keras_home = os.environ.get(
        "KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")
    )
    return Path(keras_home) / "datasets" / "isbi2012"


def github_urls():
    """Download list of the per-slice PNGs.

    Returns:
        A list of `(local_relative_path, url, sha256)` for the 90 files.

    Example:

    ```python
    >>> urls = keras_unet2015.datasets.isbi2012.github_urls()
    >>> len(urls), urls[0][0]
    (90, 'train/images/00.png')
    ```
    """
    files = []
    for local, (remote, hashes) in _GITHUB_FOLDERS.items():
        for index, file_hash in enumerate(hashes):
            files.append(
                (
                    f"{local}/{index:02d}.png",
                    f"{GITHUB_BASE_URL}{remote}/{index}.png",
                    file_hash,
                )
            )
    return files


def download(path=None, source="github"):
    """Downloads the ISBI 2012 data and checks every file's checksum.

    Files already present with the right checksum are not downloaded again
    (`keras.utils.get_file` does the work).

    Args:
        path: str, `Path` or `None`. Target folder; `None` uses
            `default_path()`. Defaults to `None`.
        source: str. `"github"`: the 90 per-slice PNGs (train images,
            train labels, test images) from the GitHub repository
            `zhixuhao/unet` at a fixed commit, each checked against its
            SHA-256 sum. `"challenge"`: the three original multi-page TIFFs
            from the challenge server (which asks for a registration;
            checked against MD5 sums). Defaults to `"github"`.

    Returns:
        The `Path` of the folder, ready for `load_data(path)`.

    Example:

    The files of a folder that already holds them are checked and not
    downloaded again; a new folder is filled from the network:

    ```python
    path = keras_unet2015.datasets.isbi2012.download(
        "../shared/data/isbi2012"
    )
    (x_train, y_train), x_test = keras_unet2015.datasets.isbi2012.load_data(
        path
    )
    ```
    """
    import keras

    if source not in SOURCES:
        raise ValueError(
            f"`source` must be one of {SOURCES}. Received: {source!r}"
        )
    path = Path(path) if path is not None else default_path()
    path.mkdir(parents=True, exist_ok=True)
    if source == "github":
        files = github_urls()
    else:
        files = [
            (name, CHALLENGE_BASE_URL + name, file_hash)
            for name, file_hash in CHALLENGE_FILES.items()
        ]
    for relative, url, file_hash in files:
        relative = Path(relative)
        keras.utils.get_file(
            fname=relative.name,
            origin=url,
            file_hash=file_hash,
            cache_dir=str(path),
            cache_subdir=str(relative.parent),
        )
    return path


def _find_layout(path):
    path = Path(path)
    if (path / "train-volume.tif").is_file():
        return "volumes"
    if (path / "train" / "images").is_dir():
        return "slices"
    return None


def load_data(path=None, download_if_missing=False):
    """Loads the ISBI 2012 training slices, labels and test slices.

    Args:
        path: str, `Path` or `None`. Folder with the TIFF volumes
            (`train-volume.tif`, `train-labels.tif`, optionally
            `test-volume.tif`) or with per-slice images (`train/images`,
            `train/labels`, optionally `test/images`). `None` uses
            `default_path()`. Defaults to `None`.
        download_if_missing: bool. Download the data with `download()` when
            `path` holds neither layout. Defaults to `False`.

    Returns:
        `((x_train, y_train), x_test)`: `x_train` and `x_test` are `uint8`
        arrays `(30, 512, 512)` of gray values; `y_train` is a `uint8` array
        `(30, 512, 512)` of class indices, **1 = cell interior** (255 in the
        files) and **0 = membrane**. `x_test` is `None` when the test images
        are absent.

    Raises:
        FileNotFoundError: when no data is found, with how to get it.
        ValueError: when the files do not have the expected content.

    Example:

    ```python
    (x_train, y_train), x_test = keras_unet2015.datasets.isbi2012.load_data(
        "../shared/data/isbi2012"
    )
    x_train.shape, y_train.mean()  # (30, 512, 512), about 0.78
    ```
    """
    path = Path(path) if path is not None else default_path()
    layout = _find_layout(path)
    if layout is None and download_if_missing:
        download(path)
        layout = _find_layout(path)
    if layout is None:
        raise FileNotFoundError(
            f"No ISBI 2012 data found in {path}. Expected train-volume.tif "
            "and train-labels.tif (the challenge's TIFF volumes), or the "
            "folders train/images and train/labels of per-slice images. "
            "Call keras_unet2015.datasets.isbi2012.download(path) or pass "
            "download_if_missing=True to fetch them."
        )
    if layout == "volumes":
        x_train = _read_volume(path / "train-volume.tif")
        raw_labels = _read_volume(path / "train-labels.tif")
        test_file = path / "test-volume.tif"
        x_test = _read_volume(test_file) if test_file.is_file() else None
        names = [f"train-labels.tif[{i}]" for i in range(len(raw_labels))]
        y_train = np.stack(
            [
                folders.standardize_labels(label, "binary", name=name)
                for label, name in zip(raw_labels, names)
            ]
        )
    else:
        images, labels = folders.load_paired_folders(
            path / "train" / "images", path / "train" / "labels"
        )
        x_train = _stack(images, path / "train" / "images")
        y_train = _stack(labels, path / "train" / "labels")
        test_dir = path / "test" / "images"
        x_test = (
            _stack(folders.load_image_folder(test_dir), test_dir)
            if test_dir.is_dir()
            else None
        )
    if x_train.shape != y_train.shape:
        raise ValueError(
            f"ISBI 2012 training images {x_train.shape} and labels "
            f"{y_train.shape} in {path} do not match."
        )
    return (x_train, y_train), x_test


def _read_volume(file):
    volume = io.read_image(file)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise ValueError(
            f"{file} has shape {volume.shape}; expected a stack of gray-value "
            "slices (slices, height, width)."
        )
    return volume.astype(np.uint8) if volume.max() <= 255 else volume


def _stack(arrays, where):
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(
            f"The slices in {where} have different shapes {sorted(shapes)}; "
            "ISBI 2012 slices are all 512x512."
        )
    return np.stack(arrays)
