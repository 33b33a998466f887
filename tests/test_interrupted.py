"""Interrupted and repeated runs: a stage killed at any moment resumes to the result of an uninterrupted
run; a full disk or a NaN loss keeps the last good checkpoint; two runs never share one OUT_DIR."""

import errno
import re
import json
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from colorlab import UserError, classifiers, colorize, data, files, fusion, images, training  # noqa: F401  (the full stage's layers)
from conftest import ROOT, run_python
from corpus import bad, corpus  # noqa: F401  (corpus is a fixture)

# Tiny runs on the corpus, so that its bad files are met, skipped, and met again after each resume.
STAGES = {
    "beta": ["beta/train.py", "--IMAGE_SIZE=8", "--BATCH_SIZE=4", "--STEPS_PER_EPOCH=2", "--EPOCHS=2"],
    "full": ["full/train.py", "--IMAGE_SIZE=8", "--BATCH_SIZE=4", "--STEPS_PER_EPOCH=2", "--EPOCHS=2", "--WORKERS=1",
             "--CLASSIFIER=mobilenet_v3_small", "--CLASSIFIER_WEIGHTS=None"],
    "gan": ["gan/train.py", "--IMAGE_SIZE=24", "--DEPTH=3", "--FILTERS=4", "--D_FILTERS=4", "--BATCH_SIZE=4",
            "--STEPS_PER_EPOCH=2", "--EPOCHS=3", "--WARMUP_EPOCHS=2", "--LEARNING_RATE=0.005"],
}
KILLS = {  # stage -> [(kill point, see tests/killpoint.py, or None; extra settings)]
    "beta": [
        ("batch:0:1", []),  # in the middle of epoch 1: nothing saved yet
        ("replaced:epoch-0002.weights.h5:1", ["--RESUME=True"]),  # the last epoch's weights just appeared; state.json says 1
        ("replacing:model.keras:1", ["--RESUME=True"]),  # the final model half written
        (None, ["--RESUME=True"]),  # the last resume, left to finish
    ],
    "gan": [  # two warm-up epochs (the generator alone), then one adversarial epoch
        ("batch:0:0", []),  # in the first warm-up epoch
        ("replaced:warmup.keras:1", ["--RESUME=True"]),  # the warmed-up generator saved, epoch 2 not committed yet
        (None, ["--RESUME=True"]),  # epoch 2 again, then the adversarial epoch (test_gan resumes right into it)
    ],
    "full": [
        ("replacing:*.npz:3", []),  # while the third photo's embedding is written to the cache, before training
        (None, ["--RESUME=True"]),  # no checkpoint yet: refused, in one line that says what to do
        ("replaced:state.json:1", ["--OVERWRITE=True"]),  # the first epoch has just been committed
        (None, ["--RESUME=True"]),
    ],
}


def snapshot(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """Per stage, an uninterrupted run and one killed and resumed: ``{stage: (whole, killed, steps, log)}``;
    ``steps`` holds, per run of the killed one, its output, exit status, files left and checkpoint epoch.

    Every run is a process of its own, killed for real; tests/killpoint.py forks them from one process
    that has imported Keras once, which saves seconds per run.
    """
    folder, _ = corpus
    root = tmp_path_factory.mktemp("runs")
    plan, chains = [], {}
    for stage, args in STAGES.items():
        whole, killed = root / stage / "whole", root / stage / "killed"
        args = [*args, f"--DATA={folder}"]
        cache = lambda name: [f"--EMBEDDING_CACHE={root / stage / name}"] if stage == "full" else []  # noqa: E731
        plan.append({"argv": [*args, *cache("cache-whole"), f"--OUT_DIR={whole}"], "out": str(whole),
                     "log": str(root / f"{stage}-whole.log"), "background": True})  # beside the others
        chains[stage] = []
        for i, (point, extra) in enumerate(KILLS[stage]):
            chains[stage].append(len(plan))
            plan.append({"argv": [*args, *cache("cache"), f"--OUT_DIR={killed}", *extra], "point": point,
                         "out": str(killed), "log": str(root / f"{stage}-killed-{i}.log")})
    (root / "plan.json").write_text(json.dumps(plan))
    result = run_python("tests/killpoint.py", "--plan", root / "plan.json", root / "results.json", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    found = {}
    for stage in STAGES:
        whole = root / stage / "whole"
        log = (root / f"{stage}-whole.log").read_text()
        assert results[chains[stage][0] - 1]["status"] == 0, log[-3000:]
        steps = [(Path(plan[i]["log"]).read_text(), results[i]["status"], results[i]["files"], results[i]["epoch"])
                 for i in chains[stage]]
        found[stage] = whole, root / stage / "killed", steps, log
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_training_on_the_corpus_lists_every_skipped_file_at_the_end(runs, corpus, stage):
    folder, cases = corpus
    whole, _, _, log = runs[stage]
    tail = log[log.rindex(f"{len(bad(cases))} unreadable files skipped:"):]
    for name in bad(cases):
        assert any(line.startswith(f"  {folder / name}: ") and cases[name].problem in line for line in tail.splitlines()), name
    assert json.loads((whole / "metrics.json").read_text()).get("skipped_files", len(bad(cases))) == len(bad(cases))


def test_each_kill_of_beta_leaves_a_run_that_resumes(runs):
    _, _, steps, _ = runs["beta"]
    (_, status1, files1, epoch1), (log2, status2, files2, epoch2), (log3, status3, files3, epoch3), (log4, status4, _, epoch4) = steps
    # Killed in epoch 1: nothing to resume from but the run itself, which RESUME starts again.
    assert status1 == -9 and epoch1 == 0 and "batch.png" in files1 and "checkpoint/state.json" not in files1
    assert "stopped before its first epoch was saved: starting it from the beginning" in log2
    # Killed as epoch 2's weights appeared: the commit (state.json) still names epoch 1.
    assert status2 == -9 and epoch2 == 1 and "checkpoint/epoch-0002.weights.h5" in files2
    assert "resuming after epoch 1 of 2" in log3
    # Killed while writing model.keras: only a temporary file, never a broken model.keras.
    assert status3 == -9 and epoch3 == 2 and "model.keras" not in files3
    assert any(name.startswith(".model.tmp-") for name in files3)
    assert "resuming after epoch 2 of 2" in log4 and "nothing to train" in log4
    assert status4 == 0 and epoch4 == 2, log4[-3000:]


def test_each_kill_of_gan_leaves_a_run_that_resumes(runs):
    _, _, steps, _ = runs["gan"]
    (_, status1, files1, epoch1), (log2, status2, files2, epoch2), (log3, status3, _, epoch3) = steps
    assert status1 == -9 and epoch1 == 0 and "checkpoint/state.json" not in files1
    assert "stopped before its first epoch was saved: starting it from the beginning" in log2
    assert status2 == -9 and epoch2 == 1 and "warmup.keras" in files2  # the warm-up's end: not yet committed
    assert "resuming after epoch 1 of 3" in log3 and status3 == 0 and epoch3 == 3, log3[-3000:]


def test_each_kill_of_full_leaves_a_run_that_resumes_or_says_what_to_do(runs, corpus):
    _, killed, steps, _ = runs["full"]
    (_, status1, files1, _), (log2, status2, _, _), (log3, status3, files3, epoch3), (log4, status4, _, epoch4) = steps
    assert status1 == -9 and "checkpoint/state.json" not in files1
    cache = killed.parent / "cache"
    assert len([p for p in cache.rglob("*.npz") if not p.name.startswith(".")]) >= 2  # finished embeddings are kept
    # RESUME before any epoch was saved: nothing to resume from, and the message says what to do instead.
    assert status2 == 1 and log2.strip().splitlines()[-1] == (
        f"error: nothing to resume: {killed} holds no training run of a stage (no checkpoint folder); check --OUT_DIR, "
        f"or start a new run without --RESUME=True")
    assert re.search(r"embeddings of \d+ photos: [1-9]\d* from the cache", log3)  # the work before the kill is reused
    assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]  # the half-written one is gone
    for path in cache.rglob("*.npz"):
        assert np.load(path)["embedding"].size > 0
    assert status3 == -9 and epoch3 == 1
    assert "resuming after epoch 1 of 2" in log4 and status4 == 0 and epoch4 == 2, log4[-3000:]


def assert_every_file_is_valid(folder, epochs):
    """No temporary file is left, and every file opens as what it claims to be."""
    names = snapshot(folder)
    assert not [n for n in names if ".tmp-" in n], names
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    for name in names:
        path = folder / name
        if name.endswith(".keras"):
            keras.saving.load_model(path, compile=False)
        elif name.endswith(".png"):
            assert images.load(path).std() > 0.01, name
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.startswith("logs/"):
            from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

            assert sum(1 for _ in EventFileLoader(str(path)).Load()) > 0, name
        elif name in (f"checkpoint/epoch-{epochs:04d}.weights.h5", f"checkpoint/{training.BEST}"):
            with h5py.File(path, "r") as weights:
                assert len(weights.keys()) > 0
        else:
            raise AssertionError(f"unexpected file {name}")
    state = json.loads((folder / "checkpoint" / "state.json").read_text())
    validation = state["history"].get("val_loss") or state["history"]["val_g_l1"]  # gan logs its L1 part
    assert state["epoch"] == epochs and len(validation) == epochs
    return model, state


@pytest.mark.parametrize("stage", STAGES)
def test_a_killed_and_resumed_run_ends_where_an_uninterrupted_run_ends(runs, stage):
    whole, killed, _, _ = runs[stage]
    epochs = int(next(a for a in STAGES[stage] if a.startswith("--EPOCHS=")).partition("=")[2])
    model_whole, state_whole = assert_every_file_is_valid(whole, epochs)
    model_killed, state_killed = assert_every_file_is_valid(killed, epochs)
    assert [n for n in snapshot(whole) if not n.startswith("logs/")] == [n for n in snapshot(killed) if not n.startswith("logs/")]
    if stage == "beta":  # the checkpoint loads into the final model (full and gan save only a part of theirs)
        model_killed.compile(optimizer=keras.optimizers.Adam(), loss="mse")
        training.load_checkpoint(model_killed, killed / "checkpoint")
        model_killed = keras.saving.load_model(killed / "model.keras", compile=False)
    # Same batches, same optimizer state after every resume: the same numbers (TensorFlow on a CPU gives
    # them bit for bit; the tolerance only allows for backends that do not).
    assert sorted(state_killed["history"]) == sorted(state_whole["history"])
    for name, values in state_whole["history"].items():
        np.testing.assert_allclose(state_killed["history"][name], values, rtol=1e-6, err_msg=name)
    for a, b in zip(model_killed.get_weights(), model_whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for name in snapshot(whole):
        if name.endswith(".png") and name != "loss.png":
            np.testing.assert_allclose(images.load(killed / name), images.load(whole / name), atol=1.5 / 255)
    metrics_whole, metrics_killed = (json.loads((f / "metrics.json").read_text()) for f in (whole, killed))
    for name, value in metrics_whole.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "second" not in name \
                and not name.startswith("embeddings_"):  # full: the killed run found some in its cache
            assert metrics_killed[name] == pytest.approx(value, rel=1e-6), name


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
