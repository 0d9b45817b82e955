//! The REST port: the cluster map as Couchbase's REST API shows it.
//!
//! ```text
//! GET  /pools                              {"pools": [{"name": "default", "uri": "/pools/default"}]}
//! GET  /pools/default                      {"name": "default", "nodes": [...]}
//! GET  /pools/default/buckets              [the bucket, as below]
//! GET  /pools/default/buckets/{bucket}     {"name", "uuid", "bucketType", "conflictResolutionType",
//!                                           "nodeLocator": "vbucket",
//!                                           "bucketCapabilities", "vBucketServerMap", "nodes"}
//! GET  /pools/default/b/{bucket}           the terse config a node serves over KV, $HOST made
//!                                          the host the client asked for (Host header)
//! GET  /pools/default/nodeServices         the global config: rev and nodesExt
//! GET  /pools/default/buckets/{b}/ddocs    {"rows": []}: no design documents
//! GET  /pools/default/buckets/{b}/stats/{s} curr_items, vb_active_resident_items_ratio per node
//! POST /controller/failOver                form otpNode=n_1@127.0.0.1
//! GET/POST/PATCH/DELETE .../buckets/{b}/scopes/...  scopes and collections (crate::collections)
//! anything else                            404, text/plain, as ns_server answers
//!
//! the recovery design, under /pools/default/buckets/{bucket}/ (see crate::recovery)
//! GET  vbucketsMissing                     [5, 8, ...]
//! POST replaceNode                         add=NODE&remove=NODE          202 | 401 402 403
//! POST changeVbucketStates                 vbucket=5&vbucket=8&state=S   202 | 410 411
//! POST updateVbucketMap                                                  202 | 410
//! Couchbase Server's shipped form, under /pools/default/buckets/{bucket}/controller/
//! POST startRecovery                       {"code":"ok","recoveryMap":[..],"uuid"} | 400 404
//! POST commitVBucket?recovery_uuid=U       vbucket=N          200 | 400 402 404 406
//! POST stopRecovery?recovery_uuid=U                           200 | 400 406
//!
//! test hooks, only with --test-hooks (404 otherwise)
//! POST /pump/faults                        route=replaceNode&status=403: the next call answers it
//! POST /pump/rollback                      vbucket=5&seqno=12: the vbucket rolls back there on its
//!                                          active node (a new failover branch)
//! ```
//!
//! With credentials set (`--user/--password`), every route but `GET /pools` needs them as HTTP
//! Basic (401 otherwise): see [`crate::rest_guard`].
//!
//! Every node's REST port serves the same router over the one shared [`Cluster`]. A node started
//! with one recovery dialect answers 404 to the other's routes, as such a server would.

use std::net::SocketAddr;
use std::sync::Arc;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cluster::{Cluster, ClusterState};
use crate::recovery::{RecoveryApi, Refusal};

/// The routes, over the shared cluster state, behind [`crate::rest_guard`].
pub fn router(cluster: Arc<Cluster>) -> Router {
    let guard = axum::middleware::from_fn_with_state(cluster.clone(), crate::rest_guard::guard);
    routes(cluster).layer(guard)
}

fn routes(cluster: Arc<Cluster>) -> Router {
    let api = cluster.lock().recovery_api;
    let mut r = Router::new()
        .route("/pools", get(pools))
        .route("/pools/default", get(pool_default))
        .route("/pools/default/buckets", get(buckets))
        .route("/pools/default/buckets/{bucket}", get(bucket))
        .route("/pools/default/b/{bucket}", get(terse_bucket))
        .route("/pools/default/nodeServices", get(node_services))
        .route("/pools/default/buckets/{bucket}/ddocs", get(ddocs))
        .route(
            "/pools/default/buckets/{bucket}/stats/{stat}",
            get(bucket_stat),
        )
        .route("/controller/failOver", post(failover))
        .route("/pump/faults", post(inject_fault))
        .route("/pump/rollback", post(roll_back));
    r = crate::collections::routes(r);
    if api != RecoveryApi::Shipped {
        let b = "/pools/default/buckets/{bucket}";
        r = r
            .route(&format!("{b}/vbucketsMissing"), get(vbuckets_missing))
            .route(&format!("{b}/replaceNode"), post(replace_node))
            .route(
                &format!("{b}/changeVbucketStates"),
                post(change_vbucket_states),
            )
            .route(&format!("{b}/updateVbucketMap"), post(update_vbucket_map));
    }
    if api != RecoveryApi::Design {
        let c = "/pools/default/buckets/{bucket}/controller";
        r = r
            .route(&format!("{c}/startRecovery"), post(start_recovery))
            .route(&format!("{c}/commitVBucket"), post(commit_vbucket))
            .route(&format!("{c}/stopRecovery"), post(stop_recovery));
    }
    r.fallback(not_found).with_state(cluster)
}

/// What ns_server answers a path it does not serve.
async fn not_found() -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    &'static str,
) {
    (
        StatusCode::NOT_FOUND,
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        "Requested resource not found.\r\n",
    )
}

/// The host a client asked for (the Host header without its port), for `$HOST`.
fn requested_host(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host.to_string(),
            _ => h.to_string(),
        })
        .unwrap_or_else(|| "127.0.0.1".into())
}

fn unknown_bucket(name: &str) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!("Requested resource not found: bucket {name}"),
    )
}

/// Binds `addr` and serves the router in the background; returns the bound address.
pub async fn serve(cluster: Arc<Cluster>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    serve_app(router(cluster), addr, "REST").await
}

/// Binds `addr` and serves the router over TLS (HTTPS) in the background; returns the bound
/// address. Each connection's handshake is bounded; a failed one is dropped.
pub async fn serve_tls(
    cluster: Arc<Cluster>,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(cluster);
    tokio::spawn(async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("HTTPS {bound}: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let tls =
                    match tokio::time::timeout(crate::kv::HANDSHAKE_TIMEOUT, acceptor.accept(sock))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!("HTTPS {peer}: handshake: {e}"),
                        Err(_) => return tracing::debug!("HTTPS {peer}: handshake timed out"),
                    };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let io = hyper_util::rt::TokioIo::new(tls);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("HTTPS {peer}: {e}");
                }
            });
        }
    });
    Ok(bound)
}

/// Binds `addr` and serves `app` in the background (errors logged under `name`); returns the
/// bound address. Shared by the REST port and the SDS proxy.
pub async fn serve_app(app: Router, addr: SocketAddr, name: &str) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{name} port {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let name = name.to_string();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("{name} {bound}: {e}");
        }
    });
    Ok(bound)
}

fn nodes_json(c: &Cluster, s: &ClusterState) -> Vec<Value> {
    s.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut ports = json!({"direct": n.kv.port()});
            if let Some(t) = n.rest_tls {
                ports["httpsMgmt"] = json!(t.port());
            }
            json!({
                "hostname": n.rest.to_string(),
                "otpNode": n.otp,
                "ports": ports,
                "services": ["kv"],
                "version": crate::config::SERVER_VERSION,
                "clusterCompatibility": crate::config::CLUSTER_COMPATIBILITY,
                "status": if c.nodes[i].is_halted() { "unhealthy" } else { "healthy" },
                "clusterMembership": n.membership.as_rest(),
            })
        })
        .collect()
}

async fn pools() -> Json<Value> {
    Json(json!({"pools": [{"name": "default", "uri": "/pools/default"}]}))
}

async fn pool_default(State(c): State<Arc<Cluster>>) -> Json<Value> {
    let s = c.lock();
    Json(json!({
        "name": "default",
        "nodes": nodes_json(&c, &s),
        "buckets": {"uri": "/pools/default/buckets"},
    }))
}

fn bucket_json(c: &Cluster, s: &ClusterState) -> Value {
    json!({
        "name": s.bucket,
        "uuid": crate::config::bucket_uuid(s),
        "bucketType": "membase",
        "conflictResolutionType": s.conflict_resolution.as_str(),
        "nodeLocator": "vbucket",
        "bucketCapabilitiesVer": "",
        "bucketCapabilities": crate::config::BUCKET_CAPABILITIES,
        "vBucketServerMap": {
            "hashAlgorithm": "CRC",
            "numReplicas": s.replicas,
            "serverList": s.nodes.iter().map(|n| n.kv.to_string()).collect::<Vec<_>>(),
            "vBucketMap": s.map,
        },
        "rev": s.revision,
        "nodes": nodes_json(c, s),
    })
}

async fn buckets(State(c): State<Arc<Cluster>>) -> Json<Value> {
    let s = c.lock();
    Json(json!([bucket_json(&c, &s)]))
}

async fn bucket(
    State(c): State<Arc<Cluster>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let s = c.lock();
    if name != s.bucket {
        return Err(unknown_bucket(&name));
    }
    Ok(Json(bucket_json(&c, &s)))
}

/// A config of crate::config with `$HOST` made the host the client asked for.
fn with_host(v: Value, headers: &axum::http::HeaderMap) -> Result<Response, (StatusCode, String)> {
    let text = v
        .to_string()
        .replace(crate::config::HOST, &requested_host(headers));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response())
}

async fn terse_bucket(
    State(c): State<Arc<Cluster>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, (StatusCode, String)> {
    let s = c.lock();
    if name != s.bucket {
        return Err(unknown_bucket(&name));
    }
    with_host(crate::config::bucket_config(&s, usize::MAX, true), &headers)
}

async fn node_services(
    State(c): State<Arc<Cluster>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, (StatusCode, String)> {
    let s = c.lock();
    with_host(
        crate::config::bucket_config(&s, usize::MAX, false),
        &headers,
    )
}

async fn ddocs(
    State(c): State<Arc<Cluster>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, (StatusCode, String)> {
    if name != c.lock().bucket {
        return Err(unknown_bucket(&name));
    }
    Ok(Json(json!({"rows": []})))
}

/// One stat's samples per node (`hostname` -> [value]), as cbtransfer reads its item count.
async fn bucket_stat(
    State(c): State<Arc<Cluster>>,
    Path((name, stat)): Path<(String, String)>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let s = c.lock();
    if name != s.bucket {
        return Err(unknown_bucket(&name));
    }
    let mut per_node = serde_json::Map::new();
    for (i, n) in s.nodes.iter().enumerate() {
        let v = match stat.as_str() {
            "curr_items" => c.nodes[i].bucket.active_item_count() as f64,
            "vb_active_resident_items_ratio" => 100.0,
            _ => return Err(unknown_bucket(&format!("{name} stat {stat}"))),
        };
        per_node.insert(n.rest.to_string(), json!([v]));
    }
    Ok(Json(
        json!({"samplesCount": 1, "op": {}, "nodeStats": per_node}),
    ))
}

#[derive(Debug, Deserialize)]
struct FailoverForm {
    #[serde(rename = "otpNode")]
    otp_node: String,
}

async fn failover(
    State(c): State<Arc<Cluster>>,
    Form(f): Form<FailoverForm>,
) -> (StatusCode, String) {
    let Some(i) = c.find(&f.otp_node) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("Unknown server given: {}", f.otp_node),
        );
    };
    match c.failover(i).await {
        Ok(()) => (StatusCode::OK, String::new()),
        Err(e) => (StatusCode::BAD_REQUEST, e),
    }
}

/// An answer of the recovery API: the JSON or status, or the refusal's status and sentence.
type Answer = Result<Response, Refusal>;

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, self.message).into_response()
    }
}

/// 404 for another bucket; the injected status, if the test hook queued one for `route`.
fn precheck(c: &Cluster, bucket: &str, route: &str) -> Result<(), Refusal> {
    if bucket != c.lock().bucket {
        return Err(Refusal {
            status: 404,
            message: format!("Requested resource not found: bucket {bucket}"),
        });
    }
    match c.take_fault(route) {
        Some(status) => Err(Refusal {
            status,
            message: format!("{route}: status {status} injected by the test hook"),
        }),
        None => Ok(()),
    }
}

/// The pairs of an `application/x-www-form-urlencoded` body, repeated keys kept in order.
fn form_pairs(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn vbuckets_missing(State(c): State<Arc<Cluster>>, Path(b): Path<String>) -> Answer {
    precheck(&c, &b, "vbucketsMissing")?;
    Ok(Json(c.missing_vbuckets()).into_response())
}

async fn replace_node(
    State(c): State<Arc<Cluster>>,
    Path(b): Path<String>,
    body: String,
) -> Answer {
    precheck(&c, &b, "replaceNode")?;
    let f = form_pairs(&body);
    c.replace_node(first(&f, "add"), first(&f, "remove"))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn change_vbucket_states(
    State(c): State<Arc<Cluster>>,
    Path(b): Path<String>,
    body: String,
) -> Answer {
    precheck(&c, &b, "changeVbucketStates")?;
    let f = form_pairs(&body);
    let vbs: Vec<String> = f
        .iter()
        .filter(|(k, _)| k == "vbucket")
        .map(|(_, v)| v.clone())
        .collect();
    c.change_vbucket_states(&vbs, first(&f, "state").unwrap_or(""))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn update_vbucket_map(State(c): State<Arc<Cluster>>, Path(b): Path<String>) -> Answer {
    precheck(&c, &b, "updateVbucketMap")?;
    c.update_vbucket_map()?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn start_recovery(State(c): State<Arc<Cluster>>, Path(b): Path<String>) -> Answer {
    precheck(&c, &b, "startRecovery")?;
    Ok(Json(c.start_recovery()?).into_response())
}

async fn commit_vbucket(
    State(c): State<Arc<Cluster>>,
    Path(b): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Answer {
    precheck(&c, &b, "commitVBucket")?;
    let f = form_pairs(&body);
    let uuid = q.get("recovery_uuid").map(String::as_str);
    Ok(Json(c.commit_vbucket(uuid, first(&f, "vbucket"))?).into_response())
}

async fn stop_recovery(
    State(c): State<Arc<Cluster>>,
    Path(b): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    precheck(&c, &b, "stopRecovery")?;
    let uuid = q.get("recovery_uuid").map(String::as_str);
    Ok(Json(c.stop_recovery(uuid)?).into_response())
}

#[derive(Debug, Deserialize)]
struct FaultForm {
    route: String,
    status: u16,
}

/// Test hook: queue `status` as the next answer of `route`.
#[derive(Deserialize)]
struct RollbackForm {
    vbucket: u16,
    seqno: u64,
}

async fn roll_back(State(c): State<Arc<Cluster>>, Form(f): Form<RollbackForm>) -> Response {
    match c.roll_back(f.vbucket, f.seqno) {
        Ok(uuid) => {
            Json(json!({"vbucket": f.vbucket, "seqno": f.seqno, "uuid": uuid})).into_response()
        }
        Err(e) if e.contains("--test-hooks") => (StatusCode::FORBIDDEN, e).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

async fn inject_fault(State(c): State<Arc<Cluster>>, Form(f): Form<FaultForm>) -> StatusCode {
    c.inject_fault(&f.route, f.status);
    StatusCode::OK
}
