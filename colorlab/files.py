"""Writing results so that nothing of the user's is ever lost, replaced or followed: a run's folder is marked
as the project's (``MARK``), and OVERWRITE and RESUME touch only the files this project writes (``OWNED``)."""

import contextlib
import errno
import fnmatch
import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path

from colorlab import UserError, settings

MARK = ".colorlab-run.json"  # in every folder a run prepared: {"stage": "beta"}
# What the stages and commands write into their folder: the only files OVERWRITE may delete or replace.
OWNED = (
    MARK, "settings.json", "metrics.json", "history.csv", "warmup.csv", "model.keras", "warmup.keras",
    "best.weights.h5", "result.png", "loss.png", "batch.png", "colorfulness.png", "classifier_input.png",
    "colorized.png",
    "grids/epoch-[0-9][0-9][0-9][0-9].png", "backup/latest.weights.h5*", "backup/training_metadata.json*",
    "backup/*/latest.weights.h5*", "backup/*/training_metadata.json*", "metrics.csv", "summary.json",
    "logs/train/events.out.tfevents.*", "logs/validation/events.out.tfevents.*",
)
# atomic_path's names: .<name>.colorlab-tmp-<pid>-<8 random characters><the target's suffixes>
TEMPORARY = re.compile(r"\..*\.colorlab-tmp-(\d+)-[a-z0-9_]{8}(\.[A-Za-z0-9]{1,10}){0,2}")
MAX_JSON_BYTES = 1 << 20
# Folders that hold more than results ("": the repository itself), refused as a destination.
PROJECT = ("", "colorlab", "alpha", "beta", "full", "gan", "notebooks", "tests", "docs", "bench", "classroom",
           "data/samples")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a new temporary path beside ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    suffix = "".join(s for s in path.suffixes[-2:] if len(s) <= 10)  # Keras picks the format from .keras
    prefix = f".{path.name[:40]}.colorlab-tmp-{os.getpid()}-"  # short, whatever the target's name
    try:  # created exclusively: never through a planted link
        descriptor, tmp = tempfile.mkstemp(suffix=suffix, prefix=prefix, dir=path.parent)
    except OSError as error:
        raise _write_error(path, error) if error.errno in _CANNOT_WRITE else error from None
    os.umask(umask := os.umask(0o022))  # the umask can only be read by setting it: set it back at once
    os.fchmod(descriptor, 0o666 & ~umask)  # mkstemp's 0600 would hide results from the user's group
    os.close(descriptor)
    try:
        yield Path(tmp)
        _sync(tmp)  # on the disk before it gets the name: a power cut leaves the old file, not an empty one
        os.replace(tmp, path)
        _sync(path.parent)  # the rename itself
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.errno in _CANNOT_WRITE:  # a full disk, a read-only folder
            raise _write_error(path, error) from None
        raise


def _sync(path):
    """Flush a file's (or folder's) data to the disk; a disk that cannot is no reason to fail."""
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
    """A file that cannot be written (disk full, no permission), in one line."""

    def __init__(self, path, reason, advice, disk_full=False):
        super().__init__(f"{path}: cannot write it ({reason}); {advice}")
        self.path, self.reason, self.disk_full = path, reason, disk_full


_CANNOT_WRITE = {  # errno -> advice
    errno.ENOSPC: "free some disk space, or choose a folder on another disk",
    errno.EDQUOT: "free some space (your disk quota is full), or choose a folder on another disk",
    errno.EFBIG: "the file is larger than this disk allows: choose a folder on another disk",
    errno.EROFS: "the disk is read-only: choose another folder",
    **dict.fromkeys((errno.EACCES, errno.EPERM), "you may not write there: choose another folder"),
}


def _write_error(path, error):
    kept = "the previous version is intact" if Path(path).exists() else "nothing was written"
    return WriteError(path, os.strerror(error.errno), f"{kept}; {_CANNOT_WRITE[error.errno]}",
                      disk_full=error.errno in (errno.ENOSPC, errno.EDQUOT))


def write_json(path, obj):
    """Write ``obj`` as indented, valid JSON, atomically: NaN and infinities become null."""
    def finite(obj):
        if isinstance(obj, dict):
            return {key: finite(value) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [finite(value) for value in obj]
        return None if isinstance(obj, float) and not math.isfinite(obj) else obj

    text = json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def read_json(path, limit=MAX_JSON_BYTES):
    """A JSON file's content (None if missing); a UserError unless a regular file of valid JSON <= limit."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: not a regular file; it was ignored")
    if info.st_size > limit:
        raise UserError(f"{path}: {info.st_size} bytes, more than a settings file can hold ({limit}); "
                        f"it was ignored")
    try:
        with open(path, "rb") as file:
            return json.loads(file.read(limit + 1).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # too deep a nesting too
        raise UserError(f"{path}: not valid JSON ({str(error)[:100]}); it was ignored") from None


def check_destination(path, name="OUT_DIR"):
    """``path`` as a Path; a UserError if it may hold more than results (``.``, a root, home, the project)."""
    text = str(path).strip()
    if text in ("", "."):
        raise UserError(f"{name} is {text!r}, the current folder: give a folder of its own, "
                        f"such as outputs/run1")
    real = Path(os.path.realpath(text))
    project = [Path(os.path.realpath(settings.REPO_ROOT / part)) for part in PROJECT]
    if real in (Path(real.anchor), Path.home().resolve()) or any(real in (p, *p.parents) for p in project):
        raise UserError(f"{name}={text} is {real}, which holds more than a run's results (a root, your "
                        f"home folder, or the project's own files): give a folder of its own, such as "
                        f"outputs/run1")
    return Path(text)


def prepare_out_dir(out_dir, stage, overwrite=False, resume=None):
    """Create (or reuse) the folder of a run of ``stage`` and lock it, refusing one with files no run wrote.
    ``overwrite`` deletes the owned files; ``resume`` keeps them (None: the stage cannot resume)."""
    out_dir = check_destination(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: OUT_DIR is a file, not a folder")
    mark = None
    with contextlib.suppress(UserError):  # a damaged mark: as if there were none
        mark = read_json(out_dir / MARK, limit=64 * 1024)
    mark = mark if isinstance(mark, dict) else None
    again = settings.flag("RESUME", True)
    if resume and not out_dir.is_dir():
        raise UserError(f"nothing to resume: {out_dir} does not exist; check OUT_DIR, or start a new run "
                        f"without {again}")
    if out_dir.is_dir():
        lock(out_dir)
        remove_temporaries(out_dir)
        entries = _entries(out_dir)
        foreign = [p for p in entries if mark is None or not owned(p)]  # no mark: nothing in it is ours
        if foreign:
            listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UserError(f"{out_dir} holds files that no colorlab run wrote ({listed}): nothing in it is "
                            f"replaced; choose another {settings.flag('OUT_DIR', 'outputs/new-folder')}")
        ours = [p for p in entries if p != MARK]
        if resume:
            if mark is None or not (out_dir / "backup").is_dir():
                raise UserError(f"nothing to resume: {out_dir} holds no checkpoint of a {stage} run (no "
                                f"backup/ folder); check OUT_DIR, or start a new run without {again}")
            if mark.get("stage") != stage:
                raise UserError(f"{out_dir} holds a run of the {mark.get('stage')} stage: resume it with "
                                f"that stage, or check OUT_DIR")
            for path in (out_dir / "backup").rglob("training_metadata.json"):  # Keras trusts it blindly
                state = read_json(path, limit=4096)
                if not (isinstance(state, dict) and type(state.get("epoch")) is int and state["epoch"] >= 0):
                    raise UserError(f"{path}: not a checkpoint state that Keras wrote; cannot resume from it")
        elif ours and not overwrite:
            go_on = "" if resume is None else f", {again} continues it"
            earlier = mark.get("stage", "colorlab")
            raise UserError(f"{out_dir} already holds the results of an earlier {earlier} run: "
                            f"{settings.flag('OVERWRITE', True)} replaces them{go_on}, or choose another "
                            f"OUT_DIR")
        elif ours:
            for relative in ours:
                (out_dir / relative).unlink(missing_ok=True)
            for folder in sorted((p for p in out_dir.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):  # only when empty (and never a link): anything else stays
                    folder.rmdir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{out_dir}: cannot create the output folder ({error.strerror})") from None
    lock(out_dir)
    if not resume:
        write_json(out_dir / MARK, {"stage": stage, "owned": list(OWNED)})
    return out_dir


def owned(relative):
    """True if ``relative`` (a path with / inside an output folder) names a file this project writes."""
    name = relative.rpartition("/")[2]
    return any(fnmatch.fnmatchcase(relative, p) for p in OWNED) or bool(TEMPORARY.fullmatch(name))


def _entries(folder):
    found = []  # every file, link or other non-folder under folder, as a relative path with /
    for root, dirs, names in os.walk(folder):  # links to folders are listed, never followed
        base = Path(root).relative_to(folder)
        found += [(base / n).as_posix() for n in names]
        found += [(base / d).as_posix() for d in dirs if (Path(root) / d).is_symlink()]
    return sorted(found)


_locks = {}  # real path of a folder -> the open descriptor that holds its lock


def lock(folder):
    """Lock ``folder`` until exit or :func:`unlock`: two runs never write into one folder at once."""
    key = os.path.realpath(folder)
    if key in _locks:
        return
    try:
        import fcntl
        descriptor = os.open(key, os.O_RDONLY)
    except (ImportError, OSError):
        return  # no locks here (Windows): go on without
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(descriptor)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise UserError(f"{folder}: another run is writing into this folder right now (in another "
                            f"terminal or notebook?); wait for it to end or stop it, or choose another "
                            f"OUT_DIR") from None
        return  # the disk cannot lock: go on without
    _locks[key] = descriptor


def unlock(folder=None):
    """Release :func:`lock`'s lock on ``folder`` (None: every one): a notebook's kernel outlives its run."""
    for key in [os.path.realpath(folder)] if folder else list(_locks):
        if (descriptor := _locks.pop(key, None)) is not None:
            os.close(descriptor)


def remove_temporaries(folder):
    """Delete what :func:`atomic_path` left under ``folder`` when killed: its names, of ended processes."""
    for root, _, names in os.walk(folder):
        for name in names:
            match = TEMPORARY.fullmatch(name)
            if match and (int(match.group(1)) == os.getpid() or not _alive(int(match.group(1)))):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))  # a link is removed, never followed


def _alive(pid):
    try:
        if os.name == "posix":  # elsewhere os.kill would end the process: keep its file
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, OverflowError):
        pass  # not ours to ask about: keep its file
    return True
