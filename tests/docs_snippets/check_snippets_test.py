#!/usr/bin/env python3
"""The checker itself: it passes a matching tree and fails each kind of drift (run by CTest)."""
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import check_snippets  # noqa: E402

MIRROR = "// header\nint main() {\n  // [snippet begin]\n  int x = 1;\n\n  return x;\n  // [snippet end]\n}\n"
DOC = "# t\n<!-- compiled: tests/docs_snippets/a.cpp -->\n```cpp\nint x = 1;\n\nreturn x;\n```\n"


def run(doc, mirror=MIRROR, extra=None):
    with tempfile.TemporaryDirectory() as d:
        root = pathlib.Path(d)
        (root / "docs").mkdir()
        (root / "tests/docs_snippets").mkdir(parents=True)
        (root / "README.md").write_text("")
        (root / "docs/x.md").write_text(doc)
        if mirror is not None:
            (root / "tests/docs_snippets/a.cpp").write_text(mirror)
        for name, text in (extra or {}).items():
            (root / name).write_text(text)
        return check_snippets.check(root)


def expect(what, result, blocks, needle):
    n, errors = result
    text = "\n".join(errors)
    ok = n == blocks and (needle in text if needle else not errors)
    print(("ok   " if ok else "FAIL ") + what + ("" if ok else f": {n} blocks, errors:\n{text}"))
    return ok


results = [
    expect("a block equal to its mirror passes", run(DOC), 1, None),
    expect("one character changed in the docs fails, with a diff and the line",
           run(DOC.replace("x = 1", "x = 2")), 1, "docs/x.md:3: the block differs"),
    expect("the diff shows both lines", run(DOC.replace("x = 1", "x = 2")), 1, "+int x = 2;"),
    expect("a ```c++ block without a marker fails", run("```c++\nint y;\n```\n", None), 1, "without a"),
    expect("a marker naming a missing file fails", run(DOC, None), 1, "does not exist"),
    expect("a mirror without markers fails", run(DOC, "int main() {}\n"), 1, "needs exactly one"),
    expect("a mirror that no doc names fails", run(DOC, MIRROR, {"tests/docs_snippets/b.cpp": MIRROR}), 1,
           "b.cpp: has a snippet region but no block"),
    expect("shell and python blocks are not checked", run(DOC + "```sh\nls\n```\n```python\nx\n```\n"), 1, None),
]
sys.exit(0 if all(results) else 1)
