"""The commands: what a user runs once a stage has trained a model, or before, to get photos.

- ``colorize`` (:mod:`colorlab.commands.colorize`): colour black-and-white photos with a stage's model.
- ``evaluate`` (:mod:`colorlab.commands.evaluate`): PSNR, SSIM, CIEDE2000 and colorfulness against the
  "predict grey" baseline.
- ``data/download.py`` (:mod:`colorlab.commands.download`): download and unpack a dataset, safely.
- ``python -m colorlab.commands.launch`` (:mod:`colorlab.commands.launch`): start one process of beta's
  training on several machines (JAX).

No stage imports them: they use the same core (``colorlab.coloring`` colours photos for the stages'
result grids and for these commands alike). Each reports a problem as one line that names the file or
setting, and exits with 2 for a usage or fatal error, 1 if some photos failed, 0 otherwise.
"""

from colorlab import files
from colorlab.files import unlock  # noqa: F401 (the commands' and tests' name for it)


def write_text(path, text):
    """Write a text file atomically (see ``files.atomic_path``)."""
    with files.atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
