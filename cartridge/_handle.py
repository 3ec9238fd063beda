"""The handle contract: what the layers above the engine may know about an open archive handle.

An archive handle (cartridge.archive.Cartridge) owns an Engine, a re-entrant lock and its
transaction state. The feature layers (guard, streams, sqlite, policies, cli) reach them ONLY
through the functions here, never through the handle's private attributes; this module is the
one place that knows how a handle keeps them. It imports only pure engine-level modules
(errors, paths, iam.actions), so every layer above the engine may import it.

State and plumbing (every function takes the handle first):

    lock(h) -> RLock                    the handle's lock; hold it around engine access
    engine(h) -> Engine                 the engine (fixed for the handle's life)
    ready(h) -> Engine                  the engine after the open/failed checks (a reader
                                        refreshes to the newest commit unless a snapshot is held)
    writer(h) -> Engine                 ready(), and writable, and no aborted transaction
    writer_check(h) -> () -> Engine     writer() as a callable bound once (hot paths)
    change(h) -> context manager        one mutating call: its own commit, or a step of the
                                        open transaction (yields the engine)
    apply(h, fn, *args)                 change() as a plain call: fn(engine, *args)
    is_closed(h) -> bool
    in_transaction(h) -> bool           a transaction() block is open
    abort(h) -> None                    roll the open transaction back (its remaining calls raise
                                        TransactionAbortedError); nothing if none or already done
    hold_snapshot(h) / release_snapshot(h)   keep a reader on its state (a principal's check)
    add_stream(h, s) / discard_stream(h, s) / streams(h) -> set   open stream objects
    feature(h, key, factory) -> object  per-handle state of a feature layer, made once
                                        (factory(h)) on first use: the SQLite registry, the
                                        compiled policies
    register_handle(h) / open_handles() -> list   every open handle of the process (the SQLite
                                        VFS finds the handle of a file by it)
    set_opener(cls) / open_archive(path, mode, **kw)   open a handle without importing the
                                        handle layer (the global SQLite VFS opens archives by URI)
    set_sqlite_connector(fn) / sqlite_connect(h, path, readonly, as_principal=None, **kw)
                                        an apsw.Connection without importing the SQLite layer
    change_guards / refuse_change(h, path, tree)   a feature layer that holds members open
                                        (SQLite) refuses their delete/rename (LockedError)

    owner(h) -> Cartridge               the owner handle behind any handle (a principal
                                        handle's, a stream's): one per open archive
    transaction(h, face, principal)     h.transaction() yielding `face`, reported as
                                        `principal`'s (PrincipalCartridge.transaction)

Pre-commit participants (the audit log's commit point). A participant is any object with

    before_commit(eng) -> None      called inside EVERY commit of the archive's writable
                                    engine, before anything of it is written, holding the
                                    handle's lock, with the engine in its transaction: what it
                                    stages there (eng.put of system entries, keys starting with
                                    0x00, docs/FORMAT.md) lands in that same commit, atomically
                                    with the change. Every commit path calls it, because the
                                    engine's commit() does: a call's own commit, the outer
                                    transaction()'s commit, commit() inside a transaction, a
                                    write stream's publish, a SQLite member's publish (owner,
                                    principal and URI-VFS connections), write_many,
                                    set_policy/delete_policy, flush(), the engine's own small
                                    commits at open/close (settle_frees) and the last commit
                                    point of close(). It may be called when nothing changed (the
                                    commit then writes only if it staged something). Raising
                                    rolls the commit back (after_rollback follows) and the
                                    call raises. It must not commit, roll back or call the
                                    handle's API; reading (eng.get, eng.items) is fine.
    after_rollback(eng) -> None     called after every rollback of the writable engine: a
                                    failed call's change, a transaction() abandoned (exception,
                                    a denial, close() inside it), a commit that failed before
                                    its root was written. Everything staged since the last
                                    commit is gone; so are the changes the events delivered
                                    since then with `changed` True described.

    add_participant(h, p) -> remove()   register on the archive of handle h (per engine: a
                                        principal handle and its owner share them)
    participants(h) -> list
    flush(h) -> bool                    a commit point now (participants run; a commit is
                                        written only if they staged something); False and
                                        nothing done inside a transaction, on a read-only,
                                        closed or failed handle. Takes the handle's lock.

With no participant registered the engine tests one empty list per commit and rollback.

The operation hook. Every public call of every handle (owner, principal and read-only handles,
streams' close, SQLite commits, transaction() blocks) is reported to each subscriber as one
Event (a denial without a call around it too: a member SQLite opens through ATTACH).

    subscribe(fn, changes_only=False, sink=None) -> unsubscribe   fn(event) for every reported operation;
                                        changes_only: only the events of calls that may change
                                        the archive (event.mutating: write, write_many, mkdir,
                                        delete, rename, set_policy, delete_policy, a write
                                        stream's close, sqlite_commit, transaction; whatever their
                                        result) and every denial. While every subscriber is
                                        changes_only the read-only calls are not wrapped at all
                                        (a principal's denial of one is then an event of its own,
                                        method "check"). sink: the same subscriber
                                        taking an event's fields (see subscribe()); while
                                        every subscriber has one, the owner handle's
                                        read-only calls build no Event at all.
    hooks                               the subscriber list: `if hooks:` is the cheap test
    current() -> Event | None           the event of the reported call running on this thread
    instrument(cls, principal_of, ops, archive_of=owner, own=False)   report cls's methods
                                        named in ops (name -> Op(action, size_of, paths, method,
                                        mutating)); HANDLE_OPS lists the handle classes' calls
                                        once
    begin_op(h, principal, method, action, path, size) / end_op(ev, exc)   an operation
                                        reported on its own (SQLite commits)
    changing(h), note(h, ...), note_checksum(h, csum), refused(h, principal, action, resource,
    method),
    report_transaction(h, principal, exc), detached()   what the layers below report with

Event fields (cartridge._handle.Event; unset ones keep their class default None/False):
    archive      the owner handle (archive.Cartridge) of the archive: the same object for the
                 owner, its principal handles and their streams; tells two archives apart
    principal    None for the owner handle, else the principal's name
    method       the method name: "write", "read", "rename", "walk", ...; "stream_close" (a
                 stream's close; a write stream publishes there), "sqlite_commit" (a SQLite
                 member publish), "transaction" (the end of an outer transaction() block),
                 "sqlite_open" (a member SQLite opened outside any call, refused), "check" (a
                 principal's denial in a call that is not wrapped: see changes_only),
                 "import_engram" (cartridge.import_engram into an open handle: one operation)
    action       the IAM action name (iam/actions.py, docs/IAM.md): cart:GetObject (read,
                 readinto, read_buffer, open "rb", exists, isfile, isdir, stat, sqlite,
                 sqlite_export, a read stream's close), cart:PutObject (write, write_many, mkdir,
                 open "wb"/"ab"/"r+b", a write stream's close, sqlite_commit, import_engram),
                 cart:DeleteObject (delete), cart:List (listdir, walk, scan, info, verify),
                 cart:PutPolicy (set_policy, delete_policy), cart:GetPolicy (get_policy,
                 policies, check_access), RENAME = "cart:Rename" for rename (not an IAM action: IAM checks
                 cart:GetObject + cart:DeleteObject on the source, cart:PutObject on the
                 destination); None for calls with no action (commit, close, as_principal,
                 transaction)
    path         the normalised path (paths.normalize_any; the argument as given if it is not a
                 valid path; listdir/walk/scan default "/"; info/verify/import_engram "/");
                 for policy calls the policy name; sqlite_commit: the database (a
                 journal/WAL's database); None where the call names none
    dest         rename: the normalised destination; else None
    result       "ok", "denied" (AccessDeniedError) or the raised exception's class name
    size         write: len(data); read/readinto/read_buffer: bytes returned; write_many: total
                 bytes; import_engram: bytes imported; a read stream's close: bytes actually
                 read; a write stream's close: the file's new size; sqlite_commit: bytes of
                 the modified chunks it writes; walk/scan: items yielded; else None
    checksum     write and a write stream's close: the new content checksum, 16 hex digits
                 (FileInfo.checksum); else None. (`csum`: the same as an int)
    files        write_many: one FileWrite(path, size, checksum) per file written (sorted by
                 path); sqlite_commit: one per member published (size 0 and checksum None:
                 deleted); import_engram: one per file imported (in the Engram's order);
                 else None
    refused      a denial: (IAM action, resource) the policies refused (guard.py reports every
                 principal decision that denies through refused())
    changed      True: the call changed the archive and the event is delivered BEFORE the
                 commit that makes the change durable (see below)
    mutating     True for the calls that may change the archive (whatever they did)
    transaction  the id (1, 2, ... per owner handle) of the outer transaction() the call ran
                 in; None outside one (exact for changes: set under the handle's lock; for
                 other calls, what it was when the call started)
    time         time.time() when the call started

When an event is delivered:
  * A call that changes the archive outside a transaction: inside its change context, after the
    change is staged and BEFORE its commit (changed=True; holding the handle's lock); then
    the engine's commit calls the participants, so a subscriber that is also a participant puts
    the event's record into that same commit. If that commit then fails, the call is reported
    a second time, with its error and changed=False (after_rollback came in between unless the
    handle failed mid-flip, when the commit's fate, record included, is unknown).
  * A call that changes the archive inside transaction(): when the call returns (changed=True),
    while the transaction is still open; at the end of the outer block one "transaction" event:
    committed: result "ok", changed=True, delivered BEFORE the commit (participants follow);
    rolled back: the outcome of what ended it, changed=False, after the rollback (and after
    after_rollback). commit() inside a transaction commits what was reported so far.
  * Everything else (reads, listings, calls that changed nothing, failures, denials): after
    the call ends. A generator (walk, scan) is reported when it ends, is closed early, or is
    collected unfinished (result "ok", size = items yielded). close()'s event comes after the
    archive is closed (its last commit point comes before).
A call made inside another reported call on the same thread (a principal handle's call
running the owner's method) is part of it and is not reported again; a stream's close and a
SQLite commit are always operations of their own (Cartridge.close() closing a stream too),
except a stream closed inside an operation begun with begin_op(absorb=True)
(import_engram: one operation, its files in `files`).
A subscriber that raises makes the call raise (a change it was told of before the commit is
rolled back). Subscribers run on the calling thread; pre-commit deliveries hold the handle's
lock, so a subscriber must not wait for another thread that needs it.

Cost when nobody listens: the wrappers are installed on the instrumented classes when the first
subscriber arrives and removed when the last one leaves, so the hot paths run the undecorated
methods; the change context and the writers test `if hooks:` once per call. With a subscriber,
a reported call costs about 1-2 microseconds more (its Event, the path normalised, delivery);
an owner handle's read-only call whose subscribers all have sinks, somewhat less (no Event).
"""
from __future__ import annotations

import functools
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from . import paths as _P
from .errors import AccessDeniedError
from .iam import actions as _A

# -- state and plumbing ---------------------------------------------------------------------

def lock(h) -> Any:
    return h._lock


def engine(h) -> Any:
    return h._eng


def ready(h) -> Any:
    return h._ready()


def writer(h) -> Any:
    return h._writer()


def writer_check(h) -> Callable[[], Any]:
    return h._writer


def ready_check(h) -> Callable[[], Any]:
    return h._ready


def change(h) -> Any:
    return h._change()


def apply(h, fn: Callable, *args) -> Any:
    return h._apply(fn, *args)


def is_closed(h) -> bool:
    return h._closed


def start_auto_compact(h, compact: Any = None) -> None:
    """Start a handle's background compaction (auto_compact=True); `compact`: a weak reference
    to the callable that runs one cycle (a principal handle's compact, checked each cycle),
    else the handle's own."""
    h._start_auto_compact(compact)


def transaction(h, face: Any, principal: str | None) -> Any:
    """h.transaction() yielding `face` and reported as `principal`'s (a principal handle's)."""
    return h._transaction(face, principal)


def in_transaction(h) -> bool:
    return h._txn_depth > 0


def abort(h) -> None:
    if h._txn_depth and not h._txn_aborted:
        h._abort()


def hold_snapshot(h) -> None:
    h._snapshot_held += 1


def release_snapshot(h) -> None:
    h._snapshot_held -= 1


def snapshot_held(h) -> bool:
    return h._snapshot_held > 0


def streams(h) -> set:
    return h._streams


def add_stream(h, s) -> None:
    h._streams.add(s)


def discard_stream(h, s) -> None:
    h._streams.discard(s)


_features_lock = threading.Lock()


def feature(h, key: str, factory: Callable[[Any], Any]) -> Any:
    got = h._features.get(key)
    if got is None:
        with _features_lock:
            got = h._features.get(key)
            if got is None:
                got = h._features[key] = factory(h)
    return got


def peek_feature(h, key: str) -> Any:
    """The feature's state if it was ever made, else None (never makes it)."""
    return h._features.get(key)


_handles: weakref.WeakSet = weakref.WeakSet()


def register_handle(h) -> None:
    _handles.add(h)


def open_handles() -> list:
    return [h for h in list(_handles) if not h._closed]


_opener: list[Callable[..., Any]] = []


def set_opener(cls: Callable[..., Any]) -> None:
    """The handle layer names the class that opens an archive (cartridge.archive.Cartridge)."""
    _opener[:] = [cls]


def open_archive(path: str, mode: str, **kwargs) -> Any:
    """Open an archive handle (for a feature layer that opens one itself: the global VFS)."""
    return _opener[0](path, mode, **kwargs)


_sqlite: list[Callable[..., Any]] = []


def set_sqlite_connector(fn: Callable[..., Any]) -> None:
    """The handle layer names the function that opens SQLite connections (it imports apsw
    only when first called)."""
    _sqlite[:] = [fn]


def sqlite_connect(h, path: str, readonly: bool, **kwargs) -> Any:
    """An apsw.Connection on member `path` of handle h (as_principal=: through that principal
    handle's checks); what Cartridge.sqlite() does."""
    return _sqlite[0](h, path, readonly, **kwargs)


# Feature layers that hold members open (SQLite) refuse a change to them:
# guard(h, path, tree) raises LockedError when `path` (with tree: a file below it) is held.
change_guards: list[Callable[[Any, str, bool], None]] = []


def refuse_change(h, path: str, tree: bool) -> None:
    """Before a delete/rename of `path`: LockedError if a feature layer holds it open."""
    for guard in change_guards:
        guard(h, path, tree)


def owner(h) -> Any:
    """The owner handle (archive.Cartridge) behind any handle: itself, a principal handle's
    owner, a stream's archive handle. Every handle of one open archive has the same owner."""
    return getattr(h, "_cart", h)


# -- pre-commit participants ----------------------------------------------------------------
def add_participant(h, participant: Any) -> Callable[[], None]:
    """Register `participant` on the archive of handle `h` (its engine: a principal handle and
    its owner share it). Returns a function that removes it. See the module docstring."""
    eng = owner(h)._eng
    with owner(h)._lock:
        eng.participants.append(participant)

    def remove() -> None:
        with owner(h)._lock:
            if participant in eng.participants:
                eng.participants.remove(participant)
    return remove


def participants(h) -> list:
    """The participants registered on the archive of handle `h` (a copy)."""
    return list(owner(h)._eng.participants)


def flush(h) -> bool:
    """A commit point now, outside any call: on a writable, open handle with no transaction
    open, run one commit, in which the participants' before_commit may stage entries (nothing
    is written when none does). Returns False (and does nothing) on a read-only, closed or
    failed handle or inside a transaction (whose own commit will come)."""
    h = owner(h)
    with h._lock:
        eng = h._eng
        if h._closed or h._txn_depth or not eng.writable or eng.failed is not None:
            return False
        eng.begin()
        eng.commit()
        return True


# -- the operation hook ---------------------------------------------------------------------
RENAME = "cart:Rename"     # the action of a rename event (IAM checks cart:GetObject and
#                            cart:DeleteObject on the source, cart:PutObject on the destination)


class FileWrite(NamedTuple):
    """One file a call wrote (Event.files): its normalised path, new size and new content
    checksum (16 hex digits, as FileInfo.checksum; None when not known)."""

    path: str
    size: int
    checksum: str | None


class Event:
    """One reported operation; see the module docstring for when each field is set. Fields
    a call does not set keep the class defaults below (None / False)."""

    dest: str | None = None             # rename: the normalised destination
    result = "ok"                       # "ok", "denied" or the raised exception's class name
    size: int | None = None             # bytes written / read, items yielded; None: no size
    csum: int | None = None             # a write's new content checksum (as an int)
    files: tuple[FileWrite, ...] | None = None   # write_many, sqlite_commit: each file
    refused: tuple[str, str] | None = None   # denied: (IAM action, resource) refused
    changed = False                     # the call changed the archive (reported before commit)
    mutating = False                    # a call that may change the archive (whatever it did)
    sent = False                        # delivered to the subscribers
    absorbs = False                     # begin_op(absorb=True): its streams' closes are part of it
    _prev: Event | None = None          # the reported call an operation of its own runs inside

    def __init__(self, archive: Any, principal: str | None, method: str, action: str | None,
                 path: str | None = None, transaction: int | None = None):
        self.archive = archive          # the owner handle of the archive (archive.Cartridge)
        self.principal = principal      # None: the owner
        self.method = method            # "write", "read", "stream_close", "sqlite_commit", ...
        self.action = action            # IAM action name (RENAME for rename); None: no action
        self.path = path                # normalised path; a policy call: the policy name
        self.transaction = transaction  # id of the open transaction() it ran in
        self.time = _now()              # when the call started (seconds since the epoch)

    @property
    def checksum(self) -> str | None:
        """A write's new content checksum as FileInfo.checksum gives it (16 hex digits)."""
        return None if self.csum is None else f"{self.csum:016x}"

    def copy(self) -> Event:
        ev = Event.__new__(Event)
        ev.__dict__.update(self.__dict__)
        return ev

    @property
    def brief(self) -> tuple:
        """(principal, method, path, result, size): the old five-field report."""
        return (self.principal, self.method, self.path, self.result, self.size)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in _SHOWN
                           if getattr(self, k) is not None)
        return f"Event({fields})"


_now = time.time
_SHOWN = ("principal", "method", "action", "path", "dest", "result", "size", "checksum", "files",
          "refused", "changed", "transaction", "time")


Subscriber = Callable[[Event], None]
Sink = Callable[[Any, "str | None", str, "str | None", "str | None", "str | None", str,
                 "int | None", float], None]
hooks: list[Subscriber] = []
_sink_list: list[tuple[Subscriber, Sink | None, bool]] = []
# every subscriber's (sink, changes_only) when all have one (the lean path of read-only calls)
_sinks: tuple[tuple[Sink, bool], ...] | None = None
# (fn, changes_only) as of the last change; delivery iterates it
_subscribers: tuple[tuple[Subscriber, bool], ...] = ()
_instrumented: list[tuple[type, str, Callable, Callable, bool]] = []   # (class, name, raw,
#                                                                         wrapper, mutating)
_hooks_lock = threading.Lock()


class _Local(threading.local):
    op: Event | None = None       # the Event of the reported call running on this thread


_tls = _Local()


def _install() -> None:
    """Put the wrappers in place for what the subscribers want (under _hooks_lock): none
    without subscribers; those of the calls that may change the archive when every subscriber
    wants changes only; all of them otherwise."""
    everything = any(not changes_only for _, changes_only in _subscribers)
    for cls, name, raw, wrapper, mutating in _instrumented:
        on = bool(_subscribers) and (mutating or everything)
        setattr(cls, name, wrapper if on else raw)


def subscribe(fn: Subscriber, changes_only: bool = False, sink: Sink | None = None
              ) -> Callable[[], None]:
    """Call fn(event) for every reported operation; returns a function that unsubscribes it.
    changes_only: only the events of calls that may change the archive (whatever their result:
    writes, deletes, renames, mkdir, policy changes, write streams' close, SQLite commits,
    transactions) and every denial; the read-only calls then cost nothing while no other
    subscriber wants them (the audit log's "writes" level).

    sink: the same subscriber taking the fields of an event instead of an Event:
    sink(archive, principal, method, action, path, dest, result, size, time), for the events
    of the owner handle's read-only calls (no Event is built for them while every subscriber
    has a sink: the audit log's "all" level on cached reads). It must do what fn would do
    with an Event of those fields (changed False, no checksum, files or refused)."""
    global _subscribers, _sinks
    with _hooks_lock:
        hooks.append(fn)
        _subscribers = _subscribers + ((fn, changes_only),)
        _sink_list.append((fn, sink, changes_only))
        _sinks = _sinks_of()
        _install()

    def unsubscribe() -> None:
        global _subscribers, _sinks
        with _hooks_lock:
            if fn in hooks:
                hooks.remove(fn)
                subs = list(_subscribers)
                subs.remove((fn, changes_only))
                _subscribers = tuple(subs)
                _sink_list.remove((fn, sink, changes_only))
                _sinks = _sinks_of()
                _install()
    return unsubscribe


def _sinks_of() -> tuple[tuple[Sink, bool], ...] | None:
    """(sink, changes_only) of every subscriber when each has a sink, else None."""
    out = tuple((sink, changes_only) for _, sink, changes_only in _sink_list if sink is not None)
    return out if out and len(out) == len(_sink_list) else None


def outcome(exc: BaseException | None) -> str:
    """The `result` of an operation that raised `exc` (None: it succeeded)."""
    if exc is None:
        return "ok"
    if isinstance(exc, AccessDeniedError):
        return "denied"
    return type(exc).__name__


def _deliver(ev: Event) -> None:
    ev.sent = True
    for fn, changes_only in _subscribers:
        if not changes_only or ev.mutating or ev.changed or ev.result == "denied":
            fn(ev)


def current() -> Event | None:
    """The Event of the reported call running on this thread (None: none, or nobody listens;
    inside an owner's read-only call on the lean path, every subscriber a sink: a placeholder
    Event whose archive is None)."""
    return _tls.op


def begin_op(h, principal: str | None, method: str, action: str | None, path: str | None,
             size: int | None = None, absorb: bool = False) -> Event:
    """Start an operation reported on its own, even inside another reported call (a stream
    closed by close(), a SQLite commit): until end_op(), calls it makes and changes it stages
    belong to it. absorb=True: so do the closes of the streams it writes through (otherwise
    operations of their own); each sets the event's checksum and size as it publishes (an
    operation writing many files reads them after each and reports them in `files`). Call
    only when `hooks` is non-empty."""
    archive = owner(h)
    ev = Event(archive, principal, method, action, path,
               archive._txn_id if archive._txn_depth else None)
    ev.size = size
    ev.mutating = True
    if absorb:
        ev.absorbs = True
    ev._prev = _tls.op
    _tls.op = ev
    return ev


def end_op(ev: Event, exc: BaseException | None) -> None:
    """The end of begin_op()'s operation: report it (unless it was reported before its commit;
    then, if that commit failed, report the failure too)."""
    _tls.op = ev._prev
    ev._prev = None
    _finish(ev, exc)


def _finish(ev: Event, exc: BaseException | None) -> None:
    if ev.sent:
        if exc is None:
            return
        ev = ev.copy()          # its change was reported, then its commit failed
        ev.changed = False
    ev.result = outcome(exc)
    _deliver(ev)


def changing(h) -> None:
    """The change context of handle `h` completed a change (archive.Cartridge calls it, when
    someone listens, inside its change context after the change is staged): the current
    call's event is marked changed and, outside a transaction, delivered now, before the
    commit that carries it."""
    ev = _tls.op
    if ev is None or ev.archive is not h:
        return
    ev.changed = True
    if h._txn_depth:
        ev.transaction = h._txn_id      # under the handle's lock: exact
    else:
        ev.transaction = None
        if not ev.sent:
            _deliver(ev)


def note(h, checksum: int | None = None, size: int | None = None,
         files: tuple[FileWrite, ...] | None = None) -> None:
    """What the running call of owner handle `h` knows best (a write's new content checksum,
    write_many's files): set on its event. Call only when `hooks` is non-empty."""
    ev = _tls.op
    if ev is None or ev.archive is not h:
        return
    if checksum is not None:
        ev.csum = checksum
    if size is not None:
        ev.size = size
    if files is not None:
        ev.files = files


def note_checksum(h, checksum: int) -> None:
    """note(h, checksum=...) for the hot write path (positional, nothing else)."""
    ev = _tls.op
    if ev is not None and ev.archive is h:
        ev.csum = checksum


def refused(h, principal: str, action: str, resource: str, method: str = "check") -> None:
    """A principal's IAM denial (guard.py calls it before raising AccessDeniedError): the
    running call's event carries (action, resource) in `refused`; a denial outside any
    reported call (a member SQLite opens later, through ATTACH) is reported on its own, with
    `method` and the refused action."""
    if not hooks:
        return
    archive = owner(h)
    ev = _tls.op
    if ev is not None and ev.archive is archive:
        if ev.refused is None:
            ev.refused = (action, resource)
        return
    ev = Event(archive, principal, method, action, resource,
               archive._txn_id if archive._txn_depth else None)
    ev.refused = (action, resource)
    ev.result = "denied"
    _deliver(ev)


def report_transaction(h, principal: str | None, exc: BaseException | None) -> None:
    """The end of an outer transaction() block of owner handle `h`: committed (exc None:
    called before its commit, so the participants see the event first) or rolled back."""
    ev = Event(h, principal, "transaction", None, None, h._txn_id)
    ev.mutating = True
    ev.result = outcome(exc)
    ev.changed = exc is None
    _deliver(ev)


@contextmanager
def detached() -> Iterator[None]:
    """Calls made inside are reported as calls of their own (Cartridge.close() closing the
    handle's streams: each stream's publish is its own event)."""
    prev = _tls.op
    _tls.op = None
    try:
        yield
    finally:
        _tls.op = prev


# -- what instrument() reports for each method ------------------------------------------------
def _norm(path: object) -> str | None:
    """The normalised path of an argument (the argument itself when it is not a valid path)."""
    if not isinstance(path, str):
        return None
    try:
        return _P.normalize_any(path)[0]
    except Exception:
        return path


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


class Op(NamedTuple):
    """How instrument() reports a method: its IAM action (or a function of (args, kwargs)
    giving it), size_of(self, args, kwargs, result) -> size (result None when not known yet),
    paths(self, args, kwargs) -> (path, dest), the method name reported (None: the
    method's own), and whether the call may change the archive (its events go to changes_only
    subscribers, and its wrapper is installed for them)."""

    action: str | Callable[[tuple, dict], str | None] | None
    size_of: Callable | None
    paths: Callable[[Any, tuple, dict], tuple[str | None, str | None]] | None
    method: str | None = None
    mutating: bool = False


def path_arg(self, args: tuple, kwargs: dict) -> tuple[str | None, None]:
    """The first argument (`path`), normalised."""
    return _norm(_arg(args, kwargs, 0, "path")), None


def dir_arg(name: str) -> Callable[[Any, tuple, dict], tuple[str | None, None]]:
    """The first argument (keyword `name`, default "/"), normalised."""
    def paths(self, args: tuple, kwargs: dict) -> tuple[str | None, None]:
        return _norm(_arg(args, kwargs, 0, name, "/")), None
    return paths


def rename_args(self, args: tuple, kwargs: dict) -> tuple[str | None, str | None]:
    return _norm(_arg(args, kwargs, 0, "src")), _norm(_arg(args, kwargs, 1, "dst"))


def name_arg(self, args: tuple, kwargs: dict) -> tuple[str | None, None]:
    """A policy call's first argument, the policy name, as given (a name, not a path)."""
    name = _arg(args, kwargs, 0, "name")
    return (name if isinstance(name, str) else None), None


def archive_root(self, args: tuple, kwargs: dict) -> tuple[str, None]:
    return "/", None


def size_of_data(self, args: tuple, kwargs: dict, result) -> int | None:
    """The bytes given as the call's second argument (write's data)."""
    data: Any = args[1] if len(args) > 1 else kwargs.get("data")     # anything: not a buffer is None
    if type(data) is bytes:
        return len(data)
    try:
        return memoryview(data).nbytes
    except TypeError:
        return None


def size_of_result(self, args: tuple, kwargs: dict, result) -> int | None:
    """len() of what the call returned (read), or the int it returned (readinto); None when
    it raised."""
    if type(result) is bytes:
        return len(result)
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    try:
        return memoryview(result).nbytes
    except TypeError:
        return None


def _open_action(args: tuple, kwargs: dict) -> str:
    mode = _arg(args, kwargs, 1, "mode", "rb")
    return _A.GET_OBJECT if mode == "rb" else _A.PUT_OBJECT


# The public calls every handle class reports (owner and principal handles alike). A new
# public call is added here once.
_G, _PUT, _L = _A.GET_OBJECT, _A.PUT_OBJECT, _A.LIST
HANDLE_OPS: dict[str, Op] = {
    "write": Op(_PUT, size_of_data, path_arg, mutating=True),
    "write_many": Op(_PUT, None, None, mutating=True),    # size and files: note()
    "read": Op(_G, size_of_result, path_arg),
    "readinto": Op(_G, size_of_result, path_arg),
    "read_buffer": Op(_G, size_of_result, path_arg),
    "open": Op(_open_action, None, path_arg),
    **{name: Op(_G, None, path_arg) for name in ("exists", "isfile", "isdir", "stat", "sqlite",
                                                   "sqlite_export")},
    "listdir": Op(_L, None, dir_arg("path")),
    "walk": Op(_L, None, dir_arg("top")),
    "scan": Op(_L, None, dir_arg("prefix")),
    "mkdir": Op(_PUT, None, path_arg, mutating=True),
    "delete": Op(_A.DELETE_OBJECT, None, path_arg, mutating=True),
    "rename": Op(RENAME, None, rename_args, mutating=True),
    "set_policy": Op(_A.PUT_POLICY, None, name_arg, mutating=True),
    "delete_policy": Op(_A.PUT_POLICY, None, name_arg, mutating=True),
    "get_policy": Op(_A.GET_POLICY, None, name_arg),
    "policies": Op(_A.GET_POLICY, None, None),
    "check_access": Op(_A.GET_POLICY, None, None),
    "verify": Op(_L, None, archive_root),
    "info": Op(_L, None, archive_root),
    "as_principal": Op(None, None, None),
    "commit": Op(None, None, None),
    "close": Op(None, None, None),
    "snapshot": Op(_A.SNAPSHOT, None, name_arg, mutating=True),
    "restore": Op(_A.SNAPSHOT, None, name_arg, mutating=True),
    "delete_snapshot": Op(_A.SNAPSHOT, None, name_arg, mutating=True),
    "snapshots": Op(_L, None, None),
    "at": Op(_L, None, name_arg),
    "compact": Op(_A.COMPACT, None, archive_root, mutating=True),
    "vacuum": Op(_A.COMPACT, None, archive_root, mutating=True),
    "freeze": Op(_A.FREEZE, None, archive_root, mutating=True),
    "export_engram": Op(_A.EXPORT, None, archive_root),
}


def _starter(op: Op, method: str, principal_of: Callable | None, archive_of: Callable | None
             ) -> Callable[[Any, tuple, dict], Event]:
    """The function that makes a call's Event from (self, args, kwargs), specialised once
    (principal_of None: the owner's; archive_of None: self is the owner handle)."""
    action_of = op.action if callable(op.action) else None
    action = None if callable(op.action) else op.action
    paths = op.paths
    first_path = paths is path_arg              # the common case, inlined
    early_size = op.size_of is size_of_data     # known from the arguments: set before delivery
    mutating = op.mutating
    normalize_any = _P.normalize_any

    def start(self, args: tuple, kwargs: dict) -> Event:
        archive = self if archive_of is None else archive_of(self)
        dest = None
        if first_path:
            path = args[0] if args else kwargs.get("path")
            if type(path) is str:
                try:
                    path = normalize_any(path)[0]
                except Exception:
                    pass            # not a valid path: as given (the call raises)
            elif path is not None:
                path = None
        elif paths is None:
            path = None
        else:
            path, dest = paths(self, args, kwargs)
        ev = Event(archive, None if principal_of is None else principal_of(self), method,
                   action_of(args, kwargs) if action_of is not None else action, path,
                   archive._txn_id if archive._txn_depth else None)
        if dest is not None:
            ev.dest = dest
        if mutating:
            ev.mutating = True
        if early_size:
            data = args[1] if len(args) > 1 else kwargs.get("data")
            ev.size = len(data) if type(data) is bytes else size_of_data(self, args, kwargs, None)
        return ev
    return start


def _wrap(raw: Callable, method: str, op: Op, principal_of: Callable | None,
          archive_of: Callable | None, own: bool) -> Callable:
    start = _starter(op, method, principal_of, archive_of)
    if inspect.isgeneratorfunction(raw):
        @functools.wraps(raw)
        def gen_wrapper(self, *args, **kwargs):
            prev = _tls.op
            if prev is not None and (not own or prev.absorbs):
                return raw(self, *args, **kwargs)
            return _observe_iter(self, raw, start(self, args, kwargs), args, kwargs)
        return gen_wrapper

    size_of = op.size_of
    result_size = size_of is size_of_result      # (bytes returned: len() inline)
    if not op.mutating and principal_of is None and archive_of is None and not own:
        return _lean_wrap(raw, method, op, start)

    @functools.wraps(raw)
    def wrapper(self, *args, **kwargs):
        prev = _tls.op
        if prev is not None and (not own or prev.absorbs):
            return raw(self, *args, **kwargs)
        ev = start(self, args, kwargs)
        _tls.op = ev
        try:
            result = raw(self, *args, **kwargs)
        except BaseException as e:
            _tls.op = prev
            if size_of is not None and ev.size is None:
                ev.size = size_of(self, args, kwargs, None)
            _finish(ev, e)
            raise
        _tls.op = prev
        if not ev.sent:
            if size_of is not None and ev.size is None:
                ev.size = (len(result) if result_size and type(result) is bytes
                           else size_of(self, args, kwargs, result))
            _deliver(ev)
        return result
    return wrapper


# While a lean call runs, the thread's current event: it makes calls inside part of it (not
# reported again), and nothing below an owner handle's read-only call writes to it (note() and
# changing() look for an event of their own archive; refused() reports one of its own).
_QUIET = Event(None, None, "quiet", None)


def _lean_wrap(raw: Callable, method: str, op: Op, start: Callable) -> Callable:
    """The wrapper of an owner handle's read-only call: with every subscriber a sink, it
    reports the call's fields to the sinks without building an Event; otherwise as _wrap."""
    action_of = op.action if callable(op.action) else None
    action = None if callable(op.action) else op.action
    paths = op.paths
    first_path = paths is path_arg
    size_of = op.size_of
    result_size = size_of is size_of_result
    normalize_any = _P.normalize_any

    def where(self, args: tuple, kwargs: dict) -> tuple[str | None, str | None]:
        if first_path:
            path = args[0] if args else kwargs.get("path")
            if type(path) is str:
                try:
                    path = normalize_any(path)[0]
                except Exception:
                    pass            # not a valid path: as given (the call raises)
            elif path is not None:
                path = None
            return path, None
        if paths is None:
            return None, None
        return paths(self, args, kwargs)

    def report(sinks, self, args, kwargs, result, size, t) -> None:
        path, dest = where(self, args, kwargs)
        act = action_of(args, kwargs) if action_of is not None else action
        for sink, changes_only in sinks:
            if not changes_only or result == "denied":
                sink(self, None, method, act, path, dest, result, size, t)

    @functools.wraps(raw)
    def wrapper(self, *args, **kwargs):
        prev = _tls.op
        if prev is not None:
            return raw(self, *args, **kwargs)
        sinks = _sinks
        if sinks is None:
            ev = start(self, args, kwargs)
            _tls.op = ev
            try:
                result = raw(self, *args, **kwargs)
            except BaseException as e:
                _tls.op = prev
                if size_of is not None and ev.size is None:
                    ev.size = size_of(self, args, kwargs, None)
                _finish(ev, e)
                raise
            _tls.op = prev
            if not ev.sent:
                if size_of is not None and ev.size is None:
                    ev.size = (len(result) if result_size and type(result) is bytes
                               else size_of(self, args, kwargs, result))
                _deliver(ev)
            return result
        t = _now()
        _tls.op = _QUIET
        try:
            result = raw(self, *args, **kwargs)
        except BaseException as e:
            _tls.op = prev
            res = outcome(e)
            # (an owner's call has no IAM check of its own: a denial inside it came from a
            # principal's check, which refused() has reported as an event of its own)
            if res != "denied":
                report(sinks, self, args, kwargs, res,
                       None if size_of is None else size_of(self, args, kwargs, None), t)
            raise
        _tls.op = prev
        if size_of is None:
            size = None
        elif result_size and type(result) is bytes:
            size = len(result)
        else:
            size = size_of(self, args, kwargs, result)
        report(sinks, self, args, kwargs, "ok", size, t)
        return result
    return wrapper


def _observe_iter(self, raw, ev, args, kwargs):
    """A reported generator method: each step runs as part of it; one report at its end (also
    when it is closed early or collected unfinished) with the number of items as size."""
    n = 0
    exc = None
    try:
        prev = _tls.op
        _tls.op = ev
        try:
            it = raw(self, *args, **kwargs)
        finally:
            _tls.op = prev
        try:
            while True:
                prev = _tls.op
                _tls.op = ev
                try:
                    item = next(it)
                except StopIteration:
                    break
                finally:
                    _tls.op = prev
                n += 1
                yield item
        finally:
            it.close()
    except GeneratorExit:
        raise                       # closed early: reported below as "ok" with the items seen
    except BaseException as e:
        exc = e
        raise
    finally:
        ev.size = n
        _finish(ev, exc)


def instrument(cls: type, principal_of: Callable[[Any], str | None] | None, ops: dict[str, Op],
               archive_of: Callable[[Any], Any] | None = owner, own: bool = False) -> None:
    """Report the calls of cls's methods named in `ops` (method name -> Op); principal_of(self)
    and archive_of(self) (the owner handle) name who and which archive (None: the owner, and
    self is the owner handle). `own`: a call is reported even inside another reported call
    (stream close)."""
    with _hooks_lock:
        for name, op in ops.items():
            raw = cls.__dict__[name]
            wrapper = _wrap(raw, op.method or name, op, principal_of, archive_of, own)
            _instrumented.append((cls, name, raw, wrapper, op.mutating))
        _install()
