//! The official Couchbase Python SDK (PyPI `couchbase` 4.x, on Couchbase's C++ core) against
//! `pump cluster up`: the acceptance test that the reference node is a Couchbase data node as a
//! real client sees it. The SDK lives in the virtual environment scripts/test creates
//! (`target/py-sdk`, or `PUMP_SDK_PYTHON`); its scripts are in tests/sdk.

mod common;

use common::{sdk_script, KvClient, LocalCluster};

/// Sums a STAT over every node of the cluster.
fn cluster_stat(c: &LocalCluster, name: &str) -> u64 {
    c.nodes
        .iter()
        .map(|n| KvClient::connect(&n.kv, Some(("U", "P"))).stat(name))
        .sum()
}

#[test]
fn the_official_sdk_runs_every_kv_operation_against_a_two_node_cluster_with_its_defaults() {
    let c = LocalCluster::up(2, 0, &["--replicas", "1", "--user", "U", "--password", "P"]);
    let before_scram = cluster_stat(&c, "pump_auth_scram_sha512");
    let (ok, out, err) = sdk_script(
        "kv_ops.py",
        &[&format!("couchbase://{}", c.nodes[0].kv), "U", "P"],
    );
    assert!(ok, "the SDK script failed:\n{err}\n{out}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no summary line ({e}): {out}"));
    assert_eq!(summary["ok"], true);
    assert!(summary["checks"].as_u64().unwrap() >= 50, "{summary}");
    // Its default mechanism, on each of its connections to both nodes.
    let scram = cluster_stat(&c, "pump_auth_scram_sha512") - before_scram;
    assert!(scram >= 3, "SCRAM-SHA512 logins: {scram}");
    // The compressible documents travelled snappy-compressed, both ways.
    assert!(cluster_stat(&c, "pump_snappy_values_in") >= 1);
    assert!(cluster_stat(&c, "pump_snappy_values_out") >= 1);
    // What the SDK wrote is what the pump reads back: the JSON document of 10 bytes.
    let run = summary["run"].as_str().unwrap();
    let items = c.contents_with(&["-u", "U", "-p", "P"]);
    let (flags, _, value) = &items[&format!("json-{run}-10")];
    assert_eq!(value, "b'{\"n\": 10, \"pad\": \"\"}'");
    // The SDK's JSON flags (common flags, JSON format).
    assert_eq!(flags, &(0x0200_0000u32).to_string());
    let (_, expiry, _) = &items[&format!("kept-{run}")];
    let now = common::now();
    let e: u64 = expiry.parse().unwrap();
    assert!(
        e > now + 50 && e <= now + 61,
        "touched expiry {e}, now {now}"
    );
}

#[test]
fn the_official_sdk_gets_its_authentication_error_for_a_wrong_password() {
    let c = LocalCluster::up(1, 0, &["--user", "U", "--password", "P"]);
    let (ok, out, err) = sdk_script(
        "kv_ops.py",
        &[
            &format!("couchbase://{}", c.nodes[0].kv),
            "U",
            "P",
            "--wrong-password-only",
        ],
    );
    assert!(ok, "{err}\n{out}");
    assert!(out.contains("\"ok\": true"), "{out}");
    assert_eq!(cluster_stat(&c, "pump_auth_scram_sha512"), 0);
}
