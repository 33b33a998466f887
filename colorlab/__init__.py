"""colorlab: the plumbing the colorization tutorial's stages share; the lessons live in the stage files."""

import os
import re
import sys
import tempfile

__version__ = "0.1.0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ log (set before Keras imports it)


class UserError(Exception):
    """A problem the user can fix (a bad file, a bad setting): shown as one line, never a traceback."""

    prefix = "error: "


def start_keras():
    """Import Keras with its backend's start-up lines shown once: TensorFlow's C++ code prints them before its
    log level applies, once for each of its two libraries (the stages' first cells name them)."""
    try:
        stderr = None if "keras" in sys.modules else os.dup(2)
    except OSError:  # no standard error to catch (pythonw): nothing is shown anyway
        stderr = None
    if stderr is None:
        import keras  # noqa: F401
        return
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        os.dup2(log.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            os.dup2(stderr, 2)
            os.close(stderr)
            log.seek(0)
            lines = {re.sub(r"^[IWEF]\d{4} [\d:.]+ +\d+ ", "", line): line
                     for line in log.read().decode(errors="replace").splitlines()}
            sys.stderr.write("".join(line + "\n" for line in lines.values()))
