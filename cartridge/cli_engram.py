"""The Engram commands of the `cartridge` command line (docs/ENGRAM.md):

    cartridge keygen release.key                  # Ed25519 seed (0600); prints the public key
    cartridge export data.cart out.eng --sign release.key
    cartridge engram verify out.eng --public-key PUBHEX
    cartridge import out.eng copy.cart --verify-key PUBHEX
    cartridge engram ls|cat|info out.eng

Kept apart from cli.py (which calls add_commands()) so the core CLI never imports the engram
extra; every command loads cartridge.engram on first use.
"""
from __future__ import annotations

import binascii
import contextlib
import os
import sys
from typing import Any

from .cliargs import UsageError, snapshot_name
from .cliargs import open_archive as _open_archive
from .errors import CartridgeError, ReadOnlyError
from .jsonout import emit_json
from .progress import bar as _bar
from .terminal import safe as _safe

KEY_FILE_MAX = 64 << 10


def _engram() -> Any:
    try:
        from . import engram
    except ImportError as e:
        raise CartridgeError(f"Engram support needs the engram extra (pip install "
                             f"'cartridge[engram]'): {e}") from None
    return engram


class _Progress:
    """An Engram export/import progress callback (done, total, path) drawing a progress bar
    (cartridge.progress: rich or tqdm, on a terminal only, never with --quiet or --json)."""

    def __init__(self, what: str, quiet: bool):
        self.bar = _bar(what, None, quiet=quiet)
        self.total: int | None = None
        self.done = 0

    def __call__(self, done: int, total: int, path: str) -> None:
        if total != self.total:
            self.total = total
            self.bar.set_total(total)
        self.bar.update(done - self.done)
        self.done = done

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _aes_key(path: str | None) -> bytes | None:
    """A 32-byte AES key from a file: 32 raw bytes or 64 hex digits."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(KEY_FILE_MAX + 1)
    except OSError as e:
        raise CartridgeError(f"cannot read key file {path}: {e.strerror}") from None
    if len(raw) == 32:
        return raw
    text = raw.strip()
    if len(text) == 64:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            pass
    raise CartridgeError(f"{path}: an encryption key file holds 32 raw bytes or 64 hex digits")


def _public_key(spec: str) -> Any:
    """--public-key/--verify-key: 64 hex digits or a file holding a public key."""
    crypto = _engram().crypto
    try:
        return crypto.load_public_key(spec)
    except (ValueError, TypeError) as e:
        raise CartridgeError(f"{spec}: {e}") from None


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


# -- keygen ----------------------------------------------------------------------------------
def cmd_keygen(args) -> int:
    try:        # the key signs Engram manifests and audit checkpoints alike: needs cryptography
        from .engram import crypto
    except ImportError as e:
        raise CartridgeError(f"keygen needs the cryptography package (pip install "
                             f"'cartridge[engram]' or 'cartridge[checkpoints]'): {e}") from None
    key = crypto.new_private_key()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    if args.force and os.path.lexists(args.keyfile) and not os.path.islink(args.keyfile) \
            and os.path.isfile(args.keyfile):
        os.remove(args.keyfile)
    try:
        fd = os.open(args.keyfile, flags, 0o600)
    except FileExistsError:
        raise CartridgeError(f"{args.keyfile} exists (use --force to replace it)") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(crypto.private_seed(key).hex() + "\n")
    print(crypto.public_hex(key))
    return 0


# -- export / import ----------------------------------------------------------------------------
def cmd_export(args) -> int:
    if args.freeze and args.snapshot:
        raise UsageError("--freeze exports the live state; it does not take --snapshot")
    if args.freeze and args.no_verify:
        raise UsageError("--freeze always verifies the Engram before it freezes the archive; it "
                         "does not take --no-verify")
    engram = _engram()
    signing = None
    if args.sign:
        try:
            signing = engram.crypto.load_private_key(args.sign)
        except (ValueError, TypeError) as e:
            raise CartridgeError(f"{args.sign}: {e}") from None
    key = _aes_key(args.encrypt)
    froze = None
    with _Progress("export", args.quiet or args.json) as progress:
        kwargs = dict(signing_key=signing, signer=args.signer, compression=args.compression,
                      include=args.include or None,
                      encryption=args.encryption if key else None, key=key,
                      progress=progress, verify=not args.no_verify, snapshot=args.snapshot)
        try:
            if args.freeze:
                report, froze = _export_and_freeze(args, kwargs)
            else:
                with _open_archive(args.archive, "r") as cart:
                    report = cart.export_engram(args.out, **kwargs)
        except ValueError as e:
            raise CartridgeError(str(e)) from None
    summary = {"out": args.out, "verified": report is not None,
               "entries": report.entries if report else None,
               "bytes": report.size if report else None,
               "signed_by": [s["public_key"] for s in report.signatures] if report else [],
               "snapshot": args.snapshot}
    if args.freeze:
        summary["frozen"] = True
        summary["already_frozen"] = froze == "already"
    if args.json:
        emit_json(summary)
    else:
        what = f"{report.entries} entries, {_human(report.size)}" if report else "unverified"
        signed = f", signed by {summary['signed_by'][0]}" if summary["signed_by"] else ""
        source = _safe(args.archive) + (f" (snapshot {_safe(args.snapshot)})"
                                        if args.snapshot else "")
        print(f"exported {source} -> {_safe(args.out)} ({what}{signed})")
        if froze == "now":
            print(f"froze {_safe(args.archive)} (now read-only for good)")
        elif froze == "already":
            print(f"{_safe(args.archive)} was already frozen")
    return 0


def _export_and_freeze(args, kwargs: dict) -> tuple[Any, str]:
    """`export --freeze`: the release workflow (Cartridge.export_engram(freeze=True)). The
    archive is opened for writing, so no other writer can commit until the end; the Engram
    is written to a temp file beside OUT, synced and verified, THEN the archive is frozen
    (vacuumed first), and only then is the temp renamed to OUT. A failed export freezes
    nothing; a failed freeze removes the output; a crash between the freeze's commit and the
    rename leaves the archive frozen and OUT as it was, and running the command again exports
    the frozen archive (one already frozen is exported as it is). Returns (report, "now" or
    "already")."""
    try:
        cart = _open_archive(args.archive, "a")
    except ReadOnlyError:
        with _open_archive(args.archive, "r") as cart:
            if not cart.info().get("frozen"):
                raise
            return cart.export_engram(args.out, **kwargs), "already"
    with cart:
        report = cart.export_engram(args.out, freeze=True, **kwargs)
    return report, "now"


def cmd_import(args) -> int:
    engram = _engram()
    verify_key = _public_key(args.verify_key) if args.verify_key else None
    key = _aes_key(args.key)
    existed = os.path.lexists(args.archive)
    try:
        with _open_archive(args.archive, "a", sync=args.sync) as cart, \
                _Progress("import", args.quiet) as progress:
            res = engram.import_engram(args.src, cart, verify_key=verify_key, key=key,
                                       progress=progress)
    except BaseException:
        if not existed:         # the archive this command created: not left behind, empty
            with contextlib.suppress(OSError):
                os.remove(args.archive)
        raise
    files = f"{res['files']} file" + ("" if res["files"] == 1 else "s")
    policies = f"{res['policies']} polic" + ("y" if res["policies"] == 1 else "ies")
    print(f"imported {files} ({_human(res['bytes'])}), {policies} into {_safe(args.archive)}")
    return 0


# -- engram ls / cat / verify / info -----------------------------------------------------------------
def _reader(args) -> Any:
    return _engram().open(args.file, key=_aes_key(getattr(args, "key", None)))


def cmd_engram_ls(args) -> int:
    with _reader(args) as r:
        infos = r.infolist()
    if args.json:
        emit_json([i._asdict() | {"framed": i.framed} for i in infos])
        return 0
    for i in infos:
        if args.long:
            print(f"{i.size:>12} {i.compressed_size:>12} {i.method:<5} {i.mtime:>11} "
                  f"{i.crc:08x} {_safe(i.path)}")
        else:
            print(_safe(i.path))
    return 0


def cmd_engram_cat(args) -> int:
    with _reader(args) as r, r.open(args.name) as src:
        sys.stdout.flush()
        out = getattr(sys.stdout, "buffer", sys.stdout)
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            out.write(block)
        out.flush()
    return 0


def cmd_engram_verify(args) -> int:
    keys = [_public_key(k) for k in args.public_key] or None
    with _reader(args) as r:
        report = r.verify(public_keys=keys)
    if args.json:
        emit_json(report.to_dict())
        return 0 if report.ok else 1
    for s in report.signatures:
        state = "valid" if s["valid"] else "INVALID"
        if s["trusted"] is not None:
            state += ", trusted" if s["trusted"] else ", not a trusted key"
        who = f" ({_safe(s['signer'])})" if s.get("signer") else ""
        print(f"signature {s['public_key']}{who}: {state}")
    if report.ok:
        print(f"OK ({report.entries} entries, {_human(report.size)}; "
              f"{'signed' if report.signed else 'not signed'})")
        return 0
    for p in report.problems:
        print(f"problem: {_safe(p)}")
    print(f"FAILED: {len(report.problems)} problem(s) in {_safe(args.file)}")
    return 1


def cmd_engram_info(args) -> int:
    with _reader(args) as r:
        m = r.manifest()
        info = {"path": r.path, "version": f"{r.version[0]}.{r.version[1]}", "encryption": r.encryption,
                "entries": len(r), "size": r.total_size, "file_size": r.file_size,
                "manifest": None if m is None else {
                    "id": m["id"], "name": m["name"], "version": m["metadata"]["version"],
                    "author": m["author"]["name"], "created": m["metadata"]["created"],
                    "files": len(m["files"]),
                    "signatures": [s["public_key"] for s in m["signatures"]]}}
    if args.json:
        emit_json(info)
        return 0
    for k, v in info.items():
        if isinstance(v, dict):
            print(f"{k}:")
            for k2, v2 in v.items():
                print(f"  {k2 + ':':12} {_safe(v2)}")
        else:
            print(f"{k + ':':12} {_safe(v)}")
    return 0


# -- the parser ----------------------------------------------------------------------------------
def add_commands(sub, add, sync_parent) -> None:
    """Add keygen, export, import and engram ls|cat|verify|info to cli.py's subparsers."""
    p = add("keygen", cmd_keygen, "make an Ed25519 signing key: writes its seed (hex) to "
            "PRIVFILE with mode 0600 and prints the public key (hex)")
    p.add_argument("keyfile", metavar="PRIVFILE")
    p.add_argument("--force", action="store_true", help="replace PRIVFILE if it exists")

    p = add("export", cmd_export, "freeze the archive into an Engram (.eng) file: compressed, "
            "optionally signed and encrypted, verified before it replaces OUT",
            epilog="Files keep their paths (without the leading '/'), mtimes and modes; the "
                   "policies go in cartridge.json; manifest.json lists every file's SHA-256 and "
                   "size and carries the signatures. See docs/ENGRAM.md.")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("out", metavar="OUT.eng")
    p.add_argument("--sign", metavar="KEYFILE", help="sign with this Ed25519 key (cartridge keygen)")
    p.add_argument("--signer", metavar="NAME", help="the signer's name recorded with the signature")
    p.add_argument("--compression", choices=("auto", "none", "lz4", "zstd"), default="auto")
    p.add_argument("--include", metavar="PREFIX", action="append", default=[],
                   help="export only files under PREFIX (repeatable)")
    p.add_argument("--encrypt", metavar="KEYFILE",
                   help="encrypt with AES-256-GCM; KEYFILE holds 32 raw bytes or 64 hex digits")
    p.add_argument("--encryption", choices=("archive", "per-file"), default="archive",
                   help="with --encrypt: the whole archive (default; hides the file list) or "
                        "each file")
    p.add_argument("--no-verify", action="store_true", help="skip re-reading the written file")
    p.add_argument("--snapshot", metavar="NAME", type=snapshot_name,
                   help="export snapshot NAME (cartridge snapshot create) instead of the live state")
    p.add_argument("--freeze", action="store_true",
                   help="the release workflow: export and verify, then freeze the archive "
                        "(permanently read-only, vacuumed first), then put OUT in place; if the "
                        "export fails nothing is frozen (docs/ENGRAM.md)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = add("import", cmd_import, "unpack an Engram (.eng) into ARCHIVE (created if missing) in "
            "one transaction", [sync_parent])
    p.add_argument("src", metavar="IN.eng")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("--verify-key", metavar="PUBKEY",
                   help="require a valid signature by this Ed25519 public key (64 hex digits or "
                        "a file); nothing is written otherwise")
    p.add_argument("--key", metavar="KEYFILE", help="AES key of an encrypted Engram")

    p = add("engram", None, "inspect an Engram (.eng) file: ls, cat, verify, info")
    nadd = add.nested(p, "engram")

    def eadd(name, func, help):
        q = nadd(name, func, help)
        q.add_argument("file", metavar="FILE.eng")
        q.add_argument("--key", metavar="KEYFILE", help="AES key of an encrypted Engram")
        return q

    q = eadd("ls", cmd_engram_ls, "list the members")
    q.add_argument("-l", dest="long", action="store_true",
                   help="size, stored size, method, mtime, CRC and path")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = eadd("cat", cmd_engram_cat, "write a member's bytes to standard output")
    q.add_argument("name", metavar="NAME")
    q = eadd("verify", cmd_engram_verify, "check every entry, the manifest and the signatures; "
             "exit 1 on any problem")
    q.add_argument("--public-key", metavar="PUBKEY", action="append", default=[],
                   help="a trusted Ed25519 public key (hex or file); repeatable. With one, a "
                        "valid signature by a trusted key is required")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = eadd("info", cmd_engram_info, "show the header, sizes and manifest summary")
    q.add_argument("--json", action="store_true", help="print JSON")
