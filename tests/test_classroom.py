"""The classroom assignments: each notebook matches its source, the student version holds no solution, and
nbgrader's own commands grade three mock students as a teacher would (the `classroom` tests, minutes long:
``python -m pytest -m classroom -n 0``)."""

import copy
import importlib.util
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT

CLASSROOM = ROOT / "classroom"
_spec = importlib.util.spec_from_file_location("classroom_build", CLASSROOM / "build.py")  # a script
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.DOTALL)
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.DOTALL)


def secret_lines(notebook):
    """Every line of code a student must not see: the solution regions, the written answers and the hidden
    tests of the instructor's version."""
    lines = set()
    for cell in notebook.cells:
        nbgrader = cell.metadata["nbgrader"]
        if cell.cell_type == "markdown" and nbgrader["solution"]:
            lines.update(cell.source.splitlines())
        for region in SOLUTION.findall(cell.source) + HIDDEN.findall(cell.source):
            lines.update(region.splitlines())
    return {line.strip() for line in lines} - {""}


def leaked(student, instructor):
    """The secret lines of ``instructor`` that appear in ``student``."""
    shown = {line.strip() for cell in student.cells for line in cell.source.splitlines()}
    return sorted(secret_lines(instructor) & shown)


@pytest.mark.parametrize("name", build.ASSIGNMENTS)
def test_notebook_matches_its_source(name):
    assert not build.stale(name), f"run `python classroom/build.py` to regenerate {build.notebook_path(name)}"


def test_a_stale_notebook_is_detected(tmp_path):
    shutil.copytree(CLASSROOM / "sources", tmp_path / "sources")
    assert build.stale("gan", tmp_path)  # no notebook yet
    assert build.main([], tmp_path) == 0 and not build.stale("gan", tmp_path)
    source = build.source_path("gan", tmp_path)
    source.write_text(source.read_text().replace("l1_weight=100.0", "l1_weight=10.0"))
    assert build.stale("gan", tmp_path) and build.main(["--check"], tmp_path) == 1


@pytest.mark.parametrize("name", build.ASSIGNMENTS)
def test_every_cell_is_marked_and_the_points_are_those_the_notebook_announces(name):
    notebook = build.build(name)
    graded = [c.metadata["nbgrader"] for c in notebook.cells if c.metadata["nbgrader"]["grade"]]
    table = notebook.cells[0].source  # | 1. From RGB to (l, ab) | 3 |
    announced = [int(p) for p in re.findall(r"^\| \d\. .* \| (\d+) \|$", table, re.MULTILINE)]
    assert [g["points"] for g in graded] == announced  # the task table of the first cell, in order
    assert 3 <= len(graded) <= 6 and len({g["grade_id"] for g in graded}) == len(graded)
    solutions = [c for c in notebook.cells if c.metadata["nbgrader"]["solution"]]
    assert all(not c.metadata["nbgrader"]["locked"] for c in solutions)
    assert all(c.metadata["nbgrader"]["locked"] for c in notebook.cells if c not in solutions)
    code = [c for c in solutions if c.cell_type == "code"]
    assert all(SOLUTION.search(c.source) for c in code)  # every answer cell has a region to blank


@pytest.mark.parametrize("name", build.ASSIGNMENTS)
def test_the_student_version_holds_no_solution(name):
    """nbgrader's own preprocessors, as `nbgrader generate_assignment` runs them, in this process."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    instructor = build.build(name)
    student, _ = ClearSolutions().preprocess(copy.deepcopy(instructor), {})
    student, _ = ClearHiddenTests().preprocess(student, {})
    assert leaked(student, instructor) == []
    answers = [c.source for c in student.cells if c.metadata["nbgrader"]["solution"]]
    assert answers and all("raise NotImplementedError()" in a or a == "YOUR ANSWER HERE" for a in answers)


# The full round, with nbgrader's commands, as classroom/README.md tells a teacher to run them.


def nbgrader(course, *args):
    """``nbgrader *args`` in the course folder ``course``; fails the test with nbgrader's log if it fails."""
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A copy of classroom/ in which every assignment is released, submitted by three mock students,
    autograded and given feedback."""
    from nbgrader.api import Gradebook

    course = tmp_path_factory.mktemp("classroom")
    for name in ("nbgrader_config.py", "build.py", "sources", "source"):
        (shutil.copytree if (CLASSROOM / name).is_dir() else shutil.copy)(CLASSROOM / name, course / name)
    nbgrader(course, "generate_assignment", "*")
    assert build.main(["--mock"], course) == 0
    nbgrader(course, "autograde", "*")
    nbgrader(course, "generate_feedback", "*")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "colorlab") as gradebook:
        scores = {(submission.assignment.name, submission.student_id):
                  {grade.name: grade.auto_score for grade in submission.notebooks[0].grades}
                  for assignment in gradebook.assignments for submission in assignment.submissions}
    return course, scores


def points(name):
    """{graded cell: its points} of assignment ``name``, and the written answers' cells."""
    graded = [c.metadata["nbgrader"] for c in build.build(name).cells if c.metadata["nbgrader"]["grade"]]
    return {g["grade_id"]: g["points"] for g in graded}, {g["grade_id"] for g in graded if g["solution"]}


@pytest.mark.classroom
@pytest.mark.parametrize("name", build.ASSIGNMENTS)
def test_the_released_version_holds_no_solution(course, name):
    folder, _ = course
    released = nbformat.read(folder / "release" / name / f"{name}.ipynb", as_version=4)
    assert leaked(released, build.build(name)) == []


@pytest.mark.classroom
@pytest.mark.parametrize("name", build.ASSIGNMENTS)
def test_nbgrader_grades_the_mock_students(course, name):
    _, scores = course
    tasks, written = points(name)
    autograded = {task: p for task, p in tasks.items() if task not in written}
    # The solutions score every autograded point; the written answers wait for a teacher.
    assert scores[name, "mock-correct"] == {**autograded, **{task: None for task in written}}
    # Left blank, every task scores 0 (nbgrader gives 0 to an answer left as released).
    assert scores[name, "mock-blank"] == {task: 0 for task in tasks}
    # One plausible mistake costs that task's points, and only those.
    mistaken = build.WRONG[name][3]
    assert scores[name, "mock-wrong"] == {**scores[name, "mock-correct"], mistaken: 0}


@pytest.mark.classroom
def test_every_submission_gets_its_feedback(course):
    folder, scores = course
    for (name, student), grades in scores.items():
        total, most = sum(score or 0 for score in grades.values()), sum(points(name)[0].values())
        feedback = (folder / "feedback" / student / name / f"{name}.html").read_text()
        assert f"{name} (Score: {total:.1f} / {most:.1f})" in feedback
