"""Properties of IAM evaluation over random policies and requests (hypothesis)."""
import random
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cartridge
from cartridge import iam

A, D, N = iam.Decision.ALLOW, iam.Decision.EXPLICIT_DENY, iam.Decision.IMPLICIT_DENY
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

ACTIONS = ["cart:GetObject", "cart:PutObject", "cart:DeleteObject", "cart:List", "cart:GetPolicy"]
ACTION_PATTERNS = ACTIONS + ["cart:*", "*", "cart:Get*", "CART:getobject", "cart:?utObject"]
PATHS = ["/", "/a", "/a/", "/a/b", "/a/b/c", "/home/ann/x", "/home/bob/x", "/home/*/x",
         "/t/eng/f", "/t/ops/f", "/p/10.0.0.1"]
PATTERNS = ["*", "/a", "/a/*", "/a/?", "/a/b/", "/home/${cart:username}/*",
            "/t/${cart:PrincipalTag/team}/*", "/t/${cart:PrincipalTag/team, 'eng'}/*",
            "/p/${cart:SourceIp}", "/home/${*}/x", "*/x", "/a/*/c"]
PRINCIPALS = [None, "ann", "bob", "*"]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

CONDITIONS = [
    {"StringEquals": {"cart:PrincipalTag/team": "eng"}},
    {"StringNotEquals": {"cart:PrincipalTag/team": ["eng", "ops"]}},
    {"StringLike": {"cart:prefix": "a/*"}},
    {"StringEqualsIgnoreCase": {"cart:Flag": "TRUE"}},
    {"NumericLessThan": {"cart:ObjectSize": "100"}},
    {"NumericGreaterThanEqualsIfExists": {"cart:ObjectSize": "50"}},
    {"NumericNotEquals": {"cart:ObjectSize": ["1", "0"]}},
    {"DateLessThan": {"cart:CurrentTime": "2026-01-01T00:00:30Z"}},
    {"DateGreaterThan": {"cart:EpochTime": "1767225600"}},
    {"Bool": {"cart:Flag": "true"}},
    {"BoolIfExists": {"cart:Flag": "false"}},
    {"IpAddress": {"cart:SourceIp": "10.0.0.0/8"}},
    {"NotIpAddress": {"cart:SourceIp": ["10.0.0.0/8"]}},
    {"Null": {"cart:SourceIp": "true"}},
    {"Null": {"cart:PrincipalTag/team": "false"}},
    {"ForAllValues:StringEquals": {"cart:Groups": ["g1", "g2"]}},
    {"ForAnyValue:StringLike": {"cart:Groups": "g*"}},
    {"ForAnyValue:StringNotEquals": {"cart:Groups": "g1"}},
    {"StringEquals": {"cart:Owner": "${cart:username}"}},
    {"StringLike": {"cart:Owner": "${cart:PrincipalTag/team, 'x'}*"}},
    {"BinaryEquals": {"cart:Blob": "AAE="}},
    {"ArnLike": {"cart:Arn": "arn:cart:*:*:*:user/${cart:username}"}},
]

statement = st.fixed_dictionaries(
    {"Effect": st.sampled_from(["Allow", "Deny"]),
     "Action": st.lists(st.sampled_from(ACTION_PATTERNS), min_size=1, max_size=3),
     "Resource": st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3)},
    optional={"Condition": st.lists(st.sampled_from(CONDITIONS), max_size=2).map(
        lambda cs: {k: v for c in cs for k, v in c.items()}),
        "Principal": st.sampled_from(["*", {"CART": "ann"}, {"CART": ["ann", "bob"]}]),
        "Sid": st.just("")})


@st.composite
def statements(draw, min_size=0, max_size=8):
    sts = draw(st.lists(statement, min_size=min_size, max_size=max_size))
    out = []
    for i, s in enumerate(sts):
        s = dict(s)
        if draw(st.booleans()):           # flip to the Not* forms sometimes
            s["NotAction"] = s.pop("Action")
        if draw(st.integers(0, 4)) == 0:
            s["NotResource"] = s.pop("Resource")
        if "Principal" in s and draw(st.integers(0, 3)) == 0:
            s["NotPrincipal"] = s.pop("Principal")
        if "Sid" in s:
            s["Sid"] = f"S{i}"
        out.append(s)
    return out


context_value = {
    "cart:PrincipalTag/team": st.sampled_from(["eng", "ops", "ENG", ""]),
    "cart:prefix": st.sampled_from(["a/", "a/b", "b", ""]),
    "cart:Flag": st.sampled_from([True, False, "true", "TRUE", "no", 1, 1.0]),
    "cart:ObjectSize": st.sampled_from([0, 1, 1.0, True, 50, 99, 99.5, 100, "100", "x", -0.0, 0.0]),
    "cart:CurrentTime": st.integers(0, 60).map(lambda s: T0 + timedelta(seconds=s)),
    "cart:EpochTime": st.sampled_from([1767225599, 1767225600, 1767225601, 1767225600.0]),
    "cart:SourceIp": st.sampled_from(["10.0.0.1", "192.168.1.1", "::ffff:10.0.0.1", "nope"]),
    "cart:Groups": st.lists(st.sampled_from(["g1", "g2", "h"]), max_size=3),
    "cart:Owner": st.sampled_from(["ann", "bob", "eng", "engineer", "x1"]),
    "cart:Blob": st.sampled_from([b"\x00\x01", b"\x00", "AAE=", bytearray(b"\x00\x01")]),
    "cart:Arn": st.sampled_from(["arn:cart:s:r:a:user/ann", "arn:cart:s:r:a:user/bob", "x"]),
    "cart:username": st.sampled_from(["ann", "bob"]),
    "unrelated:key": st.integers(),
}

contexts = st.dictionaries(st.sampled_from(sorted(context_value)), st.none(), max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: context_value[k] for k in keys}))

requests = st.tuples(st.sampled_from(ACTIONS + ["CART:getOBJECT"]), st.sampled_from(PATHS),
                     st.sampled_from(PRINCIPALS),
                     st.one_of(st.none(), st.dictionaries(st.sampled_from(["team", "Team", "x"]),
                                                          st.sampled_from(["eng", "ops"]),
                                                          max_size=2)),
                     contexts)


def doc(sts, version="2012-10-17"):
    return {"Version": version, "Statement": sts}


def decide(policies, req):
    action, resource, principal, tags, ctx = req
    ps = iam.PolicySet(policies)
    return ps.decide(action, resource, principal, tags=tags, context=ctx)


@SETTINGS
@given(statements(min_size=1), statements(min_size=1, max_size=3), requests)
def test_adding_deny_statements_never_grants(sts, extra, req):
    denies = [dict(s, Effect="Deny", **({"Sid": f"X{i}"} if "Sid" in s else {}))
              for i, s in enumerate(extra)]
    before = decide([doc(sts)], req)
    after = decide([doc(sts + denies)], req)
    if before != A:
        assert after != A
    if before == D:
        assert after == D
    assert after in (before, D)


@SETTINGS
@given(statements(min_size=1), requests, st.randoms(use_true_random=False))
def test_statement_order_never_matters(sts, req, rnd):
    shuffled = list(sts)
    rnd.shuffle(shuffled)
    assert decide([doc(sts)], req) == decide([doc(shuffled)], req)


@SETTINGS
@given(statements(min_size=1), requests, st.integers(0, 2 ** 32))
def test_splitting_statements_across_policies_never_matters(sts, req, seed):
    r = random.Random(seed)
    parts: dict = {}
    for s in sts:
        parts.setdefault(r.randrange(4), []).append(s)
    split = {f"p{k}": doc(v) for k, v in parts.items()}
    assert decide([doc(sts)], req) == decide(split, req)


@SETTINGS
@given(statements(min_size=1), st.lists(requests, min_size=1, max_size=25),
       st.integers(0, 2 ** 32))
def test_cached_decision_equals_fresh_evaluation(sts, reqs, seed):
    ps = iam.PolicySet([doc(sts)])
    r = random.Random(seed)
    # Repeat requests, sometimes with one context value or tag changed, so that cache hits and
    # near-misses are both exercised.
    sequence = []
    for req in reqs:
        sequence.append(req)
        if r.random() < 0.5:
            sequence.append(r.choice(sequence))
        action, resource, principal, tags, ctx = req
        if ctx and r.random() < 0.5:
            k = r.choice(sorted(ctx))
            ctx2 = dict(ctx)
            ctx2[k] = r.choice([None, "eng", 1, True, 1.0, "10.0.0.1", ["g1"], T0])
            sequence.append((action, resource, principal, tags, ctx2))
        if r.random() < 0.3:
            sequence.append((action, resource, principal, {"team": r.choice(["eng", "ops"])}, ctx))
        if r.random() < 0.5:
            sequence.append((action, resource, r.choice(PRINCIPALS), tags, ctx))
    for req in sequence:
        action, resource, principal, tags, ctx = req
        cached = ps.decide(action, resource, principal, tags=tags, context=ctx)
        fresh = iam.PolicySet([doc(sts)]).decide(action, resource, principal, tags=tags,
                                                 context=ctx)
        explained = ps.explain(action, resource, principal, tags=tags, context=ctx)
        assert cached == fresh == explained.decision
        assert (explained.statements == ()) == (cached == N)


@SETTINGS
@given(statements(min_size=1), requests)
def test_unreferenced_context_keys_never_matter(sts, req):
    action, resource, principal, tags, ctx = req
    base = decide([doc(sts)], req)
    noisy = dict(ctx, **{"zzz:unused": "x", "cart:unused": [1, 2]})
    assert decide([doc(sts)], (action, resource, principal, tags, noisy)) == base


@SETTINGS
@given(statements(min_size=1), requests)
def test_normalised_document_decides_the_same(sts, req):
    p = iam.Policy.parse(doc(sts))
    assert decide([p.document], req) == decide([p], req) == decide([p.to_json()], req)


@SETTINGS
@given(statements(min_size=1), requests)
def test_allow_requires_an_allow_statement_and_deny_a_deny_statement(sts, req):
    got = decide([doc(sts)], req)
    only_allows = [s for s in sts if s["Effect"] == "Allow"]
    only_denies = [s for s in sts if s["Effect"] == "Deny"]
    if got == A:
        assert decide([doc(only_allows)], req) == A
    if got == D:
        assert decide([doc(only_denies)], req) == D
    if not only_allows:
        assert got != A


@SETTINGS
@given(st.sampled_from(PATHS + ["a//b", "/a/./b/", "a/b/", "//"]), st.sampled_from(PATTERNS))
def test_request_spellings_of_one_path_decide_the_same(path, pattern):
    ps = iam.PolicySet([doc([{"Effect": "Allow", "Action": "*", "Resource": pattern}])])
    norm = iam.resource_path(path)
    for spelling in {path, norm, norm.lstrip("/") or "/", norm.replace("/", "//"),
                     norm.replace("/", "/./")}:
        assert ps.decide("cart:GetObject", spelling, "ann") == \
            ps.decide("cart:GetObject", norm, "ann")


def test_policy_change_means_new_set_and_no_stale_decision():
    allow = doc([{"Effect": "Allow", "Action": "*", "Resource": "*"}])
    old = iam.PolicySet({"p": allow})
    assert old.decide("cart:GetObject", "/x", "ann") == A
    new = iam.PolicySet({"p": doc([{"Effect": "Deny", "Action": "*", "Resource": "*"}])})
    assert new.decide("cart:GetObject", "/x", "ann") == D
    assert old.decide("cart:GetObject", "/x", "ann") == A      # the old set is unchanged


def test_cache_tells_apart_values_python_considers_equal():
    ps = iam.PolicySet([doc([{"Effect": "Allow", "Action": "*", "Resource": "*",
                              "Condition": {"StringEquals": {"cart:v": "1"}}}])])
    # 1 == 1.0 == True in Python, but as text they are "1", "1" and "true".
    assert ps.decide("cart:List", "/", context={"cart:v": 1}) == A
    assert ps.decide("cart:List", "/", context={"cart:v": True}) == N
    assert ps.decide("cart:List", "/", context={"cart:v": 1.0}) == A
    assert ps.decide("cart:List", "/", context={"cart:v": "1"}) == A
    ps2 = iam.PolicySet([doc([{"Effect": "Allow", "Action": "*", "Resource": "*",
                               "Condition": {"Bool": {"cart:v": "true"}}}])])
    assert ps2.decide("cart:List", "/", context={"cart:v": True}) == A
    assert ps2.decide("cart:List", "/", context={"cart:v": 1}) == N
    ps3 = iam.PolicySet([doc([{"Effect": "Allow", "Action": "*", "Resource": "*",
                               "Condition": {"StringEquals": {"cart:t": "2026-01-01T01:00:00Z"}}}])])
    plus1 = timezone(timedelta(hours=1))
    assert ps3.decide("cart:List", "/", context={"cart:t": datetime(2026, 1, 1, 2, tzinfo=plus1)}) == A
    assert ps3.decide("cart:List", "/", context={"cart:t": datetime(2026, 1, 1, 2)}) == N


def test_decisions_that_read_current_time_are_not_cached_but_others_are():
    ps = iam.PolicySet([doc([
        {"Effect": "Allow", "Action": "cart:List", "Resource": "*",
         "Condition": {"DateLessThan": {"cart:CurrentTime": "2026-01-01T00:00:10Z"}}},
        {"Effect": "Allow", "Action": "cart:GetObject", "Resource": "*"}])])
    ps.decide("cart:List", "/", "ann", context={"cart:CurrentTime": T0})
    assert len(ps._cache) == 0
    ps.decide("cart:GetObject", "/", "ann")
    assert len(ps._cache) == 1


def test_time_keys_change_the_decision_between_calls():
    ps = iam.PolicySet([doc([{"Effect": "Allow", "Action": "*", "Resource": "*",
                              "Condition": {"DateLessThan": {"cart:CurrentTime": "2026-01-01T00:00:10Z"}}}])])
    assert ps.decide("cart:List", "/", "ann", context={"cart:CurrentTime": T0}) == A
    assert ps.decide("cart:List", "/", "ann",
                     context={"cart:CurrentTime": T0 + timedelta(seconds=11)}) == N
    assert ps.decide("cart:List", "/", "ann", context={"cart:CurrentTime": T0}) == A


def test_principal_element_changes_the_decision_of_a_static_set():
    ps = iam.PolicySet([doc([{"Effect": "Allow", "Principal": {"CART": "ann"}, "Action": "*",
                              "Resource": "/x"},
                             {"Effect": "Deny", "NotPrincipal": {"CART": ["ann", "bob"]},
                              "Action": "*", "Resource": "*"}])])
    assert ps.referenced_keys == frozenset()
    assert ps.decide("cart:GetObject", "/x", "ann") == A
    assert ps.decide("cart:GetObject", "/x", "bob") == N
    assert ps.decide("cart:GetObject", "/x", "eve") == D
    assert ps.decide("cart:GetObject", "/x") == D
    assert ps.decide("cart:GetObject", "/x", "ann") == A


def test_tags_and_principal_change_the_decision_between_calls():
    ps = iam.PolicySet([doc([{"Effect": "Allow", "Action": "*", "Resource": "/h/${cart:username}/*",
                              "Condition": {"StringEquals": {"cart:PrincipalTag/team": "eng"}}}])])
    assert ps.decide("cart:GetObject", "/h/ann/x", "ann", tags={"team": "eng"}) == A
    assert ps.decide("cart:GetObject", "/h/ann/x", "ann", tags={"team": "ops"}) == N
    assert ps.decide("cart:GetObject", "/h/ann/x", "bob", tags={"team": "eng"}) == N
    assert ps.decide("cart:GetObject", "/h/ann/x", "ann") == N
    assert ps.decide("cart:GetObject", "/h/ann/x", "ann", tags={"team": "eng"}) == A


# -- the wildcard matcher against a plain regex translation (safe on these short strings) -------
def reference_glob(pattern: str, text: str) -> bool:
    import re
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text, re.DOTALL) is not None


@settings(max_examples=600, deadline=None)
@given(st.text("ab/*?.", max_size=10), st.text("ab/.\n*?", max_size=12))
def test_wildcard_matcher_agrees_with_a_regex_translation(pattern, text):
    from cartridge.iam import patterns
    assert patterns.compile_pattern(pattern)(text) == reference_glob(pattern, text)
    assert patterns.PatternSet([patterns.tokens(pattern)]).match(text) == \
        reference_glob(pattern, text)


def test_concurrent_decisions_match_fresh_ones():
    import threading
    sts = [{"Effect": "Allow", "Action": "*", "Resource": "/h/${cart:username}/*",
            "Condition": {"StringEquals": {"cart:PrincipalTag/team": "eng"}}},
           {"Effect": "Deny", "Action": "cart:PutObject", "Resource": "*",
            "Condition": {"NumericGreaterThan": {"cart:ObjectSize": "10"}}}]
    ps = iam.PolicySet([doc(sts)])
    errors = []

    def worker(seed):
        r = random.Random(seed)
        for _ in range(2000):
            who = r.choice(["ann", "bob"])
            req = (r.choice(["cart:GetObject", "cart:PutObject"]), f"/h/{r.choice(['ann', 'bob'])}/x",
                   who, {"team": r.choice(["eng", "ops"])}, {"cart:ObjectSize": r.randrange(20)})
            got = ps.decide(*req[:3], tags=req[3], context=req[4])
            want = iam.PolicySet([doc(sts)]).decide(*req[:3], tags=req[3], context=req[4])
            if got != want:
                errors.append((req, got, want))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- resource patterns: literal matching against normalised paths (AWS semantics) ----------------
def _normalised_paths(alphabet="a./", max_len=9):
    """Every normalised path (and directory resource) of up to max_len characters over a
    small alphabet: 'a' stands for any ordinary character, '.' and '/' for themselves."""
    import itertools

    out = []
    for n in range(1, max_len + 1):
        for chars in itertools.product(alphabet, repeat=n):
            s = "".join(chars)
            try:
                if iam.resource_path(s) == s:
                    out.append(s)
            except cartridge.InvalidPathError:
                pass
    return out


NORMALISED = _normalised_paths()


@settings(max_examples=300, deadline=None)
@given(st.text("a./*?", min_size=1, max_size=4), st.sampled_from(["Resource", "NotResource"]),
       st.randoms(use_true_random=False))
def test_resource_patterns_match_literally_and_are_refused_only_when_nothing_can_match(
        pattern, field, rnd):
    """A pattern is accepted exactly when some normalised path matches it as an AWS glob ('*'
    any run including '/', '?' one character); an accepted one then decides, through
    evaluate(), exactly as that glob does (a 4-character pattern has a witness of at most 8
    characters, so the enumeration up to 9 is complete for it)."""
    import json
    import re

    rx = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                            for c in pattern), re.DOTALL)
    matching = [p for p in NORMALISED if rx.fullmatch(p)]
    policy = json.dumps(doc([{"Effect": "Allow", "Action": "cart:GetObject", field: pattern}]))
    try:
        ps = iam.PolicySet([policy])
    except cartridge.PolicyError as e:
        assert matching == [], (pattern, matching[:5])
        assert "can never match" in str(e)
        return
    assert matching, pattern
    sample = sorted(set(rnd.sample(NORMALISED, 100)) | set(matching[:100]))
    for path in sample:
        want = reference_glob(pattern, path) is (field == "Resource")
        assert (ps.decide("cart:GetObject", path) == A) is want, (pattern, path)
        assert (iam.evaluate(policy, action="cart:GetObject", resource=path) == A) is want
