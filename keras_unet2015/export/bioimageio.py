"""BioImage.IO model packages of a `UNet2015` (format 0.5).

A BioImage.IO package is a `.zip` with an `rdf.yaml` description, weights
and test tensors, which Fiji (deepImageJ), ilastik, QuPath extensions,
napari plugins and `bioimageio.core` run without this package installed.
`export_bioimageio` writes one with:

- weights in two formats: a TensorFlow SavedModel (zipped) and ONNX
  converted from it, both taking any valid tile size;
- the input axes `batch, y, x, channel` (`batch, channel, y, x` for a
  `"channels_first"` model), each spatial size `min + n * step` with the
  network's smallest valid input and `2**depth`: consumers pick valid
  tiles from that rule;
- the output size given by the input size minus `model.size_loss` (184 px
  for the paper's network): the halo is already cropped by the network,
  so consumers must feed each output tile `model.context_margin` pixels of
  context on each side (92 px), as the description says;
- preprocessing that maps the pixel values to what the network was trained
  on (`datasets.to_float_image`'s rules: `uint8 / 255`, or the image's own
  range) and a softmax over the classes as postprocessing;
- a test input (a valid-size crop of the given image) with the expected
  output, a cover image, a README, the citation of the paper and of the
  package, and the licence.

Requires `bioimageio.spec` (`pip install "keras-unet2015[bioimageio]"`)
and TensorFlow, which writes the weights.
"""

import importlib.metadata
import shutil
import string
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np

from keras_unet2015 import run_folder
from keras_unet2015 import sizes

__all__ = ["export_bioimageio"]

PREPROCESSING = ("divide_by_255", "min_max", "none")

PAPER_CITATION = (
    "Ronneberger, O., Fischer, P., Brox, T. (2015). U-Net: Convolutional "
    "Networks for Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, "
    "234-241."
)
PAPER_DOI = "10.1007/978-3-319-24574-4_28"
PACKAGE_URL = "https://github.com/keras-unet2015/keras-unet2015"

_SOFTMAX_NOTE = "class probabilities (softmax of the network's logits)"


def _import_spec():
    try:
        from bioimageio.spec.model import v0_5
    except ImportError as error:
        raise ImportError(
            "Writing a BioImage.IO package needs `bioimageio.spec` "
            f"({error}). Install it with `pip install "
            '"keras-unet2015[bioimageio]"`.'
        ) from None
    return v0_5


_NAME_CHARACTERS = set(string.ascii_letters + string.digits + "_+- ()")


def _check_name(name):
    bad = sorted(set(name) - _NAME_CHARACTERS)
    if not isinstance(name, str) or not name.strip() or bad:
        raise ValueError(
            "`name` must be a non-empty string of letters, digits, spaces "
            "and _+-() (the BioImage.IO rule). Received: "
            f"name={name!r}" + (f", with {bad}" if bad else "")
        )
    if len(name) > 128:
        raise ValueError(
            f"`name` must be at most 128 characters. Received {len(name)}."
        )


def _check_preprocessing(preprocessing, image):
    if preprocessing is None:
        if image.dtype == np.uint8:
            return "divide_by_255"
        if np.issubdtype(image.dtype, np.integer):
            return "min_max"
        inside = float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        return "none" if inside else "min_max"
    if preprocessing not in PREPROCESSING:
        raise ValueError(
            f"`preprocessing` must be None (chosen from the test image's "
            f"dtype) or one of {PREPROCESSING}. Received: "
            f"preprocessing={preprocessing!r}"
        )
    return preprocessing


def _apply_preprocessing(image, preprocessing):
    image = image.astype(np.float32)
    if preprocessing == "divide_by_255":
        return image / np.float32(255.0)
    if preprocessing == "min_max":
        low, high = float(image.min()), float(image.max())
        # bioimageio's scale_range divides by (max - min + eps), eps = 1e-6.
        return (image - np.float32(low)) / np.float32(high - low + 1e-6)
    return image


def _test_image(model, test_image):
    """The test image as `(height, width, channels)` in its own dtype."""
    if test_image is None:
        from keras_unet2015.datasets.synthetic import make_touching_cells

        images, _, _ = make_touching_cells(num_images=1, image_size=256)
        image = np.round(images[0] * 255).astype(np.uint8)
    elif isinstance(test_image, (str, Path)):
        from keras_unet2015.datasets.io import read_image

        image = read_image(test_image)
    else:
        image = np.asarray(test_image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] != model.input_channels:
        raise ValueError(
            "`test_image` must be one image of shape (height, width) or "
            f"(height, width, {model.input_channels}) for a model with "
            f"{model.input_channels} input channel(s). Received shape "
            f"{image.shape}."
        )
    if image.dtype.kind not in "uif" or not np.all(np.isfinite(image)):
        raise ValueError(
            "`test_image` must hold finite real numbers. Received dtype "
            f"{image.dtype}"
            + (
                " with NaN or infinite values."
                if image.dtype.kind == "f"
                else "."
            )
        )
    return image


def _valid_crop(image, model):
    """The largest valid-size centre crop (mirror-padded if too small)."""
    out = []
    for axis in (0, 1):
        size = image.shape[axis]
        below, above = sizes.nearest_valid_input_sizes(
            size, model.depth, model.padding
        )
        out.append(below if below is not None else above)
    pad = [(0, 0)] * 3
    for axis, target in enumerate(out):
        short = max(0, target - image.shape[axis])
        pad[axis] = (short // 2, short - short // 2)
    if any(p != (0, 0) for p in pad):
        image = np.pad(image, pad, mode="reflect")
    top = (image.shape[0] - out[0]) // 2
    left = (image.shape[1] - out[1]) // 2
    return image[top : top + out[0], left : left + out[1]]


def _softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _cover(path, image, probabilities):
    """Input and foreground probability side by side, as a PNG."""
    from PIL import Image

    gray = image[..., 0].astype(np.float32)
    low, high = float(gray.min()), float(gray.max())
    gray = (gray - low) / max(high - low, 1e-12)
    margin = (gray.shape[0] - probabilities.shape[0]) // 2
    gray = gray[
        margin : margin + probabilities.shape[0],
        margin : margin + probabilities.shape[1],
    ]
    gap = np.ones((gray.shape[0], 8), np.float32)
    panel = np.concatenate([gray, gap, probabilities], axis=1)
    Image.fromarray(np.round(panel * 255).astype(np.uint8)).save(path)


def _readme(model, name, description, tile, preprocessing, margin, validation):
    depth = model.depth
    smallest = sizes.smallest_valid_input(depth, model.padding)
    lines = [
        f"# {name}",
        "",
        description,
        "",
        "## The network",
        "",
        f"The U-Net of Ronneberger, Fischer and Brox (2015) as built by "
        f"[keras-unet2015]({PACKAGE_URL}) "
        f"(`UNet2015(depth={depth}, filters={model.filters}, "
        f"num_classes={model.num_classes}, "
        f"input_channels={model.input_channels}, "
        f"padding='{model.padding}')`), "
        f"{model.count_params():,} parameters.",
        "",
        "## Input and output",
        "",
        f"- Input: {model.input_channels} channel(s); height and width "
        f"each {smallest} + n * {2**depth} pixels (e.g. {tile[0]} x "
        f"{tile[1]}, the test input).",
        "- Preprocessing: "
        + {
            "divide_by_255": "pixel values divided by 255 (8-bit images).",
            "min_max": "each image scaled to [0, 1] by its own minimum and "
            "maximum.",
            "none": "none: the network takes values in [0, 1].",
        }[preprocessing],
        f"- Output: {model.num_classes} {_SOFTMAX_NOTE}; "
        + (
            f"{2 * margin} px smaller than the input in height and width "
            f"(valid convolutions: every output pixel sees {margin} px of "
            "context on each side)."
            if margin
            else "the size of the input (same padding)."
        ),
        "",
        "## Tiling large images",
        "",
        f"Cut the image into input tiles that overlap by {2 * margin} px, "
        f"so that the outputs ({2 * margin} px smaller) join without gaps, "
        "and mirror the image at its border to give the outermost tiles "
        "their context (the paper's overlap-tile strategy). "
        "`keras_unet2015.OverlapTilePredictor` does this exactly.",
        "",
        "## Validation",
        "",
        validation
        or (
            "The test output in this package is the Keras model's own "
            "prediction for the test input; both weight formats "
            "(TensorFlow SavedModel and ONNX) reproduce it "
            "(`bioimageio test`). The segmentation quality of these "
            "weights was not measured by the exporter."
        ),
        "",
        "## Citation",
        "",
        f"- {PAPER_CITATION} doi:{PAPER_DOI}",
        f"- keras-unet2015, {PACKAGE_URL}",
        "",
    ]
    return "\n".join(lines)


def export_bioimageio(
    model,
    path,
    name=None,
    description=None,
    test_image=None,
    preprocessing=None,
    authors=("keras-unet2015 contributors",),
    license="Apache-2.0",
    tags=(),
    documentation=None,
    validation=None,
    tile_size=None,
    overwrite=False,
):
    """Writes a BioImage.IO model package (`.zip`, format 0.5) of `model`.

    See the module docstring for what the package holds. The package is
    validated by `bioimageio.spec` while it is built (an invalid field
    raises here, not in the consumer), and the test output is the Keras
    model's own prediction for the test input, so `bioimageio test
    package.zip` (from `bioimageio.core`) checks that both weight formats
    reproduce the Keras model.

    Args:
        model: a `keras_unet2015.UNet2015` with valid or same padding.
        path: str or `Path`. The `.zip` to write.
        name: str or `None`. The model's name (letters, digits, spaces and
            `_+-()`). Defaults to `None`: "U-Net 2015 (depth D - F
            filters)".
        description: str or `None`. One or two sentences on what the model
            segments. Defaults to `None`: a generic description.
        test_image: `None`, a 2D or `(height, width, channels)` array in
            the image's own dtype (raw pixel values, as users' files hold
            them), or the path of an image file. The package's test input
            is its largest valid-size centre crop. Defaults to `None`: a
            256 x 256 8-bit image of synthetic touching cells.
        preprocessing: `None`, `"divide_by_255"`, `"min_max"` or
            `"none"`. How raw pixel values become the network's input.
            Defaults to `None`: the rule of
            `keras_unet2015.datasets.to_float_image` for the test image's
            dtype (`uint8`: divide by 255; other integers: the image's own
            range; floats in `[0, 1]`: none).
        authors: sequence of str (names) or dicts with the BioImage.IO
            author fields (`name`, and optionally `github_user`,
            `affiliation`, `email`, `orcid`; a `github_user` makes the
            author a maintainer the model zoo can reach; bioimageio.spec
            checks it online, so it needs network access). Defaults to
            `("keras-unet2015 contributors",)`.
        license: str. SPDX identifier of the weights' licence. Defaults to
            `"Apache-2.0"`.
        tags: sequence of str. Extra tags (the package adds "unet",
            "segmentation", "keras-unet2015"). Defaults to `()`.
        documentation: `None` or the path of a Markdown file. Defaults to
            `None`: a README generated from the model.
        validation: `None` or str. Markdown for the README's "Validation"
            section: how well the weights segment which data (scores,
            data set, split). Defaults to `None`: a sentence saying the
            test output is the Keras model's and the quality was not
            measured. Ignored with `documentation`.
        tile_size: must be `None`: a package always takes any valid size
            (its axes say which). Accepted for the signature of
            `export_model`.
        overwrite: bool. Replace an existing `path`. Defaults to `False`.

    Returns:
        The `Path` written.

    Example:

    ```python
    model = keras_unet2015.UNet2015(depth=2, filters=4)  # or a trained one
    keras_unet2015.export.bioimageio.export_bioimageio(
        model, "unet_bioimageio.zip", name="My U-Net"
    )
    ```
    """
    from keras_unet2015.export import BIOIMAGEIO_SAVED_MODEL
    from keras_unet2015.export import _check_path
    from keras_unet2015.export import _check_unet
    from keras_unet2015.export import _write
    from keras_unet2015.export import serving_model

    _check_unet(model)
    if tile_size is not None:
        raise ValueError(
            "A BioImage.IO package takes any valid tile size (its axes "
            "give the rule), so `tile_size` must be None. Received: "
            f"tile_size={tile_size!r}"
        )
    path = _check_path(path, "bioimageio", overwrite)
    v0_5 = _import_spec()
    if isinstance(authors, str):
        authors = (authors,)
    image = _test_image(model, test_image)
    preprocessing = _check_preprocessing(preprocessing, image)
    crop = _valid_crop(image, model)
    name = name or (
        f"U-Net 2015 (depth {model.depth} - {model.filters} filters)"
    )
    _check_name(name)
    description = description or (
        f"The original U-Net (Ronneberger et al. 2015) segmenting "
        f"{model.input_channels}-channel images into {model.num_classes} "
        "classes, exported by keras-unet2015."
    )

    # Expected output: the Keras model's own prediction.
    x = _apply_preprocessing(crop, preprocessing)[None]
    channels_first = model.data_format == "channels_first"
    if channels_first:
        x = np.moveaxis(x, -1, 1)
    # The float32 graph the weights hold (a mixed-precision model's own
    # output differs by its rounding).
    served = serving_model(model)
    logits = np.asarray(
        keras.ops.convert_to_numpy(served(x, training=False)), np.float32
    )
    class_axis = 1 if channels_first else -1
    probabilities = (
        _softmax(logits, class_axis) if model.activation is None else logits
    )
    raw_input = crop.astype(np.float32)[None]
    if channels_first:
        raw_input = np.moveaxis(raw_input, -1, 1)

    with tempfile.TemporaryDirectory(prefix="keras_unet2015_bioimageio_") as t:
        tmp = Path(t)
        onnx_path = tmp / "weights.onnx"
        saved = tmp / "tf_saved_model"
        _write(
            served,
            [(onnx_path, "onnx"), (saved, BIOIMAGEIO_SAVED_MODEL)],
            batch_size=None,
        )
        tf_zip = tmp / "tf_saved_model.zip"
        with zipfile.ZipFile(tf_zip, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(saved.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(saved).as_posix())
        shutil.rmtree(saved)
        np.save(tmp / "test_input.npy", raw_input)
        np.save(tmp / "test_output.npy", probabilities)
        import tifffile

        tifffile.imwrite(tmp / "sample_input.tif", raw_input)
        tifffile.imwrite(tmp / "sample_output.tif", probabilities)
        foreground = (
            probabilities[0, 1]
            if channels_first
            else (probabilities[0, ..., 1])
        )
        _cover(tmp / "cover.png", crop, foreground)
        margin = model.context_margin if model.padding == "valid" else 0
        if documentation is None:
            documentation = tmp / "README.md"
            documentation.write_text(
                _readme(
                    model,
                    name,
                    description,
                    crop.shape,
                    preprocessing,
                    margin,
                    validation,
                )
            )
        descr = _describe(
            v0_5,
            model,
            name=name,
            description=description,
            authors=authors,
            license=license,
            tags=tags,
            documentation=documentation,
            preprocessing=preprocessing,
            tmp=tmp,
            onnx_path=onnx_path,
            tf_zip=tf_zip,
        )
        from bioimageio.spec import save_bioimageio_package

        run_folder.atomic_write(
            path,
            lambda temporary: save_bioimageio_package(
                descr, output_path=Path(temporary)
            ),
        )
    return path


def _describe(
    v0_5,
    model,
    name,
    description,
    authors,
    license,
    tags,
    documentation,
    preprocessing,
    tmp,
    onnx_path,
    tf_zip,
):
    import onnx

    smallest = sizes.smallest_valid_input(model.depth, model.padding)
    step = 2**model.depth
    loss = model.size_loss
    channels_first = model.data_format == "channels_first"

    def space_in(axis_id):
        return v0_5.SpaceInputAxis(
            id=v0_5.AxisId(axis_id),
            size=v0_5.ParameterizedSize(min=smallest, step=step),
            concatenable=False,
        )

    def space_out(axis_id):
        return v0_5.SpaceOutputAxis(
            id=v0_5.AxisId(axis_id),
            size=v0_5.SizeReference(
                tensor_id=v0_5.TensorId("image"),
                axis_id=v0_5.AxisId(axis_id),
                offset=-loss,
            ),
        )

    def order(batch, channel, y, x):
        return (
            [batch, channel, y, x] if channels_first else [batch, y, x, channel]
        )

    input_channels = v0_5.ChannelAxis(
        channel_names=[
            v0_5.Identifier(f"channel{i}") for i in range(model.input_channels)
        ]
    )
    output_channels = v0_5.ChannelAxis(
        channel_names=[
            v0_5.Identifier(f"class{i}") for i in range(model.num_classes)
        ]
    )
    steps = [
        v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))
    ]
    if preprocessing == "divide_by_255":
        steps.append(
            v0_5.ScaleLinearDescr(
                kwargs=v0_5.ScaleLinearKwargs(gain=1.0 / 255.0)
            )
        )
    elif preprocessing == "min_max":
        steps.append(
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=[v0_5.AxisId("y"), v0_5.AxisId("x")],
                    min_percentile=0.0,
                    max_percentile=100.0,
                )
            )
        )
    postprocessing = []
    if model.activation is None:
        postprocessing.append(
            v0_5.SoftmaxDescr(
                kwargs=v0_5.SoftmaxKwargs(axis=v0_5.AxisId("channel"))
            )
        )
    inputs = v0_5.InputTensorDescr(
        id=v0_5.TensorId("image"),
        description="raw pixel values; any valid tile size",
        axes=order(
            v0_5.BatchAxis(), input_channels, space_in("y"), space_in("x")
        ),
        test_tensor=v0_5.FileDescr(source=tmp / "test_input.npy"),
        sample_tensor=v0_5.FileDescr(source=tmp / "sample_input.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=steps,
    )
    outputs = v0_5.OutputTensorDescr(
        id=v0_5.TensorId("probabilities"),
        description=(
            f"class probabilities; the input's size minus {loss} px "
            f"({loss // 2} px of context on each side)"
        ),
        axes=order(
            v0_5.BatchAxis(), output_channels, space_out("y"), space_out("x")
        ),
        test_tensor=v0_5.FileDescr(source=tmp / "test_output.npy"),
        sample_tensor=v0_5.FileDescr(source=tmp / "sample_output.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=postprocessing,
    )
    version = importlib.metadata.version
    from keras_unet2015.version import __version__

    converted = (
        f"converted from a keras-unet2015 {__version__} UNet2015 (Keras "
        f"{keras.__version__})"
    )
    opset = max(
        entry.version
        for entry in onnx.load(
            str(onnx_path), load_external_data=False
        ).opset_import
        if entry.domain in ("", "ai.onnx")
    )
    weights = v0_5.WeightsDescr(
        tensorflow_saved_model_bundle=(
            v0_5.TensorflowSavedModelBundleWeightsDescr(
                source=tf_zip,
                tensorflow_version=v0_5.Version(version("tensorflow")),
                comment=converted,
            )
        ),
        onnx=v0_5.OnnxWeightsDescr(
            source=onnx_path,
            opset_version=opset,
            parent="tensorflow_saved_model_bundle",
            comment=f"converted with tf2onnx {version('tf2onnx')}",
        ),
    )
    return v0_5.ModelDescr(
        name=name,
        description=description,
        authors=[
            v0_5.Author(**author)
            if isinstance(author, dict)
            else v0_5.Author(name=author)
            for author in authors
        ],
        cite=[
            v0_5.CiteEntry(text=PAPER_CITATION, doi=v0_5.Doi(PAPER_DOI)),
            v0_5.CiteEntry(
                text="keras-unet2015: the original U-Net for Keras 3",
                url=v0_5.HttpUrl(PACKAGE_URL),
            ),
        ],
        license=v0_5.LicenseId(license),
        documentation=v0_5.FileDescr(source=Path(documentation)),
        covers=[v0_5.FileDescr(source=tmp / "cover.png")],
        git_repo=v0_5.HttpUrl(PACKAGE_URL),
        tags=["unet", "segmentation", "keras-unet2015", *tags],
        inputs=[inputs],
        outputs=[outputs],
        weights=weights,
    )
