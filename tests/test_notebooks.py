"""Every notebook is generated from its source, matches it, and runs top to bottom with tiny settings."""

import json
import re

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


def shown_twice(executed):
    """What a learner would see twice: a figure displayed again (a figure object left as a cell's value, or
    displayed twice), or TensorFlow's start-up block printed once per library."""
    images = [o["data"].get("image/png") or o["data"]["image/jpeg"] for c in executed.cells
              for o in c.get("outputs", []) if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    texts = [o.get("text", "") + o.get("data", {}).get("text/plain", "") for c in executed.cells  # alone:
             for o in c.get("outputs", []) if not {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    return ([f"figure {i + 1} again" for i, image in enumerate(images) if image in images[:i]]
            + [text for text in texts if re.match(r"<Figure size", text)]
            + ["TensorFlow's start-up block again"] * ("".join(texts).count("Could not find cuda driver") > 1)
            + [text for text in texts if "More than 20 figures" in text])


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
    assert shown_twice(executed) == []
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


# Executed copies: docs/executed/NAME.ipynb, kept in git so that a code host shows every output. Checking one
# is a hash comparison, not a run; `python -m colorlab.notebooks --execute NAME` regenerates it.


@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_executed_copy_was_run_from_the_current_source(source):
    path = notebooks.executed_path(ROOT / source)
    command = f"{notebooks.COMMAND} {notebooks.name(source)}"
    assert path.exists(), f"{source} has no executed copy: run `{command}`"
    path = path.relative_to(ROOT)
    assert not notebooks.executed_stale(ROOT / source), \
        f"{path} was run from another version of {source}: run `{command}`"


@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_executed_copy_is_small_and_shows_no_error_and_each_figure_once(source):
    path = notebooks.executed_path(ROOT / source)
    if not path.exists():
        pytest.skip("no executed copy (the test above fails)")
    assert path.stat().st_size < 1_000_000, f"{path.name}: {path.stat().st_size:,} bytes"
    executed = nbformat.read(path, as_version=4)
    assert notebooks.problems(executed) == []
    assert shown_twice(executed) == []
    figures = [o for c in executed.cells for o in c.get("outputs", []) if "image/jpeg" in o.get("data", {})
               or "image/png" in o.get("data", {})]
    assert figures, f"{path.name} shows no figure"
    assert executed.cells[0].cell_type == "markdown" and source.as_posix() in executed.cells[0].source


@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_what_to_expect_is_what_the_executed_copy_shows(source):
    lesson = notebooks.build(ROOT / source)
    at = notebooks.expectation(lesson)
    assert at is not None and at <= 2, f"{source}: no '{notebooks.EXPECT}' cell after the introduction"
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", lesson.cells[at].source)
    assert pictures, f"{source}: '{notebooks.EXPECT}' shows no picture"
    for picture in pictures:  # relative, so that they show in Jupyter and on a code host alike
        assert picture.startswith("../docs/") and (ROOT / source.parent / picture).is_file(), picture
    path = notebooks.executed_path(ROOT / source)
    if notebooks.executed_stale(ROOT / source):
        pytest.skip("the executed copy is stale (test_executed_copy_was_run_from_the_current_source fails)")
    assert not notebooks.sync_markdown(ROOT / source, write=False), \
        f"{path.relative_to(ROOT)}: its markdown is not its source's: run " \
        f"`python -m colorlab.notebooks` (no run needed)"
    assert notebooks.unshown(nbformat.read(path, as_version=4)) == [], \
        f"{source}: '{notebooks.EXPECT}' quotes output that {path.relative_to(ROOT)} does not show: copy " \
        f"the numbers from it"


def test_a_stale_executed_copy_is_detected(tmp_path):
    source = tmp_path / "stage" / "train.py"
    source.parent.mkdir()
    source.write_text((ROOT / "alpha" / "train.py").read_text())
    assert notebooks.executed_stale(source, tmp_path)  # no executed copy yet
    copy = notebooks.build(source)
    copy.cells.insert(0, nbformat.v4.new_markdown_cell("**An executed copy**"))
    copy.metadata["colorlab"] = {"source_sha256": notebooks.digest(source.read_text())}
    notebooks.executed_path(source, tmp_path).parent.mkdir(parents=True)
    nbformat.write(copy, notebooks.executed_path(source, tmp_path))
    assert not notebooks.executed_stale(source, tmp_path)
    source.write_bytes(source.read_bytes().replace(b"\n", b"\r\n"))  # a Windows checkout: the same text
    assert not notebooks.executed_stale(source, tmp_path)
    text = source.read_text()  # markdown is never run: "What to expect" quotes the run, exercises change
    heading = notebooks.EXPECT + "\n"
    source.write_text(text.replace(heading, heading + "# Other numbers.\n", 1).replace("## Exercises",
                                                                                      "## Exercises, new"))
    assert source.read_text() != text and not notebooks.executed_stale(source, tmp_path)
    assert notebooks.sync_markdown(source, tmp_path, write=False)  # no run: `python -m colorlab.notebooks`
    assert notebooks.sync_markdown(source, tmp_path) and not notebooks.sync_markdown(source, tmp_path)
    copy = nbformat.read(notebooks.executed_path(source, tmp_path), as_version=4)
    assert "Other numbers." in copy.cells[notebooks.expectation(copy)].source
    assert copy.cells[0].source == "**An executed copy**"  # the header kept
    assert sum("## Exercises, new" in c.source for c in copy.cells) == 1
    assert [c.source for c in copy.cells if c.cell_type == "code"] == \
        [c.source for c in notebooks.build(source).cells if c.cell_type == "code"]
    source.write_text(source.read_text().replace("EPOCHS = 1000", "EPOCHS = 999"))
    assert notebooks.executed_stale(source, tmp_path)


def test_an_executed_copy_is_tidied():
    assert notebooks.overwrite_returns("1/3 [==\r2/3 [====\r3/3 [======]\nab\bc\r\n") == "3/3 [======]\nac\n"
    bar = ("Epoch 1/2\n", "\b\r1/2", "\b\r2/2\n")  # a progress bar's updates
    stream = [nbformat.v4.new_output("stream", name="stdout", text=text) for text in bar]
    figure = nbformat.v4.new_output("display_data", data={"text/plain": "<Figure>"})
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fit()", outputs=[*stream, figure])])
    shown = nbformat.v4.new_output("stream", name="stdout", text="Epoch 1/2\n2/2\n")  # as Jupyter shows it
    assert notebooks.tidy(executed, ROOT / "beta" / "train.py").cells[0].outputs == [shown, figure]
    assert notebooks.rebase_links("![r](../docs/a.jpg) [b](../beta/) [t](train.py#top) [w](https://x.org/a)",
                                  ROOT / "alpha", ROOT / "docs" / "executed") == \
        "![r](../a.jpg) [b](../../beta/) [t](../../alpha/train.py#top) [w](https://x.org/a)"
    log = "I0000 00:00:1.0 1 cpu_feature_guard.cc:1] fine\nE0000 00:00:1.0 1 cuda_executor.cc:1] not fine\n"
    stream = {"output_type": "stream", "name": "stderr", "text": log}
    executed = nbformat.from_dict({"cells": [{"cell_type": "code", "outputs": [stream]}]})
    assert notebooks.problems(executed) == ["E0000 00:00:1.0 1 cuda_executor.cc:1] not fine"]


def test_a_figure_is_shrunk():
    import base64
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).random((200, 800, 3)) * 64  # photo-like: PNG compresses it badly
    photo = (noise + np.linspace(0, 191, 800)[None, :, None]).astype("uint8")
    png = io.BytesIO()
    Image.fromarray(photo).save(png, "PNG")
    mime, data = notebooks.shrink(base64.b64encode(png.getvalue()).decode())
    shrunk = Image.open(io.BytesIO(base64.b64decode(data)))
    width = notebooks.IMAGE_WIDTH
    assert mime == "image/jpeg" and shrunk.size == (width, round(200 * width / 800))  # the same shape
    assert len(base64.b64decode(data)) < len(png.getvalue()) / 4


def test_a_figure_or_start_up_block_shown_twice_is_found():
    image = {"output_type": "display_data", "metadata": {},
             "data": {"image/png": "iVBOR", "text/plain": "<Figure size 640x480 with 1 Axes>"}}
    left = {"output_type": "execute_result", "metadata": {}, "execution_count": 1,
            "data": {"text/plain": "<Figure size 640x480 with 1 Axes>"}}
    start = {"output_type": "stream", "name": "stderr", "text": "... Could not find cuda drivers on ...\n"}

    def notebook(*outputs):
        return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=list(outputs))])

    assert shown_twice(notebook(image, start)) == []
    assert shown_twice(notebook(image, image, left, start, start)) == [
        "figure 2 again", left["data"]["text/plain"], "TensorFlow's start-up block again"]
