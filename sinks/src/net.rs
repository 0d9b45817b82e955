//! What the network sinks share: destination credentials from the spec or the options.

use pump::{Error, Options, Spec};
use pump_client::Auth;

/// Credentials: the URL's userinfo, else `-U/-P`.
pub fn auth(spec: &Spec, options: &Options) -> Result<Option<Auth>, Error> {
    let c = spec.authority()?.credentials(options.dest_auth.as_ref());
    Ok(c.map(|c| Auth {
        user: c.user,
        password: c.password,
    }))
}
