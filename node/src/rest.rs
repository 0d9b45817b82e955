//! The REST port: the cluster map as Couchbase's REST API shows it.
//!
//! ```text
//! GET  /pools                              {"pools": [{"name": "default", "uri": "/pools/default"}]}
//! GET  /pools/default                      {"name": "default", "nodes": [...]}
//! GET  /pools/default/buckets/{bucket}     {"name", "nodeLocator": "vbucket", "vBucketServerMap", "nodes"}
//! POST /controller/failOver                form otpNode=n_1@127.0.0.1
//! ```
//!
//! Every node's REST port serves the same router over the one shared [`Cluster`]; later routes
//! (the recovery API) are added to [`router`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cluster::{Cluster, ClusterState};

/// The routes, over the shared cluster state.
pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/pools", get(pools))
        .route("/pools/default", get(pool_default))
        .route("/pools/default/buckets/{bucket}", get(bucket))
        .route("/controller/failOver", post(failover))
        .with_state(cluster)
}

/// Binds `addr` and serves the router in the background; returns the bound address.
pub async fn serve(cluster: Arc<Cluster>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(cluster);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("REST {bound}: {e}");
        }
    });
    Ok(bound)
}

fn nodes_json(s: &ClusterState) -> Vec<Value> {
    s.nodes
        .iter()
        .map(|n| {
            json!({
                "hostname": n.rest.to_string(),
                "otpNode": n.otp,
                "ports": {"direct": n.kv.port()},
                "status": if n.failed { "unhealthy" } else { "healthy" },
                "clusterMembership": if n.failed { "inactiveFailed" } else { "active" },
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
        "nodes": nodes_json(&s),
        "buckets": {"uri": "/pools/default/buckets"},
    }))
}

async fn bucket(
    State(c): State<Arc<Cluster>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let s = c.lock();
    if name != s.bucket {
        return Err((
            StatusCode::NOT_FOUND,
            format!("Requested resource not found: bucket {name}"),
        ));
    }
    Ok(Json(json!({
        "name": s.bucket,
        "bucketType": "membase",
        "nodeLocator": "vbucket",
        "vBucketServerMap": {
            "hashAlgorithm": "CRC",
            "numReplicas": s.replicas,
            "serverList": s.nodes.iter().map(|n| n.kv.to_string()).collect::<Vec<_>>(),
            "vBucketMap": s.map,
        },
        "nodes": nodes_json(&s),
    })))
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
    match c.failover(i) {
        Ok(()) => (StatusCode::OK, String::new()),
        Err(e) => (StatusCode::BAD_REQUEST, e),
    }
}
