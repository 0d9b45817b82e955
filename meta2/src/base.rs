//! Names and places: CID = uppercase hex SHA-256 of `account + "\0" + container`; a base
//! `<CID>.<seq>` lives at `<volume>/<CID[0:3]>/<CID>.<seq>.meta2`; a peer is given on the
//! command line as `ADDRESS=VOLUME` where ADDRESS is what `sys.peers` holds.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Error;

/// The container id of `account`/`container`: 64 uppercase hex digits.
pub fn cid(account: &str, container: &str) -> String {
    let mut h = Sha256::new();
    h.update(account.as_bytes());
    h.update([0u8]);
    h.update(container.as_bytes());
    hex::encode_upper(h.finalize())
}

/// A base name: `<CID>.<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BaseName {
    pub cid: String,
    pub seq: u32,
}

impl BaseName {
    /// Parses `<CID>.<seq>` (CID: 64 hex digits, any case; kept uppercase).
    pub fn parse(s: &str) -> Result<BaseName, Error> {
        let bad = || {
            Error::Usage(format!(
                "{s:?} is not a base name <CID>.<seq> (64 hex digits, a dot, a number)"
            ))
        };
        let (cid, seq) = s.rsplit_once('.').ok_or_else(bad)?;
        if cid.len() != 64 || !cid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let seq = seq.parse().map_err(|_| bad())?;
        Ok(BaseName {
            cid: cid.to_ascii_uppercase(),
            seq,
        })
    }

    /// The base of `account`/`container` with seq 1.
    pub fn of(account: &str, container: &str) -> BaseName {
        BaseName {
            cid: cid(account, container),
            seq: 1,
        }
    }

    /// Where this base lives on `volume`.
    pub fn path_in(&self, volume: &Path) -> PathBuf {
        volume
            .join(&self.cid[..3])
            .join(format!("{}.{}.meta2", self.cid, self.seq))
    }

    /// Recognises a base file name `<CID>.<seq>.meta2`.
    pub fn from_file_name(name: &str) -> Option<BaseName> {
        BaseName::parse(name.strip_suffix(".meta2")?).ok()
    }

    /// Every base on a volume, sorted.
    pub fn list(volume: &Path) -> Result<Vec<BaseName>, Error> {
        let mut out = Vec::new();
        let dirs = std::fs::read_dir(volume).map_err(|e| Error::io(volume, e))?;
        for d in dirs {
            let d = d.map_err(|e| Error::io(volume, e))?;
            let name = d.file_name().to_string_lossy().to_string();
            if name.len() != 3 || !d.path().is_dir() {
                continue;
            }
            let files = std::fs::read_dir(d.path()).map_err(|e| Error::io(d.path(), e))?;
            for f in files.flatten() {
                if let Some(b) = BaseName::from_file_name(&f.file_name().to_string_lossy()) {
                    out.push(b);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

impl fmt::Display for BaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.cid, self.seq)
    }
}

/// Checks a service address: `IP:PORT` or `host:port` (host: letters, digits, `-`, `.`;
/// port 1-65535). Returns it unchanged.
pub fn parse_address(s: &str) -> Result<String, Error> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "address {s:?}: {why} (expected IP:PORT or host:port, port 1-65535)"
        ))
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port: u32 = port.parse().map_err(|_| bad("the port is not a number"))?;
    if !(1..=65535).contains(&port) {
        return Err(bad("the port is out of range"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(s.to_string());
    }
    if host
        .split('.')
        .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("not a valid IPv4 address"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad("not a valid host name"));
    }
    Ok(s.to_string())
}

/// A service holding copies: its address (as in `sys.peers`) and its volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: String,
    pub volume: PathBuf,
}

impl Peer {
    /// Parses `ADDRESS=VOLUME`, validating the address.
    pub fn parse(s: &str) -> Result<Peer, Error> {
        let (a, v) = s
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("peer {s:?}: expected ADDRESS=VOLUME")))?;
        if v.is_empty() {
            return Err(Error::Usage(format!("peer {s:?}: empty volume")));
        }
        Ok(Peer {
            address: parse_address(a)?,
            volume: PathBuf::from(v),
        })
    }

    /// Where `base` lives on this peer's volume.
    pub fn path(&self, base: &BaseName) -> PathBuf {
        base.path_in(&self.volume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_is_uppercase_sha256_of_account_nul_container() {
        let c = cid("acct", "cont");
        assert_eq!(c.len(), 64);
        assert_eq!(c, c.to_ascii_uppercase());
        let mut h = Sha256::new();
        h.update(b"acct\0cont");
        assert_eq!(c, hex::encode_upper(h.finalize()));
    }

    #[test]
    fn base_path_is_volume_prefix_cid_seq() {
        let b = BaseName::parse(&format!("{}.1", "ab".repeat(32))).unwrap();
        let p = b.path_in(Path::new("/v"));
        assert_eq!(
            p,
            Path::new("/v/ABA").join(format!("{}.1.meta2", "AB".repeat(32)))
        );
    }

    #[test]
    fn addresses_are_validated() {
        assert!(parse_address("127.0.0.1:6120").is_ok());
        assert!(parse_address("meta2-1.example:6120").is_ok());
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.300:1",
            ":80",
            "a b:1",
            "127.0.0.1:x",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }
}
