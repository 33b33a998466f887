"""Download and unpack a dataset archive so that no failure leaves a half-made dataset behind.

``fetch(url, dest, md5)`` (what ``data/download.py`` runs):

1. does nothing if ``dest`` already holds this download, complete (its marker file says so);
2. downloads into ``<dest's folder>/.downloads/<name>.part``, with a progress bar; a dropped
   connection is resumed where it stopped (HTTP Range, checked against the server's ETag), here or in a
   later run; a server that cannot resume starts the file again;
3. checks the MD5 checksum of the whole archive, when one is given;
4. unpacks it into a temporary folder beside ``dest``, refusing any member that would land outside
   it (absolute paths, ``..``, links out, device files), and anything that would unpack to more than
   the disk's free space, more than the archive declares (gzip's size trailer) or more than
   ``MAX_RATIO`` times its own size (a decompression bomb); writes the list of the files it unpacked
   (``MANIFEST``) and then the marker file, and renames the folder to ``dest`` in one step.

So ``dest`` either does not exist or is complete. A corrupt archive or a wrong checksum deletes the
download, so the next run starts afresh; a failure of the network keeps it, so the next run resumes.
``file://`` URLs work too, for an archive copied by hand.

``DEST`` must be a folder of its own (not ``.``, ``data``, the repository, the home folder or a root:
see ``files.check_destination``). ``OVERWRITE`` replaces only a ``DEST`` that holds a complete download
of this script and nothing else: a folder with any file the download did not write is never replaced.
"""

import contextlib
import datetime
import gzip
import hashlib
import http.client
import json
import lzma
import bz2
import os
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

from colorlab import UserError, files
from colorlab.commands import write_text

MARKER = ".download-complete.json"  # written last inside a complete download
MANIFEST = ".download-files.txt"  # the files unpacked, one JSON string a line; written just before the marker
CHUNK = 1 << 20  # bytes per read
RETRY_WAIT = 2.0  # seconds before the first retry; doubled each time
MAX_RATIO = 100  # unpacked bytes per archive byte, at most: photos barely compress, a bomb 1000-fold
MIN_LIMIT = 1 << 20  # a tiny archive may unpack to this much whatever its ratio (tar pads to 10 KiB)
MAX_MARKER_BYTES = 64 * 1024
MAX_MANIFEST_BYTES = 64 << 20  # about a million file names


def fetch(url, dest, md5=None, keep_archive=False, overwrite=False, retries=3, timeout=60.0, progress=None):
    """Make ``dest`` hold the unpacked archive at ``url``; returns ``dest`` as a Path.

    ``md5``: the archive's checksum (hex), or None to skip the check. ``overwrite``: replace a ``dest``
    that holds something else (only once the new download is complete). ``retries``: resumptions of a
    dropped connection. ``timeout``: seconds without data before a connection counts as dropped.
    ``progress``: show progress bars (default: when writing to a terminal).
    """
    schemes = ("http", "https", "ftp", "file")
    if not isinstance(url, str) or urllib.parse.urlparse(url).scheme.lower() not in schemes:
        raise UserError(f"--URL must be a web address (https://...) or a file:///path/to/archive, "
                        f"got {url!r}")
    if md5 is not None:
        md5 = str(md5).strip().lower()
        if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
            raise UserError(f"--MD5 must be 32 hexadecimal digits (or None to skip the check), got {md5!r}")
    dest = files.check_destination(dest, "DEST")  # not ".", data/, the repository, home, a root
    if (dest.exists() or dest.is_symlink()) and not dest.is_dir():
        raise UserError(f"{dest}: DEST is a file, not a folder")
    marker = read_marker(dest)
    if marker is not None and marker.get("url") == url and not overwrite:
        print(f"{dest} already holds {url}, complete: nothing to do ({describe(dest)})")
        return dest
    check_replaceable(dest, url, overwrite)  # before any download

    downloads = dest.parent / ".downloads"
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{downloads}: cannot create the download folder "
                        f"({error.strerror or error})") from None
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    with _lock(downloads / f"{name}.lock", url):
        _remove_leftovers(dest)
        archive = download(url, downloads / name, md5, retries, timeout, progress)
        try:
            unpack(archive, dest, info={"url": url}, progress=progress)
        except BadArchive as error:
            archive.unlink(missing_ok=True)  # corrupt or unsafe: the next run downloads it afresh
            advice = "run again to download it afresh" if error.retry else "check --URL"
            raise BadArchive(f"{error}; the download was deleted: {advice}", error.retry) from None
        if not keep_archive:
            archive.unlink(missing_ok=True)
    print(f"{dest}: {describe(dest)}")
    return dest


def download(url, archive, md5=None, retries=3, timeout=60.0, progress=None):
    """Download ``url`` to the file ``archive`` (via ``archive.part``, resumed across runs) and check its MD5.

    A complete archive from an earlier run is reused if its checksum matches.
    """
    archive = Path(archive)
    part = archive.with_name(archive.name + ".part")
    if archive.exists():
        if md5 is None or file_md5(archive) == md5:
            print(f"using {archive}, downloaded earlier")
            return archive
        archive.unlink()
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, timeout, progress)
            break
        except _Dropped as error:
            if attempt == retries:
                raise UserError(f"{error}; run again to resume") from None
            wait = RETRY_WAIT * 2**attempt
            print(f"{error}; resuming in {wait:.0f} s", file=sys.stderr)
            time.sleep(wait)
    if md5 is not None:
        actual = file_md5(part)
        if actual != md5:
            part.unlink()
            _meta(part).unlink(missing_ok=True)
            raise UserError(
                f"{url}: the download has MD5 {actual}, not the expected {md5} (the MD5 setting): it was "
                f"deleted. Run again to retry; if the server's file has changed, pass the new --MD5=..., or "
                f"--MD5=None to skip the check"
            )
    os.replace(part, archive)
    _meta(part).unlink(missing_ok=True)
    return archive


def unpack(archive, dest, info=None, progress=None):
    """Unpack the tar archive ``archive`` (gzip, bzip2, xz or none) into the new folder ``dest``.

    If every member lies in one top-level folder, that folder's content becomes ``dest``. The manifest
    (every file unpacked) and then the marker file (``info`` plus what was unpacked) are written last,
    then the folder is renamed into place, so ``dest`` appears complete or not at all. A ``dest`` that
    exists is replaced only after that, and only if :func:`check_replaceable` allows it.

    What is unpacked is bounded, before any member is written and as the bytes come: by the free space
    of ``dest``'s disk, by what a .tgz's gzip trailer declares, and by ``MAX_RATIO`` times the archive's
    size. Returns the number of files unpacked.
    """
    from tqdm import tqdm

    archive, dest = Path(archive), Path(dest)
    compressed = archive.stat().st_size
    limits = _limits(archive, compressed, dest.parent)
    work = dest.with_name(f".{dest.name}.unpacking-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    count = 0
    try:
        with open(archive, "rb") as raw, tqdm(
            total=compressed, unit="B", unit_scale=True, unit_divisor=1024, desc="unpacking",
            disable=_quiet(progress), file=sys.stderr, dynamic_ncols=True,
        ) as bar:
            stream = _Bounded(_decompressed(archive, _Progress(raw, bar)), archive, limits)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                total = 0
                for member in tar:
                    _check_member(archive, member)
                    total += member.size
                    _check_size(archive, total, limits, "its members declare")  # before writing the member
                    try:
                        tar.extract(member, work, **_SAFE)
                    except _FilterError as error:
                        raise BadArchive(f"{archive}: refused, unsafe archive member ({error})",
                                         retry=False) from None
                    count += member.isfile()
        entries = list(work.iterdir())
        alone = len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink()
        content = entries[0] if alone else work
        unpacked = [e for e in files._entries(content) if e not in (MARKER, MANIFEST)]
        write_text(content / MANIFEST, "".join(json.dumps(e) + "\n" for e in unpacked))
        files.write_json(content / MARKER, {
            **(info or {}), "archive": archive.name, "bytes": compressed, "md5": file_md5(archive),
            "files": count, "manifest": MANIFEST,
            "unpacked": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists():
            check_replaceable(dest, (info or {}).get("url"), overwrite=True)  # again: files may have come
            os.replace(dest, old)
        os.replace(content, dest)
    except (tarfile.ReadError, tarfile.CompressionError, tarfile.HeaderError, EOFError, zlib.error,
            gzip.BadGzipFile, lzma.LZMAError, _Corrupt) as error:
        if zipfile.is_zipfile(archive):
            raise BadArchive(f"{archive}: a zip archive; this script unpacks tar archives (.tgz, .tar.gz, "
                             f".tar.bz2, .tar.xz, .tar): unpack it yourself and give its folder to the stage",
                             retry=False) from None
        reason = error or type(error).__name__
        raise BadArchive(f"{archive}: the archive is corrupt or truncated ({reason})") from None
    except files.WriteError:
        raise
    except OSError as error:
        raise UserError(f"{dest}: cannot unpack {archive.name} ({error.strerror or error})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest.with_name(f".{dest.name}.old-{os.getpid()}"), ignore_errors=True)
    return count


def _limits(archive, compressed, folder):
    """The bounds on what ``archive`` may unpack to, in bytes: ``{"ratio": ..., "declared": ... or None,
    "free": ...}``; refuses at once an archive that declares more than the disk holds."""
    kind = _compression(archive)
    ratio = max(compressed * MAX_RATIO, MIN_LIMIT) if kind != "tar" else compressed
    declared = None
    if kind == "gz" and compressed >= 18:
        with open(archive, "rb") as f:
            f.seek(-4, os.SEEK_END)
            size = int.from_bytes(f.read(4), "little")  # ISIZE: the unpacked size, modulo 2**32
        if size <= ratio:
            declared = size + ((ratio - size) >> 32 << 32)  # the largest this trailer allows under the ratio
    limits = {"ratio": ratio, "declared": declared, "free": shutil.disk_usage(folder).free,
              "compressed": compressed, "folder": folder}
    if kind == "tar" or (declared is not None and declared < 1 << 32):  # the exact size is known
        _check_size(archive, declared or compressed, {**limits, "ratio": None, "declared": None},
                    "its gzip trailer declares" if declared else "it unpacks to about")
    return limits


def _check_size(archive, size, limits, what):
    """Refuse, in one line, an unpacked ``size`` above any of ``limits`` (``what``: where it comes from)."""
    if limits["ratio"] is not None and size > limits["ratio"]:
        raise BadArchive(f"{archive}: refused: {what} at least {_mib(size)}, more than {MAX_RATIO} times its "
                         f"own {_mib(limits['compressed'])}: a decompression bomb, not a dataset of photos",
                         retry=False)
    if limits["declared"] is not None and size > limits["declared"]:
        raise BadArchive(f"{archive}: refused: {what} at least {_mib(size)}, more than the "
                         f"{_mib(limits['declared'])} its gzip trailer declares", retry=False)
    if size > limits["free"]:
        raise UserError(f"{archive}: not enough disk space to unpack it: {what} {_mib(size)}, "
                        f"{_mib(limits['free'])} is free in {limits['folder']}; free some, or set --DEST to "
                        f"another disk")


def _compression(archive):
    with open(archive, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        return "gz"
    if magic[:3] == b"BZh":
        return "bz2"
    if magic == b"\xfd7zXZ\x00":
        return "xz"
    return "tar"


def _decompressed(archive, raw):
    kind = _compression(archive)
    if kind == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


class _Corrupt(Exception):
    """The compressed stream cannot be read."""


class _Bounded:
    """A read-only stream that counts the unpacked bytes read through it and refuses more than ``limits``."""

    def __init__(self, stream, archive, limits):
        self.stream, self.archive, self.limits, self.count = stream, archive, limits, 0

    def read(self, size=-1):
        try:
            data = self.stream.read(size if size is not None and size >= 0 else CHUNK)
        except (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as error:
            raise _Corrupt(str(error) or type(error).__name__) from None
        except OSError as error:  # bz2 says "Invalid data stream" with an OSError
            if error.errno is not None:
                raise
            raise _Corrupt(str(error) or type(error).__name__) from None
        self.count += len(data)
        _check_size(self.archive, self.count, self.limits, "it unpacks to")
        return data


def check_replaceable(dest, url, overwrite=False):
    """Refuse, in one line, to put a download into ``dest`` if that would replace anything but an earlier
    complete download of this script (its marker, its manifest and the files the manifest lists), or if it
    would replace such a download without ``overwrite``. An empty or missing folder is always fine."""
    dest = Path(dest)
    entries = files._entries(dest) if dest.is_dir() else []
    if not entries:
        return
    marker = read_marker(dest)
    listed = read_manifest(dest) if marker is not None else None
    foreign = [e for e in entries if e not in (MARKER, MANIFEST) and (listed is None or e not in listed)]
    if foreign:
        if marker is None:
            what = "files that are not a complete download of this script"
        elif listed is None:
            what = f"a download without its list of files ({MANIFEST}), so files it may not have written"
        else:
            what = f"files that the download of {_brief(marker.get('url'))} did not write"
        names = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(f"{dest} holds {what} ({names}): nothing was replaced; move them out of it, or set "
                        f"--DEST to a new folder")
    if not overwrite:
        raise UserError(f"{dest} already holds a download of {_brief(marker.get('url'))}, not of {url}: pass "
                        f"--OVERWRITE=True to replace it, or another --DEST")


def read_marker(dest):
    """What the marker file of a complete download says, or None if ``dest`` has none, or a broken, huge,
    linked or otherwise hostile one (read defensively: a regular file of at most 64 KiB)."""
    path = Path(dest) / MARKER
    if path.is_symlink():
        return None
    try:
        marker = files.read_json(path, limit=MAX_MARKER_BYTES)
    except UserError:
        return None
    return marker if isinstance(marker, dict) else None


def read_manifest(dest):
    """The set of files (relative paths with /) that the download in ``dest`` unpacked, from its manifest;
    None if there is none, or it is not a regular file of at most MAX_MANIFEST_BYTES of JSON strings."""
    path = Path(dest) / MANIFEST
    try:
        info = os.lstat(path)
        if not (os.path.isfile(path) and not os.path.islink(path)) or info.st_size > MAX_MANIFEST_BYTES:
            return None
        with open(path, "rb") as f:
            lines = f.read(MAX_MANIFEST_BYTES + 1).decode("utf-8").splitlines()
        names = {json.loads(line) for line in lines if line.strip()}
    except (OSError, ValueError, TypeError, RecursionError):  # TypeError: a line that is a list, not a name
        return None
    return names if all(isinstance(n, str) for n in names) else None


def describe(dest):
    """A line about what a download holds: its file count, and photos per top-level folder."""
    from colorlab import images

    marker = read_marker(dest) or {}
    folders = sorted(p for p in Path(dest).iterdir() if p.is_dir() and not p.name.startswith("."))
    counts = ", ".join(f"{p.name} {len(images.list_images(p))}" for p in folders)
    return f"{marker.get('files', '?')} files" + (f"; photos: {counts}" if counts else "")


def file_md5(path):
    """The MD5 of a whole file, as hex."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------


class BadArchive(UserError):
    """An archive that is corrupt, truncated, too large to unpack, or holds members that would land outside
    its folder. ``retry``: whether downloading it again may help (a corrupt download) or not (unsafe)."""

    def __init__(self, message, retry=True):
        super().__init__(message)
        self.retry = retry


class _Dropped(Exception):
    """The connection failed mid-download; what was received is kept for resuming."""


# Python's own checks against unsafe members (3.12, and back-ported to 3.8.17+, 3.10.12+, 3.11.4+).
_SAFE = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FilterError = getattr(tarfile, "FilterError", ())


def _check_member(archive, member):
    """Refuse members that would be written outside the destination, links that point out, devices."""
    name = member.name.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise BadArchive(f"{archive}: refused, member {member.name!r} would be written outside the "
                         f"destination", retry=False)
    if member.issym() or member.islnk():
        target = member.linkname.replace("\\", "/")
        base = parts[:-1] if member.issym() else []
        resolved = []
        for p in base + target.split("/"):
            if p == "..":
                if not resolved:
                    raise BadArchive(f"{archive}: refused, link {member.name!r} points outside the "
                                     f"destination", retry=False)
                resolved.pop()
            elif p not in ("", "."):
                resolved.append(p)
        if target.startswith("/"):
            raise BadArchive(f"{archive}: refused, link {member.name!r} points outside the destination",
                             retry=False)
    if member.ischr() or member.isblk() or member.isfifo():
        raise BadArchive(f"{archive}: refused, member {member.name!r} is a device or pipe, not a file",
                         retry=False)


def _download_once(url, part, timeout, progress):
    """One connection: resume ``part`` if the server allows, else restart it; raises _Dropped or UserError."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    meta = _read_meta(part) if offset else {}
    if offset and meta.get("url") != url:
        offset, meta = 0, {}
    headers = {"User-Agent": "colorlab-download/1.0", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the range is past the end: what we hold is not this file
            part.unlink()
            raise _Dropped(f"{url}: the server cannot resume from byte {offset}; starting again") from None
        raise UserError(
            f"cannot download {url}: the server answered {error.code} {error.reason}; if the dataset has "
            f"moved, set --URL to its new address"
        ) from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        raise UserError(
            f"cannot download {url}: {reason}. Are you offline? Set --URL to another copy (a mirror, or "
            f"file:///path/to/the/archive) to use it instead"
        ) from None
    except (TimeoutError, socket.timeout, http.client.HTTPException, OSError) as error:
        raise _Dropped(f"{url}: no answer ({error or type(error).__name__})") from None

    with response:
        status = getattr(response, "status", None)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        content_range = response.headers.get("Content-Range", "")
        if offset and status == 206 and content_range.startswith(f"bytes {offset}-"):
            mode, total = "ab", content_range.rpartition("/")[2]
            total = int(total) if total.isdigit() else (offset + length if length is not None else None)
        else:
            mode, offset, total = "wb", 0, length
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        files.write_json(_meta(part), {"url": url, "validator": validator, "total": total})
        if total is not None:
            _check_space(part.parent, (total - offset) + total)
        print(f"downloading {url}" + (f" ({_mib(total)})" if total else "")
              + (f", resuming at {_mib(offset)}" if offset else ""), flush=True)
        received = offset
        try:
            with open(part, mode) as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc="downloading",
                disable=_quiet(progress), file=sys.stderr, dynamic_ncols=True,
            ) as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException) as error:
            raise _Dropped(f"{url}: the connection dropped after {_mib(received)} of {_mib(total)} "
                           f"({error or type(error).__name__})") from None
        except OSError as error:  # writing: disk full, permissions
            raise UserError(f"{part}: cannot write the download ({error.strerror or error})") from None
    if total is not None and received != total:
        raise _Dropped(f"{url}: the connection dropped after {_mib(received)} of {_mib(total)}")


def _brief(value):
    text = str(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _meta(part):
    return part.with_name(part.name + ".json")


def _read_meta(part):
    try:
        meta = json.loads(_meta(part).read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _check_space(folder, needed):
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(f"{folder}: not enough disk space: the download and its unpacked photos need about "
                        f"{_mib(needed)}, {_mib(free)} is free; free some, or set --DEST to another disk")


def _remove_leftovers(dest):
    """Delete the temporary folders of earlier runs that were killed mid-unpacking."""
    for kind in ("unpacking", "old"):
        for path in dest.parent.glob(f".{dest.name}.{kind}-*"):
            pid = path.name.rpartition("-")[2]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid):
    if pid == os.getpid():
        return False  # ours from an earlier call in this process: finished or failed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextlib.contextmanager
def _lock(path, url):
    """Hold an exclusive lock on ``path``, so that two runs never write one download at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"another run is already downloading {url} (lock {path}); wait for it to "
                            f"finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Progress:
    """A read-only file wrapper that advances a progress bar by the bytes read."""

    def __init__(self, raw, bar):
        self.raw, self.bar = raw, bar

    def read(self, size=-1):
        data = self.raw.read(size)
        self.bar.update(len(data))
        return data


def _quiet(progress):
    return None if progress is None else not progress  # None: tqdm shows bars on terminals only


def _mib(count):
    if count is None:
        return "?"
    return f"{count / 2**20:.1f} MiB" if count >= 1 << 20 else f"{count / 1024:.1f} KiB"
