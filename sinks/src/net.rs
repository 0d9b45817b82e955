//! What the network sinks share: destination credentials and timeouts from the options.

use std::time::Duration;

use pump::{Error, Options, Spec};
use pump_client::Auth;

/// `-x timeout=SECONDS` (default 30): every network wait.
pub fn timeout(options: &Options) -> Result<Duration, Error> {
    let secs = options.extra.number("timeout", 30)?;
    if secs == 0 {
        return Err(Error::usage("-x timeout=0: expected at least 1 second"));
    }
    Ok(Duration::from_secs(secs))
}

/// Credentials: the URL's userinfo, else `-U/-P`.
pub fn auth(spec: &Spec, options: &Options) -> Result<Option<Auth>, Error> {
    let a = spec.authority()?;
    Ok(match (a.user, a.password) {
        (Some(user), password) => Some(Auth {
            user,
            password: password.unwrap_or_default(),
        }),
        _ => options.dest_auth.as_ref().map(|c| Auth {
            user: c.user.clone(),
            password: c.password.clone(),
        }),
    })
}
