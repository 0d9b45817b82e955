//! REST: the JSON pump reads from a cluster (the bucket's vBucketServerMap), the reference
//! node's routes (what they parse from paths, queries and form bodies), and the reference SDS
//! proxy's JSON bodies.
//!
//! ```text
//! map       {"vBucketServerMap": {"serverList", "vBucketMap", "numReplicas", ...}} with
//!           indexes in and out of the server list, rows of any length, then the JSON text
//!           damaged by edits; parsed by VbucketMap::parse
//! node      a 2-node cluster (and a spare) on loopback; GET and POST on its routes with
//!           bucket names, queries and form or JSON bodies made of its field names and any
//!           values, through its router
//! sds       the SDS proxy over two volumes holding one base, answering as oio-sds 9 and as 7;
//!           its admin, reference, container and cache routes with JSON bodies made of its
//!           field names and any values, then damaged by edits
//! checks    no panic, every request answered within 10 s; a map accepted holds only server
//!           indexes that are in its server list
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use pump_client::VbucketMap;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::mutate::{apply, edits, Edit};

/// Any short text, a number as text, or a name the routes know.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,8}",
        "[ -~]{0,12}",
        any::<i64>().prop_map(|n| n.to_string()),
        Just("default".to_string()),
        Just("ns_1@127.0.0.1".to_string()),
        Just("replica".to_string()),
        Just("active".to_string()),
        Just("0,1,2,1023".to_string()),
        Just("127.0.0.1:6120".to_string()),
    ]
}

/// A JSON value of any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(word(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A bucket document with a map of `servers` and rows of indexes in -2..6.
fn map_doc() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(word(), 0..4),
        prop::collection::vec(prop::collection::vec(-2i64..6, 0..4), 0..20),
        any::<i64>(),
        prop_oneof![Just(json!("CRC")), json_value()],
        json_value(),
    )
        .prop_map(|(servers, rows, replicas, hash, extra)| {
            json!({
                "name": "default",
                "vBucketServerMap": {
                    "hashAlgorithm": hash,
                    "numReplicas": replicas,
                    "serverList": servers,
                    "vBucketMap": rows,
                    "extra": extra,
                }
            })
        })
}

/// One request to the node's routes.
#[derive(Debug, Clone)]
pub struct NodeRequest {
    post: bool,
    route: usize,
    bucket: String,
    query: Vec<(usize, String)>,
    body: Vec<(usize, String)>,
    json: bool,
}

const NODE_ROUTES: &[&str] = &[
    "/pools",
    "/pools/default",
    "/pools/default/buckets/{b}",
    "/controller/failOver",
    "/pump/faults",
    "/pools/default/buckets/{b}/vbucketsMissing",
    "/pools/default/buckets/{b}/replaceNode",
    "/pools/default/buckets/{b}/changeVbucketStates",
    "/pools/default/buckets/{b}/updateVbucketMap",
    "/pools/default/buckets/{b}/controller/startRecovery",
    "/pools/default/buckets/{b}/controller/commitVBucket",
    "/pools/default/buckets/{b}/controller/stopRecovery",
    "/{b}",
];

const NODE_FIELDS: &[&str] = &[
    "otpNode",
    "route",
    "status",
    "add",
    "remove",
    "vbuckets",
    "vbucket",
    "vBucket",
    "state",
    "recoveryUuid",
    "uuid",
    "x",
];

fn node_request() -> impl Strategy<Value = NodeRequest> {
    (
        any::<bool>(),
        0..NODE_ROUTES.len(),
        prop_oneof![Just("default".to_string()), "[a-z%0-9.]{0,8}"],
        prop::collection::vec((0..NODE_FIELDS.len(), word()), 0..3),
        prop::collection::vec((0..NODE_FIELDS.len(), word()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(post, route, bucket, query, body, json)| NodeRequest {
            post,
            route,
            bucket,
            query,
            body,
            json,
        })
}

fn form(pairs: &[(usize, String)], names: &[&str]) -> String {
    let mut s = form_serializer();
    for (k, v) in pairs {
        s.append_pair(names[k % names.len()], v);
    }
    s.finish()
}

fn form_serializer() -> form_urlencoded::Serializer<'static, String> {
    form_urlencoded::Serializer::new(String::new())
}

/// One request to the SDS proxy.
#[derive(Debug, Clone)]
pub struct SdsRequest {
    v7: bool,
    route: usize,
    query: Vec<(usize, String)>,
    body: Value,
    edits: Vec<Edit>,
}

const SDS_ROUTES: &[(&str, &str)] = &[
    ("POST", "admin/ping"),
    ("POST", "admin/has"),
    ("POST", "admin/status"),
    ("POST", "admin/sync"),
    ("POST", "admin/leave"),
    ("POST", "admin/debug"),
    ("POST", "admin/freeze"),
    ("POST", "admin/enable"),
    ("POST", "admin/disable"),
    ("POST", "admin/set_properties"),
    ("POST", "admin/get_properties"),
    ("POST", "admin/copy"),
    ("POST", "admin/nothing"),
    ("GET", "reference/show"),
    ("POST", "reference/unlink"),
    ("POST", "reference/force"),
    ("POST", "container/set_properties"),
    ("GET", "conscience/list"),
];

const SDS_FIELDS: &[&str] = &["acct", "ref", "cid", "type", "service_id", "replace", "seq"];

fn sds_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        (json_value(), json_value()).prop_map(|(p, s)| json!({"properties": p, "system": s})),
        (word(), word()).prop_map(|(p, v)| json!({"system": {"sys.peers": p, "sys.status": v}})),
        (word(), word()).prop_map(|(to, from)| json!({"to": to, "from": from})),
        (json_value(), word(), word(), json_value()).prop_map(
            |(seq, t, host, args)| json!({"seq": seq, "type": t, "host": host, "args": args})
        ),
    ]
}

fn sds_request() -> impl Strategy<Value = SdsRequest> {
    (
        any::<bool>(),
        0..SDS_ROUTES.len(),
        prop::collection::vec((0..SDS_FIELDS.len(), word()), 0..4),
        sds_body(),
        edits(3),
    )
        .prop_map(|(v7, route, query, body, edits)| SdsRequest {
            v7,
            route,
            query,
            body,
            edits,
        })
}

/// Input: a map document (damaged by edits), a request to the node, or one to the proxy.
#[derive(Debug, Clone)]
pub enum Input {
    Map(Value, Vec<Edit>),
    Node(NodeRequest),
    Sds(SdsRequest),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        2 => (map_doc(), edits(4)).prop_map(|(d, e)| Input::Map(d, e)),
        2 => node_request().prop_map(Input::Node),
        2 => sds_request().prop_map(Input::Sds),
    ]
}

/// The peers the run set up: a cluster and an SDS proxy over two volumes.
struct Peers {
    node: axum::Router,
    cluster: Arc<pump_node::Cluster>,
    /// The proxy answering as oio-sds 9, and as 7.
    sds: [Arc<pump_node::sds::SdsProxy>; 2],
    base: String,
    _volumes: tempfile::TempDir,
}

fn peers() -> Result<Peers, String> {
    let volumes = tempfile::Builder::new()
        .prefix("pump-fuzz-sds-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let spec = pump_meta2::generate::BaseSpec {
        ns: "OPENIO".into(),
        account: "acct".into(),
        container: "fuzz".into(),
        peers: vec!["127.0.0.1:6120".into(), "127.0.0.2:6120".into()],
        aliases: 5,
    };
    let mut services = Vec::new();
    for (i, a) in spec.peers.iter().enumerate() {
        let v = volumes.path().join(format!("v{i}"));
        pump_meta2::generate::write_base(&v, &spec).map_err(|e| e.to_string())?;
        services.push(pump_node::sds::Meta2Service {
            address: a.clone(),
            volume: v,
        });
    }
    let v9 =
        pump_node::sds::SdsProxy::new(pump_node::sds::SdsConfig::new("OPENIO", services.clone()))?;
    let v7 = pump_node::sds::SdsProxy::new(pump_node::sds::SdsConfig {
        version: pump_node::sds::OioVersion::V7,
        ..pump_node::sds::SdsConfig::new("OPENIO", services)
    })?;
    let cluster = crate::runtime()
        .block_on(pump_node::Cluster::start(pump_node::ClusterConfig {
            nodes: 2,
            replicas: 1,
            node: pump_node::NodeConfig {
                vbuckets: 16,
                ..Default::default()
            },
            kv_port: 0,
            rest_port: 0,
            spares: 1,
            recovery_api: Default::default(),
            tls: None,
        }))
        .map_err(|e| e.to_string())?;
    Ok(Peers {
        node: pump_node::rest::router(cluster.clone()),
        cluster,
        sds: [Arc::new(v9), Arc::new(v7)],
        base: spec.container,
        _volumes: volumes,
    })
}

fn check(p: &Peers, input: &Input) -> Result<(), String> {
    match input {
        Input::Map(doc, e) => {
            let text = apply(doc.to_string().as_bytes(), e, None);
            let Ok(json) = serde_json::from_slice::<Value>(&text) else {
                return Ok(());
            };
            if let Ok(m) = VbucketMap::parse(&json, "http://fuzz/pools/default/buckets/default") {
                let n = m.num_vbuckets();
                for vb in 0..(n + 2).min(u16::MAX as usize) as u16 {
                    if let Some(i) = m.active(vb) {
                        if i >= m.servers.len() {
                            return Err(format!(
                                "vbucket {vb} on server {i} of {}",
                                m.servers.len()
                            ));
                        }
                    }
                    let _ = m.active_server(vb);
                }
                let _ = m.by_active_server(0..(n as u16).saturating_add(2));
            }
        }
        Input::Node(r) => {
            let path = NODE_ROUTES[r.route].replace("{b}", &r.bucket);
            let query = form(&r.query, NODE_FIELDS);
            let uri = if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            };
            let body = if r.json {
                let m: serde_json::Map<String, Value> = r
                    .body
                    .iter()
                    .map(|(k, v)| (NODE_FIELDS[k % NODE_FIELDS.len()].to_string(), json!(v)))
                    .collect();
                Value::Object(m).to_string()
            } else {
                form(&r.body, NODE_FIELDS)
            };
            let Ok(req) = Request::builder()
                .method(if r.post { "POST" } else { "GET" })
                .uri(&uri)
                .header(
                    "content-type",
                    if r.json {
                        "application/json"
                    } else {
                        "application/x-www-form-urlencoded"
                    },
                )
                .body(Body::from(body))
            else {
                return Ok(());
            };
            let node = p.node.clone();
            crate::runtime().block_on(async move {
                let answer = tokio::time::timeout(Duration::from_secs(10), async {
                    let resp = node.oneshot(req).await.map_err(|e| e.to_string())?;
                    axum::body::to_bytes(resp.into_body(), 16 << 20)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await;
                match answer {
                    Err(_) => Err(format!("{uri}: no answer within 10 s")),
                    Ok(_) => Ok(()),
                }
            })?;
        }
        Input::Sds(r) => {
            let (method, route) = SDS_ROUTES[r.route];
            let mut q = form_serializer();
            q.append_pair("acct", "acct").append_pair("ref", &p.base);
            for (k, v) in &r.query {
                q.append_pair(SDS_FIELDS[k % SDS_FIELDS.len()], v);
            }
            let body = apply(r.body.to_string().as_bytes(), &r.edits, None);
            let reply = p.sds[usize::from(r.v7)].handle(
                method,
                &format!("/v3.0/OPENIO/{route}"),
                &q.finish(),
                &body,
            );
            let _ = reply.status;
        }
    }
    Ok(())
}

/// The target.
pub fn run(runner: &mut TestRunner) -> Result<(), String> {
    let p = peers()?;
    let r = crate::check_all(runner, input(), |i| check(&p, i));
    let _ = crate::runtime().block_on(p.cluster.shutdown());
    r
}
