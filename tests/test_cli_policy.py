"""`cartridge policy set|get|ls|rm|check`."""
from __future__ import annotations

import json

import cartridge
from cartridge.cli import main

POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "ReadPublic", "Effect": "Allow", "Action": "cart:GetObject", "Resource": "/public/*"},
    {"Sid": "NoSecret", "Effect": "Deny", "Action": "cart:*", "Resource": "/secret/*"},
    {"Sid": "Lab", "Effect": "Allow", "Action": "cart:PutObject", "Resource": "/lab/*",
     "Condition": {"IpAddress": {"cart:SourceIp": "10.0.0.0/8"},
                   "StringEquals": {"cart:PrincipalTag/team": "red"}}},
]}


def _archive(tmp_path):
    path = str(tmp_path / "p.cart")
    with cartridge.open(path, "w") as c:
        c.write("/public/a", b"1")
    return path


def test_set_get_ls_rm(tmp_path, capsys):
    path = _archive(tmp_path)
    doc = tmp_path / "p.json"
    doc.write_text(json.dumps(POLICY))
    assert main(["policy", "set", path, "web", str(doc)]) == 0
    assert main(["policy", "ls", path]) == 0
    out = capsys.readouterr().out
    assert "web\t3 statements" in out
    assert main(["policy", "get", path, "web"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [s["Sid"] for s in got["Statement"]] == ["ReadPublic", "NoSecret", "Lab"]
    assert main(["policy", "rm", path, "web"]) == 0
    capsys.readouterr()
    assert main(["policy", "get", path, "web"]) == 1
    assert "no policy named 'web'" in capsys.readouterr().err
    assert main(["policy", "rm", path, "web"]) == 1


def test_set_from_stdin_and_bad_documents(tmp_path, capsys, monkeypatch):
    import io

    path = _archive(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(POLICY)))
    assert main(["policy", "set", path, "web", "-"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO('{"Version": "2012-10-17", "Statement": '
                                                 '[{"Effect": "Allow", "Action": "cart:Nope"}]}'))
    capsys.readouterr()
    assert main(["policy", "set", path, "bad", "-"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cartridge: error:") and "Traceback" not in err
    with cartridge.open(path, "r") as c:
        assert list(c.policies()) == ["web"]
    assert main(["policy", "set", str(tmp_path / "missing.cart"), "web", "-"]) == 1


def test_check(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["policy", "check", path, "--principal", "ann", "--action", "cart:GetObject",
                 "--resource", "/secret/x"]) == 0
    assert "no policies stored" in capsys.readouterr().out
    with cartridge.open(path, "a") as c:
        c.set_policy("web", POLICY)
    assert main(["policy", "check", path, "--principal", "ann", "--action", "cart:GetObject",
                 "--resource", "public//a"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Allow") and "ReadPublic" in out
    assert main(["policy", "check", path, "--principal", "ann", "--action", "cart:GetObject",
                 "--resource", "/secret/x"]) == 3
    out = capsys.readouterr().out
    assert out.startswith("ExplicitDeny") and "NoSecret" in out
    args = ["policy", "check", path, "--principal", "ann", "--action", "cart:PutObject",
            "--resource", "/lab/run1"]
    assert main(args) == 3
    assert capsys.readouterr().out.startswith("ImplicitDeny")
    assert main(args + ["--context", "cart:SourceIp=10.1.1.1", "--tag", "team=red"]) == 0
    assert "Lab" in capsys.readouterr().out
    assert main(args + ["--context", "cart:SourceIp=11.1.1.1", "--tag", "team=red"]) == 3
    assert main(args + ["--context", "oops"]) == 2           # a usage error


def test_check_refuses_an_unknown_cart_action(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["policy", "check", path, "--principal", "ann", "--action", "cart:GetObjekt",
                 "--resource", "/public/a"]) == 2            # a usage error
    err = capsys.readouterr().err
    assert "did you mean 'cart:GetObject'" in err and "Traceback" not in err
    assert main(["policy", "check", path, "--principal", "ann", "--action", "CART:getobject",
                 "--resource", "/public/a"]) == 0
