"""Decisions: AWS evaluation logic over a compiled, immutable set of policies, with a cache.

Logic: a request is allowed when at least one statement with Effect Allow applies and none
with Effect Deny does. A statement applies when its principal, action, resource and every
condition match. Any applicable Deny gives EXPLICIT_DENY; otherwise any applicable Allow gives
ALLOW; otherwise IMPLICIT_DENY. Statement order and the split of statements across policies
never matter.

The decision cache lives inside a PolicySet, and a PolicySet never changes: a policy change
builds a new PolicySet with an empty cache, so no decision can outlive the policies it was
made under. The cache key is the whole input the decision depends on: the action and resource
as given, the principal, and the canonical value (values.canonical) of every context key the
set references anywhere (condition keys and `${...}` variables, in Resource and in condition
values, including cart:username and cart:PrincipalTag/<tag>). Evaluation reads nothing but
those values, so two requests with the same key always get the same decision, and a changed
tag, time, size or any other referenced value is a different key.
"""
from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Union

from .. import paths as P
from .actions import ACTIONS
from .policy import Document, Policy, compiled_of
from .values import canonical

USERNAME = "cart:username"
TAG_PREFIX = "cart:principaltag/"
CACHE_MAX = 16_384          # cached decisions per PolicySet (cleared when full)
# Keys whose value differs on (nearly) every request: a decision that read one is not cached,
# since it could never be hit and would only push useful entries out.
VOLATILE = frozenset({"cart:currenttime"})
ACTIONS_MAX = 4_096         # memoised candidate-statement lists per PolicySet
SPELLINGS_MAX = 4_096       # remembered context-key spellings per PolicySet


class Decision(str, enum.Enum):
    """The outcome of an evaluation; compares equal to its string value."""
    ALLOW = "Allow"
    EXPLICIT_DENY = "ExplicitDeny"
    IMPLICIT_DENY = "ImplicitDeny"

    def __str__(self) -> str:
        return self.value


ALLOW = Decision.ALLOW
EXPLICIT_DENY = Decision.EXPLICIT_DENY
IMPLICIT_DENY = Decision.IMPLICIT_DENY


class StatementRef(NamedTuple):
    """Identifies one statement: the policy's name in its set, its Sid (or None), its index."""
    policy: str
    sid: str | None
    index: int      # type: ignore[assignment]  # shadows tuple.index; a public field name

    def __str__(self) -> str:
        sid = f" {self.sid!r}" if self.sid else ""
        return f"{self.policy}: statement #{self.index}{sid}"


class Explanation(NamedTuple):
    """A decision and the statements that made it: every applicable Deny for EXPLICIT_DENY,
    every applicable Allow for ALLOW, none for IMPLICIT_DENY."""
    decision: Decision
    statements: tuple[StatementRef, ...]


def resource_path(resource: Any) -> str:
    """A request resource normalised by the archive's path rules, keeping a trailing '/'
    (the directory resources of cart:List); InvalidPathError if it is not a legal path."""
    norm, trailing = P.normalize_any(resource)
    return norm + "/" if trailing and norm != "/" else norm


PolicyLike = Union[Policy, Document]


class PolicySet:
    """An immutable, compiled set of policies: `decide()` answers requests from a bounded
    cache, `explain()` also says which statements decided.

    `policies` is a mapping of name -> Policy (or document), or an iterable of them (named
    "#0", "#1", ... by position)."""

    __slots__ = ("_policies", "_statements", "_refs", "_order", "_user", "_tags",
                 "_cache", "_by_action", "_spell", "_tag_spell", "_volatile")

    def __init__(self, policies: Mapping[str, PolicyLike] | Iterable[PolicyLike] = ()) -> None:
        if isinstance(policies, Mapping):
            named = [(str(n), Policy.parse(p)) for n, p in policies.items()]
        else:
            named = [(f"#{i}", Policy.parse(p)) for i, p in enumerate(policies)]
        statements = []
        refs: set = set()
        for name, policy in named:
            for st in policy.statements:
                c = compiled_of(st)
                statements.append((c, StatementRef(name, c.sid, c.index)))
                refs |= c.refs
        self._policies = dict(named)
        self._statements = tuple(statements)
        self._refs = frozenset(refs)
        self._order = tuple(sorted(refs))
        self._user = USERNAME in refs
        self._tags = any(k.startswith(TAG_PREFIX) for k in refs)
        self._volatile = VOLATILE & self._refs
        self._cache: dict = {}
        self._by_action: dict = {}
        self._spell: dict = {}
        self._tag_spell: dict = {}
        for action in ACTIONS:          # precompute the candidate statements of every action
            self._candidates(action)

    # -- introspection ----------------------------------------------------------------------------
    @property
    def policies(self) -> dict[str, Policy]:
        """name -> Policy (a copy of the mapping)."""
        return dict(self._policies)

    @property
    def referenced_keys(self) -> frozenset[str]:
        """Casefolded context keys any statement reads (conditions and variables); a request's
        decision depends on these values and nothing else of its context."""
        return self._refs

    def __len__(self) -> int:
        return len(self._policies)

    def __repr__(self) -> str:
        return f"PolicySet({list(self._policies)!r}, {len(self._statements)} statements)"

    # -- deciding ---------------------------------------------------------------------------------
    def decide(self, action: str, resource: str, principal: str | None = None,
               tags: Mapping[str, Any] | None = None,
               context: Mapping[str, Any] | None = None) -> Decision:
        """The decision for `principal` doing `action` on `resource`. `tags` become
        cart:PrincipalTag/<tag> and `principal` cart:username; both take precedence over the
        same keys in `context`. Cached; never stale (see the module docstring)."""
        if self._order:
            inputs = self._inputs(principal, tags, context)
            key: tuple = (action, resource, principal, inputs)
        else:
            inputs = ()
            key = (action, resource, principal)
        try:
            hit = self._cache.get(key)
        except TypeError:
            raise TypeError(f"action, resource and principal must be str, not "
                            f"{action!r}, {resource!r}, {principal!r}") from None
        if hit is not None:
            return hit
        vals = dict(inputs)
        decision = self._evaluate(action, resource, principal, vals, False)
        if self._volatile and not self._volatile.isdisjoint(vals):
            return decision
        cache = self._cache
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[key] = decision
        return decision

    def explain(self, action: str, resource: str, principal: str | None = None,
                tags: Mapping[str, Any] | None = None,
                context: Mapping[str, Any] | None = None) -> Explanation:
        """The decision (as decide() gives it) and the statements that made it; not cached."""
        inputs = self._inputs(principal, tags, context) if self._order else ()
        return self._evaluate(action, resource, principal, dict(inputs), True)

    def _inputs(self, principal: Any, tags: Mapping[str, Any] | None,
                context: Mapping[str, Any] | None) -> tuple:
        """(casefolded key, canonical value) for every referenced key the request holds: from
        the context, then the tags, then the principal, so later ones win (dict(inputs)).
        Everything evaluation reads is in here, and it is the cache key's last part."""
        out = []
        if context:
            spell = self._spell
            for k, v in context.items():
                kc = spell.get(k)
                if kc is None:
                    kc = self._classify(k, k)
                if kc:
                    t = type(v)
                    out.append((kc, v if t is str or t is int else canonical(v)))
        if tags and self._tags:
            spell = self._tag_spell
            for k, v in tags.items():
                kc = spell.get(k)
                if kc is None:
                    kc = self._classify(k, TAG_PREFIX + k if isinstance(k, str) else k, spell)
                if kc:
                    t = type(v)
                    out.append((kc, v if t is str or t is int else canonical(v)))
        if principal is not None and self._user:
            out.append((USERNAME, principal))
        return tuple(out)

    def _classify(self, raw: Any, key: Any, spell: dict | None = None) -> str:
        """The casefolded key if the set references it, else ''; remembered per spelling."""
        if not isinstance(key, str):
            raise TypeError(f"context keys and tag names are str, not {raw!r}")
        folded = key.casefold()
        kc = folded if folded in self._refs else ""
        spell = self._spell if spell is None else spell
        if len(spell) >= SPELLINGS_MAX:
            spell.clear()
        spell[raw] = kc
        return kc

    def _candidates(self, action: str) -> tuple:
        """(deny statements, allow statements) whose Action/NotAction matches `action`."""
        found = self._by_action.get(action)
        if found is not None:
            return found
        folded = action.casefold()
        denies = tuple((c.applies, ref) for c, ref in self._statements
                       if c.deny and c.action_matches(folded))
        allows = tuple((c.applies, ref) for c, ref in self._statements
                       if not c.deny and c.action_matches(folded))
        if len(self._by_action) >= ACTIONS_MAX:
            self._by_action.clear()
        self._by_action[action] = found = (denies, allows)
        return found

    def _evaluate(self, action: Any, resource: Any, principal: Any, ctx: Mapping[str, Any],
                  collect: bool) -> Any:
        if not isinstance(action, str):
            raise TypeError(f"action must be a str, not {action!r}")
        if principal is not None and not isinstance(principal, str):
            raise TypeError(f"principal must be a str or None, not {principal!r}")
        path = resource_path(resource)
        denies, allows = self._candidates(action)
        if not collect:
            for applies, _ in denies:
                if applies(path, principal, ctx):
                    return EXPLICIT_DENY
            for applies, _ in allows:
                if applies(path, principal, ctx):
                    return ALLOW
            return IMPLICIT_DENY
        hits = tuple(ref for applies, ref in denies if applies(path, principal, ctx))
        if hits:
            return Explanation(EXPLICIT_DENY, hits)
        hits = tuple(ref for applies, ref in allows if applies(path, principal, ctx))
        return Explanation(ALLOW if hits else IMPLICIT_DENY, hits)


# -- the public function --------------------------------------------------------------------------
def _is_document(m: Mapping) -> bool:
    return "Statement" in m or "Version" in m or "Id" in m


@functools.lru_cache(maxsize=256)
def _from_text(text: str | bytes) -> PolicySet:
    return PolicySet([Policy.parse(text)])


def policy_set(policies: Any) -> PolicySet:
    """A PolicySet from a PolicySet, a Policy, a document (dict, JSON str or bytes), or a
    mapping (name -> policy) or iterable of those."""
    if isinstance(policies, PolicySet):
        return policies
    if isinstance(policies, (str, bytes)):
        return _from_text(policies)
    if isinstance(policies, (Policy, bytearray, memoryview)):
        return PolicySet([policies])  # type: ignore[list-item]  # bytes-like: a document
    if isinstance(policies, Mapping):
        return PolicySet([policies]) if _is_document(policies) else PolicySet(policies)
    if isinstance(policies, Iterable):
        return PolicySet(list(policies))
    raise TypeError(f"expected policies, not {type(policies).__name__}")


def evaluate(policies: Any, *, action: str, resource: str, principal: str | None = None,
             context: Mapping[str, Any] | None = None,
             explain: bool = False) -> Decision | Explanation:
    """Decide whether `principal` may do `action` on `resource` under `policies` (a Policy, a
    document as dict or JSON, a PolicySet, or a mapping/iterable of those). `principal`
    supplies cart:username; every other key (tags, time, size, ...) comes from `context`.
    Returns a Decision, or with explain=True an Explanation (decision and deciding statements)."""
    ps = policy_set(policies)
    if explain:
        return ps.explain(action, resource, principal=principal, context=context)
    return ps.decide(action, resource, principal=principal, context=context)
