//! TLS: the official SDK over couchbases:// to the node's TLS port, and the pump streaming a
//! cluster into a backup and restoring it into another over couchbases:// (HTTPS REST, TLS
//! KV), trusting the cluster's certificate (--cacert), refusing an unknown one, or trusting
//! any (--no-ssl-verify).

mod common;

use common::{pump, sdk_script, stderr, transfer_ok, LocalCluster};

fn tls_cluster(dir: &std::path::Path) -> LocalCluster {
    LocalCluster::up(
        2,
        0,
        &[
            "--replicas",
            "1",
            "--user",
            "U",
            "--password",
            "P",
            "--tls",
            "--tls-kv-port",
            "0",
            "--tls-rest-port",
            "0",
            "--tls-dir",
            dir.to_str().unwrap(),
        ],
    )
}

#[test]
fn the_official_sdk_runs_every_kv_operation_over_couchbases_trusting_the_nodes_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let c = tls_cluster(dir.path());
    let cert = c.cert.clone().expect("the cluster wrote its certificate");
    assert_eq!(cert, dir.path().join("cert.pem"));
    let kvs = c.nodes[0].kvs.clone().expect("a TLS KV port");
    let (ok, out, err) = sdk_script(
        "kv_ops.py",
        &[
            &format!("couchbases://{kvs}"),
            "U",
            "P",
            "--cacert",
            cert.to_str().unwrap(),
        ],
    );
    assert!(ok, "the SDK script failed over TLS:\n{err}\n{out}");
    assert!(out.contains("\"ok\": true"), "{out}");
}

#[test]
fn a_stream_and_a_restore_run_over_tls_with_cacert_and_an_unknown_certificate_is_refused() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (tls_cluster(da.path()), tls_cluster(db.path()));
    let spec = |c: &LocalCluster| format!("couchbases://{}", c.nodes[0].https.clone().unwrap());
    let ca = |c: &LocalCluster| c.cert.clone().unwrap().to_string_lossy().into_owned();
    transfer_ok(
        "gen:max-items=2000,json=1",
        &spec(&a),
        &["-U", "U", "-P", "P", "--cacert", &ca(&a)],
    );
    let backup = da.path().join("backup");
    transfer_ok(
        &spec(&a),
        backup.to_str().unwrap(),
        &["-u", "U", "-p", "P", "--cacert", &ca(&a)],
    );
    transfer_ok(
        backup.to_str().unwrap(),
        &spec(&b),
        &["-U", "U", "-P", "P", "--cacert", &ca(&b)],
    );
    let plain = ["-u", "U", "-p", "P"];
    assert_eq!(a.contents_with(&plain), b.contents_with(&plain));
    assert_eq!(b.contents_with(&plain).len(), 2000);
    // Another cluster's certificate, or none: refused, saying what to do.
    let out = pump(&[
        "transfer",
        &spec(&a),
        "blackhole:",
        "-u",
        "U",
        "-p",
        "P",
        "--cacert",
        &ca(&b),
    ]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("certificate") && e.contains("--cacert"), "{e}");
    // --no-ssl-verify: any certificate.
    transfer_ok(
        &spec(&a),
        "blackhole:",
        &["-u", "U", "-p", "P", "--no-ssl-verify"],
    );
    // A missing --cacert file is a usage error naming it.
    let out = pump(&[
        "transfer",
        &spec(&a),
        "blackhole:",
        "--cacert",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/ca.pem"));
}

#[test]
fn jobs_run_over_tls_with_the_trust_the_planner_and_each_worker_are_given() {
    use pump_queue::testing::Beanstalkd;
    let da = tempfile::tempdir().unwrap();
    let a = tls_cluster(da.path());
    let spec = format!("couchbases://{}", a.nodes[0].https.clone().unwrap());
    let ca = a.cert.clone().unwrap().to_string_lossy().into_owned();
    transfer_ok(
        "gen:max-items=3000,json=1",
        &spec,
        &["-U", "U", "-P", "P", "--cacert", &ca],
    );
    let q = Beanstalkd::start();
    let url = q.url("tls");
    let backup = da.path().join("backup");
    let plan = |trust: &[&str]| {
        pump(
            &[
                &["plan", "transfer", &spec, backup.to_str().unwrap()][..],
                &["--queue", &url, "--jobs", "4", "-u", "U", "-p", "P"],
                trust,
            ]
            .concat(),
        )
    };
    // The planner reads the source's map over HTTPS: without the CA it is refused, saying what
    // to give.
    let out = plan(&[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--cacert"), "{}", stderr(&out));
    let out = plan(&["--cacert", &ca]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The jobs carry no trust: the worker brings its own, as it brings its credentials.
    let out = pump(&[
        "worker", &url, "--drain", "-u", "U", "-p", "P", "--cacert", &ca,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let db = tempfile::tempdir().unwrap();
    let b = tls_cluster(db.path());
    transfer_ok(
        backup.to_str().unwrap(),
        &format!("couchbases://{}", b.nodes[0].https.clone().unwrap()),
        &[
            "-U",
            "U",
            "-P",
            "P",
            "--cacert",
            &b.cert.clone().unwrap().to_string_lossy(),
        ],
    );
    let plain = ["-u", "U", "-p", "P"];
    assert_eq!(b.contents_with(&plain).len(), 3000);
    assert_eq!(a.contents_with(&plain), b.contents_with(&plain));
}
