"""The official Couchbase Python SDK against a pump cluster: every KV operation, checked.

Usage: kv_ops.py CONNSTR USER PASSWORD [--cacert FILE] [--wrong-password-only]

Runs upsert, insert, replace, get, remove, touch and get_and_touch with the JSON, string and
binary transcoders, values from 1 byte to 5 MB, expiries, CAS and mutation tokens, with the
SDK's default options. Every result is compared with what was written; the first difference
raises. Prints one JSON line of counts at the end ("ok": true) and exits 0, or exits 1.
"""

import json
import sys
import time
from datetime import timedelta

from couchbase.auth import PasswordAuthenticator
from couchbase.cluster import Cluster
from couchbase.exceptions import (
    AuthenticationException,
    CasMismatchException,
    DocumentExistsException,
    DocumentNotFoundException,
)
from couchbase.options import (
    ClusterOptions,
    GetOptions,
    InsertOptions,
    ReplaceOptions,
    UpsertOptions,
)
from couchbase.transcoder import RawBinaryTranscoder, RawStringTranscoder

checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def expect(exc, fn, what):
    try:
        fn()
    except exc:
        check(True, what)
        return
    raise AssertionError(f"{what}: no {exc.__name__}")


def connect(connstr, user, password, cacert):
    auth = PasswordAuthenticator(user, password, cert_path=cacert) if cacert else PasswordAuthenticator(user, password)
    cluster = Cluster(connstr, ClusterOptions(auth))
    return cluster


def main():
    args = sys.argv[1:]
    cacert = None
    if "--cacert" in args:
        i = args.index("--cacert")
        cacert = args[i + 1]
        del args[i : i + 2]
    wrong_only = "--wrong-password-only" in args
    args = [a for a in args if a != "--wrong-password-only"]
    connstr, user, password = args

    # A wrong password: the SDK's authentication error, whatever it tries.
    try:
        c = connect(connstr, user, password + "-wrong", cacert)
        c.bucket("default").default_collection().get("anything")
        raise AssertionError("a wrong password was let in")
    except AuthenticationException:
        check(True, "wrong password -> AuthenticationException")
    if wrong_only:
        print(json.dumps({"ok": True, "checks": checks}))
        return

    cluster = connect(connstr, user, password, cacert)
    coll = cluster.bucket("default").default_collection()
    run = str(int(time.time() * 1000))

    # JSON documents, from tiny to 5 MB.
    sizes = [1, 10, 100, 1000, 10_000, 100_000, 1_000_000, 5 * 1024 * 1024]
    for n in sizes:
        key = f"json-{run}-{n}"
        doc = {"n": n, "pad": "x" * max(0, n - 20)}
        r = coll.upsert(key, doc)
        check(r.cas != 0, f"upsert {key}: cas")
        tok = r.mutation_token()
        check(tok is not None and tok.sequence_number > 0 and tok.partition_uuid != 0, f"upsert {key}: mutation token {tok}")
        g = coll.get(key)
        check(g.content_as[dict] == doc, f"get {key}: content")
        check(g.cas == r.cas, f"get {key}: cas {g.cas} != {r.cas}")

    # A compressible 1 MB JSON value (the SDK sends it snappy-compressed).
    big = {"rows": [{"id": i, "name": "compressible row", "tags": ["a", "b", "c"]} for i in range(20000)]}
    coll.upsert(f"compressible-{run}", big)
    check(coll.get(f"compressible-{run}").content_as[dict] == big, "compressible doc round trip")

    # Strings and binary values with their transcoders.
    for n in [1, 100, 65_536, 2_000_000]:
        s = ("héllo wörld " * (n // 12 + 1))[:n]
        key = f"str-{run}-{n}"
        coll.upsert(key, s, UpsertOptions(transcoder=RawStringTranscoder()))
        got = coll.get(key, GetOptions(transcoder=RawStringTranscoder())).content_as[str]
        check(got == s, f"string {key}")
        b = bytes((i * 7 + n) % 256 for i in range(n))
        key = f"bin-{run}-{n}"
        coll.upsert(key, b, UpsertOptions(transcoder=RawBinaryTranscoder()))
        got = coll.get(key, GetOptions(transcoder=RawBinaryTranscoder())).content_as[bytes]
        check(got == b, f"binary {key}")

    # insert / replace / remove semantics, CAS.
    key = f"life-{run}"
    r = coll.insert(key, {"v": 1})
    expect(DocumentExistsException, lambda: coll.insert(key, {"v": 2}), "insert of an existing key")
    r2 = coll.replace(key, {"v": 3}, ReplaceOptions(cas=r.cas))
    check(r2.cas != r.cas, "replace gives a new cas")
    expect(CasMismatchException, lambda: coll.replace(key, {"v": 4}, ReplaceOptions(cas=r.cas)), "replace with a stale cas")
    check(coll.get(key).content_as[dict] == {"v": 3}, "replace took")
    expect(DocumentNotFoundException, lambda: coll.replace(f"missing-{run}", {"v": 1}), "replace of a missing key")
    rm = coll.remove(key)
    check(rm.cas != 0, "remove gives a cas")
    expect(DocumentNotFoundException, lambda: coll.get(key), "get after remove")
    expect(DocumentNotFoundException, lambda: coll.remove(key), "remove of a removed key")
    r3 = coll.insert(key, {"v": 5})
    check(coll.get(key).content_as[dict] == {"v": 5}, "insert after remove")

    # Expiries: a 2 s document expires; touch and get_and_touch move the expiry.
    short = f"short-{run}"
    coll.upsert(short, {"e": 1}, UpsertOptions(expiry=timedelta(seconds=2)))
    kept = f"kept-{run}"
    coll.upsert(kept, {"e": 2}, UpsertOptions(expiry=timedelta(seconds=2)))
    t = coll.touch(kept, timedelta(seconds=60))
    check(t.cas != 0, "touch gives a cas")
    gat_key = f"gat-{run}"
    coll.upsert(gat_key, {"gat": "value"}, UpsertOptions(expiry=timedelta(seconds=2)))
    gat = coll.get_and_touch(gat_key, timedelta(seconds=60))
    check(gat.content_as[dict] == {"gat": "value"}, "get_and_touch returns the value")
    expect(DocumentNotFoundException, lambda: coll.touch(f"missing-{run}", timedelta(seconds=5)), "touch of a missing key")
    time.sleep(3.2)
    expect(DocumentNotFoundException, lambda: coll.get(short), "an expired document is gone")
    check(coll.get(kept).content_as[dict] == {"e": 2}, "a touched document outlives its first expiry")
    check(coll.get(gat_key).content_as[dict] == {"gat": "value"}, "get_and_touch moved the expiry")

    print(json.dumps({"ok": True, "checks": checks, "run": run}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - the test reads the reason from stderr
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
