//! `stdout:`: one line per message, in memcached's text form:
//!
//! ```text
//! set <key> <flags> <expiry> <bytes> <vbucket>\r\n<value>\r\n
//! delete <key> <vbucket>\r\n
//! ```
//!
//! The value is the document body as a reader wants it: decompressed, without its xattrs.
//! A message outside the default collection ends its line with the scope and collection it is
//! in (after `--map-data`), and one of a collection the source never named with its id:
//!
//! ```text
//! set <key> <flags> <expiry> <bytes> <vbucket> <scope>.<collection>\r\n<value>\r\n
//! delete <key> <vbucket> <scope>.<collection>\r\n
//! ```

use std::io::Write;

use async_trait::async_trait;
use pump::{
    BatchWriter, CollectionNames, Delivery, Error, Message, Op, Options, Sink, SinkKind, Spec,
    WriterSink,
};

/// The `stdout:` kind.
pub struct StdoutKind;

impl SinkKind for StdoutKind {
    fn name(&self) -> &'static str {
        "stdout"
    }
    fn syntax(&self) -> &'static str {
        "stdout:"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("stdout")
    }
    fn open(&self, _spec: &Spec, _options: &Options) -> Result<Box<dyn Sink>, Error> {
        Ok(Box::new(WriterSink(StdoutWriter::default())))
    }
}

/// Writes each message to standard output.
#[derive(Default)]
pub struct StdoutWriter {
    /// The run's collection names (set by `begin`).
    names: CollectionNames,
}

/// Appends the text form of `m` to `out`; `names` names its collection when it is not the
/// default one.
pub fn format_message(m: &Message, names: &CollectionNames, out: &mut Vec<u8>) {
    let key = m.key_display();
    let place = match names.path(m.collection) {
        Some(p) if p.is_default() => String::new(),
        Some(p) => format!(" {}.{}", p.scope, p.collection),
        None => format!(" collection-{:#x}", m.collection),
    };
    match m.op {
        Op::Mutation => {
            let (_, value) =
                crate::values::shaped(m.datatype, &m.value, crate::values::Takes::BODY);
            let _ = write!(
                out,
                "set {key} {} {} {} {}{place}\r\n",
                m.flags,
                m.expiry,
                value.len(),
                m.vbucket
            );
            out.extend_from_slice(&value);
            out.extend_from_slice(b"\r\n");
        }
        Op::Deletion | Op::Expiration => {
            let _ = write!(out, "delete {key} {}{place}\r\n", m.vbucket);
        }
        Op::Control(code) => {
            let _ = write!(out, "control {code} {key} {}\r\n", m.vbucket);
        }
    }
}

#[async_trait]
impl BatchWriter for StdoutWriter {
    async fn check(&mut self, _ctx: &pump::Context) -> Result<(), Error> {
        Ok(())
    }

    fn begin(&mut self, ctx: &pump::Context) {
        self.names = ctx.collection_names();
    }

    async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error> {
        let mut buf = Vec::with_capacity(messages.iter().map(|m| m.size() + 48).sum());
        for m in &messages {
            format_message(m, &self.names, &mut buf);
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&buf)
            .and_then(|_| out.flush())
            .map_err(|e| Error::sink("stdout:", e))?;
        Ok(Delivery::all(messages.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_outside_the_default_collection_names_its_scope_and_collection() {
        use pump_protocol::collections::{Collection, Manifest, Scope};
        let names = CollectionNames::default();
        let mut m = Manifest {
            uid: 2,
            ..Manifest::default()
        };
        m.scopes.push(Scope {
            name: "s1".into(),
            uid: 8,
            collections: vec![Collection {
                name: "c1".into(),
                uid: 9,
                max_ttl: None,
            }],
        });
        names.run.publish(m);
        let mut out = Vec::new();
        for (collection, key) in [(9, "in-c1"), (0, "plain"), (0x77, "stray")] {
            format_message(
                &Message {
                    collection,
                    vbucket: 4,
                    ..Message::mutation(key, "v")
                },
                &names,
                &mut out,
            );
        }
        format_message(
            &Message {
                collection: 9,
                vbucket: 4,
                ..Message::deletion("gone")
            },
            &names,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "set in-c1 0 0 1 4 s1.c1\r\nv\r\nset plain 0 0 1 4\r\nv\r\nset stray 0 0 1 4 collection-0x77\r\nv\r\ndelete gone 4 s1.c1\r\n"
        );
        // --map-data moves what is shown.
        let names = CollectionNames {
            rules: std::sync::Arc::new(
                pump::DataRules::parse(None, None, Some("default.s1.c1=default.s2.c9")).unwrap(),
            ),
            bucket: "default".into(),
            ..names
        };
        let mut out = Vec::new();
        format_message(
            &Message {
                collection: 9,
                ..Message::mutation("k", "v")
            },
            &names,
            &mut out,
        );
        assert_eq!(out, b"set k 0 0 1 0 s2.c9\r\nv\r\n");
    }

    #[test]
    fn mutations_and_deletions_have_their_text_form() {
        let mut out = Vec::new();
        format_message(
            &Message {
                flags: 3,
                expiry: 9,
                vbucket: 528,
                ..Message::mutation("hello", "world")
            },
            &CollectionNames::default(),
            &mut out,
        );
        format_message(
            &Message {
                vbucket: 1,
                ..Message::deletion("gone")
            },
            &CollectionNames::default(),
            &mut out,
        );
        assert_eq!(out, b"set hello 3 9 5 528\r\nworld\r\ndelete gone 1\r\n");
    }
}
