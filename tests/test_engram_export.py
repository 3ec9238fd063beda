"""Cartridge -> Engram -> cartridge: export_engram (pinned state, signed manifest, cartridge.json,
SQLite images, verified atomic output, IAM) and import_engram (one transaction, exact metadata,
signature required with verify_key, nothing written on failure)."""
from __future__ import annotations

import json
import os
import sqlite3
import struct

import pytest

pytest.importorskip("lz4", reason="the engram extra (lz4) is not installed")
pytest.importorskip("zstandard", reason="the engram extra (zstandard) is not installed")
pytest.importorskip("cryptography", reason="the engram extra (cryptography) is not installed")

import cartridge
from cartridge import _handle as H
from cartridge import engram
from cartridge.engram import crypto
from cartridge.engram import manifest as MF
from cartridge.errors import (
    AccessDeniedError,
    CorruptionError,
    DecryptionError,
    InvalidPathError,
    PathNotDirectoryError,
    SignatureError,
)

SEED = bytes(range(32))
PUB = crypto.public_raw(crypto.load_private_key(SEED))
KEY = b"\x42" * 32
POLICY = {"Version": "2012-10-17",
          "Statement": [{"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/pub/*"}]}



def stdlib_sqlite(image: bytes, tmp_path) -> sqlite3.Connection:
    """The stdlib sqlite3 on a database image: deserialize() (Python 3.11+), else a file."""
    if hasattr(sqlite3.Connection, "deserialize"):
        con = sqlite3.connect(":memory:")
        con.deserialize(image)
        return con
    path = tmp_path / "stdlib-copy.db"
    path.write_bytes(image)
    return sqlite3.connect(str(path))

def make_cart(path) -> dict:
    """An archive with a bit of everything; returns its expected state."""
    with cartridge.open(path, "w", sync="off") as c:
        c.write("/docs/readme.md", b"# hello\n" * 700, mode=0o600, mtime=1_600_000_000)
        c.write("/docs/tiny.txt", b"t", mtime=1_600_000_000.123456789)
        c.write("/bin/tool", bytes(range(256)) * 9000, mode=0o755)          # > 1 MiB: streamed
        c.write("/data/empty", b"")
        c.write("/data/\u00e9t\u00e9 \U0001f600.json", json.dumps({"k": list(range(999))}).encode())
        c.write("/deep/" + "/".join("d" * 10 for _ in range(20)) + "/leaf", b"leaf")
        c.mkdir("/empty/dir", parents=True)
        c.set_policy("readers", POLICY)
        return state(c)


def state(c) -> dict:
    eng = H.ready(c)
    files = {}
    for info in c.scan("/"):
        rec = eng.get(info.path.encode())
        files[info.path] = (c.read(info.path), info.mode, rec.mtime_ns)
    dirs = sorted(d for d, _subdirs, names in c.walk("/") if not names and not _subdirs
                  and d != "/")
    return {"files": files, "policies": c.policies(), "dirs": dirs}


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "src.cart"
    return p, make_cart(p)


@pytest.mark.parametrize("compression", ["auto", "none", "lz4", "zstd"])
@pytest.mark.parametrize("encryption", [None, "archive", "per-file"])
def test_round_trip_exact(src, tmp_path, compression, encryption):
    path, want = src
    key = KEY if encryption else None
    out = tmp_path / "out.eng"
    with cartridge.open(path) as c:
        rep = c.export_engram(out, signing_key=SEED, signer="CI", compression=compression,
                              encryption=encryption, key=key)
    assert rep.ok and rep.signed and rep.trusted
    with engram.open(out, key=key) as r:
        names = r.namelist()
        assert names[-2:] == ["cartridge.json", "manifest.json"]
        # in path order, small (batched on worker threads) and large (streamed) files alike
        assert names[:-2] == [p[1:] for p in sorted(want["files"], key=str.encode)]
        m = r.manifest()
        assert m["signatures"][0]["signer"] == "CI"
        assert {f["path"] for f in m["files"]} == set(names) - {"manifest.json"}
        e = r.getinfo("docs/readme.md")
        assert e.mtime == 1_600_000_000
        if compression != "auto":
            assert {i.method for i in r.infolist() if i.size > 5000} == {compression}
    dest = tmp_path / "back.cart"
    res = cartridge.import_engram(out, dest, verify_key=PUB, key=key)
    assert res["files"] == len(want["files"]) and res["policies"] == 1
    with cartridge.open(dest) as c:
        assert state(c) == want


def test_export_streams_and_progress(src, tmp_path):
    path, want = src
    seen = []
    with cartridge.open(path) as c:
        c.export_engram(tmp_path / "o.eng", progress=lambda d, t, p: seen.append((d, t, p)))
    total = sum(len(v[0]) for v in want["files"].values())
    assert seen[-1][:2] == (total, total)
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)


def test_unsigned_export_and_plain_import(src, tmp_path):
    path, want = src
    with cartridge.open(path) as c:
        rep = c.export_engram(tmp_path / "o.eng")
    assert rep.ok and not rep.signed and rep.trusted is None
    cartridge.import_engram(tmp_path / "o.eng", tmp_path / "b.cart")
    with cartridge.open(tmp_path / "b.cart") as c:
        assert state(c) == want
    with pytest.raises(SignatureError):
        cartridge.import_engram(tmp_path / "o.eng", tmp_path / "c.cart", verify_key=PUB)


def test_include_prefixes(src, tmp_path):
    path, _ = src
    with cartridge.open(path) as c:
        c.export_engram(tmp_path / "o.eng", include=["/docs", "/bin/"])
    with engram.open(tmp_path / "o.eng") as r:
        assert sorted(r.namelist()) == ["bin/tool", "cartridge.json", "docs/readme.md",
                                        "docs/tiny.txt", "manifest.json"]


def test_manifest_overrides(src, tmp_path):
    path, _ = src
    with cartridge.open(path) as c:
        c.export_engram(tmp_path / "o.eng", manifest={"id": "rel", "name": "Release",
                                                      "version": "2.1.0", "license": "MIT",
                                                      "tags": ["a"], "description": "d"})
        with pytest.raises(ValueError, match="unknown|not"):
            c.export_engram(tmp_path / "x.eng", manifest={"extra": 1})
        for bad in ({"created": "yesterday"}, {"tags": [1]}, {"author": {"email": "x"}},
                    {"id": 5}):
            with pytest.raises(ValueError, match="manifest="):
                c.export_engram(tmp_path / "x.eng", manifest=bad)
        c.export_engram(tmp_path / "p.eng", manifest={"author": {"name": "A", "email": "a@b"}})
    assert not (tmp_path / "x.eng").exists()
    with engram.open(tmp_path / "o.eng") as r:
        m = r.manifest()
    assert (m["id"], m["name"], m["metadata"]["version"], m["metadata"]["license"]) == \
        ("rel", "Release", "2.1.0", "MIT")


# -- tampering ----------------------------------------------------------------------------------
def _signed(src, tmp_path):
    path, _ = src
    out = tmp_path / "s.eng"
    with cartridge.open(path) as c:
        c.export_engram(out, signing_key=SEED)
    return out


def _rewrite_member(raw: bytes, r, name: str, new: bytes) -> bytes:
    e = r.getinfo(name)
    start = e.offset + 41 + len(name.encode())
    assert len(new) == e.size and e.method == "none"
    return raw[:start] + new + raw[start + e.size:]


def test_tampered_manifest_detected(src, tmp_path):
    out = _signed(src, tmp_path)
    raw = out.read_bytes()
    with engram.open(out) as r:
        m = r.read("manifest.json")
        forged = m.replace(b'"version": "1.0.0"', b'"version": "9.9.9"')
        assert forged != m
        # keep the CRCs right, so only the signature can tell
        bad = _rewrite_member(raw, r, "manifest.json", forged)
        e = r.getinfo("manifest.json")
    import zlib
    bad = bad.replace(struct.pack("<I", e.crc), struct.pack("<I", zlib.crc32(forged)))
    out.write_bytes(bad)
    with engram.open(out) as r:
        rep = r.verify(public_keys=[PUB])
    assert not rep.ok and not rep.signed and rep.trusted is False
    with pytest.raises(SignatureError):
        cartridge.import_engram(out, tmp_path / "n.cart", verify_key=PUB)
    assert not (tmp_path / "n.cart").exists() or _empty(tmp_path / "n.cart")


def _empty(p) -> bool:
    """Nothing was imported: no archive was created, or it holds nothing."""
    if not os.path.exists(p):
        return True
    with cartridge.open(p) as c:
        return not list(c.scan("/")) and not c.policies()


def test_tampered_payload_detected(src, tmp_path):
    out = _signed(src, tmp_path)
    raw = bytearray(out.read_bytes())
    with engram.open(out) as r:
        e = r.getinfo("docs/tiny.txt")
    raw[e.offset + 41 + len("docs/tiny.txt")] ^= 1
    out.write_bytes(bytes(raw))
    with engram.open(out) as r:
        rep = r.verify(public_keys=[PUB])
        assert not rep.ok and any("CRC" in p for p in rep.problems)
    with pytest.raises(CorruptionError):
        cartridge.import_engram(out, tmp_path / "n.cart", verify_key=PUB)
    with pytest.raises(CorruptionError):
        cartridge.import_engram(out, tmp_path / "m.cart")
    assert not (tmp_path / "m.cart").exists()           # the archive it created is removed
    with cartridge.open(tmp_path / "k.cart", "w") as c:
        c.write("/keep", b"1")
    with pytest.raises(CorruptionError):
        cartridge.import_engram(out, tmp_path / "k.cart")
    with cartridge.open(tmp_path / "k.cart") as c:      # an existing one is kept, unchanged
        assert [i.path for i in c.scan("/")] == ["/keep"]


def test_tampered_content_with_matching_crc_caught_by_manifest(src, tmp_path):
    """Replace a member's bytes AND its CRCs: only the manifest's SHA-256 can tell."""
    out = _signed(src, tmp_path)
    raw = out.read_bytes()
    import zlib
    with engram.open(out) as r:
        e = r.getinfo("docs/tiny.txt")
        bad = _rewrite_member(raw, r, "docs/tiny.txt", b"X")
    bad = bad.replace(struct.pack("<I", e.crc), struct.pack("<I", zlib.crc32(b"X")))
    out.write_bytes(bad)
    with engram.open(out) as r:
        assert r.read("docs/tiny.txt") == b"X"
        rep = r.verify(public_keys=[PUB])
        assert not rep.ok and rep.signed          # the signature is fine; the content is not
        assert any("manifest" in p for p in rep.problems)
    with pytest.raises(CorruptionError):
        cartridge.import_engram(out, tmp_path / "n.cart", verify_key=PUB)
    with pytest.raises(CorruptionError):
        cartridge.import_engram(out, tmp_path / "m.cart")     # the manifest is checked anyway
    assert _empty(tmp_path / "m.cart")


def test_tampered_cent_detected(src, tmp_path):
    out = _signed(src, tmp_path)
    raw = bytearray(out.read_bytes())
    cd = struct.unpack_from("<Q", raw, 16)[0]
    raw[cd + 28] ^= 0xFF                                      # the first CENT's CRC
    out.write_bytes(bytes(raw))
    with engram.open(out) as r:
        assert not r.verify().ok


def test_tampered_signature_detected(src, tmp_path):
    out = _signed(src, tmp_path)
    raw = out.read_bytes()
    with engram.open(out) as r:
        m = r.read("manifest.json")
        sig = r.manifest()["signatures"][0]["signature"]
        flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
        bad = _rewrite_member(raw, r, "manifest.json", m.replace(sig.encode(), flipped.encode()))
        e = r.getinfo("manifest.json")
    import zlib
    bad = bad.replace(struct.pack("<I", e.crc),
                      struct.pack("<I", zlib.crc32(m.replace(sig.encode(), flipped.encode()))))
    out.write_bytes(bad)
    with engram.open(out) as r:
        rep = r.verify()
        assert not rep.ok and rep.signatures[0]["valid"] is False


def test_untrusted_key_refused(src, tmp_path):
    out = _signed(src, tmp_path)
    other = crypto.public_raw(crypto.new_private_key())
    with engram.open(out) as r:
        rep = r.verify(public_keys=[other])
        assert rep.signed and rep.trusted is False and not rep.ok
    with pytest.raises(SignatureError):
        cartridge.import_engram(out, tmp_path / "n.cart", verify_key=other)


# -- refusals leave nothing behind ------------------------------------------------------------
def test_reserved_and_long_names_refused_before_writing(tmp_path):
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write("/manifest.json", b"{}")
        with pytest.raises(InvalidPathError, match="manifest.json"):
            c.export_engram(tmp_path / "o.eng")
        c.delete("/manifest.json")
        c.write("/" + "/".join(["x" * 200, "y" * 100]), b"1")
        with pytest.raises(InvalidPathError, match="255"):
            c.export_engram(tmp_path / "o.eng")
    assert os.listdir(tmp_path) == ["a.cart"]


def test_failed_verification_removes_output(src, tmp_path, monkeypatch):
    path, _ = src
    (tmp_path / "o.eng").write_bytes(b"previous")

    def broken(self, public_keys=None):
        return engram.EngramReport(False, ["simulated mismatch"], 0, 0, None, False)
    monkeypatch.setattr(engram.EngramReader, "verify", broken)
    with cartridge.open(path) as c, pytest.raises(CorruptionError, match="simulated"):
        c.export_engram(tmp_path / "o.eng")
    assert (tmp_path / "o.eng").read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["o.eng", "src.cart"]
    with cartridge.open(path) as c:
        assert c.export_engram(tmp_path / "o.eng", verify=False) is None
    monkeypatch.undo()
    with engram.open(tmp_path / "o.eng") as r:
        assert r.verify().ok


def test_export_argument_checks(src, tmp_path):
    path, _ = src
    with cartridge.open(path) as c:
        for kw, exc in [({"compression": "brotli"}, ValueError),
                        ({"encryption": "archive"}, ValueError),
                        ({"encryption": "archive", "key": b"short"}, ValueError),
                        ({"signing_key": b"short"}, ValueError),
                        ({"progress": 3}, TypeError), ({"include": [3]}, TypeError),
                        ({"include": "/../x"}, InvalidPathError)]:
            with pytest.raises(exc):
                c.export_engram(tmp_path / "o.eng", **kw)
        os.mkdir(tmp_path / "adir")
        with pytest.raises(cartridge.PathIsDirectoryError):
            c.export_engram(tmp_path / "adir")
    assert sorted(os.listdir(tmp_path)) == ["adir", "src.cart"]


def test_export_over_the_archive_itself_refused(tmp_path):
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        c.write("/a", b"1")
        with pytest.raises(InvalidPathError, match="being exported"):
            c.export_engram(p)
        os.link(p, tmp_path / "hard.cart")
        with pytest.raises(InvalidPathError):
            c.export_engram(tmp_path / "hard.cart")
    with cartridge.open(p) as c:
        assert c.read("/a") == b"1"


def test_export_inside_transaction_refused(tmp_path):
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write("/a", b"1")
        with c.transaction(), pytest.raises(cartridge.CartridgeError, match="transaction"):
            c.export_engram(tmp_path / "o.eng")


# -- one pinned state --------------------------------------------------------------------------
def test_export_pins_one_committed_state(tmp_path):
    """A reader exports while another handle (as another process would: OFD locks) commits
    changes between every file: the Engram holds only the state the export started from."""
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        for i in range(20):
            c.write(f"/f{i:02d}", f"v1-{i}".encode() * 100)
    writer = cartridge.open(p, "a")
    reader = cartridge.open(p, "r")
    n = [0]

    def meddle(done, total, path):
        n[0] += 1
        writer.write_many([(f"/f{i:02d}", f"v2-{i}".encode()) for i in range(20)])
        writer.delete("/f19") if writer.exists("/f19") else None
        writer.write(f"/new{n[0]}", b"late")
    try:
        reader.export_engram(tmp_path / "o.eng", progress=meddle)
    finally:
        writer.close()
        reader.close()
    with engram.open(tmp_path / "o.eng") as r:
        assert sorted(r.namelist()) == sorted([f"f{i:02d}" for i in range(20)]
                                              + ["cartridge.json", "manifest.json"])
        for i in range(20):
            assert r.read(f"f{i:02d}") == f"v1-{i}".encode() * 100


# -- SQLite members ----------------------------------------------------------------------------
def test_sqlite_member_exports_as_rollback_image(tmp_path):
    """A WAL database whose committed pages are partly in its -wal member: exported as one
    rollback-mode image (SQLite's own backup), the -wal left out."""
    local = tmp_path / "w.db"
    con = sqlite3.connect(local)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t(x)")
    con.execute("INSERT INTO t VALUES (1), (2), (3)")
    con.commit()
    db, wal = local.read_bytes(), (tmp_path / "w.db-wal").read_bytes()   # copied while open
    con.close()
    assert len(wal) > 0
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        c.write("/db/app.db", db)
        c.write("/db/app.db-wal", wal)
        c.write("/db/plain.db", b"")                        # not a database: a plain member
        c.export_engram(tmp_path / "o.eng")
        conn = c.sqlite("/db/app.db")
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("SELECT count(*) FROM t").fetchall()   # holds the WAL database
        with pytest.raises(cartridge.LockedError):
            c.export_engram(tmp_path / "busy.eng")
        conn.close()
    assert not (tmp_path / "busy.eng").exists()
    with engram.open(tmp_path / "o.eng") as r:
        image = r.read("db/app.db")
        assert image[18:20] == b"\x01\x01"
        assert sorted(r.namelist()) == ["cartridge.json", "db/app.db", "db/plain.db",
                                        "manifest.json"]
        con = stdlib_sqlite(image, tmp_path)
        assert con.execute("SELECT sum(x) FROM t").fetchone() == (6,)
        assert r.sqlite("db/app.db").execute("SELECT count(*) FROM t").fetchone() == (3,)
    cartridge.import_engram(tmp_path / "o.eng", tmp_path / "b.cart")
    with cartridge.open(tmp_path / "b.cart", "a") as c2:
        assert c2.sqlite("/db/app.db").execute("SELECT sum(x) FROM t").fetchone() == (6,)


def test_sqlite_member_without_wal_streams_patched(tmp_path):
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        conn = c.sqlite("/app.sqlite")
        conn.execute("CREATE TABLE t(x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
        conn.close()
        c.export_engram(tmp_path / "o.eng")
    with engram.open(tmp_path / "o.eng") as r:
        assert r.read("app.sqlite")[18:20] == b"\x01\x01"
        assert r.sqlite("app.sqlite").execute("SELECT count(*) FROM t").fetchone() == (1000,)


# -- import ------------------------------------------------------------------------------------
def test_import_foreign_engram_uses_loca_mtimes(tmp_path):
    from cartridge.engram import EngramWriter
    with EngramWriter(tmp_path / "f.eng", mtime=1_700_000_000) as w:
        w.add("file1.txt", b"First file")
        w.add("dir/file3.txt", b"Third file in directory")
    res = cartridge.import_engram(tmp_path / "f.eng", tmp_path / "b.cart")
    assert res == {"files": 2, "bytes": 33, "policies": 0, "dirs": 0}
    with cartridge.open(tmp_path / "b.cart") as c:
        assert c.read("/dir/file3.txt") == b"Third file in directory"
        assert c.stat("/file1.txt").mtime == 1_700_000_000


def test_import_is_one_transaction(tmp_path):
    """The second member cannot land (a file is in the way): nothing of the import stays."""
    from cartridge.engram import EngramWriter
    with EngramWriter(tmp_path / "f.eng") as w:
        w.add("a.txt", b"new a")
        w.add("block/inner.txt", b"x")
    with cartridge.open(tmp_path / "b.cart", "w") as c:
        c.write("/a.txt", b"old a")
        c.write("/block", b"a file")
        with pytest.raises(PathNotDirectoryError):
            cartridge.import_engram(tmp_path / "f.eng", c)
        assert c.read("/a.txt") == b"old a" and not c.exists("/block/inner.txt")
        c.write("/after", b"the handle still works")


def test_import_encrypted_needs_key(src, tmp_path):
    path, _ = src
    with cartridge.open(path) as c:
        c.export_engram(tmp_path / "o.eng", encryption="archive", key=KEY)
    with pytest.raises(DecryptionError):
        cartridge.import_engram(tmp_path / "o.eng", tmp_path / "b.cart")
    with pytest.raises(DecryptionError):
        cartridge.import_engram(tmp_path / "o.eng", tmp_path / "b.cart", key=b"\x99" * 32)
    assert not (tmp_path / "b.cart").exists()


def test_import_hostile_cartridge_json(tmp_path):
    from cartridge.engram import EngramWriter
    for doc in [{"format": "cartridge-engram/1", "files": {"a.txt": {"mode": 0o77777,
                                                                       "mtime_ns": 0}}},
                {"format": "cartridge-engram/1", "files": {"a.txt": {"mode": 1,
                                                                       "mtime_ns": 1 << 70}}},
                {"format": "cartridge-engram/1", "files": [], "dirs": []},
                {"format": "cartridge-engram/1", "dirs": ["/../../x"]},
                {"format": "cartridge-engram/1", "policies": {"p": {"Statement": "nope"}}}]:
        p = tmp_path / "h.eng"
        with EngramWriter(p) as w:
            w.add("a.txt", b"1")
            w.add("cartridge.json", json.dumps(doc).encode())
        with pytest.raises((CorruptionError, InvalidPathError, cartridge.PolicyError)):
            cartridge.import_engram(p, tmp_path / "b.cart")
        assert _empty(tmp_path / "b.cart")


# -- IAM -----------------------------------------------------------------------------------------
def _iam_cart(path):
    with cartridge.open(path, "w") as c:
        c.write("/pub/a", b"public")
        c.write("/secret/s", b"secret")
        c.set_policy("p", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["cart:GetObject", "cart:List"],
             "Resource": "/pub/*", "Principal": {"CART": "alice"}},
            {"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/*",
             "Principal": {"CART": "bob"}},
            {"Effect": "Allow", "Action": "cart:Export", "Resource": "/",
             "Principal": {"CART": ["alice", "bob"]}},
            {"Effect": "Allow", "Action": "cart:GetPolicy", "Resource": "/",
             "Principal": {"CART": "alice"}}]})


def test_principal_export_needs_export_getobject_and_getpolicy(tmp_path):
    p = tmp_path / "a.cart"
    _iam_cart(p)
    out = tmp_path / "o.eng"
    with cartridge.open(p) as c:
        alice = c.as_principal("alice")
        with pytest.raises(AccessDeniedError, match="GetObject.*secret"):
            alice.export_engram(out)
        assert not out.exists()
        alice.export_engram(out, include="/pub")
        with engram.open(out) as r:
            assert r.read("pub/a") == b"public" and "secret/s" not in r
        bob = c.as_principal("bob")                     # reads all, but not the policies
        with pytest.raises(AccessDeniedError, match="GetPolicy"):
            bob.export_engram(tmp_path / "b.eng")
        carol = c.as_principal("carol")
        with pytest.raises(AccessDeniedError, match="Export"):
            carol.export_engram(tmp_path / "c.eng", include="/pub")
    assert sorted(os.listdir(tmp_path)) == ["a.cart", "o.eng"]


def test_principal_import_checked(tmp_path):
    from cartridge.engram import EngramWriter
    with EngramWriter(tmp_path / "f.eng") as w:
        w.add("ok/a", b"1")
        w.add("no/b", b"2")
    with cartridge.open(tmp_path / "d.cart", "w") as c:
        c.set_policy("p", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "cart:PutObject", "Resource": "/ok/*"}]})
        with pytest.raises(AccessDeniedError):
            cartridge.import_engram(tmp_path / "f.eng", c.as_principal("alice"))
        assert not c.exists("/ok/a")


def test_export_reported_through_the_hook(src, tmp_path):
    path, _ = src
    seen = []
    unsubscribe = H.subscribe(seen.append)
    try:
        with cartridge.open(path) as c:
            c.export_engram(tmp_path / "o.eng")
    finally:
        unsubscribe()
    mine = [(e.method, e.action, e.path, e.result, e.principal) for e in seen
            if e.method == "export_engram"]
    assert mine == [("export_engram", "cart:Export", "/", "ok", None)]
    assert not any(e.method == "read" for e in seen)     # its reads are part of it


def test_manifest_schema_only(src, tmp_path):
    """Nothing is added to engram-rs's manifest schema: a strict parse keeps every field."""
    path, _ = src
    with cartridge.open(path) as c:
        c.export_engram(tmp_path / "o.eng", signing_key=SEED)
    with engram.open(tmp_path / "o.eng") as r:
        stored = json.loads(r.read("manifest.json"))
        assert MF.parse(r.read("manifest.json")) == json.loads(
            json.dumps(MF.parse(r.read("manifest.json"))))
        assert set(stored) <= {"version", "id", "name", "description", "author", "metadata",
                               "capabilities", "files", "signatures"}


# -- crash safety of import -----------------------------------------------------------------------
def test_import_crash_leaves_before_or_after(tmp_path):
    """The import is one commit: a crash at any point of its I/O (killed process: every cut;
    power cut: sampled with torn and reordered writes) opens as the archive before the import or
    after all of it, never a part, and verifies."""
    import random

    from cartridge.engram import EngramWriter
    from cartridge.testing.crash import CrashRecorder

    src = tmp_path / "in.eng"
    rng = random.Random(4)
    files = {f"d{i % 3}/f{i}.txt": bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9000)))
             for i in range(12)}
    with EngramWriter(src, mtime=1_700_000_000) as w:
        for name, data in files.items():
            w.add(name, data)
    p = str(tmp_path / "d.cart")
    with cartridge.open(p, "w") as c:
        c.write("/old", b"old")
    before = {"/old": b"old"}
    after = dict(before, **{"/" + n: d for n, d in files.items()})
    c = cartridge.open(p, "a", sync="full")
    rec = CrashRecorder(c)
    cartridge.import_engram(src, c)
    rec.detach()
    c.close()
    q = str(tmp_path / "img.cart")
    images = [rec.image(cut, "killed") for cut in rec.cuts()]
    images += [rec.image(cut, "power", random.Random(cut))
               for cut in random.Random(1).sample(list(rec.cuts()), min(30, len(rec.log)))]
    seen = set()
    for img in images:
        with open(q, "wb") as f:
            f.write(img)
        with cartridge.open(q) as got:
            state = {i.path: got.read(i.path) for i in got.scan("/")}
            assert state in (before, after)
            assert got.verify().ok
            seen.add(state == after)
    assert seen == {False, True}


def test_export_pinned_against_another_process(tmp_path):
    """Another process commits new versions of every file as fast as it can while a reader
    exports: every file in the Engram is of one and the same version."""
    import subprocess
    import sys
    import time

    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        c.write_many([(f"/f{i:02d}", b"v0000000" * 500) for i in range(20)])
    stop = tmp_path / "stop"
    code = (
        "import sys, os, cartridge\n"
        "p, stop = sys.argv[1], sys.argv[2]\n"
        "with cartridge.open(p, 'a', sync='off', timeout=10) as c:\n"
        "    v = 0\n"
        "    while not os.path.exists(stop) and v < 5000:\n"
        "        v += 1\n"
        "        c.write_many([(f'/f{i:02d}', b'v%07d' % v * 500) for i in range(20)])\n"
        "        print(v, flush=True)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-c", code, str(p), str(stop)], env=env,
                             stdout=subprocess.PIPE, text=True)
    live = []                                            # what a fresh reader saw meanwhile
    moved: list = []                                     # a commit seen mid-export
    try:
        assert child.stdout.readline()                   # it has committed at least once
        with cartridge.open(p) as reader, cartridge.open(p) as watcher:
            def slow(done, total, path):
                # the first time: wait (at most 20 s) until the child has committed a newer
                # version than the newest one now, so at least one commit lands mid-export
                if not live:
                    first = watcher.read("/f00", 0, 8)
                    for _ in range(2000):
                        if watcher.read("/f00", 0, 8) != first:
                            moved.append(first)
                            break
                        time.sleep(0.01)
                live.append(watcher.read("/f00", 0, 8))
            reader.export_engram(tmp_path / "o.eng", progress=slow)
    finally:
        stop.write_text("")
        child.communicate(timeout=60)
    assert child.returncode == 0
    with engram.open(tmp_path / "o.eng") as r:
        versions = {r.read(f"f{i:02d}")[:8] for i in range(20)}
        assert len(versions) == 1, versions
        assert r.verify().ok
    # commits landed while the export ran (each newer than what it exported), yet none mixed in
    exported = versions.pop()
    assert moved and max(live) > exported and min(live) >= exported, (exported, live)
