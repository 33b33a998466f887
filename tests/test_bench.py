"""bench/run.py runs end to end with the tiniest settings and writes every number it promises (no timing
is asserted: timings belong to the machine, not to the code)."""

import json

from conftest import run_python


def test_the_benchmark_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_python(
        "bench/run.py", "--quick", "--size=32", "--batch=2", "--steps=2", "--rounds=1", "--photo-size=128x96",
        "--work-size=64", "--scale-sizes=32,64", "--scale-batches=1,2", f"--photos={tmp_path / 'photos'}",
        "--stages=beta", f"--json={out}", timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"machine", "settings", "training", "precision", "colorize", "scaling", "targets"} <= set(report)
    assert report["machine"]["backend"] == "tensorflow" and report["settings"]["size"] == 32
    training = report["training"]["beta"]
    assert set(training["variants"]) == {"disk, uint8 RGB (default)", "memory, uint8 RGB", "disk, float Lab",
                                         "memory, float Lab", "2017 reference"}
    for variant in training["variants"].values():
        assert variant["items_per_s"] > 0 and variant["peak_rss_mb"] > 0
    assert all(training["ratios"][name] > 0 for name in ("pipeline_efficiency", "uint8_vs_float_lab", "speedup_vs_2017"))
    assert "float32" in report["precision"]["beta"]["variants"]
    colour = report["colorize"]["beta"]
    assert colour["latency_ms"] > 0 and set(colour["parts_ms"]) >= {"read", "colour", "write", "of which model"}
    assert {(row["kind"], row["size"], row["batch"]) for row in report["scaling"]["beta"]} == {
        ("forward", 32, 1), ("forward", 32, 2), ("forward", 64, 1), ("forward", 64, 2), ("train", 32, 2), ("train", 64, 2)}
    assert "beta input pipeline efficiency >= 0.9" in report["targets"]
    # the table comes last
    assert "targets:" in result.stdout and "pipeline efficiency" in result.stdout
