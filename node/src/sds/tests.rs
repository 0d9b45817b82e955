//! The reference proxy against the facts read in oio-sds's proxy and sqliterepo, in both
//! dialects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pump_meta2::generate::{write_base, BaseSpec};
use pump_meta2::BaseName;
use serde_json::{json, Value};

use super::*;

const A: &str = "127.0.0.1:6120";
const B: &str = "127.0.0.2:6120";
const C: &str = "127.0.0.3:6120";
const D: &str = "127.0.0.4:6120";
const Q: &str = "acct=acct&ref=c1&type=meta2";

fn volume(dir: &Path, a: &str) -> PathBuf {
    dir.join(a.replace([':', '.'], "_"))
}

/// Services A, B, C holding the base of acct/c1, and D with an empty volume.
fn proxy_v(dir: &Path, meta1: Option<PathBuf>, version: OioVersion) -> SdsProxy {
    let spec = BaseSpec {
        ns: "OPENIO".into(),
        account: "acct".into(),
        container: "c1".into(),
        peers: vec![A.into(), B.into(), C.into()],
        aliases: 3,
    };
    let services = [A, B, C, D]
        .iter()
        .map(|a| {
            let v = volume(dir, a);
            std::fs::create_dir_all(&v).unwrap();
            if *a != D {
                write_base(&v, &spec).unwrap();
            }
            Meta2Service {
                address: a.to_string(),
                volume: v,
            }
        })
        .collect();
    let mut config = SdsConfig::new("OPENIO", services);
    config.meta1 = meta1;
    config.version = version;
    config.test_hooks = true;
    SdsProxy::new(config).unwrap()
}

fn proxy(dir: &Path) -> SdsProxy {
    proxy_v(dir, None, OioVersion::V9)
}

fn base() -> BaseName {
    BaseName::of("acct", "c1")
}

fn path(dir: &Path, a: &str) -> PathBuf {
    base().path_in(&volume(dir, a))
}

fn post(p: &SdsProxy, route: &str, query: &str, body: Value) -> Reply {
    let b = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    p.handle("POST", &format!("/v3.0/OPENIO/{route}"), query, &b)
}

fn get(p: &SdsProxy, route: &str, query: &str) -> Reply {
    p.handle("GET", &format!("/v3.0/OPENIO/{route}"), query, b"")
}

fn hosts(p: &SdsProxy) -> Vec<String> {
    let r = get(p, "reference/show", Q);
    assert_eq!(r.status, 200, "{r:?}");
    r.body.unwrap()["srv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["host"].as_str().unwrap().to_string())
        .collect()
}

fn statuses(r: &Reply) -> BTreeMap<String, (u64, String)> {
    r.body
        .as_ref()
        .unwrap()
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (
                    v["status"]["status"].as_u64().unwrap(),
                    v["status"]["message"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn sys(dir: &Path, a: &str, key: &str) -> Option<String> {
    sqlx::read_admin(&path(dir, a))
        .unwrap()
        .get(key)
        .map(|v| String::from_utf8_lossy(v).to_string())
}

fn refused(r: &Reply, message: &str) {
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.refused, "{r:?}");
    assert_eq!(r.body.as_ref().unwrap()["message"], json!(message), "{r:?}");
}

#[test]
fn show_has_one_entry_per_service_the_container_and_the_cache_stays_stale_until_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    let r = get(&p, "reference/show", Q).body.unwrap();
    assert_eq!(r["srv"].as_array().unwrap().len(), 3);
    assert_eq!(
        r["srv"][1],
        json!({"seq": 1, "type": "meta2", "host": B, "args": ""})
    );
    assert_eq!(r["cid"], json!(base().cid));
    assert_eq!(r["account"], json!("acct"));
    assert_eq!(r["name"], json!("c1"));
    assert_eq!(r["dir"][0]["type"], json!("meta1"));
    // By CID, the account and name are not in the URL: null, as oio-proxy answers.
    let r = get(&p, "reference/show", &format!("cid={}", base().cid));
    assert_eq!(r.body.unwrap()["account"], Value::Null);
    // A second proxy over the same meta1 file forces the reference; this one's cache stays.
    let dir1 = tempfile::tempdir().unwrap();
    let file = dir1.path().join("meta1.json");
    let p1 = proxy_v(dir1.path(), Some(file.clone()), OioVersion::V9);
    let mut cfg = p1.config.clone();
    cfg.meta1 = Some(file);
    let p2 = SdsProxy::new(cfg).unwrap();
    assert_eq!(hosts(&p1), [A, B, C]);
    let force = json!({"seq": 1, "type": "meta2", "host": format!("{B},{C},{D}"), "args": ""});
    let r = post(&p2, "reference/force", &format!("{Q}&replace=yes"), force);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        hosts(&p2),
        [B, C, D],
        "the proxy that forced dropped its cache"
    );
    assert_eq!(hosts(&p1), [A, B, C], "the other proxy's cache answers");
    // Without type, show asks meta1 directly.
    let r = get(&p1, "reference/show", "acct=acct&ref=c1").body.unwrap();
    assert_eq!(r["srv"].as_array().unwrap().len(), 3);
    assert_eq!(r["srv"][2]["host"], json!(D));
    p1.handle("POST", "/v3.0/cache/flush/high", "", b"");
    assert_eq!(
        hosts(&p1),
        [A, B, C],
        "the high cache is meta0's, not the references'"
    );
    let r = p1.handle("POST", "/v3.0/cache/flush/low", "", b"");
    assert_eq!(r.status, 204);
    assert_eq!(hosts(&p1), [B, C, D]);
}

#[test]
fn force_and_unlink_without_a_type_are_refused_and_force_without_replace_is_403() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    let body = json!({"seq": 1, "type": "meta2", "host": format!("{B},{C},{D}"), "args": ""});
    let r = post(
        &p,
        "reference/force",
        "acct=acct&ref=c1&replace=yes",
        body.clone(),
    );
    refused(&r, "No service type provided");
    let r = post(&p, "reference/unlink", "acct=acct&ref=c1", Value::Null);
    refused(&r, "No service type provided");
    let r = post(&p, "reference/force", Q, body.clone());
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body.unwrap()["status"], json!(455));
    let r = post(&p, "reference/force", Q, json!({"type": "meta2"}));
    assert!(r.refused, "{r:?}");
    assert_eq!(hosts(&p), [A, B, C]);
    // Routes oio-proxy does not have.
    let r = get(&p, "reference/has", "acct=acct&ref=c1");
    assert_eq!(r.status, 404);
    assert_eq!(r.body.unwrap()["message"], json!("No handler found"));
    assert_eq!(
        get(&p, "admin/status", Q).status,
        404,
        "admin routes are POST"
    );
    let r = post(
        &p,
        "reference/get_properties",
        "acct=acct&ref=c1",
        json!([]),
    );
    assert_eq!(
        r.body.unwrap(),
        json!({"cid": base().cid, "properties": {}})
    );
}

#[test]
fn admin_calls_need_a_type_and_a_container() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    refused(
        &post(&p, "admin/has", "acct=acct&ref=c1", Value::Null),
        "No service type",
    );
    let r = post(&p, "admin/has", "type=meta2", Value::Null);
    assert!(r.refused && r.status == 400, "{r:?}");
    let r = post(&p, "admin/freeze", "acct=acct&ref=c1", Value::Null);
    refused(&r, "No service type");
    let r = get(&p, "conscience/list", "");
    refused(&r, "Missing type");
    assert_eq!(get(&p, "conscience/list", "type=rdir").status, 404);
    let r = get(&p, "conscience/list", "type=meta2").body.unwrap();
    assert_eq!(r.as_array().unwrap().len(), 4);
    let r = p.handle("GET", "/v3.0/cache/status", "", b"");
    assert!(r.body.unwrap()["meta1"]["count"].is_u64());
}

#[test]
fn master_calls_take_one_service_from_9_and_answer_per_service_in_7() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    let sid = format!("{Q}&service_id={A},{B},{C}");
    refused(
        &post(&p, "admin/freeze", &sid, Value::Null),
        "Only one service can be requested",
    );
    let props = json!({"system": {"sys.peers": format!("{B},{C},{D}")}});
    refused(
        &post(&p, "admin/set_properties", &sid, props.clone()),
        "Only one service can be requested",
    );
    refused(
        &post(&p, "admin/get_properties", &sid, Value::Null),
        "Only one service can be requested",
    );
    // Fan-out calls take a list in both dialects.
    assert_eq!(post(&p, "admin/status", &sid, Value::Null).status, 200);

    let dir7 = tempfile::tempdir().unwrap();
    let p7 = proxy_v(dir7.path(), None, OioVersion::V7);
    let r = post(&p7, "admin/freeze", &sid, Value::Null);
    assert_eq!(r.status, 200, "{r:?}");
    // 7.x sends it to each service named, not redirected: only the master applies it, and
    // replicates it; the slaves answer 303 inside the body.
    let s = statuses(&r);
    assert_eq!(s[A], (200, "OK".into()));
    assert_eq!(s[B], (303, A.into()));
    assert_eq!(s[C], (303, A.into()));
    for a in [A, B, C] {
        assert_eq!(sys(dir7.path(), a, "sys.status").unwrap(), "4294967295");
    }
    let r = post(
        &p7,
        "admin/enable",
        &format!("{Q}&service_id={B},{D}"),
        Value::Null,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let s = statuses(&r);
    assert_eq!(s[B], (303, A.into()));
    assert_eq!(s[D].0, 431, "D has no copy: {s:?}");
    assert_eq!(sys(dir7.path(), B, "sys.status").unwrap(), "4294967295");
    let r = post(&p7, "admin/set_properties", &sid, props);
    assert_eq!(statuses(&r)[A], (200, "OK".into()));
}

#[test]
fn the_master_applies_freeze_enable_and_properties_and_replicates_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    let r = post(&p, "admin/freeze", Q, Value::Null);
    assert_eq!((r.status, r.body.clone()), (200, Some(json!({}))));
    for a in [A, B, C] {
        assert_eq!(
            sys(dir.path(), a, "sys.status").unwrap(),
            "4294967295",
            "{a}"
        );
    }
    // Already frozen: the master's 436, as a 503 to retry.
    let r = post(&p, "admin/freeze", Q, Value::Null);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body.unwrap()["status"], json!(436));
    let r = post(
        &p,
        "container/set_properties",
        "acct=acct&ref=c1",
        json!({"properties": {"k": "v"}}),
    );
    assert_eq!(r.status, 503, "a frozen base refuses a user's write: {r:?}");
    // An admin write still goes through; 9 answers 204, 7 answers 200 {}.
    let r = post(
        &p,
        "admin/set_properties",
        Q,
        json!({"properties": {"a": "1"}}),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(sys(dir.path(), C, "user.a").unwrap(), "1");
    let v: Vec<Option<String>> = [A, B, C]
        .iter()
        .map(|a| sys(dir.path(), a, "version:main.admin"))
        .collect();
    assert!(v.iter().all(|x| *x == v[0]), "{v:?}");
    refused(
        &post(&p, "admin/set_properties", Q, json!({"properties": {}})),
        "No properties found in JSON object",
    );
    assert_eq!(post(&p, "admin/enable", Q, Value::Null).status, 200);
    let r = post(&p, "admin/enable", Q, Value::Null);
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.body.unwrap()["status"], json!(439));
    let r = post(
        &p,
        "container/set_properties",
        "acct=acct&ref=c1",
        json!({"properties": {"k": "v"}}),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let props = post(&p, "admin/get_properties", Q, Value::Null)
        .body
        .unwrap();
    assert_eq!(props["properties"]["k"], json!("v"));
    assert_eq!(props["system"]["sys.peers"], json!(format!("{A},{B},{C}")));
    assert_eq!(post(&p, "admin/vacuum", Q, Value::Null).status, 200);
    let r = post(&p, "admin/del_properties", Q, json!(["k"]));
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(sys(dir.path(), B, "user.k"), None);

    let dir7 = tempfile::tempdir().unwrap();
    let p7 = proxy_v(dir7.path(), None, OioVersion::V7);
    let r = post(
        &p7,
        "admin/set_properties",
        Q,
        json!({"properties": {"a": "1"}}),
    );
    assert_eq!((r.status, r.body), (200, Some(json!({}))));
}

#[test]
fn debug_answers_objects_has_answers_path_and_mtime_and_leave_drops_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    let d = post(&p, "admin/debug", Q, Value::Null).body.unwrap();
    assert_eq!(
        d[A]["body"],
        Value::Null,
        "no election before a request starts it"
    );
    let s = statuses(&post(&p, "admin/status", Q, Value::Null));
    assert_eq!(s[A], (200, "OK".into()));
    assert_eq!(s[B], (303, A.into()));
    let d = post(&p, "admin/debug", Q, Value::Null).body.unwrap();
    let b = &d[B]["body"];
    assert_eq!(b["local"]["url"], json!(B));
    assert_eq!(b["local"]["state"], json!("SLAVE"));
    assert_eq!(b["master"]["url"], json!(A));
    assert!(b["master"]["id"].is_u64());
    assert_eq!(b["base"]["name"], json!(base().to_string()));
    assert_eq!(b["base"]["type"], json!("meta2"));
    assert!(b["base"]["zk"]
        .as_str()
        .unwrap()
        .starts_with("/hc/ns/OPENIO/el/meta2/"));
    assert!(b["base"]["zk_server"].is_string());
    assert_eq!(b["peers"], json!([A, C]));
    let log = b["log"][0].as_str().unwrap();
    assert_eq!(log.split(':').count(), 4, "{log}");
    assert!(log.ends_with(":SLAVE"), "the newest line first: {log}");
    let h = statuses(&post(&p, "admin/has", Q, Value::Null));
    assert_eq!(h[A].0, 200);
    let body = post(&p, "admin/has", Q, Value::Null).body.unwrap();
    let has = body[A]["body"].as_str().unwrap().to_string();
    let (file, mtime) = has.rsplit_once(':').unwrap();
    assert_eq!(Path::new(file), path(dir.path(), A));
    assert!(mtime.parse::<u64>().unwrap() > 0);
    post(&p, "admin/leave", Q, Value::Null);
    let d = post(&p, "admin/debug", Q, Value::Null).body.unwrap();
    assert_eq!(d[A]["body"], Value::Null);
    // has only checks that the file is there; D has none.
    let r = post(&p, "admin/has", &format!("{Q}&service_id={D}"), Value::Null);
    assert_eq!(statuses(&r)[D].0, 431);
}

#[test]
fn a_service_the_copy_does_not_list_falls_back_to_meta1_and_else_does_not_manage() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    // Every copy now lists B, C, D; meta1 still A, B, C.
    let props = json!({"system": {"sys.peers": format!("{B},{C},{D}")}});
    assert_eq!(post(&p, "admin/set_properties", Q, props).status, 204);
    let r = post(&p, "admin/copy", Q, json!({"to": D, "from": B}));
    assert_eq!(r.status, 204, "{r:?}");
    let sid = format!("{Q}&service_id={A},{B},{C},{D}");
    let s = statuses(&post(&p, "admin/status", &sid, Value::Null));
    assert_eq!(s[A], (200, "OK".into()), "A sees meta1's peers: {s:?}");
    assert_eq!(s[B], (200, "OK".into()), "B sees B, C, D: {s:?}");
    assert_eq!(s[D], (303, B.into()));
    // has answers 200 for a copy whatever its sys.peers.
    let h = statuses(&post(&p, "admin/has", &sid, Value::Null));
    assert!(h.values().all(|(c, _)| *c == 200), "{h:?}");
    // Through the new master only.
    let r = post(
        &p,
        "admin/freeze",
        &format!("{Q}&service_id={B}"),
        Value::Null,
    );
    assert_eq!(statuses(&r)[B].0, 200, "{r:?}");
    assert_eq!(sys(dir.path(), D, "sys.status").unwrap(), "4294967295");
    let r = post(
        &p,
        "admin/enable",
        &format!("{Q}&service_id={D}"),
        Value::Null,
    );
    assert_eq!(statuses(&r)[D], (303, B.into()));
}

#[test]
fn copy_from_a_peer_or_from_the_master_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    refused(
        &post(&p, "admin/copy", Q, Value::Null),
        "Action argument must be an object",
    );
    refused(
        &post(&p, "admin/copy", Q, json!({"to": "nowhere"})),
        "Invalid target URL",
    );
    refused(
        &post(&p, "admin/copy", "acct=acct&ref=c1", json!({"to": D})),
        "No service type",
    );
    // {"to"} alone: the master pushes its copy.
    let r = post(&p, "admin/copy", Q, json!({"to": D}));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(path(dir.path(), D).exists());
    let r = post(&p, "admin/remove", Q, Value::Null);
    refused(&r, "No service ID");
    let r = post(
        &p,
        "admin/remove",
        &format!("{Q}&service_id={D},{A}"),
        Value::Null,
    );
    let body = r.body.unwrap();
    assert_eq!(body[D]["body"], json!({"deleted": true}));
    assert!(!path(dir.path(), D).exists());
    assert!(!path(dir.path(), A).exists());
    let r = post(
        &p,
        "admin/remove",
        &format!("{Q}&service_id={D}"),
        Value::Null,
    );
    assert_eq!(r.body.unwrap()[D]["body"], json!({"deleted": false}));

    let dir7 = tempfile::tempdir().unwrap();
    let p7 = proxy_v(dir7.path(), None, OioVersion::V7);
    refused(
        &post(&p7, "admin/copy", Q, json!({"from": A})),
        "Missing field [to]",
    );
    let r = post(&p7, "admin/copy", Q, json!({"to": D, "from": A}));
    assert_eq!(r.status, 204, "{r:?}");
}

#[test]
fn sync_refills_a_missing_slave_and_the_master_answers_301() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    std::fs::remove_file(path(dir.path(), C)).unwrap();
    assert_eq!(statuses(&post(&p, "admin/has", Q, Value::Null))[C].0, 431);
    let s = statuses(&post(&p, "admin/sync", Q, Value::Null));
    assert_eq!(s[A], (301, "not SLAVE".into()));
    assert_eq!(s[C], (200, "OK".into()));
    assert_eq!(statuses(&post(&p, "admin/has", Q, Value::Null))[C].0, 200);
}

#[test]
fn faults_and_requests_are_recorded_and_the_hooks_need_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    p.handle("POST", "/pump/faults", "", b"route=admin/freeze&status=503");
    assert_eq!(post(&p, "admin/freeze", Q, Value::Null).status, 503);
    assert_eq!(post(&p, "admin/freeze", Q, Value::Null).status, 200);
    p.handle(
        "POST",
        "/pump/faults",
        "",
        b"route=admin/status&status=437&peer=127.0.0.2:6120",
    );
    let s = statuses(&post(&p, "admin/status", Q, Value::Null));
    assert_eq!(s[B].0, 437);
    let rec = p.requests();
    let routes: Vec<&str> = rec.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(routes, ["admin/freeze", "admin/freeze", "admin/status"]);
    assert_eq!(rec[0].status, 503);
    assert!(!rec[0].refused);
    post(&p, "admin/freeze", "acct=acct&ref=c1", Value::Null);
    let last = p.requests().pop().unwrap();
    assert!(last.refused);
    assert_eq!(last.reason, "No service type");
    // A member made to follow a stale master.
    let b = base().to_string();
    let r = p.handle(
        "POST",
        "/pump/member",
        "",
        format!("base={b}&peer={B}&master={D}").as_bytes(),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let d = post(&p, "admin/debug", Q, Value::Null).body.unwrap();
    assert_eq!(d[B]["body"]["master"]["url"], json!(D));
    // Without --test-hooks there is no such route.
    let mut cfg = p.config.clone();
    cfg.test_hooks = false;
    let p = SdsProxy::new(cfg).unwrap();
    assert_eq!(p.handle("GET", "/pump/requests", "", b"").status, 404);
}

#[test]
fn the_elections_are_listed_as_zookeeper_nodes_the_master_first() {
    let dir = tempfile::tempdir().unwrap();
    let p = proxy(dir.path());
    post(&p, "admin/status", Q, Value::Null);
    let d = post(&p, "admin/debug", Q, Value::Null).body.unwrap();
    let zk = d[A]["body"]["base"]["zk"].as_str().unwrap().to_string();
    let (parent, prefix) = zk.rsplit_once('/').unwrap();
    let nodes = p.zk_nodes();
    let children = &nodes[parent];
    assert_eq!(children.len(), 3);
    assert!(children.iter().all(|(n, _)| n.starts_with(prefix)));
    assert_eq!(children[0].1, A, "the master's node sorts first");
}

/// One ZooKeeper request (`xid`, `op`, the path) and its reply: (err, body).
async fn zk_call(s: &mut tokio::net::TcpStream, xid: i32, op: i32, path: &str) -> (i32, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut rec = Vec::new();
    rec.extend_from_slice(&xid.to_be_bytes());
    rec.extend_from_slice(&op.to_be_bytes());
    if !path.is_empty() {
        rec.extend_from_slice(&(path.len() as i32).to_be_bytes());
        rec.extend_from_slice(path.as_bytes());
        rec.push(0);
    }
    let mut frame = (rec.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&rec);
    s.write_all(&frame).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(i32::from_be_bytes(buf[0..4].try_into().unwrap()), xid);
    let err = i32::from_be_bytes(buf[12..16].try_into().unwrap());
    (err, buf[16..].to_vec())
}

#[tokio::test]
async fn zookeeper_lists_the_election_nodes_and_reads_their_service() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let p = std::sync::Arc::new(proxy(dir.path()));
    post(&p, "admin/status", Q, Value::Null);
    let parent = p.zk_nodes().keys().next().unwrap().clone();
    let addr = zk::serve(p.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // protocolVersion, lastZxidSeen, timeOut, sessionId, passwd (16 bytes)
    let mut connect = Vec::new();
    connect.extend_from_slice(&0i32.to_be_bytes());
    connect.extend_from_slice(&0i64.to_be_bytes());
    connect.extend_from_slice(&10_000i32.to_be_bytes());
    connect.extend_from_slice(&0i64.to_be_bytes());
    connect.extend_from_slice(&16i32.to_be_bytes());
    connect.extend_from_slice(&[0u8; 16]);
    let mut frame = (connect.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&connect);
    s.write_all(&frame).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).await.unwrap();
    assert_eq!(resp.len(), 4 + 4 + 8 + 4 + 16 + 1);
    let (err, body) = zk_call(&mut s, 1, 8, &parent).await;
    assert_eq!(err, 0);
    assert_eq!(i32::from_be_bytes(body[0..4].try_into().unwrap()), 3);
    let n = i32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
    let first = String::from_utf8(body[8..8 + n].to_vec()).unwrap();
    let (err, body) = zk_call(&mut s, 2, 4, &format!("{parent}/{first}")).await;
    assert_eq!(err, 0);
    assert_eq!(
        &body[4..4 + A.len()],
        A.as_bytes(),
        "the master's node first"
    );
    assert_eq!(zk_call(&mut s, 3, 8, "/nowhere").await.0, -101);
    assert_eq!(zk_call(&mut s, -2, 11, "").await.0, 0);
    assert_eq!(
        zk_call(&mut s, 4, 1, "/x").await.0,
        -6,
        "create: unimplemented"
    );
    assert_eq!(zk_call(&mut s, 5, -11, "").await.0, 0);
    assert_eq!(
        s.read(&mut [0u8; 1]).await.unwrap(),
        0,
        "closed after close"
    );
    // A frame over the limit closes the connection.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&(64i32 << 20).to_be_bytes()).await.unwrap();
    assert_eq!(s.read(&mut [0u8; 1]).await.unwrap_or(0), 0);
}
