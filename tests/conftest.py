"""Shared test helpers: run a stage as a learner would (script, in this process, or notebook), with tiny
settings."""

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Quiet, deterministic children: TensorFlow is the default backend; its start-up logs are noise.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")


def run_python(*args, env=None, timeout=900):
    """``python *args`` from the repository root, as a learner types it; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )


def messages(stderr):
    """The lines a program printed to stderr, less TensorFlow's C++ start-up log (no setting silences it)."""
    noise = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog)")
    return [line for line in stderr.strip().splitlines() if line and not noise.match(line)]


def run_stage(monkeypatch, script, *args):
    """Run a stage file in this process, as ``python script args`` would from the repository root, and return
    its globals. A mistake raises its UserError here (a terminal would print it as one line); no start-up
    is paid. The folders the run locked are unlocked afterwards, so that another process may use them."""
    from colorlab import files, settings
    from colorlab.files import unlock

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # settings.apply installs its own
    monkeypatch.setattr(settings, "in_notebook", lambda: False)
    held = set(files._locks)
    try:
        return runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        for folder in set(files._locks) - held:
            unlock(folder)
        import keras

        keras.config.set_dtype_policy("float32")  # whatever the stage chose


def run_notebook(notebook, parameters, out_path, timeout=900):
    """Execute a generated notebook top to bottom with papermill; returns the executed notebook."""
    import papermill

    return papermill.execute_notebook(
        str(ROOT / notebook), str(out_path), parameters=parameters, kernel_name="python3",
        cwd=str(ROOT), progress_bar=False, execution_timeout=timeout,
    )


def pytest_collection_modifyitems(config, items):
    """The `classroom` tests take minutes: they run only when asked for, with ``-m classroom``."""
    if "classroom" not in (config.getoption("markexpr") or ""):
        skip = pytest.mark.skip(reason="grades the classroom assignments with nbgrader: -m classroom runs it")
        for item in items:
            if item.get_closest_marker("classroom"):
                item.add_marker(skip)


@pytest.fixture
def script():
    """The ``run_python`` helper, as a fixture."""
    return run_python
