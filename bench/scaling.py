"""Data-parallel scaling: beta's training throughput on N devices against N times its throughput on one.

    python bench/scaling.py                          # 1 and 2 devices, the default backend
    python bench/scaling.py --backend jax --devices 1,2,4 --steps 30 --json outputs/bench/scaling.json

scaling(N) = photos/s with N devices / (N x photos/s with 1 device): 1.0 is perfect, and it falls as the
devices spend time exchanging gradients instead of computing. Each device gets the same ``--batch`` crops a
step (the global batch is N times that), as the stages' ``DEVICES`` setting trains: the model is built and
compiled in ``distribute.Devices(N).scope()`` and trained with a plain ``model.fit``.

The network is beta's own: ``beta/train.py`` runs once for one step and its ``model.keras`` is loaded
(nothing here reads a lesson's source). Each device count runs in a Python of its own (the devices are
chosen before the backend starts), fed batches already in memory, so that only the training step counts.

Without an accelerator the N devices are virtual: the CPU split N ways (``DEVICES=N`` on a CPU), so the N
"devices" share the same cores. That run only proves the code path works; its figure says nothing about
the speed-up on real devices, and the table says so.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="bench/scaling.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"),
                        choices=["tensorflow", "jax"], help="Keras backend (PyTorch trains on one device)")
    parser.add_argument("--devices", default="1,2", help="device counts, comma-separated; 1 first")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per device count")
    parser.add_argument("--size", type=int, default=64, help="side of the square crops, in pixels")
    parser.add_argument("--batch", type=int, default=8, help="crops per device per step")
    parser.add_argument("--out", default="outputs/bench/scaling", help="where beta's one-step run goes")
    parser.add_argument("--json", help="also write every number to this file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one device count, in its own Python
    return parser.parse_args(argv)


def child(args):
    """Time ``args.steps`` steps of beta on ``args.child`` devices; print one JSON line."""
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np

    from colorlab import distribute

    devices = distribute.Devices(args.child)
    if args.backend == "jax":
        import jax

        kind = jax.devices()[0].platform
    else:
        import tensorflow as tf

        kind = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    batch = args.batch * devices.replicas  # the global batch: --batch crops for each device
    rng = np.random.default_rng(0)
    l = rng.random((batch, args.size, args.size, 1), dtype=np.float32)
    ab = rng.uniform(-0.5, 0.5, (batch, args.size, args.size, 2)).astype(np.float32)

    class Batches(keras.utils.PyDataset):  # the same batch, from memory: only the step is timed
        def __init__(self, steps):
            super().__init__()
            self.steps = steps

        def __len__(self):
            return self.steps

        def __getitem__(self, index):
            return l, ab

    with devices.scope():
        model = keras.saving.load_model(Path(args.out) / "beta" / "model.keras", compile=False)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    model.fit(Batches(3), epochs=1, verbose=0)  # compiles the step
    start = time.perf_counter()
    model.fit(Batches(args.steps), epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    print(json.dumps({"devices": devices.replicas, "kind": kind, "global_batch": batch, "seconds": seconds,
                      "photos_per_s": args.steps * batch / seconds}))


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args)
    counts = [int(n) for n in args.devices.split(",")]
    if counts[0] != 1:
        raise SystemExit("bench/scaling.py: --devices must start with 1, the reference")
    env = {**os.environ, "KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    stage = [sys.executable, "beta/train.py", "--EPOCHS=1", "--STEPS_PER_EPOCH=1",
             f"--IMAGE_SIZE={args.size}", f"--OUT_DIR={Path(args.out) / 'beta'}", "--OVERWRITE=True"]
    runs = [("beta's one-step run", stage)] + [
        (f"{count} devices", [sys.executable, __file__, f"--child={count}", *(argv or sys.argv[1:])])
        for count in counts]
    rows = []
    for what, command in runs:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr.strip() or "?").splitlines()[-1]
            raise SystemExit(f"bench/scaling.py: {what} failed: {last}")
        if what != runs[0][0]:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    one = rows[0]["photos_per_s"]
    print(f"beta, {args.backend}, {args.size}x{args.size} crops, {args.batch} per device per step, "
          f"{args.steps} timed steps")
    print(f"{'devices':>7}  {'kind':<12} {'photos/s':>9}  scaling = photos/s / (N x 1-device photos/s)")
    for row in rows:
        row["scaling"] = row["photos_per_s"] / (row["devices"] * one)
        virtual = row["kind"] == "cpu" and row["devices"] > 1
        row["label"] = "virtual CPU devices: proves the code path only, not a speed-up" if virtual else ""
        kind = "virtual CPU" if virtual else row["kind"].upper()
        print(f"{row['devices']:>7}  {kind:<12} {row['photos_per_s']:>9.1f}  {row['scaling']:.2f}  "
              f"{row['label']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
