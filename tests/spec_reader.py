"""An independent reader of .cart archives, written from docs/FORMAT.md alone: it imports
nothing from cartridge (only struct and the xxhash package) and returns every user file's
bytes of the newest commit. tests/test_spec_reader.py checks it against the fixtures of every
format version and against archives holding packs (FORMAT §14)."""
from __future__ import annotations

import struct

import xxhash

PAGE = 4096


class SpecError(Exception):
    pass


def xxh(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data)


class Reader:
    def __init__(self, path: str):
        with open(path, "rb") as f:
            self.img = f.read()
        if len(self.img) < PAGE or self.img[:8] != b"CART\x00\x01\x00\x00":
            raise SpecError("not a cartridge")
        if struct.unpack_from("<Q", self.img, 56)[0] != xxh(self.img[:56]):
            raise SpecError("header checksum")
        major, _minor, page_size = struct.unpack_from("<HHI", self.img, 8)
        if major != 1 or page_size != PAGE:
            raise SpecError("unsupported")
        self.root = self._root()

    # §2.2 / §2.3
    def _slot(self, off: int) -> dict | None:
        s = self.img[off:off + 256]
        magic = s[:8]
        if magic not in (b"CARTROOT", b"CARTSEAL") or struct.unpack_from("<Q", s, 248)[0] != xxh(s[:248]):
            return None
        gen, pc, croot, _ccount, cheight = struct.unpack_from("<QQQQI", s, 8)
        if not 1 <= gen < 1 << 48:
            return None
        slot = {"gen": gen, "page_count": pc, "catalog_root": croot, "catalog_height": cheight,
                "sealed": magic == b"CARTSEAL", "raw": s}
        if slot["sealed"]:
            n, zero, csum = struct.unpack_from("<IIQ", s, 104)
            if not 1 <= n <= 16 or zero:
                return None
            ext = [struct.unpack_from("<Q", s, 120 + 8 * i)[0] for i in range(n)]
            slot["seal"] = ([(e & ((1 << 48) - 1), e >> 48) for e in ext], csum)
        return slot

    def _seal_holds(self, slot: dict) -> bool:
        runs, csum = slot["seal"]
        data = b"".join(self.img[s * PAGE:(s + c) * PAGE] for s, c in runs)
        if any((s + c) * PAGE > len(self.img) for s, c in runs):
            return False
        return xxh(data) == csum

    def _root(self) -> dict:
        slots = [s for s in (self._slot(1024), self._slot(2048)) if s is not None]
        if not slots:
            raise SpecError("no valid root slot")
        slots.sort(key=lambda s: s["gen"], reverse=True)
        best = slots[0]
        if best["sealed"] and not self._seal_holds(best):
            if len(slots) < 2:
                raise SpecError("torn only commit")
            best = slots[1]
        return best

    # §1, §4
    def page(self, n: int) -> bytes:
        if n <= 0 or (n + 1) * PAGE > len(self.img):
            raise SpecError(f"page {n} outside the file")
        return self.img[n * PAGE:(n + 1) * PAGE]

    def meta(self, n: int, tag: bytes) -> bytes:
        p = self.page(n)
        if p[:4] != tag or struct.unpack_from("<Q", p, 8)[0] != n:
            raise SpecError(f"page {n}: tag or page_no")
        if struct.unpack_from("<Q", p, 16)[0] != xxh(p[:16] + b"\0" * 8 + p[24:]):
            raise SpecError(f"page {n}: checksum")
        return p

    def _cells(self, p: bytes):
        nkeys = struct.unpack_from("<H", p, 6)[0]
        for i in range(nkeys):
            off = struct.unpack_from("<H", p, 40 + 2 * i)[0]
            klen, vlen = struct.unpack_from("<HH", p, off)
            key = p[off + 4:off + 4 + min(klen, 512)]
            at = off + 4 + min(klen, 512)
            if klen > 512:
                ovfl = self.meta(struct.unpack_from("<Q", p, at)[0], b"OVFL")
                key += ovfl[40:40 + klen - 512]
                at += 8
            yield key, p[at:at + vlen]

    def items(self, root: int):
        if not root:
            return
        p = self.meta(root, b"BTLF") if self.page(root)[:4] == b"BTLF" else self.meta(root, b"BTIN")
        if p[:4] == b"BTLF":
            yield from self._cells(p)
            return
        for _key, value in self._cells(p):
            yield from self.items(struct.unpack("<Q", value)[0])
        right = struct.unpack_from("<Q", p, 32)[0]
        if right:
            yield from self.items(right)

    # §5
    def content(self, value: bytes, key: bytes) -> bytes:
        kind, storage, _r, _mode, size, _c, _m, csum = struct.unpack_from("<BBHIQqqQ", value)
        payload = value[40:]
        if kind != 1:
            raise SpecError("not a file")
        if storage == 0:
            return b""
        if storage == 1:
            data = payload
        elif storage in (2, 3):
            if storage == 2:
                entries = [struct.unpack_from("<QQ", payload, 16 * i)
                           for i in range(len(payload) // 16)]
            else:
                first, n_pages, _ = struct.unpack("<QII", payload)
                entries = []
                pno = first
                for _ in range(n_pages):
                    p = self.meta(pno, b"XMAP")
                    count = struct.unpack_from("<H", p, 6)[0]
                    entries += [struct.unpack_from("<QQ", p, 40 + 16 * i) for i in range(count)]
                    pno = struct.unpack_from("<Q", p, 24)[0]
            parts = []
            for i, (start, ccsum) in enumerate(entries):
                ln = min(65536, size - i * 65536)
                chunk = self.img[start * PAGE:start * PAGE + ln]
                if len(chunk) != ln or xxh(chunk) != ccsum:
                    raise SpecError(f"{key!r}: chunk {i}")
                parts.append(chunk)
            data = b"".join(parts)
            sums = [c for _, c in entries]
            whole = sums[0] if len(sums) == 1 else xxh(struct.pack(f"<{len(sums)}Q", *sums))
            if whole != csum:
                raise SpecError(f"{key!r}: file checksum")
            return data
        elif storage == 4:                                 # §14.1: packed
            pack_page, offset, reserved = struct.unpack("<QII", payload)
            if reserved or not size or offset + size > 65536 or not 1 <= pack_page < 1 << 48:
                raise SpecError(f"{key!r}: malformed packed record")
            entry = self.pack_table().get(pack_page)
            if entry is None or offset + size > entry[0] * PAGE:
                raise SpecError(f"{key!r}: packed file outside its pack")
            at = pack_page * PAGE + offset
            data = self.img[at:at + size]
            if len(data) != size:
                raise SpecError(f"{key!r}: pack outside the file")
        else:
            raise SpecError(f"{key!r}: storage {storage}")
        if xxh(data) != csum:
            raise SpecError(f"{key!r}: checksum")
        return data

    def files(self) -> dict[str, bytes]:
        out = {}
        for key, value in self.items(self.root["catalog_root"]):
            if key[:1] == b"\x00" or value[0] != 1:
                continue
            out[key.decode("utf-8")] = self.content(value, key)
        return out

    def pack_table(self) -> dict[int, tuple[int, int, int, int]]:
        """§14.2: pack page -> (pages, files, live bytes, dead bytes), checked."""
        cached = getattr(self, "_pack_table", None)
        if cached is not None:
            return cached
        out = {}
        end = 0
        for key, value in self.items(self.root["catalog_root"]):
            if key.startswith(b"\x00pack/"):
                (page,) = struct.unpack(">Q", key[6:])
                entry = struct.unpack("<IIQQ", self.content(value, key))
                pages, files, live, dead = entry
                if (not 1 <= pages <= 16 or files < 1 or live < files
                        or -(-(live + dead) // PAGE) != pages or page < end):
                    raise SpecError(f"{key!r}: pack-table entry")
                end = page + pages
                out[page] = entry
        self._pack_table = out
        return out
