"""colorlab: the shared plumbing of the colorization tutorial.

The lessons live in the stage files (``alpha/train.py`` and the stages after it); this package only
holds what every stage needs and no stage should teach twice:

- ``colorlab.lab``: RGB <-> (l, ab), with one scaling for every stage.
- ``colorlab.images``: load any photo as float RGB in [0, 1], with clear errors for bad files.
- ``colorlab.plots``: result grids and loss curves, saved as PNG.
- ``colorlab.settings``: UPPER_CASE settings overridable as ``--NAME=value``.
- ``colorlab.files``: atomic writes and output folders that never lose earlier results.
"""

__version__ = "0.1.0"


class UserError(Exception):
    """A problem the user can fix (a bad file, a bad setting): shown as one line, never a traceback."""
