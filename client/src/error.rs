//! The client crate's error type: every message names the peer it is about.

use pump_protocol::{ProtocolError, Status};
use thiserror::Error;

/// What went wrong talking to a peer.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Could not connect, or the socket failed.
    #[error("{peer}: {what}: {source}")]
    Io {
        peer: String,
        what: String,
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{peer}: no answer within {secs:.1}s while {what}")]
    Timeout {
        peer: String,
        what: String,
        secs: f64,
    },
    /// The peer closed the connection.
    #[error("{peer}: connection closed by the peer while {what}")]
    Closed { peer: String, what: String },
    /// The peer sent bytes the protocol does not allow.
    #[error("{peer}: {source}")]
    Protocol { peer: String, source: ProtocolError },
    /// The peer answered a request with an error status.
    #[error("{peer}: {what} failed: {status}")]
    Status {
        peer: String,
        what: String,
        status: Status,
    },
    /// The peer answered something other than what the protocol says.
    #[error("{peer}: {message}")]
    Unexpected { peer: String, message: String },
    /// A REST call failed.
    #[error("{url}: {message}")]
    Rest { url: String, message: String },
    /// The server refused the credentials: retrying will not help.
    #[error("{peer}: authentication as {user:?} refused: {reason}")]
    Auth {
        peer: String,
        user: String,
        reason: String,
    },
    /// TLS could not be set up (a certificate file, a handshake), or the server's certificate
    /// is not trusted.
    #[error("TLS: {what}")]
    Tls { what: String },
    /// The server refused a command because the connection is not authenticated.
    #[error("{peer}: the server requires authentication ({reason}): give USER:PASSWORD")]
    AuthRequired { peer: String, reason: String },
}

impl ClientError {
    /// The peer (or URL) the error is about.
    pub fn peer(&self) -> &str {
        match self {
            ClientError::Io { peer, .. }
            | ClientError::Timeout { peer, .. }
            | ClientError::Closed { peer, .. }
            | ClientError::Protocol { peer, .. }
            | ClientError::Status { peer, .. }
            | ClientError::Unexpected { peer, .. }
            | ClientError::Auth { peer, .. }
            | ClientError::AuthRequired { peer, .. } => peer,
            ClientError::Rest { url, .. } => url,
            ClientError::Tls { what } => what,
        }
    }

    /// True when the credentials are missing or wrong: reconnecting cannot help.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ClientError::Auth { .. } | ClientError::AuthRequired { .. }
        )
    }

    /// The status of a [`ClientError::Status`].
    pub fn status(&self) -> Option<Status> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `e` and the errors under it, joined by ": ". An HTTP client's "error sending request"
/// says why (refused, no such host, reset) only in its sources; a cause whose text is already
/// shown is not repeated.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Error)]
    enum Layer {
        #[error("error sending request")]
        Send(#[source] std::io::Error),
        #[error("connect: {0}")]
        Shows(#[source] std::io::Error),
    }

    #[test]
    fn causes_are_joined_once_each() {
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let text = refused().to_string();
        assert_eq!(
            with_causes(&Layer::Send(refused())),
            format!("error sending request: {text}")
        );
        // A cause the error already shows is not repeated.
        assert_eq!(
            with_causes(&Layer::Shows(refused())),
            format!("connect: {text}")
        );
    }
}
