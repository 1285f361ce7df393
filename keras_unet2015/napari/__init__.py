"""The napari plugin: a segmentation widget and synthetic sample data.

napari finds the plugin through its manifest (`napari.yaml` here, declared
as the `napari.manifest` entry point). Importing this package does not
import napari or Qt, and `import keras_unet2015` does not import this
package: the widget (`segmentation_widget`) imports napari when napari
loads it, and the functions it runs in its worker thread
(`segmentation.load_model`, `segmentation.segment_image`) work on NumPy
arrays without a GUI. Install with `pip install "keras-unet2015[napari]"`
plus a Qt binding (e.g. `pip install "napari[pyqt6]"`).
"""
