"""Sample data of the napari plugin: synthetic touching cells."""

from keras_unet2015.datasets import make_touching_cells

SAMPLE_SIZE = 256


def touching_cells():
    """One synthetic image of touching cells and its cell instances.

    The napari sample (File > Open Sample > U-Net 2015 > Synthetic touching
    cells), made by `keras_unet2015.datasets.make_touching_cells(1, 256,
    seed=0)`: densely packed cells separated by thin dark borders, as in
    the paper's cell-tracking data.

    Returns:
        A list of two napari layer data tuples: the image (`float32`,
        `(256, 256)`, values in `[0, 1]`, layer "touching cells") and its
        instance labels (`int32`, `(256, 256)`, one id per cell, 0 for
        borders and background; Labels layer "touching cells instances").
    """
    images, _, instances = make_touching_cells(1, SAMPLE_SIZE, seed=0)
    return [
        (images[0], {"name": "touching cells"}, "image"),
        (
            instances[0],
            {"name": "touching cells instances", "opacity": 0.5},
            "labels",
        ),
    ]
