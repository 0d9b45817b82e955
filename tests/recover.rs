//! `pump recover` end to end: two local clusters holding the same items, a failover without
//! replicas on the second, and the recovery from the first, over both REST dialects.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{pump, stderr, transfer_ok, LocalCluster};

const ITEMS: usize = 100_000;

fn load(c: &LocalCluster, items: usize) {
    let gen =
        format!("gen:max-items={items},min-value-size=20,prefix=rk_,flags=7,expiry=2000000000");
    // rehash: the clusters of the refusal tests have fewer than 1024 vbuckets.
    transfer_ok(&gen, &c.spec(), &["-x", "rehash=1"]);
}

/// Every vbucket of the map has an active node, and the node says none is missing.
fn assert_whole(c: &LocalCluster) {
    assert_eq!(c.missing(), Vec::<u64>::new());
    let map = c.map();
    let holes: Vec<usize> = (0..map.len()).filter(|vb| map[*vb][0] < 0).collect();
    assert!(
        holes.is_empty(),
        "vbuckets without an active node: {holes:?}"
    );
}

#[test]
fn recover_brings_back_the_lost_vbuckets_and_an_interrupted_run_completes_on_rerun() {
    let from = LocalCluster::up(3, 0, &[]);
    let to = LocalCluster::up(3, 1, &[]);
    load(&from, ITEMS);
    load(&to, ITEMS);
    to.failover(1);
    let missing = to.missing();
    assert!(
        missing.len() > 300,
        "node 1 held a third of 1024 vbuckets: {missing:?}"
    );
    let (add, remove) = (to.nodes[3].otp.clone(), to.nodes[1].otp.clone());
    assert!(to.nodes[3].spare);

    // Dry run: the plan, and nothing changes.
    let map_before = to.map();
    let out = pump(&[
        "recover",
        &from.url(),
        &to.url(),
        "-a",
        &add,
        "-r",
        &remove,
        "-n",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{} vbuckets missing, nothing changed",
            missing.len()
        )),
        "{err}"
    );
    assert_eq!(to.missing(), missing);
    assert_eq!(to.map(), map_before);
    let members = to.get("/pools/default")["nodes"][3]["clusterMembership"].clone();
    assert_eq!(members, "inactiveAdded", "a dry run adds no node");

    // Interrupted: killed once the first vbucket is back.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args([
            "recover",
            &from.url(),
            &to.url(),
            "-a",
            &add,
            "-r",
            &remove,
            "-v",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let first_done = line.contains("items recovered into");
        seen.push(line);
        if first_done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.iter().any(|l| l.contains("items recovered into")),
        "no vbucket was recovered before the kill: {seen:#?}"
    );
    let left = to.missing();
    assert!(
        left.len() < missing.len(),
        "the first run recovered nothing"
    );
    assert!(!left.is_empty(), "the kill came after the whole recovery");

    // The rerun skips the replacement already made and completes.
    let out = pump(&["recover", &from.url(), &to.url(), "-a", &add, "-r", &remove]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("already in place (a rerun)"), "{err}");
    assert!(
        err.contains(&format!(
            "{} vbuckets recovered (recovery design)",
            left.len()
        )),
        "{err}"
    );
    assert!(err.contains("items/s"), "a per-vbucket rate: {err}");
    assert_whole(&to);
    // The lost vbuckets went to the added node.
    let map = to.map();
    for vb in &missing {
        assert_eq!(map[*vb as usize][0], 3, "vbucket {vb}");
    }
    let (a, b) = (from.contents(), to.contents());
    assert_eq!(b.len(), ITEMS);
    assert!(a == b, "the repaired cluster differs from the source");

    // Nothing missing any more: said, exit 0.
    let out = pump(&["recover", &from.url(), &to.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing missing"), "{}", stderr(&out));
}

#[test]
fn recover_speaks_the_shipped_start_recovery_dialect_too() {
    let items = 20_000;
    let from = LocalCluster::up(2, 0, &[]);
    let to = LocalCluster::up(3, 0, &["--recovery-api", "shipped"]);
    load(&from, items);
    load(&to, items);
    to.failover(2);
    let (status, _) = common::http(
        &to.nodes[0].rest,
        "GET",
        "/pools/default/buckets/default/vbucketsMissing",
        "",
    );
    assert_eq!(
        status, 404,
        "a shipped-only cluster has no recovery design routes"
    );

    // A dry run starts a recovery to learn the plan and stops it: nothing changes.
    let map_before = to.map();
    let out = pump(&["recover", &from.url(), &to.url(), "-n"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dry run (startRecovery)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(to.map(), map_before);

    let out = pump(&["recover", &from.url(), &to.url(), "-l", "0-511"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lost: Vec<usize> = (0..map_before.len())
        .filter(|vb| map_before[*vb][0] < 0)
        .collect();
    let map = to.map();
    for vb in &lost {
        assert_eq!(
            map[*vb][0] >= 0,
            *vb <= 511,
            "vbucket {vb}: only -l 0-511 is recovered"
        );
    }
    let out = pump(&["recover", &from.url(), &to.url()]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("(startRecovery)"), "{err}");
    let map = to.map();
    assert!((0..map.len()).all(|vb| map[vb][0] >= 0));
    assert!(from.contents() == to.contents());
}

/// Runs `pump recover FROM TO ARGS`, expecting exit 1 and `sentence` on stderr.
fn refused(from: &LocalCluster, to: &LocalCluster, args: &[&str], sentence: &str) {
    let (f, t) = (from.url(), to.url());
    let mut all = vec!["recover", f.as_str(), t.as_str()];
    all.extend_from_slice(args);
    let out = pump(&all);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        err.contains(sentence),
        "{args:?}: expected {sentence:?} in {err}"
    );
}

#[test]
fn each_refusal_of_the_recovery_design_is_a_sentence_naming_its_subject() {
    let from = LocalCluster::up(1, 0, &["--vbuckets", "16"]);
    let to = LocalCluster::up(3, 1, &["--vbuckets", "16", "--test-hooks"]);
    load(&from, 500);
    load(&to, 500);
    to.failover(1);
    let (spare, failed, live) = (&to.nodes[3].otp, &to.nodes[1].otp, &to.nodes[0].otp);

    refused(
        &from,
        &to,
        &["-a", "n_9@127.0.0.1"],
        "node n_9@127.0.0.1 was not found",
    );
    refused(
        &from,
        &to,
        &["-a", live, "-r", failed],
        &format!("node {live} is already part"),
    );
    refused(
        &from,
        &to,
        &["-a", spare, "-r", live],
        &format!("node {live} is still active: fail it over first"),
    );
    to.inject("changeVbucketStates", 410);
    refused(
        &from,
        &to,
        &[],
        "changeVbucketStates: vbucket(s) 1,4,7,10,13 not found",
    );
    to.inject("changeVbucketStates", 411);
    refused(&from, &to, &[], "state replica is not valid");
    to.inject("updateVbucketMap", 410);
    refused(
        &from,
        &to,
        &[],
        "updateVbucketMap: the destination could not update its vbucket map",
    );
    // Nothing was lost on the way: the last run recovered everything but the map update.
    assert_eq!(to.missing(), Vec::<u64>::new());
    let out = pump(&["recover", &from.url(), &to.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing missing"));
}

#[test]
fn each_refusal_of_the_shipped_dialect_is_a_sentence() {
    let from = LocalCluster::up(1, 0, &["--vbuckets", "8"]);
    let to = LocalCluster::up(
        2,
        0,
        &[
            "--vbuckets",
            "8",
            "--recovery-api",
            "shipped",
            "--test-hooks",
        ],
    );
    load(&from, 200);
    load(&to, 200);
    to.failover(1);
    refused(&from, &to, &["-B", "nosuch"], "bucket nosuch not found");
    for (status, sentence) in [(500, "some nodes failed"), (503, "a rebalance is running")] {
        to.inject("startRecovery", status);
        refused(&from, &to, &[], sentence);
    }
    for (status, sentence) in [
        (400, "recovery_uuid parameter is missing"),
        (402, "vbucket 1 is unspecified or not a number"),
        (404, "vbucket 1 is not part of the recovery map"),
        (406, "no recovery in progress, or a wrong recovery_uuid"),
        (500, "could not commit vbucket 1 because some nodes failed"),
    ] {
        to.inject("commitVBucket", status);
        // -t 1: one vbucket at a time, so vbucket 1 is the first committed.
        refused(&from, &to, &["-t", "1"], sentence);
    }
    let out = pump(&["recover", &from.url(), &to.url()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(to.map().iter().filter(|r| r[0] < 0).count(), 0);
}

#[test]
fn the_demo_repairs_a_failed_over_cluster_and_its_check_passes() {
    let out = pump(&["demo", "--items", "20000"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let lost = err
        .lines()
        .find_map(|l| {
            l.split(" vbuckets have no copy left")
                .next()
                .filter(|_| l.contains("no copy left"))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .expect("the failover line counts the lost vbuckets");
    assert!(lost > 300, "{err}");
    assert!(err.contains(&format!("{lost} vbuckets recovered")), "{err}");
    assert!(
        err.contains("items in A, 20000 in B; 0 differ or lack, 0 extra"),
        "{err}"
    );
    assert!(err.contains("check passed"), "{err}");
}
