"""colorlab: the plumbing the colorization tutorial's stages share; the lessons live in the stage files."""

__version__ = "0.1.0"


class UserError(Exception):
    """A problem the user can fix (a bad file, a bad setting): shown as one line, never a traceback."""
