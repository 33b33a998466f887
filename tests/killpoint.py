"""Run a stage and kill it with SIGKILL at an exact point, as a crash, a power cut or `kill -9` would.

One run, by hand::

    python tests/killpoint.py POINT beta/train.py --NAME=value ...

A plan of runs, for the tests (Keras, TensorFlow and colorlab are imported once, then each run is a
process forked from this one: a real process, killed for real, without paying the imports each time)::

    python tests/killpoint.py --plan plan.json results.json

``plan.json`` is a list of runs ``{"argv": [script, args...], "point": POINT or null, "log": file,
"out": OUT_DIR, "background": false}``; a background run goes on beside the next ones. ``results.json``
gets, per run, its exit status (-9: killed), the files it left in ``out`` and the epoch its checkpoint
names.

POINT is one of:

- ``batch:E:B``: right after training batch B of epoch E (both 0-based), in the middle of an epoch;
- ``replaced:NAME:N``: right after the N-th atomic rename onto a file called NAME (a pattern such as
  ``*.npz`` works too): the file has just appeared, nothing after it is written yet;
- ``replacing:NAME:N``: while the N-th file called NAME is being written: its temporary file is cut to
  half its size, then the process dies before the rename.

Nothing is cleaned up and no Python code runs after the kill: what is left on disk is what a real
crash leaves. The stage itself is unchanged; only these hooks are added around it.
"""

import atexit
import fnmatch
import json
import os
import runpy
import signal
import sys
import time
from pathlib import Path


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point):
    """Install the hook that kills this process at ``point`` (None: none)."""
    if point is None:
        return
    kind, _, rest = point.partition(":")
    if kind == "batch":
        epoch, batch = map(int, rest.split(":"))
        from colorlab import training

        original = training.StopOnNaN.on_train_batch_end

        def on_train_batch_end(self, index, logs=None):
            original(self, index, logs)
            if self.epoch == epoch and index == batch:
                die()

        training.StopOnNaN.on_train_batch_end = on_train_batch_end
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


def run(argv, point):
    """Run ``argv`` (a stage file and its arguments) as ``python argv...`` would, in this process."""
    script = argv[0]
    sys.argv = list(argv)
    sys.path[0] = str(Path(script).resolve().parent)
    arm(point)
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
        run(job["argv"], job.get("point"))
        code = 0
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    except BaseException:
        sys.excepthook(*sys.exc_info())  # the stage's own hook: one line for a UserError, as from a terminal
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def left(folder):
    """What a run left in its OUT_DIR: the files, and the epoch its checkpoint names (0: none)."""
    state = Path(folder) / "checkpoint" / "state.json"
    return {"files": sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file()),
            "epoch": json.loads(state.read_text())["epoch"] if state.exists() else 0}


def run_plan(plan_file, results_file):
    import keras  # noqa: F401  (the imports every run shares: done once, before forking)
    import matplotlib.pyplot  # noqa: F401

    from colorlab import data, files, lab, plots, settings, training  # noqa: F401

    try:
        from colorlab import classifiers, embeddings, fusion  # noqa: F401  (the full stage)
    except ImportError:
        pass

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        pass
    jobs = json.loads(Path(plan_file).read_text())
    results, background, started = [None] * len(jobs), {}, {}
    for i, job in enumerate(jobs):
        started[i] = time.monotonic()
        pid = fork(job)
        if job.get("background"):
            background[pid] = i
            continue
        _, status = os.waitpid(pid, 0)
        results[i] = {"status": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - started[i],
                      **left(job["out"])}
    while background:
        pid, status = os.wait()
        i = background.pop(pid)
        results[i] = {"status": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - started[i],
                      **left(jobs[i]["out"])}
    Path(results_file).write_text(json.dumps(results))


if __name__ == "__main__":
    if sys.argv[1] == "--plan":
        run_plan(*sys.argv[2:4])
    else:
        point, *argv = sys.argv[1:]
        run(argv, point)
