"""colorlab.files: atomic writes and output folders that never lose an earlier run."""

import pytest

from colorlab import UserError, files


def test_atomic_path_replaces_only_when_complete(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            assert tmp.suffix == ".keras" and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("killed mid-save")
    assert target.read_text() == "old"  # the previous good file survives
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # and no temporary is left

    with files.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_write_json(tmp_path):
    files.write_json(tmp_path / "m.json", {"b": 1, "a": [1.5]})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'


def test_prepare_out_dir_protects_earlier_results(tmp_path):
    out = files.prepare_out_dir(tmp_path / "runs" / "alpha")  # nested folders are created
    assert out.is_dir()
    files.prepare_out_dir(out)  # empty: fine to reuse
    (out / "result.png").write_bytes(b"earlier run")
    with pytest.raises(UserError, match="--OVERWRITE=True"):
        files.prepare_out_dir(out)
    assert files.prepare_out_dir(out, overwrite=True) == out
    assert (out / "result.png").read_bytes() == b"earlier run"  # overwrite does not wipe the folder


def test_prepare_out_dir_refuses_a_file(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        files.prepare_out_dir(tmp_path / "taken")


def test_atomic_path_keeps_every_suffix(tmp_path):
    with files.atomic_path(tmp_path / "epoch-0003.weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5") and tmp.name != "epoch-0003.weights.h5"  # Keras needs the suffix
        tmp.write_text("weights")
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0003.weights.h5"]
