"""Action patterns: `cart:` names must be known actions (the one list in cartridge.iam.actions)."""
from __future__ import annotations

import pytest

import cartridge
from cartridge import PolicyError, iam
from cartridge.iam import actions


def doc(action, effect="Allow", field="Action"):
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": effect, field: action, "Resource": "*"}]}


def test_the_list_is_defined_once_and_exported():
    assert iam.ACTIONS is actions.ACTIONS
    assert len(set(a.casefold() for a in actions.ACTIONS)) == len(actions.ACTIONS) == 11
    assert actions.GET_OBJECT == "cart:GetObject" and actions.PUT_POLICY == "cart:PutPolicy"
    assert actions.known("CART:getobject") == "cart:GetObject"
    assert actions.known("cart:GetObjekt") is None and actions.known("s3:GetObject") is None


@pytest.mark.parametrize("field", ["Action", "NotAction"])
@pytest.mark.parametrize("typo, fix", [
    ("cart:GetObjekt", "cart:GetObject"),
    ("cart:getobjekt", "cart:GetObject"),
    ("CART:PutObjects", "cart:PutObject"),
    ("cart:Lst", "cart:List"),
    ("cart:DeleteObj", "cart:DeleteObject"),
    ("cart:PutPolicies", "cart:PutPolicy"),
])
def test_unknown_cart_actions_are_refused_with_the_closest_one(typo, fix, field):
    with pytest.raises(PolicyError, match=field) as e:
        iam.Policy.parse(doc(typo, field=field))
    assert f"did you mean {fix!r}" in str(e.value)


def test_unknown_action_with_nothing_close_lists_the_actions():
    with pytest.raises(PolicyError, match="unknown action 'cart:Frobnicate'.*cart:Compact"):
        iam.Policy.parse(doc("cart:Frobnicate"))


@pytest.mark.parametrize("field", ["Action", "NotAction"])
@pytest.mark.parametrize("pattern", ["*", "cart:*", "cart:Get*", "cart:*Object", "cart:?etObject",
                                     "CART:get*", "cart:*Polic?", "*:GetObject", "*:*", "c?rt:List",
                                     ["cart:GetObject", "cart:Put*"]])
def test_wildcards_matching_a_known_action_are_accepted(pattern, field):
    iam.Policy.parse(doc(pattern, field=field))


@pytest.mark.parametrize("field", ["Action", "NotAction"])
@pytest.mark.parametrize("pattern", ["cart:Gxt*", "cart:*Objekt", "cart:?", "*:Frob*"])
def test_wildcards_matching_no_known_action_are_refused(pattern, field):
    with pytest.raises(PolicyError, match=f"{field}: '.*' matches no cartridge action"):
        iam.Policy.parse(doc(pattern, field=field))


@pytest.mark.parametrize("action", ["s3:GetObject", "other-service:AnyThing", "ec2:*", "s*:x"])
def test_other_services_are_accepted_and_never_match(action):
    for effect in ("Allow", "Deny"):
        p = iam.Policy.parse(doc(action, effect))
        for a in iam.ACTIONS:
            assert iam.evaluate(p, action=a, resource="/x") == iam.Decision.IMPLICIT_DENY


@pytest.mark.parametrize("action, fix", [("cartridge:GetObject", "cart:GetObject"),
                                         ("crat:GetObject", "cart:GetObject"),
                                         ("carts:List", "cart:List")])
def test_a_service_that_looks_like_a_misspelt_cart_is_refused(action, fix):
    with pytest.raises(PolicyError, match=f"service is 'cart': did you mean {fix!r}"):
        iam.Policy.parse(doc(action, "Deny"))


def test_set_policy_refuses_unknown_actions_and_stores_nothing(tmp_path):
    with cartridge.open(tmp_path / "a.cart", "a", sync="off") as cart:
        with pytest.raises(PolicyError, match="did you mean 'cart:GetObject'"):
            cart.set_policy("p", doc("cart:GetObjekt", "Deny"))
        assert cart.policies() == {}
        cart.set_policy("p", doc("cart:Get*"))
        assert cart.get_policy("p")["Statement"][0]["Action"] == "cart:Get*"


def test_a_stored_unknown_action_is_refused_loudly_at_load(tmp_path, monkeypatch):
    """A policy stored before actions were checked (or by another writer) is not silently
    kept: compiling it fails, naming the action and the fix, until the owner replaces it."""
    with cartridge.open(tmp_path / "a.cart", "a", sync="off") as cart:
        cart.write("/x", b"x")
        with monkeypatch.context() as m:
            m.setattr("cartridge.iam.policy.check_action", lambda a, where: None)
            cart.set_policy("old", {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "cart:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "cart:GetObjekt", "Resource": "/x"}]})
        alice = cart.as_principal("alice")
        with pytest.raises(cartridge.CorruptionError, match="'cart:GetObjekt'.*'cart:GetObject'"):
            alice.read("/x")
        with pytest.raises(cartridge.CorruptionError, match="cart:GetObjekt"):
            cart.check_access("alice", "cart:GetObject", "/x")
        assert cart.get_policy("old")["Statement"][1]["Action"] == "cart:GetObjekt"  # owner reads
        cart.set_policy("old", doc("cart:*"))                                       # and repairs
        assert alice.read("/x") == b"x"
