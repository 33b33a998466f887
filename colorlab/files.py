"""Writing results so that nothing is ever half-written or silently lost.

Every file a stage writes goes through :func:`atomic_path`: it is written under a temporary name in the
same folder and renamed into place when complete, so a crash or a kill at any moment leaves either the
previous good file or the new one, never a broken one.
"""

import contextlib
import errno
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
        _sync(tmp)  # on the disk before it gets the name: a power cut then leaves the old file, not an empty one
        os.replace(tmp, path)
        _sync(path.parent)  # the rename itself
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in _CANNOT_WRITE:  # a full disk, a read-only folder
            kept = "the previous version is intact" if path.exists() else "nothing was written"
            raise WriteError(path, os.strerror(error.errno), f"{kept}; {_CANNOT_WRITE[error.errno]}") from None
        raise


def _sync(path):
    """Flush a file's (or a folder's) data to the disk; a disk that cannot is no reason to fail."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open folders this way
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(descriptor)


class WriteError(UserError):
    """A file that cannot be written (disk full, no permission): ``"<path>: cannot write it (<reason>); ..."``."""

    def __init__(self, path, reason, advice):
        super().__init__(f"{path}: cannot write it ({reason}); {advice}")
        self.path, self.reason = path, reason


_CANNOT_WRITE = {  # errno -> advice (errno names missing on this system are left out)
    getattr(errno, name): advice for name, advice in [
        ("ENOSPC", "free some disk space, or choose a folder on another disk"),
        ("EDQUOT", "free some space (your disk quota is full), or choose a folder on another disk"),
        ("EFBIG", "the file is larger than this disk allows: choose a folder on another disk"),
        ("EROFS", "the disk is read-only: choose another folder"),
        ("EACCES", "you may not write there: choose another folder"),
        ("EPERM", "you may not write there: choose another folder"),
    ] if hasattr(errno, name)
}


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
    if out_dir.is_dir():
        lock(out_dir)  # so no other run is writing here: what atomic_path left half-written can go
        remove_temporaries(out_dir, recursive=False)
        if any(out_dir.iterdir()) and not overwrite:
            raise UserError(
                f"{out_dir} already holds the results of an earlier run: pass --OVERWRITE=True to replace them, "
                f"or --OUT_DIR=another/folder to keep them"
            )
        remove_temporaries(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{out_dir}: cannot create the output folder ({error.strerror})") from None
    lock(out_dir)
    return out_dir


_locks = {}  # real path of a folder -> the open descriptor that holds its lock, until the process ends


def lock(folder):
    """Hold an exclusive lock on ``folder`` until this process ends, so that two runs (two terminals, a
    resume started while the first run still goes) never write into one OUT_DIR at once.

    Where locks are not available (Windows, some network disks), it does nothing.
    """
    key = os.path.realpath(folder)
    if key in _locks:
        return
    try:
        import fcntl

        descriptor = os.open(key, os.O_RDONLY)
    except (ImportError, OSError):
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(descriptor)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise UserError(
                f"{folder}: another run is writing into this folder right now (in another terminal or notebook?); "
                f"wait for it to end or stop it, or choose another --OUT_DIR"
            ) from None
        return  # the disk cannot lock: go on without
    _locks[key] = descriptor


def remove_temporaries(folder, recursive=True):
    """Delete the temporary files (``.<name>.tmp-<pid>...``) that :func:`atomic_path` left in ``folder``
    (and its sub-folders) when a process was killed mid-write; those of running processes are kept."""
    for path in (Path(folder).rglob if recursive else Path(folder).glob)(".*.tmp-*"):
        pid = path.name.partition(".tmp-")[2].partition(".")[0]
        if path.is_file() and pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid):
    if os.name != "posix":
        return True  # no safe way to ask here (os.kill would end the process): keep the file
    if pid == os.getpid():
        return False  # ours: no write of this process is under way while it prepares a folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
