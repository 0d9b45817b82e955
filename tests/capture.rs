//! tshark's couchbase dissector on the frames of a run with credentials: the pump's HELLO
//! (its user agent), SASL with SCRAM-SHA512, GET_CLUSTER_CONFIG and the restore's
//! SET_WITH_META, all decoded with no malformed packet. tshark must be installed
//! (scripts/test installs it) and able to capture on the loopback interface.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{transfer_ok, KvClient, LocalCluster};
use pump_protocol::{Opcode, Packet, Status};

/// A tshark capture of one TCP port into a file, stopped by its process id.
struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(port: u16, file: std::path::PathBuf) -> Capture {
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-f", &format!("tcp port {port}"), "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tshark is installed (scripts/test installs it)");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap() > 0, "tshark exited");
            if line.contains("Capturing on") {
                break;
            }
            assert!(Instant::now() < deadline, "tshark not ready");
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        // The capture starts a moment after tshark says so.
        std::thread::sleep(Duration::from_millis(1000));
        Capture { child, file }
    }

    /// Stops the capture (SIGINT, so the file is complete) and decodes it.
    fn decode(mut self, port: u16) -> String {
        std::thread::sleep(Duration::from_millis(1000));
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        self.child.wait().unwrap();
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&self.file)
            .args([
                "-d",
                &format!("tcp.port=={port},couchbase"),
                "-T",
                "json",
                "--no-duplicate-keys",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Every (field name, string value) pair of a tshark JSON tree.
fn fields(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if let Some(s) = x.as_str() {
                    out.push((k.clone(), s.to_string()));
                }
                for s in x
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|y| y.as_str())
                {
                    out.push((k.clone(), s.to_string()));
                }
                fields(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| fields(x, out)),
        _ => {}
    }
}

#[test]
fn tshark_decodes_hello_scram_cluster_config_and_set_with_meta_frames_of_a_run() {
    let c = LocalCluster::up(1, 0, &["--user", "U", "--password", "P"]);
    let kv = c.nodes[0].kv.clone();
    let port: u16 = kv.rsplit_once(':').unwrap().1.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("b");
    let backup = backup.to_str().unwrap();
    let capture = Capture::start(port, dir.path().join("run.pcapng"));

    transfer_ok(
        "gen:max-items=20,json=1",
        &c.spec(),
        &["-U", "U", "-P", "P"],
    );
    transfer_ok(&c.spec(), backup, &["-u", "U", "-p", "P"]);
    transfer_ok(backup, &c.spec(), &["-U", "U", "-P", "P"]);
    let mut k = KvClient::connect(&kv, Some(("U", "P")));
    let r = k.request(Packet::request(Opcode::GetClusterConfig));
    assert_eq!(r.status(), Status::Success);
    drop(k);

    let json = capture.decode(port);
    assert!(!json.contains("_ws.malformed"), "malformed packets: {json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut all = Vec::new();
    fields(&v, &mut all);
    let opcodes: std::collections::BTreeSet<u8> = all
        .iter()
        .filter(|(k, _)| k == "couchbase.opcode")
        .filter_map(|(_, v)| match v.strip_prefix("0x") {
            Some(hex) => u8::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        })
        .collect();
    for (op, name) in [
        (Opcode::Hello, "HELLO"),
        (Opcode::SaslListMechs, "SASL_LIST_MECHS"),
        (Opcode::SaslAuth, "SASL_AUTH"),
        (Opcode::SaslStep, "SASL_STEP"),
        (Opcode::SelectBucket, "SELECT_BUCKET"),
        (Opcode::GetClusterConfig, "GET_CLUSTER_CONFIG"),
        (Opcode::SetqWithMeta, "SETQ_WITH_META"),
    ] {
        assert!(
            opcodes.contains(&op.value()),
            "no {name} frame decoded; opcodes seen: {opcodes:x?}"
        );
    }
    let keys: Vec<&str> = all
        .iter()
        .filter(|(k, _)| k == "couchbase.key")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        keys.iter().any(|k| k.contains("pump/")),
        "no HELLO naming pump: {keys:?}"
    );
    assert!(
        keys.contains(&"SCRAM-SHA512"),
        "no SASL_AUTH with SCRAM-SHA512: {keys:?}"
    );
}
