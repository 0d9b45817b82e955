//! What a network source and a network sink of pump need alike to open a Couchbase
//! connection from their spec and options, kept once here (the sources and the sinks do not
//! depend on each other; the engine knows no protocol):
//!
//! ```text
//! spec userinfo, else -u/-p (a source) or -U/-P (a sink)   -> auth()
//! -x sasl=NAME                                              -> forced_mechanism()
//! --cacert FILE / --no-ssl-verify (-x cacert, no_ssl_verify) -> tls_client()
//! all of it, the bucket, -x timeout                         -> handshake(): pump_client::Handshake
//! ```

use pump::{Credentials, Error, Options, Spec};
use pump_client::{Auth, Handshake, TlsClient};
use pump_protocol::sasl::Mechanism;

/// Credentials: the spec's userinfo, else `fallback` (the options' `-u/-p` for a source,
/// `-U/-P` for a sink).
pub fn auth(spec: &Spec, fallback: Option<&Credentials>) -> Result<Option<Auth>, Error> {
    let c = spec.authority()?.credentials(fallback);
    Ok(c.map(|c| Auth {
        user: c.user,
        password: c.password,
    }))
}

/// `-x sasl=NAME`: PLAIN, SCRAM-SHA512, SCRAM-SHA256 or SCRAM-SHA1 (any case), or none.
pub fn forced_mechanism(options: &Options) -> Result<Option<Mechanism>, Error> {
    match options.extra.get("sasl") {
        None => Ok(None),
        Some(v) => Mechanism::from_name(&v.to_ascii_uppercase())
            .map(Some)
            .ok_or_else(|| {
                Error::usage(format!(
                    "-x sasl={v}: expected PLAIN, SCRAM-SHA512, SCRAM-SHA256 or SCRAM-SHA1"
                ))
            }),
    }
}

/// The TLS trust of `--cacert` / `--no-ssl-verify` (the system's roots without either).
pub fn tls_client(options: &Options) -> Result<TlsClient, Error> {
    let cacert = options.extra.get("cacert").map(std::path::Path::new);
    let no_verify = options.extra.flag("no_ssl_verify")?;
    TlsClient::new(cacert, no_verify).map_err(|e| Error::usage(e.to_string()))
}

/// How to open a connection to a Couchbase node: HELLO with the pump's features, the
/// strongest SASL mechanism (or `-x sasl`), `bucket` selected, TLS when `tls`.
pub fn handshake(
    auth: Option<Auth>,
    bucket: &str,
    options: &Options,
    tls: bool,
) -> Result<Handshake, Error> {
    let mut h = Handshake::new(auth, Some(bucket), options.extra.timeout()?);
    h.sasl = forced_mechanism(options)?;
    if tls {
        h.tls = Some(tls_client(options)?);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(extra: &str) -> Options {
        Options {
            extra: pump::Extra::parse(extra, &["sasl", "cacert", "no_ssl_verify", "timeout"])
                .unwrap(),
            ..Options::default()
        }
    }

    #[test]
    fn the_spec_userinfo_comes_before_the_options_credentials() {
        let given = Credentials {
            user: "opt-user".into(),
            password: "opt-pass".into(),
        };
        let from_url = auth(
            &Spec::parse("couchbase://u:p%2Fw@h:8091").unwrap(),
            Some(&given),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (from_url.user.as_str(), from_url.password.as_str()),
            ("u", "p/w")
        );
        let from_options = auth(&Spec::parse("couchbase://h:8091").unwrap(), Some(&given))
            .unwrap()
            .unwrap();
        assert_eq!(from_options.user, "opt-user");
        assert!(auth(&Spec::parse("couchbase://h:8091").unwrap(), None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn sasl_names_any_case_and_an_unknown_one_is_a_usage_error_naming_it() {
        assert_eq!(forced_mechanism(&options("")).unwrap(), None);
        assert_eq!(
            forced_mechanism(&options("sasl=scram-sha256")).unwrap(),
            Some(Mechanism::ScramSha256)
        );
        let h = handshake(None, "b", &options("sasl=PLAIN"), false).unwrap();
        assert_eq!(
            (h.sasl, h.bucket.as_deref()),
            (Some(Mechanism::Plain), Some("b"))
        );
        assert!(h.tls.is_none());
        let e = forced_mechanism(&options("sasl=MD5"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("-x sasl=MD5") && e.contains("SCRAM-SHA512"),
            "{e}"
        );
    }

    #[test]
    fn tls_only_when_asked_and_a_missing_cacert_is_named() {
        let h = handshake(None, "b", &options("no_ssl_verify=1"), true).unwrap();
        assert!(h.tls.is_some());
        let e = handshake(None, "b", &options("cacert=/nonexistent/ca.pem"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        // Not asked for TLS: the trust options are not even read.
        assert!(handshake(None, "b", &options("cacert=/nonexistent/ca.pem"), false).is_ok());
    }
}
