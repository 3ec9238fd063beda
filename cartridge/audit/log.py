"""The audit log of an open archive (docs/AUDIT.md): what the operation hook reports becomes
records, written by a pre-commit participant in the same commit as the change they describe.

One AuditLog per owner handle (`_handle.feature(h, "audit", ...)`):

* changes (events delivered with `changed` True, before their commit) are staged and go into
  that commit; a rollback drops them (after_rollback), so no record claims a change that did
  not commit and no committed change lacks its record;
* denials and failed attempts are staged too but survive a rollback (they happened);
* successful reads, listings and stats (level "all") go through the C ring
  (cartridge._core.ringbuf.Ring) and a background thread commits them every `flush_ms`;
* close() ends with a commit point (the hook's), which writes everything still staged.

Read-only handles record nothing: they cannot write the archive (docs/AUDIT.md says so).
"""
from __future__ import annotations

import itertools
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .. import _handle as H
from .._core.auditblock import pack_slot as fast_slot
from .._core.auditblock import unpack_slot
from .._core.ringbuf import Ring
from ..errors import CartridgeError, CorruptionError
from ..iam import actions as A
from . import record as R
from .checkpoint import Checkpoint, sign
from .checkpoint import verify_checkpoint as _verify_checkpoint
from .store import (
    BLOCK_RECORDS,
    LEVELS,
    STRINGS_PER_ENTRY,
    AuditReport,
    LogView,
    LogWriter,
    TreeHead,
    bloom_has,
    parse_block,
    verify_log,
)

DEFAULT_FLUSH_MS = 50
RING_CAPACITY = 8192
RING_SLOT = 240
SET_LEVEL = "cart:SetAuditLevel"       # the record of a level switch; its path is the new level
CHANGING = frozenset((A.PUT_OBJECT, A.DELETE_OBJECT, H.RENAME, A.PUT_POLICY))
RESULT = {"ok": "allowed", "denied": "denied"}

# a read record in a ring slot: time_us, result, flag bits, then u16-length strings
SLOT_HEAD = struct.Struct("<qBBH")
OVERFLOW = 0xFF                        # a slot that names an entry too long for a slot


def check_level(level: object) -> str:
    if level not in LEVELS:
        raise ValueError(f"audit must be one of {LEVELS}, not {level!r}")
    return str(level)


def check_flush_ms(ms: object) -> int:
    if type(ms) is not int or not 10 <= ms <= 100:
        raise ValueError(f"audit_flush_ms must be an int in 10..100, not {ms!r}")
    return ms


class AuditLog:
    """The per-archive recorder (a participant of the archive's engine)."""

    def __init__(self, h, level: str, flush_ms: int) -> None:
        self.h = weakref.ref(h)
        self.level = level
        self.flush_ms = flush_ms
        eng = H.engine(h)
        self.writable = eng.writable
        self.writer = LogWriter(eng) if self.writable else None
        self._lock = threading.Lock()
        self.staged: list[tuple] = []      # entries (see on_event), the last field `keep`
        self.inflight: list[tuple] = []    # staged into the commit under way
        self._inflight_gen = -1                        # the generation they were staged on
        self.ring = Ring(RING_CAPACITY, RING_SLOT) if level == "all" and self.writable else None
        self.overflow: dict[int, tuple] = {}
        self._ids = itertools.count()
        self.switch = False            # the log's level differs from ours: record the switch
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finalizer: Any = None
        if self.writable:
            try:
                n = self.writer.size()                                   # type: ignore[union-attr]
                # an archive without a log opened with "off": nothing to say (no record ever)
                self.switch = (self.writer.level() != level or n == 0) and (n > 0 or level != "off")  # type: ignore[union-attr]
            except CartridgeError:
                self.switch = True

    # -- the hook side ----------------------------------------------------------------------
    # A staged entry is one tuple: (time, principal, action, path, dest, result, size,
    # checksum, keep), in the form the writer's C batch takes (time in float seconds as the
    # event has it, checksum an int or 16 hex digits); `keep`: it survives a rollback (a
    # refusal or failed attempt happened whatever the transaction's fate). Nothing is checked
    # or encoded here: before_commit hands the whole batch to LogWriter.append, which encodes,
    # hashes and chains it in one pass in C and calls `clean` only for an entry a field of
    # which the format cannot hold as given.
    def on_event(self, ev: H.Event) -> None:
        action = ev.action
        if action is None or not self.writable:
            return
        level = self.level
        if level == "off":
            return
        res = ev.result
        if ev.changed and res == "ok":
            # (delivered holding the handle's lock, as before_commit and after_rollback run:
            # a plain append cannot race the swap of `staged`)
            files = ev.files
            if files and ev.method == "write_many":
                t, p = ev.time, ev.principal
                self.staged.extend([(t, p, action, path, None, "allowed", size, csum, False)
                                    for path, size, csum in files])
            else:
                self.staged.append((ev.time, ev.principal, action, ev.path, ev.dest, "allowed",
                                    ev.size, ev.csum, False))
            return
        if ev.changed:          # (a changed event always has result "ok" when delivered)
            self.staged.append((ev.time, ev.principal, action, ev.path, ev.dest,
                                RESULT.get(res, "error"), ev.size, ev.csum, False))
            return
        if res == "denied" and ev.refused:
            action = ev.refused[0]
        self.on_call(ev.principal, action, ev.path, ev.dest, res, ev.size, ev.time)

    def on_call(self, principal: str | None, action: str, path: str | None, dest: str | None,
                res: str, size: int | None, t: float) -> None:
        """A call that changed nothing (a read, a denial, a failure): on_event's fields, also
        what the hook's sink hands over for the owner's read-only calls (no Event built)."""
        if res == "ok":
            if self.level == "all" and action not in CHANGING:
                ring = self.ring
                if ring is not None:        # the common case: packed in C into its slot
                    data = fast_slot(t, principal, action, path, dest, "allowed", size,
                                     RING_SLOT)
                    if data is not None:
                        ring.push(data)
                        if self._thread is None:
                            self._start_drain()
                        return
                self._queue((t, principal, action, path, dest, "allowed", size, None))
        elif res == "denied":
            self._keep((t, principal, action, path, dest, "denied", size, None, True))
        elif action in CHANGING:
            self._keep((t, principal, action, path, dest, "error", size, None, True))
        elif self.level == "all":
            self._queue((t, principal, action, path, dest, "error", size, None))

    def _keep(self, entry: tuple) -> None:
        """A record that survives a rollback (a refusal, a failed change): staged under the
        log's lock (delivered outside the handle's lock); the drain thread commits it unless a
        commit comes first."""
        with self._lock:
            self.staged.append(entry)
        self._start_drain()

    def _queue(self, entry: tuple) -> None:
        """A read record into the ring (C; waits without the GIL while the ring is full)."""
        ring = self.ring
        if ring is None:
            return
        t, principal, action, path, dest, result, size = entry[:7]
        data = fast_slot(t, principal, action, path, dest, result, size, RING_SLOT)
        if data is None:        # an odd field, or too long for a slot: cleaned, the slow way
            entry = clean(entry)
            data = pack_slot(entry)
            if len(data) > RING_SLOT:
                k = next(self._ids)
                self.overflow[k] = entry
                data = SLOT_HEAD.pack(0, OVERFLOW, 0, 0) + struct.pack("<Q", k)
        ring.push(data)
        if self._thread is None:
            self._start_drain()

    # -- the participant side ---------------------------------------------------------------
    def before_commit(self, eng) -> None:
        if self.writer is None or eng is not self.writer.eng:
            return
        with self._lock:
            if self._inflight_gen != eng.root.generation:
                self.inflight = []                   # the commit that carried them went through
            todo = self.staged
            self.staged = []
        if self.ring is not None and len(self.ring):
            for _t, data in self.ring.drain():
                todo.append(self.overflow.pop(struct.unpack_from("<Q", data, SLOT_HEAD.size)[0])
                            + (True,) if data[8] == OVERFLOW else unpack_slot(data))
        if self.switch and (todo or eng.changed):   # (a commit that writes nothing stays so)
            todo.insert(0, (int(time.time() * 1e6), None, SET_LEVEL, self.level, None,
                            "allowed", None, None, True))
        if not todo:
            return
        changed = eng.changed
        try:
            self.writer.append(todo, self.level, clean)
        except CartridgeError as e:
            # the log cannot be appended to (its entries are damaged). A commit that changes
            # the archive fails with it (no change without its record: fail closed); one that
            # would only have added records (refusals, reads, the level) goes on without them,
            # and the handle reports the error (info()["audit"]["error"]).
            self.error = e
            with self._lock:
                self.staged[:0] = todo
            if changed:
                raise
            return
        self.inflight += todo
        self._inflight_gen = eng.root.generation
        self.switch = False

    def after_rollback(self, eng) -> None:
        if self.writer is None or eng is not self.writer.eng:
            return
        with self._lock:
            lost = self.inflight if self._inflight_gen == eng.root.generation else []
            kept = [e for e in lost + self.staged if e[8]]
            if any(e[2] == SET_LEVEL for e in lost):
                self.switch = True
                kept = [e for e in kept if e[2] != SET_LEVEL]
            self.inflight = []
            self.staged = kept
        if kept:
            self._start_drain()

    # -- the drain thread (level "all") -------------------------------------------------------
    def _start_drain(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=_drain, args=(weakref.ref(self),),
                                                    name="cartridge-audit-drain", daemon=True)
                    self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(5)

    def pending(self) -> int:
        return len(self.staged) + (len(self.ring) if self.ring is not None else 0)


def _drain(ref: Callable[[], AuditLog | None]) -> None:
    while True:
        log = ref()
        if log is None or log._stop.is_set():
            return
        wait, stop = log.flush_ms / 1000, log._stop
        del log
        if stop.wait(wait):
            return
        log = ref()
        if log is None:
            return
        h = log.h()
        if h is None or H.is_closed(h):
            return
        if log.staged or (log.ring is not None and len(log.ring)):
            try:
                H.flush(h)
            except BaseException as e:
                log.error = e
                return
        del h, log


def _text(s: object, limit: int) -> str | None:
    """A string the record can hold: None stays None, anything else its str(), cut to `limit`
    UTF-8 bytes (a call given a hostile path is still recorded, with the path as given)."""
    if s is None:
        return None
    t = s if isinstance(s, str) else repr(s)
    b = t.encode("utf-8", "surrogatepass")
    if len(b) <= limit:
        return t
    return b[:limit].decode("utf-8", "ignore")


_GOOD_ACTIONS: set[str] = set()


def _action(a: object) -> str:
    if isinstance(a, str) and a in _GOOD_ACTIONS:
        return a
    if isinstance(a, str) and 1 <= len(a) <= R.MAX_ACTION and a.isascii() and a.isprintable() \
            and " " not in a:
        if len(_GOOD_ACTIONS) < 1024:
            _GOOD_ACTIONS.add(a)
        return a
    t = a if isinstance(a, str) else repr(a)
    out = "".join(ch if 0x21 <= ord(ch) <= 0x7E else "?" for ch in t)[:R.MAX_ACTION]
    return out or "?"


def clean(e: tuple) -> tuple:
    """An entry every field of which the record format can hold (a hostile path is recorded
    as given, cut to the limit; a size or checksum it cannot hold is left out), in the form
    the writer's C batch takes (time in µs, checksum an int)."""
    t, principal, action, path, dest, result, size, checksum = e[:8]
    if not (type(size) is int and 0 <= size < 1 << 64):
        size = None
    if type(checksum) is str and len(checksum) == 16:
        try:
            checksum = int(checksum, 16)
        except ValueError:
            checksum = None
    elif not (type(checksum) is int and 0 <= checksum < 1 << 64):
        checksum = None
    t_us = int(t * 1e6) if isinstance(t, float) else int(t)
    return (t_us, _text(principal, R.MAX_STRING), _action(action),
            _text(path, R.MAX_STRING), _text(dest, R.MAX_STRING), result, size, checksum) + e[8:]


def pack_slot(e: tuple) -> bytes:
    """A cleaned read record's ring slot, the slow way (auditblock.pack_slot declined it)."""
    t_us, principal, action, path, dest, result, size, _csum = e
    flags = 0
    parts = [action.encode("ascii", "replace")]
    for bit, s in ((1, principal), (2, path), (4, dest)):
        if s is not None:
            flags |= bit
            parts.append(s.encode("utf-8", "surrogatepass"))
    if size is not None:
        flags |= 8
    body = b"".join(struct.pack("<H", len(p)) + p for p in parts)
    return (SLOT_HEAD.pack(t_us, R.RESULT_CODE[result], flags, 0) + body
            + (struct.pack("<Q", size) if size is not None else b""))


# -- attaching to handles ---------------------------------------------------------------------
class _Subscription:
    """The hook subscriptions the open logs need: "writes" logs only the events of calls that
    may change an archive (changes_only: the read-only calls stay unwrapped), "all" logs every
    event. Each is held while a log of its level is open."""
    counts = {"writes": 0, "all": 0}
    offs: dict[str, Callable[[], None]] = {}


_sub_lock = threading.Lock()


# id(owner handle) -> its recording AuditLog: the subscribers' lookup on every event (an entry
# leaves when the handle closes or is collected, before its id can be reused)
_RECORDING: dict[int, AuditLog] = {}


def _on_writes(ev: H.Event) -> None:
    log = _RECORDING.get(id(ev.archive))
    if log is not None and log.level == "writes":
        log.on_event(ev)


def _on_all(ev: H.Event) -> None:
    log = _RECORDING.get(id(ev.archive))
    if log is not None and log.level == "all":
        log.on_event(ev)


def _sink_writes(archive, principal, method, action, path, dest, result, size, t) -> None:
    if action is not None:
        log = _RECORDING.get(id(archive))
        if log is not None and log.level == "writes" and log.writable:
            log.on_call(principal, action, path, dest, result, size, t)


def _sink_all(archive, principal, method, action, path, dest, result, size, t) -> None:
    if action is not None:
        log = _RECORDING.get(id(archive))
        if log is not None and log.level == "all" and log.writable:
            log.on_call(principal, action, path, dest, result, size, t)


def _acquire(level: str) -> None:
    with _sub_lock:
        _Subscription.counts[level] += 1
        if level not in _Subscription.offs:
            _Subscription.offs[level] = (
                H.subscribe(_on_writes, changes_only=True, sink=_sink_writes)
                if level == "writes" else H.subscribe(_on_all, sink=_sink_all))


def _release(level: str, key: int) -> None:
    _RECORDING.pop(key, None)
    with _sub_lock:
        _Subscription.counts[level] -= 1
        if _Subscription.counts[level] == 0 and level in _Subscription.offs:
            _Subscription.offs.pop(level)()


def detach(h) -> None:
    """After the handle closed: stop listening for it (the hook's wrappers come off when no
    writable archive records any more)."""
    log = log_of(h)
    if log is not None and log.writable and log._finalizer is not None and log._finalizer.alive:
        log._finalizer()


def attach(h, level: str = "writes", flush_ms: int = DEFAULT_FLUSH_MS) -> AuditLog:
    """Start the audit log of a freshly opened owner handle (archive.Cartridge.__init__)."""
    level = check_level(level)
    flush_ms = check_flush_ms(flush_ms)
    log = H.feature(h, "audit", lambda h: AuditLog(h, level, flush_ms))
    if log.writable:
        H.add_participant(h, log)
        if level != "off":
            _acquire(level)
            _RECORDING[id(h)] = log
            log._finalizer = weakref.finalize(h, _release, level, id(h))
    return log


def info(h, eng) -> dict:
    """info()["audit"]: the level recorded at, the records committed, those waiting."""
    log = log_of(h)
    try:
        head = _view_of(H.owner(h), eng).head()
    except CartridgeError as e:
        return {"level": log.level if log is not None else "?", "records": None,
                "recording": False, "error": str(e)}
    if log is not None and log.writable:
        level = log.level
    else:
        level = LEVELS[head.level] if head.size else "off"
    out = {"level": level, "records": head.size, "recording": bool(log and log.writable
                                                                   and level != "off")}
    if log is not None and log.writable:
        out["waiting"] = log.pending()
        if log.error is not None:
            out["error"] = str(log.error)
    return out


def log_of(h) -> AuditLog | None:
    return H.peek_feature(H.owner(h), "audit")


def closing(h) -> None:
    """Before the handle's last commit point: stop the drain thread (the commit point then
    writes what is left)."""
    log = log_of(h)
    if log is not None:
        log.stop()


# -- the public face: cart.audit ----------------------------------------------------------------
class Audit:
    """`cart.audit` of a handle: the log's head, proofs, verification, checkpoints and a
    query; nothing here edits or removes a record. On a principal handle every call needs
    `cart:ReadAudit` (checked by `check`)."""

    def __init__(self, h, principal: str | None = None,
                 check: Callable[[], None] | None = None) -> None:
        self._h = h                     # the handle we serve (owner or principal)
        self._cart = H.owner(h)         # the owner handle (the hook's Event.archive)
        self._principal = principal
        self._check = check

    def _view(self) -> LogView:
        if self._check is not None:
            self._check()
        eng = H.ready(self._cart)
        return _view_of(self._cart, eng)

    @property
    def level(self) -> str:
        """The level this handle records at ("writes", "all", "off"); read-only handles: the
        level the last writer recorded at."""
        log = log_of(self._cart)
        if log is not None and log.writable:
            return log.level
        with H.lock(self._cart):
            return LEVELS[self._view().head().level]

    def head(self) -> TreeHead:
        """TreeHead(size, root) of the committed log."""
        with H.lock(self._cart):
            return self._view().tree_head()

    def head_at(self, size: int) -> TreeHead:
        """TreeHead of the first `size` records (a head the log had earlier)."""
        with H.lock(self._cart):
            v = self._view()
            n = _size(size, "size")
            if n > v.head().size:
                raise ValueError(f"the log has {v.head().size} records, not {n}")
            return TreeHead(n, v.mth(0, n))

    def __len__(self) -> int:
        return self.head().size

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        """The hashes proving record `seq` is in the tree of `size` records (default: all)."""
        with H.lock(self._cart):
            v = self._view()
            n = v.head().size if size is None else _size(size, "size")
            if type(seq) is not int:
                raise TypeError(f"seq must be an int, not {type(seq).__name__}")
            if not 0 <= seq < n or n > v.head().size:
                total = v.head().size
                raise ValueError(f"no record {seq} in a log of {n} records" +
                                 (f" (the log has {total})" if n != total else ""))
            return v.inclusion_proof(seq, n)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The hashes proving the log of `old_size` records is a prefix of the log of
        `new_size` (default: all)."""
        with H.lock(self._cart):
            v = self._view()
            total = v.head().size
            new = total if new_size is None else _size(new_size, "new_size")
            old = _size(old_size, "old_size")
            if not old <= new <= total:
                raise ValueError(f"no consistency proof from {old} to {new} records "
                                 f"(the log has {total})")
            return v.consistency_proof(old, new)

    def record(self, seq: int) -> R.AuditRecord:
        """Record `seq`."""
        with H.lock(self._cart):
            v = self._view()
            if type(seq) is not int:
                raise TypeError(f"seq must be an int, not {type(seq).__name__}")
            if not 0 <= seq < v.head().size:
                raise ValueError(f"no record {seq} (the log has {v.head().size})")
            return v.record(seq)

    def verify(self, head: TreeHead | tuple | None = None, checkpoint: Checkpoint | None = None,
               public_key: Any = None,
               progress: Callable[[int], object] | None = None) -> AuditReport:
        """Re-read and re-hash the whole log. With `head` (a TreeHead saved earlier) or a
        `checkpoint` (and the `public_key` it must be signed with), also that the log still
        extends it: a rewrite of history is caught even when the file was made consistent.
        progress(n), if given, is called as each n records have been re-hashed (their sum
        reaches len(cart.audit)): a progress bar's update."""
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, not {type(progress).__name__}")
        with H.lock(self._cart):
            v = self._view()
            held = None
            extra: list[str] = []
            if head is not None:
                held = TreeHead(_size(head[0], "head size"), bytes(head[1]))
            rep = verify_log(v, held, progress)
            if checkpoint is not None:
                if public_key is not None and not _verify_checkpoint(checkpoint, public_key):
                    extra.append("the checkpoint's signature does not verify with that key")
                arch = H.engine(self._cart).header.archive_id
                if checkpoint.archive_id != arch:
                    extra.append("the checkpoint is for another archive")
                rep2 = verify_log(v, TreeHead(checkpoint.size, checkpoint.root))
                extra.extend(p for p in rep2.problems if p not in rep.problems)
                fb = [x for x in (rep.first_bad, rep2.first_bad) if x is not None]
                rep = AuditReport(not (rep.problems or extra), rep.size,
                                  min(fb) if fb else None, rep.problems + extra)
            return rep

    def checkpoint(self, private_key: Any) -> Checkpoint:
        """Sign the current head with an Ed25519 key (a cryptography Ed25519PrivateKey or its
        32-byte seed) and store the checkpoint in the archive (in its own commit)."""
        made: list[Checkpoint] = []

        def go(eng) -> None:
            log = log_of(self._cart)
            if log is None or log.writer is None:
                raise CartridgeError("the archive is not open for writing")
            log.before_commit(eng)          # records staged so far belong under the head
            v = _view_of(self._cart, eng)
            h = v.head()
            cp = sign(private_key, eng.header.archive_id, h.size, h.root, int(time.time() * 1e6))
            log.writer.add_checkpoint(cp)
            made.append(cp)
        if self._check is not None:
            self._check()
        H.apply(self._cart, go)
        return made[0]

    def checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint, oldest first."""
        with H.lock(self._cart):
            return self._view().checkpoints()

    def flush(self) -> bool:
        """Commit the records waiting (read records of level "all") now."""
        return H.flush(self._cart)

    def entries(self, since: float | None = None, until: float | None = None,
                principal: str | None = None, action: str | None = None,
                path_prefix: str | None = None, result: str | None = None,
                start_seq: int | None = None) -> Iterator[R.AuditRecord]:
        """Records in seq order matching every filter given (times in Unix seconds, `since`
        inclusive, `until` exclusive). Complete blocks whose summary excludes the filter are
        skipped without being read."""
        f = _Filter(since, until, principal, action, path_prefix, result, start_seq)
        with H.lock(self._cart):
            v = self._view()
            total = v.head().size
            f.resolve(v)
        if f.empty:
            return
        seq = f.start
        while seq < total:
            b = seq // BLOCK_RECORDS
            with H.lock(self._cart):
                v = self._view()
                complete = (b + 1) * BLOCK_RECORDS <= total
                if complete and f.skip(v.summary(b)):
                    seq = (b + 1) * BLOCK_RECORDS
                    continue
                data = v.block_data(b)
                count, _, _, _, recs = parse_block(data, b, v.where)
                out = []
                for i in range(seq - b * BLOCK_RECORDS, min(count, total - b * BLOCK_RECORDS)):
                    c = recs[i]
                    if f.match_compact(c):
                        r = v.to_record(b * BLOCK_RECORDS + i, c)
                        if f.match(r):
                            out.append(r)
            yield from out
            if f.until_us is not None and recs and recs[-1].time_us >= f.until_us:
                return
            seq = (b + 1) * BLOCK_RECORDS


def _size(v: object, what: str) -> int:
    if type(v) is not int:
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    if v < 0:
        raise ValueError(f"{what} must be >= 0, not {v}")
    return v


def _view_of(cart, eng) -> LogView:
    """The handle's LogView (its engine never changes; the view follows its state)."""
    return H.feature(cart, "audit_view", lambda h: LogView(H.engine(h)))


class _Filter:
    def __init__(self, since, until, principal, action, path_prefix, result, start_seq) -> None:
        for v, what in ((since, "since"), (until, "until")):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise TypeError(f"{what} must be a number of seconds or None")
        for v, what in ((principal, "principal"), (action, "action"),
                        (path_prefix, "path_prefix"), (result, "result")):
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{what} must be a str or None")
        if result is not None and result not in R.RESULTS:
            raise ValueError(f"result must be one of {R.RESULTS}, not {result!r}")
        if start_seq is not None:
            _size(start_seq, "start_seq")
        self.since_us = None if since is None else int(since * 1e6)
        self.until_us = None if until is None else int(until * 1e6)
        self.principal, self.action, self.prefix, self.result = principal, action, path_prefix, result
        self.start = start_seq or 0
        self.code = None if result is None else R.RESULT_CODE[result]
        self.empty = False
        self.pid: int | None = None
        self.aid: int | None = None
        self.prefix_ids: list[int] | None = None    # ids of the strings path_prefix matches

    def resolve(self, v: LogView) -> None:
        """String ids of the filter's names (an unknown name matches nothing)."""
        if self.principal is not None:
            self.pid = v.string_id(self.principal)
            self.empty |= self.pid is None
        if self.action is not None:
            self.aid = v.string_id(self.action)
            self.empty |= self.aid is None
        if self.since_us is not None:
            self.start = max(self.start, _first_block_at(v, self.since_us) * BLOCK_RECORDS)
        if self.prefix is not None:
            self.prefix_ids = _ids_with_prefix(v, self.prefix)
            self.empty |= self.prefix_ids == []

    def skip(self, summary: tuple[int, int, int, int]) -> bool:
        t0, t1, mask, bloom = summary
        if self.since_us is not None and t1 < self.since_us:
            return True
        if self.until_us is not None and t0 >= self.until_us:
            return True
        if self.code is not None and not mask >> self.code & 1:
            return True
        if self.pid is not None and not bloom_has(bloom, self.pid):
            return True
        if self.prefix_ids is not None and not any(bloom_has(bloom, i) for i in self.prefix_ids):
            return True
        return self.aid is not None and not bloom_has(bloom, self.aid)

    def match_compact(self, c) -> bool:
        if self.code is not None and c.result != self.code:
            return False
        if self.since_us is not None and c.time_us < self.since_us:
            return False
        if self.until_us is not None and c.time_us >= self.until_us:
            return False
        if self.pid is not None and (not c.flags & R.F_PRINCIPAL or c.principal != self.pid):
            return False
        return self.aid is None or c.action == self.aid

    def match(self, r: R.AuditRecord) -> bool:
        if self.prefix is None:
            return True
        return any(p is not None and p.startswith(self.prefix) for p in (r.path, r.dest))


PREFIX_IDS = 64         # path_prefix: at most this many matching strings use the block Blooms


def _ids_with_prefix(v: LogView, prefix: str) -> list[int] | None:
    """The ids of the interned strings that start with `prefix` (a record matches path_prefix
    only if its path or dest is one of them; the block summaries' Bloom filters hold every id
    a block names, so a complete block with none of them is skipped unread). None (scan every
    block) when the string table is not smaller than the blocks it could spare, when more
    than PREFIX_IDS strings match (the Blooms would rarely exclude a block), or when the table
    cannot be read (the records' own reading reports that)."""
    h = v.head()
    pages = -(-h.strings // STRINGS_PER_ENTRY)
    if pages > h.size // BLOCK_RECORDS // 2:
        return None
    ids: list[int] = []
    try:
        for g in range(pages):
            for i, s in enumerate(v.string_page(g)):
                if s.startswith(prefix):
                    ids.append(g * STRINGS_PER_ENTRY + i)
                    if len(ids) > PREFIX_IDS:
                        return None
    except CartridgeError:
        return None
    return ids


def _first_block_at(v: LogView, t_us: int) -> int:
    """The first block whose last record is at or after t_us (times never decrease), by
    binary search over the complete blocks' summaries."""
    n = v.head().size // BLOCK_RECORDS         # complete blocks
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            t1 = v.summary(mid)[1]
        except CorruptionError:
            return 0
        if t1 < t_us:
            lo = mid + 1
        else:
            hi = mid
    return lo


AUDIT_OPS = {name: H.Op(A.READ_AUDIT, None, None) for name in (
    "head", "head_at", "inclusion_proof", "consistency_proof", "record", "verify", "checkpoint",
    "checkpoints", "entries")}
H.instrument(Audit, lambda a: a._principal, AUDIT_OPS)
