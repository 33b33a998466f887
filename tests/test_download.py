"""data/download.py and colorlab.download, against a local HTTP server that serves a small archive.

Every failure must leave no dataset folder behind (neither DEST nor a temporary unpacking folder), and
a dropped download must resume where it stopped.
"""

import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading

import numpy as np
import pytest
from PIL import Image

from colorlab import UserError, download
from conftest import ROOT, run_python

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
        download.fetch(server.url("mini.tgz"), dest, None, progress=False)  # no checksum: the archive itself fails
    assert not dest.exists() and leftovers(tmp_path) == []
    assert [p.name for p in (tmp_path / ".downloads").glob("mini.tgz*")] == ["mini.tgz.lock"]  # the next run starts afresh


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
    result = run_python("data/download.py", f"--URL={closed}", f"--DEST={tmp_path / 'mini'}", env=env, timeout=60)
    assert result.returncode != 0
    assert result.stderr.startswith("error: cannot download " + closed) and "Traceback" not in result.stderr
    assert "--URL" in result.stderr


@pytest.mark.parametrize("member", ["../escaped.txt", "/tmp/absolute.txt", "mini/link->/etc/passwd", "mini/up->../../x"])
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


def test_an_existing_folder_is_never_replaced_without_asking(server, tmp_path):
    server.files["mini.tgz"] = ARCHIVE
    dest = tmp_path / "mini"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a complete download.*--OVERWRITE=True"):
        download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, progress=False)
    assert (dest / "mine.txt").read_text() == "keep me" and server.requests == []

    download.fetch(server.url("mini.tgz"), dest, ARCHIVE_MD5, overwrite=True, progress=False)
    assert_complete(dest)
    assert not (dest / "mine.txt").exists() and leftovers(tmp_path) == []


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
