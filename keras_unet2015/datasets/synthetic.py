"""A synthetic data set of touching cells, for demos and tests.

Real microscopy data sets are large and have download terms; this generator
makes images that exercise what the 2015 U-Net is about, on any machine and
in milliseconds: densely packed cells that touch each other, separated only
by thin dark borders, with textured interiors, some background between
cells, blur and noise. Cells are the regions of a Voronoi tessellation of
jittered grid points, with boundaries made wavy by a smooth random warp and
cells clipped to a random radius so that background shows between some of
them. Everything is drawn from one NumPy generator, so the same `seed`
gives the same images on every machine.
"""

import numpy as np
from scipy import ndimage
from scipy import spatial


def _smooth_noise(rng, shape, sigma):
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / (noise.std() + 1e-12)


def _one_image(rng, height, width, cell_radius, noise, border_width):
    spacing = 2.0 * cell_radius
    # Jittered grid points, one per cell, extending beyond the image so
    # that cells at the border are cut like in real images.
    ys = np.arange(-spacing, height + spacing, spacing)
    xs = np.arange(-spacing, width + spacing, spacing)
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    grid[:, 1] += (np.arange(len(grid)) // len(xs) % 2) * spacing / 2
    points = grid + rng.uniform(-0.3, 0.3, grid.shape) * spacing
    radii = cell_radius * rng.uniform(0.85, 1.6, len(points))

    # Warp the pixel coordinates with a smooth field: wavy cell borders.
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    amplitude = 0.18 * cell_radius
    rows += amplitude * _smooth_noise(rng, (height, width), cell_radius / 2)
    cols += amplitude * _smooth_noise(rng, (height, width), cell_radius / 2)
    coords = np.stack([rows.ravel(), cols.ravel()], -1)
    distance, nearest = spatial.cKDTree(points).query(coords)
    nearest = nearest.reshape(height, width)
    distance = distance.reshape(height, width)

    ids = np.where(distance <= radii[nearest], nearest + 1, 0)
    # Border pixels: a 4-neighbour belongs to another cell or background.
    border = np.zeros((height, width), bool)
    for axis in (0, 1):
        different = np.diff(ids, axis=axis) != 0
        if axis == 0:
            border[1:] |= different
            border[:-1] |= different
        else:
            border[:, 1:] |= different
            border[:, :-1] |= different
    if border_width > 1:
        border = ndimage.binary_dilation(border, iterations=border_width - 1)
    instances = np.where(border, 0, ids)
    # Renumber the visible cells 1..n in raster order.
    visible = np.unique(instances[instances > 0])
    lookup = np.zeros(ids.max() + 1, np.int32)
    lookup[visible] = np.arange(1, len(visible) + 1)
    instances = lookup[instances]

    # Intensities: textured cells of different brightness, darker textured
    # background, dark borders; then optical blur and noise.
    brightness = rng.uniform(0.55, 0.85, len(visible) + 1)
    texture = 0.06 * _smooth_noise(rng, (height, width), 1.5)
    image = np.where(instances > 0, brightness[instances], 0.38) + texture
    image = np.where(border, 0.12, image)
    image = ndimage.gaussian_filter(image, 0.7)
    image = image + noise * rng.standard_normal((height, width))
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return image, instances


def make_touching_cells(
    num_images=8,
    image_size=256,
    cell_radius=14,
    noise=0.05,
    border_width=1,
    seed=0,
):
    """Generates images of touching cells with their labels.

    Args:
        num_images: int. Number of images. Defaults to `8`.
        image_size: int or `(height, width)`. Image size in pixels. Defaults
            to `256`.
        cell_radius: float. Typical cell radius in pixels. Defaults to `14`.
        noise: float. Standard deviation of the additive Gaussian noise, on
            the `[0, 1]` intensity scale. Defaults to `0.05`.
        border_width: int. Width in pixels of the border each cell loses
            towards a neighbour; touching cells are separated by twice this.
            Defaults to `1`.
        seed: int. Seed of the NumPy generator. Defaults to `0`.

    Returns:
        `(images, labels, instances)`: `images` is `float32`
        `(num_images, height, width)` in `[0, 1]`; `labels` is `uint8`
        class indices (1 = cell interior, 0 = border or background), as
        U-Net targets; `instances` is `int32` with one id per cell
        (`1..n` per image) and 0 for borders and background, for weight
        maps and instance metrics.

    Example:

    ```python
    images, labels, instances = (
        keras_unet2015.datasets.make_touching_cells(4, 128, seed=1)
    )
    images.shape, labels.max(), instances.max()  # (4, 128, 128), 1, ~40
    ```
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    height, width = (int(s) for s in image_size)
    if num_images < 1 or height < 8 or width < 8:
        raise ValueError(
            "`num_images` must be >= 1 and each side of `image_size` >= 8. "
            f"Received: num_images={num_images}, image_size={image_size}"
        )
    if cell_radius < 2:
        raise ValueError(
            f"`cell_radius` must be at least 2 px. Received: {cell_radius}"
        )
    if border_width < 1:
        raise ValueError(
            f"`border_width` must be at least 1. Received: {border_width}"
        )
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, height, width), np.float32)
    instances = np.empty((num_images, height, width), np.int32)
    for i in range(num_images):
        images[i], instances[i] = _one_image(
            rng, height, width, cell_radius, noise, border_width
        )
    labels = (instances > 0).astype(np.uint8)
    return images, labels, instances
