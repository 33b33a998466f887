"""Generate every notebook from its percent-format source, the one file that is ever edited, and keep an
executed copy of each, with its outputs, so that a code host shows every lesson's results without a run.

    python -m colorlab.notebooks                       # (re)write the .ipynb next to each source
    python -m colorlab.notebooks --check               # exit 1 if a notebook or an executed copy is stale
    python -m colorlab.notebooks --execute [NAME ...]  # run lessons (default: all) into docs/executed/

Sources are each stage's ``train.py`` and the ``.py`` files in ``notebooks/``. NAME is a stage (``alpha``)
or a notebook's file name (``color_spaces``). An executed copy, ``docs/executed/NAME.ipynb``, records the
SHA-256 of the source it ran, so a test fails when the source has changed since.
"""

import ast
import base64
import contextlib
import datetime
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import jupytext
import nbformat

from colorlab import UserError, files
from colorlab.settings import REPO_ROOT

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
EXECUTED = "docs/executed"  # the executed copies, kept in git
# What their runs write (git ignores outputs/): a learner's own outputs/<stage> is left alone.
RUNS = "outputs/executed"
COMMAND = "python -m colorlab.notebooks --execute"
# What an executed copy changes besides where it writes, and why (said in the copy's first cell).
OVERRIDES = {
    "full": ({"CLASSIFIER_WEIGHTS": None},
             "**The classifier has random weights in this copy** (`CLASSIFIER_WEIGHTS = None`, in the "
             "parameters cell below): it was made offline, where the ImageNet weights cannot be downloaded, "
             "so that it comes out the same on every machine. With random weights the classifier's embedding "
             "is nearly the same for every photo, so the result shows what the colouriser learns on its own "
             "(see [full/README.md](../../full/README.md))."),
}
# The pictures each lesson's "What to expect" shows, copied from its executed run into docs/ (a JPEG for
# photos, a PNG for plots), so that they are always the executed copy's.
FIGURES = {
    "alpha": {"result.png": "alpha_result.jpg"},
    "beta": {"result.png": "beta_result.jpg", "loss.png": "beta_loss.png",
             "grids/epoch-0001.png": "beta_epoch1.jpg"},
    "full": {"result.png": "full_result.jpg", "classifier_input.png": "full_classifier_input.jpg"},
    "gan": {"result.png": "gan_result.jpg", "loss.png": "gan_loss.png",
            "colorfulness.png": "gan_colorfulness.png"},
    "color_spaces": {"color_spaces.png": "color_spaces.jpg"},
}
DOCS_WIDTH = 1000  # pixels: the widest picture in docs/
IMAGE_WIDTH = 720  # pixels: a figure in an executed copy is at most this wide, to keep the copy small
JPEG_QUALITY = 75
# Lines that must never appear in an executed copy: a traceback, TensorFlow's error-level C++ log lines
# (both of its formats: "E0000 00:00:..." and "2025-01-01 12:00:00.000000: E tensorflow/...").
EXPECT = "## What to expect"  # the heading of each lesson's cell that shows its result before it is run
PROBLEM = re.compile(r"^(Traceback |[EF]\d{4} |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [EF] )")


def sources(root=REPO_ROOT):
    """The percent-format sources that have a generated notebook."""
    return sorted(root.glob("*/train.py")) + sorted((root / "notebooks").glob("*.py"))


def name(source):
    """A source's short name: its stage (``alpha``), or its file name in ``notebooks/`` (``color_spaces``)."""
    return Path(source).parent.name if Path(source).name == "train.py" else Path(source).stem


def build(source, text=None):
    """The notebook generated from ``source`` (or from ``text``, its contents), without outputs."""
    notebook = jupytext.reads(Path(source).read_text(encoding="utf-8") if text is None else text,
                              fmt="py:percent")
    # Not paired with its source in Jupyter (no "jupytext" formats): JupyterLab's jupytext extension would
    # refuse to open a paired notebook that is newer than its .py, as a fresh clone can leave them.
    notebook.metadata = {"kernelspec": KERNELSPEC}
    return notebook


def cells(notebook):
    """What must match between a source and its notebook: each cell's type, tags and text."""
    return [(c.cell_type, sorted(c.metadata.get("tags", [])), c.source) for c in notebook.cells]


def stale(source):
    """True if the notebook beside ``source`` is missing or differs from it."""
    path = source.with_suffix(".ipynb")
    return not path.exists() or cells(nbformat.read(path, as_version=4)) != cells(build(source))


# Executed copies


def expectation(notebook):
    """The index of a notebook's "What to expect" cell, or None."""
    return next((i for i, c in enumerate(notebook.cells)
                 if c.cell_type == "markdown" and c.source.lstrip().startswith(EXPECT)), None)


def digest(text):
    """The SHA-256 of a source's code cells (text and tags): what its outputs follow from. Markdown is never
    run, so an executed copy takes a changed one without a run (:func:`sync_markdown`); "What to expect",
    which quotes the run, is written after it. (Cells, not bytes: Windows line endings hash the same.)"""
    notebook = jupytext.reads(text.replace("\r\n", "\n"), fmt="py:percent")
    kept = [cell for cell in cells(notebook) if cell[0] == "code"]
    return hashlib.sha256(json.dumps(kept).encode("utf-8")).hexdigest()


def executed_path(source, root=REPO_ROOT):
    """Where the executed copy of ``source`` is kept."""
    return root / EXECUTED / f"{name(source)}.ipynb"


def executed_stale(source, root=REPO_ROOT):
    """True if the executed copy of ``source`` is missing or was run from another version of it."""
    path = executed_path(source, root)
    if not path.exists():
        return True
    recorded = nbformat.read(path, as_version=4).metadata.get("colorlab", {}).get("source_sha256")
    return recorded != digest(Path(source).read_text(encoding="utf-8"))


def sync_markdown(source, root=REPO_ROOT, write=True):
    """Give a current executed copy its source's markdown cells, which are never run (so they may change after
    the run): the copy's header, code cells and outputs are kept. With ``write=False``, only tell. True if the
    copy's markdown differed."""
    path = executed_path(source, root)
    if executed_stale(source, root):
        return False
    copy = nbformat.read(path, as_version=4)
    def injected(cell):  # papermill's cell of the run's parameters
        return "injected-parameters" in cell.metadata.get("tags", [])

    runs = iter(c for c in copy.cells[1:] if c.cell_type == "code" and not injected(c))  # [0]: the header
    wanted = [copy.cells[0]]
    for cell in build(source).cells:
        if cell.cell_type == "code":
            wanted.append(next(runs))
            if "parameters" in cell.metadata.get("tags", []):
                wanted += [c for c in copy.cells if injected(c)]
        else:
            wanted.append(nbformat.v4.new_markdown_cell(rebase_links(cell.source, Path(source).parent,
                                                                     root / EXECUTED)))
    if [c.source for c in wanted] == [c.source for c in copy.cells]:
        return False
    if write:
        copy.cells = wanted
        with files.atomic_path(path) as tmp:
            nbformat.write(copy, str(tmp))
    return True


def run_parameters(notebook, short_name):
    """What papermill sets in an executed run: results into RUNS, replacing the last run's, and OVERRIDES."""
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    defaults = {node.targets[0].id: node.value for node in ast.parse(cell.source).body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    parameters = {}
    if "OUT_DIR" in defaults:
        parameters["OUT_DIR"] = f"{RUNS}/{short_name}"
    if "OUT_FILE" in defaults:
        parameters["OUT_FILE"] = f"{RUNS}/{short_name}{Path(ast.literal_eval(defaults['OUT_FILE'])).suffix}"
    if "OVERWRITE" in defaults:
        parameters["OVERWRITE"] = True
    return {**parameters, **OVERRIDES.get(short_name, ({}, ""))[0]}


@contextlib.contextmanager
def learner_environment():
    """The kernel sees what a learner's would: TensorFlow's own log level and Jupyter's inline figures."""
    saved = {key: os.environ.pop(key) for key in ("TF_CPP_MIN_LOG_LEVEL", "MPLBACKEND") if key in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def overwrite_returns(text):
    """Stream text as Jupyter shows it: on each line only what follows the last carriage return (progress
    bars redraw themselves that way), and each backspace deletes the character before it."""
    lines = []
    for line in text.split("\n"):
        kept = []
        for char in line.rstrip("\r").rsplit("\r", 1)[-1]:
            if char == "\b":
                if kept:
                    kept.pop()
            else:
                kept.append(char)
        lines.append("".join(kept))
    return "\n".join(lines)


def shrink(encoded_png):
    """A figure, base64 PNG, at most IMAGE_WIDTH wide, as whichever is smaller: a JPEG (photos) or a PNG
    of 64 colours (line plots). Returns (mime type, base64 data)."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(encoded_png))).convert("RGB")
    if image.width > IMAGE_WIDTH:
        image = image.resize((IMAGE_WIDTH, round(image.height * IMAGE_WIDTH / image.width)), Image.LANCZOS)
    jpeg, png = io.BytesIO(), io.BytesIO()
    image.save(jpeg, "JPEG", quality=JPEG_QUALITY, optimize=True)
    image.quantize(64).save(png, "PNG", optimize=True)
    mime, data = min(("image/jpeg", jpeg.getvalue()), ("image/png", png.getvalue()), key=lambda m: len(m[1]))
    return mime, base64.b64encode(data).decode("ascii")


LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def rebase_links(text, old_folder, new_folder):
    """Markdown links relative to ``old_folder``, rewritten to point at the same files from ``new_folder``."""
    def rebase(match):
        target, anchor = (match[2].split("#", 1) + [""])[:2]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:|^/", target):  # an anchor, a URL, an absolute path
            return match[0]
        moved = Path(os.path.relpath(Path(old_folder) / target, new_folder)).as_posix()
        moved += "/" if target.endswith("/") and not moved.endswith("/") else ""
        return f"{match[1]}{moved}{'#' + anchor if anchor else ''}{match[3]}"

    return LINK.sub(rebase, text)


def tidy(notebook, source, root=REPO_ROOT):
    """Make an executed notebook readable from docs/executed/ and small: links rebased, progress bars as
    Jupyter shows them, figures shrunk, and of the kernel's timings only each code cell's duration."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # the kernel's timestamps: noise in a diff
        duration = cell.metadata.pop("papermill", {}).get("duration")
        if cell.cell_type == "code" and duration is not None:
            cell.metadata["papermill"] = {"duration": round(duration, 1)}  # seconds the cell ran
        if cell.cell_type == "markdown":
            cell.source = rebase_links(cell.source, Path(source).parent, root / EXECUTED)
        outputs = []
        for output in cell.get("outputs", []):  # a progress bar's updates, joined as Jupyter shows them
            if output.output_type == "stream" and outputs and outputs[-1].output_type == "stream" \
                    and outputs[-1].name == output.name:
                outputs[-1].text += output.text
            else:
                outputs.append(output)
        if cell.cell_type == "code":
            cell.outputs = outputs
        for output in outputs:
            if output.output_type == "stream":
                output.text = overwrite_returns(output.text)
            if "image/png" in output.get("data", {}):
                mime, output.data[mime] = shrink(output.data.pop("image/png"))
                if "image/png" in output.get("metadata", {}):
                    output.metadata[mime] = output.metadata.pop("image/png")
    return notebook


def problems(notebook):
    """The lines of an executed notebook's outputs that must not be there (see PROBLEM), and its errors."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                found.append(f"{output.ename}: {output.evalue}")
            texts = [output.get("text", ""), output.get("data", {}).get("text/plain", "")]
            found += [line for text in texts for line in text.splitlines() if PROBLEM.match(line)]
    return found


def unshown(notebook):
    """The output a lesson's "What to expect" cell quotes (its `code spans` that hold a decimal number) but
    its executed copy does not show: numbers that went stale when the lesson changed."""
    at = expectation(notebook)
    text = "" if at is None else notebook.cells[at].source
    quotes = [q for q in re.findall(r"`([^`]+)`", text) if re.search(r"\d\.\d", q)]
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    shown = " ".join(" ".join(o.get("text", "") + " " + o.get("data", {}).get("text/plain", "")
                              for o in outputs).split())
    return [q for q in quotes if " ".join(q.split()) not in shown]


def versions():
    """The versions that decide what an executed copy shows."""
    found = {"python": sys.version.split()[0]}
    for package in ("keras", "tensorflow", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def execute(source, root=REPO_ROOT):
    """Run ``source``'s notebook with papermill on its defaults (see ``run_parameters``) and keep the result,
    tidied, as its executed copy. Returns (path, seconds, problems)."""
    import papermill  # only here: generating the notebooks needs no kernel

    # papermill reads the defaults for its metadata and warns at a comment continued on the next line: noise
    logging.getLogger("papermill.translators").setLevel(logging.ERROR)

    text = Path(source).read_text(encoding="utf-8")  # read once: what is run is what is hashed
    short, relative = name(source), Path(source).relative_to(root)
    notebook = build(source, text)
    parameters = run_parameters(notebook, short)
    (root / RUNS).mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        given, ran = Path(tmp) / "given.ipynb", Path(tmp) / "ran.ipynb"
        nbformat.write(notebook, given)
        start = time.perf_counter()
        try:
            with learner_environment():
                papermill.execute_notebook(str(given), str(ran), parameters=parameters, kernel_name="python3",
                                           cwd=str(root), progress_bar=False, start_timeout=300)
        except Exception as error:  # a failed cell, a dead kernel: one line, and the notebook so far
            failed = root / RUNS / f"{short}.failed.ipynb"
            if ran.exists():
                shutil.copyfile(ran, failed)
            where = f"; the notebook as far as it ran: {failed.relative_to(root)}" if ran.exists() else ""
            detail = (f"{error.ename}: {error.evalue}" if isinstance(error, papermill.PapermillExecutionError)
                      else f"{type(error).__name__}: {error}")
            raise UserError(f"{relative} failed: {detail.strip().splitlines()[0] if detail.strip() else ''}"
                            f"{where}") from None
        seconds = time.perf_counter() - start
        executed = tidy(nbformat.read(ran, as_version=4), source, root)
    path = executed_path(source, root)

    def link(file):  # a markdown link to a file of the repository, from the executed copy
        return f"[{file.as_posix()}]({Path(os.path.relpath(root / file, path.parent)).as_posix()})"

    results = parameters.get("OUT_DIR", parameters.get("OUT_FILE"))
    header = (f"**An executed copy** of {link(relative)}, with every output as it came: run on its defaults "
              f"by `{COMMAND} {short}`, on {datetime.date.today().isoformat()}, in {seconds:.0f} s on a "
              f"{os.cpu_count()}-core CPU (load average {load:.1f} at the start; Keras "
              f"{versions().get('keras', '?')}). Its results went to `{results}` (papermill's parameters "
              f"cell below). To run the lesson yourself, open {link(relative.with_suffix('.ipynb'))}.")
    reason = OVERRIDES.get(short, ({}, ""))[1]
    executed.cells.insert(0, nbformat.v4.new_markdown_cell(header + ("\n\n" + reason if reason else ""),
                                                           metadata={"tags": ["executed-copy"]}))
    executed.metadata.papermill.update(input_path=relative.with_suffix(".ipynb").as_posix(),
                                       output_path=path.relative_to(root).as_posix())
    executed.metadata["colorlab"] = {
        "source": relative.as_posix(), "source_sha256": digest(text), "command": f"{COMMAND} {short}",
        "parameters": parameters, "seconds": round(seconds, 1), "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(), "load_average": round(load, 2), "versions": versions(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(path) as tmp:  # a kill mid-write leaves the old copy
        nbformat.write(executed, str(tmp))
    return path, seconds, problems(executed)


def copy_figures(short, root=REPO_ROOT):
    """Copy the pictures of ``short``'s executed run into docs/ (see FIGURES); returns the paths written."""
    from PIL import Image

    written = []
    for result, picture in FIGURES.get(short, {}).items():
        found = root / RUNS / short / result if (root / RUNS / short).is_dir() else root / RUNS / result
        if not found.is_file():
            raise UserError(f"{found.relative_to(root)}: the run of {short} did not write it; update FIGURES")
        image = Image.open(found).convert("RGBA")
        flat = Image.new("RGB", image.size, "white")  # JPEG has no transparency: on white, as displayed
        flat.paste(image, mask=image.getchannel("A"))
        if flat.width > DOCS_WIDTH:
            flat = flat.resize((DOCS_WIDTH, round(flat.height * DOCS_WIDTH / flat.width)), Image.LANCZOS)
        path = root / "docs" / picture
        with files.atomic_path(path) as tmp:
            flat.save(tmp, "JPEG" if path.suffix == ".jpg" else "PNG", quality=85, optimize=True)
        written.append(path)
    return written


def pick(names, root=REPO_ROOT):
    """The sources named (all if none), in the order given."""
    known = {name(s): s for s in sources(root)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"no notebook named {', '.join(unknown)}; choose from {', '.join(known)}")
    return [known[n] for n in names] if names else list(known.values())


def main(argv):
    if "--execute" in argv:
        failed = False
        for source in pick([arg for arg in argv if arg != "--execute"]):
            path, seconds, found = execute(source)
            size = path.stat().st_size / 1e6
            print(f"wrote {path.relative_to(REPO_ROOT)} ({size:.2f} MB; the notebook ran {seconds:.0f} s)")
            for picture in copy_figures(name(source)):
                print(f"wrote {picture.relative_to(REPO_ROOT)}")
            for line in found:
                print(f"  problem in its outputs: {line}")
            failed = failed or bool(found)
        return 1 if failed else 0
    check = "--check" in argv
    changed = [s for s in sources() if stale(s)]
    for source in changed:
        if check:
            print(f"stale notebook: {source.with_suffix('.ipynb').relative_to(REPO_ROOT)} differs from its "
                  f"source")
        else:
            # a kill mid-write leaves the old one
            with files.atomic_path(source.with_suffix(".ipynb")) as tmp:
                nbformat.write(build(source), str(tmp))
            print(f"wrote {source.with_suffix('.ipynb').relative_to(REPO_ROOT)}")
    old = [s for s in sources() if executed_stale(s)] if check else []
    for source in old:
        print(f"stale executed copy: {executed_path(source).relative_to(REPO_ROOT)} was not run from the "
              f"current {source.relative_to(REPO_ROOT)}; run `{COMMAND} {name(source)}`")
    for source in sources():  # a current copy, but its source's markdown changed: no run needed
        if sync_markdown(source, write=not check):
            copy = executed_path(source).relative_to(REPO_ROOT)
            print(f"{copy}: its markdown differs from its source's; run `python -m colorlab.notebooks`"
                  if check else f"wrote the markdown of {copy}")
            old.append(source)
    return 1 if check and (changed or old) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
