"""Fuzz target for the open/read/list/verify path.

Each input damages a committed base archive (tests/fixtures/fuzz/base.cart.gz, written once by
`--make-base`; its content is a repeating pattern so it compresses to a few tens of KiB): bytes
written over its metadata pages (B-tree nodes, allocation map, chunk maps, overflow pages),
page 0 or, now and then, content pages; by default the damaged page's checksum is re-sealed, so
the hostile bytes get past the checksums into the structural checks and the engine. Some inputs
also cut the file short or extend it. Anything but a CorruptionError-family error (or correct
data) is a finding.

A finding is committed as tests/fixtures/fuzz/<name>.json: the byte ranges (offset, hex) that
turn the committed base into the failing image, and its length - committed bytes only, so a
change to the writer or to this target cannot quietly change what it tests.

    python tests/fuzz_archive.py -max_total_time=60 [corpus_dir]    (needs atheris)
    python tests/fuzz_archive.py --save NAME CRASH_INPUT "what it found"
    python tests/fuzz_archive.py --make-base                          (only for a new format)
    tests/test_fuzz.py runs it for a bounded time in the slow tier and replays every finding in
    every run.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import sys
import tempfile
import warnings

from cartridge._handle import engine

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import cartridge  # noqa: E402
from cartridge import format as F  # noqa: E402
from cartridge._core.checksum import seal_page, xxh3_64  # noqa: E402

FUZZ_DIR = os.path.join(HERE, "fixtures", "fuzz")
BASE_FILE = os.path.join(FUZZ_DIR, "base.cart.gz")
ALLOWED = (cartridge.CorruptionError, cartridge.NotACartridgeError,
           cartridge.UnsupportedVersionError)
_BASE: tuple[bytes, list[int], list[int], str] | None = None


def make_base(path: str) -> None:
    """The base archive: 40 small files and a 30-chunk file under a 600-byte key (overflow
    page, XMAP chain), content a pattern (compressible). File sizes follow the stream of the
    original runtime-built base, so its page layout - and the findings made on it - carry over."""
    rng = random.Random(1)
    with cartridge.open(path, "x") as c:
        for i in range(40):
            n = rng.choice([30, 900, 5000, 70_000])
            rng.randbytes(n)
            c.write(f"/d{i % 4}/f{i:02d}", (b"%d:" % i * (n // 2 + 1))[:n])
        c.write("/" + "k" * 250 + "/" + "l" * 250 + "/" + "m" * 100,
                bytes(range(256)) * (30 * 65536 // 256))


def base() -> tuple[bytes, list[int], list[int], str]:
    """The committed base image, its metadata and content page numbers, a scratch file path."""
    global _BASE
    if _BASE is None:
        with gzip.open(BASE_FILE, "rb") as f:
            img = f.read()
        d = tempfile.mkdtemp(prefix="cartridge-fuzz-")
        path = os.path.join(d, "case.cart")
        with open(path, "wb") as f:
            f.write(img)
        meta, content = set(), set()
        with cartridge.open(path, "r") as c:
            eng = engine(c)
            for tree in (eng.catalog, eng.allocmap):
                for pno, node in tree.pages():
                    meta.add(pno)
                    meta.update(node.ovf or ())
            for info in c.scan("/"):
                rec = eng.get(info.path.encode())
                if rec.storage == F.STORE_XMAP:
                    meta.update(eng.content.xmap_pages(rec))
                if rec.storage in (F.STORE_CHUNKS, F.STORE_XMAP):
                    content.update(int(s) for s in eng.content.chunk_map(rec, "")[:, 0])
        _BASE = (img, sorted(meta), sorted(content), path)
    return _BASE


def build(data: bytes) -> bytes:
    """The damaged archive an input describes.

    Byte 0 (flags): bits 0-2 = patches - 1; bit 3 = leave checksums broken; bit 4 = change the
    file's length (3 more bytes); bit 5 = patches may land on content pages. Each patch: page
    selector, u16 offset in the page, length selector, then the bytes."""
    img, meta, content, _ = base()
    img = bytearray(img)
    if not data:
        return bytes(img)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        out = data[pos:pos + n]
        pos += n
        return out

    flags = take(1)[0]
    for _ in range(1 + (flags & 7)):
        head = take(4)
        if len(head) < 4:
            break
        if head[0] % 8 == 0:
            page = 0
        elif flags & 32 and head[0] % 8 == 1:
            page = content[head[0] // 8 % len(content)]
        else:
            page = meta[head[0] % len(meta)]
        off = int.from_bytes(head[1:3], "little") % F.PAGE_SIZE
        patch = take(1 + head[3] % 24)
        at = page * F.PAGE_SIZE + off
        img[at:at + len(patch)] = patch[:F.PAGE_SIZE - off]
        if flags & 8 or page in content:   # leave the checksum broken now and then
            continue
        if page:
            sealed = bytearray(img[page * F.PAGE_SIZE:(page + 1) * F.PAGE_SIZE])
            seal_page(sealed)
            img[page * F.PAGE_SIZE:(page + 1) * F.PAGE_SIZE] = sealed
        else:                              # re-seal the header and both root slots
            span = F.FILE_HEADER_CSUM_SPAN
            img[span:span + 8] = xxh3_64(bytes(img[:span])).to_bytes(8, "little")
            for o in F.SLOT_OFFSETS:
                s = F.ROOT_SLOT_CSUM_SPAN
                img[o + s:o + s + 8] = xxh3_64(bytes(img[o:o + s])).to_bytes(8, "little")
    if flags & 16:                         # cut short or extend (with zeros or a pattern)
        b = take(3).ljust(3, b"\0")
        pages = int.from_bytes(b[:2], "little") % (len(img) // F.PAGE_SIZE + 16)
        n = pages * F.PAGE_SIZE + (b[2] * 16 if b[2] & 1 else 0)
        if n < len(img):
            del img[n:]
        else:
            img.extend(bytes([b[2]]) * (n - len(img)))
    return bytes(img)


def check_archive(path: str) -> None:
    """Open, list, read and verify: only CorruptionError-family errors may come out."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cartridge.open(path, "r") as c:
                for dirpath, _dirs, files in c.walk("/"):
                    c.listdir(dirpath)
                    for name in files:
                        p = cartridge.normalize_path(dirpath + "/" + name)
                        c.stat(p)
                        c.read(p)
                        c.read(p, offset=70_000, size=10)
                list(c.scan("/"))
                c.verify()
    except ALLOWED:
        pass


def check_image(img: bytes) -> None:
    path = base()[3]
    with open(path, "wb") as f:
        f.write(img)
    check_archive(path)


def one_input(data: bytes) -> None:
    check_image(build(data))


# -- findings: committed byte patches over the committed base ----------------------------------------
def diff(img: bytes) -> dict:
    """The byte ranges and length that turn the base into `img`."""
    b = base()[0]
    ranges, i, n = [], 0, min(len(b), len(img))
    while i < n:
        if img[i] == b[i]:
            i += 1
            continue
        j = i
        while j < n and (img[j] != b[j] or img[j:j + 8] != b[j:j + 8]):   # merge close ones
            j += 1
        ranges.append([i, img[i:j].hex()])
        i = j
    if len(img) > len(b):
        ranges.append([len(b), img[len(b):].hex()])
    return {"length": len(img), "patches": ranges}


def apply(finding: dict) -> bytes:
    """The damaged image a committed finding describes."""
    img = bytearray(base()[0])
    for at, hexbytes in finding["patches"]:
        data = bytes.fromhex(hexbytes)
        if len(img) < at + len(data):
            img.extend(bytes(at + len(data) - len(img)))
        img[at:at + len(data)] = data
    del img[finding["length"]:]
    return bytes(img)


def save_finding(name: str, img: bytes, note: str) -> str:
    out = os.path.join(FUZZ_DIR, f"{name}.json")
    finding = {"note": note, **diff(img)}
    assert apply(finding) == img
    with open(out, "w") as f:
        f.write("{\n")
        f.write(f' "note": {json.dumps(note)},\n "length": {len(img)},\n "patches": [\n')
        f.write(",\n".join(f"  {json.dumps(p)}" for p in finding["patches"]))
        f.write("\n ]\n}\n")
    assert apply(json.load(open(out))) == img
    return out


def main() -> None:
    if sys.argv[1:2] == ["--make-base"]:
        d = tempfile.mkdtemp(prefix="cartridge-fuzz-")
        make_base(os.path.join(d, "base.cart"))
        with open(os.path.join(d, "base.cart"), "rb") as f, gzip.open(BASE_FILE, "wb", 9) as g:
            g.write(f.read())
        print(f"wrote {BASE_FILE}")
        return
    if sys.argv[1:2] == ["--save"]:
        name, crash, note = sys.argv[2:5]
        print(save_finding(name, build(open(crash, "rb").read()), note))
        return
    import atheris

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
