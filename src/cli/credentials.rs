//! Passwords on the command line, and the ways to keep them out of it.
//!
//! ```text
//! transfer, recover, verify   -u USER  -p PW | --password-file FILE | $PUMP_PASSWORD        (source)
//!                             -U USER  -P PW | --password-dest-file FILE | $PUMP_PASSWORD_DEST (destination)
//! cluster failover            -u USER  -p PW | --password-file FILE | $PUMP_PASSWORD
//! node, cluster up            --user USER  --password PW | --password-file FILE | $PUMP_NODE_PASSWORD
//! ```
//!
//! `-u/-p` and `-U/-P` are shared by `transfer` (cbtransfer's spelling, `--username-dest`) and
//! `recover` (cbrecovery's, `--username-destination`): both long forms work for both. A password
//! given as an argument is readable by anyone on the machine (`ps`); the file (its first line,
//! the line end left out; `-` is standard input) and the variable are not. The argument wins
//! over the file, the file over the variable. Nothing here ever prints a password: errors name
//! the option, the file or the variable.

use std::io::Read;
use std::path::{Path, PathBuf};

use pump::Credentials;

use super::Failure;

/// The longest password file read (a password is a line; a bigger file is a mistake).
const MAX_PASSWORD_FILE: u64 = 64 * 1024;

/// How a TLS peer (couchbases://, dcps://) is trusted: `pump transfer`, `pump plan transfer`
/// (to read the source's map) and `pump worker` (for every job: jobs carry no trust, as they
/// carry no credentials).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// couchbases:// and dcps://: trust the PEM certificates of FILE (the cluster's CA).
    #[arg(long = "cacert", value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// couchbases:// and dcps://: accept any server certificate (encrypted, not authenticated).
    #[arg(long = "no-ssl-verify")]
    pub no_ssl_verify: bool,
}

/// The source's and the destination's user and password (`Debug` hides the passwords).
#[derive(clap::Args)]
pub struct CredentialArgs {
    #[command(flatten)]
    source: SourceCredentialArgs,
    /// Destination user.
    #[arg(
        short = 'U',
        long = "username-dest",
        visible_alias = "username-destination"
    )]
    username_dest: Option<String>,
    /// Destination password (readable by others in `ps`: prefer --password-dest-file or
    /// PUMP_PASSWORD_DEST).
    #[arg(
        short = 'P',
        long = "password-dest",
        visible_alias = "password-destination"
    )]
    password_dest: Option<String>,
    /// Read the destination password from the first line of FILE (`-`: standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "password_dest")]
    password_dest_file: Option<PathBuf>,
}

/// `-u/-p`: the user and password of one cluster (the source's, or the only one's); `Debug`
/// hides the password.
#[derive(clap::Args)]
pub struct SourceCredentialArgs {
    /// Source user (SASL on a data port, basic auth on a REST port).
    #[arg(short = 'u', long = "username")]
    username: Option<String>,
    /// Source password (readable by others in `ps`: prefer --password-file or PUMP_PASSWORD).
    #[arg(short = 'p', long = "password")]
    password: Option<String>,
    /// Read the source password from the first line of FILE (`-`: standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "password")]
    password_file: Option<PathBuf>,
}

impl SourceCredentialArgs {
    /// `-u` with its password, when a user is given.
    pub fn credentials(&self) -> Result<Option<Credentials>, Failure> {
        let password = password(
            self.password.as_deref(),
            self.password_file.as_deref(),
            "PUMP_PASSWORD",
        )?;
        Ok(pair(&self.username, password))
    }
}

impl CredentialArgs {
    /// `-u/-p`, when a user is given.
    pub fn source(&self) -> Result<Option<Credentials>, Failure> {
        self.source.credentials()
    }

    /// `-U/-P`, when a user is given.
    pub fn dest(&self) -> Result<Option<Credentials>, Failure> {
        let password = password(
            self.password_dest.as_deref(),
            self.password_dest_file.as_deref(),
            "PUMP_PASSWORD_DEST",
        )?;
        Ok(pair(&self.username_dest, password))
    }
}

/// `--user/--password` of a reference node: the SASL (and REST) credentials it requires;
/// `Debug` hides the password.
#[derive(Clone, clap::Args)]
pub struct NodeAuthArgs {
    /// The user the node requires of its clients (with a password).
    #[arg(long)]
    pub user: Option<String>,
    /// Its password (readable by others in `ps`: prefer --password-file or PUMP_NODE_PASSWORD).
    #[arg(long)]
    pub password: Option<String>,
    /// Read the password from the first line of FILE (`-`: standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
}

impl NodeAuthArgs {
    /// The user and password the node requires, or none; a user without a password (or the
    /// reverse) is a usage error.
    pub fn auth(&self) -> Result<Option<(String, String)>, Failure> {
        let password = password(
            self.password.as_deref(),
            self.password_file.as_deref(),
            "PUMP_NODE_PASSWORD",
        )?;
        match (&self.user, password) {
            (Some(user), Some(password)) => Ok(Some((user.clone(), password))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(Failure::Usage(
                "--user needs a password: --password, --password-file or PUMP_NODE_PASSWORD".into(),
            )),
            (None, Some(_)) if self.password.is_none() && self.password_file.is_none() => {
                // PUMP_NODE_PASSWORD alone in the environment: no user asked for, no auth.
                Ok(None)
            }
            (None, Some(_)) => Err(Failure::Usage(
                "a password needs --user (the user the node requires)".into(),
            )),
        }
    }
}

/// A password argument as `Debug` shows it: whether one was given, never what.
fn hidden(p: &Option<String>) -> Option<&'static str> {
    p.as_ref().map(|_| "***")
}

impl std::fmt::Debug for SourceCredentialArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceCredentialArgs")
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("password_file", &self.password_file)
            .finish()
    }
}

impl std::fmt::Debug for CredentialArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialArgs")
            .field("source", &self.source)
            .field("username_dest", &self.username_dest)
            .field("password_dest", &hidden(&self.password_dest))
            .field("password_dest_file", &self.password_dest_file)
            .finish()
    }
}

impl std::fmt::Debug for NodeAuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAuthArgs")
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// The password from the argument, else the file, else the variable `env`.
fn password(arg: Option<&str>, file: Option<&Path>, env: &str) -> Result<Option<String>, Failure> {
    if let Some(p) = arg {
        return Ok(Some(p.to_string()));
    }
    if let Some(f) = file {
        return read_password_file(f).map(Some);
    }
    match std::env::var(env) {
        Ok(p) => Ok(Some(p)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Failure::Usage(format!("{env}: not valid UTF-8")))
        }
    }
}

/// The first line of `path` (`-`: standard input), its line end left out. A FIFO (a shell's
/// `<(...)`) is read like a file; an empty file or one that is not text is an error naming it.
pub fn read_password_file(path: &Path) -> Result<String, Failure> {
    let name = path.display();
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_PASSWORD_FILE + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PASSWORD_FILE + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| Failure::Usage(format!("password file {name}: {e}")))?;
    if bytes.len() as u64 > MAX_PASSWORD_FILE {
        return Err(Failure::Usage(format!(
            "password file {name}: longer than {MAX_PASSWORD_FILE} bytes; it should hold the password on one line"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::Usage(format!("password file {name}: not UTF-8 text")))?;
    let line = text.split('\n').next().unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(Failure::Usage(format!(
            "password file {name}: its first line is empty"
        )));
    }
    Ok(line.to_string())
}

fn pair(user: &Option<String>, password: Option<String>) -> Option<Credentials> {
    user.as_ref().map(|user| Credentials {
        user: user.clone(),
        password: password.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Failure {
        fn text(self) -> String {
            match self {
                Failure::Usage(m) | Failure::Failed(m) | Failure::Interrupted(m) => m,
            }
        }
    }

    #[test]
    fn the_parsed_arguments_debug_never_shows_a_password() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Transfer {
            #[command(flatten)]
            credentials: CredentialArgs,
        }
        #[derive(Debug, Parser)]
        struct Node {
            #[command(flatten)]
            auth: NodeAuthArgs,
        }
        let transfer = Transfer::try_parse_from([
            "pump",
            "-u",
            "src-user",
            "-p",
            "src-Secret1",
            "-U",
            "dst-user",
            "-P",
            "dst-Secret2",
        ])
        .unwrap();
        let node =
            Node::try_parse_from(["pump", "--user", "node-user", "--password", "node-Secret3"])
                .unwrap();
        let text = format!("{transfer:?}{transfer:#?}{node:?}{node:#?}");
        for user in ["src-user", "dst-user", "node-user"] {
            assert!(text.contains(user), "{user} missing: {text}");
        }
        assert!(text.contains("***"), "{text}");
        assert!(!text.contains("Secret"), "a password in {text}");
    }

    #[test]
    fn a_password_file_gives_its_first_line_without_the_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        for (text, want) in [
            ("p@ss:w/rd\n", "p@ss:w/rd"),
            ("p@ss\r\nsecond line\n", "p@ss"),
            ("no newline", "no newline"),
            ("  spaces kept  \n", "  spaces kept  "),
        ] {
            std::fs::write(&f, text).unwrap();
            assert_eq!(read_password_file(&f).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn a_bad_password_file_is_an_error_naming_it_and_never_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        let missing = dir.path().join("absent");
        let e = read_password_file(&missing).map(|_| ()).unwrap_err().text();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        std::fs::write(&f, "\nsecret-on-line-2\n").unwrap();
        let e = read_password_file(&f).map(|_| ()).unwrap_err().text();
        assert!(
            e.contains("first line is empty") && !e.contains("secret"),
            "{e}"
        );
        std::fs::write(&f, [b's', 0xff, b'\n']).unwrap();
        let e = read_password_file(&f).map(|_| ()).unwrap_err().text();
        assert!(e.contains("not UTF-8"), "{e}");
        std::fs::write(&f, vec![b'x'; MAX_PASSWORD_FILE as usize + 1]).unwrap();
        let e = read_password_file(&f).map(|_| ()).unwrap_err().text();
        assert!(e.contains("longer than") && !e.contains("xxxx"), "{e}");
    }

    #[test]
    fn the_argument_wins_over_the_file_and_the_file_over_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        // A variable name no other test sets: tests run in threads of one process.
        let env = "PUMP_UNIT_PASSWORD_ORDER";
        // SAFETY: only this test reads or writes this variable.
        unsafe { std::env::set_var(env, "from-env") };
        assert_eq!(
            password(Some("from-arg"), Some(&f), env)
                .unwrap()
                .as_deref(),
            Some("from-arg")
        );
        assert_eq!(
            password(None, Some(&f), env).unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(
            password(None, None, env).unwrap().as_deref(),
            Some("from-env")
        );
        // SAFETY: as above.
        unsafe { std::env::remove_var(env) };
        assert_eq!(password(None, None, env).unwrap(), None);
    }
}
