//! Who may use the REST port: checked before any route runs.
//!
//! ```text
//! request ──> /pump/... and the node started without --test-hooks?  404, as if not served
//!         ──> credentials set (--user/--password) and no `Authorization: Basic` with them?
//!                                                                    401, WWW-Authenticate: Basic
//!         ──> the route
//! ```
//!
//! A real server answers its REST API only to its users; the node does the same with the user
//! and password its KV port requires (HTTP Basic, as the pump, couchbase-cli and the SDKs send
//! them). `GET /pools` stays open, as on Couchbase Server (a client learns there that the node
//! is one, before it logs in). The comparison takes the same time wherever the two differ.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::cluster::Cluster;

/// The REST port's user and password (never shown by `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct RestAuth {
    user: String,
    password: String,
}

impl std::fmt::Debug for RestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RestAuth({:?}, ***)", self.user)
    }
}

impl RestAuth {
    /// The credentials a request must carry.
    pub fn new(user: &str, password: &str) -> RestAuth {
        RestAuth {
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// Whether `value` (an `Authorization` header) is HTTP Basic with these credentials.
    pub fn allows(&self, value: Option<&[u8]>) -> bool {
        let Some(encoded) = value.and_then(|v| v.strip_prefix(b"Basic ".as_slice())) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii())
        else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        same_bytes(&decoded, expected.as_bytes())
    }
}

/// Equal contents, in a time that does not depend on where they differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// The middleware (see the module doc).
pub async fn guard(State(cluster): State<Arc<Cluster>>, req: Request, next: Next) -> Response {
    let (hooks, auth) = {
        let s = cluster.lock();
        (s.test_hooks, s.rest_auth.clone())
    };
    let path = req.uri().path();
    if path.starts_with("/pump/") && !hooks {
        return (
            StatusCode::NOT_FOUND,
            "Requested resource not found (test hooks are served only with --test-hooks).\r\n",
        )
            .into_response();
    }
    let open = path == "/pools" && req.method() == axum::http::Method::GET;
    if let Some(auth) = auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !open && !auth.allows(given) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"Couchbase Server\"")],
                "",
            )
                .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
        .into_bytes()
    }

    #[test]
    fn only_basic_auth_with_the_very_user_and_password_passes() {
        let a = RestAuth::new("admin", "p@ss:word");
        assert!(a.allows(Some(&basic("admin:p@ss:word"))));
        for wrong in [
            "admin:p@ss:wor",
            "admin:p@ss:word2",
            "Admin:p@ss:word",
            "admin",
            "",
        ] {
            assert!(!a.allows(Some(&basic(wrong))), "{wrong}");
        }
        assert!(!a.allows(None));
        assert!(!a.allows(Some(b"Bearer x")));
        assert!(!a.allows(Some(b"Basic !!notbase64")));
        assert!(!format!("{a:?}").contains("p@ss"));
    }
}
