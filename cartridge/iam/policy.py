"""Policy documents: parse, validate and compile the AWS IAM JSON grammar (docs/IAM.md).

    {"Version": "2012-10-17", "Id": "...", "Statement": [{
        "Sid": "...", "Effect": "Allow" | "Deny",
        "Principal" | "NotPrincipal": "*" | {"CART": name | [names]},      (optional)
        "Action" | "NotAction": pattern | [patterns],                        (exactly one)
        "Resource" | "NotResource": pattern | [patterns],                    (exactly one)
        "Condition": {operator: {key: value | [values]}}}]}                  (optional)

Everything is checked and compiled once, here; a malformed document raises PolicyError naming
the statement (Sid and index) and the field.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Union

from ..errors import PolicyError
from . import conditions, patterns, resources, variables
from .actions import check_pattern as check_action

VERSION_2012 = "2012-10-17"
VERSION_2008 = "2008-10-17"
VERSIONS = (VERSION_2012, VERSION_2008)

_TOP = ("Version", "Id", "Statement")
_FIELDS = ("Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource",
           "NotResource", "Condition")
ANY_PRINCIPAL = "*"

Document = Union[Mapping[str, Any], str, bytes, bytearray]


class CompiledStatement(NamedTuple):
    """A statement ready to evaluate. `applies(resource, principal, ctx)` tests everything but
    the action, which `action_matches(casefolded action)` tests once per action."""
    index: int      # type: ignore[assignment]  # shadows tuple.index; a public field name
    sid: str | None
    deny: bool
    action_matches: Callable[[str], bool]
    applies: Callable[[str, str | None, Mapping[str, Any]], bool]
    refs: frozenset


class Statement:
    """One parsed statement (read-only). `document` is its normalised JSON form."""

    __slots__ = ("_index", "_sid", "_effect", "_doc", "_compiled")
    _index: int                 # set once through object.__setattr__ (the class is immutable)
    _sid: str | None
    _effect: str
    _doc: dict
    _compiled: CompiledStatement

    def __init__(self, index: int, sid: str | None, effect: str, doc: dict,
                 compiled: CompiledStatement) -> None:
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_sid", sid)
        object.__setattr__(self, "_effect", effect)
        object.__setattr__(self, "_doc", doc)
        object.__setattr__(self, "_compiled", compiled)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Statement is immutable")

    @property
    def index(self) -> int:
        return self._index

    @property
    def sid(self) -> str | None:
        return self._sid

    @property
    def effect(self) -> str:
        return self._effect

    @property
    def document(self) -> dict:
        return copy.deepcopy(self._doc)

    def __repr__(self) -> str:
        return f"Statement(index={self._index}, sid={self._sid!r}, effect={self._effect!r})"


def compiled_of(st: Statement) -> CompiledStatement:
    """The compiled form of a statement (for the evaluator)."""
    return st._compiled


class Policy:
    """An immutable, validated and compiled policy document. Build with Policy.parse()."""

    __slots__ = ("_doc", "_statements", "_version", "_id", "_text")
    _doc: dict                  # set once through object.__setattr__ (the class is immutable)
    _statements: tuple[Statement, ...]
    _version: str | None
    _id: str | None
    _text: str

    def __init__(self, *a: Any, **k: Any) -> None:
        raise TypeError("use Policy.parse(document)")

    @classmethod
    def parse(cls, document: Document | Policy) -> Policy:
        """Parse a policy from a dict, or JSON text (str or UTF-8 bytes); PolicyError if it is
        malformed."""
        if isinstance(document, Policy):
            return document
        doc = _load(document)
        return _build(cls, doc)

    @property
    def document(self) -> dict:
        """The normalised document (JSON-able; Statement always a list, actions and resource
        patterns as written). Policy.parse(p.document) is equivalent to p."""
        return copy.deepcopy(self._doc)

    @property
    def statements(self) -> tuple[Statement, ...]:
        return self._statements

    @property
    def version(self) -> str | None:
        """The Version as written; None when absent (2008-10-17 rules: no policy variables)."""
        return self._version

    @property
    def id(self) -> str | None:
        return self._id

    @property
    def variables_enabled(self) -> bool:
        return self._version == VERSION_2012

    def to_json(self) -> str:
        """Canonical JSON text of the normalised document."""
        return self._text

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Policy is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __repr__(self) -> str:
        return f"Policy({len(self._statements)} statements, version={self._version!r})"


# -- loading ------------------------------------------------------------------------------------
def _no_duplicates(pairs: list) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise PolicyError(f"duplicate key {k!r} in policy JSON")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise PolicyError(f"{name} is not valid in a policy document")


def _load(document: Any) -> Mapping:
    if isinstance(document, (bytes, bytearray, memoryview)):
        try:
            document = bytes(document).decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError("policy JSON is not UTF-8") from None
    if isinstance(document, str):
        try:
            document = json.loads(document, object_pairs_hook=_no_duplicates,
                                  parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise PolicyError(f"policy is not valid JSON: {e}") from None
        except RecursionError:
            raise PolicyError("policy JSON is nested too deeply") from None
    if not isinstance(document, Mapping):
        raise PolicyError(f"a policy is a JSON object, not {type(document).__name__}")
    return document


# -- building -----------------------------------------------------------------------------------
def _build(cls: type, doc: Mapping) -> Policy:
    for k in doc:
        if k not in _TOP:
            raise PolicyError(f"unknown policy element {k!r} (allowed: {', '.join(_TOP)})")
    version = doc.get("Version")
    if version is not None and version not in VERSIONS:
        raise PolicyError(f"Version must be {VERSION_2012!r} or {VERSION_2008!r}, not {version!r}")
    pid = doc.get("Id")
    if pid is not None and not isinstance(pid, str):
        raise PolicyError(f"Id must be a string, not {pid!r}")
    if "Statement" not in doc:
        raise PolicyError("policy has no Statement")
    raw = doc["Statement"]
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PolicyError("Statement must be an object or a non-empty list of objects")
    variables_on = version == VERSION_2012
    statements = []
    seen_sids: set = set()
    for i, st in enumerate(raw):
        statements.append(_statement(i, st, variables_on, seen_sids))
    norm: dict = {}
    if version is not None:
        norm["Version"] = version
    if pid is not None:
        norm["Id"] = pid
    norm["Statement"] = [s._doc for s in statements]
    self: Policy = object.__new__(cls)
    object.__setattr__(self, "_doc", norm)
    object.__setattr__(self, "_statements", tuple(statements))
    object.__setattr__(self, "_version", version)
    object.__setattr__(self, "_id", pid)
    object.__setattr__(self, "_text", json.dumps(norm, sort_keys=True, separators=(",", ":"),
                                                 ensure_ascii=False))
    return self


def _where(index: int, sid: str | None) -> str:
    return f"statement {sid!r} (#{index})" if sid else f"statement #{index}"


def _statement(index: int, st: Any, variables_on: bool, seen_sids: set) -> Statement:
    if not isinstance(st, Mapping):
        raise PolicyError(f"statement #{index}: must be an object, not {type(st).__name__}")
    sid = st.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise PolicyError(f"statement #{index} Sid: must be a string, not {sid!r}")
    where = _where(index, sid)
    for k in st:
        if k not in _FIELDS:
            raise PolicyError(f"{where}: unknown element {k!r} (allowed: {', '.join(_FIELDS)})")
    if sid:
        if sid in seen_sids:
            raise PolicyError(f"{where} Sid: {sid!r} is used by an earlier statement")
        seen_sids.add(sid)
    effect = st.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"{where} Effect: must be 'Allow' or 'Deny', not {effect!r}")
    doc: dict = {}
    if sid is not None:
        doc["Sid"] = sid
    doc["Effect"] = effect

    # Principal / NotPrincipal
    ptest = None
    if "Principal" in st and "NotPrincipal" in st:
        raise PolicyError(f"{where}: has both Principal and NotPrincipal")
    for field in ("Principal", "NotPrincipal"):
        if field in st:
            names = _principal(st[field], f"{where} {field}")
            doc[field] = copy.deepcopy(st[field])
            if names is not None or field == "NotPrincipal":
                ptest = _principal_test(names, field == "NotPrincipal")

    # Action / NotAction
    field = _exactly_one(st, "Action", "NotAction", where)
    actions = _strings(st[field], f"{where} {field}")
    for a in actions:
        check_action(a, f"{where} {field}")
    doc[field] = copy.deepcopy(st[field])
    aset = patterns.PatternSet(patterns.tokens(a.casefold()) for a in actions)
    action_matches = aset.match
    if field == "NotAction":
        action_matches = _negate(aset.match)

    # Resource / NotResource
    field = _exactly_one(st, "Resource", "NotResource", where)
    templates = [resources.parse(r, variables_on, f"{where} {field}")
                 for r in _strings(st[field], f"{where} {field}")]
    doc[field] = copy.deepcopy(st[field])
    resource_test, resource_refs = _resource_test(templates)
    negate_resource = field == "NotResource"

    # Condition
    tests: tuple = ()
    cond_refs: frozenset = frozenset()
    if "Condition" in st:
        block = st["Condition"]
        if not isinstance(block, Mapping):
            raise PolicyError(f"{where} Condition: must be an object, not {block!r}")
        tests, cond_refs = conditions.compile_block(block, variables_on, f"{where} Condition")
        doc["Condition"] = copy.deepcopy(dict(block))

    deny = effect == "Deny"
    applies = _applies(ptest, resource_test, negate_resource, tests)
    compiled = CompiledStatement(index, sid, deny, action_matches, applies,
                                 frozenset(resource_refs | cond_refs))
    return Statement(index, sid, effect, doc, compiled)


def _exactly_one(st: Mapping, a: str, b: str, where: str) -> str:
    if (a in st) == (b in st):
        raise PolicyError(f"{where}: needs exactly one of {a} and {b}")
    return a if a in st else b


def _strings(value: Any, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise PolicyError(f"{where}: must be a string or a non-empty list of strings, "
                          f"not {value!r}")
    for v in items:
        if not isinstance(v, str) or not v:
            raise PolicyError(f"{where}: entries must be non-empty strings, not {v!r}")
    return items


def _principal(value: Any, where: str) -> frozenset | None:
    """None for every principal ("*"), else the frozenset of names."""
    if value == ANY_PRINCIPAL:
        return None
    if not isinstance(value, Mapping) or list(value) != ["CART"]:
        raise PolicyError(f"{where}: must be \"*\" or {{\"CART\": name or [names]}}, not {value!r}")
    names = _strings(value["CART"], where)
    if ANY_PRINCIPAL in names:
        return None
    for n in names:
        if "*" in n:
            raise PolicyError(f"{where}: wildcards are not allowed in principal names ({n!r})")
    return frozenset(names)


def _principal_test(names: frozenset | None, negate: bool) -> Callable[[str | None], bool]:
    if names is None:
        return _never if negate else _always
    if negate:
        return lambda p: p not in names
    return lambda p: p in names


def _always(*a: Any) -> bool:
    return True


def _never(*a: Any) -> bool:
    return False


def _negate(f: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda s: not f(s)


def _resource_test(templates: list) -> tuple[Callable[[str, Mapping], bool], set]:
    static = []
    dynamic = []
    refs: set = set()
    for tpl in templates:
        if any(type(p) is variables.Var for p in tpl):
            dynamic.append(tpl)
            refs |= variables.keys(tpl)
        else:
            static.append(variables.static_tokens(tpl))
    sset = patterns.PatternSet(static).match if static else None
    if not dynamic:
        match = sset

        def test(resource: str, ctx: Mapping) -> bool:
            return match(resource)  # type: ignore[misc]
        test.static = match  # type: ignore[attr-defined]
        return test, refs
    dyn = tuple(variables.compile_pattern(t) for t in dynamic)

    def dyn_test(resource: str, ctx: Mapping) -> bool:
        if sset is not None and sset(resource):
            return True
        for pat in dyn:
            if not resource.startswith(pat.prefix):
                continue
            toks = variables.pattern_tokens(pat, ctx)
            if toks is not None and patterns.compile_tokens(toks)(resource):
                return True
        return False
    dyn_test.static = None  # type: ignore[attr-defined]
    return dyn_test, refs


def _applies(ptest, resource_test, negate_resource: bool, tests: tuple):
    static = resource_test.static
    if static is not None:
        if ptest is None:
            def applies(resource, principal, ctx):
                if static(resource) is negate_resource:
                    return False
                for t in tests:
                    if not t(ctx):
                        return False
                return True
        else:
            def applies(resource, principal, ctx):
                if not ptest(principal) or static(resource) is negate_resource:
                    return False
                for t in tests:
                    if not t(ctx):
                        return False
                return True
        return applies

    def dyn_applies(resource, principal, ctx):
        if ptest is not None and not ptest(principal):
            return False
        if resource_test(resource, ctx) is negate_resource:
            return False
        for t in tests:
            if not t(ctx):
                return False
        return True
    return dyn_applies
