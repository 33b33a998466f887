"""The commands: what a user runs once a stage has trained a model, or before, to get photos.

- ``colorize`` (:mod:`colorlab.commands.colorize`): colour black-and-white photos with a stage's model.
- ``evaluate`` (:mod:`colorlab.commands.evaluate`): PSNR, SSIM, CIEDE2000 and colorfulness against the
  "predict grey" baseline.
- ``data/download.py`` (:mod:`colorlab.commands.download`): download and unpack a dataset, safely.

No stage imports them: they use the same core (``colorlab.coloring`` colours photos for the stages'
result grids and for these commands alike). Each reports a problem as one line that names the file or
setting, and exits with 2 for a usage or fatal error, 1 if some photos failed, 0 otherwise.
"""

import os

from colorlab import files

# TensorFlow's C++ start-up messages are noise in a command's output (set before Keras is first imported).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def unlock(folder):
    """Release ``files.lock``'s lock on ``folder``: a command done, in a notebook whose kernel lives on."""
    descriptor = files._locks.pop(os.path.realpath(folder), None)
    if descriptor is not None:
        os.close(descriptor)


def write_text(path, text):
    """Write a text file atomically (see ``files.atomic_path``)."""
    with files.atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
