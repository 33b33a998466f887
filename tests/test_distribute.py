"""Several devices and several processes (``DEVICES``, colorlab/distribute.py; colorlab/commands/launch.py),
on this machine's CPU: two virtual devices give the same losses and weights as one device with the same
global batch, and two JAX processes on the loopback address train together, survive the loss of one of them
in one line, and resume. Slow (each run is a fresh Python, minutes in all): they run only with ``-m
backends``, as CI runs them after installing JAX; a plain ``python -m pytest`` skips them (and runs the
one-line errors at the end).

Tolerances, calibrated on this project's 2-core CPU: two devices against one, after 3 or 4 Adam steps of beta,
the losses differed by at most 1.2e-7 relatively and the weights and the optimizer's state by at most 1.6e-8
(TensorFlow 2.21 and JAX 0.10, Keras 3.15): we allow 1e-5 and 1e-6. Only the order of the float sums differs.
"""

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from colorlab import distribute, files, training
from colorlab.commands import launch
from colorlab.settings import SettingsError
from conftest import ROOT, messages, run_stage

TINY = ["beta/train.py", "--IMAGE_SIZE=16", "--BATCH_SIZE=8", "--WORKERS=1"]
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
# Appended to a copy of the stage: its final weights (the best epoch's, as saved) into the file $KEEP_WEIGHTS
# names, what a process holds in memory, which the processes other than 0 write nowhere else.
KEEP_WEIGHTS = "\nimport os  # noqa: E402\nnp.savez(os.environ['KEEP_WEIGHTS'], *model.get_weights())\n"


def only_when_asked(request, jax=True):
    """Skip unless run with ``-m backends`` (and, if ``jax``, unless JAX is installed)."""
    if "backends" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("minutes of fresh Pythons: `python -m pytest -m backends -n 0` runs it, as CI does")
    if jax and importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")


def start(args, backend, log, keep=None):
    """``python args`` (``beta/train.py ...``, or ``-m colorlab.commands.launch ...``), its output in ``log``;
    ``keep``: where a stage that ends with KEEP_WEIGHTS saves its weights."""
    env = {**os.environ, **QUIET, "KERAS_BACKEND": backend, "KEEP_WEIGHTS": str(keep)}
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def arrays(path):
    """Every array of a Keras weights file (the model's and the optimizer's), by name."""
    found = {}
    with h5py.File(path, "r") as weights:
        weights.visititems(lambda name, item: found.update({name: item[()]}) if isinstance(item, h5py.Dataset)
                           else None)
    return found


@pytest.mark.backends
@pytest.mark.parametrize("backend, steps, epochs", [("jax", 2, 2), ("tensorflow", 1, 3)])
def test_two_virtual_devices_train_as_one_device_with_the_same_global_batch(backend, steps, epochs, tmp_path,
                                                                              request):
    # TensorFlow: one batch per epoch, as its MirroredStrategy path in Keras draws the batches of an epoch in
    # another order than one device does (an extra shuffle at the start); the crops are the same.
    only_when_asked(request, jax=backend == "jax")
    runs = {}
    for count in (1, 2):
        out = tmp_path / f"devices{count}"
        args = [*TINY, f"--STEPS_PER_EPOCH={steps}", f"--EPOCHS={epochs}", f"--DEVICES={count}",
                f"--OUT_DIR={out}"]
        runs[count] = (out, start(args, backend, tmp_path / f"devices{count}.log"))
    for count, (out, process) in runs.items():
        assert process.wait(timeout=900) == 0, (tmp_path / f"devices{count}.log").read_text()[-3000:]
    one, two = (runs[count][0] for count in (1, 2))
    assert "data parallel: 2 devices" in (tmp_path / "devices2.log").read_text()
    assert "data parallel" not in (tmp_path / "devices1.log").read_text()
    history_one, history_two = training.history(one / "history.csv"), training.history(two / "history.csv")
    assert len(history_one["loss"]) == epochs and history_one.keys() == history_two.keys()
    for name in history_one:
        np.testing.assert_allclose(history_two[name], history_one[name], rtol=1e-5, err_msg=name)
    weights_one, weights_two = (arrays(out / "backup" / "latest.weights.h5") for out in (one, two))
    assert weights_one.keys() == weights_two.keys() and len(weights_one) > 40  # the model's and Adam's
    for name in weights_one:
        np.testing.assert_allclose(weights_two[name], weights_one[name], rtol=0, atol=1e-6, err_msg=name)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, request):
    """Two JAX processes on 127.0.0.1 train beta for 3 epochs; process 1 is killed once epoch 1 is saved, then
    the pair is started again with --RESUME=True and trains epochs 2 and 3. A dict: "status" (the survivor's
    exit status), "seconds" (from the kill to its exit), "saved" (epochs saved then), "after" (OUT_DIR's paths
    then), "logs" ((run, process) -> output), "pids" (process 0's, per run), "out", "root"."""
    only_when_asked(request)
    root = tmp_path_factory.mktemp("pair")
    out, logs, pids = root / "out", {}, []
    stage = root / "beta_keeping_its_weights.py"  # beta/train.py, then KEEP_WEIGHTS
    stage.write_text((ROOT / "beta" / "train.py").read_text(encoding="utf-8") + KEEP_WEIGHTS)
    for run, extra in enumerate([[], ["--RESUME=True"]]):
        launcher = ["-m", "colorlab.commands.launch", f"--coordinator=127.0.0.1:{free_port()}",
                    "--processes=2"]
        args = [stage, *TINY[1:], "--STEPS_PER_EPOCH=4", "--EPOCHS=3", f"--OUT_DIR={out}", *extra]
        processes = [start([*launcher, f"--process-id={p}", *args], "jax", root / f"run{run}-{p}.log",
                           keep=root / f"run{run}-{p}.npz") for p in (0, 1)]
        pids.append(processes[0].pid)
        try:
            if run == 0:  # kill process 1 once epoch 1 is saved, in epoch 2: time process 0's stop
                deadline = time.monotonic() + 900
                while training.saved_epochs(out / "backup") < 1 and time.monotonic() < deadline:
                    assert processes[0].poll() is None, (root / "run0-0.log").read_text()[-3000:]
                    time.sleep(0.1)
                processes[1].send_signal(signal.SIGKILL)
                killed = time.monotonic()
                status = processes[0].wait(timeout=launch.SILENCE + 60)
                seconds = time.monotonic() - killed
                saved, after = training.saved_epochs(out / "backup"), sorted(p for p in out.rglob("*"))
            for p, process in enumerate(processes):
                process.wait(timeout=900)
        finally:
            for process in processes:
                process.kill()
        logs.update({(run, p): (root / f"run{run}-{p}.log").read_text() for p in (0, 1)})
    return {"out": out, "status": status, "seconds": seconds, "saved": saved, "after": after, "logs": logs,
            "pids": pids, "root": root}


@pytest.mark.backends
def test_a_dead_process_stops_the_other_within_the_stated_time_in_one_line(pair):
    lines = messages(pair["logs"][0, 0])
    assert pair["status"] == 1 and pair["seconds"] < launch.SILENCE + 10, (pair["seconds"], lines[-5:])
    assert re.fullmatch(r"error: process 1 of 2 stopped or cannot be reached, so this one \(0\) stops too; "
                        r"restart them all with --RESUME=True to continue from the last epoch saved",
                        lines[-1])
    assert "Traceback" not in pair["logs"][0, 0]
    # Nothing half-written: only the project's own files, no temporary one; the backup loads.
    names = [p.relative_to(pair["out"]).as_posix() for p in pair["after"] if p.is_file()]
    assert all(files.owned(n) for n in names) and not [n for n in names if "colorlab-tmp" in n], names
    assert pair["saved"] >= 1 and "backup/latest.weights.h5" in names
    print(f"process 0 stopped {pair['seconds']:.1f} s after process 1 was killed")


@pytest.mark.backends
def test_the_restarted_pair_resumes_from_the_last_saved_epoch_and_ends_with_the_same_weights(pair):
    saved, logs = pair["saved"], pair["logs"]
    for p in (0, 1):
        log = logs[1, p]
        assert f"Epoch {saved + 1}/3" in log and f"Epoch {saved}/3" not in log, log[-3000:]
    assert len(training.history(pair["out"] / "history.csv")["loss"]) == 3
    zero, one = (np.load(pair["root"] / f"run1-{p}.npz") for p in (0, 1))
    assert len(zero.files) == len(one.files) > 20
    for name in zero.files:
        np.testing.assert_array_equal(zero[name], one[name])  # the same arrays, bit for bit


@pytest.mark.backends
def test_only_process_0_writes_out_dir(pair):
    out, logs = pair["out"], pair["logs"]
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "model.keras" in names and "backup/latest.weights.h5" in names
    assert all(files.owned(name) for name in names) and not [n for n in names if "colorlab-tmp" in n], names
    # TensorBoard names its files after the process that writes them: process 0's only.
    writers = {int(re.search(r"\.(\d+)\.\d+\.v2$", n).group(1)) for n in names if "tfevents" in n}
    assert writers == set(pair["pids"])  # the killed run's process 0, and the resumed run's
    # Process 1 wrote into a temporary folder of its own, deleted when it ended.
    scratch = re.search(r"wrote result\.png.* to (\S+)", logs[1, 1]).group(1)
    assert "colorlab-process1-" in scratch and not os.path.exists(scratch)
    assert re.search(rf"wrote result\.png.* to {re.escape(str(out))}\n", logs[1, 0])


@pytest.mark.parametrize("args, says", [
    (["--DEVICES=two"], 'DEVICES must be "auto" or a number of devices'),
    (["--DEVICES=0"], 'DEVICES must be "auto" or a number of devices'),
])  # all checked before any device is touched: this process's TensorFlow keeps its one CPU device
def test_impossible_distribution_settings_stop_in_one_line_before_anything_runs(args, says, monkeypatch):
    with pytest.raises(SettingsError, match=re.escape(says)):
        run_stage(monkeypatch, "beta/train.py", *args)


def test_pytorch_refuses_several_devices_and_names_the_alternatives(monkeypatch):
    monkeypatch.setattr(distribute.keras.backend, "backend", lambda: "torch")
    with pytest.raises(SettingsError, match="KERAS_BACKEND=jax .* or tensorflow"):
        distribute.Devices(2)
    assert distribute.Devices("auto").replicas == 1  # one device: as ever


@pytest.mark.parametrize("args, says", [
    (["--process-id=0", "beta/train.py"], "several machines train on JAX only: start each process with "
     "KERAS_BACKEND=jax (Keras 3's fit does not work with TensorFlow's MultiWorkerMirroredStrategy: "
     "keras-team/keras#20585)"),  # this process's backend is TensorFlow
    (["--process-id=2", "beta/train.py"], "--process-id must be 0 to 1 and --processes at least 2: 2 of 2"),
    (["--process-id=0", "beta/train.py", "--EPOCH=3"], "unknown setting --EPOCH; valid settings:"),
    (["--process-id=0", "beta/trian.py"], "beta/trian.py: no such stage file"),
])
def test_the_launcher_refuses_in_one_line_before_joining_anyone(args, says, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert launch.main(["--coordinator=127.0.0.1:1", "--processes=2", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), lines


def test_the_launcher_reads_out_dir_and_resume_as_the_stage_will():
    values = launch.stage_settings(ROOT / "beta" / "train.py", ["--OUT_DIR=runs/a", "--RESUME=True"])
    assert values["OUT_DIR"] == "runs/a" and values["RESUME"] is True and values["EPOCHS"] == 10
    assert launch.stage_settings(ROOT / "beta" / "train.py", [])["OUT_DIR"] == "outputs/beta"
