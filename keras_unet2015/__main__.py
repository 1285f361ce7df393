"""`python -m keras_unet2015`: the `keras-unet2015` command line."""

import sys

from keras_unet2015.cli import main

if __name__ == "__main__":
    sys.exit(main())
