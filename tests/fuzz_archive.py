"""Fuzz target for the open/read/list/verify path.

Each input patches a real archive: bytes written over its metadata pages (B-tree nodes,
allocation map, chunk maps, overflow pages) or page 0, and by default the damaged page's
checksum is re-sealed, so the hostile bytes get past the checksums into the structural checks
and the engine. Anything but a CorruptionError-family error (or correct data) is a finding.

    python tests/fuzz_archive.py -max_total_time=60 [corpus_dir]     (needs atheris)
    tests/test_fuzz.py runs it for a bounded time in the slow tier and replays
    tests/fixtures/fuzz/* (inputs that once failed) in every run.
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cartridge._core.checksum import seal_page, xxh3_64  # noqa: E402

import cartridge  # noqa: E402
from cartridge import format as F  # noqa: E402

ALLOWED = (cartridge.CorruptionError, cartridge.NotACartridgeError,
           cartridge.UnsupportedVersionError)
_BASE: tuple[bytes, list[int], str] | None = None


def base() -> tuple[bytes, list[int], str]:
    """A small archive with every kind of metadata page, its metadata page numbers, a scratch
    file path."""
    global _BASE
    if _BASE is None:
        d = tempfile.mkdtemp(prefix="cartridge-fuzz-")
        path = os.path.join(d, "base.cart")
        rng = random.Random(1)
        with cartridge.open(path, "w") as c:
            for i in range(40):
                c.write(f"/d{i % 4}/f{i:02d}", rng.randbytes(rng.choice([30, 900, 5000, 70_000])))
            c.write("/" + "k" * 250 + "/" + "l" * 250 + "/" + "m" * 100, rng.randbytes(30 * 65536))
            eng = c._eng
            meta = []
            for tree in (eng.catalog, eng.allocmap):
                for pno, node in tree.pages():
                    meta.append(pno)
                    meta.extend(node.ovf or ())
            for info in c.scan("/"):
                rec = eng.get(info.path.encode())
                if rec.storage == F.STORE_XMAP:
                    meta.extend(eng.content.xmap_pages(rec))
        _BASE = (open(path, "rb").read(), sorted(set(meta)), os.path.join(d, "case.cart"))
    return _BASE


def build(data: bytes) -> bytes:
    """The damaged archive an input describes."""
    img, meta, _ = base()
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
        page = 0 if head[0] % 8 == 0 else meta[head[0] % len(meta)]
        off = int.from_bytes(head[1:3], "little") % F.PAGE_SIZE
        patch = take(1 + head[3] % 24)
        at = page * F.PAGE_SIZE + off
        img[at:at + len(patch)] = patch[:F.PAGE_SIZE - off]
        if flags & 8:                      # leave the checksum broken now and then
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
    return bytes(img)


def check_archive(path: str) -> None:
    """Open, list, read and verify: only CorruptionError-family errors may come out."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cartridge.open(path, "r") as c:
                for dirpath, _dirs, files in c.walk("/"):
                    for name in files:
                        p = cartridge.normalize_path(dirpath + "/" + name)
                        c.stat(p)
                        c.read(p)
                        c.read(p, offset=70_000, size=10)
                list(c.scan("/"))
                c.verify()
    except ALLOWED:
        pass


def one_input(data: bytes) -> None:
    _, _, path = base()
    with open(path, "wb") as f:
        f.write(build(data))
    check_archive(path)


def main() -> None:
    import atheris

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
