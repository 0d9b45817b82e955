"""The official Couchbase Python SDK and collections: writes documents into scopes and
collections of one cluster, reads them back from another.

Usage:
  scopes.py write CONNSTR USER PASSWORD BUCKET EXPECT.json
      creates scope s1 with collections c1 and c2 (the SDK's collection manager, REST), writes
      JSON and binary documents into _default._default, s1.c1 and s1.c2, removes a few, and
      writes what each collection must hold to EXPECT.json
  scopes.py read CONNSTR USER PASSWORD BUCKET EXPECT.json [--map S.C=S2.C2]... [--only S[.C]]
      reads every expected document from its collection (after --map, from where it was
      mapped) and checks it equal; a removed one, or one --only leaves out, must be absent,
      and so must a mapped document at its old place (--skip: a collection that must hold none)
  scopes.py drop CONNSTR USER PASSWORD BUCKET SCOPE COLLECTION
      drops the collection (the collection manager)

Prints one JSON line ("ok": true and the number of checks) and exits 0, or raises.
"""

import base64
import json
import sys
import time
from datetime import timedelta

from couchbase.auth import PasswordAuthenticator
from couchbase.cluster import Cluster
from couchbase.exceptions import (
    CollectionNotFoundException,
    DocumentNotFoundException,
    ScopeNotFoundException,
)
from couchbase.management.collections import CollectionSpec
from couchbase.options import ClusterOptions, GetOptions, UpsertOptions
from couchbase.transcoder import RawBinaryTranscoder

checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def connect(connstr, user, password, bucket):
    cluster = Cluster(connstr, ClusterOptions(PasswordAuthenticator(user, password)))
    cluster.wait_until_ready(timedelta(seconds=20))
    return cluster, cluster.bucket(bucket)


def create_collections(b):
    mgr = b.collections()
    names = {s.name: [c.name for c in s.collections] for s in mgr.get_all_scopes()}
    if "s1" not in names:
        mgr.create_scope("s1")
    for c in ("c1", "c2"):
        if c not in names.get("s1", []):
            try:
                mgr.create_collection("s1", c)
            except TypeError:
                mgr.create_collection(CollectionSpec(c, scope_name="s1"))
    # The manager's view, then KV's: wait until the collections resolve.
    deadline = time.time() + 20
    while True:
        try:
            b.scope("s1").collection("c2").upsert("probe", {"p": 1})
            b.scope("s1").collection("c2").remove("probe")
            break
        except (CollectionNotFoundException, ScopeNotFoundException):
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def collection(b, path):
    scope, name = path.split(".")
    return b.scope(scope).collection(name)


def write(b, out):
    create_collections(b)
    expect = {}
    for path in ("_default._default", "s1.c1", "s1.c2"):
        coll = collection(b, path)
        docs = {}
        for i in range(40):
            key = f"doc-{i}"
            if i % 2 == 0:
                value = {"path": path, "n": i, "pad": "x" * (i * 7)}
                coll.upsert(key, value)
                docs[key] = ["json", value]
            else:
                value = bytes([(i + j) % 256 for j in range(i * 13 + 1)])
                coll.upsert(key, value, UpsertOptions(transcoder=RawBinaryTranscoder()))
                docs[key] = ["binary", base64.b64encode(value).decode()]
        # The same key in every collection, each with its own value.
        coll.upsert("same-key", {"in": path})
        docs["same-key"] = ["json", {"in": path}]
        removed = []
        for i in (3, 10, 17):
            coll.remove(f"doc-{i}")
            removed.append(f"doc-{i}")
            del docs[f"doc-{i}"]
        expect[path] = {"docs": docs, "removed": removed}
    with open(out, "w") as f:
        json.dump(expect, f)
    # Read back from this cluster too: the node holds them apart.
    for path, want in expect.items():
        check(collection(b, path).get("same-key").content_as[dict] == {"in": path}, path)


def mapped(path, maps):
    scope, name = path.split(".")
    for src, dst in maps:
        s = src.split(".")
        d = dst.split(".")
        if len(s) == 2 and s == [scope, name]:
            return ".".join(d)
        if len(s) == 1 and s[0] == scope:
            return f"{d[0]}.{name}"
    return path


def included(path, only, skip=()):
    if path in skip:
        return False
    if only is None:
        return True
    return path == only or path.startswith(only + ".")


def absent(coll, key, what):
    try:
        coll.get(key)
    except (DocumentNotFoundException, CollectionNotFoundException, ScopeNotFoundException):
        check(True, what)
        return
    raise AssertionError(f"{what}: present")


def existing(b):
    """Every scope.collection the cluster holds (the collection manager)."""
    return {f"{s.name}.{c.name}" for s in b.collections().get_all_scopes() for c in s.collections}


def read(b, expect_file, maps, only, skip=()):
    with open(expect_file) as f:
        expect = json.load(f)
    there = existing(b)
    for path, want in expect.items():
        target = mapped(path, maps)
        coll = collection(b, target)
        keep = included(path, only, skip)
        if not keep and target not in there:
            # Not even created: nothing of it can be there.
            check(True, f"{path}: not created")
            continue
        for key, (kind, value) in want["docs"].items():
            what = f"{path} -> {target} {key}"
            if not keep:
                absent(coll, key, what + " (left out)")
                continue
            if kind == "json":
                got = coll.get(key).content_as[dict]
                check(got == value, f"{what}: {got!r} != {value!r}")
            else:
                got = coll.get(key, GetOptions(transcoder=RawBinaryTranscoder())).content_as[bytes]
                check(got == base64.b64decode(value), f"{what}: binary differs")
            if target != path and path in there:
                absent(collection(b, path), key, what + " (at its old place)")
        if target != path:
            check(path not in there or path == "_default._default", f"{path} created though mapped away")
        for key in want["removed"]:
            if keep:
                absent(coll, key, f"{path} {key} (removed)")


def main():
    args = sys.argv[1:]
    mode, connstr, user, password, bucket = args[:5]
    rest = args[5:]
    cluster, b = connect(connstr, user, password, bucket)
    if mode == "write":
        write(b, rest[0])
    elif mode == "read":
        maps, only, skip = [], None, []
        i = 1
        while i < len(rest):
            if rest[i] == "--map":
                maps.append(tuple(rest[i + 1].split("=")))
            elif rest[i] == "--only":
                only = rest[i + 1]
            elif rest[i] == "--skip":
                skip.append(rest[i + 1])
            i += 2
        read(b, rest[0], maps, only, skip)
    elif mode == "drop":
        b.collections().drop_collection(rest[0], rest[1])
        check(True, "dropped")
    else:
        raise SystemExit(f"unknown mode {mode}")
    cluster.close()
    print(json.dumps({"ok": True, "checks": checks}))


if __name__ == "__main__":
    main()
