//! The engine's error type: every variant names what it is about.

use std::path::PathBuf;

use thiserror::Error;

/// An error of a run. Kinds build them with the helpers below so that every message names the
/// spec, file, peer or key it is about.
#[derive(Debug, Error)]
pub enum Error {
    /// The user asked for something that cannot be (a bad spec, option or value): exit 2.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A source failed; `spec` says which.
    #[error("source {spec}: {message}")]
    Source { spec: String, message: String },
    /// A sink failed; `spec` says which.
    #[error("sink {spec}: {message}")]
    Sink { spec: String, message: String },
    /// A peer sent something the protocol does not allow, or the connection broke.
    #[error("{peer}: {source}")]
    Protocol {
        peer: String,
        source: pump_protocol::ProtocolError,
    },
    /// Ctrl-C: the run stops reading and drains.
    #[error("cancelled")]
    Cancelled,
    /// Every sink worker stopped; the sink's own error says why.
    #[error("the sink stopped before the source finished")]
    SinkGone,
}

impl Error {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Error {
        Error::Usage(message.into())
    }

    /// A source error about `spec`.
    pub fn source(spec: impl std::fmt::Display, message: impl std::fmt::Display) -> Error {
        Error::Source {
            spec: spec.to_string(),
            message: message.to_string(),
        }
    }

    /// A sink error about `spec`.
    pub fn sink(spec: impl std::fmt::Display, message: impl std::fmt::Display) -> Error {
        Error::Sink {
            spec: spec.to_string(),
            message: message.to_string(),
        }
    }

    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True for errors the user caused by how they called the tool (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }
}
