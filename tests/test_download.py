"""data/download.py and colorlab.commands.download, against a local HTTP server that serves a small archive.

Every failure must leave no dataset folder behind (neither DEST nor a temporary unpacking folder), a
dropped download must resume where it stopped, and nothing of the user's is ever replaced: not a folder
that holds the repository's files, not files added to an earlier download, not the disk's last bytes.
"""

import bz2
import hashlib
import http.server
import io
import os
import shutil
import socket
import struct
import tarfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorlab import UserError
from colorlab.commands import download
from conftest import ROOT, messages, run_python

# ----------------------------------------------------------------------------------------------------
# A local server and a small dataset


class Server:
    """What the test server serves, and what it was asked."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.files = {}  # path -> bytes
        self.drops = 0  # how many of the next responses stop halfway through the body
        self.ranges = True  # whether Range requests are honoured
        self.requests = []  # (path, Range header)

    def url(self, name):
        return f"{self.base}/{name}"


@pytest.fixture
def server():
    def handler_for(state):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                state.requests.append((self.path, self.headers.get("Range")))
                data = state.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                start, wanted = 0, self.headers.get("Range")
                if wanted and state.ranges and self.headers.get("If-Range") in (None, '"v1"'):
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                if state.drops:
                    state.drops -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), None)
    state = Server(httpd.server_address[1])
    httpd.RequestHandlerClass = handler_for(state)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def jpeg_bytes(seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG")
    return buffer.getvalue()


PHOTOS = {f"mini/{split}/class{c}/{i}.JPEG": jpeg_bytes(10 * c + i) for split in ("train", "val")
          for c in range(2) for i in range(3)}


def make_tgz(members):
    """A .tgz holding ``members`` ({name: bytes}), in memory. Incompressible photos make it a few KiB."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


ARCHIVE = make_tgz({**PHOTOS, "mini/README.txt": b"a tiny dataset\n"})
ARCHIVE_MD5 = hashlib.md5(ARCHIVE).hexdigest()


def leftovers(data_dir):
    """Temporary files and folders a finished run must not leave behind."""
    found = [p.name for p in data_dir.glob(".*unpacking-*")] + [p.name for p in data_dir.glob(".*old-*")]
    return found + [p.name for p in (data_dir / ".downloads").glob("*.part")]


def assert_complete(dest):
    for name, data in PHOTOS.items():
        assert (dest / name.removeprefix("mini/")).read_bytes() == data, name
    marker = download.read_marker(dest)
    assert marker["files"] == len(PHOTOS) + 1 and marker["md5"] == ARCHIVE_MD5


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(download, "RETRY_WAIT", 0.0)


# ----------------------------------------------------------------------------------------------------


def test_downloads_unpacks_and_then_skips(server, tmp_path, capsys):
    server.files["mini.tgz"] = ARCHIVE
    dest = tmp_path / "data" / "mini"
    assert download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, progress=False) == dest
    assert_complete(dest)  # the archive's single top folder "mini/" became dest itself
    assert (dest / "README.txt").read_bytes() == b"a tiny dataset\n"
    assert leftovers(tmp_path / "data") == []
    assert not (tmp_path / "data" / ".downloads" / "mini.tgz").exists()  # KEEP_ARCHIVE is False
    assert "photos: train 6, val 6" in capsys.readouterr().out

    asked = len(server.requests)
    download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, progress=False)
    assert len(server.requests) == asked  # complete: not even a request
    assert "nothing to do" in capsys.readouterr().out


def test_script_runs_with_settings_and_skips_a_complete_download(server, tmp_path):
    server.files["mini.tgz"] = ARCHIVE
    dest = tmp_path / "mini"
    args = ["data/download.py", f"--URL={server.url('mini.tgz')}", f"--MD5={ARCHIVE_MD5}", f"--DEST={dest}",
            "--KEEP_ARCHIVE=True"]
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    first = run_python(*args, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert_complete(dest)
    assert (tmp_path / ".downloads" / "mini.tgz").read_bytes() == ARCHIVE  # kept, as asked
    second = run_python(*args, env=env, timeout=60)
    assert second.returncode == 0 and "nothing to do" in second.stdout
    assert len(server.requests) == 1


def test_checksum_mismatch_deletes_the_download_and_leaves_no_folder(server, tmp_path):
    server.files["mini.tgz"] = ARCHIVE
    dest = tmp_path / "mini"
    with pytest.raises(UserError, match=r"MD5 [0-9a-f]{32}, not the expected 0{32}.*--MD5"):
        download.fetch(server.url("mini.tgz"), dest, "0" * 32, progress=False)
    assert not dest.exists()
    assert leftovers(tmp_path) == [] and not (tmp_path / ".downloads" / "mini.tgz").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_archive_leaves_no_folder_and_no_download(server, tmp_path, damage):
    server.files["mini.tgz"] = ARCHIVE[: len(ARCHIVE) * 2 // 3] if damage == "truncated" else os.urandom(5000)
    dest = tmp_path / "mini"
    with pytest.raises(download.BadArchive, match="corrupt or truncated"):
        download.fetch(server.url("mini.tgz"), dest, None, progress=False)  # no checksum: the archive fails
    assert not dest.exists() and leftovers(tmp_path) == []
    downloads = [p.name for p in (tmp_path / ".downloads").glob("mini.tgz*")]
    assert downloads == ["mini.tgz.lock"]  # the next run starts afresh


def test_dropped_connection_keeps_the_part_and_the_next_run_resumes(server, tmp_path):
    server.files["mini.tgz"] = ARCHIVE
    server.drops = 1
    dest = tmp_path / "mini"
    with pytest.raises(UserError, match=r"connection dropped after .* of .*run again to resume"):
        download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, retries=0, progress=False)
    assert not dest.exists() and not list(tmp_path.glob(".*unpacking-*"))
    part = tmp_path / ".downloads" / "mini.tgz.part"
    assert part.stat().st_size == len(ARCHIVE) // 2 and part.read_bytes() == ARCHIVE[: len(ARCHIVE) // 2]

    download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, retries=0, progress=False)
    assert server.requests[-1] == ("/mini.tgz", f"bytes={len(ARCHIVE) // 2}-")  # asked only for the rest
    assert_complete(dest)
    assert leftovers(tmp_path) == []


def test_a_dropped_connection_is_resumed_within_the_run(server, tmp_path):
    server.files["mini.tgz"] = ARCHIVE
    server.drops = 2
    download.fetch(server.url("mini.tgz"), tmp_path / "mini", ARCHIVE_MD5, retries=2, progress=False)
    first = len(ARCHIVE) // 2
    second = first + (len(ARCHIVE) - first) // 2
    assert [r for _, r in server.requests] == [None, f"bytes={first}-", f"bytes={second}-"]
    assert_complete(tmp_path / "mini")


def test_a_server_that_cannot_resume_restarts_cleanly(server, tmp_path):
    server.files["mini.tgz"] = ARCHIVE
    server.drops, server.ranges = 1, False
    download.fetch(server.url("mini.tgz"), tmp_path / "mini", ARCHIVE_MD5, retries=1, progress=False)
    assert_complete(tmp_path / "mini")  # the half from the first try was not glued to a whole second copy


def test_offline_and_missing_files_are_one_line_errors_naming_the_url_and_setting(server, tmp_path):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/mini.tgz"
    with pytest.raises(UserError) as offline:
        download.fetch(closed, tmp_path / "mini", None, progress=False)
    message = str(offline.value)
    assert closed in message and "--URL" in message and "offline" in message and "\n" not in message
    with pytest.raises(UserError, match=r"404.*--URL"):
        download.fetch(server.url("moved.tgz"), tmp_path / "mini", None, progress=False)
    assert not (tmp_path / "mini").exists() and leftovers(tmp_path) == []


def test_script_reports_a_failure_in_one_line_without_traceback(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/mini.tgz"
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = run_python("data/download.py", f"--URL={closed}", f"--DEST={tmp_path / 'mini'}", env=env,
                        timeout=60)
    assert result.returncode != 0
    assert result.stderr.startswith("error: cannot download " + closed) and "Traceback" not in result.stderr
    assert "--URL" in result.stderr


@pytest.mark.parametrize("member", ["../escaped.txt", "/tmp/absolute.txt", "mini/link->/etc/passwd",
                                    "mini/up->../../x"])
def test_members_escaping_the_destination_are_refused(server, tmp_path, member):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        ok = tarfile.TarInfo("mini/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        name, _, target = member.partition("->")
        info = tarfile.TarInfo(name)
        if target:
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    server.files["evil.tgz"] = buffer.getvalue()
    dest = tmp_path / "data" / "mini"
    with pytest.raises(download.BadArchive, match="refused"):
        download.fetch(server.url("evil.tgz"), dest, None, progress=False)
    assert not dest.exists() and leftovers(tmp_path / "data") == []
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data" / "escaped.txt").exists()


def test_an_earlier_download_is_replaced_only_with_overwrite(server, tmp_path):
    server.files["mini.tgz"] = ARCHIVE
    server.files["other.tgz"] = ARCHIVE
    dest = tmp_path / "mini"
    download.fetch(server.url("other.tgz"), dest, ARCHIVE_MD5, progress=False)
    assert download.read_manifest(dest) == {n.removeprefix("mini/") for n in PHOTOS} | {"README.txt"}
    asked = len(server.requests)
    with pytest.raises(UserError, match=r"already holds a download of .*other.tgz.*--OVERWRITE=True"):
        download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, progress=False)
    assert len(server.requests) == asked
    download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, overwrite=True, progress=False)
    assert_complete(dest) and download.read_marker(dest)["url"] == server.url("mini.tgz")
    assert leftovers(tmp_path) == []


def test_a_folder_with_files_the_download_did_not_write_is_never_replaced(server, tmp_path):
    server.files["mini.tgz"] = ARCHIVE
    plain = tmp_path / "plain"  # the user's own folder
    plain.mkdir()
    (plain / "mine.txt").write_text("keep me")
    earlier = tmp_path / "earlier"  # a complete download, and then the user's own files put into it
    download.fetch(server.url("mini.tgz"), earlier, ARCHIVE_MD5, progress=False)
    (earlier / "train" / "my-labels.csv").write_text("keep me too")
    (earlier / "notes.txt").write_text("and me")
    asked = len(server.requests)
    for dest, said in ((plain, "holds files that are not a complete download of this script (mine.txt)"),
                       (earlier, f"holds files that the download of {server.url('mini.tgz')} did not write "
                                 f"(notes.txt, train/my-labels.csv)")):
        for url in (server.url("mini.tgz"), server.url("other.tgz")):
            with pytest.raises(UserError) as caught:
                download.fetch(url, dest, ARCHIVE_MD5, overwrite=True, progress=False)
            message = str(caught.value)
            assert message.startswith(f"{dest} {said}: nothing was replaced"), message
            assert "OVERWRITE" not in message and "\n" not in message
    assert len(server.requests) == asked  # refused before any download
    assert (plain / "mine.txt").read_text() == "keep me"
    assert (earlier / "train" / "my-labels.csv").read_text() == "keep me too"
    assert (earlier / "notes.txt").exists()
    (tmp_path / "empty").mkdir()
    download.fetch(server.url("mini.tgz"), tmp_path / "empty", ARCHIVE_MD5, progress=False)  # nothing to lose
    assert_complete(tmp_path / "empty")


@pytest.mark.parametrize("marker", ["fifo", "zeros", "huge", "list", "link"])
def test_a_hostile_marker_is_no_marker(server, tmp_path, marker):
    server.files["mini.tgz"] = ARCHIVE
    dest = tmp_path / "mini"
    download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, progress=False)
    path = dest / download.MARKER
    real = path.read_text()
    path.unlink()
    if marker == "fifo":
        os.mkfifo(path)  # reading it would wait for a writer forever
    elif marker == "zeros":
        os.symlink("/dev/zero", path)
    elif marker == "huge":
        path.write_text(real[:-2] + ', "pad": "' + "x" * (1 << 20) + '"}')
    elif marker == "list":
        path.write_text("[1, 2]")
    else:
        (tmp_path / "elsewhere.json").write_text(real)
        os.symlink(tmp_path / "elsewhere.json", path)
    assert download.read_marker(dest) is None
    with pytest.raises(UserError, match="not a complete download of this script"):
        download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, overwrite=True, progress=False)


@pytest.mark.parametrize("dest", [".", "data", "data/samples", "HOME", "/", "REPO"])
def test_dest_must_be_a_folder_of_its_own_before_any_download(server, tmp_path, monkeypatch, dest):
    monkeypatch.chdir(ROOT)
    server.files["mini.tgz"] = ARCHIVE
    dest = {"HOME": str(Path.home()), "REPO": str(ROOT)}.get(dest, dest)
    with pytest.raises(UserError) as caught:
        download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, overwrite=True, progress=False)
    assert str(caught.value).startswith("DEST") and "\n" not in str(caught.value)
    assert server.requests == []
    assert not (ROOT / ".downloads").exists() and not (ROOT / "data" / ".downloads").exists()


def test_script_refuses_dest_dot_in_one_line(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = run_python("data/download.py", "--URL=http://127.0.0.1:9/mini.tgz", "--DEST=.", env=env,
                        timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert messages(result.stderr) == ["error: DEST is '.', the current folder: give a folder of its own, "
                                       "such as outputs/run1"]


def gzip_bomb(unpacked=1 << 30):
    """A valid .tgz holding one member of ``unpacked`` zero bytes, about 4.5 MiB for 1 GiB, made in a
    fraction of a second: one compressed MiB of zeros, flushed so that it stands alone, repeated."""
    info = tarfile.TarInfo("mini/zeros.bin")
    info.size = unpacked
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    head = packer.compress(header) + packer.flush(zlib.Z_FULL_FLUSH)
    mib = bytes(1 << 20)
    block = packer.compress(mib) + packer.flush(zlib.Z_FULL_FLUSH)
    tail = packer.compress(bytes(1024)) + packer.flush()  # the end-of-archive blocks
    crc = zlib.crc32(header)
    for _ in range(unpacked >> 20):
        crc = zlib.crc32(mib, crc)
    crc = zlib.crc32(bytes(1024), crc)
    trailer = struct.pack("<II", crc, (len(header) + unpacked + 1024) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head + block * (unpacked >> 20) + tail + trailer


def test_a_decompression_bomb_is_refused_in_one_line(tmp_path):
    bomb = gzip_bomb()
    assert 4 << 20 < len(bomb) < 5 << 20
    archive = tmp_path / "copy" / "bomb.tgz"
    archive.parent.mkdir()
    archive.write_bytes(bomb)
    dest = tmp_path / "data" / "bomb"
    with pytest.raises(download.BadArchive) as caught:
        download.fetch(archive.as_uri(), dest, None, progress=False)
    message = str(caught.value)
    assert "refused: its members declare at least 1024.0 MiB, more than 100 times its own 4." in message
    assert "decompression bomb" in message and "run again" not in message and "\n" not in message
    assert not dest.exists() and leftovers(tmp_path / "data") == []


def test_unpacking_is_bounded_as_the_bytes_come(tmp_path, monkeypatch):
    # A gzip trailer that declares less than the archive holds (a lie, or a damaged archive).
    lying = bytearray(ARCHIVE)
    lying[-4:] = (3000).to_bytes(4, "little")
    # A .tar.bz2 (no size declared anywhere) of 4 MiB of zeros in a few hundred bytes, with the ratio at 10.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("mini/zeros.bin")
        info.size = 4 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    packed = bz2.compress(buffer.getvalue())
    for name, data, said in (("lying.tgz", bytes(lying), "more than the 2.9 KiB its gzip trailer declares"),
                             ("bomb.tar.bz2", packed, "more than 10 times its own")):
        monkeypatch.setattr(download, "MAX_RATIO", 10)
        archive = tmp_path / name
        archive.write_bytes(data)
        with pytest.raises(download.BadArchive, match="refused: ") as caught:
            download.unpack(archive, tmp_path / "dest")
        assert said in str(caught.value)
        assert not (tmp_path / "dest").exists() and not list(tmp_path.glob(".dest.*"))


def test_unpacking_never_takes_more_than_the_free_disk_space(tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: real(path)._replace(free=4096))
    archive = tmp_path / "mini.tgz"
    archive.write_bytes(ARCHIVE)
    with pytest.raises(UserError) as caught:
        download.unpack(archive, tmp_path / "mini")
    assert not isinstance(caught.value, download.BadArchive)  # the archive is fine: fetch keeps it
    message = str(caught.value)
    assert message.startswith(f"{archive}: not enough disk space to unpack it: its gzip trailer declares ")
    assert message.endswith(f"4.0 KiB is free in {tmp_path}; free some, or set --DEST to another disk")
    assert not (tmp_path / "mini").exists() and not list(tmp_path.glob(".mini.*"))


def test_leftovers_of_a_killed_run_are_cleaned_and_file_urls_work(tmp_path):
    archive = tmp_path / "copy" / "mini.tgz"
    archive.parent.mkdir()
    archive.write_bytes(ARCHIVE)
    stale = tmp_path / "data" / ".mini.unpacking-999999999"  # no such process
    (stale / "mini" / "train").mkdir(parents=True)
    download.fetch(archive.as_uri(), tmp_path / "data" / "mini", ARCHIVE_MD5, progress=False)
    assert_complete(tmp_path / "data" / "mini")
    assert not stale.exists() and leftovers(tmp_path / "data") == []


def test_a_bad_checksum_setting_is_refused_before_downloading(server, tmp_path):
    with pytest.raises(UserError, match="32 hexadecimal digits"):
        download.fetch(server.url("mini.tgz"), tmp_path / "mini", "abc", progress=False)
    assert server.requests == []


@pytest.mark.parametrize("mode", ["w:bz2", "w:xz", "w"])
def test_other_tar_formats_unpack_with_their_manifest(tmp_path, mode):
    archive = tmp_path / "mini.tar"
    with tarfile.open(archive, mode) as tar:
        for name, data in PHOTOS.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert download.unpack(archive, tmp_path / "mini", info={"url": "file:///mini.tar"}) == len(PHOTOS)
    assert download.read_manifest(tmp_path / "mini") == {name.removeprefix("mini/") for name in PHOTOS}
    assert download.read_marker(tmp_path / "mini")["url"] == "file:///mini.tar"


def test_an_old_download_without_its_manifest_is_not_replaced(server, tmp_path):
    server.files["mini.tgz"] = ARCHIVE
    dest = tmp_path / "mini"
    download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, progress=False)
    (dest / download.MANIFEST).unlink()  # as the script wrote them before it kept one
    download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, progress=False)  # complete: nothing to do
    with pytest.raises(UserError, match=r"holds a download without its list of files \(.download-files"):
        download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, overwrite=True, progress=False)
    assert_complete(dest)
