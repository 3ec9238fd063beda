"""The docs say what the code does (issue 17, item 4): docs/GUIDE.md names every public name of
the API and every command, the --json keys the CLI prints, links resolve, and the statements
an independent reader of docs/FORMAT.md asked for hold against the code."""
from __future__ import annotations

import argparse
import os
import re
import struct

import pytest

import cartridge
from cartridge import records
from cartridge.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


GUIDE = _read("docs", "GUIDE.md")
FORMAT = " ".join(_read("docs", "FORMAT.md").split())        # line breaks as spaces
CODE_SPANS = " ".join(re.findall(r"`([^`\n]+)`", GUIDE))


def test_guide_names_every_public_name():
    missing = [n for n in cartridge.__all__ if not re.search(rf"\b{re.escape(n)}\b", CODE_SPANS)]
    assert not missing, f"docs/GUIDE.md does not mention {missing}"


def test_guide_names_every_public_method_of_cartridge():
    names = [n for n in dir(cartridge.Cartridge) if not n.startswith("_")]
    assert {"write", "read", "verify", "sqlite", "set_policy"} <= set(names)
    missing = [n for n in names if f"cart.{n}" not in CODE_SPANS]
    assert not missing, f"docs/GUIDE.md does not mention {missing} (as cart.NAME)"


def _commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))
            return
    yield prefix


def test_guide_names_every_command():
    section = GUIDE[GUIDE.index("## 3. The command line"):GUIDE.index("## 4. Security model")]
    for words in _commands(build_parser()):
        top = words[0]
        assert f"`cartridge {top}" in section or f", `{top} " in section, words
        if len(words) > 1:                      # policy set|get|ls|rm|check, snapshot ..., engram ...
            row = section.split(f"`cartridge {top} ")[1].split("`")[0]
            assert words[1] in row.split()[0].replace("\\|", "|").split("|"), words


def test_guide_lists_the_json_keys_the_cli_prints():
    from test_cli_ux import ENTRY_KEYS, JSON_KEYS

    table = GUIDE[GUIDE.index("### `--json` documents"):GUIDE.index("### Adding a command")]
    rows = {name: next(line for line in table.splitlines() if line.startswith(f"| `{name} --json`"))
            for name in ("ls", "stat", "verify", "du", "policy check", "policy ls")}
    assert "the keys of `ls --json`" in rows["stat"]
    rows["stat"] = rows["ls"]
    rows["info"] = GUIDE[GUIDE.index("| `cart.info()` |"):].split("\n")[0]   # the table points there
    for name, keys in {**JSON_KEYS, "ls": ENTRY_KEYS}.items():
        missing = [k for k in keys if f"`{k}`" not in rows[name]]
        assert not missing, (name, missing)


def _slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


@pytest.mark.parametrize("doc", ["README.md", "docs/GUIDE.md", "docs/FORMAT.md", "docs/IAM.md",
                                 "docs/SQLITE.md", "docs/ARCHITECTURE.md"])
def test_relative_links_resolve(doc):
    text = _read(doc)
    base = os.path.dirname(os.path.join(ROOT, doc))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(base, path)) if path else os.path.join(ROOT, doc)
        assert os.path.exists(full), f"{doc}: broken link {target}"
        if anchor and full.endswith(".md"):
            with open(full, encoding="utf-8") as f:
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", f.read(), re.M)}
            assert anchor in slugs, f"{doc}: no heading for #{anchor} in {path or doc}"


# -- FORMAT.md: the gaps an independent reader found, checked against the code -------------------
def test_checksum_fields_are_little_endian_xxh3(tmp_path):
    xxhash = pytest.importorskip("xxhash")
    assert "little-endian u64" in FORMAT and "big-endian" in FORMAT
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "x") as c:
        c.write("/a", b"x" * 5000)
    with open(path, "rb") as f:
        page0 = f.read(4096)
    header = page0[:64]
    stored = header[56:64]
    assert stored == struct.pack("<Q", xxhash.xxh3_64_intdigest(header[:56]))
    assert stored != xxhash.xxh3_64(header[:56]).digest()        # digest() is big-endian
    assert cartridge.content_checksum(b"") == xxhash.xxh3_64_hexdigest(b"") == "2d06800538d394c2"


def test_inline_limit_for_long_keys():
    assert "exactly 448 bytes for every key over 512 bytes" in FORMAT
    assert "`968 - key_len`" in FORMAT
    assert {records.max_payload(n) for n in (513, 600, 4096)} == {448}
    assert records.max_payload(20) == 968 - 20


def test_del_and_c1_are_not_path_characters():
    assert "U+007F (**DEL**)" in FORMAT
    for bad in ("/a\x7fb", "/a\x85b", "/a\x1fb"):
        with pytest.raises(cartridge.InvalidPathError):
            cartridge.normalize_path(bad)
    assert cartridge.normalize_path("/a\u200bb") == "/a\u200bb"     # format characters are legal


def test_timestamps_are_ns_since_the_epoch_and_may_be_negative(tmp_path):
    assert "nanoseconds since the Unix epoch" in FORMAT
    with cartridge.open(str(tmp_path / "a.cart"), "x") as c:
        c.write("/old", b"x", mtime=-86400)
        assert c.stat("/old").mtime == -86400.0
        c.write("/new", b"x", mtime=1_700_000_000.5)
        assert c.stat("/new").mtime == 1_700_000_000.5


def test_format_answers_the_reader_questions():
    for phrase in ("The generation it falls back to must be pinned too", "`<database file>-wal`",
                   "inclusive at both ends", "half-open", "Unused bytes of a node are unspecified",
                   "The rest of a chunk's last page is unspecified"):
        assert phrase in FORMAT, phrase
