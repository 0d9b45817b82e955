//! The queue's address as the user writes it.
//!
//! ```text
//! beanstalk://HOST[:PORT][/TUBE]      PORT 11300 (beanstalkd's) and TUBE "pump" when not given
//! beanstalk://127.0.0.1:11300/pump-backups
//! beanstalk://[::1]:11300
//! ```

use std::fmt;

use crate::error::Error;
use crate::frame::Tube;

/// beanstalkd's default port.
pub const DEFAULT_PORT: u16 = 11300;
/// The work tube when the URL names none.
pub const DEFAULT_TUBE: &str = "pump";

/// `beanstalk://HOST:PORT/TUBE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrl {
    /// A host name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    /// The work tube: planners put jobs there, workers watch it.
    pub tube: Tube,
}

impl QueueUrl {
    /// Parses `beanstalk://HOST[:PORT][/TUBE]`; a usage error says what is wrong.
    pub fn parse(s: &str) -> Result<QueueUrl, Error> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "{s}: {why}; expected beanstalk://HOST[:PORT][/TUBE]"
            ))
        };
        let rest = s
            .strip_prefix("beanstalk://")
            .ok_or_else(|| bad("not a beanstalk:// URL"))?;
        let (authority, tube) = match rest.split_once('/') {
            Some((a, t)) => (a, t),
            None => (rest, ""),
        };
        if let Some((_, host)) = authority.rsplit_once('@') {
            // Never echo what stood before the @: it may be a password.
            return Err(Error::Usage(format!(
                "beanstalk://***@{host}: beanstalkd has no user or password; expected beanstalk://HOST[:PORT][/TUBE]"
            )));
        }
        if tube.contains(['?', '#']) {
            return Err(bad("no query or fragment"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed ["))?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(&format!("port {p:?} is not a port number")))?,
        };
        let tube = Tube::new(if tube.is_empty() { DEFAULT_TUBE } else { tube })
            .map_err(|e| Error::Usage(format!("{s}: {e}")))?;
        Ok(QueueUrl {
            host: host.to_string(),
            port,
            tube,
        })
    }

    /// `HOST:PORT` to connect to (`[HOST]:PORT` for IPv6).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for QueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "beanstalk://{}/{}", self.addr(), self.tube)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_tube_with_their_defaults() {
        let u = QueueUrl::parse("beanstalk://127.0.0.1:11400/backups").unwrap();
        assert_eq!(
            (u.addr().as_str(), u.tube.as_str()),
            ("127.0.0.1:11400", "backups")
        );
        let u = QueueUrl::parse("beanstalk://queue.example").unwrap();
        assert_eq!(u.to_string(), "beanstalk://queue.example:11300/pump");
        let u = QueueUrl::parse("beanstalk://[::1]:11301/").unwrap();
        assert_eq!((u.host.as_str(), u.addr().as_str()), ("::1", "[::1]:11301"));
        assert_eq!(QueueUrl::parse("beanstalk://[::1]").unwrap().port, 11300);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, why) in [
            ("http://h:1", "not a beanstalk"),
            ("beanstalk://", "no host"),
            ("beanstalk://h:0", "not a port"),
            ("beanstalk://h:99999", "not a port"),
            ("beanstalk://u:p@h:1", "no user or password"),
            ("beanstalk://h:1/a b", "not allowed"),
            ("beanstalk://h:1/-x", "may not start"),
            ("beanstalk://[::1:1", "unclosed"),
            ("beanstalk://h/t?x=1", "no query"),
        ] {
            let e = QueueUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            if url.contains('@') {
                assert!(!e.contains("u:p"), "{e}");
            } else {
                assert!(e.contains(url), "{url}: {e}");
            }
        }
    }
}
