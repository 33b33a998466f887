"""Generate each assignment's nbgrader notebook from its percent-format source, and make mock submissions.

    python build.py            # (re)write source/NAME/NAME.ipynb from sources/NAME.py, for every assignment
    python build.py --check    # exit 1 if a notebook is stale (a test fails too)
    python build.py --mock     # after `nbgrader generate_assignment`: three mock students' submissions

Run it from classroom/ (or give its path). A source is a jupytext percent-format script in nbgrader's
markup: ``### BEGIN SOLUTION`` / ``### END SOLUTION`` around the answers, ``### BEGIN HIDDEN TESTS`` /
``### END HIDDEN TESTS`` around the tests students do not see, and, on each cell that is an answer or a
test, the cell's nbgrader metadata, of which only the keys that differ from a read-only cell's are written:

    # %% nbgrader={"grade_id": "yuv", "solution": true}                          an autograded answer
    # %% nbgrader={"grade_id": "test_yuv", "grade": true, "points": 3}           its autograder tests
    # %% [markdown] nbgrader={"grade_id": "explain", "grade": true, "solution": true, "points": 3}
                                                                                a manually graded answer

A cell without nbgrader metadata is given text or code: read-only (locked), so that ``nbgrader autograde``
restores it whatever a student did to it.

``--mock`` writes ``submitted/mock-correct``, ``mock-blank`` and ``mock-wrong`` for every assignment
released in ``release/``: the student version answered with the solutions, left as released, and answered
with the solutions but for one plausible mistake (``WRONG``), which must cost exactly that task's points.
"""

import copy
import re
import sys
from pathlib import Path

import nbformat

from colorlab import files, notebooks

HERE = Path(__file__).resolve().parent
ASSIGNMENTS = ("alpha", "beta", "full", "gan", "color_spaces")
DEFAULTS = {"grade": False, "schema_version": 3, "solution": False, "task": False}  # a read-only cell's
MOCK_STUDENTS = ("mock-correct", "mock-blank", "mock-wrong")
# For each assignment, a plausible mistake: (the answer cell, its correct text, the mistake's text, the
# test cell that must fail). The correct text appears once in the solution.
WRONG = {
    "alpha": ("scaling", "/ 128", "", "test_scaling"),  # ab left in Lab's units
    "beta": ("memorizing", " + 1", "", "test_memorizing"),  # the epoch counted from 0, as CSVLogger does
    "full": ("inception", " * 255.0", "", "test_inception"),  # the 2017 defect: grey in [0, 1]
    "gan": ("d_loss", "bce(ops.ones_like(real), real) + bce(ops.zeros_like(fake), fake)",  # labels swapped:
            "bce(ops.zeros_like(real), real) + bce(ops.ones_like(fake), fake)", "test_d_loss"),
    "color_spaces": ("yuv", "[y, 0.492 * (b - y), 0.877 * (r - y)]", "[y, 0.877 * (r - y), 0.492 * (b - y)]",
                     "test_yuv"),  # U and V swapped
}
SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


def source_path(name, root=HERE):
    return root / "sources" / f"{name}.py"


def notebook_path(name, root=HERE):
    return root / "source" / name / f"{name}.ipynb"


def build(name, root=HERE):
    """Assignment ``name``'s nbgrader notebook: its source's cells, each with all its nbgrader metadata."""
    notebook = notebooks.build(source_path(name, root))
    for index, cell in enumerate(notebook.cells):
        marked = cell.metadata.get("nbgrader", {})
        nbgrader = {**DEFAULTS, "grade_id": f"{name}-{index}", **marked}
        nbgrader.setdefault("locked", not nbgrader["solution"])  # the answers are the cells one may edit
        if nbgrader["grade"] and "points" not in nbgrader:
            raise ValueError(f"{name}: graded cell {nbgrader['grade_id']} has no points")
        cell.metadata = {"nbgrader": dict(sorted(nbgrader.items()))}
    return notebook


def cells(notebook):
    """What must match between a source and its notebook: each cell's type, nbgrader metadata and text."""
    return [(c.cell_type, c.metadata.get("nbgrader"), c.source) for c in notebook.cells]


def stale(name, root=HERE):
    """True if the notebook of assignment ``name`` is missing or differs from its source."""
    path = notebook_path(name, root)
    return not path.exists() or cells(nbformat.read(path, as_version=4)) != cells(build(name, root))


def solved(text):
    """A solution cell's text as a student who got everything right would hand it in: the markers removed."""
    return "\n".join(line for line in text.splitlines() if not SOLUTION_MARKER.match(line))


def mock_submissions(name, root=HERE):
    """The three mock students' versions of assignment ``name``, from its release: {student: notebook}."""
    release = nbformat.read(root / "release" / name / f"{name}.ipynb", as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: solved(c.source) for c in build(name, root).cells
               if c.metadata["nbgrader"]["solution"]}
    correct, blank, wrong = (copy.deepcopy(release) for _ in MOCK_STUDENTS)
    cell_id, right, mistake, _ = WRONG[name]
    for notebook in (correct, wrong):
        for cell in notebook.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in answers:
                cell.source = answers[grade_id]
            if notebook is wrong and grade_id == cell_id:
                if cell.source.count(right) != 1:
                    raise ValueError(f"{name}: {right!r} is not once in the answer {cell_id}")
                cell.source = cell.source.replace(right, mistake)
    return dict(zip(MOCK_STUDENTS, (correct, blank, wrong)))


def main(argv, root=HERE):
    if "--mock" in argv:
        released = [name for name in ASSIGNMENTS if (root / "release" / name).is_dir()]
        if not released:
            print("no assignment in release/: run `nbgrader generate_assignment NAME` first", file=sys.stderr)
            return 1
        for name in released:
            for student, notebook in mock_submissions(name, root).items():
                path = root / "submitted" / student / name / f"{name}.ipynb"
                path.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(notebook, path)
                print(f"wrote {path.relative_to(root)}")
        return 0
    changed = [name for name in ASSIGNMENTS if stale(name, root)]
    for name in changed:
        if "--check" in argv:
            print(f"stale notebook: {notebook_path(name, root).relative_to(root)} differs from its source")
        else:
            notebook_path(name, root).parent.mkdir(parents=True, exist_ok=True)
            with files.atomic_path(notebook_path(name, root)) as tmp:  # a kill mid-write leaves the old one
                nbformat.write(build(name, root), str(tmp))
            print(f"wrote {notebook_path(name, root).relative_to(root)}")
    return 1 if changed and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
