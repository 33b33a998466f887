"""Download and unpack a dataset archive so that no failure leaves a half-made dataset behind.

``fetch(url, dest, md5)`` (what ``data/download.py`` runs):

1. does nothing if ``dest`` already holds this download, complete (its marker file says so);
2. downloads into ``<dest's folder>/.downloads/<name>.part``, with a progress bar; a dropped
   connection is resumed where it stopped (HTTP Range, checked against the server's ETag), here or in a
   later run; a server that cannot resume starts the file again;
3. checks the MD5 checksum of the whole archive, when one is given;
4. unpacks it into a temporary folder beside ``dest``, refusing any member that would land outside
   it (absolute paths, ``..``, links out, device files), writes the marker file last, and renames
   the folder to ``dest`` in one step.

So ``dest`` either does not exist or is complete. A corrupt archive or a wrong checksum deletes the
download, so the next run starts afresh; a failure of the network keeps it, so the next run resumes.
``file://`` URLs work too, for an archive copied by hand.
"""

import contextlib
import datetime
import gzip
import hashlib
import http.client
import json
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

MARKER = ".download-complete.json"  # written last inside a complete download
CHUNK = 1 << 20  # bytes per read
RETRY_WAIT = 2.0  # seconds before the first retry; doubled each time


def fetch(url, dest, md5=None, keep_archive=False, overwrite=False, retries=3, timeout=60.0, progress=None):
    """Make ``dest`` hold the unpacked archive at ``url``; returns ``dest`` as a Path.

    ``md5``: the archive's checksum (hex), or None to skip the check. ``overwrite``: replace a ``dest``
    that holds something else (only once the new download is complete). ``retries``: resumptions of a
    dropped connection. ``timeout``: seconds without data before a connection counts as dropped.
    ``progress``: show progress bars (default: when writing to a terminal).
    """
    if not isinstance(url, str) or urllib.parse.urlparse(url).scheme.lower() not in ("http", "https", "ftp", "file"):
        raise UserError(f"--URL must be a web address (https://...) or a file:///path/to/archive, got {url!r}")
    dest = Path(dest)
    if md5 is not None:
        md5 = str(md5).strip().lower()
        if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
            raise UserError(f"--MD5 must be 32 hexadecimal digits (or None to skip the check), got {md5!r}")
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: DEST is a file, not a folder")
    marker = read_marker(dest)
    if marker is not None and marker.get("url") == url and not overwrite:
        print(f"{dest} already holds {url}, complete: nothing to do ({describe(dest)})")
        return dest
    if dest.exists() and not overwrite:
        what = f"a download of {marker.get('url')}" if marker else f"files that are not a complete download (no {MARKER})"
        raise UserError(f"{dest} already holds {what}: pass --OVERWRITE=True to replace it, or another --DEST")

    downloads = dest.parent / ".downloads"
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{downloads}: cannot create the download folder ({error.strerror or error})") from None
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    with _lock(downloads / f"{name}.lock", url):
        _remove_leftovers(dest)
        archive = download(url, downloads / name, md5, retries, timeout, progress)
        try:
            unpack(archive, dest, info={"url": url}, progress=progress)
        except BadArchive as error:
            archive.unlink(missing_ok=True)  # corrupt or unsafe: the next run downloads it afresh
            raise BadArchive(f"{error}; the download was deleted: run again to download it afresh") from None
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
                f"{url}: the download has MD5 {actual}, not the expected {md5} (the MD5 setting): it was deleted. "
                f"Run again to retry; if the server's file has changed, pass the new --MD5=..., or --MD5=None to skip the check"
            )
    os.replace(part, archive)
    _meta(part).unlink(missing_ok=True)
    return archive


def unpack(archive, dest, info=None, progress=None):
    """Unpack the tar archive ``archive`` (gzip, bzip2, xz or none) into the new folder ``dest``.

    If every member lies in one top-level folder, that folder's content becomes ``dest``. The marker
    file (``info`` plus what was unpacked) is written last, then the folder is renamed into place, so
    ``dest`` appears complete or not at all. A ``dest`` that exists is replaced only after that.
    Returns the number of files unpacked.
    """
    from tqdm import tqdm

    archive, dest = Path(archive), Path(dest)
    work = dest.with_name(f".{dest.name}.unpacking-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    count = 0
    try:
        with open(archive, "rb") as raw, tqdm(
            total=archive.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc="unpacking",
            disable=_quiet(progress), file=sys.stderr, dynamic_ncols=True,
        ) as bar:
            with tarfile.open(fileobj=_Progress(raw, bar), mode="r|*") as tar:
                for member in tar:
                    _check_member(archive, member)
                    try:
                        tar.extract(member, work, **_SAFE)
                    except _FilterError as error:
                        raise BadArchive(f"{archive}: refused, unsafe archive member ({error})") from None
                    count += member.isfile()
        entries = list(work.iterdir())
        content = entries[0] if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() else work
        files.write_json(content / MARKER, {
            **(info or {}), "archive": archive.name, "bytes": archive.stat().st_size, "md5": file_md5(archive),
            "files": count, "unpacked": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists():
            os.replace(dest, old)
        os.replace(content, dest)
    except (tarfile.ReadError, tarfile.CompressionError, tarfile.HeaderError, EOFError, zlib.error,
            gzip.BadGzipFile) as error:
        if zipfile.is_zipfile(archive):
            raise BadArchive(f"{archive}: a zip archive; this script unpacks tar archives (.tgz, .tar.gz, .tar.bz2, "
                             f".tar.xz, .tar): unpack it yourself and give its folder to the stage") from None
        raise BadArchive(f"{archive}: the archive is corrupt or truncated ({error or type(error).__name__})") from None
    except OSError as error:
        raise UserError(f"{dest}: cannot unpack {archive.name} ({error.strerror or error})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest.with_name(f".{dest.name}.old-{os.getpid()}"), ignore_errors=True)
    return count


def read_marker(dest):
    """What the marker file of a complete download says, or None if ``dest`` has none (or a broken one)."""
    try:
        marker = json.loads((Path(dest) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


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
    """An archive that is corrupt, truncated, or holds members that would land outside its folder."""


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
        raise BadArchive(f"{archive}: refused, member {member.name!r} would be written outside the destination")
    if member.issym() or member.islnk():
        target = member.linkname.replace("\\", "/")
        base = parts[:-1] if member.issym() else []
        resolved = []
        for p in base + target.split("/"):
            if p == "..":
                if not resolved:
                    raise BadArchive(f"{archive}: refused, link {member.name!r} points outside the destination")
                resolved.pop()
            elif p not in ("", "."):
                resolved.append(p)
        if target.startswith("/"):
            raise BadArchive(f"{archive}: refused, link {member.name!r} points outside the destination")
    if member.ischr() or member.isblk() or member.isfifo():
        raise BadArchive(f"{archive}: refused, member {member.name!r} is a device or pipe, not a file")


def _download_once(url, part, timeout, progress):
    """One connection: resume ``part`` if the server allows, else (re)start it. Raises _Dropped or UserError."""
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
            f"cannot download {url}: the server answered {error.code} {error.reason}; if the dataset has moved, "
            f"set --URL to its new address"
        ) from None
    except urllib.error.URLError as error:
        reason = error.reason.strerror if isinstance(error.reason, OSError) and error.reason.strerror else error.reason
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
            raise UserError(f"another run is already downloading {url} (lock {path}); wait for it to finish") from None
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
    return "?" if count is None else f"{count / 2**20:.1f} MiB"
