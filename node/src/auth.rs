//! Who may use the node, and the server side of SASL.
//!
//! ```text
//! SASL_LIST_MECHS -> "SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN"
//! SASL_AUTH PLAIN              -> SUCCESS "Authenticated" | AUTH_ERROR
//! SASL_AUTH SCRAM-SHAxxx first -> AUTH_CONTINUE server-first | AUTH_ERROR (malformed)
//! SASL_STEP SCRAM-SHAxxx final -> SUCCESS server-final       | AUTH_ERROR (bad nonce or proof)
//! ```
//!
//! The node keeps one user. Its password is hashed per SCRAM mechanism once, at start, with a
//! random salt ([`pump_protocol::sasl::DEFAULT_ITERATIONS`] rounds), as a server keeps a user's
//! SCRAM secrets; PLAIN compares the password itself. A wrong user fails like a wrong password.

use pump_protocol::sasl::{Mechanism, ScramSecret, ScramServer, DEFAULT_ITERATIONS};
use pump_protocol::Status;
use rand::Rng;

/// The mechanisms the node lists, strongest first.
pub const MECHANISMS: &str = "SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN";

/// The node's user.
pub struct Users {
    user: String,
    password: String,
    secrets: Vec<(Mechanism, ScramSecret)>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({:?}, ***)", self.user)
    }
}

impl Users {
    /// One user; its SCRAM secrets derived with `iterations` rounds.
    pub fn with_iterations(user: &str, password: &str, iterations: u32) -> Users {
        let mut rng = rand::rng();
        let secrets = [
            Mechanism::ScramSha512,
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
        ]
        .into_iter()
        .map(|m| {
            let salt: [u8; 16] = rng.random();
            (m, ScramSecret::derive(m, password, &salt, iterations))
        })
        .collect();
        Users {
            user: user.to_string(),
            password: password.to_string(),
            secrets,
        }
    }

    /// One user, with Couchbase's iteration count.
    pub fn new(user: &str, password: &str) -> Users {
        Users::with_iterations(user, password, DEFAULT_ITERATIONS)
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn secret(&self, m: Mechanism) -> &ScramSecret {
        // Every SCRAM mechanism has its secret; PLAIN never asks.
        let i = self.secrets.iter().position(|(x, _)| *x == m).unwrap_or(0);
        &self.secrets[i].1
    }
}

/// Where a connection's SASL exchange stands.
#[derive(Debug, Default)]
pub enum Exchange {
    #[default]
    None,
    /// A SCRAM exchange waiting for the client's final message.
    Scram(ScramServer),
}

/// The answer to a SASL_AUTH or SASL_STEP.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Authenticated as this user; the value to send.
    Done(String, Vec<u8>),
    /// AUTH_CONTINUE with this value.
    Continue(Vec<u8>),
    /// AUTH_ERROR (or EINVAL) with a reason for the log (never a password).
    Refused(Status, String),
}

fn nonce() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SASL_AUTH with mechanism `mech` and `value`.
pub fn auth(users: &Users, exchange: &mut Exchange, mech: &[u8], value: &[u8]) -> Answer {
    *exchange = Exchange::None;
    let Some(m) = std::str::from_utf8(mech)
        .ok()
        .and_then(Mechanism::from_name)
    else {
        return Answer::Refused(
            Status::AuthError,
            format!("unknown mechanism {:?}", String::from_utf8_lossy(mech)),
        );
    };
    if m == Mechanism::Plain {
        return match pump_protocol::sasl::parse_plain(value) {
            Some((u, p)) if u == users.user && p == users.password => {
                Answer::Done(u, b"Authenticated".to_vec())
            }
            Some((u, _)) => Answer::Refused(
                Status::AuthError,
                format!("PLAIN as {u:?}: wrong user or password"),
            ),
            None => Answer::Refused(Status::AuthError, "PLAIN: malformed value".into()),
        };
    }
    match ScramServer::start(m, value, users.secret(m), &nonce()) {
        Ok((server, first)) => {
            *exchange = Exchange::Scram(server);
            Answer::Continue(first.into_bytes())
        }
        Err(e) => Answer::Refused(Status::AuthError, format!("{m}: {e}")),
    }
}

/// SASL_STEP with `value`.
pub fn step(users: &Users, exchange: &mut Exchange, mech: &[u8], value: &[u8]) -> Answer {
    let Exchange::Scram(server) = std::mem::take(exchange) else {
        return Answer::Refused(Status::AuthError, "SASL_STEP without a SASL_AUTH".into());
    };
    if mech != server.mechanism().name().as_bytes() {
        return Answer::Refused(
            Status::AuthError,
            format!(
                "SASL_STEP for {:?} in a {} exchange",
                String::from_utf8_lossy(mech),
                server.mechanism()
            ),
        );
    }
    let secret = (server.user() == users.user).then(|| users.secret(server.mechanism()));
    match server.finish(value, secret) {
        Ok(last) => Answer::Done(server.user().to_string(), last.into_bytes()),
        Err(e) => Answer::Refused(
            Status::AuthError,
            format!("{} as {:?}: {e}", server.mechanism(), server.user()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump_protocol::sasl::ScramClient;

    #[test]
    fn scram_and_plain_let_in_the_right_password_only() {
        let users = Users::with_iterations("U", "P", 16);
        for m in [
            Mechanism::ScramSha512,
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
        ] {
            for (password, ok) in [("P", true), ("X", false)] {
                let mut ex = Exchange::None;
                let mut c = ScramClient::new(m, "U", password, "cnonce");
                let Answer::Continue(first) = auth(
                    &users,
                    &mut ex,
                    m.name().as_bytes(),
                    c.first_message().as_bytes(),
                ) else {
                    panic!("{m}: no AUTH_CONTINUE")
                };
                let fin = c.final_message(&first).unwrap();
                match step(&users, &mut ex, m.name().as_bytes(), fin.as_bytes()) {
                    Answer::Done(u, v) => {
                        assert!(ok, "{m} let in a wrong password");
                        assert_eq!(u, "U");
                        c.verify_final(&v).unwrap();
                    }
                    Answer::Refused(s, why) => {
                        assert!(!ok, "{m}: {why}");
                        assert_eq!(s, Status::AuthError);
                        assert!(!why.contains('X'.to_string().as_str()) || why.contains("SCRAM"));
                    }
                    a => panic!("{a:?}"),
                }
            }
        }
        let mut ex = Exchange::None;
        assert!(matches!(
            auth(&users, &mut ex, b"PLAIN", b"\0U\0P"),
            Answer::Done(..)
        ));
        assert!(matches!(
            auth(&users, &mut ex, b"PLAIN", b"\0U\0Q"),
            Answer::Refused(..)
        ));
        assert!(matches!(
            auth(&users, &mut ex, b"CRAM-MD5", b""),
            Answer::Refused(..)
        ));
        assert!(matches!(
            step(&users, &mut ex, b"SCRAM-SHA1", b"c=biws"),
            Answer::Refused(..)
        ));
    }
}
