"""Policy documents: what parses, what is refused (PolicyError naming statement and field), and
the normalised form."""
import json

import pytest

import cartridge
from cartridge import iam
from cartridge.errors import CartridgeError, PolicyError

ALLOW_ALL = {"Effect": "Allow", "Action": "*", "Resource": "*"}


def doc(*statements, version="2012-10-17", **top):
    d = {"Statement": list(statements)}
    if version is not None:
        d["Version"] = version
    d.update(top)
    return d


def st(**fields):
    s = {"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/a"}
    s.update(fields)
    return {k: v for k, v in s.items() if v is not None}


def test_policy_error_hierarchy_and_exports():
    assert issubclass(PolicyError, CartridgeError)
    assert issubclass(PolicyError, ValueError)
    assert cartridge.PolicyError is PolicyError
    assert iam.PolicyError is PolicyError
    with pytest.raises(ValueError):
        iam.Policy.parse("{")


def test_decision_is_a_str_enum():
    assert iam.Decision.ALLOW == "Allow"
    assert iam.Decision.EXPLICIT_DENY == "ExplicitDeny"
    assert iam.Decision.IMPLICIT_DENY == "ImplicitDeny"
    assert isinstance(iam.Decision.ALLOW, str)
    assert str(iam.Decision.EXPLICIT_DENY) == "ExplicitDeny"
    assert iam.Decision("ImplicitDeny") is iam.Decision.IMPLICIT_DENY


@pytest.mark.parametrize("source", [
    doc(ALLOW_ALL),
    json.dumps(doc(ALLOW_ALL)),
    json.dumps(doc(ALLOW_ALL)).encode(),
    bytearray(json.dumps(doc(ALLOW_ALL)).encode()),
])
def test_parse_accepts_dict_str_and_bytes(source):
    p = iam.Policy.parse(source)
    assert len(p.statements) == 1
    assert p.statements[0].effect == "Allow"
    assert p.version == "2012-10-17"
    assert iam.Policy.parse(p) is p


def test_statement_object_or_list_normalise_to_list():
    one = iam.Policy.parse({"Version": "2012-10-17", "Statement": ALLOW_ALL})
    many = iam.Policy.parse({"Version": "2012-10-17", "Statement": [ALLOW_ALL]})
    assert one.document == many.document
    assert isinstance(one.document["Statement"], list)
    assert one == many and hash(one) == hash(many)


def test_document_is_a_copy_and_policy_is_immutable():
    p = iam.Policy.parse(doc(ALLOW_ALL))
    d = p.document
    d["Statement"][0]["Effect"] = "Deny"
    assert p.document["Statement"][0]["Effect"] == "Allow"
    with pytest.raises(AttributeError):
        p.foo = 1
    with pytest.raises(AttributeError):
        p.statements[0].sid = "x"
    with pytest.raises(TypeError):
        iam.Policy()


def test_parse_does_not_keep_a_reference_to_the_input():
    source = doc(st(Condition={"StringEquals": {"cart:x": "a"}}))
    p = iam.Policy.parse(source)
    source["Statement"][0]["Condition"]["StringEquals"]["cart:x"] = "b"
    source["Statement"][0]["Effect"] = "Deny"
    assert p.document["Statement"][0]["Condition"] == {"StringEquals": {"cart:x": "a"}}
    assert iam.evaluate(p, action="cart:GetObject", resource="/a",
                        context={"cart:x": "a"}) == "Allow"


def test_round_trip_through_document_and_json():
    p = iam.Policy.parse(doc(
        st(Sid="One", Resource=["/a/b/", "?x/y", "/home/${cart:username}/*"]),
        st(Sid="Two", Effect="Deny", NotAction=["cart:Put*"], Action=None,
           NotResource="/pub/*", Resource=None, Principal={"CART": ["ann", "bob"]},
           Condition={"IpAddress": {"cart:SourceIp": "10.0.0.0/8"}}),
        Id="my-policy"))
    again = iam.Policy.parse(p.document)
    assert again == p
    assert iam.Policy.parse(p.to_json()) == p
    assert p.id == "my-policy"
    assert p.document["Statement"][0]["Resource"] == ["/a/b/", "?x/y", "/home/${cart:username}/*"]
    assert [s.sid for s in p.statements] == ["One", "Two"]
    assert [s.index for s in p.statements] == [0, 1]


@pytest.mark.parametrize("raw", [
    "/a/b", "/docs/", "/", "*", "/a/*", "*.txt", "?data/x", "*/x", "/a/?/c", "/a/.?", "/a/..?",
    "/a/...", "/a*/b", "/home/${cart:username}/*", "${cart:username}", "/x/${*}/${?}/${$}",
    "/caf\u00e9", "/a/*/", "/" + "x" * 255,
])
def test_resource_patterns_are_kept_as_written(raw):
    """Patterns are matched literally, as AWS does: never rewritten."""
    p = iam.Policy.parse(doc(st(Resource=raw)))
    assert p.document["Statement"][0]["Resource"] == raw


@pytest.mark.parametrize("raw, fix", [
    ("a/b", "/a/b"),
    ("data/*", "/data/*"),
    ("/a//b", "/a/b"),
    ("//a///b//", "/a/b/"),
    ("/a/./b", "/a/b"),
    ("/a/../b", "/b"),
    ("/x/../a", "/a"),
    ("./a", "/a"),
    ("/a/.", "/a/"),
    ("//", "/"),
    ("*//a", "*/a"),
    ("home//${cart:PrincipalTag/team}//x", "/home/${cart:PrincipalTag/team}/x"),
    ("/home/${cart:username}//x", "/home/${cart:username}/x"),
])
@pytest.mark.parametrize("field", ["Resource", "NotResource"])
def test_patterns_that_can_never_match_are_refused_with_the_canonical_spelling(raw, fix, field):
    with pytest.raises(PolicyError, match=field) as e:
        iam.Policy.parse(doc(st(**{"Resource": None, field: raw})))
    assert f"write {fix!r}" in str(e.value)
    iam.Policy.parse(doc(st(**{"Resource": None, field: fix})))   # the suggestion is valid


@pytest.mark.parametrize("raw", ["..", "/a/\x00", "/a\nb", "/a/\x7f", "",
                                 "/" + "x" * 256, "/a" * 2100, "/a/b" + "?" * 4100])
def test_resource_patterns_breaking_path_rules_are_refused(raw):
    with pytest.raises(PolicyError, match="Resource"):
        iam.Policy.parse(doc(st(Resource=raw)))


def test_version_2008_and_missing_version_accepted():
    assert iam.Policy.parse(doc(ALLOW_ALL, version="2008-10-17")).variables_enabled is False
    p = iam.Policy.parse(doc(ALLOW_ALL, version=None))
    assert p.version is None and p.variables_enabled is False
    assert "Version" not in p.document
    assert iam.Policy.parse(doc(ALLOW_ALL)).variables_enabled is True


# -- refused documents: (document, words the message must contain) -----------------------------
BAD = [
    ("[]", ["JSON object"]),
    ("not json", ["not valid JSON"]),
    (b"\xff\xfe", ["UTF-8"]),
    ('{"Statement": [], "Statement": []}', ["duplicate key 'Statement'"]),
    ('{"Statement": {"Effect": "Allow", "Effect": "Deny", "Action": "*", "Resource": "*"}}',
     ["duplicate key 'Effect'"]),
    ('{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", '
     '"Condition": {"NumericEquals": {"cart:n": NaN}}}}', ["NaN"]),
    ({}, ["no Statement"]),
    ({"Statement": []}, ["non-empty"]),
    ({"Statement": "x"}, ["Statement"]),
    ({"Statement": [ALLOW_ALL, 5]}, ["statement #1", "object"]),
    (doc(ALLOW_ALL, version="2012-10-18"), ["Version"]),
    (doc(ALLOW_ALL, version=2012), ["Version"]),
    (doc(ALLOW_ALL, Id=5), ["Id"]),
    (doc(ALLOW_ALL, Extra=1), ["unknown policy element 'Extra'"]),
    (doc(st(Sid="S1", Foo=1)), ["statement 'S1' (#0)", "unknown element 'Foo'"]),
    (doc(st(effect="Allow")), ["unknown element 'effect'"]),
    (doc(st(Sid=5)), ["statement #0 Sid"]),
    (doc(st(Sid="A"), st(Sid="A")), ["statement 'A' (#1) Sid", "earlier"]),
    (doc(st(Effect=None)), ["Effect"]),
    (doc(st(Effect="allow")), ["Effect", "'allow'"]),
    (doc(st(Effect="Maybe")), ["Effect"]),
    (doc(st(Action=None)), ["exactly one of Action and NotAction"]),
    (doc(st(NotAction="*")), ["exactly one of Action and NotAction"]),
    (doc(st(Resource=None)), ["exactly one of Resource and NotResource"]),
    (doc(st(NotResource="/b")), ["exactly one of Resource and NotResource"]),
    (doc(st(Action=[])), ["Action", "non-empty"]),
    (doc(st(Action="")), ["Action"]),
    (doc(st(Action=5)), ["Action"]),
    (doc(st(Action=["cart:GetObject", 5])), ["Action"]),
    (doc(st(Action="GetObject")), ["Action", "'GetObject'", "not an action"]),
    (doc(st(Action="cart:")), ["Action"]),
    (doc(st(Action=":GetObject")), ["Action"]),
    (doc(st(Action="cart:Get Object")), ["Action"]),
    (doc(st(Action="cart:Get:Object")), ["Action"]),
    (doc(st(Resource=[])), ["Resource"]),
    (doc(st(Resource={"a": 1})), ["Resource"]),
    (doc(st(Resource="/home/${cart:username")), ["Resource", "unterminated"]),
    (doc(st(Resource="/home/${}")), ["Resource", "context key"]),
    (doc(st(Resource="/home/${a b}")), ["Resource"]),
    (doc(st(Resource="/home/${cart:username, guest}")), ["Resource", "single-quoted"]),
    (doc(st(Resource="/home/${cart:username, 'guest}")), ["Resource", "unterminated"]),
    (doc(st(Resource="/home/${cart:username, 'guest' x}")), ["Resource", "malformed"]),
    (doc(st(Principal="ann")), ["Principal"]),
    (doc(st(Principal={"AWS": "ann"})), ["Principal"]),
    (doc(st(Principal={"CART": "ann", "AWS": "x"})), ["Principal"]),
    (doc(st(Principal={"CART": []})), ["Principal"]),
    (doc(st(Principal={"CART": "an*"})), ["Principal", "wildcards"]),
    (doc(st(NotPrincipal={})), ["NotPrincipal"]),
    (doc(st(Principal="*", NotPrincipal="*")), ["both Principal and NotPrincipal"]),
    (doc(st(Condition="x")), ["Condition"]),
    (doc(st(Condition={"StringEquals": "x"})), ["Condition StringEquals"]),
    (doc(st(Condition={"StringEquals": {}})), ["Condition StringEquals", "non-empty"]),
    (doc(st(Condition={"StringEqual": {"k": "v"}})), ["unknown condition operator 'StringEqual'"]),
    (doc(st(Condition={"stringequals": {"k": "v"}})), ["unknown condition operator"]),
    (doc(st(Condition={"ForSomeValues:StringEquals": {"k": "v"}})), ["unknown condition operator"]),
    (doc(st(Condition={"StringEqualsIfExistsIfExists": {"k": "v"}})), ["unknown"]),
    (doc(st(Condition={"NullIfExists": {"k": "true"}})), ["Null"]),
    (doc(st(Condition={"ForAllValues:Null": {"k": "true"}})), ["Null"]),
    (doc(st(Condition={"StringEquals": {"k": []}})), ["at least one value"]),
    (doc(st(Condition={"StringEquals": {"k": None}})), ["strings, numbers or booleans"]),
    (doc(st(Condition={"StringEquals": {"k": {"a": 1}}})), ["strings, numbers or booleans"]),
    (doc(st(Condition={"StringEquals": {"k": [["a"]]}})), ["strings, numbers or booleans"]),
    (doc(st(Condition={"StringEquals": {"": "v"}})), ["condition key"]),
    (doc(st(Condition={"StringEquals": {"k": "${unterminated"}})), ["unterminated"]),
    (doc(st(Condition={"NumericEquals": {"k": "ten"}})), ["'ten' is not a number"]),
    (doc(st(Condition={"NumericEquals": {"k": "1_000"}})), ["not a number"]),
    (doc(st(Condition={"NumericEquals": {"k": "inf"}})), ["not a number"]),
    (doc(st(Condition={"NumericLessThan": {"k": True}})), ["not a number"]),
    (doc(st(Condition={"NumericLessThan": {"k": "${cart:n}"}})), ["not a number"]),
    (doc(st(Condition={"DateLessThan": {"k": "yesterday"}})), ["not an ISO 8601 date"]),
    (doc(st(Condition={"DateLessThan": {"k": "2020-13-01"}})), ["not an ISO 8601 date"]),
    (doc(st(Condition={"DateLessThan": {"k": True}})), ["not an ISO 8601 date"]),
    (doc(st(Condition={"Bool": {"k": "yes"}})), ["'yes' is not 'true' or 'false'"]),
    (doc(st(Condition={"Bool": {"k": 1}})), ["not 'true' or 'false'"]),
    (doc(st(Condition={"Null": {"k": "maybe"}})), ["not 'true' or 'false'"]),
    (doc(st(Condition={"BinaryEquals": {"k": "not base64!"}})), ["not base64"]),
    (doc(st(Condition={"IpAddress": {"k": "300.1.1.1"}})), ["not an IP address"]),
    (doc(st(Condition={"NotIpAddress": {"k": "10.0.0.0/33"}})), ["not an IP address"]),
    (doc(st(Condition={"ArnLike": {"k": "arn:aws:s3"}})), ["not an ARN"]),
    (doc(st(Condition={"ArnEquals": {"k": "*"}})), ["not an ARN"]),
]


@pytest.mark.parametrize("source, words", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_malformed_documents_are_refused(source, words):
    with pytest.raises(PolicyError) as e:
        iam.Policy.parse(source)
    for w in words:
        assert w in str(e.value)


def test_error_names_statement_sid_and_index_and_field():
    with pytest.raises(PolicyError) as e:
        iam.Policy.parse(doc(ALLOW_ALL, st(Sid="ReadHome", Condition={
            "DateLessThan": {"cart:CurrentTime": "soon"}})))
    msg = str(e.value)
    assert "statement 'ReadHome' (#1)" in msg
    assert "Condition DateLessThan cart:CurrentTime" in msg
    with pytest.raises(PolicyError, match=r"statement #2 Action"):
        iam.Policy.parse(doc(ALLOW_ALL, ALLOW_ALL, st(Action="nope")))


def test_variables_in_2008_policies_are_literal_text_so_malformed_ones_parse():
    p = iam.Policy.parse(doc(st(Resource="/home/${cart:username"), version="2008-10-17"))
    assert p.document["Statement"][0]["Resource"] == "/home/${cart:username"
    iam.Policy.parse(doc(st(Condition={"StringEquals": {"k": "${"}}), version=None))


@pytest.mark.parametrize("action, matched, unmatched", [
    ("*", "other:Thing", None),
    ("cart:*", "cart:PutObject", "other:GetObject"),
    ("cart:Get*", "cart:GetPolicy", "cart:PutObject"),
    ("cart:?etObject", "cart:SetObject", "cart:PutObject"),
    ("Cart:getobject", "cart:GETOBJECT", "cart:GetObjects"),
    ("other-service:AnyThing", "Other-Service:anything", "cart:GetObject"),
    ("cart:List", "cart:list", "cart:GetObject"),
    ("*:GetObject", "s3:GetObject", "cart:PutObject"),
])
def test_action_patterns_accepted(action, matched, unmatched):
    """Each pattern parses, is kept as written, and is what decides (not the helper's default
    cart:GetObject): an action it matches is allowed, one it does not is implicitly denied."""
    policy = iam.Policy.parse(doc(st(Action=action)))
    assert policy.statements[0].document["Action"] == action
    assert policy.document["Statement"][0]["Action"] == action
    allow, deny = iam.Decision.ALLOW, iam.Decision.IMPLICIT_DENY
    assert iam.evaluate(policy, action=matched, resource="/a") == allow
    if unmatched is not None:
        assert iam.evaluate(policy, action=unmatched, resource="/a") == deny
    listed = iam.Policy.parse(doc(st(Action=[action, "cart:DeleteObject"])))
    assert listed.statements[0].document["Action"] == [action, "cart:DeleteObject"]
    assert iam.evaluate(listed, action=matched, resource="/a") == allow
    assert iam.evaluate(listed, action="cart:DeleteObject", resource="/a") == allow


@pytest.mark.parametrize("op", [
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
    "StringLike", "StringNotLike", "NumericEquals", "NumericNotEquals", "NumericLessThan",
    "NumericLessThanEquals", "NumericGreaterThan", "NumericGreaterThanEquals", "DateEquals",
    "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan",
    "DateGreaterThanEquals", "Bool", "BinaryEquals", "IpAddress", "NotIpAddress", "ArnEquals",
    "ArnLike", "ArnNotEquals", "ArnNotLike"])
@pytest.mark.parametrize("prefix", ["", "ForAllValues:", "ForAnyValue:"])
@pytest.mark.parametrize("suffix", ["", "IfExists"])
def test_every_operator_with_every_prefix_and_suffix_parses(op, prefix, suffix):
    value = {"Numeric": "1", "Date": "2020-01-01T00:00:00Z", "Bool": "true",
             "Binary": "AAEC", "IpAd": "10.0.0.0/8", "NotI": "10.0.0.0/8",
             "Arn": "arn:aws:s3:::b/*"}
    v = next((x for k, x in value.items() if op.startswith(k)), "text")
    p = iam.Policy.parse(doc(st(Condition={prefix + op + suffix: {"cart:Key": v}})))
    assert p.statements[0].document["Condition"] == {prefix + op + suffix: {"cart:Key": v}}


def test_principal_forms():
    for principal in ["*", {"CART": "*"}, {"CART": "ann"}, {"CART": ["ann", "bob"]}]:
        p = iam.Policy.parse(doc(st(Principal=principal)))
        assert p.document["Statement"][0]["Principal"] == principal
    p = iam.Policy.parse(doc(st(NotPrincipal={"CART": ["ann"]})))
    assert p.document["Statement"][0]["NotPrincipal"] == {"CART": ["ann"]}


def test_policyset_from_mapping_and_iterable():
    a = iam.Policy.parse(doc(st(Sid="A")))
    ps = iam.PolicySet({"first": a, "second": doc(st(Sid="B", Effect="Deny"))})
    assert list(ps.policies) == ["first", "second"]
    assert len(ps) == 2
    e = ps.explain("cart:GetObject", "/a")
    assert e.decision == iam.Decision.EXPLICIT_DENY
    assert e.statements == (iam.StatementRef("second", "B", 0),)
    ps2 = iam.PolicySet([a, json.dumps(doc(st()))])
    assert list(ps2.policies) == ["#0", "#1"]
    assert iam.PolicySet().decide("cart:GetObject", "/a") == iam.Decision.IMPLICIT_DENY
    with pytest.raises(PolicyError):
        iam.PolicySet({"bad": {"Statement": []}})


def test_referenced_keys_cover_conditions_and_variables():
    ps = iam.PolicySet([doc(
        st(Resource="/t/${cart:PrincipalTag/Team}/*"),
        st(Condition={"StringEquals": {"Cart:SourceIp": "${cart:UserName}", "x:y": "${a:b, 'd'}"},
                      "DateLessThan": {"cart:CurrentTime": "2030-01-01"}}),
        st(Resource="/lit/${*}"))])
    assert ps.referenced_keys == {"cart:principaltag/team", "cart:sourceip", "cart:username",
                                  "x:y", "a:b", "cart:currenttime"}
    assert iam.PolicySet([doc(ALLOW_ALL)]).referenced_keys == frozenset()
    # Version 2008: variables are text, so they reference nothing.
    ps08 = iam.PolicySet([doc(st(Resource="/t/${cart:username}"), version="2008-10-17")])
    assert ps08.referenced_keys == frozenset()


def test_known_actions_listed():
    assert set(iam.ACTIONS) == {
        "cart:GetObject", "cart:PutObject", "cart:DeleteObject", "cart:List", "cart:GetPolicy",
        "cart:PutPolicy", "cart:ReadAudit", "cart:Snapshot", "cart:Export", "cart:Compact",
        "cart:Freeze"}
