"""Interrupted and repeated runs: a stage killed at any moment resumes to the result of an uninterrupted
run; a full disk or a NaN loss keeps the last good checkpoint; two runs never share one OUT_DIR."""

import errno
import re
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from colorlab import UserError, colorize, data, files, images, training
from conftest import ROOT, run_python
from corpus import bad, corpus  # noqa: F401  (corpus is a fixture)

# Tiny, on the corpus (so its bad files are met, skipped and met again after each resume); 3 epochs of 3 steps.
BETA = ["--IMAGE_SIZE=8", "--BATCH_SIZE=4", "--STEPS_PER_EPOCH=3", "--EPOCHS=3"]
KILLS = [  # (kill point, see tests/killpoint.py; resume?)
    ("batch:0:1", False),  # in the middle of epoch 1: nothing saved yet
    ("replaced:epoch-0002.weights.h5:1", True),  # epoch 2's weights have just appeared; state.json still says 1
    ("replacing:model.keras:1", True),  # the final model half written
    (None, True),  # the last resume, left to finish
]


def snapshot(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def beta_runs(corpus, tmp_path_factory):
    """An uninterrupted beta run and one killed three times and resumed: ``(whole, killed, steps, log)``;
    ``steps`` holds, per run of the killed one, its stdout, exit status, files left and checkpoint epoch."""
    folder, _ = corpus
    root = tmp_path_factory.mktemp("beta")
    whole, killed = root / "whole", root / "killed"
    args = ["beta/train.py", *BETA, f"--DATA={folder}"]
    plan = [{"argv": [*args, f"--OUT_DIR={whole}"], "point": None, "out": str(whole), "log": str(root / "whole.log"),
             "background": True}]  # beside the killed run, on the other core
    for i, (point, resume) in enumerate(KILLS):
        plan.append({"argv": [*args, f"--OUT_DIR={killed}", *(["--RESUME=True"] if resume else [])], "point": point,
                     "out": str(killed), "log": str(root / f"killed-{i}.log")})
    (root / "plan.json").write_text(json.dumps(plan))
    result = run_python("tests/killpoint.py", "--plan", root / "plan.json", root / "results.json", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    steps = [(Path(job["log"]).read_text(), r["status"], r["files"], r["epoch"]) for job, r in zip(plan[1:], results[1:])]
    log = (root / "whole.log").read_text()
    assert results[0]["status"] == 0, log[-3000:]
    return whole, killed, steps, log


def test_beta_on_the_corpus_lists_every_skipped_file_at_the_end(beta_runs, corpus):
    folder, cases = corpus
    whole, _, _, log = beta_runs
    tail = log[log.index(f"{len(bad(cases))} unreadable files skipped:"):]
    for name in bad(cases):
        assert any(line.startswith(f"  {folder / name}: ") and cases[name].problem in line for line in tail.splitlines()), name
    assert json.loads((whole / "metrics.json").read_text())["skipped_files"] == len(bad(cases))


def test_each_kill_leaves_a_run_that_resumes(beta_runs):
    _, _, steps, _ = beta_runs
    (_, status1, files1, epoch1), (log2, status2, files2, epoch2), (log3, status3, files3, epoch3), (log4, status4, _, epoch4) = steps
    # Killed in epoch 1: nothing to resume from but the run itself, which RESUME starts again.
    assert status1 == -9 and epoch1 == 0 and "batch.png" in files1 and "checkpoint/state.json" not in files1
    assert "stopped before its first epoch was saved: starting it from the beginning" in log2
    # Killed as epoch 2's weights appeared: the commit (state.json) still names epoch 1.
    assert status2 == -9 and epoch2 == 1 and "checkpoint/epoch-0002.weights.h5" in files2
    assert "resuming after epoch 1 of 3" in log3
    # Killed while writing model.keras: only a temporary file, never a broken model.keras.
    assert status3 == -9 and epoch3 == 3 and "model.keras" not in files3
    assert any(name.startswith(".model.tmp-") for name in files3)
    assert "resuming after epoch 3 of 3" in log4 and "nothing to train" in log4
    assert status4 == 0 and epoch4 == 3, log4[-3000:]


def assert_every_file_is_valid(folder):
    """No temporary file is left, and every file opens as what it claims to be."""
    names = snapshot(folder)
    assert not [n for n in names if ".tmp-" in n], names
    model = keras.saving.load_model(folder / "model.keras")
    for name in names:
        path = folder / name
        if name.endswith(".png"):
            assert images.load(path).std() > 0.01, name
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.startswith("logs/"):
            from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

            assert sum(1 for _ in EventFileLoader(str(path)).Load()) > 0, name
        elif name not in ("model.keras", "checkpoint/epoch-0003.weights.h5"):
            raise AssertionError(f"unexpected file {name}")
    state = training.load_checkpoint(model, folder / "checkpoint")
    assert state["epoch"] == 3 and len(state["history"]["loss"]) == len(state["history"]["val_loss"]) == 3
    return model, state


def test_a_run_killed_three_times_ends_where_an_uninterrupted_run_ends(beta_runs):
    whole, killed, _, _ = beta_runs
    model_whole, state_whole = assert_every_file_is_valid(whole)
    model_killed, state_killed = assert_every_file_is_valid(killed)
    assert [n for n in snapshot(whole) if not n.startswith("logs/")] == [n for n in snapshot(killed) if not n.startswith("logs/")]
    # Same batches, same optimizer state after every resume: the same numbers (TensorFlow on a CPU gives
    # them bit for bit; the tolerance only allows for backends that do not).
    np.testing.assert_allclose(state_killed["history"]["loss"], state_whole["history"]["loss"], rtol=1e-6)
    np.testing.assert_allclose(state_killed["history"]["val_loss"], state_whole["history"]["val_loss"], rtol=1e-6)
    for a, b in zip(model_killed.get_weights(), model_whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for name in ("batch.png", "result.png", "grids/epoch-0001.png", "grids/epoch-0002.png", "grids/epoch-0003.png"):
        np.testing.assert_allclose(images.load(killed / name), images.load(whole / name), atol=1.5 / 255)
    metrics_whole, metrics_killed = (json.loads((f / "metrics.json").read_text()) for f in (whole, killed))
    for name in ("train_loss", "val_loss", "grey_val_loss", "best_val_loss", "best_epoch", "epochs", "skipped_files"):
        assert metrics_killed[name] == pytest.approx(metrics_whole[name], rel=1e-6), name


# ----------------------------------------------------------------------------------------------------
# NaN, a full disk: the last good checkpoint survives, and a one-line message says so


def tiny_model(learning_rate=0.01, seed=0):
    """Two layers, l -> ab; no tanh at the end, so that a huge step overflows (tanh would just saturate)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(None, None, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", padding="same"),
        keras.layers.Conv2D(2, 3, padding="same"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def photos():
    return data.Photos(sorted((ROOT / "data" / "samples").glob("*.jpg")), 16, 4, 3, seed=1)


def test_a_huge_learning_rate_on_resume_takes_effect_stops_on_nan_and_keeps_the_last_good_checkpoint(tmp_path):
    good = tiny_model()
    training.fit(good, photos(), epochs=2, out_dir=tmp_path, verbose=0)
    kept = good.get_weights()
    # The learner resumes with another LEARNING_RATE: the setting wins over the rate stored in the checkpoint.
    with pytest.raises(training.TrainingDiverged) as caught:
        training.fit(tiny_model(learning_rate=1e30), photos(), epochs=4, out_dir=tmp_path, resume=True, verbose=0)
    message = str(caught.value)
    assert re.search(r"loss became (nan|inf) in epoch 3, batch \d", message), message
    assert "the last good epoch (2) is saved" in message and "LEARNING_RATE" in message and "\n" not in message
    restored = tiny_model(seed=5)
    state = training.load_checkpoint(restored, tmp_path / "checkpoint")
    assert state["epoch"] == 2
    for a, b in zip(restored.get_weights(), kept):
        np.testing.assert_array_equal(a, b)
    assert float(restored.optimizer.learning_rate) == pytest.approx(0.01)  # the rate of the model it is loaded into
    run = training.fit(restored, photos(), epochs=3, out_dir=tmp_path, resume=True, verbose=0)  # and it goes on
    assert run.epochs == 3 and np.isfinite(run.history["loss"]).all()


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    real_save_weights = keras.Model.save_weights
    calls = [0]

    def save_weights(self, path, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # the checkpoint of epoch 3
            Path(path).write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_weights(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", save_weights)
    model = tiny_model()
    with pytest.raises(files.WriteError) as caught:
        training.fit(model, photos(), epochs=4, out_dir=tmp_path, verbose=0)
    message = str(caught.value)
    assert message == (f"{tmp_path / 'checkpoint'}: cannot write it (No space left on device); epoch 3 was not saved; "
                       f"the checkpoint of epoch 2 is intact: free some space, then continue with --RESUME=True")
    assert snapshot(tmp_path / "checkpoint") == ["epoch-0002.weights.h5", "state.json"]  # no half file
    monkeypatch.setattr(keras.Model, "save_weights", real_save_weights)  # space freed
    run = training.fit(tiny_model(seed=3), photos(), epochs=4, out_dir=tmp_path, resume=True, verbose=0)
    assert run.epochs == 4 and len(run.history["loss"]) == 4


def test_a_full_disk_during_the_final_save_keeps_the_previous_model(tmp_path, monkeypatch):
    first = tiny_model(seed=1)
    training.save_model(first, tmp_path / "model.keras")

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full)
    with pytest.raises(files.WriteError) as caught:
        training.save_model(tiny_model(seed=2), tmp_path / "model.keras")
    assert str(caught.value) == (f"{tmp_path / 'model.keras'}: cannot write it (No space left on device); the previous "
                                 f"version is intact; free some disk space, or choose a folder on another disk")
    assert snapshot(tmp_path) == ["model.keras"]
    for a, b in zip(keras.saving.load_model(tmp_path / "model.keras").get_weights(), first.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_colorize_stops_on_a_full_disk_and_the_next_run_does_the_rest(tmp_path, monkeypatch, capsys):
    photo = images.load(ROOT / "data" / "samples" / "chelsea.jpg", 24)
    (tmp_path / "in").mkdir()
    for i in range(3):
        images.save(tmp_path / "in" / f"{i}.png", photo)
    tiny_model().save(tmp_path / "model.keras")
    real_save, saved = images.save, []

    def save(path, rgb):
        if len(saved) == 1:
            with files.atomic_path(path) as tmp:
                Path(tmp).write_bytes(b"half")
                raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        real_save(path, rgb)

    monkeypatch.setattr(images, "save", save)
    args = [str(tmp_path / "in"), "--model", str(tmp_path / "model.keras"), "--out", str(tmp_path / "out"), "--size", "16"]
    assert colorize.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {tmp_path / 'out' / '1.png'}: cannot write it (No space left on device)")
    assert "1 photos were coloured before it; run the same command again" in err
    assert snapshot(tmp_path / "out") == ["0.png"]
    monkeypatch.setattr(images, "save", real_save)
    assert colorize.main(args) == 0
    assert "2 colourised, 1 skipped, 0 failed" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------
# OUT_DIR: what a killed run left is cleaned, and two runs never write into one folder at once


def test_temporaries_of_killed_runs_are_removed_and_do_not_count_as_results(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    out = tmp_path / "out"
    out.mkdir()
    (out / f".batch.tmp-{pid}.png").write_bytes(b"half")
    files.prepare_out_dir(out)  # a run killed while writing its first file has no results: no OVERWRITE needed
    assert snapshot(out) == []
    (out / "grids").mkdir()
    (out / "grids" / f".epoch-0001.tmp-{pid}.png").write_bytes(b"half")
    (out / "batch.png").write_bytes(b"a result")
    with pytest.raises(UserError, match="already holds the results"):
        files.prepare_out_dir(out)
    files.prepare_out_dir(out, overwrite=True)  # RESUME or OVERWRITE: what a killed run left half-written goes
    assert snapshot(out) == ["batch.png"]


def test_two_runs_never_write_into_one_out_dir_at_once(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from colorlab import files; files.prepare_out_dir({str(out)!r}); print('held', flush=True); "
         "import sys; sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (out / f".model.tmp-{holder.pid}.keras").write_bytes(b"being written")
        with pytest.raises(UserError, match="another run is writing into this folder right now") as caught:
            files.prepare_out_dir(out, overwrite=True)  # e.g. a resume started while the first run still goes
        assert "\n" not in str(caught.value)
        assert (out / f".model.tmp-{holder.pid}.keras").exists()  # its file being written is left alone
    finally:
        holder.communicate("", timeout=30)
    assert files.prepare_out_dir(out, overwrite=True) == out  # once it has ended, the folder is free
