"""Evaluation, table-driven: every condition operator (with IfExists and set prefixes), missing
keys, policy variables (defaults, escapes), wildcards, Not* elements, Deny precedence and case
rules, following the examples and rules of the AWS IAM documentation."""
import base64
import ipaddress
from datetime import date, datetime, timedelta, timezone

import pytest

from cartridge import iam
from cartridge.errors import InvalidPathError

A, D, N = iam.Decision.ALLOW, iam.Decision.EXPLICIT_DENY, iam.Decision.IMPLICIT_DENY
UTC = timezone.utc
MISSING = object()


def run_condition(block, ctx, version="2012-10-17", principal=None):
    """True when a statement holding `block` applies (checked both as an Allow and as a
    conditional Deny under a blanket Allow)."""
    allow = {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": block}
    deny = dict(allow, Effect="Deny")
    doc = {"Statement": [allow]}
    if version:
        doc["Version"] = version
    got = iam.evaluate(doc, action="cart:GetObject", resource="/f", principal=principal,
                       context=ctx)
    doc2 = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}, deny]}
    if version:
        doc2["Version"] = version
    got2 = iam.evaluate(doc2, action="cart:GetObject", resource="/f", principal=principal,
                        context=ctx)
    assert got in (A, N) and got2 in (A, D)
    assert (got == A) == (got2 == D), "a conditional Deny must deny exactly when the Allow allows"
    return got == A


def C(op, value, ctx_value=MISSING, key="cart:Key", ctx_key=None):
    """A one-key condition and a context with (or without) a value for it."""
    ctx = {} if ctx_value is MISSING else {ctx_key or key: ctx_value}
    return {op: {key: value}}, ctx


T0 = datetime(2020, 1, 1, tzinfo=UTC)
B64 = base64.b64encode(b"BinaryValue").decode()

CONDITIONS = [
    # -- String ---------------------------------------------------------------------------------
    ("StringEquals match", C("StringEquals", "abc", "abc"), True),
    ("StringEquals case-sensitive value", C("StringEquals", "abc", "ABC"), False),
    ("StringEquals other", C("StringEquals", "abc", "abd"), False),
    ("StringEquals prefix is not equal", C("StringEquals", "abc", "ab"), False),
    ("StringEquals missing key", C("StringEquals", "abc"), False),
    ("StringEquals values OR'ed", C("StringEquals", ["x", "abc"], "abc"), True),
    ("StringEquals values OR'ed none", C("StringEquals", ["x", "y"], "abc"), False),
    ("StringEquals no wildcards", C("StringEquals", "a*", "abc"), False),
    ("StringEquals star literally", C("StringEquals", "a*", "a*"), True),
    ("StringEquals empty string", C("StringEquals", "", ""), True),
    ("StringEquals key case-insensitive", C("StringEquals", "v", "v", key="Cart:KEY",
                                            ctx_key="cart:key"), True),
    ("StringEquals key case-insensitive 2", C("StringEquals", "v", "v", key="cart:key",
                                              ctx_key="CART:Key"), True),
    ("StringEquals number value", C("StringEquals", 5, "5"), True),
    ("StringEquals int context", C("StringEquals", "10", 10), True),
    ("StringEquals float value", C("StringEquals", 1.5, "1.5"), True),
    ("StringEquals bool value", C("StringEquals", True, "true"), True),
    ("StringEquals bool context", C("StringEquals", "true", True), True),
    ("StringEquals datetime context", C("StringEquals", "2020-01-01T00:00:00Z", T0), True),
    ("StringEquals bytes context is base64", C("StringEquals", B64, b"BinaryValue"), True),
    ("StringEquals unicode", C("StringEquals", "caf\u00e9", "caf\u00e9"), True),
    ("StringEquals unicode NFD differs", C("StringEquals", "caf\u00e9", "cafe\u0301"), False),
    ("StringNotEquals other", C("StringNotEquals", "a", "b"), True),
    ("StringNotEquals same", C("StringNotEquals", "a", "a"), False),
    ("StringNotEquals case differs", C("StringNotEquals", "a", "A"), True),
    ("StringNotEquals missing is true", C("StringNotEquals", "a"), True),
    ("StringNotEquals none of several", C("StringNotEquals", ["a", "b"], "c"), True),
    ("StringNotEquals one of several", C("StringNotEquals", ["a", "b"], "b"), False),
    ("StringEqualsIgnoreCase upper", C("StringEqualsIgnoreCase", "AbC", "ABC"), True),
    ("StringEqualsIgnoreCase lower", C("StringEqualsIgnoreCase", "AbC", "abc"), True),
    ("StringEqualsIgnoreCase differs", C("StringEqualsIgnoreCase", "AbC", "abd"), False),
    ("StringEqualsIgnoreCase missing", C("StringEqualsIgnoreCase", "AbC"), False),
    ("StringEqualsIgnoreCase no wildcard", C("StringEqualsIgnoreCase", "a*", "AB"), False),
    ("StringNotEqualsIgnoreCase same", C("StringNotEqualsIgnoreCase", "AbC", "abc"), False),
    ("StringNotEqualsIgnoreCase differs", C("StringNotEqualsIgnoreCase", "AbC", "x"), True),
    ("StringNotEqualsIgnoreCase missing", C("StringNotEqualsIgnoreCase", "AbC"), True),
    ("StringLike star", C("StringLike", "home/*", "home/a/b"), True),
    ("StringLike star empty run", C("StringLike", "home/*", "home/"), True),
    ("StringLike star needs prefix", C("StringLike", "home/*", "home"), False),
    ("StringLike case-sensitive", C("StringLike", "home/*", "Home/a"), False),
    ("StringLike qmark one", C("StringLike", "a?c", "abc"), True),
    ("StringLike qmark not zero", C("StringLike", "a?c", "ac"), False),
    ("StringLike qmark not two", C("StringLike", "a?c", "abbc"), False),
    ("StringLike only star", C("StringLike", "*", ""), True),
    ("StringLike middle star", C("StringLike", "a*z", "a/b/c/z"), True),
    ("StringLike middle star miss", C("StringLike", "a*z", "a/b/c/y"), False),
    ("StringLike many stars", C("StringLike", "*a*b*c*", "xxaxxbxxcxx"), True),
    ("StringLike many stars order", C("StringLike", "*a*b*c*", "cba"), False),
    ("StringLike star and qmark", C("StringLike", "*.t?t", "dir/x.txt"), True),
    ("StringLike dot is literal", C("StringLike", "a.c", "abc"), False),
    ("StringLike dot literal match", C("StringLike", "a.c", "a.c"), True),
    ("StringLike brackets literal", C("StringLike", "[ab]", "a"), False),
    ("StringLike brackets literal match", C("StringLike", "[ab]", "[ab]"), True),
    ("StringLike backslash literal", C("StringLike", "a\\*", "a\\xyz"), True),
    ("StringLike plus literal", C("StringLike", "a+", "aa"), False),
    ("StringLike newline crossed by star", C("StringLike", "a*b", "a\nb"), True),
    ("StringLike OR", C("StringLike", ["x*", "*y"], "ay"), True),
    ("StringLike missing", C("StringLike", "*"), False),
    ("StringLike adjacent stars", C("StringLike", "a**b", "ab"), True),
    ("StringLike S3 prefix example", C("StringLike", ["", "home/", "home/${cart:username}/*"],
                                       "home/ann/docs", key="cart:prefix"), False),
    ("StringNotLike none", C("StringNotLike", ["*.txt", "*.md"], "a.bin"), True),
    ("StringNotLike one", C("StringNotLike", ["*.txt", "*.md"], "a.md"), False),
    ("StringNotLike missing", C("StringNotLike", "*"), True),
    ("StringNotLike star matches all", C("StringNotLike", "*", "anything"), False),
    # -- Numeric ----------------------------------------------------------------------------------
    ("NumericEquals int", C("NumericEquals", "10", 10), True),
    ("NumericEquals text ctx", C("NumericEquals", "10", "10"), True),
    ("NumericEquals float ctx", C("NumericEquals", "10", 10.0), True),
    ("NumericEquals float policy", C("NumericEquals", "10.0", 10), True),
    ("NumericEquals exponent", C("NumericEquals", "1e1", 10), True),
    ("NumericEquals JSON number", C("NumericEquals", 10, "10"), True),
    ("NumericEquals differs", C("NumericEquals", "10", 11), False),
    ("NumericEquals not a number", C("NumericEquals", "10", "ten"), False),
    ("NumericEquals bool is not a number", C("NumericEquals", "1", True), False),
    ("NumericEquals missing", C("NumericEquals", "10"), False),
    ("NumericEquals big int exact", C("NumericEquals", "12345678901234567890",
                                      12345678901234567890), True),
    ("NumericEquals big int off by one", C("NumericEquals", "12345678901234567890",
                                           12345678901234567891), False),
    ("NumericEquals negative", C("NumericEquals", "-3", -3), True),
    ("NumericEquals OR", C("NumericEquals", ["1", "2"], 2), True),
    ("NumericNotEquals differs", C("NumericNotEquals", ["1", "2"], 3), True),
    ("NumericNotEquals one of", C("NumericNotEquals", ["1", "2"], 1), False),
    ("NumericNotEquals missing", C("NumericNotEquals", "1"), True),
    ("NumericLessThan below", C("NumericLessThan", "10", 9), True),
    ("NumericLessThan equal", C("NumericLessThan", "10", 10), False),
    ("NumericLessThan above", C("NumericLessThan", "10", 11), False),
    ("NumericLessThan fraction", C("NumericLessThan", "10", 9.99), True),
    ("NumericLessThan float policy", C("NumericLessThan", "2.5", 2.4), True),
    ("NumericLessThan negative", C("NumericLessThan", "0", -1), True),
    ("NumericLessThan OR of values", C("NumericLessThan", ["5", "10"], 7), True),
    ("NumericLessThan missing", C("NumericLessThan", "10"), False),
    ("NumericLessThan text ctx", C("NumericLessThan", "10", "9"), True),
    ("NumericLessThanEquals equal", C("NumericLessThanEquals", "10", 10), True),
    ("NumericLessThanEquals above", C("NumericLessThanEquals", "10", 10.5), False),
    ("NumericGreaterThan above", C("NumericGreaterThan", "10", 11), True),
    ("NumericGreaterThan equal", C("NumericGreaterThan", "10", 10), False),
    ("NumericGreaterThan OR of values", C("NumericGreaterThan", ["5", "10"], 7), True),
    ("NumericGreaterThanEquals equal", C("NumericGreaterThanEquals", "10", 10), True),
    ("NumericGreaterThanEquals below", C("NumericGreaterThanEquals", "10", 9), False),
    ("NumericGreaterThanEquals missing", C("NumericGreaterThanEquals", "0"), False),
    # -- Date -------------------------------------------------------------------------------------
    ("DateLessThan datetime before", C("DateLessThan", "2020-01-01T00:00:00Z",
                                       T0 - timedelta(seconds=1)), True),
    ("DateLessThan equal", C("DateLessThan", "2020-01-01T00:00:00Z", T0), False),
    ("DateLessThan text before", C("DateLessThan", "2020-01-01T00:00:00Z",
                                   "2019-12-31T23:59:59Z"), True),
    ("DateLessThan epoch before", C("DateLessThan", "2020-01-01T00:00:00Z", 1577836799), True),
    ("DateLessThan epoch equal", C("DateLessThan", "2020-01-01T00:00:00Z", 1577836800), False),
    ("DateLessThan epoch text", C("DateLessThan", "2020-01-01T00:00:00Z", "1577836799"), True),
    ("DateLessThan naive datetime is UTC", C("DateLessThan", "2020-01-01T00:00:00Z",
                                             datetime(2019, 12, 31, 23, 0)), True),
    ("DateLessThan offset ctx", C("DateLessThan", "2020-01-01T00:00:00Z",
                                  "2020-01-01T00:30:00+01:00"), True),
    ("DateLessThan offset ctx after", C("DateLessThan", "2020-01-01T00:00:00Z",
                                        "2020-01-01T00:30:00-01:00"), False),
    ("DateLessThan aware datetime", C("DateLessThan", "2020-01-01T00:00:00Z",
                                      datetime(2020, 1, 1, 0, 30,
                                               tzinfo=timezone(timedelta(hours=1)))), True),
    ("DateLessThan not a date", C("DateLessThan", "2020-01-01T00:00:00Z", "soon"), False),
    ("DateLessThan missing", C("DateLessThan", "2020-01-01T00:00:00Z"), False),
    ("DateLessThan fraction", C("DateLessThan", "2020-01-01T00:00:00.5Z",
                                "2020-01-01T00:00:00.25Z"), True),
    ("DateLessThanEquals equal", C("DateLessThanEquals", "2020-01-01T00:00:00Z", T0), True),
    ("DateGreaterThan epoch policy", C("DateGreaterThan", 1577836800, "2020-01-02"), True),
    ("DateGreaterThan epoch policy text", C("DateGreaterThan", "1577836800", "2019-06-01"), False),
    ("DateGreaterThan equal", C("DateGreaterThan", "2020-01-01", T0), False),
    ("DateGreaterThanEquals equal", C("DateGreaterThanEquals", "2020-01-01", T0), True),
    ("DateEquals date-only", C("DateEquals", "2020-01-01", datetime(2020, 1, 1)), True),
    ("DateEquals date object", C("DateEquals", "2020-01-01", date(2020, 1, 1)), True),
    ("DateEquals text", C("DateEquals", "2020-01-01", "2020-01-01T00:00:00Z"), True),
    ("DateEquals one second off", C("DateEquals", "2020-01-01", "2020-01-01T00:00:01Z"), False),
    ("DateEquals lower-case z", C("DateEquals", "2020-01-01t00:00:00z", T0), True),
    ("DateNotEquals missing", C("DateNotEquals", "2020-01-01"), True),
    ("DateNotEquals same", C("DateNotEquals", "2020-01-01", T0), False),
    ("DateNotEquals other", C("DateNotEquals", "2020-01-01", T0 + timedelta(days=1)), True),
    ("DateLessThan CurrentTime window", C("DateLessThan", "2030-06-30T00:00:00Z", T0,
                                          key="cart:CurrentTime"), True),
    # -- Bool ---------------------------------------------------------------------------------------
    ("Bool true", C("Bool", "true", True), True),
    ("Bool true text", C("Bool", "true", "true"), True),
    ("Bool true text upper", C("Bool", "true", "TRUE"), True),
    ("Bool false ctx", C("Bool", "true", False), False),
    ("Bool JSON false", C("Bool", False, False), True),
    ("Bool policy upper", C("Bool", "True", "true"), True),
    ("Bool not a bool", C("Bool", "true", "yes"), False),
    ("Bool int is not a bool", C("Bool", "true", 1), False),
    ("Bool missing", C("Bool", "true"), False),
    ("Bool OR", C("Bool", ["true", "false"], False), True),
    # -- Binary ---------------------------------------------------------------------------------------
    ("BinaryEquals bytes", C("BinaryEquals", B64, b"BinaryValue"), True),
    ("BinaryEquals bytearray", C("BinaryEquals", B64, bytearray(b"BinaryValue")), True),
    ("BinaryEquals memoryview", C("BinaryEquals", B64, memoryview(b"BinaryValue")), True),
    ("BinaryEquals base64 text", C("BinaryEquals", B64, B64), True),
    ("BinaryEquals other", C("BinaryEquals", B64, b"binaryvalue"), False),
    ("BinaryEquals text not base64", C("BinaryEquals", B64, "BinaryValue!"), False),
    ("BinaryEquals missing", C("BinaryEquals", B64), False),
    # -- IP -------------------------------------------------------------------------------------------
    ("IpAddress in v4 block", C("IpAddress", "203.0.113.0/24", "203.0.113.5"), True),
    ("IpAddress outside v4 block", C("IpAddress", "203.0.113.0/24", "203.0.114.1"), False),
    ("IpAddress v6 not in v4 block", C("IpAddress", "203.0.113.0/24", "2001:db8::1"), False),
    ("IpAddress not an address", C("IpAddress", "203.0.113.0/24", "not-an-ip"), False),
    ("IpAddress missing", C("IpAddress", "203.0.113.0/24"), False),
    ("IpAddress v4-mapped v6", C("IpAddress", "203.0.113.0/24", "::ffff:203.0.113.9"), True),
    ("IpAddress v6 block", C("IpAddress", "2001:DB8:1234:5678::/64", "2001:db8:1234:5678::1"),
     True),
    ("IpAddress v6 block outside", C("IpAddress", "2001:DB8:1234:5678::/64",
                                     "2001:db8:1234:5679::1"), False),
    ("IpAddress list", C("IpAddress", ["203.0.113.0/24", "2001:db8::/32"], "2001:db8::5"), True),
    ("IpAddress single address", C("IpAddress", "10.0.0.1", "10.0.0.1"), True),
    ("IpAddress single address other", C("IpAddress", "10.0.0.1", "10.0.0.2"), False),
    ("IpAddress host bits ignored", C("IpAddress", "10.1.2.3/8", "10.200.0.1"), True),
    ("IpAddress ipaddress object", C("IpAddress", "10.0.0.0/8",
                                     ipaddress.ip_address("10.9.9.9")), True),
    ("NotIpAddress inside", C("NotIpAddress", "203.0.113.0/24", "203.0.113.5"), False),
    ("NotIpAddress outside", C("NotIpAddress", "203.0.113.0/24", "198.51.100.1"), True),
    ("NotIpAddress missing", C("NotIpAddress", "203.0.113.0/24"), True),
    ("NotIpAddress in one of several", C("NotIpAddress", ["10.0.0.0/8", "192.168.0.0/16"],
                                         "192.168.1.1"), False),
    # -- ARN ------------------------------------------------------------------------------------------
    ("ArnLike user wildcard", C("ArnLike", "arn:aws:iam::123456789012:user/*",
                                "arn:aws:iam::123456789012:user/alice"), True),
    ("ArnLike other type", C("ArnLike", "arn:aws:iam::123456789012:user/*",
                             "arn:aws:iam::123456789012:role/x"), False),
    ("ArnLike other account", C("ArnLike", "arn:aws:iam::123456789012:user/*",
                                "arn:aws:iam::999999999999:user/alice"), False),
    ("ArnLike not an ARN", C("ArnLike", "arn:aws:iam::123456789012:user/*", "alice"), False),
    ("ArnLike missing", C("ArnLike", "arn:aws:iam::123456789012:user/*"), False),
    ("ArnEquals wildcards too", C("ArnEquals", "arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b"),
     True),
    ("ArnEquals exact", C("ArnEquals", "arn:aws:s3:::bucket", "arn:aws:s3:::bucket"), True),
    ("ArnEquals case-sensitive", C("ArnEquals", "arn:aws:s3:::bucket", "arn:aws:s3:::Bucket"),
     False),
    ("ArnLike per segment: star stays in its segment",
     C("ArnLike", "arn:aws:*:us-east-1:123:x", "arn:aws:a:b:us-east-1:123:x"), False),
    ("StringLike on the same crosses colons",
     C("StringLike", "arn:aws:*:us-east-1:123:x", "arn:aws:a:b:us-east-1:123:x"), True),
    ("ArnLike empty region segment", C("ArnLike", "arn:aws:s3:::*",
                                       "arn:aws:s3:us-east-1:123:bucket"), False),
    ("ArnLike resource keeps colons", C("ArnLike", "arn:aws:ssm:*:*:parameter/a:*",
                                        "arn:aws:ssm:r:1:parameter/a:b"), True),
    ("ArnLike all wildcard segments", C("ArnLike", "arn:*:*:*:*:*", "arn:x:y:z:w:v"), True),
    ("ArnLike qmark", C("ArnLike", "arn:aws:s3:::b?", "arn:aws:s3:::b1"), True),
    ("ArnNotLike match", C("ArnNotLike", "arn:aws:s3:::b/*", "arn:aws:s3:::b/x"), False),
    ("ArnNotLike other", C("ArnNotLike", "arn:aws:s3:::b/*", "arn:aws:s3:::c/x"), True),
    ("ArnNotLike missing", C("ArnNotLike", "arn:aws:s3:::b/*"), True),
    ("ArnNotEquals missing", C("ArnNotEquals", "arn:aws:s3:::b"), True),
    ("ArnNotEquals same", C("ArnNotEquals", "arn:aws:s3:::b", "arn:aws:s3:::b"), False),
    # -- Null -----------------------------------------------------------------------------------------
    ("Null true missing", C("Null", "true"), True),
    ("Null true present", C("Null", "true", "x"), False),
    ("Null true None value", C("Null", "true", None), True),
    ("Null true empty list", C("Null", "true", []), True),
    ("Null true empty string is present", C("Null", "true", ""), False),
    ("Null false present", C("Null", "false", "x"), True),
    ("Null false missing", C("Null", "false"), False),
    ("Null JSON bool", C("Null", True), True),
    ("Null both", C("Null", ["true", "false"], "x"), True),
    ("Null key case-insensitive", C("Null", "false", 1, key="cart:Key", ctx_key="CART:KEY"), True),
    # -- IfExists -------------------------------------------------------------------------------------
    ("StringEqualsIfExists missing", C("StringEqualsIfExists", "a"), True),
    ("StringEqualsIfExists match", C("StringEqualsIfExists", "a", "a"), True),
    ("StringEqualsIfExists differ", C("StringEqualsIfExists", "a", "b"), False),
    ("StringNotEqualsIfExists missing", C("StringNotEqualsIfExists", "a"), True),
    ("StringNotEqualsIfExists same", C("StringNotEqualsIfExists", "a", "a"), False),
    ("StringNotEqualsIfExists differ", C("StringNotEqualsIfExists", "a", "b"), True),
    ("StringLikeIfExists missing", C("StringLikeIfExists", "a*"), True),
    ("StringLikeIfExists miss", C("StringLikeIfExists", "a*", "b"), False),
    ("StringEqualsIgnoreCaseIfExists", C("StringEqualsIgnoreCaseIfExists", "A", "a"), True),
    ("NumericLessThanIfExists missing", C("NumericLessThanIfExists", "10"), True),
    ("NumericLessThanIfExists below", C("NumericLessThanIfExists", "10", 5), True),
    ("NumericLessThanIfExists above", C("NumericLessThanIfExists", "10", 15), False),
    ("NumericLessThanIfExists bad value", C("NumericLessThanIfExists", "10", "x"), False),
    ("DateGreaterThanIfExists missing", C("DateGreaterThanIfExists", "2020-01-01"), True),
    ("DateGreaterThanIfExists before", C("DateGreaterThanIfExists", "2020-01-01", "2019-01-01"),
     False),
    ("BoolIfExists missing", C("BoolIfExists", "true"), True),
    ("BoolIfExists false", C("BoolIfExists", "true", False), False),
    ("BinaryEqualsIfExists missing", C("BinaryEqualsIfExists", B64), True),
    ("IpAddressIfExists missing", C("IpAddressIfExists", "10.0.0.0/8"), True),
    ("IpAddressIfExists outside", C("IpAddressIfExists", "10.0.0.0/8", "11.0.0.1"), False),
    ("NotIpAddressIfExists inside", C("NotIpAddressIfExists", "10.0.0.0/8", "10.0.0.1"), False),
    ("ArnLikeIfExists missing", C("ArnLikeIfExists", "arn:aws:s3:::b"), True),
    ("ArnNotLikeIfExists match", C("ArnNotLikeIfExists", "arn:aws:s3:::b", "arn:aws:s3:::b"),
     False),
    # -- Set operators --------------------------------------------------------------------------------
    ("ForAllValues subset", C("ForAllValues:StringEquals", ["a", "b"], ["a"]), True),
    ("ForAllValues equal set", C("ForAllValues:StringEquals", ["a", "b"], ["b", "a"]), True),
    ("ForAllValues one outside", C("ForAllValues:StringEquals", ["a", "b"], ["a", "c"]), False),
    ("ForAllValues empty list", C("ForAllValues:StringEquals", ["a", "b"], []), True),
    ("ForAllValues missing", C("ForAllValues:StringEquals", ["a", "b"]), True),
    ("ForAllValues scalar", C("ForAllValues:StringEquals", ["a", "b"], "a"), True),
    ("ForAllValues tuple", C("ForAllValues:StringEquals", ["a", "b"], ("a", "b")), True),
    ("ForAllValues set", C("ForAllValues:StringEquals", ["a", "b"], {"a", "z"}), False),
    ("ForAllValues StringLike tag keys", C("ForAllValues:StringLike", "Created*",
                                           ["CreatedBy", "CreatedAt"]), True),
    ("ForAllValues StringLike tag keys miss", C("ForAllValues:StringLike", "Created*",
                                                ["CreatedBy", "Owner"]), False),
    ("ForAllValues StringNotEquals none", C("ForAllValues:StringNotEquals", ["a", "b"],
                                            ["c", "d"]), True),
    ("ForAllValues StringNotEquals one", C("ForAllValues:StringNotEquals", ["a", "b"],
                                           ["c", "a"]), False),
    ("ForAllValues StringNotEquals missing", C("ForAllValues:StringNotEquals", ["a"]), True),
    ("ForAllValues StringNotLike", C("ForAllValues:StringNotLike", "tmp*", ["x", "y"]), True),
    ("ForAllValues StringNotLike one", C("ForAllValues:StringNotLike", "tmp*", ["x", "tmpA"]),
     False),
    ("ForAllValues NumericLessThan", C("ForAllValues:NumericLessThan", "10", [1, 2, 3]), True),
    ("ForAllValues NumericLessThan one", C("ForAllValues:NumericLessThan", "10", [1, 20]), False),
    ("ForAllValues IfExists missing", C("ForAllValues:StringEqualsIfExists", "a"), True),
    ("ForAnyValue one", C("ForAnyValue:StringEquals", ["a", "b"], ["c", "a"]), True),
    ("ForAnyValue none", C("ForAnyValue:StringEquals", ["a", "b"], ["c"]), False),
    ("ForAnyValue empty", C("ForAnyValue:StringEquals", ["a", "b"], []), False),
    ("ForAnyValue missing", C("ForAnyValue:StringEquals", ["a", "b"]), False),
    ("ForAnyValue scalar", C("ForAnyValue:StringEquals", ["a", "b"], "b"), True),
    ("ForAnyValue StringNotEquals one differs", C("ForAnyValue:StringNotEquals", "a",
                                                  ["a", "b"]), True),
    ("ForAnyValue StringNotEquals all same", C("ForAnyValue:StringNotEquals", "a", ["a"]), False),
    ("ForAnyValue StringNotEquals missing", C("ForAnyValue:StringNotEquals", "a"), False),
    ("ForAnyValue IfExists missing", C("ForAnyValue:StringEqualsIfExists", "a"), True),
    ("ForAnyValue IfExists empty", C("ForAnyValue:StringEqualsIfExists", "a", []), True),
    ("ForAnyValue IpAddress", C("ForAnyValue:IpAddress", "203.0.113.0/24",
                                ["10.0.0.1", "203.0.113.5"]), True),
    ("ForAnyValue StringLike", C("ForAnyValue:StringLike", "*.png", ["a.txt", "b.png"]), True),
    ("ForAnyValue Bool", C("ForAnyValue:Bool", "true", [False, True]), True),
    ("plain operator on list: any value", C("StringEquals", "a", ["x", "a"]), True),
    ("plain operator on list: none", C("StringEquals", "a", ["x", "y"]), False),
    ("plain negated on list: one equal", C("StringNotEquals", "a", ["x", "a"]), False),
    ("plain negated on list: none equal", C("StringNotEquals", "a", ["x", "y"]), True),
    ("plain operator on empty list is missing", C("StringEquals", "a", []), False),
    ("plain negated on empty list is missing", C("StringNotEquals", "a", []), True),
]

# Several keys and operators.
MULTI = [
    ("two keys both", {"StringEquals": {"cart:a": "1", "cart:b": "2"}},
     {"cart:a": "1", "cart:b": "2"}, True),
    ("two keys one", {"StringEquals": {"cart:a": "1", "cart:b": "2"}},
     {"cart:a": "1", "cart:b": "3"}, False),
    ("two keys one missing", {"StringEquals": {"cart:a": "1", "cart:b": "2"}},
     {"cart:a": "1"}, False),
    ("two operators both", {"StringEquals": {"cart:a": "1"}, "NumericLessThan": {"cart:n": "5"}},
     {"cart:a": "1", "cart:n": 4}, True),
    ("two operators one", {"StringEquals": {"cart:a": "1"}, "NumericLessThan": {"cart:n": "5"}},
     {"cart:a": "1", "cart:n": 6}, False),
    ("range with two operators", {"DateGreaterThan": {"cart:CurrentTime": "2020-01-01T00:00:00Z"},
                                  "DateLessThan": {"cart:CurrentTime": "2020-12-31T23:59:59Z"}},
     {"cart:CurrentTime": datetime(2020, 6, 1, tzinfo=UTC)}, True),
    ("range with two operators outside",
     {"DateGreaterThan": {"cart:CurrentTime": "2020-01-01T00:00:00Z"},
      "DateLessThan": {"cart:CurrentTime": "2020-12-31T23:59:59Z"}},
     {"cart:CurrentTime": datetime(2021, 6, 1, tzinfo=UTC)}, False),
    ("IP allow-list and secure flag", {"IpAddress": {"cart:SourceIp": ["10.0.0.0/8"]},
                                       "Bool": {"cart:SecureTransport": "true"}},
     {"cart:SourceIp": "10.1.1.1", "cart:SecureTransport": True}, True),
    ("same key under two operators", {"NumericGreaterThan": {"cart:n": "1"},
                                      "NumericLessThan": {"cart:n": "3"}}, {"cart:n": 2}, True),
    ("same key under two operators fails", {"NumericGreaterThan": {"cart:n": "1"},
                                            "NumericLessThan": {"cart:n": "3"}}, {"cart:n": 3},
     False),
    ("key spelled twice differently, both must hold",
     {"StringEquals": {"cart:a": "1", "CART:A": "2"}}, {"cart:a": "1"}, False),
    ("unrelated keys in context ignored", {"StringEquals": {"cart:a": "1"}},
     {"cart:a": "1", "cart:zzz": "x", "other": 5}, True),
    ("empty condition block holds", {}, {}, True),
]


@pytest.mark.parametrize("block_ctx, expected", [c[1:] for c in CONDITIONS],
                         ids=[c[0] for c in CONDITIONS])
def test_condition_operators(block_ctx, expected):
    block, ctx = block_ctx
    assert run_condition(block, ctx) is expected


@pytest.mark.parametrize("block, ctx, expected", [m[1:] for m in MULTI], ids=[m[0] for m in MULTI])
def test_keys_and_operators_are_anded(block, ctx, expected):
    assert run_condition(block, ctx) is expected


# -- policy variables in condition values -----------------------------------------------------------
VARIABLES = [
    ("username", {"StringEquals": {"cart:Owner": "${cart:username}"}}, {"cart:Owner": "ann"},
     "ann", "2012-10-17", True),
    ("username other", {"StringEquals": {"cart:Owner": "${cart:username}"}},
     {"cart:Owner": "bob"}, "ann", "2012-10-17", False),
    ("username anonymous unresolved", {"StringEquals": {"cart:Owner": "${cart:username}"}},
     {"cart:Owner": ""}, None, "2012-10-17", False),
    ("principal wins over context username", {"StringEquals": {"cart:Owner": "${cart:username}"}},
     {"cart:Owner": "mallory", "cart:username": "mallory"}, "ann", "2012-10-17", False),
    ("variable key case-insensitive", {"StringEquals": {"cart:Owner": "${CART:UserName}"}},
     {"cart:Owner": "ann"}, "ann", "2012-10-17", True),
    ("spaces inside", {"StringEquals": {"cart:Owner": "${ cart:username }"}},
     {"cart:Owner": "ann"}, "ann", "2012-10-17", True),
    ("embedded", {"StringEquals": {"cart:Path": "home/${cart:username}/x"}},
     {"cart:Path": "home/ann/x"}, "ann", "2012-10-17", True),
    ("two variables", {"StringEquals": {"cart:Path": "${cart:a}-${cart:b}"}},
     {"cart:Path": "1-2", "cart:a": "1", "cart:b": 2}, None, "2012-10-17", True),
    ("tag variable", {"StringEquals": {"cart:Team": "${cart:PrincipalTag/team}"}},
     {"cart:Team": "eng", "cart:PrincipalTag/team": "eng"}, "ann", "2012-10-17", True),
    ("default used", {"StringEquals": {"cart:Team": "${cart:PrincipalTag/team, 'company-wide'}"}},
     {"cart:Team": "company-wide"}, "ann", "2012-10-17", True),
    ("default not used when present",
     {"StringEquals": {"cart:Team": "${cart:PrincipalTag/team, 'company-wide'}"}},
     {"cart:Team": "company-wide", "cart:PrincipalTag/team": "eng"}, "ann", "2012-10-17", False),
    ("default with quote", {"StringEquals": {"cart:K": "${cart:none, 'it''s'}"}},
     {"cart:K": "it's"}, None, "2012-10-17", True),
    ("default with spaces kept", {"StringEquals": {"cart:K": "${cart:none,  ' a b '}"}},
     {"cart:K": " a b "}, None, "2012-10-17", True),
    ("default case-sensitive", {"StringEquals": {"cart:K": "${cart:none, 'Guest'}"}},
     {"cart:K": "guest"}, None, "2012-10-17", False),
    ("default holding a brace", {"StringEquals": {"cart:K": "${cart:none, 'a}b'}"}},
     {"cart:K": "a}b"}, None, "2012-10-17", True),
    ("empty default", {"StringEquals": {"cart:K": "x${cart:none, ''}"}},
     {"cart:K": "x"}, None, "2012-10-17", True),
    ("unresolved: positive false", {"StringEquals": {"cart:K": "${cart:none}"}},
     {"cart:K": ""}, None, "2012-10-17", False),
    ("unresolved: negated true", {"StringNotEquals": {"cart:K": "${cart:none}"}},
     {"cart:K": "x"}, None, "2012-10-17", True),
    ("unresolved one of two values", {"StringEquals": {"cart:K": ["${cart:none}", "x"]}},
     {"cart:K": "x"}, None, "2012-10-17", True),
    ("multi-valued key cannot be a variable", {"StringEquals": {"cart:K": "${cart:list}"}},
     {"cart:K": "a", "cart:list": ["a"]}, None, "2012-10-17", False),
    ("multi-valued key uses default", {"StringEquals": {"cart:K": "${cart:list, 'd'}"}},
     {"cart:K": "d", "cart:list": ["a", "b"]}, None, "2012-10-17", True),
    ("escape star in Equals", {"StringEquals": {"cart:K": "a${*}b"}}, {"cart:K": "a*b"}, None,
     "2012-10-17", True),
    ("escape star in Like is literal", {"StringLike": {"cart:K": "a${*}b"}}, {"cart:K": "axb"},
     None, "2012-10-17", False),
    ("escape star in Like matches star", {"StringLike": {"cart:K": "a${*}b"}}, {"cart:K": "a*b"},
     None, "2012-10-17", True),
    ("escape qmark in Like", {"StringLike": {"cart:K": "a${?}"}}, {"cart:K": "ab"}, None,
     "2012-10-17", False),
    ("escape qmark in Like matches", {"StringLike": {"cart:K": "a${?}"}}, {"cart:K": "a?"}, None,
     "2012-10-17", True),
    ("escape dollar", {"StringEquals": {"cart:K": "${$}{cart:username}"}},
     {"cart:K": "${cart:username}"}, "ann", "2012-10-17", True),
    ("substituted text is literal in Like", {"StringLike": {"cart:K": "${cart:username}/*"}},
     {"cart:K": "abc/x"}, "a*", "2012-10-17", False),
    ("substituted star matches itself", {"StringLike": {"cart:K": "${cart:username}/*"}},
     {"cart:K": "a*/x"}, "a*", "2012-10-17", True),
    ("one round of substitution", {"StringEquals": {"cart:K": "${cart:username}"}},
     {"cart:K": "${cart:other}", "cart:other": "zzz"}, "${cart:other}", "2012-10-17", True),
    ("int value rendered", {"StringEquals": {"cart:K": "${cart:EpochTime}"}},
     {"cart:K": "5", "cart:EpochTime": 5}, None, "2012-10-17", True),
    ("datetime value rendered ISO", {"StringEquals": {"cart:K": "${cart:CurrentTime}"}},
     {"cart:K": "2020-01-01T00:00:00Z", "cart:CurrentTime": T0}, None, "2012-10-17", True),
    ("bool value rendered", {"StringEquals": {"cart:K": "${cart:flag}"}},
     {"cart:K": "true", "cart:flag": True}, None, "2012-10-17", True),
    ("IgnoreCase with variable", {"StringEqualsIgnoreCase": {"cart:K": "${cart:username}"}},
     {"cart:K": "ANN"}, "Ann", "2012-10-17", True),
    ("Bool with variable", {"Bool": {"cart:K": "${cart:flag}"}},
     {"cart:K": True, "cart:flag": "TRUE"}, None, "2012-10-17", True),
    ("Bool with unresolved variable", {"Bool": {"cart:K": "${cart:flag}"}},
     {"cart:K": True}, None, "2012-10-17", False),
    ("ArnLike with variable", {"ArnLike": {"cart:K": "arn:aws:iam::1:user/${cart:username}"}},
     {"cart:K": "arn:aws:iam::1:user/ann"}, "ann", "2012-10-17", True),
    ("ArnLike with variable other", {"ArnLike": {"cart:K": "arn:aws:iam::1:user/${cart:username}"}},
     {"cart:K": "arn:aws:iam::1:user/bob"}, "ann", "2012-10-17", False),
    ("2008: variable is text", {"StringEquals": {"cart:K": "${cart:username}"}},
     {"cart:K": "ann"}, "ann", "2008-10-17", False),
    ("2008: variable text matches itself", {"StringEquals": {"cart:K": "${cart:username}"}},
     {"cart:K": "${cart:username}"}, "ann", "2008-10-17", True),
    ("no Version: variable is text", {"StringEquals": {"cart:K": "${cart:username}"}},
     {"cart:K": "ann"}, "ann", None, False),
    ("2008: escape is text", {"StringEquals": {"cart:K": "${*}"}}, {"cart:K": "*"}, None,
     "2008-10-17", False),
    ("2008: star inside escape text is a wildcard", {"StringLike": {"cart:K": "${*}"}},
     {"cart:K": "${anything}"}, None, "2008-10-17", True),
]


@pytest.mark.parametrize("block, ctx, principal, version, expected", [v[1:] for v in VARIABLES],
                         ids=[v[0] for v in VARIABLES])
def test_variables_in_conditions(block, ctx, principal, version, expected):
    assert run_condition(block, ctx, version=version, principal=principal) is expected


# -- resources --------------------------------------------------------------------------------------
def decide_resource(pattern, resource, principal=None, version="2012-10-17", not_resource=False,
                    context=None, action="cart:GetObject"):
    st = {"Effect": "Allow", "Action": "*", ("NotResource" if not_resource else "Resource"): pattern}
    doc = {"Statement": [st]}
    if version:
        doc["Version"] = version
    return iam.evaluate(doc, action=action, resource=resource, principal=principal,
                        context=context) == A


RESOURCES = [
    ("exact", "/a/b", "/a/b", True),
    ("exact other", "/a/b", "/a/c", False),
    ("exact not a directory resource", "/a/b", "/a/b/", False),
    ("directory resource", "/a/b/", "/a/b/", True),
    ("directory pattern vs file", "/a/b/", "/a/b", False),
    ("star crosses slash", "/a/*", "/a/b/c/d", True),
    ("star one level", "/a/*", "/a/b", True),
    ("star empty run", "/a/*", "/a/", True),
    ("star needs the slash", "/a/*", "/a", False),
    ("star is not a prefix match of the name", "/a/*", "/ab", False),
    ("qmark one char", "/a/?", "/a/b", True),
    ("qmark not two", "/a/?", "/a/bc", False),
    ("qmark not zero", "/a/?", "/a/", False),
    ("qmark matches slash", "/a?b", "/a/b", True),
    ("request missing leading slash", "/a/b", "a/b", True),
    ("request double slash", "/a/b", "/a//b", True),
    ("request dot segment", "/a/b", "/a/./b", True),
    ("request trailing dot", "/a", "/a/.", True),
    ("pattern starting with a qmark", "?data/readme.txt", "/data/readme.txt", True),
    ("pattern starting with a star", "*data/x", "/data/x", True),
    ("pattern starting with a star, deeper", "*data/x", "/my/data/x", True),
    ("pattern qmark is not dropped", "/?data/x", "/data/x", False),
    ("case-sensitive", "/A/b", "/a/b", False),
    ("case-sensitive star", "/docs/*", "/Docs/x", False),
    ("bare star matches root", "*", "/", True),
    ("bare star matches all", "*", "/any/thing", True),
    ("slash star matches root", "/*", "/", True),
    ("root", "/", "/", True),
    ("root is not everything", "/", "/a", False),
    ("NFC vs NFD differ", "/caf\u00e9", "/cafe\u0301", False),
    ("cyrillic look-alike differs", "/admin/*", "/\u0430dmin/x", False),
    ("fullwidth slash is not a slash", "/a/*", "/a\uff0fb", False),
    ("dot is literal", "/a.b", "/axb", False),
    ("plus literal", "/a+b", "/a+b", True),
    ("parens literal", "/(x)", "/(x)", True),
    ("brackets literal", "/[ab]", "/a", False),
    ("brackets literal match", "/[ab]", "/[ab]", True),
    ("dollar without brace literal", "/$x", "/$x", True),
    ("two stars", "/a/*/c/*", "/a/b/c/d", True),
    ("two stars miss", "/a/*/c/*", "/a/b/d", False),
    ("two stars need both separators", "/a/*/c/*", "/a/c/", False),
    ("suffix pattern", "*.txt", "/x/y.txt", True),
    ("suffix pattern miss", "*.txt", "/x/y.txt.bak", False),
    ("list OR", ["/x/*", "/y/*"], "/y/z", True),
    ("list OR miss", ["/x/*", "/y/*"], "/z/y", False),
    ("list with star", ["/x", "*"], "/q", True),
    ("unicode path", "/d\u00f6cs/*", "/d\u00f6cs/\u65e5\u672c", True),
]


@pytest.mark.parametrize("pattern, resource, expected", [r[1:] for r in RESOURCES],
                         ids=[r[0] for r in RESOURCES])
def test_resource_matching(pattern, resource, expected):
    assert decide_resource(pattern, resource) is expected
    # NotResource is the exact complement.
    assert decide_resource(pattern, resource, not_resource=True) is (not expected)


@pytest.mark.parametrize("resource", ["/x/../a/b", "/a/\x00", "", "/a\x1fb"])
def test_invalid_request_resources_raise(resource):
    with pytest.raises(InvalidPathError):
        decide_resource("*", resource)


RESOURCE_VARIABLES = [
    ("home dir", "/home/${cart:username}/*", "/home/ann/x", "ann", None, True),
    ("home dir other user", "/home/${cart:username}/*", "/home/ann/x", "bob", None, False),
    ("home dir anonymous: unresolved", "/home/${cart:username}/*", "/home//x", None, None, False),
    ("home dir anonymous literal", "/home/${cart:username}/*", "/home/${cart:username}/x", None,
     None, False),
    ("principal named star is literal", "/home/${cart:username}/*", "/home/ann/x", "*", None,
     False),
    ("principal named star own dir", "/home/${cart:username}/*", "/home/*/x", "*", None, True),
    ("principal named qmark is literal", "/home/${cart:username}/x", "/home/a/x", "?", None,
     False),
    ("principal with slash", "/home/${cart:username}/*", "/home/a/b/x", "a/b", None, True),
    ("default", "/home/${cart:username, 'guest'}/*", "/home/guest/x", None, None, True),
    ("default not used", "/home/${cart:username, 'guest'}/*", "/home/guest/x", "ann", None, False),
    ("tag", "/teams/${cart:PrincipalTag/team}/*", "/teams/eng/x", "ann",
     {"cart:PrincipalTag/team": "eng"}, True),
    ("tag other", "/teams/${cart:PrincipalTag/team}/*", "/teams/ops/x", "ann",
     {"cart:PrincipalTag/team": "eng"}, False),
    ("tag multi-valued: unresolved", "/teams/${cart:PrincipalTag/team}/*", "/teams/eng/x", "ann",
     {"cart:PrincipalTag/team": ["eng"]}, False),
    ("any context key", "/by-ip/${cart:SourceIp}", "/by-ip/10.0.0.1", None,
     {"cart:SourceIp": "10.0.0.1"}, True),
    ("escape star literal", "/lit/${*}", "/lit/*", None, None, True),
    ("escape star not wildcard", "/lit/${*}", "/lit/x", None, None, False),
    ("escape qmark literal", "/lit/${?}", "/lit/x", None, None, False),
    ("escape dollar", "/lit/${$}{x}", "/lit/${x}", None, None, True),
    ("variable then wildcard", "/${cart:username}*", "/annex", "ann", None, True),
]


@pytest.mark.parametrize("pattern, resource, principal, ctx, expected",
                         [r[1:] for r in RESOURCE_VARIABLES], ids=[r[0] for r in RESOURCE_VARIABLES])
def test_resource_variables(pattern, resource, principal, ctx, expected):
    assert decide_resource(pattern, resource, principal=principal, context=ctx) is expected


def test_resource_variables_disabled_in_2008():
    assert decide_resource("/home/${cart:username}/*", "/home/ann/x", "ann",
                           version="2008-10-17") is False
    assert decide_resource("/home/${cart:username}/*", "/home/${cart:username}/x", "ann",
                           version="2008-10-17") is True
    assert decide_resource("/lit/${*}", "/lit/${anything}", version=None) is True


def test_unresolved_variable_in_not_resource_excludes_nothing():
    # The pattern cannot match, so NotResource covers every resource: a Deny with it denies.
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "*", "NotResource": "/home/${cart:username}/*"}]}
    assert iam.evaluate(doc, action="cart:GetObject", resource="/home/ann/x") == D
    assert iam.evaluate(doc, action="cart:GetObject", resource="/home/ann/x", principal="ann") == A
    assert iam.evaluate(doc, action="cart:GetObject", resource="/home/bob/x", principal="ann") == D


# -- actions ----------------------------------------------------------------------------------------
ACTIONS = [
    ("exact", "cart:GetObject", "cart:GetObject", True),
    ("case-insensitive request", "cart:GetObject", "cart:getobject", True),
    ("case-insensitive request upper", "cart:GetObject", "CART:GETOBJECT", True),
    ("case-insensitive pattern", "CART:getOBJECT", "cart:GetObject", True),
    ("no prefix match", "cart:GetObject", "cart:GetObjects", False),
    ("other action", "cart:GetObject", "cart:PutObject", False),
    ("service wildcard", "cart:*", "cart:Compact", True),
    ("service wildcard other service", "cart:*", "other:GetObject", False),
    ("partial wildcard", "cart:Get*", "cart:GetPolicy", True),
    ("partial wildcard case", "cart:get*", "cart:GETOBJECT", True),
    ("partial wildcard miss", "cart:Get*", "cart:PutObject", False),
    ("qmark", "cart:?etObject", "cart:GetObject", True),
    ("qmark miss", "cart:?etObject", "cart:etObject", False),
    ("star everything", "*", "cart:ReadAudit", True),
    ("star everything even other services", "*", "x:y", True),
    ("list", ["cart:List", "cart:Export"], "cart:export", True),
    ("list miss", ["cart:List", "cart:Export"], "cart:Snapshot", False),
    ("wildcard service prefix", "*:GetObject", "cart:GetObject", True),
]


@pytest.mark.parametrize("pattern, action, expected", [a[1:] for a in ACTIONS],
                         ids=[a[0] for a in ACTIONS])
def test_action_matching(pattern, action, expected):
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": pattern,
                                                   "Resource": "*"}]}
    assert (iam.evaluate(doc, action=action, resource="/x") == A) is expected
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "NotAction": pattern,
                                                   "Resource": "*"}]}
    assert (iam.evaluate(doc, action=action, resource="/x") == A) is (not expected)


# -- principals -------------------------------------------------------------------------------------
PRINCIPALS = [
    ("star anonymous", {"Principal": "*"}, None, True),
    ("star named", {"Principal": "*"}, "ann", True),
    ("CART star", {"Principal": {"CART": "*"}}, "ann", True),
    ("CART star anonymous", {"Principal": {"CART": "*"}}, None, True),
    ("name", {"Principal": {"CART": "ann"}}, "ann", True),
    ("name other", {"Principal": {"CART": "ann"}}, "bob", False),
    ("name anonymous", {"Principal": {"CART": "ann"}}, None, False),
    ("name case-sensitive", {"Principal": {"CART": "ann"}}, "Ann", False),
    ("name not a prefix", {"Principal": {"CART": "ann"}}, "anne", False),
    ("list", {"Principal": {"CART": ["ann", "bob"]}}, "bob", True),
    ("list other", {"Principal": {"CART": ["ann", "bob"]}}, "eve", False),
    ("no principal element: everyone", {}, "anyone", True),
    ("no principal element: anonymous", {}, None, True),
    ("NotPrincipal listed", {"NotPrincipal": {"CART": "ann"}}, "ann", False),
    ("NotPrincipal other", {"NotPrincipal": {"CART": "ann"}}, "bob", True),
    ("NotPrincipal anonymous", {"NotPrincipal": {"CART": "ann"}}, None, True),
    ("NotPrincipal list", {"NotPrincipal": {"CART": ["ann", "bob"]}}, "bob", False),
    ("NotPrincipal star excludes all", {"NotPrincipal": "*"}, "ann", False),
]


@pytest.mark.parametrize("fields, principal, expected", [p[1:] for p in PRINCIPALS],
                         ids=[p[0] for p in PRINCIPALS])
def test_principal_matching(fields, principal, expected):
    st = {"Effect": "Allow", "Action": "*", "Resource": "*", **fields}
    assert (iam.evaluate({"Statement": st}, action="cart:List", resource="/",
                         principal=principal) == A) is expected


def test_deny_everyone_but_admin_with_not_principal():
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Sid": "OnlyAdmin", "Effect": "Deny", "NotPrincipal": {"CART": "admin"},
         "Action": "cart:PutPolicy", "Resource": "*"}]}
    assert iam.evaluate(doc, action="cart:PutPolicy", resource="/", principal="admin") == A
    assert iam.evaluate(doc, action="cart:PutPolicy", resource="/", principal="ann") == D
    assert iam.evaluate(doc, action="cart:PutPolicy", resource="/") == D
    assert iam.evaluate(doc, action="cart:GetPolicy", resource="/", principal="ann") == A


# -- decision logic ---------------------------------------------------------------------------------
ALLOW_ALL = {"Effect": "Allow", "Action": "*", "Resource": "*"}
DENY_SECRET = {"Sid": "NoSecrets", "Effect": "Deny", "Action": "cart:*", "Resource": "/secret/*"}


@pytest.mark.parametrize("statements, resource, expected", [
    ([], "/x", N),
    ([ALLOW_ALL], "/x", A),
    ([DENY_SECRET], "/secret/x", D),
    ([DENY_SECRET], "/x", N),
    ([ALLOW_ALL, DENY_SECRET], "/secret/x", D),
    ([DENY_SECRET, ALLOW_ALL], "/secret/x", D),
    ([ALLOW_ALL, DENY_SECRET], "/public/x", A),
    ([ALLOW_ALL, DENY_SECRET, ALLOW_ALL], "/secret/a/b", D),
    ([{"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/secret/*"}, DENY_SECRET],
     "/secret/x", D),
])
def test_explicit_deny_beats_allow_beats_implicit_deny(statements, resource, expected):
    doc = {"Version": "2012-10-17", "Statement": statements} if statements else None
    got = iam.evaluate([doc] if doc else [], action="cart:GetObject", resource=resource)
    assert got == expected


def test_deny_in_another_policy_wins():
    ps = iam.PolicySet({"allow": {"Statement": ALLOW_ALL}, "deny": {"Statement": DENY_SECRET}})
    assert ps.decide("cart:GetObject", "/secret/x", "ann") == D
    e = ps.explain("cart:GetObject", "/secret/x", "ann")
    assert e == iam.Explanation(D, (iam.StatementRef("deny", "NoSecrets", 0),))


def test_explain_lists_every_deciding_statement():
    doc = {"Version": "2012-10-17", "Statement": [
        {"Sid": "A1", "Effect": "Allow", "Action": "cart:Get*", "Resource": "/d/*"},
        {"Sid": "A2", "Effect": "Allow", "Action": "*", "Resource": "/d/x"},
        {"Effect": "Allow", "Action": "cart:PutObject", "Resource": "*"},
        {"Sid": "D1", "Effect": "Deny", "Action": "*", "Resource": "/d/private/*"},
    ]}
    e = iam.evaluate(doc, action="cart:GetObject", resource="/d/x", explain=True)
    assert e.decision == A
    assert [(s.sid, s.index) for s in e.statements] == [("A1", 0), ("A2", 1)]
    e = iam.evaluate(doc, action="cart:GetObject", resource="/d/private/k", explain=True)
    assert e.decision == D and [s.sid for s in e.statements] == ["D1"]
    e = iam.evaluate(doc, action="cart:DeleteObject", resource="/e", explain=True)
    assert e == (N, ())
    e = iam.evaluate(doc, action="cart:PutObject", resource="/e", explain=True)
    assert e.statements == (iam.StatementRef("#0", None, 2),)
    assert "statement #2" in str(e.statements[0])


def test_conditional_deny_denies():
    doc = {"Version": "2012-10-17", "Statement": [
        ALLOW_ALL,
        {"Effect": "Deny", "Action": "cart:PutObject", "Resource": "*",
         "Condition": {"NumericGreaterThan": {"cart:ObjectSize": "1048576"}}},
        {"Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"NotIpAddress": {"cart:SourceIp": ["10.0.0.0/8"]}}},
    ]}
    ok = {"cart:SourceIp": "10.0.0.7"}
    assert iam.evaluate(doc, action="cart:PutObject", resource="/a",
                        context={**ok, "cart:ObjectSize": 100}) == A
    assert iam.evaluate(doc, action="cart:PutObject", resource="/a",
                        context={**ok, "cart:ObjectSize": 2 << 20}) == D
    assert iam.evaluate(doc, action="cart:GetObject", resource="/a",
                        context={"cart:SourceIp": "8.8.8.8"}) == D
    # NotIpAddress with the key missing is true: no address, no access.
    assert iam.evaluate(doc, action="cart:GetObject", resource="/a") == D


def test_list_directory_resources_and_prefix_condition():
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "cart:List", "Resource": "/"},
        {"Effect": "Allow", "Action": "cart:List", "Resource": "/home/${cart:username}/*"},
    ]}
    assert iam.evaluate(doc, action="cart:List", resource="/", principal="ann") == A
    assert iam.evaluate(doc, action="cart:List", resource="/home/", principal="ann") == N
    assert iam.evaluate(doc, action="cart:List", resource="/home/ann/", principal="ann") == A
    assert iam.evaluate(doc, action="cart:List", resource="home//ann/docs/",
                        principal="ann") == A
    assert iam.evaluate(doc, action="cart:List", resource="/home/bob/", principal="ann") == N


def test_statement_without_principal_applies_to_everyone():
    doc = {"Statement": {"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/pub/*"}}
    for who in (None, "", "ann", "root"):
        assert iam.evaluate(doc, action="cart:GetObject", resource="/pub/a", principal=who) == A


def test_evaluate_derives_only_username_from_principal():
    doc = {"Version": "2012-10-17", "Statement": {
        "Effect": "Allow", "Action": "*", "Resource": "*",
        "Condition": {"StringEquals": {"cart:PrincipalTag/team": "eng"}}}}
    assert iam.evaluate(doc, action="cart:List", resource="/", principal="ann") == N
    assert iam.evaluate(doc, action="cart:List", resource="/", principal="ann",
                        context={"cart:PrincipalTag/team": "eng"}) == A


def test_policyset_tags_become_principal_tag_keys_and_override_context():
    ps = iam.PolicySet([{"Version": "2012-10-17", "Statement": {
        "Effect": "Allow", "Action": "*", "Resource": "/t/${cart:PrincipalTag/Team}/*"}}])
    assert ps.decide("cart:GetObject", "/t/eng/x", "ann", tags={"team": "eng"}) == A
    assert ps.decide("cart:GetObject", "/t/eng/x", "ann", tags={"TEAM": "eng"}) == A
    assert ps.decide("cart:GetObject", "/t/eng/x", "ann", tags={"team": "ops"}) == N
    assert ps.decide("cart:GetObject", "/t/eng/x", "ann", tags={"team": "ops"},
                     context={"cart:PrincipalTag/team": "eng"}) == N
    assert ps.decide("cart:GetObject", "/t/eng/x", "ann",
                     context={"cart:PrincipalTag/team": "eng"}) == A


def test_evaluate_accepts_every_policy_form():
    doc = {"Statement": ALLOW_ALL}
    p = iam.Policy.parse(doc)
    import json
    for form in (p, doc, json.dumps(doc), json.dumps(doc).encode(), [doc], (p,), {"n": doc},
                 iam.PolicySet([p]), [json.dumps(doc)]):
        assert iam.evaluate(form, action="cart:List", resource="/") == A
    assert iam.evaluate([], action="cart:List", resource="/") == N
    assert iam.evaluate({}, action="cart:List", resource="/") == N
    with pytest.raises(TypeError):
        iam.evaluate(5, action="cart:List", resource="/")


def test_bad_argument_types():
    ps = iam.PolicySet([{"Statement": ALLOW_ALL}])
    with pytest.raises(TypeError):
        ps.decide(["cart:List"], "/")
    with pytest.raises(TypeError):
        ps.decide(5, "/")
    with pytest.raises(TypeError):
        ps.decide("cart:List", "/", principal=5)
    with pytest.raises(InvalidPathError):
        ps.decide("cart:List", 5)
    ps2 = iam.PolicySet([{"Statement": {**ALLOW_ALL, "Condition": {"Null": {"cart:x": "false"}}}}])
    with pytest.raises(TypeError):
        ps2.decide("cart:List", "/", context={"cart:x": object()})
    with pytest.raises(TypeError):
        ps2.decide("cart:List", "/", context={5: "x"})


def test_hostile_patterns_do_not_backtrack():
    import time
    star_pattern = "/" + "*a" * 30 + "*b"
    doc = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": star_pattern,
                          "Condition": {"StringLike": {"cart:k": "*a*a*a*a*a*a*a*a*a*a*b"}}}]}
    ps = iam.PolicySet([doc])
    t = time.perf_counter()
    assert ps.decide("cart:GetObject", "/" + "a/" * 1500 + "c", context={"cart:k": "a" * 3000}) == N
    assert ps.decide("cart:GetObject", "/" + "a/" * 1500 + "b", context={"cart:k": "a" * 3000}) == N
    assert ps.decide("cart:GetObject", "/" + "a/" * 1500 + "b", context={"cart:k": "a" * 30 + "b"}) == A
    assert time.perf_counter() - t < 2.0


def test_for_all_values_holds_for_an_empty_string():
    """AWS: ForAllValues is true when the key resolves to a null data set, e.g. ''."""
    pol = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "cart:GetObject", "Resource": "*",
        "Condition": {"ForAllValues:StringEquals": {"cart:tags": ["a", "b"]}}}]}
    for value, want in (("", "Allow"), ([], "Allow"), (["a"], "Allow"), (["c"], "ImplicitDeny"),
                        ("c", "ImplicitDeny")):
        got = iam.evaluate(pol, action="cart:GetObject", resource="/x",
                           context={"cart:tags": value})
        assert got == want, value
