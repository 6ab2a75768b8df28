"""docs/method.md's configuration tables against the headers: every public config struct has a table,
and each table lists exactly the struct's data members, so a field added to a struct fails here until
its row is written (and a removed one until its row goes).

  config_tables_check.py REPO_ROOT

A table is a heading "### `Name` (`shortcut/path.hpp`)" followed by a Markdown table whose first column
is the field in backticks. Which structs must have one: every top-level struct named *Config or *Options
in include/shortcut/{nn,train,train/objectives,cpu}, plus ParamGroup, plus every struct a heading names. The
struct is read from the header the heading names, so a struct that moves or splits needs only its
heading and rows updated."""
import glob
import os
import re
import sys

REQUIRED_EXTRA = {"ParamGroup"}
SEARCHED = ("nn", "train", "train/objectives", "cpu")
HEADING = re.compile(r"^### `(?:[\w:]+::)?(\w+)` \(`(shortcut/[\w/.]+\.hpp)`\)\s*$")
STRUCT = re.compile(r"^(?:struct|class) (\w+(?:Config|Options))\b[^;]*\{", re.M)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def struct_body(text, name):
    """The text between the braces of `struct name {` (top level or nested), or None."""
    m = re.search(r"\b(?:struct|class) " + re.escape(name) + r"\b[^;{]*\{", text)
    if not m:
        return None
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end():i - 1]


def split_top(s, seps):
    """Splits s at the characters in seps that lie outside (), [], {} and <>."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch in seps and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def data_members(body):
    """Names of the non-static data members declared directly in a struct body."""
    statements, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                # a brace initialiser ends here (its statement goes on to ';'); a function body or a
                # nested type ends its declaration, which is no data member
                if "(" in cur or re.search(r"\b(struct|class|enum|union)\b", cur):
                    cur = ""
                continue
        if depth == 0 and ch == ";":
            statements.append(cur.strip())
            cur = ""
        elif depth == 0:
            cur += ch
    names = []
    for st in statements:
        st = re.sub(r"^(public|private|protected)\s*:\s*", "", st)
        if not st or re.match(r"(static|using|typedef|friend|template|enum|struct|class)\b", st) or "operator" in st:
            continue
        first_eq = st.find("=")
        head = st if first_eq < 0 else st[:first_eq]
        if "(" in head:  # a function declaration
            continue
        for i, piece in enumerate(split_top(st, ",")):
            piece = piece.split("=")[0].strip()
            m = re.search(r"(\w+)\s*(\[[^\]]*\])?\s*$", piece)
            if m and (i > 0 or len(piece.split()) >= 2 or "<" in piece):
                names.append(m.group(1))
    return names


def tables(md):
    """{struct name: (header, [fields])} from the headings and their tables."""
    out, lines = {}, md.splitlines()
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if not m:
            continue
        fields, j = [], i + 1
        while j < len(lines) and not lines[j].startswith("|"):
            if lines[j].startswith("#"):
                break
            j += 1
        rows = []
        while j < len(lines) and lines[j].startswith("|"):
            rows.append(lines[j])
            j += 1
        for row in rows[2:]:  # after the header row and the |---| row
            cell = row.split("|")[1].strip()
            fm = re.fullmatch(r"`(\w+)`(?: \(.*\))?", cell)
            if fm:
                fields.append(fm.group(1))
        out[m.group(1)] = (m.group(2), fields, len(rows))
    return out


def main(root):
    errors = []
    md = open(os.path.join(root, "docs", "method.md"), encoding="utf-8").read()
    documented = tables(md)
    required = set(REQUIRED_EXTRA)
    for d in SEARCHED:
        for h in glob.glob(os.path.join(root, "include", "shortcut", d, "*.hpp")):
            required |= set(STRUCT.findall(strip_comments(open(h, encoding="utf-8").read())))
    for name in sorted(required - set(documented)):
        errors.append(f"docs/method.md has no table for {name} (a heading \"### `{name}` (`shortcut/....hpp`)\" "
                      "and a row per field)")
    checked = 0
    for name, (header, fields, nrows) in sorted(documented.items()):
        path = os.path.join(root, "include", header)
        if not os.path.exists(path):
            errors.append(f"{name}: the heading names {header}, which does not exist")
            continue
        body = struct_body(strip_comments(open(path, encoding="utf-8").read()), name)
        if body is None:
            errors.append(f"{name}: no struct {name} in {header}")
            continue
        members = data_members(body)
        if not members:
            errors.append(f"{name}: found no data members in {header} (has the struct's form changed?)")
        if nrows < 3:
            errors.append(f"{name}: the heading is followed by no table")
        for f in members:
            if f not in fields:
                errors.append(f"{name}::{f} ({header}) has no row in its docs/method.md table")
        for f in fields:
            if f not in members:
                errors.append(f"{name}: docs/method.md lists '{f}', which {header} does not declare")
        checked += 1
    for e in errors:
        print("FAIL:", e)
    print(f"{checked} config tables checked against their headers, {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
