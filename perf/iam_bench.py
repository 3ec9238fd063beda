"""IAM decision benchmarks (issue 6 targets: cached decision <= 1 us; uncached evaluation of a
50-statement policy with conditions <= 20 us).

    python perf/iam_bench.py            # pyperf; add --fast for a quick look, -o FILE to save

Workloads (each a pyperf time function, so perf/run.py can reuse them):
  iam_cached_static   a cached decision of a set whose decisions depend only on principal,
                      action and resource (the common case: Resource paths, ${cart:username})
  iam_cached_context  a cached decision of the 50-statement set below, with a principal, one
                      tag and three context keys that the set references
  iam_uncached_50     the same request with the decision cache emptied before every call:
                      a full evaluation of the 50-statement set (conditions included)
  iam_uncached_time   the same request with a cart:CurrentTime (new on every call, as a
                      principal handle supplies it): the set references it, so every call is
                      a full evaluation, and such decisions are not cached at all
  read4k_owner        a cached random 4 KiB read (1,000 files) on the owner handle
  read4k_principal    the same reads through a principal handle with a stored policy
                      (target: <= 1.3x read4k_owner, same run)
  read4k_*_ro         the same two through a read-only handle (which looks for a newer
                      commit on every call)
"""
from __future__ import annotations

import atexit
import os
import random
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone

import pyperf

import cartridge
from cartridge import iam

TARGETS = {"iam_cached_static": 1e-6, "iam_cached_context": 1e-6, "iam_uncached_50": 20e-6,
           "iam_uncached_time": 20e-6}


def policy50() -> dict:
    """50 statements (40 Allow, 10 Deny), every one with conditions, over ten team trees."""
    sts = []
    for i in range(50):
        team = f"team{i % 10}"
        kind = i % 5
        if kind == 4:
            sts.append({"Sid": f"Deny{i}", "Effect": "Deny",
                        "Action": ["cart:DeleteObject", "cart:PutObject"],
                        "Resource": f"/{team}/archive/*",
                        "Condition": {"NotIpAddress": {"cart:SourceIp": ["10.0.0.0/8",
                                                                         "192.168.0.0/16"]}}})
        elif kind == 0:
            sts.append({"Sid": f"Home{i}", "Effect": "Allow", "Action": ["cart:Get*", "cart:List"],
                        "Resource": [f"/home/${{cart:username}}/p{i}/*", f"/shared/{team}/*"],
                        "Condition": {"StringEquals": {"cart:PrincipalTag/team": team},
                                      "DateLessThan": {"cart:CurrentTime": "2030-01-01T00:00:00Z"}}})
        elif kind == 1:
            sts.append({"Sid": f"Put{i}", "Effect": "Allow", "Action": "cart:PutObject",
                        "Resource": f"/{team}/in/{i}/*",
                        "Condition": {"NumericLessThanEquals": {"cart:ObjectSize": "1048576"},
                                      "IpAddress": {"cart:SourceIp": "10.0.0.0/8"}}})
        elif kind == 2:
            sts.append({"Sid": f"Read{i}", "Effect": "Allow", "Action": "cart:GetObject",
                        "Resource": [f"/{team}/data/{i}/*", f"/{team}/docs/*.md"],
                        "Condition": {"StringEquals": {"cart:PrincipalTag/team": team},
                                      "BoolIfExists": {"cart:SecureTransport": "true"}}})
        else:
            sts.append({"Sid": f"List{i}", "Effect": "Allow", "Action": "cart:List",
                        "Resource": f"/{team}/*",
                        "Condition": {"StringLike": {"cart:prefix": [f"/{team}/*"]},
                                      "ForAnyValue:StringEquals": {"cart:Groups": ["admins", team]}}})
    return {"Version": "2012-10-17", "Statement": sts}


NOW = datetime(2026, 5, 1, tzinfo=timezone.utc)
ACTION = "cart:GetObject"
RESOURCE = "/team2/data/12/report.csv"
PRINCIPAL = "ann"
TAGS = {"team": "team2"}
CONTEXT = {"cart:SourceIp": "10.1.2.3", "cart:SecureTransport": True,
           "cart:EpochTime": int(NOW.timestamp())}

BIG = iam.PolicySet({"teams": policy50()})
STATIC_DOC = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["cart:GetObject", "cart:List"],
     "Resource": ["/home/${cart:username}/*", "/team2/*"]},
    {"Effect": "Deny", "Action": "cart:*", "Resource": "/team2/secret/*"}]}
STATIC = iam.PolicySet({"homes": STATIC_DOC})
assert BIG.decide(ACTION, RESOURCE, PRINCIPAL, TAGS, CONTEXT) == iam.Decision.ALLOW
assert STATIC.decide(ACTION, RESOURCE, PRINCIPAL) == iam.Decision.ALLOW


def iam_cached_static(loops: int) -> float:
    decide = STATIC.decide
    decide(ACTION, RESOURCE, PRINCIPAL)
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        decide(ACTION, RESOURCE, PRINCIPAL)
    return pyperf.perf_counter() - t0


def iam_cached_context(loops: int) -> float:
    decide = BIG.decide
    decide(ACTION, RESOURCE, PRINCIPAL, TAGS, CONTEXT)
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        decide(ACTION, RESOURCE, PRINCIPAL, TAGS, CONTEXT)
    return pyperf.perf_counter() - t0


def iam_uncached_50(loops: int) -> float:
    decide = BIG.decide
    clear = BIG._cache.clear
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        clear()
        decide(ACTION, RESOURCE, PRINCIPAL, TAGS, CONTEXT)
    return pyperf.perf_counter() - t0


def iam_uncached_time(loops: int) -> float:
    decide = BIG.decide
    contexts = [dict(CONTEXT, **{"cart:CurrentTime": NOW + timedelta(microseconds=i)})
                for i in range(min(loops, 10_000))]
    n = len(contexts)
    t0 = pyperf.perf_counter()
    for i in range(loops):
        decide(ACTION, RESOURCE, PRINCIPAL, TAGS, contexts[i % n])
    return pyperf.perf_counter() - t0


_ARCHIVE: dict = {}


def _archive():
    """An archive of 1,000 files of 4 KiB, an owner handle and a principal handle on it."""
    if not _ARCHIVE:
        d = tempfile.mkdtemp(prefix="cartridge-iam-bench-")
        atexit.register(shutil.rmtree, d, True)
        cart = cartridge.open(os.path.join(d, "b.cart"), "w", sync="off")
        names = [f"/team2/data/{i % 10}/f{i:04d}" for i in range(1000)]
        with cart.transaction():
            for n in names:
                cart.write(n, os.urandom(4096))
        cart.set_policy("homes", STATIC_DOC)
        rng = random.Random(1)
        order = [rng.choice(names) for _ in range(10_000)]
        cart.commit()
        ro = cartridge.open(os.path.join(d, "b.cart"), "r")
        _ARCHIVE.update(cart=cart, ann=cart.as_principal(PRINCIPAL, tags=TAGS), order=order,
                        ro=ro, ann_ro=ro.as_principal(PRINCIPAL, tags=TAGS))
        for n in names:            # warm the caches
            for h in ("cart", "ann", "ro", "ann_ro"):
                _ARCHIVE[h].read(n)
    return _ARCHIVE


def _reads(handle, loops: int) -> float:
    order = _archive()["order"]
    read = handle.read
    n = len(order)
    t0 = pyperf.perf_counter()
    for i in range(loops):
        read(order[i % n])
    return pyperf.perf_counter() - t0


def read4k_owner(loops: int) -> float:
    return _reads(_archive()["cart"], loops)


def read4k_principal(loops: int) -> float:
    return _reads(_archive()["ann"], loops)


def read4k_owner_ro(loops: int) -> float:
    return _reads(_archive()["ro"], loops)


def read4k_principal_ro(loops: int) -> float:
    return _reads(_archive()["ann_ro"], loops)


WORKLOADS = [iam_cached_static, iam_cached_context, iam_uncached_50, iam_uncached_time,
             read4k_owner, read4k_principal, read4k_owner_ro, read4k_principal_ro]


def main() -> None:
    runner = pyperf.Runner(values=5, processes=6)
    runner.metadata["description"] = "cartridge IAM decisions"
    results = {}
    for func in WORKLOADS:
        bench = runner.bench_time_func(func.__name__, func)
        if bench is not None and not runner.args.worker and bench.get_nvalue():
            results[func.__name__] = bench.mean()
    if not results:
        return
    print()
    print(f"{'workload':<22}{'mean':>12}{'target':>12}   ")
    for name, mean in results.items():
        target = TARGETS.get(name)
        if target is None:
            print(f"{name:<22}{mean * 1e6:>10.3f} us")
            continue
        verdict = "ok" if mean <= target else "OVER TARGET"
        print(f"{name:<22}{mean * 1e6:>10.3f} us{target * 1e6:>10.1f} us   {verdict}")
    for owner, principal, what in (("read4k_owner", "read4k_principal", "writable handle"),
                                   ("read4k_owner_ro", "read4k_principal_ro", "read-only handle")):
        if owner in results and principal in results:
            ratio = results[principal] / results[owner]
            print(f"principal / owner 4 KiB read, {what}: {ratio:.2f}x (target <= 1.3x) "
                  f"{'ok' if ratio <= 1.3 else 'OVER TARGET'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
