//! SASL as Couchbase speaks it: PLAIN and SCRAM-SHA512/256/1 (RFC 5802, RFC 7677).
//!
//! ```text
//! SASL_LIST_MECHS  -> "SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN" (space-separated)
//! PLAIN            SASL_AUTH key "PLAIN", value `authzid \0 user \0 password` -> SUCCESS | AUTH_ERROR
//! SCRAM-SHAxxx     SASL_AUTH key mech, value client-first   "n,,n=USER,r=CNONCE"
//!                    <- AUTH_CONTINUE, value server-first   "r=CNONCE+SNONCE,s=SALT64,i=ITERATIONS"
//!                  SASL_STEP key mech, value client-final   "c=biws,r=CNONCE+SNONCE,p=PROOF64"
//!                    <- SUCCESS, value server-final         "v=SERVERSIG64"   | AUTH_ERROR
//!
//! SaltedPassword = PBKDF2(H, password, salt, i);  ClientKey = HMAC(SaltedPassword, "Client Key")
//! StoredKey = H(ClientKey);  ServerKey = HMAC(SaltedPassword, "Server Key")
//! AuthMessage = client-first-bare "," server-first "," client-final-without-proof
//! ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)
//! ServerSignature = HMAC(ServerKey, AuthMessage)
//! ```
//!
//! The hashes, HMAC and PBKDF2 come from the RustCrypto crates; nonces and salts are given by
//! the caller (this crate draws no random numbers). No password or key ever appears in an error.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::error::ProtocolError;
use crate::{Opcode, Packet};

/// The iteration count the reference node salts its SCRAM passwords with (Couchbase Server's
/// default for users it has no stored hash of).
pub const DEFAULT_ITERATIONS: u32 = 15_000;

/// A SASL mechanism, strongest first in [`Mechanism::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    ScramSha512,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first.
    pub const ALL: [Mechanism; 4] = [
        Mechanism::ScramSha512,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha512 => "SCRAM-SHA512",
            Mechanism::ScramSha256 => "SCRAM-SHA256",
            Mechanism::ScramSha1 => "SCRAM-SHA1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Parses a wire name (exact, upper case as servers send it).
    pub fn from_name(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }

    /// True for the SCRAM mechanisms.
    pub fn is_scram(self) -> bool {
        self != Mechanism::Plain
    }

    /// The strongest mechanism of a SASL_LIST_MECHS answer this crate speaks; `forced` picks
    /// that one if the server lists it. `None` when nothing usable is listed.
    pub fn choose(listed: &str, forced: Option<Mechanism>) -> Option<Mechanism> {
        let listed: Vec<&str> = listed.split_whitespace().collect();
        match forced {
            Some(m) => listed.contains(&m.name()).then_some(m),
            None => Mechanism::ALL
                .into_iter()
                .find(|m| listed.contains(&m.name())),
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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

fn sasl_error(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Sasl(reason.into())
}

fn hmac(m: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    macro_rules! mac {
        ($h:ty) => {
            match Hmac::<$h>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(data);
                    mac.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        };
    }
    match m {
        Mechanism::ScramSha512 => mac!(Sha512),
        Mechanism::ScramSha256 => mac!(Sha256),
        Mechanism::ScramSha1 | Mechanism::Plain => mac!(Sha1),
    }
}

fn hash(m: Mechanism, data: &[u8]) -> Vec<u8> {
    match m {
        Mechanism::ScramSha512 => Sha512::digest(data).to_vec(),
        Mechanism::ScramSha256 => Sha256::digest(data).to_vec(),
        Mechanism::ScramSha1 | Mechanism::Plain => Sha1::digest(data).to_vec(),
    }
}

/// PBKDF2 of `password` with the mechanism's HMAC: SCRAM's SaltedPassword.
pub fn salted_password(m: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let p = password.as_bytes();
    match m {
        Mechanism::ScramSha512 => {
            pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(p, salt, iterations).to_vec()
        }
        Mechanism::ScramSha256 => {
            pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(p, salt, iterations).to_vec()
        }
        Mechanism::ScramSha1 | Mechanism::Plain => {
            pbkdf2::pbkdf2_hmac_array::<Sha1, 20>(p, salt, iterations).to_vec()
        }
    }
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// Compares two byte strings in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n=` escaping of RFC 5802: ',' as "=2C", '=' as "=3D".
fn escape_user(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

fn unescape_user(s: &str) -> Result<String, ProtocolError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(sasl_error("bad escape in the user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `k=value` attributes of a SCRAM message, in order; a malformed one is an error.
fn attributes(msg: &str) -> Result<Vec<(char, &str)>, ProtocolError> {
    msg.split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => Ok((k, &part[2..])),
                _ => Err(sasl_error(format!(
                    "malformed SCRAM attribute {:?}",
                    part.chars().take(16).collect::<String>()
                ))),
            }
        })
        .collect()
}

fn attr<'a>(attrs: &[(char, &'a str)], k: char, what: &str) -> Result<&'a str, ProtocolError> {
    attrs
        .iter()
        .find(|(c, _)| *c == k)
        .map(|(_, v)| *v)
        .ok_or_else(|| sasl_error(format!("{what} has no '{k}=' attribute")))
}

fn text(b: &[u8], what: &str) -> Result<String, ProtocolError> {
    String::from_utf8(b.to_vec()).map_err(|_| sasl_error(format!("{what} is not UTF-8")))
}

/// The client side of one SCRAM exchange.
pub struct ScramClient {
    mech: Mechanism,
    password: String,
    nonce: String,
    first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramClient({}, ***)", self.mech)
    }
}

impl ScramClient {
    /// Starts an exchange as `user` with the client nonce `nonce` (printable, no comma).
    pub fn new(mech: Mechanism, user: &str, password: &str, nonce: &str) -> ScramClient {
        ScramClient {
            mech,
            password: password.to_string(),
            nonce: nonce.to_string(),
            first_bare: format!("n={},r={nonce}", escape_user(user)),
            server_signature: None,
        }
    }

    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// client-first-message: the SASL_AUTH value.
    pub fn first_message(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// client-final-message (the SASL_STEP value) for the server's first message. The
    /// server's nonce must extend ours; `salted` computes (or recalls) the salted password.
    pub fn final_message_with(
        &mut self,
        server_first: &[u8],
        salted: impl FnOnce(Mechanism, &str, &[u8], u32) -> Vec<u8>,
    ) -> Result<String, ProtocolError> {
        let server_first = text(server_first, "the server's first SCRAM message")?;
        let attrs = attributes(&server_first)?;
        let nonce = attr(&attrs, 'r', "the server's first SCRAM message")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(sasl_error(
                "the server's nonce does not extend the client's: not this exchange",
            ));
        }
        let salt = B64
            .decode(attr(&attrs, 's', "the server's first SCRAM message")?)
            .map_err(|_| sasl_error("the salt is not base64"))?;
        let iterations: u32 = attr(&attrs, 'i', "the server's first SCRAM message")?
            .parse()
            .ok()
            .filter(|i| *i > 0)
            .ok_or_else(|| sasl_error("the iteration count is not a positive number"))?;
        let salted_password = salted(self.mech, &self.password, &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let client_key = hmac(self.mech, &salted_password, b"Client Key");
        let stored_key = hash(self.mech, &client_key);
        let signature = hmac(self.mech, &stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &signature);
        let server_key = hmac(self.mech, &salted_password, b"Server Key");
        self.server_signature = Some(hmac(self.mech, &server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// [`ScramClient::final_message_with`], computing the salted password here.
    pub fn final_message(&mut self, server_first: &[u8]) -> Result<String, ProtocolError> {
        self.final_message_with(server_first, salted_password)
    }

    /// Checks the server's final message: its signature proves it knew the password too.
    pub fn verify_final(&self, server_final: &[u8]) -> Result<(), ProtocolError> {
        let msg = text(server_final, "the server's final SCRAM message")?;
        let attrs = attributes(&msg)?;
        if let Ok(e) = attr(&attrs, 'e', "") {
            return Err(sasl_error(format!("the server refused: {e}")));
        }
        let v = B64
            .decode(attr(&attrs, 'v', "the server's final SCRAM message")?)
            .map_err(|_| sasl_error("the server signature is not base64"))?;
        match &self.server_signature {
            Some(expected) if same(expected, &v) => Ok(()),
            Some(_) => Err(sasl_error(
                "the server's signature is wrong: it does not know the password",
            )),
            None => Err(sasl_error(
                "the server's final message came before its first",
            )),
        }
    }
}

/// What a server keeps of a password for one SCRAM mechanism (never the password itself).
#[derive(Clone)]
pub struct ScramSecret {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramSecret(i={}, ***)", self.iterations)
    }
}

impl ScramSecret {
    /// Derives the keys of `password` with `salt` and `iterations`.
    pub fn derive(m: Mechanism, password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let salted = salted_password(m, password, salt, iterations);
        let client_key = hmac(m, &salted, b"Client Key");
        ScramSecret {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash(m, &client_key),
            server_key: hmac(m, &salted, b"Server Key"),
        }
    }
}

/// The server side of one SCRAM exchange, between SASL_AUTH and SASL_STEP.
#[derive(Debug)]
pub struct ScramServer {
    mech: Mechanism,
    user: String,
    nonce: String,
    first_bare: String,
    server_first: String,
}

impl ScramServer {
    /// Reads the client's first message; answers the server-first message. `server_nonce` is
    /// appended to the client's nonce.
    pub fn start(
        mech: Mechanism,
        client_first: &[u8],
        secret: &ScramSecret,
        server_nonce: &str,
    ) -> Result<(ScramServer, String), ProtocolError> {
        let msg = text(client_first, "the client's first SCRAM message")?;
        // gs2 header: "n,," (no channel binding, no authzid) or "y,,".
        let bare = msg
            .strip_prefix("n,,")
            .or_else(|| msg.strip_prefix("y,,"))
            .ok_or_else(|| {
                sasl_error("the client's first SCRAM message must start with \"n,,\"")
            })?;
        let attrs = attributes(bare)?;
        let user = unescape_user(attr(&attrs, 'n', "the client's first SCRAM message")?)?;
        let client_nonce = attr(&attrs, 'r', "the client's first SCRAM message")?;
        if client_nonce.is_empty() {
            return Err(sasl_error("the client's nonce is empty"));
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&secret.salt),
            secret.iterations
        );
        Ok((
            ScramServer {
                mech,
                user,
                nonce,
                first_bare: bare.to_string(),
                server_first: server_first.clone(),
            },
            server_first,
        ))
    }

    /// The user the client named.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// Checks the client's final message against `secret` (None: no such user, which fails
    /// like a wrong password); answers the server-final message.
    pub fn finish(
        &self,
        client_final: &[u8],
        secret: Option<&ScramSecret>,
    ) -> Result<String, ProtocolError> {
        let msg = text(client_final, "the client's final SCRAM message")?;
        let (without_proof, proof64) = msg
            .rsplit_once(",p=")
            .ok_or_else(|| sasl_error("the client's final SCRAM message has no proof"))?;
        let attrs = attributes(without_proof)?;
        if attr(&attrs, 'r', "the client's final SCRAM message")? != self.nonce {
            return Err(sasl_error("the client's final message has the wrong nonce"));
        }
        let proof = B64
            .decode(proof64)
            .map_err(|_| sasl_error("the client proof is not base64"))?;
        let secret = secret.ok_or_else(|| sasl_error("wrong user or password"))?;
        let auth_message = format!("{},{},{without_proof}", self.first_bare, self.server_first);
        let signature = hmac(self.mech, &secret.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(sasl_error("wrong user or password"));
        }
        let client_key = xor(&proof, &signature);
        if !same(&hash(self.mech, &client_key), &secret.stored_key) {
            return Err(sasl_error("wrong user or password"));
        }
        let server_signature = hmac(self.mech, &secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
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

    #[test]
    fn the_strongest_listed_mechanism_is_chosen_and_plain_only_last_or_forced() {
        let all = "SCRAM-SHA1 PLAIN SCRAM-SHA512 SCRAM-SHA256";
        assert_eq!(Mechanism::choose(all, None), Some(Mechanism::ScramSha512));
        assert_eq!(
            Mechanism::choose("PLAIN SCRAM-SHA1", None),
            Some(Mechanism::ScramSha1)
        );
        assert_eq!(Mechanism::choose("PLAIN", None), Some(Mechanism::Plain));
        assert_eq!(
            Mechanism::choose(all, Some(Mechanism::Plain)),
            Some(Mechanism::Plain)
        );
        assert_eq!(
            Mechanism::choose("SCRAM-SHA512", Some(Mechanism::Plain)),
            None
        );
        assert_eq!(Mechanism::choose("CRAM-MD5", None), None);
    }

    /// RFC 5802 section 5 (SCRAM-SHA-1), user "user", password "pencil".
    #[test]
    fn the_rfc_5802_exchange_is_reproduced_by_client_and_server() {
        let mut c = ScramClient::new(
            Mechanism::ScramSha1,
            "user",
            "pencil",
            "fyko+d2lbbFgONRv9qkxdawL",
        );
        assert_eq!(c.first_message(), "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let server_first = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let client_final = c.final_message(server_first.as_bytes()).unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        c.verify_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=").unwrap();

        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let secret = ScramSecret::derive(Mechanism::ScramSha1, "pencil", &salt, 4096);
        let (s, first) = ScramServer::start(
            Mechanism::ScramSha1,
            c.first_message().as_bytes(),
            &secret,
            "3rfcNHYJY1ZVvWVs7j",
        )
        .unwrap();
        assert_eq!(first, server_first);
        assert_eq!(s.user(), "user");
        assert_eq!(
            s.finish(client_final.as_bytes(), Some(&secret)).unwrap(),
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="
        );
    }

    /// RFC 7677 section 3 (SCRAM-SHA-256).
    #[test]
    fn the_rfc_7677_exchange_is_reproduced() {
        let mut c = ScramClient::new(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        );
        let client_final = c
            .final_message(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(c.verify_final(b"v=AAAA").is_err());
    }

    #[test]
    fn sha512_client_and_server_agree_and_a_wrong_password_or_nonce_fails() {
        let secret = ScramSecret::derive(Mechanism::ScramSha512, "P", b"0123456789abcdef", 64);
        let run = |password: &str, tamper_nonce: bool| -> Result<(), ProtocolError> {
            let mut c = ScramClient::new(Mechanism::ScramSha512, "U,=x", password, "abc");
            let (s, first) = ScramServer::start(
                Mechanism::ScramSha512,
                c.first_message().as_bytes(),
                &secret,
                "srv",
            )?;
            assert_eq!(s.user(), "U,=x");
            let mut fin = c.final_message(first.as_bytes())?;
            if tamper_nonce {
                fin = fin.replace("r=abcsrv", "r=abcsrX");
            }
            let last = s.finish(fin.as_bytes(), Some(&secret))?;
            c.verify_final(last.as_bytes())
        };
        run("P", false).unwrap();
        let wrong = run("Q", false).unwrap_err().to_string();
        assert!(wrong.contains("wrong user or password"), "{wrong}");
        assert!(!wrong.contains('Q'));
        assert!(run("P", true)
            .unwrap_err()
            .to_string()
            .contains("wrong nonce"));
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_the_clients_is_refused() {
        let mut c = ScramClient::new(Mechanism::ScramSha256, "u", "p", "abc");
        let e = c.final_message(b"r=xyz123,s=AAAA,i=4096").unwrap_err();
        assert!(e.to_string().contains("nonce"), "{e}");
        assert!(c.final_message(b"r=abc,s=AAAA,i=4096").is_err());
        assert!(c.final_message(b"garbage").is_err());
        assert!(ScramServer::start(
            Mechanism::ScramSha256,
            b"p=tls,n=u,r=x",
            &ScramSecret::derive(Mechanism::ScramSha256, "p", b"s", 1),
            "n"
        )
        .is_err());
    }
}
