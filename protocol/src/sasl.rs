//! SASL PLAIN: `SASL_AUTH` with key "PLAIN" and value `authzid \0 user \0 password`.

use bytes::{BufMut, BytesMut};

use crate::{Opcode, Packet};

/// The SASL_AUTH request for PLAIN with an empty authzid.
pub fn plain_auth(user: &str, password: &str) -> Packet {
    let mut v = BytesMut::with_capacity(user.len() + password.len() + 2);
    v.put_u8(0);
    v.put_slice(user.as_bytes());
    v.put_u8(0);
    v.put_slice(password.as_bytes());
    Packet::request(Opcode::SaslAuth)
        .with_key(&b"PLAIN"[..])
        .with_value(v.freeze())
}

/// Parses a PLAIN value into (user, password); `None` when it has not three NUL-separated parts.
pub fn parse_plain(value: &[u8]) -> Option<(String, String)> {
    let mut parts = value.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        String::from_utf8_lossy(user).into_owned(),
        String::from_utf8_lossy(pass).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_auth_value_is_nul_separated_and_parses_back() {
        let p = plain_auth("Administrator", "s3cret");
        assert_eq!(&p.key[..], b"PLAIN");
        assert_eq!(&p.value[..], b"\0Administrator\0s3cret");
        assert_eq!(
            parse_plain(&p.value),
            Some(("Administrator".into(), "s3cret".into()))
        );
        assert_eq!(parse_plain(b"nouser"), None);
    }
}
