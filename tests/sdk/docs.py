"""The official Couchbase Python SDK writes or reads a few JSON documents.

Usage: docs.py CONNSTR USER PASSWORD upsert|get KEY...

upsert: writes {"by": "sdk", "key": KEY, "n": 1} then {"by": "sdk", "key": KEY, "n": 2} to each
key (two writes: the key's revision is 2 at least). get: reads each key. Prints one JSON line,
{"KEY": document or null, ...}, and exits 0; any other error exits 1.
"""

import json
import sys
from datetime import timedelta

from couchbase.auth import PasswordAuthenticator
from couchbase.cluster import Cluster
from couchbase.exceptions import DocumentNotFoundException
from couchbase.options import ClusterOptions


def main():
    connstr, user, password, mode, *keys = sys.argv[1:]
    cluster = Cluster(connstr, ClusterOptions(PasswordAuthenticator(user, password)))
    cluster.wait_until_ready(timedelta(seconds=20))
    coll = cluster.bucket("default").default_collection()
    out = {}
    for key in keys:
        if mode == "upsert":
            for n in (1, 2):
                coll.upsert(key, {"by": "sdk", "key": key, "n": n})
            out[key] = {"by": "sdk", "key": key, "n": 2}
        elif mode == "get":
            try:
                out[key] = coll.get(key).content_as[dict]
            except DocumentNotFoundException:
                out[key] = None
        else:
            raise SystemExit(f"unknown mode {mode}")
    cluster.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
