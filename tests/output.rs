//! End to end: machine-readable output: `--json` on transfer and recover, `--progress json`,
//! `--metrics` scraped while a transfer runs.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{pump, stderr, transfer_ok, LocalCluster};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn transfer_json_splits_the_summary_by_op_and_names_the_run_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let backup = dir.path().join("bk");
    let head = "id,flags,expiration,cas,value,rev,vbid,dtype\n";
    let mut text = String::from(head);
    for i in 0..300 {
        text.push_str(&format!("k{i},0,0,1,v{i},,0,0\n"));
    }
    std::fs::write(&input, text).unwrap();
    let out = pump(&[
        "transfer",
        &format!("csv:{}", input.display()),
        s(&backup),
        "--json",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(v["complete"], true);
    assert_eq!(
        v["counts"]["mutations"],
        serde_json::json!({"received": 300, "written": 300, "skipped": 0, "failed": 0})
    );
    assert_eq!(v["counts"]["deletions"]["received"], 0);
    assert_eq!(v["counts"]["expirations"]["received"], 0);
    assert_eq!(v["counts"]["items_written"], 300);
    let run = &v["runs"][0];
    assert_eq!(
        (run["mode"].as_str(), run["complete"].as_bool()),
        (Some("full"), Some(true))
    );
    assert!(Path::new(run["path"].as_str().unwrap())
        .join("pump-complete.json")
        .exists());
    // The backup into a CSV file: deletions have no row there, they are skipped, per op.
    let csv = dir.path().join("out.csv");
    let out = pump(&[
        "transfer",
        s(&backup),
        &format!("csv:{}", csv.display()),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"], serde_json::json!([]));
    assert_eq!(v["counts"]["mutations"]["written"], 300);
}

#[test]
fn recover_json_reports_each_vbucket_and_the_totals_by_op() {
    let from = LocalCluster::up(2, 0, &["--vbuckets", "16"]);
    let to = LocalCluster::up(2, 1, &["--vbuckets", "16"]);
    for c in [&from, &to] {
        transfer_ok(
            "gen:max-items=2000,prefix=r",
            &c.spec(),
            &["-x", "rehash=1,num_vbuckets=16"],
        );
    }
    to.failover(1);
    let missing = to.missing();
    assert!(!missing.is_empty());
    let out = pump(&[
        "recover",
        &from.url(),
        &to.url(),
        "-a",
        &to.nodes[2].otp,
        "-r",
        &to.nodes[1].otp,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["missing"], serde_json::json!(missing));
    assert_eq!(v["recovered"].as_array().unwrap().len(), missing.len());
    let per_vb: u64 = v["recovered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["items"].as_u64().unwrap())
        .sum();
    assert_eq!(v["items_written"].as_u64(), Some(per_vb));
    assert_eq!(v["mutations"]["written"].as_u64(), Some(per_vb));
    assert!(per_vb > 0 && per_vb < 2000);
    assert_eq!(v["failed"], 0);
}

#[test]
fn progress_json_prints_one_object_a_line_every_interval() {
    let out = pump(&[
        "transfer",
        "gen:max-items=60000",
        "blackhole:",
        "--rate",
        "25k",
        "--progress",
        "json",
        "-x",
        "report=1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("each progress line is JSON"))
        .collect();
    assert!(lines.len() >= 2, "{}", stderr(&out));
    let written: Vec<u64> = lines
        .iter()
        .map(|l| l["items_written"].as_u64().unwrap())
        .collect();
    assert!(written.windows(2).all(|w| w[0] <= w[1]), "{written:?}");
    assert!(
        written[0] > 0 && *written.last().unwrap() < 60_000,
        "{written:?}"
    );
    assert!(lines[0]["mutations"]["received"].as_u64().is_some());
}

/// GET /metrics on `addr`.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = raw.split_once("\r\n\r\n").unwrap().1.to_string();
    if raw
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        return out;
    }
    body
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn metrics_are_served_while_a_transfer_runs_and_parse_as_prometheus_text() {
    let c = LocalCluster::up(1, 0, &[]);
    transfer_ok("gen:max-items=40000", &c.spec(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pump"))
        .args([
            "transfer",
            &c.spec(),
            &format!("csv:{}", dir.path().join("out.csv").display()),
            "--rate",
            "20k",
            "--metrics",
            "127.0.0.1:0",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("metrics on http://")
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    std::thread::sleep(Duration::from_millis(600));
    let parse = |text: String| {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text format")
    };
    let first = parse(scrape(&addr));
    std::thread::sleep(Duration::from_millis(500));
    let second = parse(scrape(&addr));
    assert!(
        child.try_wait().unwrap().is_none(),
        "scraped while the transfer ran"
    );
    let w1 = sample(&first, "pump_items_written_total", &[]).unwrap();
    let w2 = sample(&second, "pump_items_written_total", &[]).unwrap();
    assert!(w1 > 0.0 && w2 > w1 && w2 < 40_000.0, "{w1} {w2}");
    let received = sample(
        &second,
        "pump_messages_total",
        &[("op", "mutation"), ("outcome", "received")],
    )
    .unwrap();
    assert!(received >= w2);
    // Per vbucket: the stream's high seqno, confirmed seqno and lag.
    let vb = pump_protocol::vbucket_of(b"pymc0", 1024).to_string();
    let high = sample(&second, "pump_vbucket_high_seqno", &[("vbucket", &vb)]).unwrap();
    let done = sample(&second, "pump_vbucket_confirmed_seqno", &[("vbucket", &vb)]).unwrap();
    let lag = sample(&second, "pump_vbucket_lag", &[("vbucket", &vb)]).unwrap();
    assert!(high > 0.0 && lag == high - done, "{high} {done} {lag}");
    let lags: f64 = second
        .samples
        .iter()
        .filter(|s| s.metric == "pump_vbucket_lag")
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(lags > 0.0, "some vbuckets still had items to send");
    assert!(sample(&second, "pump_bytes_written_total", &[]).unwrap() > 0.0);
    let status = child.wait().unwrap();
    assert!(status.success());
}
