import random, sys, time, os
import cartridge
from perf.workloads import lookup_name
n=int(sys.argv[1])
path=f"perf/.data/lookup-w1-f1.0-{n}/lookup.cart"
c=cartridge.open(path,"a",sync="off")
print("file MB", os.path.getsize(path)/1e6, c.info()["catalog_height"], c.info().get("used_pages"))
rng=random.Random(4)
keys=[lookup_name(rng.randrange(n)) for _ in range(300_000)]
bkeys=[k.encode() for k in keys]
for k in keys: c.stat(k)
def t(f, ks, label):
    t0=time.perf_counter()
    for k in ks: f(k)
    print(label, round((time.perf_counter()-t0)/len(ks)*1e6,3),"us")
t(c.stat, keys, "stat")
t(c._eng.catalog.get, bkeys, "btree.get")
t(c._eng.get, bkeys, "engine.get")
from cartridge import paths as P
t(P.normalize_any, keys, "normalize_any")
print(c._eng.pager.cache.stats()["hit_ratio"])
