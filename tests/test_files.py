"""colorlab.files: nothing of the user's is ever deleted, replaced, followed or trusted blindly (issue 15).

Every fixture is made here: folders with the user's files, planted links, FIFOs, damaged backups."""

import errno
import itertools
import json
import math
import os
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from colorlab import UserError, files, settings
from colorlab.files import unlock
from conftest import ROOT


def snapshot(folder):
    """Every file and link under ``folder``, with its content (a link: where it points)."""
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = path.read_bytes()
    return found


def one_line(error):
    return "\n" not in str(error)


def temporary(name, pid, random="abcdefgh"):
    """A name as atomic_path makes them: ``.<name>.colorlab-tmp-<pid>-<8 random characters><suffixes>``."""
    return f".{name}.colorlab-tmp-{pid}-{random}{''.join(Path(name).suffixes)}"


@pytest.fixture(autouse=True)
def terminal(monkeypatch):
    monkeypatch.setattr(settings, "in_notebook", lambda: False)


@pytest.fixture
def dead_pid():
    """The process id of a process that has ended."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# ----------------------------------------------------------------------------------------------------
# atomic_path


def test_atomic_path_replaces_only_when_complete_and_keeps_the_suffixes(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            assert tmp.name.endswith(".keras") and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("killed mid-save")
    assert snapshot(tmp_path) == {"model.keras": b"old"}  # the previous file survives, no temporary is left
    with files.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert snapshot(tmp_path) == {"model.keras": b"new"}
    with files.atomic_path(tmp_path / "epoch-0003.weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5")  # Keras picks the format from both suffixes
        assert files.owned(tmp.name)  # and the name says it is ours, whatever the target
        tmp.write_text("w")


def test_atomic_path_never_writes_through_a_planted_link(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's")
    shared = tmp_path / "shared"
    shared.mkdir()
    # Links at the names a temporary file could get: the old fixed one, and the name tempfile draws first.
    planted = [f".x.png.tmp-{os.getpid()}.png", temporary("x.png", os.getpid(), "planted0")]
    for name in planted:
        (shared / name).symlink_to(victim)
    names = itertools.chain(["planted0"], tempfile._get_candidate_names())
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    with files.atomic_path(shared / "x.png") as tmp:
        assert tmp.name.startswith(f".x.png.colorlab-tmp-{os.getpid()}-") and tmp.name not in planted
        tmp.write_bytes(b"result")
    assert victim.read_text() == "someone else's"
    assert (shared / "x.png").read_bytes() == b"result" and not (shared / "x.png").is_symlink()
    # A link planted at the target itself is replaced by the file, never written through.
    (shared / "y.png").symlink_to(victim)
    with files.atomic_path(shared / "y.png") as tmp:
        tmp.write_bytes(b"result")
    assert victim.read_text() == "someone else's" and not (shared / "y.png").is_symlink()


@pytest.mark.parametrize("name", ["a" * 247 + ".png", "東" * 83 + ".png", "x" * 240 + ".weights.h5"])
def test_temporary_names_fit_the_file_system_limit(tmp_path, name):
    assert len(os.fsencode(name)) <= 255
    with files.atomic_path(tmp_path / name) as tmp:
        assert len(os.fsencode(tmp.name)) <= 255
        tmp.write_bytes(b"x")
    assert snapshot(tmp_path) == {name: b"x"}


def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("{}")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(files.WriteError) as caught:
        files.write_json(target, {"a": 1})
    assert str(caught.value) == (f"{target}: cannot write it (No space left on device); the previous version "
                                 f"is intact; free some disk space, or choose a folder on another disk")
    assert caught.value.disk_full and snapshot(tmp_path) == {"metrics.json": b"{}"}


# ----------------------------------------------------------------------------------------------------
# remove_temporaries


def test_remove_temporaries_removes_only_ours_of_dead_processes_and_never_follows_links(tmp_path, dead_pid):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / temporary("x.png", dead_pid)).write_text("not in the folder: kept")
    (elsewhere / "precious.txt").write_text("kept")
    out = tmp_path / "out"
    (out / "grids").mkdir(parents=True)
    live = subprocess.Popen(["sleep", "60"])
    try:
        (out / temporary("batch.png", dead_pid)).write_text("half")  # ours, and its writer is dead
        (out / "grids" / temporary("epoch-0001.png", dead_pid, "d_f12345")).write_text("half")
        (out / temporary("link.png", dead_pid, "ghijklmn")).symlink_to(elsewhere / "precious.txt")
        kept = [temporary("model.keras", live.pid), ".cache.tmp-99999",
                f"notes.colorlab-tmp-{dead_pid}-abcdefgh.txt", f".draft.colorlab-tmp-{dead_pid}-mine",
                "linked"]
        for name in kept[:-1]:  # a live writer's; not our pattern; not hidden; not the shape of our names
            (out / name).write_text("kept")
        (out / "linked").symlink_to(elsewhere)  # a link to a folder is never entered
        files.remove_temporaries(out)
        assert sorted(snapshot(out)) == sorted(kept)
        assert snapshot(elsewhere) == {temporary("x.png", dead_pid): b"not in the folder: kept",
                                       "precious.txt": b"kept"}
    finally:
        live.kill()
        live.wait()


# ----------------------------------------------------------------------------------------------------
# write_json and read_json


def test_write_json_never_writes_nan(tmp_path):
    values = {"b": 1, "a": [1.5, math.nan, math.inf], "c": {"d": -math.inf, "e": np.float64("nan")}}
    files.write_json(tmp_path / "m.json", values)
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} written")) == {
        "a": [1.5, None, None], "b": 1, "c": {"d": None, "e": None}}
    assert text.startswith('{\n  "a": [\n    1.5,')  # indented, keys sorted: readable and diff-able


def read_in_thread(path, timeout=10):
    """``files.read_json(path)`` in a thread: its result or its UserError; a hanging read fails the test."""
    outcome = []

    def attempt():
        try:
            outcome.append(files.read_json(path))
        except UserError as error:
            outcome.append(error)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if stat.S_ISFIFO(os.stat(path).st_mode):  # let the hung reader go
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"read_json({path}) hangs")
    return outcome[0]


def test_read_json_reads_a_good_file_and_none_when_missing(tmp_path):
    files.write_json(tmp_path / "s.json", {"EPOCHS": 3})
    assert files.read_json(tmp_path / "s.json") == {"EPOCHS": 3}
    assert files.read_json(tmp_path / "missing.json") is None


@pytest.mark.parametrize("kind, problem", [
    ("fifo", "not a regular file"), ("link-to-fifo", "not a regular file"), ("device", "not a regular file"),
    ("folder", "not a regular file"), ("huge", "bytes, more than a settings file can hold"),
    ("deep", "not valid JSON"), ("garbage", "not valid JSON"), ("binary", "not valid JSON"),
])
def test_read_json_refuses_what_is_not_a_small_json_file_in_one_line_without_hanging(tmp_path, kind, problem):
    path = tmp_path / "settings.json"
    if kind in ("fifo", "link-to-fifo"):
        os.mkfifo(tmp_path / "pipe")
        if kind == "fifo":
            path = tmp_path / "pipe"
        else:
            path.symlink_to(tmp_path / "pipe")
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "huge":
        with open(path, "wb") as file:
            file.truncate(files.MAX_JSON_BYTES + 1)  # sparse: no disk used
    elif kind == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "garbage":
        path.write_text('{"epoch": 3')
    else:
        path.write_bytes(b"\xff\xfe\x00garbage")
    error = read_in_thread(path)
    assert isinstance(error, UserError), error
    assert str(error).startswith(f"{path}: ") and problem in str(error) and one_line(error), str(error)


# ----------------------------------------------------------------------------------------------------
# check_destination


@pytest.mark.parametrize("destination", ["", "  ", ".", "/", "~home", "{root}", "{root}/", "{root}/colorlab",
                                         "{root}/data", "{root}/data/samples", "{root}/alpha", "{root}/tests",
                                         "link-to-home"])
def test_destinations_that_hold_more_than_a_run_are_refused_in_one_line(destination, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link-to-home").symlink_to(Path.home())
    destination = destination.replace("{root}", str(ROOT)).replace("~home", str(Path.home()))
    with pytest.raises(UserError, match="give a folder of its own, such as outputs/run1") as caught:
        files.check_destination(destination)
    assert one_line(caught.value) and str(caught.value).startswith("OUT_DIR")


def test_the_current_folder_is_refused_by_any_name(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(UserError, match="OUT_DIR=./ is"):
        files.check_destination("./")


@pytest.mark.parametrize("destination", ["outputs/run1", "{tmp}/out", "{tmp}/new/nested"])
def test_a_folder_of_its_own_is_accepted(destination, tmp_path):
    destination = destination.replace("{tmp}", str(tmp_path))
    assert files.check_destination(destination) == Path(destination)


# ----------------------------------------------------------------------------------------------------
# prepare_out_dir: a folder holding anything the project did not write is never touched

USERS = {  # the user's own files, in a folder without our mark
    "logs/important.log": b"a log", "checkpoint/mymodel.pt": b"torch weights",
    "grids/drawing.png": b"a drawing", ".cache.tmp-99999": b"a cache", "settings.json": b'{"mine": 1}',
    "model.keras": b"my model", "metrics.json": b"{}",
}


def make(folder, contents):
    for name, content in contents.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder


@pytest.mark.parametrize("overwrite, resume", [(False, False), (True, False), (False, True), (True, True),
                                               (True, None)])
def test_a_folder_with_the_user_s_files_is_refused_whatever_the_settings(tmp_path, overwrite, resume):
    out = make(tmp_path / "out", USERS)
    before = snapshot(out)
    with pytest.raises(UserError) as caught:
        files.prepare_out_dir(out, "beta", overwrite, resume)
    message = str(caught.value)
    assert message.startswith(f"{out} holds files that no colorlab run wrote (") and one_line(message)
    assert ".cache.tmp-99999" in message and "choose another --OUT_DIR=" in message
    assert "OVERWRITE" not in message
    assert snapshot(out) == before


@pytest.mark.parametrize("overwrite, resume", [(True, False), (False, False), (False, True)])
def test_the_user_s_files_with_our_names_but_no_mark_are_never_ours(tmp_path, overwrite, resume):
    ours_by_name = ("settings.json", "model.keras", "metrics.json")
    out = make(tmp_path / "out", {name: USERS[name] for name in ours_by_name})
    before = snapshot(out)
    with pytest.raises(UserError) as caught:
        files.prepare_out_dir(out, "beta", overwrite, resume)
    assert one_line(caught.value) and "OVERWRITE" not in str(caught.value)
    assert snapshot(out) == before


def test_a_link_inside_the_folder_counts_as_the_user_s_and_is_never_followed(tmp_path):
    elsewhere = make(tmp_path / "elsewhere", {"history.csv": b"the user's"})
    out = files.prepare_out_dir(tmp_path / "out", "beta")
    (out / "logs").symlink_to(elsewhere)
    (out / "model.keras").symlink_to(elsewhere / "history.csv")
    with pytest.raises(UserError, match="holds files that no colorlab run wrote"):
        files.prepare_out_dir(out, "beta", overwrite=True)
    assert snapshot(elsewhere) == {"history.csv": b"the user's"}


def test_a_new_folder_is_created_and_marked_with_its_stage(tmp_path):
    out = files.prepare_out_dir(tmp_path / "runs" / "beta", "beta", False, False)
    assert out == tmp_path / "runs" / "beta" and json.loads((out / files.MARK).read_text())["stage"] == "beta"
    files.prepare_out_dir(out, "beta", False, False)  # marked but empty: fine to use again


def test_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UserError, match="OUT_DIR is a file, not a folder"):
        files.prepare_out_dir(tmp_path / "taken", "alpha")


LEFTOVER = temporary("result.png", os.getpid())  # a temporary file of a write that did not finish


def earlier_run(folder, stage="beta", epoch=2):
    """A folder as a run of ``stage`` leaves it: marked, with results, a backup of ``epoch`` epochs, logs."""
    files.prepare_out_dir(folder, stage, False, False)
    unlock(folder)
    state = json.dumps({"epoch": epoch, "batch": 0}).encode()
    return make(folder, {
        "model.keras": b"m", "history.csv": b"epoch,loss\n", "grids/epoch-0001.png": b"g", "batch.png": b"b",
        "backup/latest.weights.h5": b"w", "backup/training_metadata.json": state, LEFTOVER: b"half",
        "logs/train/events.out.tfevents.1.vm.2.0.v2": b"e",
    })


def test_an_earlier_run_is_refused_without_overwrite_or_resume_and_left_untouched(tmp_path):
    out = earlier_run(tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(UserError) as caught:
        files.prepare_out_dir(out, "beta", False, False)
    assert str(caught.value) == (f"{out} already holds the results of an earlier beta run: --OVERWRITE=True "
                                 f"replaces them, --RESUME=True continues it, or choose another OUT_DIR")
    with pytest.raises(UserError) as caught:
        files.prepare_out_dir(out, "alpha", False, None)  # a stage that cannot resume does not offer it
    assert "--OVERWRITE=True replaces them, or choose another OUT_DIR" in str(caught.value)
    del before[LEFTOVER]  # only a leftover temporary went
    assert snapshot(out) == before


def test_overwrite_deletes_only_the_project_s_files_of_a_marked_folder(tmp_path):
    out = earlier_run(tmp_path / "out")
    assert files.prepare_out_dir(out, "beta", True, False) == out
    assert snapshot(out) == {files.MARK: (out / files.MARK).read_bytes()}
    assert sorted(p.name for p in out.iterdir()) == [files.MARK]  # the emptied folders went too


def test_overwrite_of_a_marked_folder_with_one_foreign_file_touches_nothing(tmp_path):
    out = earlier_run(tmp_path / "out")
    make(out, {"grids/drawing.png": b"the user's"})
    before = snapshot(out)
    with pytest.raises(UserError, match=r"holds files that no colorlab run wrote \(grids/drawing.png\)"):
        files.prepare_out_dir(out, "beta", True, False)
    del before[LEFTOVER]
    assert snapshot(out) == before


def test_resume_keeps_everything_of_a_run_of_this_stage(tmp_path):
    out = earlier_run(tmp_path / "out")
    before = snapshot(out)
    assert files.prepare_out_dir(out, "beta", False, True) == out
    del before[LEFTOVER]
    assert snapshot(out) == before


def test_resume_without_a_mark_or_a_backup_is_an_error(tmp_path):
    for out, contents in ((tmp_path / "empty", {}), (tmp_path / "killed", {"batch.png": b"b"})):
        files.prepare_out_dir(out, "beta")
        unlock(out)
        make(out, contents)
        with pytest.raises(UserError) as caught:
            files.prepare_out_dir(out, "beta", False, True)
        assert str(caught.value) == (f"nothing to resume: {out} holds no checkpoint of a beta run (no "
                                     f"backup/ folder); check OUT_DIR, or start a new run without "
                                     f"--RESUME=True")
    unmarked = make(tmp_path / "unmarked", {"backup/latest.weights.h5": b"w",
                                            "backup/training_metadata.json": b'{"epoch": 1}'})
    before = snapshot(unmarked)
    with pytest.raises(UserError) as caught:  # a backup, but not one a run of ours marked as its own
        files.prepare_out_dir(unmarked, "beta", False, True)
    assert one_line(caught.value) and snapshot(unmarked) == before


def test_resume_of_a_folder_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        files.prepare_out_dir(tmp_path / "typo", "beta", False, True)
    assert not (tmp_path / "typo").exists()


def test_resume_of_another_stage_s_run_is_refused(tmp_path):
    out = earlier_run(tmp_path / "out", stage="gan")
    with pytest.raises(UserError) as caught:
        files.prepare_out_dir(out, "beta", False, True)
    assert str(caught.value) == f"{out} holds a run of the gan stage: resume it with that stage, or check " \
                                "OUT_DIR"


@pytest.mark.parametrize("state", [b"x" * 5000, b"not json", b'{"epoch": "3"}', b'{"epoch": 2.5}',
                                   b'{"epoch": true}', b'{"epoch": -1}', b"[3]", b"{}", b"fifo"])
def test_resume_refuses_a_damaged_backup_state_in_one_line(tmp_path, state):
    out = earlier_run(tmp_path / "out")
    (out / "backup" / "phase2").mkdir()
    path = out / "backup" / "phase2" / "training_metadata.json"  # a phase's backup is checked too
    if state == b"fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(state)
    with pytest.raises(UserError) as caught:
        files.prepare_out_dir(out, "beta", False, True)
    assert str(caught.value).startswith(f"{path}: ") and one_line(caught.value), str(caught.value)


LOCK_HOLDER = "import sys; from colorlab import files; files.lock(sys.argv[1]); print('held', flush=True); " \
              "input()"


def test_a_second_process_cannot_use_a_folder_that_a_run_holds(tmp_path):
    out = files.prepare_out_dir(tmp_path / "out", "beta")
    unlock(out)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    being_written = out / temporary("model.keras", holder.pid)
    try:
        assert holder.stdout.readline().strip() == "held"
        being_written.write_bytes(b"being written")
        for overwrite, resume in ((True, False), (False, False)):
            with pytest.raises(UserError) as caught:
                files.prepare_out_dir(out, "beta", overwrite, resume)
            assert str(caught.value) == (f"{out}: another run is writing into this folder right now (in "
                                         f"another terminal or notebook?); wait for it to end or stop it, or "
                                         f"choose another OUT_DIR")
        assert being_written.exists()  # the file it is writing is left alone
    finally:
        holder.communicate("\n", timeout=30)
    assert files.prepare_out_dir(out, "beta", True, False) == out  # once it has ended, the folder is free
    unlock(out)
