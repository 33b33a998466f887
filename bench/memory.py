"""Peak memory of beta training and of the `colorize` command on a folder of many large photos, and on 10.

    python bench/memory.py                  # 300 photos of 4000x3000, generated once in data/bench-4000x3000/
    python bench/memory.py --count 100 --steps 10

Memory must not grow with the number of photos in a folder: both read photos one batch at a time. Each
measurement runs in a process of its own, as a user runs it (``python beta/train.py ...``, ``python -m
colorlab.commands.colorize ...``); its peak resident memory (``ru_maxrss``, read with ``wait4`` when it
ends) is compared with that of a process that only imports Keras and TensorFlow, the floor under
every run. The photos are synthetic (smooth gradients plus noise, each shifted and re-tinted), as
large as a phone camera's, and kept between runs: only the missing ones are generated (about 0.3 s each
per core). The table is printed last; everything is also written to ``--json``
(default ``outputs/bench/memory.json``).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 4000, 3000
TARGET_MIB = 400  # issue 14: colorize's peak above the import, on photos of WIDTH x HEIGHT

# ----------------------------------------------------------------------------------------------------
# The photos

_base = None


def _make_base():
    """One 4000x3000 picture (uint8), made once per worker: gradients, waves and noise."""
    global _base
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)[None, :]
    waves = [0.5 + 0.4 * np.sin(7 * x + 4 * y + p) * np.cos(3 * y - 2 * x + p) for p in (0.0, 2.1, 4.2)]
    rgb = np.stack(waves, -1)
    noise = np.random.default_rng(0).integers(-10, 11, rgb.shape, dtype=np.int16)
    _base = np.clip(rgb * 255 + noise, 0, 255).astype(np.uint8)


def _write(path, index):
    """Photo ``index``: the base picture shifted, its channels swapped and tinted: every file differs."""
    rgb = np.roll(_base, (index * 97 % HEIGHT, index * 389 % WIDTH), axis=(0, 1))
    rgb = rgb[..., [(0, 1, 2), (1, 2, 0), (2, 0, 1)][index % 3]]
    rgb = (rgb >> 1) + np.uint8(index * 13 % 128)  # a tint and a contrast of its own
    tmp = Path(path).with_name(f".{Path(path).name}.tmp-{os.getpid()}")
    Image.fromarray(rgb).save(tmp, format="JPEG", quality=85)
    os.replace(tmp, path)
    return path


def photos(folder, count, workers):
    """``count`` photos in ``folder``, generating only those missing; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo-{i:04d}.jpg" for i in range(count)]
    missing = []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                if image.size == (WIDTH, HEIGHT):
                    continue
        except OSError:
            pass
        missing.append((path, i))
    if missing:
        start = time.perf_counter()
        print(f"generating {len(missing)} photos of {WIDTH}x{HEIGHT} in {folder} ...", flush=True)
        with ProcessPoolExecutor(workers, initializer=_make_base) as pool:
            list(pool.map(_write, *zip(*missing), chunksize=4))
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return paths


def subset(paths, folder):
    """A folder holding links to ``paths`` (recreated each time)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in paths:
        (folder / path.name).symlink_to(path.resolve())
    return folder


# ----------------------------------------------------------------------------------------------------
# Measuring


def peak(command, log):
    """Run ``command`` from the repository root; return (peak RSS in MiB, seconds, exit status)."""
    start = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, process.returncode  # Linux: ru_maxrss in KiB


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="photos in the large folder (default 300)")
    parser.add_argument("--small", type=int, default=10, help="photos in the small folder (default 10)")
    parser.add_argument("--folder", type=Path, default=ROOT / "data" / f"bench-{WIDTH}x{HEIGHT}",
                        help="where the photos are kept between runs (ignored by git)")
    parser.add_argument("--steps", type=int, default=20, help="training steps of 8 crops (default 20)")
    parser.add_argument("--image-size", type=int, default=128, help="training crop size (default 128)")
    parser.add_argument("--colorize-size", type=int, default=256, help="colorize's working size (256)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes generating photos")
    parser.add_argument("--json", type=Path, default=ROOT / "outputs" / "bench" / "memory.json")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "colorize"],
                        help="measurements to leave out")
    args = parser.parse_args(argv)

    paths = photos(args.folder, args.count, args.workers)
    large = subset(paths, args.folder.with_name(args.folder.name + f"-{args.count}"))
    small = subset(paths[: args.small], args.folder.with_name(args.folder.name + f"-{args.small}"))
    work = Path(tempfile.mkdtemp(prefix="colorlab-memory-"))
    rows = []

    def measure(what, count, command):
        print(f"measuring {what} on {count} photos ...", flush=True)
        mib, seconds, status = peak(command, work / f"{len(rows)}.log")
        if status != 0:
            print((work / f"{len(rows)}.log").read_text()[-3000:])
            raise SystemExit(f"{what} failed (exit status {status}); log above")
        rows.append({"what": what, "photos": count, "peak_rss_mib": round(mib, 1),
                     "seconds": round(seconds, 1), "command": " ".join(map(str, command))})
        print(f"  {mib:.0f} MiB, {seconds:.0f} s", flush=True)

    python = sys.executable
    measure("import keras + tensorflow only", 0, [python, "-c", "import keras, tensorflow"])
    model = None
    if "train" not in args.skip:
        for count, folder in ((args.small, small), (args.count, large)):
            out = work / f"beta-{count}"
            measure(f"beta training, {args.steps} steps of 8 crops", count, [
                python, "beta/train.py", f"--DATA={folder}", f"--IMAGE_SIZE={args.image_size}",
                "--BATCH_SIZE=8", f"--STEPS_PER_EPOCH={args.steps}", "--EPOCHS=1", f"--OUT_DIR={out}"])
            model = out / "model.keras"
    if "colorize" not in args.skip:
        if model is None:  # a small untrained model will do: colorize's own memory does not depend on it
            model = work / "untrained" / "model.keras"
            model.parent.mkdir()
            subprocess.run([python, "-c", "import keras, sys; from keras import layers; keras.Sequential(["
                            "keras.Input((None, None, 1)), layers.Conv2D(64, 3, strides=2, padding='same'), "
                            "layers.UpSampling2D(2), layers.Conv2D(2, 3, padding='same', activation='tanh')])"
                            ".save(sys.argv[1])", model], check=True)
        for count, folder in ((args.small, small), (args.count, large)):
            measure(f"colorize (working size {args.colorize_size}, JPEG out)", count, [
                python, "-m", "colorlab.commands.colorize", folder, "--model", model,
                "--out", work / f"colorized-{count}", "--size", str(args.colorize_size), "--format", "jpg"])
            shutil.rmtree(work / f"colorized-{count}", ignore_errors=True)

    floor = rows[0]["peak_rss_mib"]
    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "photo_size": [WIDTH, HEIGHT], "rows": rows, "machine": {
            "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)

    print(f"\npeak resident memory, each run a process of its own ({WIDTH}x{HEIGHT} JPEGs); in {args.json}")
    print(f"{'run':46}{'photos':>8}{'peak MiB':>10}{'above import':>14}{'seconds':>9}")
    for row in rows:
        print(f"{row['what']:46}{row['photos']:>8}{row['peak_rss_mib']:>10.0f}"
              f"{row['peak_rss_mib'] - floor:>14.0f}{row['seconds']:>9.0f}")
    coloured = [row for row in rows if row["what"].startswith("colorize")]
    if coloured:  # the target of issue 14; bench/run.py prints it too, from this JSON
        above = max(row["peak_rss_mib"] for row in coloured) - floor
        print(f"\ntarget: colorize at most {TARGET_MIB} MiB above the import on {WIDTH}x{HEIGHT} photos: "
              f"{above:.0f} MiB: {'met' if above <= TARGET_MIB else 'NOT met'}")


if __name__ == "__main__":
    main()
