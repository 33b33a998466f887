"""Every notebook is generated from its source, matches it, and runs top to bottom with tiny settings."""

import json

import nbformat
import pytest

from colorlab import notebooks
from conftest import ROOT, run_notebook

# Tiny parameters for each notebook, so the whole file runs in seconds. A new notebook needs an entry.
TINY = {
    "alpha/train.ipynb": lambda out: {"IMAGE_SIZE": 24, "EPOCHS": 3, "OUT_DIR": str(out)},
    "beta/train.ipynb": lambda out: {"IMAGE_SIZE": 32, "BATCH_SIZE": 4, "STEPS_PER_EPOCH": 2, "EPOCHS": 2,
                                     "OUT_DIR": str(out)},
    "full/train.ipynb": lambda out: {
        "IMAGE_SIZE": 32, "BATCH_SIZE": 4, "STEPS_PER_EPOCH": 2, "EPOCHS": 1, "WORKERS": 1,
        "CLASSIFIER": "mobilenet_v3_small", "CLASSIFIER_WEIGHTS": None,
        "EMBEDDING_CACHE": str(out / "cache"), "OUT_DIR": str(out / "run"),
    },
    "notebooks/color_spaces.ipynb": lambda out: {"IMAGE_SIZE": 48, "OUT_FILE": str(out / "color_spaces.png")},
    "gan/train.ipynb": lambda out: {"IMAGE_SIZE": 32, "DEPTH": 3, "FILTERS": 4, "D_FILTERS": 4,
                                    "BATCH_SIZE": 4, "STEPS_PER_EPOCH": 2, "EPOCHS": 2, "WARMUP_EPOCHS": 1,
                                    "WORKERS": 1, "OUT_DIR": str(out)},
}
SOURCES = [source.relative_to(ROOT) for source in notebooks.sources()]


@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_notebook_matches_its_source(source):
    assert not notebooks.stale(ROOT / source), \
        f"run `python -m colorlab.notebooks` to regenerate {source.with_suffix('.ipynb')}"


def test_a_stale_notebook_is_detected(tmp_path):
    source = tmp_path / "stage" / "train.py"
    source.parent.mkdir()
    source.write_text((ROOT / "alpha" / "train.py").read_text())
    assert notebooks.stale(source)  # no notebook yet
    nbformat.write(notebooks.build(source), source.with_suffix(".ipynb"))
    assert not notebooks.stale(source)
    source.write_text(source.read_text().replace("EPOCHS = 1000", "EPOCHS = 999"))
    assert notebooks.stale(source)


def test_every_notebook_has_tiny_parameters():
    assert sorted(TINY) == sorted(str(s.with_suffix(".ipynb")) for s in SOURCES)


@pytest.mark.parametrize("notebook", sorted(TINY))
def test_notebook_runs_top_to_bottom(notebook, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    executed = run_notebook(notebook, TINY[notebook](out), tmp_path / "executed.ipynb")
    assert sum(bool(cell.get("outputs")) for cell in executed.cells if cell.cell_type == "code") >= 2
    assert any(out.iterdir())  # the notebook wrote its results
    if notebook == "alpha/train.ipynb":
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["epochs"] == 3 and metrics["size"] == [24, 24]  # papermill's parameters were used
    if notebook == "beta/train.ipynb":
        assert json.loads((out / "settings.json").read_text())["IMAGE_SIZE"] == 32  # papermill's parameters
        assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
        assert sorted(p.name for p in (out / "grids").iterdir()) == ["epoch-0001.png", "epoch-0002.png"]
    if notebook == "full/train.ipynb":
        metrics = json.loads((out / "run" / "metrics.json").read_text())
        # papermill's parameters
        assert metrics["epochs"] == 1 and metrics["classifier"] == "mobilenet_v3_small"
    if notebook == "gan/train.ipynb":
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["epochs"] == 2 and metrics["multiple"] == 8 and (out / "model.keras").exists()
