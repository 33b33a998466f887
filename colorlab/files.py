"""Writing results so that nothing is ever half-written or silently lost.

Every file a stage writes goes through :func:`atomic_path`: it is written under a temporary name in the
same folder and renamed into place when complete, so a crash or a kill at any moment leaves either the
previous good file or the new one, never a broken one.
"""

import contextlib
import json
import os
from pathlib import Path

from colorlab import UserError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on failure delete it.

    The temporary name keeps the suffixes (Keras picks the format from ``.keras`` or ``.weights.h5``,
    Pillow from ``.png``).
    """
    path = Path(path)
    suffixes = "".join(path.suffixes)
    tmp = path.with_name(f".{path.name[: len(path.name) - len(suffixes)]}.tmp-{os.getpid()}{suffixes}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text):
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def prepare_out_dir(out_dir, overwrite=False):
    """Create ``out_dir`` for a new run; refuse, with a one-line error, to reuse one that holds results.

    Re-running a stage must not destroy what an earlier run wrote unless the user says so.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: OUT_DIR is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(
            f"{out_dir} already holds the results of an earlier run: pass --OVERWRITE=True to replace them, "
            f"or --OUT_DIR=another/folder to keep them"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{out_dir}: cannot create the output folder ({error.strerror})") from None
    return out_dir
