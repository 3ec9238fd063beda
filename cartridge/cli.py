# PYTHON_ARGCOMPLETE_OK  (argcomplete's global completion looks for this marker)
"""The `cartridge` command line: create, fill, inspect and check .cart archives.

    cartridge put data.cart ./docs --to /data     # copy a local tree in (one atomic commit)
    cartridge ls data.cart /data -lR
    cartridge get data.cart /data/docs --to ./out
    cartridge verify data.cart

`main(argv)` returns the exit code (EXIT_CODES): 0 success, 1 an error (one line on stderr,
no traceback), 2 a usage error, 3 `policy check` denied, 130 interrupted. The console script and
`python -m cartridge` exit with it. Options may come anywhere among a command's arguments
(`ls A -l /p`). Every string the CLI prints that came from an archive or the command line goes
through `_safe()` (one raw value: unambiguous, a backslash doubled) or `_safe_message()` (a
message composed of escaped parts) of cartridge.terminal, so a hostile name cannot drive the
terminal.
"""
from __future__ import annotations

import argparse
import builtins
import datetime as _dt
import fnmatch
import json
import os
import stat as _stat
import sys
import textwrap

import apsw

from . import localfile as LF
from . import paths as P
from . import source
from .cliargs import (
    CLIError,
    UsageError,
    count,
    open_archive,
    pair,
    positive,
    seconds,
    snapshot_name,
    time_value,
    tree_head,
)
from .errors import CartridgeError, DirectoryNotEmptyError, InvalidPathError, NotFoundError
from .jsonout import add_json_flag, emit_json
from .progress import Bar
from .progress import backend as progress_backend
from .progress import bar as _bar
from .progress import enabled as progress_enabled
from .terminal import safe as _safe
from .terminal import safe_message as _safe_message

PROG = "cartridge"
# Files up to this size move with one read()/write() call; larger ones are streamed.
SMALL_FILE = 1 << 20
CHUNK = 1 << 20
PUT_BATCH_BYTES = 64 << 20      # small files held in memory before one write_many


EXIT_CODES = ("Exit status: 0 success; 1 an error, or problems found by verify; 2 a usage "
              "error (an unknown option, a missing argument, a bad argument value); 3 denied by "
              "'policy check'; 130 interrupted.")


# -- small helpers ---------------------------------------------------------------------------------
def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _iso(ts: float) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, CartridgeError) and exc.strerror:
        msg = _safe_message(exc.strerror)
        if exc.filename is not None:
            msg = f"{_safe(exc.filename)}: {msg}"
        if exc.filename2 is not None:
            msg += f" -> {_safe(exc.filename2)}"
    else:
        msg = _safe_message(str(exc) or type(exc).__name__)
    return " ".join(msg.split())       # one line: a newline in a name shows as \\n


def _open(args, mode: str):
    """Open the archive of a command: "r" for readers, "a" for writers. With must_exist, a
    missing archive is an error rather than a new empty one."""
    if mode == "r":
        return open_archive(args.archive, "r")
    return open_archive(args.archive, mode, must_exist=getattr(args, "must_exist", False),
                        sync=args.sync)


def _will_draw(args) -> bool:
    """Whether a progress bar would be drawn (worth computing its total for)."""
    return progress_enabled(args.quiet) and progress_backend() is not None


def _stdout_binary():
    sys.stdout.flush()
    return getattr(sys.stdout, "buffer", sys.stdout)


# -- create ----------------------------------------------------------------------------------------
def cmd_create(args) -> int:
    with _open(args, "x"):
        pass
    print(f"created {_safe(args.archive)}")
    return 0


# -- put -------------------------------------------------------------------------------------------
def _dir_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _archive_identity(archive: str) -> tuple[int, int] | None:
    """Device and inode of the archive file (through symlinks; a file:// URL names it too), None
    while it does not exist or when it is remote."""
    try:
        kind, local = source.resolve(archive)
        return _dir_id(os.stat(local)) if kind == "local" else None
    except (OSError, ImportError, CartridgeError):
        return None


def _skip_self(local: str) -> None:
    print(f"{PROG}: warning: skipping {_safe(local)}: it is the archive itself", file=sys.stderr)


class _PutPlan:
    """What `put` will do, worked out before touching the archive: the archive directories to
    create, the files [(local file, archive path, size, meta)] and what was left out."""

    def __init__(self, args, archive: tuple[int, int] | None = None):
        self.archive = archive     # device and inode of the archive file: never put into itself
        self.follow = getattr(args, "follow_symlinks", False)     # links to directories too
        self.no_follow = getattr(args, "no_follow", False)        # skip every symbolic link
        self.strict = getattr(args, "strict", False)
        self.preserve = not getattr(args, "no_preserve", False)
        self.excludes = getattr(args, "exclude", None) or []
        self.dirs: list[str] = []
        self.files: list[tuple[str, str, int, dict | None]] = []
        self.skipped = 0
        self.self_skipped = 0      # sources that are the archive itself
        self.excluded = 0

    def skip(self, local: str, why: str) -> None:
        self.skipped += 1
        print(f"{PROG}: warning: skipping {_safe(local)}: {_safe_message(why)}", file=sys.stderr)

    def target(self, path: str, local: str, as_file: bool) -> str | None:
        """The archive path, or None (a warning) for a name an archive cannot hold: not UTF-8,
        a control character, a segment over 255 bytes... --strict: CLIError, nothing written."""
        try:
            return P.normalize_file(path) if as_file else P.normalize(path)
        except InvalidPathError as e:
            if self.strict:
                raise CLIError(f"cannot store {_safe(local)}: {_safe_message(e)} (--strict: nothing "
                               "written)") from None
            self.skip(local, f"name cannot be stored: {_safe_message(e)}")
            return None

    def is_excluded(self, rel: str, name: str) -> bool:
        if any(fnmatch.fnmatchcase(rel, g) or fnmatch.fnmatchcase(name, g) for g in self.excludes):
            self.excluded += 1
            return True
        return False

    def meta(self, st: os.stat_result) -> dict | None:
        return {"mode": st.st_mode & 0o7777, "mtime": st.st_mtime} if self.preserve else None

    def walk(self, src: str, top: str) -> None:
        """Add directory `src` (stored as `top`) and everything below it."""
        chains = {src: frozenset([_dir_id(os.stat(src))])}   # directory -> ids of it and ancestors
        for dirpath, dirnames, filenames in os.walk(src, followlinks=self.follow):
            rel = os.path.relpath(dirpath, src)
            rel = "" if rel == "." else "/".join(rel.split(os.sep))
            adir = top if not rel else P.join(top, rel)
            self.dirs.append(adir)
            keep = []
            for dn in sorted(dirnames):
                local = os.path.join(dirpath, dn)
                if self.is_excluded(f"{rel}/{dn}" if rel else dn, dn):
                    continue
                if os.path.islink(local):
                    if self.no_follow:
                        self.skip(local, "symbolic link (--no-follow)")
                        continue
                    if not self.follow:
                        self.skip(local, "symbolic link to a directory (--follow-symlinks "
                                         "follows it)")
                        continue
                try:
                    ident = _dir_id(os.stat(local))
                except OSError as e:
                    self.skip(local, e.strerror or str(e))
                    continue
                if ident in chains[dirpath]:
                    self.skip(local, "symbolic link loop (it leads back to a directory above)")
                    continue
                if self.target(P.join(adir, dn), local, as_file=False) is None:
                    continue
                chains[local] = chains[dirpath] | {ident}
                keep.append(dn)
            dirnames[:] = keep
            for fn in sorted(filenames):
                local = os.path.join(dirpath, fn)
                if self.is_excluded(f"{rel}/{fn}" if rel else fn, fn):
                    continue
                link = os.path.islink(local)
                if link and self.no_follow:
                    self.skip(local, "symbolic link (--no-follow)")
                    continue
                try:
                    fst = os.stat(local)
                except OSError as e:
                    self.skip(local, "broken symbolic link" if link else e.strerror or str(e))
                    continue
                if not _stat.S_ISREG(fst.st_mode):
                    self.skip(local, "not a regular file")
                    continue
                if _dir_id(fst) == self.archive:
                    _skip_self(local)
                    self.self_skipped += 1
                    continue
                dst = self.target(P.join(adir, fn), local, as_file=True)
                if dst is not None:
                    self.files.append((local, dst, fst.st_size, self.meta(fst)))


def _plan_put(sources: list[str], dest: str | None, args=None,
              archive: tuple[int, int] | None = None) -> _PutPlan:
    """Work out what `put` will do before touching the archive (see _PutPlan). Raises for a
    missing source; a SRC named on the command line is followed if it is a symbolic link."""
    plan = _PutPlan(args, archive)
    to = dest if dest is not None else "/"
    into_dir = to.endswith("/") or len(sources) > 1 or dest is None
    base = P.normalize(to)
    for src in sources:
        st = os.stat(src)           # FileNotFoundError names the source
        name = os.path.basename(os.path.abspath(src))
        if _stat.S_ISDIR(st.st_mode):
            top = plan.target(P.join(base, name), src, as_file=False) if name else base
            if top is not None:
                plan.walk(src, top)
        elif _stat.S_ISREG(st.st_mode):
            if _dir_id(st) == archive:
                raise CLIError(f"{_safe(src)}: is the archive itself; refusing to put an archive "
                               "into itself")
            dst = plan.target(P.join(base, name) if into_dir else base, src, as_file=True)
            if dst is not None:
                plan.files.append((src, dst, st.st_size, plan.meta(st)))
        else:
            raise CLIError(f"{_safe(src)}: not a regular file or directory")
    return plan


def _open_source(local: str, archive: tuple[int, int] | None):
    """The opened local file and the size it has now (no more of it is read: a file growing
    while it is put is stored as it was when opened), or None if it is the archive itself."""
    src = open(local, "rb")
    st = os.fstat(src.fileno())
    if _dir_id(st) == archive:
        src.close()
        return None
    return src, st.st_size


def _put_file(cart, local: str, dst: str, meta: dict | None,
              archive: tuple[int, int] | None = None, progress: Bar | None = None) -> int | None:
    """Stream one local file into `dst` (with its mode and mtime when `meta`); its size in
    bytes, or None (skipped) if it turned out to be the archive itself. `progress` is
    advanced by each chunk written."""
    opened = _open_source(local, archive)
    if opened is None:
        return None
    src, left = opened
    perm = {"perm": meta["mode"], "mtime": meta["mtime"]} if meta else {}
    with src, cart.open(dst, "wb", **perm) as out:
        while left > 0:
            try:
                buf = src.read(min(CHUNK, left))
            except OSError as e:    # a read error names the source (the archive's name its own)
                _named(e, local)
                raise
            if not buf:
                break
            out.write(buf)
            left -= len(buf)
            if progress is not None:
                progress.update(len(buf))
        return out.tell()


def _named(e: OSError, name: str) -> OSError:
    if e.filename is None:
        e.filename = name
    return e


def cmd_put(args) -> int:
    plan = _plan_put(args.sources, args.to, args, _archive_identity(args.archive))
    dirs, files = plan.dirs, plan.files
    total = 0
    stored = 0
    progress = _bar("put", sum(f[2] for f in files), quiet=args.quiet)
    with progress, _open(args, "a") as cart, cart.transaction():
        archive = _archive_identity(args.archive)     # (it may have been created just now)
        for d in dirs:
            cart.mkdir(d, parents=True, exist_ok=True)
        batch: list[tuple] = []       # small files go in through write_many
        held = 0
        for local, dst, size, meta in files:
            if size > SMALL_FILE:
                n = _put_file(cart, local, dst, meta, archive, progress)
            else:
                opened = _open_source(local, archive)
                n = None
                if opened is not None:
                    src, size_now = opened
                    with src:
                        try:
                            data = src.read(size_now)
                        except OSError as e:
                            _named(e, local)
                            raise
                    batch.append((dst, data) if meta is None else (dst, data, meta))
                    held += len(data)
                    n = len(data)
                    progress.update(n)
            if n is None:
                _skip_self(local)
                plan.self_skipped += 1
                continue
            total += n
            stored += 1
            if held >= PUT_BATCH_BYTES:
                cart.write_many(batch)
                batch, held = [], 0
        cart.write_many(batch)
    extra = f", {len(dirs)} director{'y' if len(dirs) == 1 else 'ies'}" if dirs else ""
    if plan.skipped:
        extra += f", {plan.skipped} skipped"
    if plan.excluded:
        extra += f", {plan.excluded} excluded"
    n_self = plan.self_skipped
    note = f", skipped {_plural(n_self, 'file')} (the archive itself)" if n_self else ""
    if args.quiet:
        return 0
    print(f"put {_plural(stored, 'file')}{extra}, {_plural(total, 'byte')} ({_human(total)}) into "
          f"{_safe(args.archive)}{note}")
    return 0


# -- get -------------------------------------------------------------------------------------------
def _local_target(root: str, rel: str) -> str:
    """Local path for archive-relative path `rel` below `root`, refusing anything that could
    land outside it (odd segments from a hostile archive, symlinks already on disk)."""
    segs = [s for s in rel.split("/") if s]
    for s in segs:
        if s in (".", "..") or os.sep in s or (os.altsep and os.altsep in s) or "\x00" in s:
            raise CLIError(f"refusing to extract {rel!r}: unsafe path segment {s!r}")
    target = os.path.join(root, *segs) if segs else root
    real_root = os.path.realpath(root)
    parent = os.path.realpath(os.path.dirname(target)) if segs else real_root
    if parent != real_root and not parent.startswith(real_root.rstrip(os.sep) + os.sep):
        raise CLIError(f"refusing to write outside {root}: {target}")
    if segs and os.path.islink(target):
        raise CLIError(f"refusing to write through a symbolic link: {target}")
    return target


def _get_file(cart, apath: str, target: str, size: int, mtime: float | None, perm: int,
              progress: Bar | None = None) -> int:
    """Extract one file through cartridge.localfile: a random, exclusively created temp file
    beside `target`, given permission bits `perm` and `mtime` (None: now) while it is still
    ours (never through a link), fsynced, then renamed over `target`. `progress` is advanced
    by the bytes written."""
    progress = Bar() if progress is None else progress
    with LF.atomic_writer(target, mode=perm, mtime=mtime) as out:
        if size <= SMALL_FILE:
            data = cart.read(apath)
            out.write(data)
            n = len(data)
            progress.update(n)
        else:
            with cart.open(apath, "rb") as src:
                while True:
                    buf = src.read(CHUNK)
                    if not buf:
                        break
                    out.write(buf)
                    progress.update(len(buf))
            n = out.tell()
    return n


def _get_meta(info, preserve: bool, umask: int) -> tuple[float | None, int]:
    """(mtime, permission bits) a file is extracted with: the stored ones, as tar does for a
    user (the umask applies; setuid, setgid and sticky bits are never restored), or with
    --no-preserve the time of extraction and 0o666 & ~umask."""
    if not preserve:
        return None, 0o666 & ~umask
    return info.mtime, info.mode & 0o777 & ~umask


def cmd_get(args) -> int:
    root = "." if args.to is None else args.to
    nfiles = total = 0
    preserve = not args.no_preserve
    umask = LF.umask()
    with _open(args, "r") as cart:
        todo = []
        trees = {}
        for path in args.paths:            # check every path before writing anything
            try:
                st = cart.stat(path)
            except (NotFoundError, InvalidPathError) as e:
                raise _get_hint(e, path, args) from None
            todo.append(st)
            if not st.is_file:             # a damaged directory tree fails here, not halfway
                trees[st.path] = [dirpath for dirpath, _dirs, _files in cart.walk(st.path)]
        os.makedirs(root, exist_ok=True)
        size = None
        if _will_draw(args):            # the total costs a scan: only for a bar that is drawn
            size = sum(st.size if st.is_file else
                       sum(i.size for i in cart.scan(P.dir_prefix(st.path))) for st in todo)
        with _bar("get", size, quiet=args.quiet) as progress:
            for st in todo:
                nfiles, total = _get_one(cart, root, st, trees, preserve, umask, progress,
                                         nfiles, total)
    if not args.quiet:
        where = _safe(root) if args.to is not None else \
            f"the current directory ({_safe(os.path.abspath(root))}; --to DIR chooses another)"
        print(f"got {_plural(nfiles, 'file')}, {_plural(total, 'byte')} ({_human(total)}) into {where}")
    return 0


def _get_hint(e: Exception, path: str, args):
    """The error of a PATH `get` cannot find, with a hint when it looks like the local
    destination given as a PATH (`get a.cart /x ./out`, as cp would take it)."""
    local = (not path.startswith("/") or os.path.exists(path)) and path == args.paths[-1] \
        and len(args.paths) > 1
    if not local:
        return e
    return type(e)(f"{_safe_message(e)} in {_safe(args.archive)}; PATHs name archive "
                   f"members: to extract into the local directory {_safe(path)}, say --to "
                   f"{_safe(path)}")


def _get_one(cart, root: str, st, trees: dict, preserve: bool, umask: int, progress: Bar,
             nfiles: int, total: int) -> tuple[int, int]:
    """Extract one PATH of `get` (a file, or a directory tree); the running counts."""
    if st.is_file:
        target = _local_target(root, P.basename(st.path))
        total += _get_file(cart, st.path, target, st.size, *_get_meta(st, preserve, umask),
                           progress)
        return nfiles + 1, total
    top = st.path
    name = P.basename(top)          # "" for the root: its contents go straight into root
    plen = len(P.dir_prefix(top))
    for dirpath in trees[top]:
        sub = "" if dirpath == top else dirpath[plen:]
        os.makedirs(_local_target(root, "/".join(s for s in (name, sub) if s)), exist_ok=True)
    for info in cart.scan(P.dir_prefix(top)):
        rel = info.path[plen:]
        target = _local_target(root, f"{name}/{rel}" if name else rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        total += _get_file(cart, info.path, target, info.size,
                           *_get_meta(info, preserve, umask), progress)
        nfiles += 1
    return nfiles, total


# -- cat -------------------------------------------------------------------------------------------
def cmd_cat(args) -> int:
    with _open(args, "r") as cart:
        out = _stdout_binary()
        with cart.open(args.path, "rb") as src:
            while buf := src.read(CHUNK):
                _write_stdout(out, buf)
        _write_stdout(out, b"")
    return 0


def _write_stdout(out, buf: bytes) -> None:
    """Write (b"": flush) to standard output; an error (a full disk, a file-size limit) names
    it, as one writing a file names the file. A reader that went away stays BrokenPipeError."""
    try:
        if buf:
            out.write(buf)
        else:
            out.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise _named(e, "standard output") from None


# -- ls / tree / du -------------------------------------------------------------------------------
def _size(n: int, human: bool) -> str:
    return _human_short(n) if human else str(n)


def _human_short(n: int) -> str:
    """A size as ls -h shows it: 512, 4.0K, 1.5M, 2.0G (powers of 1024)."""
    if n < 1024:
        return str(n)
    size = float(n)
    for unit in ("K", "M", "G", "T", "P"):
        size /= 1024
        if size < 1024 or unit == "P":
            return f"{size:.1f}{unit}" if size < 10 else f"{size:.0f}{unit}"
    return str(n)  # pragma: no cover


def _entry_doc(st, name: str) -> dict:
    """The JSON object of one listed entry (ls --json, stat --json)."""
    return {"path": st.path, "name": name, "type": "directory" if st.is_dir else "file",
            "size": st.size, "mode": st.mode, "ctime": st.ctime, "mtime": st.mtime,
            "checksum": st.checksum}


def _ls_line(st, shown: str, long: bool, human: bool) -> str:
    is_dir = st.is_dir
    shown = _safe(shown + "/" if is_dir and not shown.endswith("/") else shown)
    if not long:
        return shown
    size = "-" if is_dir else _size(st.size, human)
    return (f"{_stat.filemode(st.mode)}  {size:>{7 if human else 12}}  {_iso(st.mtime):19}  "
            f"{st.checksum or '-':16}  {shown}")


def _ls_entries(cart, path: str, recursive: bool) -> list[tuple[str, str]]:
    """(path, name shown) of what `ls` lists, in its order."""
    st = cart.stat(path)
    if st.is_file:
        return [(path, path if recursive else P.basename(path))]
    if recursive:
        entries: list[str] = []
        for dirpath, dirs, files in cart.walk(path):
            entries.extend(P.join(dirpath, d) for d in dirs)
            entries.extend(P.join(dirpath, f) for f in files)
        # Pre-order (each directory right before its contents), like find(1).
        entries.sort(key=lambda e: e.split("/"))
        return [(p, p) for p in entries]
    _top, dirs, files = next(cart.walk(path))
    return [(P.join(path, name), name) for name in sorted(dirs + files)]


def cmd_ls(args) -> int:
    with _open(args, "r") as cart:
        path = P.normalize(args.path)
        entries = [(cart.stat(p), shown) for p, shown in _ls_entries(cart, path, args.recursive)]
    if args.json:
        emit_json([_entry_doc(st, P.basename(st.path)) for st, _ in entries])
        return 0
    lines = [_ls_line(st, shown, args.long, args.human) for st, shown in entries]
    if lines:
        print("\n".join(lines))
    return 0


def _tree_glyphs() -> tuple[str, str, str, str]:
    """Box-drawing glyphs when standard output can encode them, else ASCII."""
    glyphs = ("\u251c\u2500\u2500 ", "\u2514\u2500\u2500 ", "\u2502   ", "    ")
    try:
        "".join(glyphs).encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ("|-- ", "`-- ", "|   ", "    ")
    return glyphs


def cmd_tree(args) -> int:
    with _open(args, "r") as cart:
        top = P.normalize(args.path)
        st = cart.stat(top)
        children: dict[str, list[tuple[str, bool]]] = {}
        sizes: dict[str, int] = {}
        if st.is_dir:
            for dirpath, dirs, files in cart.walk(top):
                children[dirpath] = sorted([(d, True) for d in dirs] + [(f, False) for f in files])
            if args.sizes:
                sizes = {i.path: i.size for i in cart.scan(P.dir_prefix(top))}
        elif args.sizes:
            sizes = {top: st.size}
    tee, last, bar, gap = _tree_glyphs()
    ndirs, nfiles = 0, 0 if st.is_dir else 1

    def label(path: str, name: str, is_dir: bool) -> str:
        shown = _safe(name) + ("/" if is_dir and not name.endswith("/") else "")
        if args.sizes and not is_dir:
            shown = f"[{_size(sizes.get(path, 0), args.human):>{6 if args.human else 10}}]  {shown}"
        return shown

    lines = [label(top, top, st.is_dir)]

    # Depth first with an explicit stack (a path may be ~2000 directories deep): per open
    # directory, the iterator over its children, their count, its path, line prefix and depth.
    stack: list[tuple] = []

    def enter(dirpath: str, prefix: str, depth: int) -> None:
        kids = children.get(dirpath, [])
        stack.append((iter(enumerate(kids)), len(kids), dirpath, prefix, depth))

    if st.is_dir and (args.depth is None or args.depth > 0):
        enter(top, "", 1)
    while stack:
        it, count, dirpath, prefix, depth = stack[-1]
        item = next(it, None)
        if item is None:
            stack.pop()
            continue
        n, (name, is_dir) = item
        end = n == count - 1
        path = P.join(dirpath, name)
        lines.append(prefix + (last if end else tee) + label(path, name, is_dir))
        if not is_dir:
            nfiles += 1
        else:
            ndirs += 1
            if args.depth is None or depth < args.depth:
                enter(path, prefix + (gap if end else bar), depth + 1)
    print("\n".join(lines))
    print()
    print(f"{ndirs} director{'y' if ndirs == 1 else 'ies'}, {_plural(nfiles, 'file')}")
    return 0


def cmd_du(args) -> int:
    with _open(args, "r") as cart:
        top = P.normalize(args.path)
        st = cart.stat(top)
        totals: dict[str, list[int]] = {top: [0, 0]}      # directory -> [bytes, files]
        if st.is_file:
            totals[top] = [st.size, 1]
        else:
            prefix = P.dir_prefix(top)
            for dirpath, _dirs, _files in cart.walk(top):
                totals.setdefault(dirpath, [0, 0])
            for info in cart.scan(prefix):
                parent = info.path[:info.path.rfind("/")] or "/"
                while True:
                    t = totals.setdefault(parent, [0, 0])
                    t[0] += info.size
                    t[1] += 1
                    if parent == top:
                        break
                    parent = parent[:parent.rfind("/")] or "/"
    base = top.count("/") if top != "/" else 0

    def depth_of(d: str) -> int:
        return 0 if d == top else d.count("/") - base

    def post_order(d: str) -> list[tuple[int, str]]:      # du's order: a directory after its contents
        return [(0, seg) for seg in d.split("/") if seg] + [(1, "")]

    shown = [top] if args.summarize else sorted(
        (d for d in totals if args.depth is None or depth_of(d) <= args.depth), key=post_order)
    if args.json:
        emit_json({"path": top, "bytes": totals[top][0], "files": totals[top][1],
                   "entries": [{"path": d, "bytes": totals[d][0], "files": totals[d][1]}
                               for d in shown]})
        return 0
    width = max(len(_size(totals[d][0], args.human)) for d in shown)
    for d in shown:
        print(f"{_size(totals[d][0], args.human):>{width}}  {_safe(d)}")
    return 0


# -- rm / mv / mkdir -------------------------------------------------------------------------------
def cmd_rm(args) -> int:
    with _open(args, "a") as cart, cart.transaction():
        for path in args.paths:
            p = P.normalize(path)
            if p == "/":
                raise CLIError("refusing to remove '/'")
            try:
                cart.delete(p, recursive=args.recursive)
            except DirectoryNotEmptyError as e:
                raise DirectoryNotEmptyError(f"{e} (use -r to remove it and its contents)") from None
    return 0


def cmd_mv(args) -> int:
    with _open(args, "a") as cart:
        src = P.normalize(args.src)
        dst = args.dst
        if dst.endswith("/") or cart.isdir(dst):
            if not cart.exists(src):
                raise NotFoundError(f"no such file or directory: {src}")
            dst = P.join(P.normalize(dst), P.basename(src))
        cart.rename(src, dst)
    return 0


def cmd_mkdir(args) -> int:
    with _open(args, "a") as cart:
        cart.mkdir(args.path, parents=args.parents, exist_ok=args.parents)
    return 0


# -- stat / info / verify --------------------------------------------------------------------------
def cmd_stat(args) -> int:
    with _open(args, "r") as cart:
        st = cart.stat(args.path)
    doc = _entry_doc(st, P.basename(st.path))
    if args.json:
        emit_json(doc)
        return 0
    rows = [
        ("path", _safe(st.path)),
        ("type", doc["type"]),
        ("size", f"{st.size} ({_human(st.size)})" if st.is_file else str(st.size)),
        ("mode", f"{_stat.filemode(st.mode)} ({st.mode:o})"),
        ("ctime", f"{_iso(st.ctime)} ({st.ctime:.6f})" if st.ctime else "-"),
        ("mtime", f"{_iso(st.mtime)} ({st.mtime:.6f})" if st.mtime else "-"),
        ("checksum", _safe(st.checksum or "-")),
    ]
    for k, v in rows:
        print(f"{k + ':':10}{v}")
    return 0


_SIZE_KEYS = {"total_bytes", "file_size", "size_bytes", "capacity", "t1_bytes", "t2_bytes",
              "b1_bytes", "b2_bytes", "file_bytes", "live_bytes", "snapshot_bytes",
              "pending_bytes", "free_bytes", "reclaimable_bytes", "pack_dead_bytes"}


def _print_mapping(d: dict, indent: int = 0) -> None:
    width = max((len(str(k)) for k in d), default=0) + 1
    for k, v in d.items():
        pad = " " * indent
        k = _safe(k)
        if isinstance(v, dict):
            print(f"{pad}{k}:")
            _print_mapping(v, indent + 2)
        elif k in _SIZE_KEYS and isinstance(v, int):
            print(f"{pad}{k + ':':{width}} {v} ({_human(v)})")
        else:
            print(f"{pad}{k + ':':{width}} {_safe_message(v)}")


def cmd_info(args) -> int:
    with _open(args, "r") as cart:
        info = cart.info()
    if args.json:
        emit_json(info)
    else:
        if not args.verbose:      # the ARC cache's counters: of this process, not the archive
            info = {k: v for k, v in info.items() if k != "cache"}
        _print_mapping(info)
    return 0


def cmd_verify(args) -> int:
    with _open(args, "r") as cart:
        size = None
        if _will_draw(args) and not args.quick:
            size = cart.info().get("total_bytes")
        with _bar("verify", size, quiet=args.quiet or args.quick) as progress:
            report = cart.verify(deep=not args.quick, progress=progress.update)
    if args.json:
        emit_json({"archive": args.archive, "ok": report.ok, "deep": not args.quick,
                   "pages_checked": report.pages_checked, "files_checked": report.files_checked,
                   "bytes_checked": report.bytes_checked, "problems": list(report.problems),
                   "warnings": list(getattr(report, "warnings", None) or [])})
        return 0 if report.ok else 1
    for w in getattr(report, "warnings", None) or []:
        print(f"warning: {_safe_message(w)}")
    if report.ok:
        print(f"OK ({'quick' if args.quick else 'deep'}: {report.pages_checked} pages, "
              f"{report.files_checked} files, {report.bytes_checked} bytes checked)")
        return 0
    for p in report.problems:
        print(f"problem: {_safe_message(p)}")
    print(f"FAILED: {_plural(len(report.problems), 'problem')} in {_safe(args.archive)}")
    return 1


# -- snapshots, compaction, freeze (issue 14) -------------------------------------------------------
def _snapshot_json(s) -> dict:
    return {"name": s.name, "time": s.time, "generation": s.generation, "size": s.size}


def cmd_snapshot_create(args) -> int:
    with _open(args, "a") as cart:
        s = cart.snapshot(args.name)
    if args.json:
        emit_json(_snapshot_json(s))
    else:
        print(f"snapshot {_safe(s.name)}: generation {s.generation}, {_human(s.size)}")
    return 0


def cmd_snapshot_ls(args) -> int:
    with _open(args, "r") as cart:
        snaps = cart.snapshots()
    if args.json:
        emit_json([_snapshot_json(s) for s in snaps])
        return 0
    if not snaps:
        print(f"no snapshots in {_safe(args.archive)} (cartridge snapshot create ARCHIVE NAME "
              "takes one)")
    for s in snaps:
        print(f"{_safe(s.name)}\t{_iso(s.time)}\tgeneration {s.generation}\t{_human(s.size)}")
    return 0


def cmd_snapshot_rm(args) -> int:
    with _open(args, "a") as cart:
        before = cart.info()["snapshot_bytes"]
        cart.delete_snapshot(args.name)
        after = cart.info()["snapshot_bytes"]
    if args.json:
        emit_json({"removed": args.name, "released_bytes": before - after})
    else:
        print(f"removed snapshot {_safe(args.name)} ({_human(before - after)} no longer held)")
    return 0


def cmd_snapshot_restore(args) -> int:
    with _open(args, "a") as cart:
        cart.restore(args.name)
        info = cart.info()
    if args.json:
        emit_json({"restored": args.name, "files": info["files"],
                          "total_bytes": info["total_bytes"]})
    else:
        print(f"restored snapshot {_safe(args.name)}: {_plural(info['files'], 'file')}, "
              f"{_human(info['total_bytes'])}")
    return 0


def _compact_json(st, start: int) -> dict:
    return {"pages_moved": st.pages_moved, "bytes_freed": st.bytes_freed,
            "file_bytes_before": start, "file_bytes": st.file_bytes, "done": st.done}


COMPACT_STEP = 1000       # pages per compaction cycle run by compact/freeze (one commit each)


def _vacuum(cart, args, what: str):
    """compact() to completion in cycles of COMPACT_STEP pages, with a progress bar of the bytes
    given back on a terminal. Its total is cart.info()'s reclaimable_bytes, an estimate (what
    a perfect packing would give back): it grows if more comes back, and the bar is finished
    at 100% of what did when the work is done. Returns CompactStats of the whole run."""
    start = cart.info()["file_bytes"]
    quiet = args.quiet or getattr(args, "json", False)
    total = cart.info()["reclaimable_bytes"] if not quiet and _will_draw(args) else None
    moved = freed = 0
    with _bar(what, total, quiet=quiet) as b:
        while True:
            st = cart.compact(COMPACT_STEP)
            moved += st.pages_moved
            freed += st.bytes_freed
            if total is not None and freed > total:
                total = freed
                b.set_total(total)
            b.update(st.bytes_freed)
            if st.done or (st.pages_moved == 0 and st.bytes_freed == 0):
                break
        b.finish()
    return type(st)(moved, max(start - st.file_bytes, 0), st.file_bytes, st.done)


def cmd_compact(args) -> int:
    with _open(args, "a") as cart:
        start = cart.info()["file_bytes"]
        if args.max_pages is not None:            # one cycle
            st = cart.compact(args.max_pages)
        else:                                     # to completion, with progress on a terminal
            st = _vacuum(cart, args, "compact")
    if args.json:
        emit_json(_compact_json(st, start))
    else:
        print(f"freed {_human(st.bytes_freed)} ({_human(start)} -> {_human(st.file_bytes)}), "
              f"{_plural(st.pages_moved, 'page')} moved" + ("" if st.done else
                                                          "; more to do (run again)"))
    return 0


def cmd_freeze(args) -> int:
    with _open(args, "a") as cart:
        start = cart.info()["file_bytes"]
        if not args.no_compact:
            # the vacuum freeze() runs first, with its progress shown; freeze() itself then
            # finds nothing left to move (this handle is the only writer meanwhile)
            _vacuum(cart, args, "freeze: compact")
        cart.freeze(compact=not args.no_compact)
        end = os.path.getsize(args.archive)
    if args.json:
        emit_json({"frozen": True, "file_bytes_before": start, "file_bytes": end})
    else:
        print(f"froze {_safe(args.archive)} (now read-only for good; {_human(start)} -> "
              f"{_human(end)})")
    return 0


def _add_space_commands(add, sub_parent, sync_parent) -> None:
    """The parsers of snapshot, compact and freeze (kept together: other commands are added
    elsewhere)."""
    p = add("snapshot", None, "take, list, remove and restore snapshots (named, read-only "
            "states of the archive that cost nothing until the files change)")
    nadd = add.nested(p, "snapshot")

    def sadd(name, func, help, parents=(), named=True, writes=True):
        q = nadd(name, func, help, parents)
        q.set_defaults(must_exist=writes)
        q.add_argument("archive", metavar="ARCHIVE")
        if named:
            q.add_argument("name", metavar="NAME", type=snapshot_name)
        q.add_argument("--json", action="store_true", help="print JSON")
        return q

    sadd("create", cmd_snapshot_create, "pin the current state under NAME", [sync_parent])
    sadd("ls", cmd_snapshot_ls, "list the snapshots, oldest first", named=False, writes=False)
    sadd("rm", cmd_snapshot_rm, "delete a snapshot (its pages become free)", [sync_parent])
    sadd("restore", cmd_snapshot_restore, "make the files equal snapshot NAME (one atomic "
         "commit; other snapshots stay)", [sync_parent])

    p = add("compact", cmd_compact, "move pages from the end of the file into free space and "
            "shrink the file; ARCHIVE must exist", [sync_parent],
            epilog="Without --max-pages it runs to completion (vacuum), showing progress on a "
                   "terminal. Pages a snapshot reaches never move, so the file cannot shrink "
                   "below the last of them while the snapshot exists.")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("--max-pages", type=positive, default=None, metavar="N",
                   help="run one cycle moving at most N pages")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(must_exist=True)

    p = add("freeze", cmd_freeze, "make the archive permanently read-only (vacuumed first); "
            "ARCHIVE must exist", [sync_parent])
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("--no-compact", action="store_true", help="do not vacuum first")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(must_exist=True)


# -- audit log -------------------------------------------------------------------------------------
AUDIT_ACTIONS = ("verify", "prove", "checkpoint", "ls")


def _record_json(r) -> dict:
    return {"seq": r.seq, "time": r.time, "principal": r.principal, "action": r.action,
            "path": r.path, "dest": r.dest, "result": r.result, "size": r.size,
            "checksum": r.checksum, "raw": r.raw.hex(), "leaf_hash": r.leaf_hash.hex()}


def _record_line(r) -> str:
    t = _dt.datetime.fromtimestamp(r.time, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    path = "-" if r.path is None else _safe(r.path)
    if r.dest is not None:
        path += " -> " + _safe(r.dest)
    extra = "" if r.size is None else f" {r.size}"
    if r.checksum is not None:
        extra += f" {r.checksum}"
    return (f"{r.seq}\t{t}\t{_safe(r.principal) if r.principal is not None else '-'}\t"
            f"{r.action}\t{path}\t{r.result}{extra}")


def cmd_audit_ls(args) -> int:
    import time as _time
    filters = dict(since=args.since, until=args.until, principal=args.principal,
                   action=args.action, path_prefix=args.path, result=args.result)
    start = 0
    follow = args.follow
    deadline = None if follow in (None, float("inf")) else _time.monotonic() + follow
    with _open(args, "r") as cart:
        if follow is None and args.json:          # one document: the list of records
            n = len(cart.audit)
            emit_json([_record_json(r) for r in cart.audit.entries(**filters) if r.seq < n])
            return 0
        while True:                               # --follow --json: one object per line
            n = len(cart.audit)
            for r in cart.audit.entries(start_seq=start, **filters):
                if r.seq >= n:
                    break
                print(json.dumps(_record_json(r)) if args.json else _record_line(r), flush=True)
            start = n
            if follow is None:
                return 0
            if deadline is not None and _time.monotonic() >= deadline:
                return 0
            _time.sleep(0.2)


def cmd_audit_verify(args) -> int:
    key = None
    if args.checkpoint_key:
        from .audit.checkpoint import load_public_key_file
        try:
            key = load_public_key_file(args.checkpoint_key)
        except ImportError as e:            # the checkpoints extra is missing
            raise CLIError(str(e)) from None
        except ValueError as e:
            raise CLIError(f"{args.checkpoint_key}: {e}") from None
    with _open(args, "r") as cart:
        cps = cart.audit.checkpoints()
        passes = 1 + (len(cps) if key is not None else 0)     # each checkpoint re-hashes the log
        quiet = args.quiet or args.json
        total = len(cart.audit) * passes if not quiet and _will_draw(args) else None
        with _bar("audit verify", total, unit="records", quiet=quiet) as b:
            rep = cart.audit.verify(head=args.head, progress=b.update)
            problems = list(rep.problems)
            if key is not None:
                if not cps:
                    problems.append("no checkpoint is stored")
                for i, cp in enumerate(cps):
                    r2 = cart.audit.verify(checkpoint=cp, public_key=key, progress=b.update)
                    problems.extend(f"checkpoint {i} (size {cp.size}): {p}" for p in r2.problems
                                    if p not in problems)
    out = {"ok": not problems, "size": rep.size, "first_bad": rep.first_bad,
           "checkpoints": len(cps), "problems": problems}
    if args.json:
        emit_json(out)
    elif not problems:
        print(f"OK: {_plural(rep.size, 'record')}, {_plural(len(cps), 'checkpoint')} checked")
    else:
        for p in problems:
            print(f"problem: {_safe(p)}")
        if rep.first_bad is not None:
            print(f"first bad record: {rep.first_bad}")
        print(f"FAILED: {_plural(len(problems), 'problem')} in the audit log of {_safe(args.archive)}")
    return 0 if not problems else 1


def cmd_audit_prove(args) -> int:
    with _open(args, "r") as cart:
        total = cart.audit.head().size
        size = total if args.size is None else args.size
        if size > total:
            raise CLIError(f"--size {size}: the log has only {_plural(total, 'record')}")
        if args.seq >= size:
            tree = "the log" if size == total else f"the tree of the first {size}"
            raise CLIError(f"no record {args.seq}: {tree} holds records 0 to {size - 1}" if size
                           else "no record to prove: the log is empty")
        proof = cart.audit.inclusion_proof(args.seq, size)
        rec = cart.audit.record(args.seq)
        root = cart.audit.head_at(size).root
    emit_json({"seq": args.seq, "size": size, "root": root.hex(),
               "leaf_hash": rec.leaf_hash.hex(), "raw": rec.raw.hex(),
               "proof": [h.hex() for h in proof]})
    return 0


def cmd_audit_checkpoint(args) -> int:
    from .audit.checkpoint import load_key_file
    try:
        key = load_key_file(args.key)
    except ImportError as e:                    # the checkpoints extra is missing
        raise CLIError(str(e)) from None
    except ValueError as e:
        raise CLIError(f"{args.key}: {e}") from None
    with _open(args, "a") as cart:
        cp = cart.audit.checkpoint(key)
    if args.json:
        emit_json(cp.to_json())
    else:
        print(f"checkpoint: {cp.size} records, root {cp.root.hex()}, key {cp.public_key.hex()}")
    return 0


def _audit_argv(argv: list[str]) -> list[str]:
    """`cartridge audit ARCHIVE ...` is `cartridge audit ls ARCHIVE ...`."""
    for i, a in enumerate(argv):
        if a == "--sync":
            continue
        if a.startswith("-") or (i and argv[i - 1] == "--sync"):
            continue
        if a == "audit" and i + 1 < len(argv):
            nxt = argv[i + 1]
            if nxt not in AUDIT_ACTIONS and nxt not in ("-h", "--help"):
                return argv[:i + 1] + ["ls"] + argv[i + 1:]
        return argv
    return argv


# -- policies --------------------------------------------------------------------------------------
def _read_policy_file(name: str) -> str:
    """The text of a policy file ('-': standard input); CLIError if it is not UTF-8."""
    if name == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:                   # a text stream that is not over bytes
            return sys.stdin.read()
        data, name = stdin.read(), "standard input"
    else:
        with builtins.open(name, "rb") as f:
            data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CLIError(f"{name}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                       "a policy is a JSON document in UTF-8") from None


def cmd_policy_set(args) -> int:
    text = _read_policy_file(args.file)
    with _open(args, "a") as cart:
        cart.set_policy(args.name, text)
    print(f"stored policy {_safe(args.name)}")
    return 0


def cmd_policy_get(args) -> int:
    with _open(args, "r") as cart:
        doc = cart.get_policy(args.name)
    if args.json:                   # the policy document itself, as emit_json prints any document
        emit_json(doc)
        return 0
    print(json.dumps(doc, indent=2, sort_keys=True))
    return 0


def cmd_policy_ls(args) -> int:
    with _open(args, "r") as cart:
        docs = cart.policies()
    rows = []
    for name, doc in docs.items():
        statements = doc.get("Statement", [])
        rows.append((name, len(statements) if isinstance(statements, list) else 1))
    if args.json:
        emit_json([{"name": name, "statements": n} for name, n in rows])
        return 0
    for name, n in rows:
        print(f"{_safe(name)}\t{_plural(n, 'statement')}")
    return 0


def cmd_policy_rm(args) -> int:
    with _open(args, "a") as cart:
        cart.delete_policy(args.name)
    print(f"removed policy {_safe(args.name)}")
    return 0


def cmd_policy_check(args) -> int:
    from .iam import actions

    service = args.action.partition(":")[0].casefold()
    if service == actions.SERVICE and actions.known(args.action) is None:
        best = actions.suggestion(args.action)
        raise UsageError(f"argument --action: unknown action {args.action!r}" +
                         (f"; did you mean {best!r}?" if best
                          else f" (cartridge's actions are {', '.join(actions.ACTIONS)})"))
    tags, context = dict(args.tag or ()), dict(args.context or ())
    with _open(args, "r") as cart:
        stored = bool(cart.policies())
        result = cart.check_access(args.principal, args.action, args.resource, tags=tags,
                                   context=context)
    allowed = result.decision.value == "Allow"
    if args.json:
        emit_json({"decision": result.decision.value, "allowed": allowed,
                   "principal": args.principal, "action": args.action,
                   "resource": args.resource, "policies_stored": stored,
                   "statements": [str(ref) for ref in result.statements]})
        return 0 if allowed else 3
    print(result.decision.value)
    if not result.statements:
        print("  (no policies stored: a principal may do everything)" if not stored
              else "  (no statement matched)")
    for ref in result.statements:
        print(f"  {_safe_message(ref)}")       # composed: the statement id is a repr
    return 0 if result.decision.value == "Allow" else 3


# -- sql -------------------------------------------------------------------------------------------
def _sql_value(v, for_json: bool):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex() if for_json else f"x'{bytes(v).hex()}'"
    if v is None:
        return None if for_json else "NULL"
    return v if for_json else _safe(v)


def _json_value(v):
    v = _sql_value(v, True)
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"      # JSON has no infinities
    return v


def _json_columns(cols: list[str]) -> list[str]:
    """Column names as JSON keys: a repeated name gets ':2', ':3'... (keys must differ)."""
    seen: dict[str, int] = {}
    out = []
    for c in cols:
        n = seen.get(c, 0) + 1
        seen[c] = n
        key = c if n == 1 else f"{c}:{n}"
        while key in seen and key != c:
            n += 1
            key = f"{c}:{n}"
        out.append(key)
    return out


def _run_sql(cart, path: str, sql: str, readonly: bool):
    def run():
        conn = cart.sqlite(path, readonly=readonly)
        try:
            cur = conn.cursor()
            results = []        # (columns, rows) of each statement that returns columns

            def trace(cursor, stmt, bindings):
                outer = conn.exec_trace          # the VFS's own trace comes first
                if outer is not None and not outer(cursor, stmt, bindings):
                    return False
                desc = cursor.get_description()
                if desc:
                    results.append(([d[0] for d in desc], []))
                return True

            cur.exec_trace = trace
            for row in cur.execute(sql):
                results[-1][1].append(row)
            return results
        except apsw.Error as e:
            raise CLIError(f"SQL error: {e}") from None
        except UnicodeDecodeError as e:     # apsw decodes TEXT strictly, and cannot be told not to
            raise CLIError(f"SQL: a TEXT value or column name is not valid UTF-8 ({e.reason} at "
                           f"byte {e.start}); select hex(column) or CAST(column AS BLOB) to see "
                           "its bytes") from None
        finally:
            conn.close()

    if readonly:
        return run()
    # every statement's SQLite commit is a step of one archive transaction: all or nothing
    with cart.transaction():
        return run()


def _is_readonly_error(e: CLIError) -> bool:
    msg = str(e).lower()
    return "readonly" in msg or "read-only" in msg or "read only" in msg or \
        "unable to open" in msg or "no such member" in msg   # ATTACH of a new member


def cmd_sql(args) -> int:
    results = None
    with _open(args, "r") as cart:
        if cart.exists(args.path):
            try:
                results = _run_sql(cart, args.path, args.sql, readonly=True)
            except CLIError as e:
                if not _is_readonly_error(e):
                    raise
        elif not args.create:
            raise NotFoundError(f"no such database: {args.path}")
    if results is None:        # the statement writes: again through a writable handle
        with _open(args, "a") as cart:
            results = _run_sql(cart, args.path, args.sql, readonly=False)
    if args.json:
        out = [[dict(zip(_json_columns(cols), (_json_value(v) for v in row))) for row in rows]
               for cols, rows in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=None if args.compact else 2,
                         allow_nan=False))
        return 0
    for n, (cols, rows) in enumerate(results):
        if n:
            print()
        cells = [[_sql_value(v, False) for v in row] for row in rows]
        cols = [_safe(c) for c in cols]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
        print("  ".join("-" * w for w in widths))
        for row, r in zip(rows, cells):
            print("  ".join(v.rjust(w) if isinstance(x, (int, float)) else v.ljust(w)
                            for x, v, w in zip(row, r, widths)).rstrip())
        print(f"({_plural(len(rows), 'row')})")
    return 0


# -- demo ------------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import DemoError, run_demo

    try:
        run_demo(args.path, out=sys.stdout, overwrite=args.force)
    except DemoError as e:
        raise CLIError(f"demo check failed: {e}") from None
    return 0


# -- the parser ------------------------------------------------------------------------------------
# Examples shown at the end of each command's --help (tests/test_cli_ux.py parses every one).
EXAMPLES: dict[str, list[str]] = {
    "": ["cartridge put data.cart ./photos                # stored as /photos/...",
         "cartridge ls data.cart /photos -lh",
         "cartridge get data.cart /photos --to ./out",
         "cartridge verify data.cart"],
    "create": ["cartridge create data.cart"],
    "put": ["cartridge put data.cart ./docs --to /data          # /data/docs/...",
            "cartridge put data.cart report.pdf --to /inbox/      # /inbox/report.pdf",
            "cartridge put data.cart ./src --exclude '*.o' --exclude .git"],
    "get": ["cartridge get data.cart /data/docs --to ./out     # ./out/docs/...",
            "cartridge get data.cart / --to ./everything"],
    "cat": ["cartridge cat data.cart /docs/a.txt | head"],
    "ls": ["cartridge ls data.cart /docs",
           "cartridge ls data.cart / -lRh",
           "cartridge ls data.cart /docs --json"],
    "tree": ["cartridge tree data.cart",
             "cartridge tree data.cart /docs -L 2 -s -h"],
    "du": ["cartridge du data.cart /docs -h",
           "cartridge du data.cart / -d 1",
           "cartridge du data.cart /docs -s --json"],
    "rm": ["cartridge rm data.cart /docs/old.txt",
           "cartridge rm data.cart /tmp -r"],
    "mv": ["cartridge mv data.cart /docs/a.txt /archive/     # into a directory",
           "cartridge mv data.cart /docs /old-docs"],
    "mkdir": ["cartridge mkdir data.cart /inbox/2024 -p"],
    "stat": ["cartridge stat data.cart /docs/a.txt",
             "cartridge stat data.cart /docs/a.txt --json"],
    "info": ["cartridge info data.cart",
             "cartridge info data.cart -v                # with the page cache's counters",
             "cartridge info data.cart --json"],
    "verify": ["cartridge verify data.cart",
               "cartridge verify data.cart --quick --json"],
    "policy": ["cartridge policy set data.cart team team.json",
               "cartridge policy check data.cart --principal ann --action cart:GetObject "
               "--resource /shared/x"],
    "policy set": ["cartridge policy set data.cart team team.json",
                   "cat team.json | cartridge policy set data.cart team -"],
    "policy get": ["cartridge policy get data.cart team"],
    "policy ls": ["cartridge policy ls data.cart",
                  "cartridge policy ls data.cart --json"],
    "policy rm": ["cartridge policy rm data.cart team"],
    "policy check": ["cartridge policy check data.cart --principal ann --action cart:GetObject "
                     "--resource /shared/x",
                     "cartridge policy check data.cart --principal ann --action cart:PutObject "
                     "--resource /home/ann/f --tag team=red --json"],
    "sql": ["cartridge sql data.cart /app.db 'SELECT count(*) FROM t'",
            "cartridge sql data.cart /app.db 'CREATE TABLE t(x)' --create",
            "cartridge sql data.cart /app.db 'SELECT * FROM t' --json"],
    "demo": ["cartridge demo",
             "cartridge demo /tmp/demo.cart --force"],
    "snapshot": ["cartridge snapshot create data.cart before-import",
                 "cartridge snapshot restore data.cart before-import"],
    "snapshot create": ["cartridge snapshot create data.cart v1",
                        "cartridge snapshot create data.cart v1 --json"],
    "snapshot ls": ["cartridge snapshot ls data.cart",
                    "cartridge snapshot ls data.cart --json"],
    "snapshot rm": ["cartridge snapshot rm data.cart v1"],
    "snapshot restore": ["cartridge snapshot restore data.cart v1"],
    "compact": ["cartridge compact data.cart                  # to completion (vacuum)",
                "cartridge compact data.cart --max-pages 100  # one small cycle",
                "cartridge compact data.cart --json"],
    "freeze": ["cartridge freeze data.cart",
               "cartridge freeze data.cart --no-compact --json"],
    "keygen": ["cartridge keygen release.key                 # prints the public key (hex)"],
    "export": ["cartridge export data.cart release.eng --sign release.key",
               "cartridge export data.cart docs.eng --include /docs --compression zstd",
               "cartridge export data.cart secret.eng --encrypt aes.key --json",
               "cartridge export data.cart v1.eng --snapshot v1",
               "cartridge export data.cart release.eng --sign release.key --freeze"],
    "import": ["cartridge import release.eng copy.cart",
               "cartridge import release.eng copy.cart --verify-key 3b6a27bc...ab01"],
    "engram": ["cartridge engram ls release.eng -l",
               "cartridge engram verify release.eng --public-key 3b6a27bc...ab01"],
    "engram ls": ["cartridge engram ls release.eng -l",
                  "cartridge engram ls release.eng --json"],
    "engram cat": ["cartridge engram cat release.eng docs/a.txt | head"],
    "engram verify": ["cartridge engram verify release.eng",
                      "cartridge engram verify release.eng --public-key 3b6a27bc...ab01 --json"],
    "engram info": ["cartridge engram info release.eng",
                    "cartridge engram info release.eng --json"],
    "audit": ["cartridge audit ls data.cart --principal ann --result denied   # or: audit data.cart ...",
              "cartridge audit verify data.cart --checkpoint-key audit.pub"],
    "audit ls": ["cartridge audit ls data.cart --since 2026-01-01 --action cart:PutObject",
                 "cartridge audit ls data.cart --path /docs/ --json",
                 "cartridge audit ls data.cart --follow 60"],
    "audit verify": ["cartridge audit verify data.cart",
                     "cartridge audit verify data.cart --checkpoint-key audit.pub --json"],
    "audit prove": ["cartridge audit prove data.cart 41          # JSON for verify_inclusion"],
    "audit checkpoint": ["cartridge audit checkpoint data.cart --key audit.key"],
}


def _epilog(name: str, prose: str | None = None) -> str:
    """A command's --help epilog: its prose (wrapped) and its examples (kept as written)."""
    parts = [textwrap.fill(prose, 88)] if prose else []
    examples = EXAMPLES.get(name)
    if examples:
        parts.append("examples:\n" + "\n".join(f"  {e}" for e in examples))
    return "\n\n".join(parts)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as _epilog() laid them out (examples keep their lines)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a command's options accepted anywhere among its positionals, as users
    type them (`ls A -l /p`, `ls -l A /p`, `ls A /p -l`), and usage errors escaped."""

    _intermixed = False

    def parse_known_args(self, args=None, namespace=None):
        has_commands = any(a.nargs == argparse.PARSER for a in self._get_positional_actions())
        if has_commands or self._intermixed:     # intermixed parsing calls back in here
            return super().parse_known_args(args, namespace)
        self._intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixed = False

    def error(self, message):
        super().error(_safe_message(message))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    sync_help = ("durability of commits for commands that change the archive: full (durable when "
                 "the command returns, default), normal (consistent after power loss, may lose "
                 "the commits since the last sync; a command syncs when it ends), off "
                 "(survives a killed process, not a power cut)")
    parser = _Parser(
        prog=PROG,
        description="Create, fill, inspect and check cartridge (.cart) archives.",
        formatter_class=_Formatter,
        epilog=_epilog("", "Each command opens the archive in the mode it needs: readers (get, cat, ls, "
               "stat, tree, du, "
               "info, verify, policy get/ls/check) read-only, as cartridge.open() does by default, "
               "so a mistyped name is an error; create makes a new archive (an error if the file "
               "exists); put creates the archive if it is missing; rm, mv, mkdir, policy set/rm and "
               "sql need an existing archive. Options may come before, between or after the "
               "arguments. Names from an archive are printed with control and invisible characters "
               "escaped (\\x1b, \\u202e...). Errors print one line on stderr. Progress bars (put, "
               "get, verify, compact, freeze, export, import, audit verify) are drawn on "
               "stderr when it is a terminal and rich or tqdm is installed ('cli' extra); "
               "-q/--quiet or CARTRIDGE_PROGRESS=0 turns them off. "
               "'cartridge COMMAND --help' shows a command's options and examples. " + EXIT_CODES),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--sync", choices=("full", "normal", "off"), default="full", help=sync_help)
    quiet_help = "no progress bars, and no summary line from put/get"
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet_help)
    # Every subcommand also accepts -q/--quiet after its name; SUPPRESS keeps the global value.
    quiet_parent = _Parser(add_help=False)
    quiet_parent.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                              help=quiet_help)
    # Mutating subcommands also accept --sync after their name; SUPPRESS keeps the global value.
    sync_parent = _Parser(add_help=False)
    sync_parent.add_argument("--sync", choices=("full", "normal", "off"), default=argparse.SUPPRESS,
                             help="see the global --sync")

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, func, help, parents=(), epilog=None, **kw):
        p = sub.add_parser(name, help=help, description=textwrap.fill(help, 88),
                           parents=[quiet_parent, *parents], epilog=_epilog(name, epilog),
                           formatter_class=_Formatter, **kw)
        p.set_defaults(func=func, parser=p)
        return p

    def nested(p, group: str):
        """The adder of `group ACTION` subcommands below parser p (as `add` is for commands:
        -q/--quiet, the examples of EXAMPLES[f"{group} {name}"] in --help)."""
        actions = p.add_subparsers(dest=f"{group}_command", metavar="ACTION", required=True)

        def nadd(name, func, help, parents=(), epilog=None):
            q = actions.add_parser(name, help=help, description=textwrap.fill(help, 88),
                                   parents=[quiet_parent, *parents],
                                   epilog=_epilog(f"{group} {name}", epilog),
                                   formatter_class=_Formatter)
            q.set_defaults(func=func, parser=q)
            return q
        return nadd

    add.nested = nested     # type: ignore[attr-defined]   # for the command groups added elsewhere

    p = add("create", cmd_create, "create a new empty archive (error if ARCHIVE exists)", [sync_parent])
    p.add_argument("archive", metavar="ARCHIVE")

    p = add("put", cmd_put, "copy local files and directories (recursively) into the archive, "
            "all in one atomic transaction; creates ARCHIVE if missing", [sync_parent],
            epilog="A directory SRC lands below DEST under its own name: 'put a.cart ./docs --to "
                   "/data' stores ./docs/x.txt as /data/docs/x.txt. A single file SRC with a DEST "
                   "that does not end in '/' is stored as DEST; otherwise files go inside DEST. "
                   "Existing archive files are replaced. Each file's permission bits and mtime "
                   "are stored (not for directories). Symbolic links: a SRC named here is "
                   "followed; below it, links to files are followed (their target's content is "
                   "stored), links to directories are skipped unless --follow-symlinks, and "
                   "--no-follow skips every link. Names an archive cannot hold (not UTF-8, "
                   "control characters, a name over 255 bytes, a path over 4096) are skipped. "
                   "Each skipped entry gets a warning on stderr and the summary counts them.")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("sources", metavar="SRC", nargs="+", help="local file or directory")
    p.add_argument("--to", metavar="DEST", default=None, help="archive destination (default: /)")
    links = p.add_mutually_exclusive_group()
    links.add_argument("--follow-symlinks", action="store_true",
                       help="follow symbolic links to directories too (a link back to a "
                            "directory above it is skipped: no loops)")
    links.add_argument("--no-follow", action="store_true",
                       help="skip every symbolic link below SRC")
    p.add_argument("--exclude", metavar="GLOB", action="append", default=[],
                   help="leave out entries below SRC whose path relative to SRC (a/b/c.txt) or "
                        "base name (c.txt) matches GLOB (fnmatch: '*' also matches '/'; case "
                        "sensitive); an excluded directory leaves out all below it. Repeatable")
    p.add_argument("--strict", action="store_true",
                   help="a name that cannot be stored is an error (exit 1, nothing written) "
                        "instead of a warning")
    p.add_argument("--no-preserve", action="store_true",
                   help="store neither permission bits nor mtimes (files get 0644 and the "
                        "time of the put; a replaced file keeps its mode)")

    p = add("get", cmd_get, "extract files or directory trees (recursively) to a local directory",
            epilog="A directory PATH is extracted under its own name ('/' extracts the whole "
                   "archive's contents). Existing local files are replaced; nothing is ever "
                   "written outside LOCALDIR. Each file gets its stored mtime and permission "
                   "bits, as tar gives them to a user: masked by the umask, setuid, setgid and "
                   "sticky bits never restored; set on the new file before it replaces the "
                   "old, never through a link. Directories get the time of extraction.")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("paths", metavar="PATH", nargs="+", help="archive file or directory")
    p.add_argument("--to", metavar="LOCALDIR", default=None,
                   help="local destination (default: the current directory)")
    p.add_argument("--no-preserve", action="store_true",
                   help="ignore the stored mode and mtime: files get 0666 & ~umask and the "
                        "time of extraction")

    p = add("cat", cmd_cat, "write a file's bytes to standard output")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("path", metavar="PATH")

    p = add("ls", cmd_ls, "list a directory (directories end with '/')", conflict_handler="resolve",
            epilog="-l shows, per entry: permission bits, size in bytes ('-' for a directory), "
                   "mtime (local time, ISO 8601; '-' for an implicit directory), the content "
                   "checksum (xxh3-64, 16 hex digits) and the name. -h is --human here, as in "
                   "ls(1); --help still shows this help.")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p.add_argument("-l", dest="long", action="store_true",
                   help="long format: mode, size, mtime, checksum")
    p.add_argument("-h", "--human", dest="human", action="store_true",
                   help="with -l: sizes as 1.5K, 20M, 3.1G (powers of 1024)")
    p.add_argument("-R", dest="recursive", action="store_true",
                   help="list the whole tree below PATH (full paths)")
    add_json_flag(p)

    p = add("tree", cmd_tree, "draw the directory tree below PATH", conflict_handler="resolve",
            epilog="Directories end with '/'; the last line counts the directories and files "
                   "shown (below -L's depth they are not counted).")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p.add_argument("-L", dest="depth", type=count, metavar="DEPTH", default=None,
                   help="descend at most DEPTH levels")
    p.add_argument("-s", "--sizes", dest="sizes", action="store_true", help="show file sizes")
    p.add_argument("-h", "--human", dest="human", action="store_true",
                   help="with -s: sizes as 1.5K, 20M (powers of 1024)")

    p = add("du", cmd_du, "show the bytes of content below PATH, per directory",
            conflict_handler="resolve",
            epilog="Sizes are content bytes (the sum of file sizes, as du --apparent-size), not "
                   "pages used in the archive ('cartridge info' shows those). Each directory is "
                   "printed after the directories below it, PATH last. --json: {path, bytes, "
                   "files, entries: [{path, bytes, files}]}.")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p.add_argument("-s", "--summarize", action="store_true", help="only PATH's total")
    p.add_argument("-d", "--max-depth", dest="depth", type=count, metavar="N", default=None,
                   help="show directories at most N levels below PATH")
    p.add_argument("-h", "--human", dest="human", action="store_true",
                   help="sizes as 1.5K, 20M, 3.1G (powers of 1024)")
    add_json_flag(p)

    p = add("rm", cmd_rm, "remove files or directories (all or none); ARCHIVE must exist", [sync_parent])
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("paths", metavar="PATH", nargs="+")
    p.add_argument("-r", "--recursive", action="store_true", help="remove directories and their contents")
    p.set_defaults(must_exist=True)

    p = add("mv", cmd_mv, "rename or move a file or directory (into DST if DST is a directory); "
            "ARCHIVE must exist", [sync_parent])
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.set_defaults(must_exist=True)

    p = add("mkdir", cmd_mkdir, "create a directory; ARCHIVE must exist", [sync_parent])
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("path", metavar="PATH")
    p.add_argument("-p", "--parents", action="store_true",
                   help="create missing parents; no error if it exists")
    p.set_defaults(must_exist=True)

    p = add("stat", cmd_stat, "show a file's or directory's metadata")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("path", metavar="PATH")
    add_json_flag(p)

    p = add("info", cmd_info, "show archive counts, sizes, free space and fragmentation",
            epilog="The page cache's counters (the cache of this process, not a property of "
                   "the archive) are shown with -v and are always in --json.")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show the page cache's counters (hits, misses, sizes)")
    add_json_flag(p)

    p = add("verify", cmd_verify, "check the archive's pages and checksums; exit 1 on any problem")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("--quick", action="store_true", help="skip the content checksums (structure only)")
    add_json_flag(p)

    p = add("policy", None, "manage IAM policies stored in the archive and check decisions",
            epilog="'policy check' exits 0 when the action is allowed and 3 when it is denied.")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    def padd(name, func, help, parents=()):
        q = psub.add_parser(name, help=help, description=textwrap.fill(help, 88),
                            parents=[quiet_parent, *parents], epilog=_epilog(f"policy {name}"),
                            formatter_class=_Formatter)
        q.set_defaults(func=func, parser=q)
        q.add_argument("archive", metavar="ARCHIVE")
        return q

    q = padd("set", cmd_policy_set, "store or replace a policy from a JSON file ('-': stdin)",
             [sync_parent])
    q.add_argument("name", metavar="NAME")
    q.add_argument("file", metavar="FILE")
    q.set_defaults(must_exist=True)
    q = padd("get", cmd_policy_get, "print a stored policy as JSON")
    q.add_argument("name", metavar="NAME")
    add_json_flag(q, "print the policy document as emit_json prints every --json document "
                     "(escaped, in its stored key order)")
    q = padd("ls", cmd_policy_ls, "list stored policies")
    add_json_flag(q)
    q = padd("rm", cmd_policy_rm, "remove a stored policy", [sync_parent])
    q.add_argument("name", metavar="NAME")
    q.set_defaults(must_exist=True)
    q = padd("check", cmd_policy_check, "print the decision for one request and the statements "
             "that decided it")
    q.add_argument("--principal", required=True, metavar="P")
    q.add_argument("--action", required=True, metavar="A", help="e.g. cart:GetObject")
    q.add_argument("--resource", required=True, metavar="R", help="an archive path")
    q.add_argument("--tag", action="append", type=pair, metavar="KEY=VALUE",
                   help="a principal tag")
    q.add_argument("--context", action="append", type=pair, metavar="KEY=VALUE",
                   help="an extra condition key, e.g. cart:SourceIp=10.0.0.1")
    add_json_flag(q)
    p = add("sql", cmd_sql, "run SQL against a SQLite database stored in the archive and print "
            "the rows as a table (or JSON)", [sync_parent],
            epilog="Read-only statements run through a read-only handle; if one writes, all "
                   "run again through a writable one, as one atomic archive commit (a failing "
                   "statement leaves nothing of the earlier ones). Every statement that returns "
                   "columns prints a table (with '(0 rows)' when empty). --json: one list of "
                   "objects per such statement; a repeated column name gets ':2', ':3'...; "
                   "blobs are hex, infinities the strings \"Infinity\"/\"-Infinity\".")
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("path", metavar="DB", help="database member, e.g. /app.db")
    p.add_argument("sql", metavar="SQL", help="one or more SQL statements")
    p.add_argument("--json", action="store_true",
                   help="print the rows as a JSON list of objects (blobs as hex, repeated "
                        "column names get ':2'..., infinities as strings)")
    p.add_argument("--compact", action="store_true", help="with --json: on one line")
    p.add_argument("--create", action="store_true", help="create the database if it is missing")
    p.set_defaults(must_exist=True)

    _add_space_commands(add, sub, sync_parent)
    # Engram: keygen, export, import, engram ls|cat|verify|info (their own module)
    from .cli_engram import add_commands as add_engram_commands
    add_engram_commands(sub, add, sync_parent)
    p = add("audit", None, "read and check the audit log: 'audit ARCHIVE' lists records",
            epilog="cartridge audit ARCHIVE [--since T] [--until T] [--principal P] [--action A] "
                   "[--path PREFIX] [--result R] [--json] [--follow]; cartridge audit verify "
                   "ARCHIVE [--checkpoint-key PUBKEY] [--head SIZE:ROOT]; cartridge audit prove "
                   "ARCHIVE SEQ; cartridge audit checkpoint ARCHIVE --key KEYFILE. Times are Unix "
                   "seconds or ISO 8601 (UTC unless it says otherwise). 'audit verify' exits 1 on "
                   "any problem. See docs/AUDIT.md.")
    nadd = nested(p, "audit")

    def aadd(name, func, help, parents=()):
        q = nadd(name, func, help, parents)
        q.set_defaults(must_exist=True)
        q.add_argument("archive", metavar="ARCHIVE")
        return q

    q = aadd("ls", cmd_audit_ls, "list records (the default: 'audit ARCHIVE')")
    q.add_argument("--since", metavar="T", type=time_value, help="records at or after T")
    q.add_argument("--until", metavar="T", type=time_value, help="records before T")
    q.add_argument("--principal", metavar="P")
    q.add_argument("--action", metavar="A", help="e.g. cart:PutObject")
    q.add_argument("--path", metavar="PREFIX", help="records whose path starts with PREFIX")
    q.add_argument("--result", choices=("allowed", "denied", "error"))
    q.add_argument("--json", action="store_true", help="one JSON object per line (with raw and "
                   "leaf_hash in hex)")
    q.add_argument("--follow", nargs="?", const=float("inf"), default=None, type=seconds,
                   metavar="SECONDS",
                   help="keep printing records as other processes commit them (Ctrl-C stops; "
                        "with SECONDS: stop after that long)")
    q = aadd("verify", cmd_audit_verify, "re-hash the whole log and check its chain, interior "
             "hashes, head and checkpoints; exit 1 on any problem")
    q.add_argument("--checkpoint-key", metavar="PUBKEY", help="Ed25519 public key file (PEM, raw "
                   "32 bytes or 64 hex digits) every stored checkpoint must be signed with")
    q.add_argument("--head", metavar="SIZE:ROOT", type=tree_head, help="a tree head saved "
                   "earlier that the log must still extend")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = aadd("prove", cmd_audit_prove, "print the inclusion proof of record SEQ as JSON (what "
             "cartridge.audit.verify_inclusion takes)")
    q.add_argument("seq", metavar="SEQ", type=count)
    q.add_argument("--size", type=count, default=None, help="in the tree of SIZE records "
                   "(default: the whole log)")
    q = aadd("checkpoint", cmd_audit_checkpoint, "sign the log's head with an Ed25519 key and "
             "store the checkpoint in the archive", [sync_parent])
    q.add_argument("--key", required=True, metavar="KEYFILE", help="Ed25519 private key (PEM "
                   "PKCS#8, raw 32-byte seed, or 64 hex digits)")
    q.add_argument("--json", action="store_true", help="print the checkpoint as JSON")

    p = add("demo", cmd_demo, "build a sample archive from generated data and exercise the API")
    p.add_argument("path", metavar="PATH", nargs="?", default=None,
                   help="archive to create and keep, with its Engram export beside it (x.cart: "
                        "x.eng) (default: a temporary one, removed at the end)")
    p.add_argument("--force", action="store_true",
                   help="replace PATH (and its .eng) if they exist")
    return parser


def _complete(parser: argparse.ArgumentParser) -> None:
    """Answer a completion request of the shell through argcomplete, if it is installed
    (`pip install "cartridge[cli]"`, then once: eval "$(register-python-argcomplete cartridge)").
    argcomplete prints the candidates and exits; without it nothing happens."""
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:     # shell completion (the optional argcomplete package)
        _complete(parser)
    try:
        args = parser.parse_args(_audit_argv(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as e:       # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cartridge cat x | head`): stop quietly, and keep the
        # interpreter from complaining when it flushes stdout at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except UsageError as e:             # as argparse reports a usage error: usage, then the error
        parser = getattr(args, "parser", parser)
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {_error_message(e)}", file=sys.stderr)
        return 2
    except (CartridgeError, OSError, CLIError, UnicodeError, apsw.Error) as e:
        print(f"{PROG}: error: {_error_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:              # a bug: still one line, with the way to the traceback
        if os.environ.get("CARTRIDGE_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {_error_message(e)}; run with "
              "CARTRIDGE_DEBUG=1 for a traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":      # pragma: no cover
    sys.exit(main())
