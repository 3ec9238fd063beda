"""Principal handles: the full Cartridge API with every call checked against the archive's IAM
policies before it has any effect (docs/IAM.md, "Enforcement").

A PrincipalCartridge wraps an owner Cartridge and lists every public method explicitly, so a
method that is not guarded here does not exist on a principal handle at all. Each call takes
the archive lock, checks every resource it will touch, then runs the owner's method under the
same lock: no other call of this process can change the policies or the files in between.
"""
from __future__ import annotations

import io
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import _handle as H
from . import namespace as N
from . import paths as P
from . import policies as PL
from ._core.readpath import read_whole
from .audit import log as AL
from .errors import AccessDeniedError, ClosedError, InvalidPathError
from .iam import Decision, Explanation
from .iam import actions as A

if TYPE_CHECKING:
    import apsw

    from .archive import Cartridge, FileInfo
    from .compactor import CompactStats
    from .snapstore import SnapshotInfo
    from .verify import VerifyReport

GET, PUT, DELETE = A.GET_OBJECT, A.PUT_OBJECT, A.DELETE_OBJECT
LIST, GET_POLICY, PUT_POLICY = A.LIST, A.GET_POLICY, A.PUT_POLICY
SNAPSHOT = A.SNAPSHOT
ARCHIVE = "/"            # the resource of archive-wide actions (policies, info, verify)
FAST_CACHE_MAX = 65_536  # per-handle memo of allowed (action, user path) pairs, in total


def _with_database(resource: str) -> tuple[str, ...]:
    """A resource, plus its database when it is a SQLite journal or WAL member."""
    db = P.database_of(resource)
    return (resource,) if db == resource else (resource, db)


def list_resource(directory: str) -> str:
    """cart:List's resource for a normalised directory: its path ending in '/'."""
    return "/" if directory == "/" else directory + "/"


class _OneSnapshot:
    """Holds the archive lock and keeps a read-only handle on one committed state (refreshed
    once on entry), so a call's policy check and its effect see the same policies and data."""

    __slots__ = ("cart",)

    def __init__(self, cart):
        self.cart = cart

    def __enter__(self) -> None:
        cart = self.cart
        lock = H.lock(cart)
        lock.acquire()
        try:
            if not H.is_closed(cart):
                H.ready(cart)
        except BaseException:
            lock.release()
            raise
        H.hold_snapshot(cart)

    def __exit__(self, *exc) -> None:
        H.release_snapshot(self.cart)
        H.lock(self.cart).release()


class PrincipalCartridge:
    """An archive handle acting as a named principal; see Cartridge for each method."""

    def __init__(self, cart: Cartridge, name: str, tags: Mapping[str, str] | None = None,
                 context: Mapping[str, Any] | None = None, *, owns: bool = False,
                 policies_from: Cartridge | None = None):
        if not isinstance(name, str) or not name:
            raise ValueError(f"principal must be a non-empty str, not {name!r}")
        for arg, value in (("tags", tags), ("context", context)):
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"principal {arg} must be a mapping (dict), "
                                f"not {type(value).__name__}")
        tags = dict(tags or {})
        for k, v in tags.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"principal tags must map str to str, not {k!r}: {v!r}")
        self._cart = cart
        self._lock = H.lock(cart)
        self._eng = H.engine(cart)
        # the owner's compiled policies; a snapshot view's principal handle (at()) is checked
        # against the policies of the archive's live state, not the snapshot's
        self._policy_cart = cart if policies_from is None else policies_from
        self._policies = PL.cache(self._policy_cart)
        self._snap = _OneSnapshot(cart)
        # who the handle is never changes: the memo of allowed calls depends on it
        self._principal = name
        self._tags = MappingProxyType(tags)
        self._ctx = MappingProxyType(dict(context or {}))
        self._owns = owns
        self._closed = False
        self._state = None               # the owner's policy state the memo below belongs to
        # action -> user paths memoised as allowed (static policies only); read() looks in
        # the GET set directly
        self._allowed: dict[str, set[str]] = {}
        self._allowed_get = self._allowed.setdefault(GET, set())

    @property
    def principal(self) -> str:
        return self._principal

    @property
    def tags(self) -> Mapping[str, str]:
        """The principal's tags (read-only; make another handle for other tags)."""
        return self._tags

    @property
    def context(self) -> Mapping[str, Any]:
        """The handle's extra condition keys (read-only)."""
        return self._ctx

    # -- the check ----------------------------------------------------------------------------
    def _context(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        return PL.request_context(self._principal, self._tags, self._ctx, extra)

    def _policy_state(self):
        """The owner's current policy state (refreshing a reader first); None: no policies."""
        if self._closed:
            raise ClosedError(f"{self._cart.path}: principal handle is closed")
        if self._policy_cart is self._cart:
            state = self._policies.current(H.ready(self._cart))
        else:
            with H.lock(self._policy_cart):
                state = self._policies.current(H.ready(self._policy_cart))
        if state is not self._state:
            self._state = state
            self._forget_allowed()
        return state if state.policies is not None else None

    def _forget_allowed(self) -> None:
        for paths in self._allowed.values():
            paths.clear()

    def _denial(self, action: str, resource: str, decision: Decision) -> AccessDeniedError:
        why = "explicitly denied" if decision == Decision.EXPLICIT_DENY else "not allowed"
        return AccessDeniedError(f"{self._principal!r} is {why} {action} on {resource!r}")

    def _deny(self, action: str, resource: str, decision: Decision) -> None:
        H.refused(self._cart, self._principal, action, resource)   # the operation hook
        H.abort(self._cart)          # a denied step rolls the whole transaction back
        raise self._denial(action, resource, decision)

    def _decision(self, state, action: str, resource: str,
                  extra: Mapping[str, Any] | None) -> Decision:
        return state.policies.decide(action, resource, principal=self._principal,
                                     tags=self._tags, context=self._context(extra))

    def _decide(self, state, action: str, resource: str, extra: Mapping[str, Any] | None) -> None:
        """Raise AccessDeniedError unless `action` on `resource` is allowed. SQLite companion
        members (X-journal, X-wal) hold the database's pages, so they also need the same
        right on the database X itself."""
        for res in _with_database(resource):
            decision = self._decision(state, action, res, extra)
            if decision != Decision.ALLOW:
                self._deny(action, res, decision)

    def _check(self, action: str, resource: str, extra: Mapping[str, Any] | None = None) -> None:
        state = self._policy_state()
        if state is not None:
            self._decide(state, action, resource, extra)

    def _check_path(self, action: str, path: str) -> None:
        """Check an object action on a user path; allowed answers are memoised per handle
        while the policies stay the same and depend on nothing that changes per call."""
        state = self._policy_state()
        if state is None:
            return
        paths = self._allowed.get(action)
        if paths is not None and path in paths:
            return
        if type(path) is not str:
            raise InvalidPathError(f"path must be a str, not {type(path).__name__}")
        resource = P.normalize_any(path)[0]
        self._decide(state, action, resource, None)
        if state.static:
            if sum(map(len, self._allowed.values())) >= FAST_CACHE_MAX:
                self._forget_allowed()
            self._allowed.setdefault(action, set()).add(path)

    def _check_put(self, path: str, size: int) -> None:
        """PutObject with cart:ObjectSize = the size the object will have (0 for a directory
        or a stream being opened; a write stream is checked again with its final size)."""
        state = self._policy_state()
        if state is None:
            return
        self._decide(state, PUT, P.normalize_any(path)[0], {"cart:ObjectSize": size})

    def _check_list(self, directory: str, prefix: str | None = None) -> None:
        resource = list_resource(directory)
        self._check(LIST, resource, {"cart:prefix": resource if prefix is None else prefix})

    def _check_tree(self, actions: tuple[str, ...], top: str, prefix: bytes,
                    renamed_to: str | None = None) -> None:
        """Check `actions` on a directory and every entry below it (and, for a rename, PUT
        on where each one lands) before anything changes."""
        state = self._policy_state()
        if state is None:
            return
        targets = [(top, 0)] + [(P.stored_path(k), rec.size)
                                for k, rec in self._eng.items(prefix, prefix)]
        for path, size in targets:
            for action in actions:
                self._decide(state, action, path, None)
            if renamed_to is not None:
                self._decide(state, PUT, renamed_to + path[len(top):], {"cart:ObjectSize": size})

    # -- files ----------------------------------------------------------------------------------
    def write(self, path: str, data: bytes | bytearray | memoryview, *, mode: int | None = None,
              mtime: float | None = None) -> None:
        with self._snap:
            try:
                size = memoryview(data).nbytes
            except TypeError:
                size = 0                  # not bytes-like: Cartridge.write raises TypeError
            self._check_put(path, size)
            self._cart.write(path, data, mode=mode, mtime=mtime)

    def write_many(self, items: Iterable[tuple], *, mode: int | None = None,
                   mtime: float | None = None) -> int:
        """Cartridge.write_many, after PutObject (with cart:ObjectSize) is allowed for every
        item: one denial writes nothing."""
        with self._snap:
            batch = []
            for item in items:
                meta = None
                try:
                    if len(item) == 3:
                        path, data, meta = item
                    else:
                        path, data = item
                except (TypeError, ValueError):
                    raise TypeError("write_many() takes (path, data) pairs or (path, data, meta) "
                                    "triples") from None
                if type(data) is not bytes and not isinstance(data, str):
                    try:                  # a copy: the size checked is the size written
                        data = memoryview(data).tobytes()
                    except TypeError:
                        pass              # not bytes-like: Cartridge.write_many raises TypeError
                self._check_put(path, len(data) if type(data) is bytes else 0)
                batch.append((path, data) if meta is None else (path, data, meta))
            return self._cart.write_many(batch, mode=mode, mtime=mtime)

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        cart = self._cart
        eng = self._eng
        # a reader moves to the newest commit once, on entering its snapshot, and stays there
        with self._lock if eng.writable else self._snap:
            state = self._policies.state
            # The hot path: the policy state is unchanged (the epoch moves with every policy
            # change and every new commit a reader sees) and "allowed" is memoised, so no
            # further work; a whole one-chunk file already in the page cache is then served
            # as Cartridge.read does.
            if (state is self._state and type(path) is str and path in self._allowed_get
                    and state is not None and state.epoch == eng.system_epoch
                    and not self._closed and not eng.closed and eng.failed is None):
                if offset == 0 and size == -1:
                    data = read_whole(eng.records, None, eng.name, eng.pager.cache, path)
                    if data is not None:
                        return data
            else:
                self._check_path(GET, path)
            return cart.read(path, offset, size)

    def readinto(self, path: str, buffer: bytearray | memoryview, offset: int = 0) -> int:
        with self._snap:
            self._check_path(GET, path)
            return self._cart.readinto(path, buffer, offset)

    def read_buffer(self, path: str, offset: int = 0, size: int | None = -1) -> memoryview:
        with self._snap:
            self._check_path(GET, path)
            return self._cart.read_buffer(path, offset, size)

    def open(self, path: str, mode: str = "rb", *, perm: int | None = None,
             mtime: float | None = None) -> io.RawIOBase:
        with self._snap:
            if mode == "rb" or mode == "r+b":
                self._check_path(GET, path)
            if mode != "rb":
                size = 0
                if mode != "wb":          # "ab"/"r+b" start from the current content
                    kind, rec = N.kind(H.ready(self._cart), P.normalize_any(path)[0])
                    size = rec.size if kind == "file" and rec is not None else 0
                self._check_put(path, size)
            stream: Any = self._cart.open(path, mode, perm=perm, mtime=mtime)   # a CartReader/CartWriter
            if mode != "rb":
                stream.before_publish = lambda size: self._check_put(path, size)
            stream.principal = self._principal
            return stream

    # -- queries --------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        with self._snap:
            self._check_path(GET, path)
            return self._cart.exists(path)

    def isfile(self, path: str) -> bool:
        with self._snap:
            self._check_path(GET, path)
            return self._cart.isfile(path)

    def isdir(self, path: str) -> bool:
        with self._snap:
            self._check_path(GET, path)
            return self._cart.isdir(path)

    def stat(self, path: str) -> FileInfo:
        with self._snap:
            self._check_path(GET, path)
            return self._cart.stat(path)

    def listdir(self, path: str = "/") -> list[str]:
        with self._snap:
            self._check_list(P.normalize(path))
            return self._cart.listdir(path)

    def walk(self, top: str = "/") -> Iterator[tuple[str, list[str], list[str]]]:
        with self._snap:
            self._check_list(P.normalize(top))
        for entry in self._cart.walk(top):
            with self._snap:
                self._check_list(entry[0])
            yield entry

    def scan(self, prefix: str = "/") -> Iterator[FileInfo]:
        if not isinstance(prefix, str) or not prefix:
            raise InvalidPathError("prefix must be a non-empty str ('/' for everything)")
        norm = P.normalize(prefix) if prefix.strip("/") else "/"
        base = norm if prefix.endswith("/") or norm == "/" else P.parent(norm)
        shown = list_resource(norm) if base == norm else norm
        with self._snap:
            self._check_list(base, shown)
        allowed = {base}
        for info in self._cart.scan(prefix):
            parent = P.parent(info.path)
            if parent not in allowed:
                with self._snap:
                    self._check_list(parent)
                allowed.add(parent)
            yield info

    # -- namespace changes ----------------------------------------------------------------------
    def mkdir(self, path: str, parents: bool = False, exist_ok: bool = False) -> None:
        with self._snap:
            p = P.normalize(path)
            self._check_put(p, 0)
            if parents:
                eng = H.ready(self._cart)
                for anc in P.ancestors(p):
                    if N.kind(eng, anc)[0] is None:
                        self._check_put(anc, 0)
            self._cart.mkdir(path, parents, exist_ok)

    def delete(self, path: str, recursive: bool = False) -> None:
        with self._snap:
            p = P.normalize_any(path)[0]
            if N.kind(H.ready(self._cart), p)[0] == "dir" and recursive:
                self._check_tree((DELETE,), p, P.to_key(P.dir_prefix(p)))
            else:
                self._check_path(DELETE, path)
            self._cart.delete(path, recursive)

    def rename(self, src: str, dst: str) -> None:
        with self._snap:
            s = P.normalize_any(src)[0]
            d = P.normalize_any(dst)[0]
            kind, rec = N.kind(H.ready(self._cart), s)
            if kind == "dir" and s != "/" and d != "/":
                self._check_tree((GET, DELETE), s, P.to_key(P.dir_prefix(s)), renamed_to=d)
            else:
                self._check_path(GET, src)
                self._check_path(DELETE, src)
                self._check_put(dst, rec.size if rec is not None else 0)
            self._cart.rename(src, dst)

    # -- SQLite ---------------------------------------------------------------------------------
    def sqlite(self, path: str, readonly: bool = False, **apsw_kwargs: Any) -> apsw.Connection:
        """cart.sqlite() as this principal: needs cart:GetObject on the database; without
        cart:PutObject the connection is read-only. Every member the connection opens later
        (ATTACH, journals, WAL) is checked the same way by the principal's own VFS (made by
        the SQLite layer from sqlite_authorize and sqlite_check_publish)."""
        with self._snap:
            self._check_path(GET, path)
            state = self._policy_state()
            if not readonly and state is not None:
                resource = P.normalize_file(path)
                readonly = any(self._decision(state, PUT, r, None) != Decision.ALLOW
                               for r in _with_database(resource))
        return H.sqlite_connect(self._cart, path, readonly, as_principal=self, **apsw_kwargs)

    def sqlite_authorize(self, member: str, want_write: bool) -> bool:
        """The principal VFS's check of a member SQLite opens: read rights or
        AccessDeniedError; returns whether writing is allowed too."""
        with self._snap:
            state = self._policy_state()
            if state is None:
                return want_write
            decision = self._decision(state, GET, member, None)
            if decision != Decision.ALLOW:
                H.refused(self._cart, self._principal, GET, member, "sqlite_open")
                raise self._denial(GET, member, decision)
            return want_write and self._decision(state, PUT, member, None) == Decision.ALLOW

    def sqlite_check_publish(self, member: str, size: int) -> None:
        """Before a principal's SQLite changes become an archive commit: the rights are
        checked again (a policy may have changed since the connection opened), with the
        member's new size as cart:ObjectSize."""
        with self._snap:
            state = self._policy_state()
            if state is not None:
                for res in _with_database(member):
                    decision = self._decision(state, PUT, res, {"cart:ObjectSize": size})
                    if decision != Decision.ALLOW:
                        self._deny(PUT, res, decision)

    def sqlite_export(self, path: str, dest: str | os.PathLike) -> None:
        with self._snap:
            self._check_path(GET, path)
            self._cart.sqlite_export(path, dest)

    # -- Engram export ----------------------------------------------------------------------------
    def export_engram(self, dest: str | os.PathLike, **kwargs: Any) -> Any:
        """Cartridge.export_engram as this principal: needs cart:Export on the archive ('/'),
        cart:GetObject on every file exported (checked on the pinned state before a byte is
        written) and, when the archive has policies (they are exported too), cart:GetPolicy.
        With snapshot=NAME the snapshot's files (and policies) are exported, each checked
        against the archive's live policies, as reads through at() are. freeze=True needs
        cart:Freeze too (checked before anything is written)."""
        from .engram.export import export

        def authorize(paths: list[str], has_policies: bool) -> None:
            for path in paths:
                self._check_path(GET, path)
            if has_policies:
                self._check(GET_POLICY, ARCHIVE)

        with self._snap:
            self._check(A.EXPORT, ARCHIVE)
            if kwargs.get("freeze"):
                self._check(A.FREEZE, ARCHIVE)
            return export(self._cart, dest, authorize=authorize, principal=self._principal,
                          **kwargs)

    # -- transactions and durability ------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[PrincipalCartridge]:
        return H.transaction(self._cart, self, self._principal)

    def commit(self) -> None:
        self._cart.commit()

    # -- policies ---------------------------------------------------------------------------------
    def set_policy(self, name: str, document: Mapping[str, Any] | str | bytes) -> None:
        with self._snap:
            self._check(PUT_POLICY, ARCHIVE)
            self._cart.set_policy(name, document)

    def delete_policy(self, name: str) -> None:
        with self._snap:
            self._check(PUT_POLICY, ARCHIVE)
            self._cart.delete_policy(name)

    def get_policy(self, name: str) -> dict:
        with self._snap:
            self._check(GET_POLICY, ARCHIVE)
            return self._cart.get_policy(name)

    @property
    def audit(self) -> AL.Audit:
        """The archive's audit log, read as this principal: every call needs
        cart:ReadAudit on the archive (docs/AUDIT.md)."""
        def check() -> None:
            with self._snap:
                self._check(A.READ_AUDIT, ARCHIVE)
        return AL.Audit(self, self._principal, check)

    def policies(self) -> dict[str, dict]:
        with self._snap:
            self._check(GET_POLICY, ARCHIVE)
            return self._cart.policies()

    def check_access(self, principal: str, action: str, resource: str,
                     tags: Mapping[str, str] | None = None,
                     context: Mapping[str, Any] | None = None) -> Explanation:
        with self._snap:
            self._check(GET_POLICY, ARCHIVE)       # it reveals what the policies say
            return self._cart.check_access(principal, action, resource, tags, context)

    def as_principal(self, name: str, tags: Mapping[str, str] | None = None,
                     context: Mapping[str, Any] | None = None) -> PrincipalCartridge:
        raise AccessDeniedError(f"{self.principal!r} cannot act as another principal; "
                                "use the owner handle")

    # -- snapshots --------------------------------------------------------------------------------
    def snapshot(self, name: str) -> SnapshotInfo:
        with self._snap:
            self._check(SNAPSHOT, ARCHIVE)
            return self._cart.snapshot(name)

    def snapshots(self) -> list[SnapshotInfo]:
        with self._snap:
            self._check_list("/")
            return self._cart.snapshots()

    def at(self, name: str) -> PrincipalCartridge:
        """A principal handle on snapshot `name`: every read checked as usual (GetObject,
        List), against the policies of the archive's live state."""
        with self._snap:
            self._check_list("/")
            view = self._cart.at(name)
        try:
            return PrincipalCartridge(view, self._principal, self._tags, self._ctx, owns=True,
                                      policies_from=self._cart)
        except BaseException:
            view.close()
            raise

    def restore(self, name: str) -> None:
        with self._snap:
            self._check(SNAPSHOT, ARCHIVE)
            self._cart.restore(name)

    def delete_snapshot(self, name: str) -> None:
        with self._snap:
            self._check(SNAPSHOT, ARCHIVE)
            self._cart.delete_snapshot(name)

    def compact(self, max_pages: int | None = None) -> CompactStats:
        with self._snap:
            self._check(A.COMPACT, ARCHIVE)
            return self._cart.compact(max_pages)

    def start_auto_compact(self) -> None:
        """open(..., principal=..., auto_compact=True): background compaction as this
        principal. cart:Compact is checked now (AccessDeniedError) and before every cycle (a
        refused cycle stops the thread)."""
        with self._snap:
            self._check(A.COMPACT, ARCHIVE)
        H.start_auto_compact(self._cart, weakref.WeakMethod(self.compact))

    def vacuum(self) -> CompactStats:
        with self._snap:
            self._check(A.COMPACT, ARCHIVE)
            return self._cart.vacuum()

    def freeze(self, compact: bool = True) -> None:
        with self._snap:
            self._check(A.FREEZE, ARCHIVE)
            self._cart.freeze(compact)

    # -- maintenance ------------------------------------------------------------------------------
    def verify(self, deep: bool = True, *,
               progress: Callable[[int], object] | None = None) -> VerifyReport:
        with self._snap:
            self._check_list("/")
            return self._cart.verify(deep, progress=progress)

    def info(self) -> dict:
        with self._snap:
            self._check_list("/")
            return self._cart.info()

    @property
    def path(self) -> str:
        return self._cart.path

    @property
    def mode(self) -> str:
        return self._cart.mode

    @property
    def closed(self) -> bool:
        return self._closed or self._cart.closed

    def close(self) -> None:
        """Close this handle (and the archive too when open() created it for the principal)."""
        self._closed = True
        if self._owns:
            self._cart.close()

    def __enter__(self) -> PrincipalCartridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<cartridge.PrincipalCartridge {self._cart.path!r} as {self.principal!r}>"



H.instrument(PrincipalCartridge, lambda h: h._principal, H.HANDLE_OPS,
             archive_of=lambda h: h._cart)
