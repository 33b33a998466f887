"""bench/run.py gets its models by running the stages and writes every number it promises; no bench file
reads a lesson's source. Nothing here is timed: timings belong to the machine, not to the code."""

import json
import re
import runpy
import sys

from conftest import ROOT
from PIL import Image


def test_the_benchmark_runs_beta_and_writes_every_number(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"
    monkeypatch.setattr(sys, "argv", ["bench/run.py", "--smoke", f"--out={out}"])  # beta only, tiny sizes
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "bench" / "run.py"), run_name="__main__")  # here, where TensorFlow is imported
    printed = capsys.readouterr().out
    report = json.loads((out / "tensorflow.json").read_text())
    assert {"machine", "settings", "stages", "training", "colorize", "targets", "seconds", "cpu_seconds",
            "paired_ratios_per_round", "part_seconds"} <= set(report)
    assert set(report["cpu_seconds"]) == {"bench", "stage runs", "others_share"}
    assert report["machine"]["backend"] == "tensorflow" and report["machine"]["device"] in ("cpu", "gpu")

    # the model timed is the one beta/train.py saved, run as a learner runs it (in a process of its own)
    beta = report["stages"]["beta"]
    assert beta["status"] == "ran", beta
    assert beta["command"].startswith("python beta/train.py --EPOCHS=1 --STEPS_PER_EPOCH=1 --IMAGE_SIZE=32")
    assert (out / "stages" / "beta" / "model.keras").is_file() and beta["multiple"] == 8
    assert set(report["stages"]) == {"beta"}

    training = report["training"]
    assert set(training["variants"]) == {"beta: JPEG files on disk (default)", "beta: batches in memory",
                                         "beta: the 2017 tutorial's feeding"}
    for variant in training["variants"].values():
        assert variant["items_per_s"] > 0 and variant["peak_rss_mb"] > 0 and len(variant["rates"]) == 1
    ratios = training["ratios"]
    for name in ("pipeline_efficiency", "beta_vs_2017"):
        assert ratios[name]["median"] > 0 and ratios[name]["of_medians"] > 0
    for name in ("full_step_vs_beta", "gan_step_vs_beta", "full_vs_2017"):
        assert ratios[name] is None  # not asked for

    colour = report["colorize"]
    assert colour["latency_ms"] > 0 and colour["forward_ms"] > 0
    assert set(colour["parts_ms"]) == {"read", "prepare", "network", "finish", "write PNG"}
    assert all(ms > 0 for ms in colour["parts_ms"].values())
    for name in ("end_to_end_vs_forward", "folder_vs_forward"):
        assert colour["ratios"][name]["median"] > 0
    assert colour["network_input"] == [88, 64]  # 128x96 at working size 64: 85x64, padded to a multiple of 8
    with Image.open(out / "colorized" / "one.png") as image:
        assert image.size == (128, 96)  # colorize keeps the photo's own size
    folder = sorted((out / "colorized" / "folder").iterdir())
    assert colour["folder_photos"] == len(folder) == 2 and colour["folder_photos_per_s"] > 0

    # every target of the issue, with its value; "met" True or False, or None where this run cannot tell
    targets = report["targets"]
    assert {"beta input pipeline efficiency at least 0.9", "beta training from disk at least as fast as the "
            "2017 feeding", "colorize a folder at least 0.9x of 1 / the network's time per photo",
            "colorize memory at most 400 MiB above the import on 4000x3000 photos"} <= set(targets)
    assert any(name.startswith("colorize one 128x96 photo end to end at most 1.3x") for name in targets)
    for target in targets.values():
        assert target["met"] in (True, False, None) and target["value_text"]
        assert target["met"] is not False or target["why"]  # a target not met says why

    # the table comes last, a line per target
    assert "training with model.fit" in printed and "end to end / forward" in printed
    verdicts = [printed.count(f": {verdict}") for verdict in ("met", "NOT met", "not judged here")]
    assert sum(verdicts) == len(targets)


def test_no_bench_file_reads_a_lesson_s_source():
    """The stages are run, never read: no cell markers, exec, AST or module loading from a file."""
    forbidden = {r"# %%": "a notebook cell marker", r"\bexec\(": "exec", r"\beval\(": "eval",
                 r"\bast\.": "the ast module", r"\brunpy\b": "runpy", r"\bimportlib\b": "importlib"}
    files = sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "bench").glob("*.sh"))
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        for pattern, what in forbidden.items():
            assert not re.search(pattern, text), f"{path.name} uses {what}"
