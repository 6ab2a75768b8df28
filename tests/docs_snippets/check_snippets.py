#!/usr/bin/env python3
"""Every C++ block of README.md and docs/*.md must equal the marked region of a compiled file.

A block is preceded by `<!-- compiled: tests/docs_snippets/NAME.cpp -->`; that file holds the block's
text between `// [snippet begin]` and `// [snippet end]`, indented by the begin marker's indent
(stripped before comparing). The compiled files are built (and where they can, run) by CTest, so a
snippet that no longer matches the headers fails there, and one edited in the docs alone fails here.

Usage: check_snippets.py REPO_ROOT      exit 0 when every block matches its mirror, 1 otherwise.
"""
import difflib
import pathlib
import re
import sys

CPP_FENCE = re.compile(r"^```\s*(cpp|c\+\+|cxx|cc|cuda)\s*$", re.IGNORECASE)
MARKER = re.compile(r"^<!--\s*compiled:\s*(\S+)\s*-->\s*$")
BEGIN, END = "// [snippet begin]", "// [snippet end]"
MIRROR_DIR = "tests/docs_snippets"


def doc_blocks(path):
    """(fence line number, mirror path or None, block lines) for each C++ block of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        if CPP_FENCE.match(lines[i].strip()):
            start = i
            prev = lines[i - 1] if i > 0 else ""
            m = MARKER.match(prev.strip())
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            out.append((start + 1, m.group(1) if m else None, lines[i + 1:j]))
            i = j + 1
        else:
            i += 1
    return out


def mirror_region(path):
    """The snippet lines of a mirror file, indent stripped; raises ValueError saying what is wrong."""
    lines = path.read_text(encoding="utf-8").splitlines()
    begins = [n for n, l in enumerate(lines) if l.strip() == BEGIN]
    ends = [n for n, l in enumerate(lines) if l.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ValueError(f"needs exactly one '{BEGIN}' line followed by one '{END}' line")
    indent = lines[begins[0]][: len(lines[begins[0]]) - len(lines[begins[0]].lstrip())]
    region = []
    for n in range(begins[0] + 1, ends[0]):
        l = lines[n]
        if l.strip() and not l.startswith(indent):
            raise ValueError(f"line {n + 1} is indented less than the '{BEGIN}' marker")
        region.append(l[len(indent):] if l.strip() else "")
    return region


def check(root):
    root = pathlib.Path(root)
    docs = [root / "README.md"] + sorted((root / "docs").glob("*.md"))
    errors, used, blocks = [], set(), 0
    for doc in docs:
        if not doc.exists():
            continue
        rel = doc.relative_to(root)
        for line, mirror, text in doc_blocks(doc):
            blocks += 1
            where = f"{rel}:{line}"
            if mirror is None:
                errors.append(f"{where}: C++ block without a '<!-- compiled: {MIRROR_DIR}/NAME.cpp -->' line "
                              f"right above its fence (every C++ snippet is compiled by a test)")
                continue
            used.add(mirror)
            path = root / mirror
            if not path.is_file():
                errors.append(f"{where}: its mirror {mirror} does not exist")
                continue
            try:
                region = mirror_region(path)
            except ValueError as e:
                errors.append(f"{mirror}: {e}")
                continue
            body = [l.rstrip() for l in text]
            if body != [l.rstrip() for l in region]:
                diff = "\n".join(difflib.unified_diff(region, body, f"{mirror} (compiled)", f"{where} (docs)",
                                                      lineterm=""))
                errors.append(f"{where}: the block differs from the compiled region of {mirror}:\n{diff}")
    # a mirror no doc points at is a snippet that was deleted or renamed in the docs only
    for f in sorted((root / MIRROR_DIR).glob("*")):
        rel = f.relative_to(root).as_posix()
        if f.suffix in (".cpp", ".cu") and BEGIN in f.read_text(encoding="utf-8") and rel not in used:
            errors.append(f"{rel}: has a snippet region but no block in README.md or docs/*.md names it")
    return blocks, errors


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    blocks, errors = check(argv[1])
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} problem(s) in {blocks} C++ block(s); edit the docs and the mirror together")
        return 1
    print(f"{blocks} C++ block(s), each equal to its compiled mirror")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
