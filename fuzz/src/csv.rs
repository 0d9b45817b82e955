//! The CSV source ([`pump_sources::csv::CsvSource`]) on text, and the CSV sink's output read
//! back.
//!
//! ```text
//! text      cbtransfer's header (or columns left out, reordered, unknown), rows of ids,
//!           numbers that are and are not numbers, b'...' literals with escapes, plain text,
//!           quotes, commas and line breaks, then damaged by edits
//! messages  mutations with any key (not empty), value, flags, expiry, cas, rev seqno (or
//!           meta bytes), vbucket and datatype, written by the CSV sink
//! checks    no panic; an error names the file; what the sink wrote reads back equal
//! ```

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use pump::{BatchWriter, Context, Message, Options, Source, SourceEnd};

use crate::mutate::{apply, edits, number_text, Edit};

/// A field of a `b'...'` literal or plain text.
fn bytes_field() -> impl Strategy<Value = String> {
    prop_oneof![
        "b'[ -~]{0,20}'",
        r"b'(\\x[0-9a-f]{2}|\\[nrt\\']|[a-z]){0,12}'",
        "b\"[a-z']{0,8}\"",
        "[ -~]{0,20}",
        Just("b'".to_string()),
        Just(r"b'\x4'".to_string()),
        Just(r"b'\q'".to_string()),
    ]
}

fn row() -> impl Strategy<Value = Vec<String>> {
    (
        prop_oneof!["[a-z0-9_]{1,12}", "[ -~]{0,12}", Just(String::new())],
        number_text(),
        number_text(),
        number_text(),
        bytes_field(),
        bytes_field(),
        number_text(),
        number_text(),
    )
        .prop_map(|(id, flags, exp, cas, value, rev, vbid, dtype)| {
            vec![id, flags, exp, cas, value, rev, vbid, dtype]
        })
}

/// Quotes a field as the csv crate writes it when needed.
fn quoted(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// A whole file: a header (columns kept, dropped or shuffled by `shape`), rows, edits.
#[derive(Debug, Clone)]
pub struct Text {
    shape: u8,
    rows: Vec<Vec<String>>,
    edits: Vec<Edit>,
}

impl Text {
    fn render(&self) -> Vec<u8> {
        let columns = [
            "id",
            "flags",
            "expiration",
            "cas",
            "value",
            "rev",
            "vbid",
            "dtype",
        ];
        let order: Vec<usize> = match self.shape % 4 {
            0 => (0..8).collect(),
            1 => vec![0, 4],
            2 => vec![4, 0, 1, 7, 6],
            _ => vec![1, 2, 3],
        };
        let mut out = String::new();
        let head: Vec<&str> = order.iter().map(|&i| columns[i]).collect();
        out.push_str(&head.join(","));
        out.push_str("\r\n");
        for r in &self.rows {
            let fields: Vec<String> = order.iter().map(|&i| quoted(&r[i])).collect();
            out.push_str(&fields.join(","));
            out.push_str(if self.shape & 4 == 0 { "\r\n" } else { "\n" });
        }
        apply(out.as_bytes(), &self.edits, None)
    }
}

/// A mutation the CSV format carries whole: rev seqno or meta (not both: the one column holds
/// either), meta not all digits (that reads back as a rev seqno), vbucket below 65535 (that
/// one means "compute from the key").
fn message() -> impl Strategy<Value = Message> {
    (
        prop::collection::vec(any::<u8>(), 1..24),
        prop::collection::vec(any::<u8>(), 0..80),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        prop_oneof![
            (1u64..u64::MAX).prop_map(|r| (r, Vec::new())),
            prop::collection::vec(any::<u8>(), 0..12).prop_map(|m| (0, m)),
        ],
        0u16..65535,
        any::<u8>(),
    )
        .prop_map(
            |(key, value, flags, expiry, cas, (rev, meta), vbucket, datatype)| {
                let meta = if meta.iter().all(u8::is_ascii_digit) && !meta.is_empty() {
                    [meta, b"x".to_vec()].concat()
                } else {
                    meta
                };
                Message {
                    flags,
                    expiry,
                    cas,
                    rev_seqno: rev,
                    meta: meta.into(),
                    vbucket,
                    datatype,
                    ..Message::mutation(key, value)
                }
            },
        )
}

/// Input: text to read, or messages to write and read back.
#[derive(Debug, Clone)]
pub enum Input {
    Text(Text),
    RoundTrip(Vec<Message>),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => (any::<u8>(), prop::collection::vec(row(), 0..6), edits(4))
            .prop_map(|(shape, rows, edits)| Input::Text(Text { shape, rows, edits })),
        2 => prop::collection::vec(message(), 1..8).prop_map(Input::RoundTrip),
    ]
}

/// Every message the CSV source reads from `path`.
pub fn read(path: &Path) -> Result<Vec<Message>, String> {
    crate::runtime().block_on(async {
        let stats = std::sync::Arc::new(pump::Stats::default());
        let cancel = tokio_util::sync::CancellationToken::new();
        let (tx, rx) =
            pump::channel::bounded(1000, 1 << 30, pump::Filter::default(), stats, cancel);
        let ctx = Context::new(Options::default());
        let source = Box::new(pump_sources::csv::CsvSource::new(path.to_path_buf(), 1024));
        let reading = tokio::spawn(source.run(tx, ctx));
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend(b.messages);
        }
        reading
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(out)
    })
}

fn check(dir: &Path, input: &Input) -> Result<(), String> {
    let path = dir.join("in.csv");
    match input {
        Input::Text(t) => {
            std::fs::write(&path, t.render()).map_err(|e| e.to_string())?;
            if let Err(e) = read(&path) {
                if !e.contains(&path.display().to_string()) {
                    return Err(format!("an error that does not name the file: {e}"));
                }
            }
            Ok(())
        }
        Input::RoundTrip(sent) => {
            let _ = std::fs::remove_file(&path);
            crate::runtime().block_on(async {
                let mut w = pump_sinks::csv::CsvWriter::new(path.clone());
                w.write(sent.clone()).await.map_err(|e| e.to_string())?;
                w.finish(SourceEnd::Complete)
                    .await
                    .map_err(|e| e.to_string())
            })?;
            let got =
                read(&path).map_err(|e| format!("the sink's file does not read back: {e}"))?;
            let view = |m: &Message| {
                (
                    m.key.to_vec(),
                    m.value.to_vec(),
                    m.flags,
                    m.expiry,
                    m.cas,
                    m.rev_seqno,
                    m.meta.to_vec(),
                    m.vbucket,
                    m.datatype,
                )
            };
            // The sink's contract: a value flagged SNAPPY that is snappy is written
            // decompressed, without the flag; any other value as it is.
            let written = |m: &Message| match pump_protocol::datatype::inflate(
                m.datatype,
                &m.value,
                pump_sinks::values::MAX_VALUE,
            ) {
                Ok((datatype, value)) => Message {
                    datatype,
                    value,
                    ..m.clone()
                },
                Err(_) => m.clone(),
            };
            let (a, b): (Vec<_>, Vec<_>) = (
                sent.iter().map(|m| view(&written(m))).collect(),
                got.iter().map(view).collect(),
            );
            if a != b {
                return Err(format!("written {a:?}\nread back {b:?}"));
            }
            Ok(())
        }
    }
}

/// The target.
pub fn run(runner: &mut TestRunner) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("pump-fuzz-csv-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let d = dir.path().to_path_buf();
    crate::check_all(runner, input(), move |i| check(&d, i))
}
