"""Generate every notebook from its percent-format source, the one file that is ever edited.

    python -m colorlab.notebooks          # (re)write the .ipynb next to each source
    python -m colorlab.notebooks --check  # exit 1 if a notebook differs from its source

Sources are each stage's ``train.py`` and the ``.py`` files in ``notebooks/``.
"""

import sys

import jupytext
import nbformat

from colorlab import files
from colorlab.settings import REPO_ROOT

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def sources(root=REPO_ROOT):
    """The percent-format sources that have a generated notebook."""
    return sorted(root.glob("*/train.py")) + sorted((root / "notebooks").glob("*.py"))


def build(source):
    """The notebook generated from ``source``, without outputs."""
    notebook = jupytext.read(source, fmt="py:percent")
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


def main(argv):
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
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
