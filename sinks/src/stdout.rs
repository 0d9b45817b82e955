//! `stdout:`: one line per message, in memcached's text form:
//!
//! ```text
//! set <key> <flags> <expiry> <bytes> <vbucket>\r\n<value>\r\n
//! delete <key> <vbucket>\r\n
//! ```
//!
//! The value is the document body as a reader wants it: decompressed, without its xattrs.

use std::io::Write;

use async_trait::async_trait;
use pump::{BatchWriter, Delivery, Error, Message, Op, Options, Sink, SinkKind, Spec, WriterSink};

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
        Ok(Box::new(WriterSink(StdoutWriter)))
    }
}

/// Writes each message to standard output.
pub struct StdoutWriter;

/// Appends the text form of `m` to `out`.
pub fn format_message(m: &Message, out: &mut Vec<u8>) {
    let key = m.key_display();
    match m.op {
        Op::Mutation => {
            let (_, value) =
                crate::values::shaped(m.datatype, &m.value, crate::values::Takes::BODY);
            let _ = write!(
                out,
                "set {key} {} {} {} {}\r\n",
                m.flags,
                m.expiry,
                value.len(),
                m.vbucket
            );
            out.extend_from_slice(&value);
            out.extend_from_slice(b"\r\n");
        }
        Op::Deletion | Op::Expiration => {
            let _ = write!(out, "delete {key} {}\r\n", m.vbucket);
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

    async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error> {
        let mut buf = Vec::with_capacity(messages.iter().map(|m| m.size() + 48).sum());
        for m in &messages {
            format_message(m, &mut buf);
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
    fn mutations_and_deletions_have_their_text_form() {
        let mut out = Vec::new();
        format_message(
            &Message {
                flags: 3,
                expiry: 9,
                vbucket: 528,
                ..Message::mutation("hello", "world")
            },
            &mut out,
        );
        format_message(
            &Message {
                vbucket: 1,
                ..Message::deletion("gone")
            },
            &mut out,
        );
        assert_eq!(out, b"set hello 3 9 5 528\r\nworld\r\ndelete gone 1\r\n");
    }
}
