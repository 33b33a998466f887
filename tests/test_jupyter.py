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


def run_cell(client, code, interrupt_after=None, manager=None):
    """Run ``code`` in the kernel: (reply status, its stream text, its error outputs)."""
    msg_id = client.execute(code)
    if interrupt_after is not None:
        time.sleep(interrupt_after)
        manager.interrupt_kernel()
    text, errors = "", []
    while True:
        msg = client.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            text += content["text"]
        elif kind == "error":
            errors.append(content)
        elif kind == "status" and content["execution_state"] == "idle":
            break
    while (reply := client.get_shell_msg(timeout=60))["parent_header"].get("msg_id") != msg_id:
        pass  # an earlier request's reply
    return reply["content"]["status"], text, errors


def test_in_a_live_kernel_a_mistake_and_an_interrupt_are_one_line_and_free_the_folder(tmp_path):
    """In Jupyter, as a learner reruns and interrupts cells: one line each, no traceback, and the folder of
    the run that stopped is no longer locked although the kernel lives on."""
    jupyter_client = pytest.importorskip("jupyter_client")
    from colorlab import files

    manager, client = jupyter_client.manager.start_new_kernel(
        kernel_name="python3", cwd=str(ROOT), env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    out = tmp_path / "run"
    try:
        status, text, errors = run_cell(client, f"""
from colorlab import files, settings, training
OVERWRITE = False
config = settings.apply(globals())
out_dir = files.prepare_out_dir({str(out)!r}, "beta", OVERWRITE, resume=False)
files.write_json(out_dir / "metrics.json", {{}})""")
        assert status == "ok", (text, errors)
        rerun = f"files.prepare_out_dir({str(out)!r}, 'beta', OVERWRITE, False)"  # the cell, run again
        status, text, errors = run_cell(client, rerun)
        assert (status, errors) == ("error", [])  # the cell fails (Run All stops), with no traceback
        assert text == (f"error: {out} already holds the results of an earlier beta run: OVERWRITE = True in "
                        f"the parameters cell replaces them, RESUME = True in the parameters cell continues "
                        f"it, or choose another OUT_DIR\n")
        files.lock(out)  # the kernel lives on, but its run is over: another process may use the folder
        files.unlock(out)
        status, text, errors = run_cell(client, f"""
import time
out_dir = files.prepare_out_dir({str(out)!r}, "beta", True, resume=False)
(out_dir / "backup").mkdir()
with training.stops(out_dir / "backup"):
    time.sleep(30)""", interrupt_after=3, manager=manager)
        assert (status, errors) == ("error", [])
        assert text == f"interrupted: 0 epochs are saved in {out / 'backup'}\n"
        files.lock(out)
        files.unlock(out)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
