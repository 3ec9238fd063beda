"""The policy layer of a handle: stored IAM policies compiled once per change, and the owner's
policy calls (set/get/delete/list/explain). Cartridge's policy methods delegate here; principal
handles (guard.py) read the compiled state through cache(h)."""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

from . import _handle as H
from . import paths as P
from . import policystore
from .errors import CorruptionError, NotFoundError, PolicyError
from .iam import Decision, Explanation, Policy, PolicySet

# condition keys whose value changes from call to call: policies naming one are never memoised
DYNAMIC_KEYS = frozenset({"cart:currenttime", "cart:epochtime", "cart:objectsize"})


class PolicyState(NamedTuple):
    """The archive's compiled policies at one moment; replaced, never mutated."""
    epoch: int                # Engine.system_epoch it was checked against
    fingerprint: tuple        # identity of the stored policy entries
    policies: Any             # iam.PolicySet
    static: bool              # no condition can change between calls (time, object size)


def parse_stored(archive: str, name: str, text: bytes) -> dict:
    """A stored policy's JSON document (CorruptionError if it is not JSON)."""
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptionError(f"{archive}: stored policy {name!r} is not JSON") from None


class PolicyCache:
    """One handle's compiled policies; `state` is the last PolicyState handed out (or None)."""

    __slots__ = ("path", "state")

    def __init__(self, h):
        self.path = h.path
        self.state: PolicyState | None = None

    def current(self, eng) -> PolicyState:
        """The compiled policies of the engine's current state (policies None: none stored).
        Recompiled only when the stored entries changed (cheap check once per new epoch)."""
        state = self.state
        if state is not None and state.epoch == eng.system_epoch:
            return state
        fp = policystore.fingerprint(eng)
        if state is None or state.fingerprint != fp:
            docs = policystore.load_all(eng)
            if docs:
                try:
                    compiled = PolicySet({n: Policy.parse(parse_stored(self.path, n, t))
                                          for n, t in docs.items()})
                except PolicyError as e:
                    raise CorruptionError(f"{self.path}: a stored policy no longer parses: {e}") \
                        from None
                static = not (DYNAMIC_KEYS & compiled.referenced_keys)
            else:
                compiled, static = None, True
            state = PolicyState(eng.system_epoch, fp, compiled, static)
        else:
            state = state._replace(epoch=eng.system_epoch)
        self.state = state
        return state


def cache(h) -> PolicyCache:
    """The handle's PolicyCache (made on first use)."""
    return H.feature(h, "policies", PolicyCache)


def request_context(principal: str, tags: Mapping[str, str], context: Mapping[str, Any],
                    extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The condition keys of one request by `principal` (docs/IAM.md, "Condition keys")."""
    now = time.time()
    ctx = dict(context)
    ctx["cart:username"] = principal
    for k, v in tags.items():
        ctx[f"cart:PrincipalTag/{k}"] = v
    ctx["cart:CurrentTime"] = datetime.fromtimestamp(now, timezone.utc)
    ctx["cart:EpochTime"] = int(now)
    if extra:
        ctx.update(extra)
    return ctx


# -- the owner's policy calls ---------------------------------------------------------------
def set_policy(h, name: str, document: Mapping[str, Any] | str | bytes) -> None:
    policystore.check_name(name)
    policy = Policy.parse(document)
    text = json.dumps(policy.document, sort_keys=True, separators=(",", ":")).encode()
    with H.lock(h):
        eng = H.writer(h)
        with H.change(h):
            policystore.store(eng, name, text)


def get_policy(h, name: str) -> dict:
    with H.lock(h):
        text = policystore.load(H.ready(h), name)
    if text is None:
        raise NotFoundError(f"no policy named {name!r}")
    return parse_stored(h.path, name, text)


def delete_policy(h, name: str) -> None:
    policystore.check_name(name)
    with H.lock(h):
        eng = H.writer(h)
        if eng.get(policystore.policy_key(name)) is None:
            raise NotFoundError(f"no policy named {name!r}")
        with H.change(h):
            policystore.remove(eng, name)


def all_policies(h) -> dict[str, dict]:
    with H.lock(h):
        docs = policystore.load_all(H.ready(h))
    return {name: parse_stored(h.path, name, text) for name, text in sorted(docs.items())}


def explain(h, principal: str, action: str, resource: str, tags: Mapping[str, str],
            context: Mapping[str, Any]):
    """What the stored policies decide for `principal` doing `action` on `resource`: an
    iam.Explanation. Call it holding the handle's lock."""
    state = cache(h).current(H.ready(h))
    res = resource if resource in ("*", "/") else P.normalize_any(resource)[0]
    if resource.endswith("/") and res != "/":
        res += "/"
    if state.policies is None:
        return Explanation(Decision.ALLOW, ())
    extra = {"cart:prefix": res} if action.lower() == "cart:list" else None
    return state.policies.explain(action, res, principal=principal, tags=tags,
                                  context=request_context(principal, tags, context, extra))
