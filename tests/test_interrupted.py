"""Beta killed for real (SIGKILL, as a crash or a power cut) and resumed with --RESUME=True: it continues from
the last completed epoch, with the weights and optimizer state of its backup, and ends with every file valid.

One chain of three runs, forked by tests/killpoint.py from one process that imported Keras once:

0. killed right after the first batch of epoch 2: the backup holds epoch 1;
1. resumed with another --LEARNING_RATE, and killed right after the backup of the last epoch (2) was saved,
   before the callbacks after it in the list ran, and before the model was saved;
2. resumed: nothing is left to train; it loads the best epoch and saves the model.

(Bit-exact replay of the crop order is not required: the numbers are not compared with an uninterrupted run.)
"""

import csv
import json
import re

import h5py
import keras
import numpy as np
import pytest

from colorlab import files, images, training
from conftest import run_python

EPOCHS = 2
STAGE = ["beta/train.py", "--IMAGE_SIZE=16", "--BATCH_SIZE=4", "--STEPS_PER_EPOCH=2", f"--EPOCHS={EPOCHS}"]
RESUMED_RATE = 0.0005  # the default is 0.001
CHAIN = [("batch:1:0", []), (f"backup:{EPOCHS}", ["--RESUME=True", f"--LEARNING_RATE={RESUMED_RATE}"]),
         (None, ["--RESUME=True", f"--LEARNING_RATE={RESUMED_RATE}"])]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """``(out, [(log, status, files, backup epoch, probe)] per run, the folder of the logs and probes)``."""
    root = tmp_path_factory.mktemp("killed")
    out = root / "out"
    plan = [{"argv": [*STAGE, f"--OUT_DIR={out}", *extra], "point": point, "out": str(out),
             "log": str(root / f"run{i}.log"),
             "keep": str(root / "backup0.weights.h5") if i == 0 else None,  # the backup the killed run left
             "probe": str(root / "probe1.json") if i == 1 else None}  # what the resumed run started from
            for i, (point, extra) in enumerate(CHAIN)]
    (root / "plan.json").write_text(json.dumps(plan))
    result = run_python("tests/killpoint.py", "--plan", root / "plan.json", root / "results.json")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    runs = []
    for i, job in enumerate(plan):
        probe = root / f"probe{i}.json"
        runs.append((root.joinpath(f"run{i}.log").read_text(), results[i]["status"], results[i]["files"],
                     results[i]["epoch"], json.loads(probe.read_text()) if probe.exists() else None))
    return out, runs, root


def arrays(path):
    """Every array of a Keras weights file (the model's and the optimizer's), by name."""
    found = {}
    with h5py.File(path, "r") as weights:
        def keep(name, item):
            if isinstance(item, h5py.Dataset):
                found[name] = item[()]

        weights.visititems(keep)
    return found


def epochs_in(csv_path):
    with open(csv_path, newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file)]


def test_a_run_killed_mid_epoch_resumes_from_its_last_backup_with_its_weights_and_optimizer_state(chain):
    out, runs, root = chain
    (log0, status0, files0, epoch0, _), (log1, _, _, _, _) = runs[:2]
    assert status0 == -9, log0[-3000:]
    assert epoch0 == 1 and "model.keras" not in files0 and "backup/latest.weights.h5" in files0
    # The resumed run trains epoch 2 only, and its history continues the killed run's.
    assert f"Epoch 2/{EPOCHS}" in log1 and "Epoch 1/" not in log1, log1[-3000:]
    printed = float(re.search(r"val_loss: (\d+\.\d+)", log0).group(1))  # Keras's line for epoch 1
    assert training.history(out / "history.csv")["val_loss"][0] == pytest.approx(printed, abs=1e-4)
    # ... from the weights and optimizer state the killed run's backup held.
    started, backup = arrays(root / "probe1.json.weights.h5"), arrays(root / "backup0.weights.h5")
    assert sorted(started) == sorted(backup) and any(name.startswith("optimizer/") for name in backup)
    assert int(backup["optimizer/vars/0"]) == 2  # Adam's step count: epoch 1's two batches
    for name, value in backup.items():
        if name != "optimizer/vars/1":  # the learning rate, see the test below
            np.testing.assert_array_equal(started[name], value, err_msg=name)


def test_a_resumed_run_trains_with_the_learning_rate_it_is_given(chain):
    _, runs, _ = chain
    probe = runs[1][4]
    assert probe["learning_rate"] == pytest.approx(RESUMED_RATE)


def test_a_run_killed_after_its_last_backup_resumes_to_save_the_best_model(chain):
    out, runs, _ = chain
    (log1, status1, files1, epoch1, _), (log2, status2, files2, epoch2, _) = runs[1:]
    assert status1 == -9 and epoch1 == EPOCHS and "model.keras" not in files1, log1[-3000:]
    assert status2 == 0, log2[-3000:]
    assert "Epoch " not in log2  # nothing left to train
    assert epoch2 == EPOCHS and "model.keras" in files2
    metrics = json.loads((out / "metrics.json").read_text())
    model = keras.saving.load_model(out / "model.keras")
    best = keras.models.clone_model(model)
    best.load_weights(out / "best.weights.h5")
    for a, b in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert metrics["best_val_loss"] == min(training.history(out / "history.csv")["val_loss"])


def test_every_epoch_is_in_the_history_and_the_grids_whatever_the_kills(chain):
    out, _, _ = chain
    assert sorted(set(epochs_in(out / "history.csv"))) == list(range(EPOCHS))
    assert json.loads((out / "metrics.json").read_text())["epochs"] == EPOCHS
    grids = sorted(p.name for p in (out / "grids").iterdir())
    assert grids == [f"epoch-{e:04d}.png" for e in range(1, EPOCHS + 1)]


def test_after_the_kills_every_file_is_complete_and_the_project_s_own(chain):
    out, runs, _ = chain
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert all(files.owned(name) for name in names), names
    assert not [n for n in names if "colorlab-tmp" in n], names
    assert "grids/epoch-0001.png" in names  # (every epoch's: see the test above)
    for name in ("batch.png", "result.png", "loss.png", *[n for n in names if n.startswith("grids/")]):
        assert images.load(out / name).std() > 0.01, name
    for name in ("metrics.json", "settings.json", files.MARK, "backup/training_metadata.json"):
        assert files.read_json(out / name) is not None, name
    assert files.read_json(out / files.MARK)["stage"] == "beta"
    # The last run's settings are the resumed run's; its history continues the killed run's first row.
    assert files.read_json(out / "settings.json")["LEARNING_RATE"] == RESUMED_RATE
    assert epochs_in(out / "history.csv")[0] == 0
    assert "settings.json" not in runs[0][2]  # written at the very end only
