"""OpenIO's AdminClient, DirectoryClient and ConscienceClient calls of the meta2 rebalance
(Meta2Database.move) and repair (Meta2Database.rebuild) procedures, against a proxy.

Run by tests/sds.rs (openio_client_and_cli_pass_against_the_reference_proxy) with OpenIO's
Python package installed from an oio-sds checkout. Prints one JSON line per call:
{"call": NAME, "ok": true|false, "detail": ...}. It never raises: the test reads the lines.

usage: oio_sds_calls.py PROXY_URL ACCOUNT CONTAINER A B C D E PATH_OF_C_COPY
"""

import json
import os
import sys

from oio.common.utils import cid_from_name
from oio.conscience.client import ConscienceClient
from oio.directory.admin import AdminClient
from oio.directory.client import DirectoryClient
from oio.directory.meta2 import Meta2Database

url, acct, ref, A, B, C, D, E, c_path = sys.argv[1:]
conf = {"namespace": "OPENIO", "oioproxy_url": url}
cid = cid_from_name(acct, ref)
admin = AdminClient(conf)
directory = DirectoryClient(conf)
conscience = ConscienceClient(conf)


def call(name, fn, check):
    try:
        r = fn()
        ok = bool(check(r))
        detail = r
    except Exception as exc:  # the test reports every failure, whatever it is
        ok = False
        detail = f"{type(exc).__name__}: {exc}"
    try:
        detail = json.loads(json.dumps(detail, default=repr))
    except Exception:
        detail = repr(detail)
    print(json.dumps({"call": name, "ok": ok, "detail": detail}), flush=True)


def statuses(body):
    return {k: v["status"]["status"] for k, v in body.items()}


def hosts(listing):
    return sorted(s["host"] for s in listing["srv"] if s["type"] == "meta2")


# The directory and the conscience, as both procedures read them.
call(
    "ConscienceClient.all_services_by_id(meta2)",
    lambda: conscience.all_services_by_id("meta2"),
    lambda r: sorted(r) == sorted([A, B, C, D, E]),
)
call(
    "DirectoryClient.list(account, reference)",
    lambda: directory.list(acct, ref),
    lambda r: hosts(r) == [A, B, C] and r["cid"] == cid and r["name"] == ref,
)
call(
    "DirectoryClient.list(cid, service_type=meta2)",
    lambda: directory.list(cid=cid, service_type="meta2"),
    lambda r: hosts(r) == [A, B, C] and len(r["srv"]) == 3,
)
call(
    "DirectoryClient.get_properties",
    lambda: directory.get_properties(acct, ref),
    lambda r: r["cid"] == cid and r["properties"] == {},
)
# No oio-proxy has a reference/has route (7.3.0, 9.0.0, HEAD): has() gets 404 and answers
# False, against a real proxy as against the reference.
call(
    "DirectoryClient.has (False: no oio-proxy serves reference/has)",
    lambda: directory.has(acct, ref),
    lambda r: r is False,
)
call(
    "AdminClient.has_base",
    lambda: admin.has_base("meta2", cid=cid),
    lambda r: statuses(r) == {A: 200, B: 200, C: 200}
    and all(int(v["body"].rsplit(":", 1)[-1]) > 0 for v in r.values()),
)
call(
    "AdminClient.election_status",
    lambda: admin.election_status("meta2", cid=cid),
    lambda r: r["master"] == A and sorted(r["slaves"]) == [B, C],
)
call(
    "AdminClient.election_ping",
    lambda: admin.election_ping("meta2", cid=cid),
    lambda r: set(statuses(r).values()) == {200},
)
call(
    "AdminClient.election_debug",
    lambda: admin.election_debug("meta2", cid=cid),
    lambda r: all(
        v["body"]["local"]["url"] == k and v["body"]["master"]["url"] == A
        and v["body"]["base"]["zk"] and v["body"]["base"]["zk_server"]
        for k, v in r.items()
    ),
)
call(
    "AdminClient.get_properties(force_master)",
    lambda: admin.get_properties("meta2", cid=cid, force_master=True),
    lambda r: r["system"]["sys.m2.init"] == "1"
    and r["system"]["sys.peers"] == ",".join([A, B, C]),
)
call(
    "AdminClient.set_properties",
    lambda: admin.set_properties("meta2", cid=cid, properties={"oio.test": "1"}),
    lambda r: admin.get_properties("meta2", cid=cid)["properties"]["oio.test"] == "1",
)
call(
    "AdminClient.election_sync",
    lambda: admin.election_sync("meta2", cid=cid),
    lambda r: statuses(r) == {A: 301, B: 200, C: 200},
)
call(
    "AdminClient.vacuum_base",
    lambda: admin.vacuum_base("meta2", cid=cid),
    lambda r: r is None,
)
call(
    "AdminClient.proxy_flush_cache",
    lambda: admin.proxy_flush_cache(),
    lambda r: r is None,
)
call(
    "AdminClient.proxy_get_cache_status",
    lambda: admin.proxy_get_cache_status(),
    lambda r: "meta1" in r and "csm0" in r,
)
call(
    "AdminClient.election_leave",
    lambda: admin.election_leave("meta2", cid=cid),
    lambda r: set(statuses(r).values()) == {200},
)
call(
    "AdminClient.copy_base_to (from the master)",
    lambda: admin.copy_base_to("meta2", cid=cid, svc_to=E),
    lambda r: statuses(admin.has_base("meta2", cid=cid, service_id=E)) == {E: 200},
)
call(
    "AdminClient.remove_base",
    lambda: admin.remove_base("meta2", cid=cid, service_id=E),
    lambda r: r[E]["body"] == {"deleted": True},
)
call(
    "AdminClient.copy_base_from",
    lambda: admin.copy_base_from("meta2", cid=cid, svc_from=B, svc_to=E),
    lambda r: statuses(admin.has_base("meta2", cid=cid, service_id=E)) == {E: 200},
)
admin.remove_base("meta2", cid=cid, service_id=E)
call(
    "DirectoryClient.force(replace)",
    lambda: directory.force(
        acct,
        ref,
        "meta2",
        {"seq": 1, "type": "meta2", "host": ",".join([A, B, C]), "args": ""},
        replace=True,
    ),
    lambda r: hosts(directory.list(acct, ref)) == [A, B, C],
)

# The repair procedure: C lost its copy; Meta2Database.rebuild copies it from the master.
os.remove(c_path)
m2 = Meta2Database(conf)
call(
    "Meta2Database.rebuild (has_base, election_status, get_properties, copy_base_from)",
    lambda: list(m2.rebuild(cid)),
    lambda r: len(r) == 1 and r[0]["err"] is None and os.path.exists(c_path),
)
# The rebalance procedure: A's copy moves to D (set_peers, copy_base_from, force,
# election_leave, remove_base, election_status).
call(
    "Meta2Database.move",
    lambda: list(m2.move(cid, A, dst=D)),
    lambda r: len(r) == 1 and r[0]["err"] is None
    and hosts(directory.list(acct, ref)) == [B, C, D],
)
call(
    "AdminClient.election_status after the move",
    lambda: admin.election_status("meta2", cid=cid),
    lambda r: r.get("master") in (B, C, D)
    and sorted([r["master"], *r.get("slaves", [])]) == [B, C, D],
)
