//! The reference node checks who asks (issue 18, item 4): REST needs the KV credentials when
//! they are set, and the test hooks exist only with `--test-hooks`.

mod common;

use common::{http_with, LocalCluster};

/// `Authorization: Basic` of admin:s3cret, and of admin:wrong.
const GOOD: &str = "Authorization: Basic YWRtaW46czNjcmV0\r\n";
const WRONG: &str = "Authorization: Basic YWRtaW46d3Jvbmc=\r\n";

fn nodes_active(c: &LocalCluster) -> usize {
    let (status, body) = http_with(&c.nodes[0].rest, "GET", "/pools/default", "", GOOD);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["clusterMembership"] == "active")
        .count()
}

#[test]
fn rest_needs_the_node_credentials_when_they_are_set() {
    let c = LocalCluster::up(2, 0, &["--user", "admin", "--password", "s3cret"]);
    let rest = c.nodes[0].rest.clone();
    let fail_over = format!("otpNode={}", c.nodes[1].otp.replace('@', "%40"));
    // The case: anyone could fail a node over.
    for headers in ["", WRONG] {
        let (status, _) = http_with(&rest, "POST", "/controller/failOver", &fail_over, headers);
        assert_eq!(status, 401, "failOver with {headers:?}");
        let (status, _) = http_with(&rest, "GET", "/pools/default", "", headers);
        assert_eq!(status, 401, "pools/default with {headers:?}");
        let (status, _) = http_with(&rest, "GET", "/pools/default/buckets/default", "", headers);
        assert_eq!(status, 401, "the bucket with {headers:?}");
    }
    assert_eq!(nodes_active(&c), 2, "a refused failOver failed a node over");
    // GET /pools stays open, as on Couchbase Server.
    assert_eq!(http_with(&rest, "GET", "/pools", "", "").0, 200);
    // With them, it is served.
    let (status, body) = http_with(&rest, "POST", "/controller/failOver", &fail_over, GOOD);
    assert_eq!(status, 200, "{body}");
    assert_eq!(nodes_active(&c), 1);
}

#[test]
fn the_test_hooks_exist_only_with_test_hooks() {
    let plain = LocalCluster::up(1, 0, &["--user", "admin", "--password", "s3cret"]);
    let hooked = LocalCluster::up(1, 0, &["--test-hooks"]);
    for (path, form) in [
        ("/pump/faults", "route=replaceNode&status=403"),
        ("/pump/rollback", "vbucket=0&seqno=0"),
    ] {
        let (status, body) = http_with(&plain.nodes[0].rest, "POST", path, form, GOOD);
        assert_eq!(status, 404, "{path} without --test-hooks: {body}");
        let (status, body) = http_with(&hooked.nodes[0].rest, "POST", path, form, "");
        assert_ne!(status, 404, "{path} with --test-hooks: {body}");
    }
}

#[test]
fn dcp_and_tap_sources_fail_when_every_vbucket_asked_for_is_dead_on_the_node() {
    // The case: after a takeover marked every vbucket dead, `dcp://` reported 0 items
    // and exited 0. With a short -l the DCP source asks `STAT vbucket-seqno N` per vbucket,
    // and the node listed dead vbuckets there too: the check saw them as live.
    let c = LocalCluster::up(1, 0, &["--user", "admin", "--password", "s3cret"]);
    let kv = c.nodes[0].kv.clone();
    let mut admin = common::KvClient::connect(&kv, Some(("admin", "s3cret")));
    for vb in 0..4u16 {
        let r = admin.request(
            pump_protocol::Packet::request(pump_protocol::Opcode::SetVbucket)
                .with_vbucket(vb)
                .with_extras(
                    (pump_protocol::VbucketState::Dead as u32)
                        .to_be_bytes()
                        .to_vec(),
                ),
        );
        assert_eq!(r.status(), pump_protocol::Status::Success, "vbucket {vb}");
    }
    for scheme in ["dcp", "tap"] {
        for list in ["0-3", "2"] {
            let spec = format!("{scheme}://admin:s3cret@{kv}");
            let out = common::pump(&["transfer", &spec, "blackhole:", "-l", list, "-q"]);
            let e = common::stderr(&out);
            assert!(!out.status.success(), "{scheme} -l {list}: exit 0 ({e})");
            assert!(
                e.contains("active on this node") && e.contains(&kv),
                "{scheme} -l {list}: {e}"
            );
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
    // A live vbucket beside the dead ones is streamed.
    let spec = format!("dcp://admin:s3cret@{kv}");
    let out = common::pump(&["transfer", &spec, "blackhole:", "-l", "3-4", "-q"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
}
