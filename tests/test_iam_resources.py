"""Resource patterns are matched as written against the normalised request path (AWS), and a
pattern that can never match a normalised path is refused, at parse and at load."""
from __future__ import annotations

import re

import pytest

import cartridge
from cartridge import AccessDeniedError, PolicyError, iam
from cartridge.cli import main

V = "2012-10-17"
A, D, N = iam.Decision.ALLOW, iam.Decision.EXPLICIT_DENY, iam.Decision.IMPLICIT_DENY


def doc(*statements):
    return {"Version": V, "Statement": list(statements)}


def stmt(effect, resource, action="cart:GetObject", field="Resource"):
    return {"Effect": effect, "Action": action, field: resource}


CART_OPTIONS = {"sync": "off"}     # the shared `cart` fixture (conftest.py), without fsyncs


@pytest.fixture
def cart(cart):
    """The shared fixture's archive (conftest.py) with two files."""
    cart.write("/data/readme.txt", b"readme")
    cart.write("/data/other.txt", b"other")
    return cart


def test_deny_on_a_pattern_starting_with_a_qmark_denies_what_aws_denies(cart):
    """Regression: '?data/readme.txt' was rewritten to '/?data/readme.txt' and stopped denying."""
    policy = doc(stmt("Allow", "*", "cart:*"), stmt("Deny", "?data/readme.txt"))
    assert iam.evaluate(policy, action="cart:GetObject", resource="/data/readme.txt") == D
    cart.set_policy("p", policy)
    assert cart.get_policy("p")["Statement"][1]["Resource"] == "?data/readme.txt"
    alice = cart.as_principal("alice")
    with pytest.raises(AccessDeniedError):
        alice.read("/data/readme.txt")
    with pytest.raises(AccessDeniedError):
        alice.read("data//readme.txt")              # any spelling of the request
    assert alice.read("/data/other.txt") == b"other"
    assert cart.check_access("alice", "cart:GetObject", "/data/readme.txt").decision == D
    assert cart.check_access("alice", "cart:GetObject", "data/./readme.txt").decision == D


def test_a_pattern_starting_with_a_star_matches_across_directories(cart):
    cart.set_policy("p", doc(stmt("Allow", "*", "cart:*"), stmt("Deny", "*readme.txt")))
    alice = cart.as_principal("alice")
    with pytest.raises(AccessDeniedError):
        alice.read("/data/readme.txt")
    assert alice.read("/data/other.txt") == b"other"


@pytest.mark.parametrize("raw, fix", [("data/*", "/data/*"), ("/a//b", "/a/b"),
                                      ("/a/./b", "/a/b"), ("/a/../b", "/b")])
@pytest.mark.parametrize("field", ["Resource", "NotResource"])
def test_set_policy_refuses_patterns_that_can_never_match(cart, raw, fix, field):
    with pytest.raises(PolicyError, match=f"{field}: .* can never match") as e:
        cart.set_policy("p", doc(stmt("Deny", raw, field=field)))
    assert f"write {fix!r}" in str(e.value)
    assert cart.policies() == {}


@pytest.mark.parametrize("stored, fix", [("data/*", "/data/*"), ("/data//readme.txt",
                                                                   "/data/readme.txt")])
def test_a_stored_pattern_that_can_never_match_is_refused_loudly_at_load(cart, monkeypatch,
                                                                         stored, fix):
    """A document stored by another writer (or by hand) holding a pattern as typed: its Deny
    would silently never apply under literal matching, so compiling it fails instead, naming
    the pattern and its fix, until the owner replaces it. Nothing is allowed meanwhile."""
    with monkeypatch.context() as m:
        m.setattr("cartridge.iam.resources.can_match", lambda tpl: True)
        cart.set_policy("old", doc(stmt("Allow", "*", "cart:*"), stmt("Deny", stored)))
    assert cart.get_policy("old")["Statement"][1]["Resource"] == stored
    alice = cart.as_principal("alice")
    named = re.escape(stored) + ".*write " + re.escape(repr(fix))
    with pytest.raises(cartridge.CorruptionError, match=named):
        alice.read("/data/readme.txt")
    with pytest.raises(cartridge.CorruptionError):
        alice.read("/data/other.txt")
    with pytest.raises(cartridge.CorruptionError):
        cart.check_access("alice", "cart:GetObject", "/data/readme.txt")
    cart.set_policy("old", doc(stmt("Allow", "*", "cart:*"), stmt("Deny", fix)))
    with pytest.raises(AccessDeniedError):
        alice.read("/data/readme.txt")


def test_patterns_as_the_old_code_stored_them_keep_their_meaning(cart):
    """Before, set_policy stored the normalised spelling ('data/*' as '/data/*'); such stored
    text is accepted and means what it says, as it did and as AWS reads it."""
    cart.set_policy("p", doc(stmt("Allow", "*", "cart:*"), stmt("Deny", "/data/*"),
                             stmt("Deny", "/?ata/other.txt")))
    alice = cart.as_principal("alice")
    with pytest.raises(AccessDeniedError):
        alice.read("/data/readme.txt")
    assert cart.check_access("alice", "cart:GetObject", "/xata/other.txt").decision == D


def test_cli_set_and_check_agree_with_enforcement(cart, tmp_path, capsys):
    import json

    path = str(cart.path)
    cart.close()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc(stmt("Deny", "data/*"))))
    assert main(["policy", "set", path, "p", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "'data/*' can never match" in err and "write '/data/*'" in err
    assert "Traceback" not in err and err.count("\n") == 1
    good = tmp_path / "good.json"
    good.write_text(json.dumps(doc(stmt("Allow", "*", "cart:*"), stmt("Deny", "?data/readme.txt"))))
    assert main(["policy", "set", path, "p", str(good)]) == 0
    capsys.readouterr()
    for spelling in ("/data/readme.txt", "data//readme.txt"):
        assert main(["policy", "check", path, "--principal", "ann", "--action", "cart:GetObject",
                     "--resource", spelling]) == 3
        assert capsys.readouterr().out.startswith("ExplicitDeny")
    assert main(["policy", "check", path, "--principal", "ann", "--action", "cart:GetObject",
                 "--resource", "/data/other.txt"]) == 0
    with cartridge.open(path, "r", principal="ann") as ann:
        with pytest.raises(AccessDeniedError):
            ann.read("/data/readme.txt")
        assert ann.read("/data/other.txt") == b"other"
