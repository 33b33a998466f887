# nbgrader's settings for this course: nbgrader reads this file from the folder it runs in, classroom/.
# The course folders are nbgrader's defaults, in this folder: source/ (the instructor's versions, generated
# by build.py from sources/), release/ (the student versions), submitted/, autograded/, feedback/, and the
# gradebook, gradebook.db. Every setting: https://nbgrader.readthedocs.io/en/stable/configuration/config_options.html
c = get_config()  # noqa: F821 (nbgrader defines it when it reads this file)

c.CourseDirectory.course_id = "colorlab"  # the name students fetch and submit under, on a JupyterHub

# Autograding runs each notebook top to bottom. nbgrader's default of 30 s per cell is too short for a cell
# that imports TensorFlow or trains on a busy 2-core CPU; no cell here needs more than a minute.
c.Execute.timeout = 300

