"""Tools know methods only through the registry: no registered trainer name in a tool's source.

A method says what tools need (axes, needs and producers, evaluation-only, table labels, folder
variants) on its trainer class (engine/describe.py), so adding or renaming a method never
touches a tool. Comments, docstrings and help texts count: they go stale the same way. The one
exception is a usage example in a module docstring (an indented `python ...` command line and
its continuation lines), which is kept runnable.
"""
import ast
import glob
import os
import re

from engine.describe import methods

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOOL_FILES = ["sweep.py", "study.py", "parse_test_res.py", "studies/*.py", "analysis/*.py",
              "engine/layout.py"]
# Top-level shell drivers join this list once they ask `python -m engine.describe` (scripts/).
SHELL_TOOLS = []


def tool_files():
    return sorted({p for pattern in TOOL_FILES + SHELL_TOOLS for p in glob.glob(os.path.join(REPO, pattern))})


def docstring_examples(path):
    """Line numbers of the indented example lines of a Python file's module docstring."""
    if not path.endswith(".py"):
        return set()
    tree = ast.parse(open(path, encoding="utf-8").read())
    first = tree.body[0] if tree.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return set()
    text = open(path, encoding="utf-8").read().splitlines()
    examples, continued = set(), False
    for n in range(first.lineno, first.end_lineno + 1):
        line = text[n - 1]
        if continued or line.startswith("    python "):
            examples.add(n)
        continued = n in examples and line.rstrip().endswith("\\")
    return examples


def hits(path, names):
    pattern = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
                         + r")(?![A-Za-z0-9_])")
    allowed = docstring_examples(path)
    out = []
    for n, line in enumerate(open(path, encoding="utf-8").read().splitlines(), 1):
        if n not in allowed:
            out += [f"{os.path.relpath(path, REPO)}:{n}: {m.group(1)}: {line.strip()}" for m in pattern.finditer(line)]
    return out


def test_no_tool_names_a_method():
    names = methods()
    assert names and tool_files()
    found = [h for path in tool_files() for h in hits(path, names)]
    assert found == [], "\n".join(found)


def test_the_check_finds_a_name_in_code_and_comments(tmp_path):
    path = tmp_path / "tool.py"
    path.write_text('"""A tool.\n\n    python tool.py --trainer CoOp\n"""\nx = "CoOp"  # CoOp\ny = "CoOpX"\n')
    assert [h.split(": ", 2)[1] for h in hits(str(path), ["CoOp"])] == ["CoOp", "CoOp"]
