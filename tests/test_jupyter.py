"""README's `jupyter lab` works: JupyterLab starts from the repository root and serves a lesson notebook."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT

pytest.importorskip("jupyterlab", reason="JupyterLab is installed by requirements.txt")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


def test_jupyter_lab_serves_the_lesson_notebooks(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={ROOT}"]
    if os.geteuid() == 0:  # CI runs as root; Jupyter refuses that unless told
        command.append("--allow-root")
    env = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # the server takes a few seconds to start
            try:
                status, body = get(f"{base}/api/contents/alpha/train.ipynb", token)
                break
            except urllib.error.HTTPError:  # the server answered: no retry hides what it said
                raise
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "jupyter.log").read_text()
                time.sleep(0.5)
        notebook = json.loads(body)
        assert status == 200 and notebook["type"] == "notebook"
        cells = notebook["content"]["cells"]
        # the lesson, as generated
        assert any("parameters" in cell["metadata"].get("tags", []) for cell in cells)
        status, page = get(f"{base}/lab", token)
        assert status == 200 and b"JupyterLab" in page  # the front end a learner opens
        with pytest.raises(urllib.error.HTTPError):  # and nobody without the token gets in
            urllib.request.urlopen(f"{base}/api/contents/alpha/train.ipynb", timeout=5)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
