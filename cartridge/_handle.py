"""The handle contract: what the layers above the engine may know about an open archive handle.

An archive handle (cartridge.archive.Cartridge) owns an Engine, a re-entrant lock and its
transaction state. The feature layers (guard, streams, sqlite, policies, cli) reach them ONLY
through the functions here, never through the handle's private attributes; this module is the
one place that knows how a handle keeps them. Nothing here imports a cartridge module above
errors, so every layer may import it.

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

The operation hook: every public call of every handle (owner, principal, read-only handles,
streams' close, SQLite commits) reports (principal, action, path, result, size) to each
subscriber: principal None for the owner; action the method name ("write", "read", "rename",
"stream_close", "sqlite_commit", ...); path the first path argument (rename: its source);
result "ok", "denied" (AccessDeniedError) or the raised exception's class name; size the bytes
written/read (None where it means nothing). The audit log subscribes here; principal handles
report their IAM decisions through it (a denial is result "denied").

    subscribe(fn) -> unsubscribe        fn(principal, action, path, result, size)
    emit(principal, action, path, result, size)   report one operation (no-op unless subscribed)
    hooks                               the subscriber list: `if hooks:` is the cheap test
    instrument(cls, principal_of, ops)  report the calls of cls's methods named in ops

Cost when nobody listens: nothing. The wrappers are installed on the instrumented classes when
the first subscriber arrives and removed when the last one leaves, so the hot paths run the
undecorated methods. A call made inside another reported call on the same thread (a principal
handle's call running the owner's method, close() closing streams) is part of it and is not
reported again. A subscriber that raises makes the call raise.
"""
from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .errors import AccessDeniedError

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


def change(h) -> Any:
    return h._change()


def apply(h, fn: Callable, *args) -> Any:
    return h._apply(fn, *args)


def is_closed(h) -> bool:
    return h._closed


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


# -- the operation hook ---------------------------------------------------------------------
hooks: list[Callable[[str | None, str, str | None, str, int | None], None]] = []
_instrumented: list[tuple[type, str, Callable, Callable]] = []   # (class, name, raw, wrapper)
_hooks_lock = threading.Lock()
_tls = threading.local()


def subscribe(fn: Callable[[str | None, str, str | None, str, int | None], None]) \
        -> Callable[[], None]:
    """Call fn(principal, action, path, result, size) after every operation; returns a function
    that unsubscribes it."""
    with _hooks_lock:
        hooks.append(fn)
        if len(hooks) == 1:
            for cls, name, _raw, wrapper in _instrumented:
                setattr(cls, name, wrapper)

    def unsubscribe() -> None:
        with _hooks_lock:
            if fn in hooks:
                hooks.remove(fn)
                if not hooks:
                    for cls, name, raw, _wrapper in _instrumented:
                        setattr(cls, name, raw)
    return unsubscribe


def emit(principal: str | None, action: str, path: str | None, result: str,
         size: int | None) -> None:
    """Report one operation to every subscriber (nothing inside another reported call)."""
    if not hooks:
        return
    if getattr(_tls, "depth", 0):
        return
    for fn in list(hooks):
        fn(principal, action, path, result, size)


def outcome(exc: BaseException | None) -> str:
    """The `result` of an operation that raised `exc` (None: it succeeded)."""
    if exc is None:
        return "ok"
    if isinstance(exc, AccessDeniedError):
        return "denied"
    return type(exc).__name__


PATH_ARGS = ("path", "src", "top", "prefix", "name")


def _path_of(args: tuple, kwargs: dict) -> str | None:
    if args and isinstance(args[0], str):
        return args[0]
    for k in PATH_ARGS:
        v = kwargs.get(k)
        if isinstance(v, str):
            return v
    return None


def _enter() -> None:
    _tls.depth = getattr(_tls, "depth", 0) + 1


def _leave() -> None:
    _tls.depth -= 1


def _wrap(raw: Callable, action: str, principal_of: Callable, size_of: Callable | None,
          path_of: Callable) -> Callable:
    if inspect.isgeneratorfunction(raw):
        @functools.wraps(raw)
        def gen_wrapper(self, *args, **kwargs):
            if getattr(_tls, "depth", 0):
                return raw(self, *args, **kwargs)
            return _observe_iter(self, raw, action, principal_of, path_of, args, kwargs)
        return gen_wrapper

    @functools.wraps(raw)
    def wrapper(self, *args, **kwargs):
        if getattr(_tls, "depth", 0):
            return raw(self, *args, **kwargs)
        _enter()
        try:
            result = raw(self, *args, **kwargs)
        except BaseException as e:
            _leave()
            size = size_of(self, args, kwargs, None) if size_of is not None else None
            emit(principal_of(self), action, path_of(self, args, kwargs), outcome(e), size)
            raise
        _leave()
        size = size_of(self, args, kwargs, result) if size_of is not None else None
        emit(principal_of(self), action, path_of(self, args, kwargs), "ok", size)
        return result
    return wrapper


def _observe_iter(self, raw, action, principal_of, path_of, args, kwargs):
    """A reported generator method: each step runs as part of it; one report at its end with
    the number of items as size."""
    it = raw(self, *args, **kwargs)
    n = 0
    exc = None
    try:
        while True:
            _enter()
            try:
                item = next(it)
            except StopIteration:
                break
            finally:
                _leave()
            n += 1
            yield item
    except BaseException as e:
        exc = e
        raise
    finally:
        it.close()
        if not isinstance(exc, GeneratorExit):
            emit(principal_of(self), action, path_of(self, args, kwargs), outcome(exc), n)


def _default_path(self, args: tuple, kwargs: dict) -> str | None:
    return _path_of(args, kwargs)


def instrument(cls: type, principal_of: Callable[[Any], str | None],
               ops: dict[str, tuple[str, Callable | None]],
               path_of: Callable | None = None) -> None:
    """Report the calls of cls's methods: ops maps method name -> (action, size_of), where
    size_of(self, args, kwargs, result) gives the size (None: no size; result None when the
    call raised)."""
    with _hooks_lock:
        for name, (action, size_of) in ops.items():
            raw = cls.__dict__[name]
            wrapper = _wrap(raw, action, principal_of, size_of, path_of or _default_path)
            _instrumented.append((cls, name, raw, wrapper))
            if hooks:
                setattr(cls, name, wrapper)


# size_of helpers for instrument()
def size_of_data(self, args: tuple, kwargs: dict, result) -> int | None:
    """The bytes given as the call's second argument (write's data)."""
    data: Any = args[1] if len(args) > 1 else kwargs.get("data")     # anything: not a buffer is None
    try:
        return memoryview(data).nbytes
    except TypeError:
        return None


def size_of_result(self, args: tuple, kwargs: dict, result) -> int | None:
    """len() of what the call returned (read), or the int it returned (readinto); None when
    it raised."""
    if isinstance(result, int):
        return result
    try:
        return memoryview(result).nbytes
    except TypeError:
        return None


# The public calls every handle class reports (owner and principal handles alike): method name
# -> (action, size_of). A new public call is added here once.
HANDLE_OPS: dict[str, tuple[str, Callable | None]] = {
    "write": ("write", size_of_data), "write_many": ("write_many", size_of_result),
    "read": ("read", size_of_result), "readinto": ("readinto", size_of_result),
    "read_buffer": ("read_buffer", size_of_result), "open": ("open", None),
    **{name: (name, None) for name in (
        "exists", "isfile", "isdir", "stat", "listdir", "walk", "scan", "mkdir", "delete",
        "rename", "sqlite", "sqlite_export", "commit", "set_policy", "get_policy",
        "delete_policy", "policies", "as_principal", "check_access", "verify", "info", "close",
        "export_engram")},
}
