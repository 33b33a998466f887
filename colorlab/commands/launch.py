"""Train beta on several machines with JAX: one process per machine, each started by this command, the
same on every machine but for ``--process-id``:

    KERAS_BACKEND=jax python -m colorlab.commands.launch --coordinator=10.0.0.1:12355 --processes=2 \\
        --process-id=0 beta/train.py --DATA=data/imagenette2-320 --EPOCHS=20

Each process joins JAX's distributed runtime (``keras.distribution.initialize``, with JAX's CPU collectives
over gloo), then runs the stage file as ``python beta/train.py ...`` would. The stage trains on every device
of every process (``colorlab.distribute``: ``DataParallel``), each process reading its own share of the
photos. Only process 0 writes OUT_DIR: the others write into a temporary folder, deleted when they end,
which gets, to resume, a copy of process 0's OUT_DIR. Every process beats once a second in the
coordinator's key-value store; when one falls silent for SILENCE seconds, or a collective operation fails,
the others stop at once, with one line that names it. Keras 3's ``fit`` does not work with TensorFlow's
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so this is JAX only.
"""

import argparse
import ast
import atexit
import contextlib
import os
import pickle
import runpy
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import colorlab
from colorlab import UserError, settings

SILENCE = 20  # seconds without a heartbeat after which a process is taken for dead, and all the others stop


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m colorlab.commands.launch", description="\n\n".join(
        __doc__.split("\n\n")[:2]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coordinator", required=True, help='process 0\'s "host:port", the same everywhere')
    parser.add_argument("--processes", type=int, required=True, help="how many train together, one a machine")
    parser.add_argument("--process-id", type=int, required=True, help="this one's number, 0 to processes - 1")
    parser.add_argument("script", help="the stage file: beta/train.py")
    parser.add_argument("settings", nargs=argparse.REMAINDER, help="the stage's settings, as --NAME=value")
    args = parser.parse_args(argv)
    try:
        stage_argv = join(args.coordinator, args.processes, args.process_id, args.script, args.settings)
    except UserError as error:
        print(f"{error.prefix}{error}", file=sys.stderr)
        return 2
    sys.argv = [args.script, *stage_argv]
    runpy.run_path(args.script, run_name="__main__")  # its mistakes: one line, by settings.apply's hook
    return 0


def join(coordinator, processes, process_id, script, argv):
    """Join the other processes; return the stage's settings for this one (process 0: ``argv`` as given)."""
    if not Path(script).is_file():
        raise UserError(f"{script}: no such stage file")
    values = stage_settings(script, argv)
    settings.check(processes >= 2 and 0 <= process_id < processes,
                   f"--process-id must be 0 to {processes - 1} and --processes at least 2: {process_id} of "
                   f"{processes}")
    colorlab.start_keras()
    import keras

    settings.check(keras.backend.backend() == "jax", "several machines train on JAX only: start each process "
                   "with KERAS_BACKEND=jax (Keras 3's fit does not work with TensorFlow's "
                   "MultiWorkerMirroredStrategy: keras-team/keras#20585)")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # between CPUs: TCP
    keras.distribution.initialize(coordinator, processes, process_id)
    watch(processes, process_id)
    copied = share(Path(values["OUT_DIR"]) if process_id == 0 else None) if values.get("RESUME") else {}
    if process_id == 0:
        return argv
    scratch = tempfile.mkdtemp(prefix=f"colorlab-process{process_id}-")  # deleted at exit
    atexit.register(shutil.rmtree, scratch, True)
    for name, content in copied.items():  # process 0's OUT_DIR, to resume from
        (Path(scratch) / name).parent.mkdir(parents=True, exist_ok=True)
        (Path(scratch) / name).write_bytes(content)
    return [*argv, f"--OUT_DIR={scratch}"]


def stage_settings(script, argv):
    """The stage's settings as it will see them: its ``parameters`` cell's values, then ``argv``."""
    text = Path(script).read_text(encoding="utf-8").partition('tags=["parameters"]\n')[2].partition("\n\n")[0]
    defaults = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(text).body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    return {**defaults, **settings.parse(argv, defaults)}


def share(out_dir):
    """Process 0's ``out_dir`` ({relative name: bytes}), sent to every process: all of them call this, the
    others with None."""
    import numpy as np
    from jax.experimental.multihost_utils import broadcast_one_to_all as broadcast

    sent = pickle.dumps({p.relative_to(out_dir).as_posix(): p.read_bytes() for p in out_dir.rglob("*")
                         if p.is_file()} if out_dir is not None and out_dir.is_dir() else {})
    sent = broadcast(np.frombuffer(sent.ljust(int(broadcast(np.array(len(sent))))), np.uint8))
    return pickle.loads(sent.tobytes())


def watch(processes, process_id):
    """Beat every second in the coordinator's key-value store. When a process falls silent for SILENCE
    seconds, or a collective operation fails, stop this one at once, in one line."""
    from jax._src.distributed import global_state  # JAX's client of the coordination service

    client, heard = global_state.client, {p: (None, time.monotonic()) for p in range(processes)}
    ended = threading.Event()
    atexit.register(ended.set)  # a normal end: JAX's own shutdown then waits for every process

    def stop(process):
        if not ended.is_set():
            sys.stdout.flush()
            print(f"\nerror: process {process} of {processes} stopped or cannot be reached, so this one "
                  f"({process_id}) stops too; restart them all with --RESUME=True to continue from the last "
                  f"epoch saved", file=sys.stderr, flush=True)
            os._exit(1)  # now: JAX's shutdown would wait for the missing process

    def beat():
        while not ended.wait(1):
            try:
                client.key_value_set(f"colorlab/{process_id}", str(time.time_ns()), True)
            except Exception:  # the coordination service, in process 0, is gone
                stop(0)
            for p, (last, _) in heard.items():
                with contextlib.suppress(Exception):  # no beat yet
                    if (value := client.key_value_try_get(f"colorlab/{p}")) != last:
                        heard[p] = (value, time.monotonic())
            if silent := [p for p, (_, when) in heard.items() if time.monotonic() - when > SILENCE]:
                stop(silent[0])

    threading.Thread(target=beat, daemon=True).start()
    previous = sys.excepthook

    def hook(kind, error, traceback):  # a failed collective: which process? The only other, or the silent
        if any(word in str(error) for word in ("Gloo", "NCCL", "heartbeat", "coordination service")):
            others = [p for p in heard if p != process_id]
            time.sleep(0 if len(others) == 1 else SILENCE + 2)  # meanwhile, beat() stops with its name
            stop(others[0] if len(others) == 1 else "?")
        previous(kind, error, traceback)  # this process's own error (a setting, a file), in one line
        sys.stdout.flush()
        os._exit(1)  # at once, so that the others notice: JAX's shutdown would wait for them

    sys.excepthook = hook


if __name__ == "__main__":
    raise SystemExit(main())
