"""The fixed teacher: a user's file (torch.export `.pt2`, TorchScript, ONNX) or hwkd's default.

- `base`: the `Teacher` record every command uses, and its check against the data;
- `files`: teachers from files, and the copy a run folder keeps;
- `default_net`: hwkd's default network and its recipes;
- `default_training`: the default teacher trained once per dataset and cached.
"""

from hwkd.teachers.base import Teacher, check_teacher
from hwkd.teachers.default_net import DefaultTeacher, TeacherRecipe, default_recipe
from hwkd.teachers.default_training import default_teacher, default_teacher_path, train_default_teacher
from hwkd.teachers.files import TEACHER_SUFFIXES, copy_into, load_run_teacher, load_teacher_file

__all__ = [
    "TEACHER_SUFFIXES", "DefaultTeacher", "Teacher", "TeacherRecipe", "check_teacher", "copy_into", "default_recipe",
    "default_teacher", "default_teacher_path", "load_run_teacher", "load_teacher_file", "train_default_teacher",
]
