//! `-u/-p` and `-U/-P`, shared by `transfer` (cbtransfer's spelling, `--username-dest`) and
//! `recover` (cbrecovery's, `--username-destination`): both long forms work for both.

use pump::Credentials;

/// The source's and the destination's user and password.
#[derive(Debug, clap::Args)]
pub struct CredentialArgs {
    /// Source user (SASL on a data port, basic auth on a REST port).
    #[arg(short = 'u', long = "username")]
    username: Option<String>,
    /// Source password.
    #[arg(
        short = 'p',
        long = "password",
        env = "PUMP_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Destination user.
    #[arg(
        short = 'U',
        long = "username-dest",
        visible_alias = "username-destination"
    )]
    username_dest: Option<String>,
    /// Destination password.
    #[arg(
        short = 'P',
        long = "password-dest",
        visible_alias = "password-destination",
        env = "PUMP_PASSWORD_DEST",
        hide_env_values = true
    )]
    password_dest: Option<String>,
}

impl CredentialArgs {
    /// `-u/-p`, when a user is given.
    pub fn source(&self) -> Option<Credentials> {
        pair(&self.username, &self.password)
    }

    /// `-U/-P`, when a user is given.
    pub fn dest(&self) -> Option<Credentials> {
        pair(&self.username_dest, &self.password_dest)
    }
}

fn pair(user: &Option<String>, password: &Option<String>) -> Option<Credentials> {
    user.as_ref().map(|user| Credentials {
        user: user.clone(),
        password: password.clone().unwrap_or_default(),
    })
}
