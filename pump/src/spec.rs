//! Specs name a source or sink: `kind:rest`, `kind://authority/path`, or a bare path.
//!
//! ```text
//! gen:max-items=1000,prefix=k_    scheme "gen",       body "max-items=1000,prefix=k_"
//! memcached://u:p@127.0.0.1:11211 scheme "memcached", body "//u:p@127.0.0.1:11211"
//! memcached://[::1]:11211         an IPv6 literal in brackets
//! /backups/nightly                no scheme,          body "/backups/nightly"
//! ```
//!
//! An authority is `[USER[:PASSWORD]@]HOST:PORT`. The user information runs to the **last**
//! `@`, so a password may hold `@`, `:` and `/` as typed; both parts are percent-decoded
//! (`%40` is `@`, `%25` a literal `%`). The host and port are parsed by the `url` crate (IPv6
//! literals in brackets). A spec is shown with [`redact`]: never any part of a password, in
//! errors, summaries or logs. REST endpoints (`http://`, `couchbase://` or a bare
//! `HOST:PORT`) go through one normaliser, [`RestUrl`], which takes the credentials out of
//! the URL so that no request or HTTP error ever carries them.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use url::{Host, Url};

use crate::error::Error;
use crate::options::Credentials;

/// A parsed spec. Validation of what follows the scheme is each kind's job.
#[derive(Clone, PartialEq, Eq)]
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

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spec({:?})", redact(&self.raw))
    }
}

/// `text` with the password of any `scheme://user:password@` in it replaced by `***`: the one
/// redaction every command uses before it prints a spec or a URL. The user information runs
/// to the last `@` before the end of the text or the next blank, as [`Spec::authority`] reads
/// it, so no part of a password is ever shown, however it is written (raw `/`, `@`, `:`).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The URL ends at the first blank (a URL inside a sentence).
        let url_end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let (url, after) = tail.split_at(url_end);
        match url.rfind('@') {
            Some(at) => {
                let userinfo = &url[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Percent-decodes one part of the user information.
fn decode_part(part: &str) -> String {
    percent_decode_str(part).decode_utf8_lossy().into_owned()
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

    /// The spec as the user wrote it, password included: never print it (the spec's
    /// `Display` is the redacted form).
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

    /// For `scheme://[user[:password]@]host:port[/path]`: the parts, or a usage error naming
    /// the spec (redacted) and what is wrong with it.
    pub fn authority(&self) -> Result<Authority, Error> {
        let scheme = self.scheme().unwrap_or("scheme");
        let rest = self.body.strip_prefix("//").ok_or_else(|| {
            Error::usage(format!(
                "{self}: expected {scheme}://[USER:PASSWORD@]HOST:PORT"
            ))
        })?;
        let (user, password, hostpart) = match rest.rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let (user, password) = match userinfo.split_once(':') {
                    Some((u, p)) => (decode_part(u), Some(decode_part(p))),
                    None => (decode_part(userinfo), None),
                };
                (Some(user), password, &rest[at + 1..])
            }
            None => (None, None, rest),
        };
        // Only the host and what follows go to the URL parser: its errors never see a
        // password. A scheme the parser treats as special (http) needs no change.
        let url = Url::parse(&format!("{scheme}://{hostpart}")).map_err(|e| {
            Error::usage(format!(
                "{self}: {e} in {hostpart:?}; expected {scheme}://[USER:PASSWORD@]HOST:PORT (a literal % in a password is %25)"
            ))
        })?;
        let host = match url.host() {
            Some(Host::Ipv6(ip)) => ip.to_string(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Domain(d)) if !d.is_empty() => d.to_string(),
            _ => {
                return Err(Error::usage(format!(
                    "{self}: no host in {hostpart:?}; expected {scheme}://HOST:PORT"
                )))
            }
        };
        // The port must be written out (the parser drops http's :80 as the default).
        let authority = hostpart.split(['/', '?', '#']).next().unwrap_or("");
        let written = authority
            .rfind(':')
            .filter(|&i| !authority[i..].contains(']') && i + 1 < authority.len());
        let port = url
            .port_or_known_default()
            .filter(|_| written.is_some())
            .ok_or_else(|| {
                Error::usage(format!(
                    "{self}: no port in {hostpart:?}; expected HOST:PORT"
                ))
            })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::usage(format!(
                "{self}: a query or fragment ({hostpart:?}) is not part of a spec"
            )));
        }
        Ok(Authority {
            user,
            password,
            host,
            port,
            path: url.path().to_string(),
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

/// `user:password@host:port/path` split up, the user and password percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Authority {
    pub user: Option<String>,
    pub password: Option<String>,
    /// The host, an IPv6 literal without its brackets.
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .finish()
    }
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

    /// `host:port`, an IPv6 host in brackets (`[::1]:11211`): what a socket connects to.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A REST endpoint, normalised: `http://HOST:PORT` (or `https://`) from `http://...`,
/// `https://...`, `couchbase://...` or a bare `HOST:PORT`, with any `user:password@` taken
/// out of it. Shown (and used in requests) without the credentials, so neither an error
/// message nor a request line carries them; the caller sends [`RestUrl::credentials`] as
/// HTTP basic authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct RestUrl {
    base: String,
    credentials: Option<Credentials>,
}

impl std::fmt::Debug for RestUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RestUrl({:?})", self.base)
    }
}

impl std::fmt::Display for RestUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

impl RestUrl {
    /// Parses and normalises `text` (see the type); a usage error names it, redacted.
    pub fn parse(text: &str) -> Result<RestUrl, Error> {
        let with_scheme;
        let text = if text.contains("://") {
            text
        } else {
            with_scheme = format!("http://{text}");
            &with_scheme
        };
        let spec = Spec::parse(text)?;
        let scheme = match spec.scheme() {
            Some("http" | "couchbase") => "http",
            Some("https") => "https",
            _ => {
                return Err(Error::usage(format!(
                    "{spec}: expected http://HOST:PORT (or couchbase://HOST:PORT, or HOST:PORT)"
                )))
            }
        };
        let a = spec.authority()?;
        if !a.path.trim_end_matches('/').is_empty() {
            return Err(Error::usage(format!(
                "{spec}: expected http://HOST:PORT with no path (not {:?})",
                a.path
            )));
        }
        if a.port == 0 {
            return Err(Error::usage(format!(
                "{spec}: expected a port from 1 to 65535"
            )));
        }
        Ok(RestUrl {
            base: format!("{scheme}://{}", a.addr()),
            credentials: a.credentials(None),
        })
    }

    /// The REST endpoint of a spec's authority (`couchbase://u:p@h:p` -> `http://h:p`), the
    /// credentials from the URL else `fallback`.
    pub fn of_authority(a: &Authority, fallback: Option<&Credentials>) -> RestUrl {
        RestUrl {
            base: format!("http://{}", a.addr()),
            credentials: a.credentials(fallback),
        }
    }

    /// `http://HOST:PORT`, no trailing slash, no credentials.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `base` + `path` (`path` starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The user and password the URL held, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// The same endpoint with `credentials` when the URL held none.
    pub fn or_credentials(mut self, credentials: Option<Credentials>) -> RestUrl {
        if self.credentials.is_none() {
            self.credentials = credentials;
        }
        self
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
        assert!(!format!("{s:?} {a:?}").contains("secret"));
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
        let err = Spec::parse("http://h").unwrap().authority().unwrap_err();
        assert!(err.to_string().contains("no port"), "{err}");
    }

    /// The password of the acceptance test: `/`, `@` and `:` in it, each fragment distinct.
    const PASSWORD: &str = "Zq9/Xk7@Wv5:Ty3";
    const FRAGMENTS: [&str; 4] = ["Zq9", "Xk7", "Wv5", "Ty3"];

    fn shows_no_fragment(text: &str) {
        for f in FRAGMENTS {
            assert!(!text.contains(f), "{f} shown in {text:?}");
        }
    }

    #[test]
    fn a_password_with_slash_at_and_colon_works_raw_or_percent_encoded_and_is_never_shown() {
        let encoded = "Zq9%2FXk7%40Wv5%3ATy3";
        for scheme in ["memcached", "tap", "dcp", "couchbase", "http"] {
            for written in [PASSWORD, encoded] {
                let raw = format!("{scheme}://us%3Aer:{written}@127.0.0.1:11211");
                let s = Spec::parse(&raw).unwrap();
                let a = s.authority().unwrap();
                assert_eq!(a.user.as_deref(), Some("us:er"), "{raw}");
                assert_eq!(a.password.as_deref(), Some(PASSWORD), "{raw}");
                assert_eq!(a.addr(), "127.0.0.1:11211");
                assert_eq!(
                    s.to_string(),
                    format!("{scheme}://us%3Aer:***@127.0.0.1:11211")
                );
                shows_no_fragment(&format!("{s} {s:?} {a:?}"));
                // Errors name the spec, never the password.
                for bad in ["127.0.0.1", "127.0.0.1:x", "127.0.0.1:1?q", ":1"] {
                    let raw = format!("{scheme}://u:{written}@{bad}");
                    let e = Spec::parse(&raw).unwrap().authority().unwrap_err();
                    assert!(e.is_usage(), "{raw}: {e}");
                    shows_no_fragment(&e.to_string());
                }
            }
        }
        let sentence = format!("from couchbase://u:{PASSWORD}@h:1 to tap://h:2 failed");
        assert_eq!(
            redact(&sentence),
            "from couchbase://u:***@h:1 to tap://h:2 failed"
        );
        assert_eq!(redact("memcached://user@h:1"), "memcached://user@h:1");
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn ipv6_literals_in_brackets() {
        let a = Spec::parse("memcached://[::1]:11211")
            .unwrap()
            .authority()
            .unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 11211));
        assert_eq!(a.addr(), "[::1]:11211");
        let a = Spec::parse("couchbase://u:p@[fe80::2]:8091")
            .unwrap()
            .authority()
            .unwrap();
        assert_eq!(a.addr(), "[fe80::2]:8091");
        assert!(Spec::parse("memcached://::1:11211")
            .unwrap()
            .authority()
            .is_err());
    }

    #[test]
    fn rest_urls_normalise_and_keep_their_credentials_out_of_sight() {
        for (text, base) in [
            ("http://10.1.2.3:8091/", "http://10.1.2.3:8091"),
            ("couchbase://h:9000", "http://h:9000"),
            ("h:9000", "http://h:9000"),
            ("https://h:18091", "https://h:18091"),
            ("[::1]:8091", "http://[::1]:8091"),
        ] {
            let r = RestUrl::parse(text).unwrap();
            assert_eq!(r.base(), base, "{text}");
            assert_eq!(r.credentials(), None);
        }
        let r = RestUrl::parse(&format!("couchbase://admin:{PASSWORD}@h:9000")).unwrap();
        assert_eq!(r.base(), "http://h:9000");
        assert_eq!(r.join("/pools"), "http://h:9000/pools");
        let c = r.credentials().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("admin", PASSWORD));
        shows_no_fragment(&format!("{r} {r:?}"));
        for bad in [
            "http://h",
            "http://h:99999",
            "http://h:0",
            "ftp://h:1",
            "http://h:1/x",
        ] {
            let e = RestUrl::parse(bad).unwrap_err();
            assert!(e.is_usage(), "{bad}: {e}");
        }
        let e = RestUrl::parse(&format!("http://u:{PASSWORD}@h")).unwrap_err();
        shows_no_fragment(&e.to_string());
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
