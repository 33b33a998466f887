"""Run a stage and kill it with SIGKILL at an exact point, as a crash, a power cut or `kill -9` would.

One run, by hand::

    python tests/killpoint.py POINT beta/train.py --NAME=value ...

A plan of runs, for the tests (Keras, TensorFlow and colorlab are imported once, then each run is a
process forked from this one: a real process, killed for real, without paying the imports each time)::

    python tests/killpoint.py --plan plan.json results.json

``plan.json`` is a list of runs ``{"argv": [script, args...], "point": POINT or null, "log": file,
"out": OUT_DIR, "probe": file or null, "keep": file or null}``. ``results.json`` gets, per run, its exit
status (-9: killed), the files it left in ``out`` and the epoch its Keras backup names. With ``keep``, the
backup's weights as the run left them (``out/backup/latest.weights.h5``) are copied there; with ``probe``,
the run saves the weights it starts training from (once ``BackupAndRestore`` has restored them) to
``probe + ".weights.h5"``, and writes ``{"learning_rate": ...}`` (the optimizer's rate at its first batch)
to ``probe``.

POINT is one of:

- ``batch:E:B``: right after training batch B of epoch E (both 0-based), in the middle of an epoch;
- ``backup:N``: right after ``keras.callbacks.BackupAndRestore`` saved epoch N (1-based), before the
  callbacks after it in the list have run;
- ``replaced:NAME:N``: right after the N-th atomic rename onto a file called NAME (a pattern such as
  ``*.png`` works too): the file has just appeared, nothing after it is written yet;
- ``replacing:NAME:N``: while the N-th file called NAME is being written: its temporary file is cut to
  half its size, then the process dies before the rename.

Nothing is cleaned up and no Python code runs after the kill: what is left on disk is what a real
crash leaves. The stage itself is unchanged; only these hooks are added around it (the batch hooks ride
on ``keras.callbacks.TerminateOnNaN``, which every stage uses).
"""

import fnmatch
import json
import os
import runpy
import shutil
import signal
import sys
import time
from pathlib import Path


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point, probe=None):
    """Install the hook that kills this process at ``point`` (None: none), and the ``probe`` hooks."""
    import keras

    stop_on_nan, backup = keras.callbacks.TerminateOnNaN, keras.callbacks.BackupAndRestore
    if probe:
        begin = backup.on_train_begin
        first_batch = stop_on_nan.on_batch_end

        def on_train_begin(self, logs=None):
            begin(self, logs)
            self.model.save_weights(probe + ".weights.h5")

        def on_batch_end(self, batch, logs=None):
            if not Path(probe).exists():
                rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
                Path(probe).write_text(json.dumps({"learning_rate": rate}))
            first_batch(self, batch, logs)

        backup.on_train_begin, stop_on_nan.on_batch_end = on_train_begin, on_batch_end
    if point is None:
        return
    kind, _, rest = point.partition(":")
    if kind == "batch":
        epoch, batch = map(int, rest.split(":"))
        original = stop_on_nan.on_batch_end

        def on_epoch_begin(self, index, logs=None):
            self.killpoint_epoch = index

        def on_batch_end(self, index, logs=None):
            original(self, index, logs)
            if getattr(self, "killpoint_epoch", None) == epoch and index == batch:
                die()

        stop_on_nan.on_epoch_begin, stop_on_nan.on_batch_end = on_epoch_begin, on_batch_end
    elif kind == "backup":
        original = backup._save_model

        def save(self):
            original(self)
            if self._current_epoch == int(rest):
                die()

        backup._save_model = save
    elif kind in ("replaced", "replacing"):
        name, count = rest.rsplit(":", 1)
        seen = [0]
        original = os.replace

        def replace(src, dst, *args, **kwargs):
            if fnmatch.fnmatch(Path(dst).name, name):
                seen[0] += 1
                if seen[0] == int(count):
                    if kind == "replacing":
                        with open(src, "r+b") as f:
                            f.truncate(os.path.getsize(src) // 2)
                        die()
                    original(src, dst, *args, **kwargs)
                    die()
            return original(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def run(argv, point, probe=None):
    """Run ``argv`` (a stage file and its arguments) as ``python argv...`` would, in this process."""
    script = argv[0]
    sys.argv = list(argv)
    sys.path[0] = str(Path(script).resolve().parent)
    arm(point, probe)
    runpy.run_path(script, run_name="__main__")


def fork(job):
    """Start ``job`` in a child process; return its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        run(job["argv"], job.get("point"), job.get("probe"))
        code = 0
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    except BaseException:
        sys.excepthook(*sys.exc_info())  # the stage's own hook: one line for a UserError, as from a terminal
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def left(job):
    """What a run left in its OUT_DIR: the files, and the epoch its Keras backup names (0: none)."""
    folder = Path(job["out"])
    state = folder / "backup" / "training_metadata.json"
    try:
        epoch = json.loads(state.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        epoch = 0
    if job.get("keep") and (folder / "backup" / "latest.weights.h5").exists():
        shutil.copyfile(folder / "backup" / "latest.weights.h5", job["keep"])
    return {"files": sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()),
            "epoch": epoch}


def run_plan(plan_file, results_file):
    import h5py  # noqa: F401  (the imports every run shares: done once, before forking)
    import keras  # noqa: F401
    import matplotlib.pyplot  # noqa: F401

    from colorlab import coloring, data, files, images, lab, plots, settings, training  # noqa: F401

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        pass
    jobs = json.loads(Path(plan_file).read_text())
    results = []
    for job in jobs:
        started = time.monotonic()
        _, status = os.waitpid(fork(job), 0)
        results.append({"status": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - started,
                        **left(job)})
    Path(results_file).write_text(json.dumps(results))


if __name__ == "__main__":
    if sys.argv[1] == "--plan":
        run_plan(*sys.argv[2:4])
    else:
        point, *argv = sys.argv[1:]
        run(argv, None if point == "none" else point)
