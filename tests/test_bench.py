"""bench/run.py gets its models by running the stages and writes every number it promises; no bench file
reads a lesson's source. Nothing here is timed: timings belong to the machine, not to the code."""

import json
import re

from conftest import ROOT, run_python
from PIL import Image


def test_the_benchmark_runs_beta_and_writes_every_number(tmp_path):
    out = tmp_path / "bench"
    result = run_python("bench/run.py", "--smoke", f"--out={out}", timeout=600)  # beta only, tiny sizes
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((out / "tensorflow.json").read_text())
    assert {"machine", "settings", "stages", "training", "colorize", "targets", "seconds", "cpu_seconds",
            "paired_ratios_per_round"} <= set(report)
    assert set(report["cpu_seconds"]) == {"bench", "stage runs", "others_share"}
    assert report["machine"]["backend"] == "tensorflow" and report["machine"]["device"] in ("cpu", "gpu")

    # the model timed is the one beta/train.py saved, run as a learner runs it
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
    assert ratios["full_step_vs_beta"] is None and ratios["gan_step_vs_beta"] is None  # not asked for

    colour = report["colorize"]
    assert colour["latency_ms"] > 0 and colour["ratios"]["end_to_end_vs_forward"]["median"] > 0
    assert set(colour["parts_ms"]) == {"read", "colour", "write", "network forward, compiled",
                                       "network forward, eager"}
    assert colour["ratios"]["eager_vs_compiled"]["median"] > 0
    assert colour["network_input"] == [88, 64]  # 128x96 at working size 64: 85x64, padded to a multiple of 8
    with Image.open(out / "colorized" / "one.png") as image:
        assert image.size == (128, 96)  # colorize keeps the photo's own size
    assert "beta input pipeline efficiency at least 0.9" in report["targets"]

    # the table comes last
    assert "training with model.fit" in result.stdout and "end to end / compiled forward" in result.stdout


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
