//! The bucket's scopes and collections, as ns_server manages them, and their REST routes (the
//! ones the official SDKs' collection managers call).
//!
//! ```text
//! GET    /pools/default/buckets/{b}/scopes                      the manifest (JSON)
//! POST   /pools/default/buckets/{b}/scopes                      name=S            -> {"uid": "<hex>"}
//! DELETE /pools/default/buckets/{b}/scopes/{s}                                    -> {"uid"}
//! POST   /pools/default/buckets/{b}/scopes/{s}/collections      name=C[&maxTTL=N] -> {"uid"}
//! PATCH  /pools/default/buckets/{b}/scopes/{s}/collections/{c}  maxTTL=N          -> {"uid"}
//! DELETE /pools/default/buckets/{b}/scopes/{s}/collections/{c}                    -> {"uid"}
//! refusals, as ns_server words them (the SDKs read these sentences):
//!   400 Scope with name "S" already exists | Collection with name "C" in scope "S" already exists
//!       | a bad name | Deleting _default scope is not allowed
//!   404 Scope with name "S" is not found | Collection with name "C" in scope "S" is not found
//!       | Requested resource not found. (another bucket)
//! ```
//!
//! Each change makes a new manifest (uid + 1) that every node's bucket takes; each active
//! vbucket stores the change's system events at its next seqnos (a scope's drop drops each of
//! its collections first), and its replicas get them with the same seqnos.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pump_protocol::collections::{
    name_error, Collection, EventKind, Manifest, Scope, SystemEvent, DEFAULT_NAME, FIRST_USER_ID,
};
use serde_json::json;

use crate::cluster::Cluster;

/// A change to the bucket's collections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateScope(String),
    DropScope(String),
    CreateCollection {
        scope: String,
        name: String,
        max_ttl: Option<u32>,
    },
    UpdateCollection {
        scope: String,
        name: String,
        max_ttl: Option<u32>,
    },
    DropCollection {
        scope: String,
        name: String,
    },
}

/// Why a change was refused: the HTTP status and ns_server's sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

fn refused(status: u16, message: String) -> Refused {
    Refused { status, message }
}

fn scope_not_found(s: &str) -> Refused {
    refused(404, format!("Scope with name \"{s}\" is not found"))
}

/// The new manifest and the events of `change` on `m`, or why it is refused.
pub fn plan(m: &Manifest, change: &Change) -> Result<(Manifest, Vec<SystemEvent>), Refused> {
    let mut next = m.clone();
    next.uid = m.uid + 1;
    // Never an id used before: each change makes at most one, and the uid only grows.
    let new_id = u32::try_from(next.uid)
        .unwrap_or(u32::MAX)
        .saturating_add(FIRST_USER_ID - 1)
        .max(m.next_id());
    let event = |kind, scope, collection, name: Option<&str>, max_ttl| SystemEvent {
        kind,
        manifest_uid: next.uid,
        scope,
        collection,
        name: name.map(str::to_string),
        max_ttl,
    };
    let events = match change {
        Change::CreateScope(name) => {
            if let Some(e) = name_error(name, false) {
                return Err(refused(400, format!("Scope {e}")));
            }
            if m.scope(name).is_some() {
                return Err(refused(
                    400,
                    format!("Scope with name \"{name}\" already exists"),
                ));
            }
            let id = new_id;
            next.scopes.push(Scope {
                name: name.clone(),
                uid: id,
                collections: Vec::new(),
            });
            vec![event(EventKind::ScopeCreated, id, None, Some(name), None)]
        }
        Change::DropScope(name) => {
            if name == DEFAULT_NAME {
                return Err(refused(
                    400,
                    "Deleting _default scope is not allowed".into(),
                ));
            }
            let s = m.scope(name).ok_or_else(|| scope_not_found(name))?;
            next.scopes.retain(|x| x.uid != s.uid);
            let mut ev: Vec<SystemEvent> = s
                .collections
                .iter()
                .map(|c| event(EventKind::CollectionDropped, s.uid, Some(c.uid), None, None))
                .collect();
            ev.push(event(EventKind::ScopeDropped, s.uid, None, None, None));
            ev
        }
        Change::CreateCollection {
            scope,
            name,
            max_ttl,
        } => {
            if let Some(e) = name_error(name, false) {
                return Err(refused(400, format!("Collection {e}")));
            }
            let s = m.scope(scope).ok_or_else(|| scope_not_found(scope))?;
            if s.collections.iter().any(|c| &c.name == name) {
                return Err(refused(
                    400,
                    format!("Collection with name \"{name}\" in scope \"{scope}\" already exists"),
                ));
            }
            let id = new_id;
            let sid = s.uid;
            if let Some(ns) = next.scopes.iter_mut().find(|x| x.uid == sid) {
                ns.collections.push(Collection {
                    name: name.clone(),
                    uid: id,
                    max_ttl: *max_ttl,
                });
            }
            vec![event(
                EventKind::CollectionCreated,
                sid,
                Some(id),
                Some(name),
                *max_ttl,
            )]
        }
        Change::UpdateCollection {
            scope,
            name,
            max_ttl,
        } => {
            let s = m.scope(scope).ok_or_else(|| scope_not_found(scope))?;
            let c = s
                .collections
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| collection_not_found(scope, name))?;
            let (sid, cid) = (s.uid, c.uid);
            for ns in next.scopes.iter_mut().filter(|x| x.uid == sid) {
                for nc in ns.collections.iter_mut().filter(|x| x.uid == cid) {
                    nc.max_ttl = *max_ttl;
                }
            }
            // A modification goes out on DCP only to FlatBuffers consumers: none here.
            Vec::new()
        }
        Change::DropCollection { scope, name } => {
            let s = m.scope(scope).ok_or_else(|| scope_not_found(scope))?;
            let c = s
                .collections
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| collection_not_found(scope, name))?;
            let (sid, cid) = (s.uid, c.uid);
            for ns in next.scopes.iter_mut().filter(|x| x.uid == sid) {
                ns.collections.retain(|x| x.uid != cid);
            }
            vec![event(
                EventKind::CollectionDropped,
                sid,
                Some(cid),
                None,
                None,
            )]
        }
    };
    // Only the last event of a change carries the new manifest's uid (system_event.md).
    let mut events = events;
    let n = events.len();
    for e in events.iter_mut().take(n.saturating_sub(1)) {
        e.manifest_uid = m.uid;
    }
    Ok((next, events))
}

fn collection_not_found(scope: &str, name: &str) -> Refused {
    refused(
        404,
        format!("Collection with name \"{name}\" in scope \"{scope}\" is not found"),
    )
}

impl Cluster {
    /// The bucket's manifest (every node holds the same).
    pub fn manifest(&self) -> Arc<Manifest> {
        self.nodes[0].bucket.manifest()
    }

    /// Applies `change` on every node; returns the new manifest's uid, or why it is refused.
    pub fn change_collections(&self, change: &Change) -> Result<u64, Refused> {
        // One change at a time: the cluster state's lock orders them.
        let _order = self.lock();
        let (next, events) = plan(&self.manifest(), change)?;
        let uid = next.uid;
        for n in &self.nodes {
            n.bucket.set_manifest(next.clone(), &events);
        }
        Ok(uid)
    }
}

/// The collections routes, added to the REST router.
pub fn routes(r: Router<Arc<Cluster>>) -> Router<Arc<Cluster>> {
    let b = "/pools/default/buckets/{bucket}/scopes";
    r.route(b, get(get_scopes).post(create_scope))
        .route(&format!("{b}/{{scope}}"), axum::routing::delete(drop_scope))
        .route(
            &format!("{b}/{{scope}}/collections"),
            post(create_collection),
        )
        .route(
            &format!("{b}/{{scope}}/collections/{{collection}}"),
            axum::routing::delete(drop_collection).patch(update_collection),
        )
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(json!({"errors": {"_": self.message}}))).into_response()
    }
}

fn check_bucket(c: &Cluster, bucket: &str) -> Result<(), Refused> {
    if bucket != c.lock().bucket {
        return Err(refused(404, "Requested resource not found.".into()));
    }
    Ok(())
}

fn answer(c: &Cluster, bucket: &str, change: Change) -> Result<Json<serde_json::Value>, Refused> {
    check_bucket(c, bucket)?;
    let uid = c.change_collections(&change)?;
    Ok(Json(json!({"uid": format!("{uid:x}")})))
}

/// A form field of the body.
fn form_field(body: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// maxTTL as the SDKs send it: 0 the bucket's (none here), -1 never, N seconds.
fn max_ttl(body: &str) -> Result<Option<u32>, Refused> {
    match form_field(body, "maxTTL") {
        None => Ok(None),
        Some(t) => match t.parse::<i64>() {
            Ok(-1 | 0) => Ok(None),
            Ok(n) if n > 0 && n <= i64::from(i32::MAX) => Ok(Some(n as u32)),
            _ => Err(refused(
                400,
                format!("maxTTL {t:?} must be -1, 0 or seconds"),
            )),
        },
    }
}

async fn get_scopes(
    State(c): State<Arc<Cluster>>,
    Path(bucket): Path<String>,
) -> Result<Json<serde_json::Value>, Refused> {
    check_bucket(&c, &bucket)?;
    Ok(Json(c.manifest().to_json()))
}

async fn create_scope(
    State(c): State<Arc<Cluster>>,
    Path(bucket): Path<String>,
    body: String,
) -> Result<Json<serde_json::Value>, Refused> {
    let name = form_field(&body, "name").unwrap_or_default();
    answer(&c, &bucket, Change::CreateScope(name))
}

async fn drop_scope(
    State(c): State<Arc<Cluster>>,
    Path((bucket, scope)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, Refused> {
    answer(&c, &bucket, Change::DropScope(scope))
}

async fn create_collection(
    State(c): State<Arc<Cluster>>,
    Path((bucket, scope)): Path<(String, String)>,
    body: String,
) -> Result<Json<serde_json::Value>, Refused> {
    let name = form_field(&body, "name").unwrap_or_default();
    let max_ttl = max_ttl(&body)?;
    answer(
        &c,
        &bucket,
        Change::CreateCollection {
            scope,
            name,
            max_ttl,
        },
    )
}

async fn update_collection(
    State(c): State<Arc<Cluster>>,
    Path((bucket, scope, name)): Path<(String, String, String)>,
    body: String,
) -> Result<Json<serde_json::Value>, Refused> {
    let max_ttl = max_ttl(&body)?;
    answer(
        &c,
        &bucket,
        Change::UpdateCollection {
            scope,
            name,
            max_ttl,
        },
    )
}

async fn drop_collection(
    State(c): State<Arc<Cluster>>,
    Path((bucket, scope, name)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, Refused> {
    answer(&c, &bucket, Change::DropCollection { scope, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_makes_the_next_manifest_and_its_events() {
        let m = Manifest::default();
        let (m1, ev) = plan(&m, &Change::CreateScope("s1".into())).unwrap();
        assert_eq!(m1.uid, 1);
        assert_eq!(m1.scope("s1").unwrap().uid, 8);
        assert_eq!(ev[0].kind, EventKind::ScopeCreated);
        let (m2, ev) = plan(
            &m1,
            &Change::CreateCollection {
                scope: "s1".into(),
                name: "c1".into(),
                max_ttl: Some(60),
            },
        )
        .unwrap();
        assert_eq!(m2.id_of("s1", "c1"), Some(9));
        assert_eq!(
            (ev[0].scope, ev[0].collection, ev[0].max_ttl),
            (8, Some(9), Some(60))
        );
        let (m3, ev) = plan(&m2, &Change::DropScope("s1".into())).unwrap();
        assert!(m3.scope("s1").is_none());
        assert_eq!(
            ev.iter()
                .map(|e| (e.kind, e.manifest_uid))
                .collect::<Vec<_>>(),
            vec![
                (EventKind::CollectionDropped, 2),
                (EventKind::ScopeDropped, 3)
            ]
        );
        // A new scope or collection never takes an id used before.
        let (m4, _) = plan(&m3, &Change::CreateScope("s2".into())).unwrap();
        assert_eq!(m4.scope("s2").unwrap().uid, 11);
    }

    #[test]
    fn refusals_carry_ns_servers_sentences() {
        let (m, _) = plan(&Manifest::default(), &Change::CreateScope("s1".into())).unwrap();
        let cases = [
            (
                Change::CreateScope("s1".into()),
                400,
                "Scope with name \"s1\" already exists",
            ),
            (Change::CreateScope("_x".into()), 400, "must not start"),
            (Change::DropScope("_default".into()), 400, "not allowed"),
            (
                Change::DropScope("s9".into()),
                404,
                "Scope with name \"s9\" is not found",
            ),
            (
                Change::CreateCollection {
                    scope: "s9".into(),
                    name: "c".into(),
                    max_ttl: None,
                },
                404,
                "Scope with name \"s9\" is not found",
            ),
            (
                Change::DropCollection {
                    scope: "s1".into(),
                    name: "c".into(),
                },
                404,
                "Collection with name \"c\" in scope \"s1\" is not found",
            ),
        ];
        for (change, status, text) in cases {
            let r = plan(&m, &change).unwrap_err();
            assert_eq!(r.status, status, "{change:?}");
            assert!(r.message.contains(text), "{change:?}: {}", r.message);
        }
    }
}
