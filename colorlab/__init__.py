"""colorlab: the plumbing the colorization tutorial's stages share; the lessons live in the stage files."""

import os

__version__ = "0.1.0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ log (set before Keras imports it)


class UserError(Exception):
    """A problem the user can fix (a bad file, a bad setting): shown as one line, never a traceback."""

    prefix = "error: "
