//! Specs name a source or sink: `kind:rest`, `kind://authority/path`, or a bare path.
//!
//! ```text
//! gen:max-items=1000,prefix=k_    scheme "gen",       body "max-items=1000,prefix=k_"
//! memcached://u:p@127.0.0.1:11211 scheme "memcached", body "//u:p@127.0.0.1:11211"
//! /backups/nightly                no scheme,          body "/backups/nightly"
//! ```

use std::collections::BTreeMap;

use crate::error::Error;
use crate::options::Credentials;

/// A parsed spec. Validation of what follows the scheme is each kind's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    raw: String,
    scheme: Option<String>,
    body: String,
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.raw))
    }
}

/// Hides a password in `scheme://user:password@host`.
fn redact(raw: &str) -> String {
    if let Some(i) = raw.find("://") {
        let rest = &raw[i + 3..];
        if let Some(at) = rest.find('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!("{}://{}:***{}", &raw[..i], &rest[..colon], &rest[at..]);
            }
        }
    }
    raw.to_string()
}

impl Spec {
    /// Splits a spec into its scheme and body. A scheme is letters, digits, `+`, `-` or `.`
    /// followed by `:`, two characters at least (so `C:` is not one).
    pub fn parse(raw: &str) -> Result<Spec, Error> {
        if raw.is_empty() {
            return Err(Error::usage(
                "an empty spec: give a source or sink such as gen:, csv:FILE or a backup directory",
            ));
        }
        let scheme_end = raw.find(':').filter(|&i| {
            i >= 2
                && raw[..i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && raw[..1].chars().all(|c| c.is_ascii_alphabetic())
        });
        Ok(match scheme_end {
            Some(i) => Spec {
                raw: raw.to_string(),
                scheme: Some(raw[..i].to_ascii_lowercase()),
                body: raw[i + 1..].to_string(),
            },
            None => Spec {
                raw: raw.to_string(),
                scheme: None,
                body: raw.to_string(),
            },
        })
    }

    /// The spec as the user wrote it.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// `gen`, `csv`, `memcached`...; `None` for a bare path.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme.as_deref()
    }

    /// Everything after `scheme:` (or the whole spec for a bare path).
    pub fn body(&self) -> &str {
        &self.body
    }

    /// For `scheme://[user:pass@]host:port[/path]`: the parts, or a usage error naming the spec.
    pub fn authority(&self) -> Result<Authority, Error> {
        let rest = self.body.strip_prefix("//").ok_or_else(|| {
            Error::usage(format!(
                "{self}: expected {}://HOST:PORT",
                self.scheme().unwrap_or("scheme")
            ))
        })?;
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, String::new()),
        };
        let (userinfo, hostport) = match auth.rfind('@') {
            Some(i) => (Some(&auth[..i]), &auth[i + 1..]),
            None => (None, auth),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((a, b)) => (Some(a.to_string()), Some(b.to_string())),
                None => (Some(u.to_string()), None),
            },
            None => (None, None),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| {
            Error::usage(format!(
                "{self}: no port in {hostport:?}; expected HOST:PORT"
            ))
        })?;
        let port: u16 = port.parse().map_err(|_| {
            Error::usage(format!(
                "{self}: port {port:?} is not a number from 0 to 65535"
            ))
        })?;
        if host.is_empty() {
            return Err(Error::usage(format!("{self}: no host before :{port}")));
        }
        Ok(Authority {
            user,
            password,
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            path,
        })
    }

    /// For `scheme:k=v,k=v`: the pairs, or a usage error naming the bad one. Keys may use `-`
    /// or `_` interchangeably; they come back with `_`.
    pub fn params(&self) -> Result<BTreeMap<String, String>, Error> {
        parse_pairs(&self.body).map_err(|e| Error::usage(format!("{self}: {e}")))
    }
}

/// Parses `k=v,k=v` into a map with `-` in keys turned to `_`.
pub fn parse_pairs(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
        out.insert(k.trim().replace('-', "_"), v.trim().to_string());
    }
    Ok(out)
}

/// `user:password@host:port/path` split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Authority {
    /// The URL's `user:password@`, else `fallback` (`-u/-p` for a source, `-U/-P` for a sink).
    pub fn credentials(&self, fallback: Option<&Credentials>) -> Option<Credentials> {
        match &self.user {
            Some(user) => Some(Credentials {
                user: user.clone(),
                password: self.password.clone().unwrap_or_default(),
            }),
            None => fallback.cloned(),
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A set of vbucket ids, from `-l 500,612,700-712`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbucketSet {
    bits: Vec<u64>,
}

impl VbucketSet {
    /// Parses a comma-separated list of ids and inclusive ranges.
    pub fn parse(s: &str) -> Result<VbucketSet, Error> {
        let mut set = VbucketSet {
            bits: vec![0; 1024],
        };
        let bad = |part: &str| {
            Error::usage(format!(
                "vbucket list: {part:?} is not a vbucket id (0-65535) or a range A-B"
            ))
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse::<u16>().map_err(|_| bad(part))?,
                    b.trim().parse::<u16>().map_err(|_| bad(part))?,
                ),
                None => {
                    let v = part.parse::<u16>().map_err(|_| bad(part))?;
                    (v, v)
                }
            };
            if a > b {
                return Err(Error::usage(format!(
                    "vbucket list: range {part:?} runs backwards"
                )));
            }
            for vb in a..=b {
                set.insert(vb);
            }
        }
        if set.is_empty() {
            return Err(Error::usage(format!("vbucket list {s:?} names no vbucket")));
        }
        Ok(set)
    }

    /// A set holding exactly these ids.
    pub fn from_ids(ids: impl IntoIterator<Item = u16>) -> VbucketSet {
        let mut set = VbucketSet {
            bits: vec![0; 1024],
        };
        for vb in ids {
            set.insert(vb);
        }
        set
    }

    fn insert(&mut self, vb: u16) {
        self.bits[vb as usize / 64] |= 1 << (vb % 64);
    }

    /// True when `vb` is in the set.
    pub fn contains(&self, vb: u16) -> bool {
        self.bits[vb as usize / 64] & (1 << (vb % 64)) != 0
    }

    /// The ids in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|vb| self.contains(*vb))
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// The ids as a compact string: `1,3-5`.
    pub fn to_list_string(&self) -> String {
        let ids: Vec<u16> = self.iter().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            let mut j = i;
            while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
                j += 1;
            }
            out.push(if i == j {
                ids[i].to_string()
            } else {
                format!("{}-{}", ids[i], ids[j])
            });
            i = j + 1;
        }
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_bodies_and_bare_paths() {
        let s = Spec::parse("gen:max-items=10").unwrap();
        assert_eq!((s.scheme(), s.body()), (Some("gen"), "max-items=10"));
        let s = Spec::parse("/tmp/backup").unwrap();
        assert_eq!((s.scheme(), s.body()), (None, "/tmp/backup"));
        let s = Spec::parse("relative/dir:with-colon").unwrap();
        assert_eq!(s.scheme(), None);
        assert!(Spec::parse("").is_err());
    }

    #[test]
    fn credentials_come_from_the_url_else_from_the_options() {
        let fallback = Credentials {
            user: "opt".into(),
            password: "p".into(),
        };
        let a = Spec::parse("memcached://u:pw@h:1")
            .unwrap()
            .authority()
            .unwrap();
        let c = a.credentials(Some(&fallback)).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u", "pw"));
        let a = Spec::parse("memcached://u@h:1")
            .unwrap()
            .authority()
            .unwrap();
        assert_eq!(a.credentials(None).unwrap().password, "");
        let a = Spec::parse("memcached://h:1").unwrap().authority().unwrap();
        assert_eq!(a.credentials(Some(&fallback)), Some(fallback));
        assert_eq!(a.credentials(None), None);
    }

    #[test]
    fn authority_parts_and_a_redacted_display() {
        let s = Spec::parse("memcached://admin:secret@127.0.0.1:11211").unwrap();
        let a = s.authority().unwrap();
        assert_eq!(a.user.as_deref(), Some("admin"));
        assert_eq!(a.password.as_deref(), Some("secret"));
        assert_eq!(a.addr(), "127.0.0.1:11211");
        assert_eq!(s.to_string(), "memcached://admin:***@127.0.0.1:11211");
        let err = Spec::parse("memcached://localhost")
            .unwrap()
            .authority()
            .unwrap_err();
        assert!(err.to_string().contains("no port"), "{err}");
        let err = Spec::parse("memcached://h:99999")
            .unwrap()
            .authority()
            .unwrap_err();
        assert!(err.to_string().contains("99999"), "{err}");
    }

    #[test]
    fn params_normalise_dashes() {
        let p = Spec::parse("gen:max-items=5,prefix=k_")
            .unwrap()
            .params()
            .unwrap();
        assert_eq!(p["max_items"], "5");
        assert_eq!(p["prefix"], "k_");
        assert!(Spec::parse("gen:oops").unwrap().params().is_err());
    }

    #[test]
    fn vbucket_lists_with_ranges() {
        let v = VbucketSet::parse("500,612,700-712").unwrap();
        assert!(v.contains(500) && v.contains(700) && v.contains(712) && !v.contains(713));
        assert_eq!(v.iter().count(), 15);
        assert_eq!(v.to_list_string(), "500,612,700-712");
        assert!(VbucketSet::parse("5-3").is_err());
        assert!(VbucketSet::parse("x").is_err());
        assert!(VbucketSet::parse("").is_err());
    }
}
