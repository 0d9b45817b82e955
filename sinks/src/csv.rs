//! `csv:FILE`: one row per mutation in cbtransfer's columns
//! (`id,flags,expiration,cas,value,rev,vbid,dtype`, see `pump_formats::csv`), `value` and `rev`
//! as Python bytes literals. Deletions have no row (as in cbtransfer) and count as skipped.
//!
//! The rows go to `FILE.partial`, created new and private (mode 0600, O_EXCL, O_NOFOLLOW: a
//! file or symlink planted at that name is unlinked, never written through), given FILE's
//! final mode and renamed to FILE only when the source completed; when it did not, the
//! partial file is removed (a CSV run has no resume) and FILE is left as it was. A FILE that
//! exists is refused unless `-x overwrite=1` (the CLI's `--overwrite`). A compressed value is
//! written decompressed (its `dtype` without SNAPPY); xattrs stay in front of the body, with
//! XATTR in `dtype`, so a restore from the file keeps them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use async_trait::async_trait;
use pump::{
    BatchWriter, Delivery, Error, Message, Op, Options, Sink, SinkKind, SourceEnd, Spec, WriterSink,
};
use pump_formats::{bfd, csv as format};

use crate::values::{shaped, Takes};

/// The `csv:` kind.
pub struct CsvKind;

impl SinkKind for CsvKind {
    fn name(&self) -> &'static str {
        "csv"
    }
    fn syntax(&self) -> &'static str {
        "csv:FILE"
    }
    fn matches(&self, spec: &Spec) -> bool {
        spec.scheme() == Some("csv")
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        &["overwrite"]
    }
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Sink>, Error> {
        let path = PathBuf::from(spec.body());
        if spec.body().is_empty() {
            return Err(Error::usage(format!(
                "{spec}: no file name; expected csv:FILE"
            )));
        }
        if path.is_dir() {
            return Err(Error::usage(format!(
                "{spec}: is a directory; expected csv:FILE"
            )));
        }
        if path.exists() && !options.extra.flag("overwrite")? {
            return Err(Error::usage(format!(
                "{spec}: the file exists; pass --overwrite to replace it"
            )));
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return Err(Error::usage(format!(
                "{spec}: the directory {} does not exist",
                parent.display()
            )));
        }
        Ok(Box::new(WriterSink(CsvWriter::new(path))))
    }
}

/// Writes rows to a temporary file and renames it on a complete run.
pub struct CsvWriter {
    path: PathBuf,
    partial: PathBuf,
    out: Option<::csv::Writer<BufWriter<File>>>,
    field: Vec<u8>,
    rev: Vec<u8>,
}

impl CsvWriter {
    /// A writer of `path`.
    pub fn new(path: PathBuf) -> Self {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("out.csv")
            .to_string();
        let partial = path.with_file_name(bfd::partial_name(&name));
        CsvWriter {
            path,
            partial,
            out: None,
            field: Vec::new(),
            rev: Vec::new(),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::sink(
            format!("csv:{}", self.path.display()),
            format!("{}: {e}", self.partial.display()),
        )
    }

    fn open(&mut self) -> Result<(), Error> {
        let file = pump_files::replace_private(&self.partial).map_err(|e| self.err(e))?;
        let mut w = ::csv::WriterBuilder::new()
            .terminator(::csv::Terminator::CRLF)
            .from_writer(BufWriter::with_capacity(1 << 20, file));
        w.write_record(format::COLUMNS).map_err(|e| self.err(e))?;
        self.out = Some(w);
        Ok(())
    }
}

#[async_trait]
impl BatchWriter for CsvWriter {
    async fn check(&mut self, _ctx: &pump::Context) -> Result<(), Error> {
        if self.path.is_dir() {
            return Err(self.err("is a directory"));
        }
        crate::writable::dir_takes_files(crate::writable::parent_of(&self.path))
            .map_err(|e| Error::sink(format!("csv:{}", self.path.display()), e))
    }

    async fn write(&mut self, messages: Vec<Message>) -> Result<Delivery, Error> {
        if self.out.is_none() {
            self.open()?;
        }
        let mut delivery = Delivery::default();
        let (mut field, mut rev) = (
            std::mem::take(&mut self.field),
            std::mem::take(&mut self.rev),
        );
        let mut result = Ok(());
        if let Some(out) = self.out.as_mut() {
            for m in &messages {
                if m.op != Op::Mutation {
                    delivery.skip(m.op);
                    continue;
                }
                // Decompressed (the dtype column loses SNAPPY); xattrs stay, with XATTR.
                let (datatype, value) = shaped(m.datatype, &m.value, Takes::UNCOMPRESSED);
                field.clear();
                format::write_bytes_literal(&value, &mut field);
                rev.clear();
                format::write_bytes_literal(&bfd::meta_column(m.rev_seqno, &m.meta), &mut rev);
                let (flags, expiry, cas) =
                    (m.flags.to_string(), m.expiry.to_string(), m.cas.to_string());
                let (vbid, dtype) = (m.vbucket.to_string(), datatype.to_string());
                let row: [&[u8]; 8] = [
                    &m.key,
                    flags.as_bytes(),
                    expiry.as_bytes(),
                    cas.as_bytes(),
                    &field,
                    &rev,
                    vbid.as_bytes(),
                    dtype.as_bytes(),
                ];
                if let Err(e) = out.write_record(row) {
                    result = Err(e);
                    break;
                }
                delivery.written += 1;
            }
        }
        self.field = field;
        self.rev = rev;
        result.map_err(|e| self.err(e))?;
        Ok(delivery)
    }

    async fn finish(&mut self, end: SourceEnd) -> Result<(), Error> {
        if self.out.is_none() && end == SourceEnd::Complete {
            self.open()?;
        }
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let file = out
            .into_inner()
            .map_err(|e| self.err(e.error()))?
            .into_inner()
            .map_err(|e| self.err(e.error()))?;
        if end != SourceEnd::Complete {
            drop(file);
            let _ = std::fs::remove_file(&self.partial);
            eprintln!(
                "csv:{}: the source did not complete; nothing was written to it (its partial rows, {}, are removed)",
                self.path.display(),
                self.partial.display()
            );
            return Ok(());
        }
        file.sync_all().map_err(|e| self.err(e))?;
        pump_files::Perms::for_name(&self.path)
            .apply(&file)
            .map_err(|e| self.err(e))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| self.err(e))?;
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_compressed_value_is_written_decompressed_and_xattrs_stay() {
        use pump_protocol::datatype::{build_xattrs, compress, JSON, SNAPPY, XATTR};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut w = CsvWriter::new(path.clone());
        let mut with_x = build_xattrs(&[(b"_s", b"1")]).to_vec();
        with_x.extend_from_slice(b"{}");
        w.write(vec![
            Message {
                datatype: SNAPPY | JSON,
                ..Message::mutation("z", compress(b"{\"zip\":1}"))
            },
            Message {
                datatype: SNAPPY | XATTR | JSON,
                ..Message::mutation("x", compress(&with_x))
            },
        ])
        .await
        .unwrap();
        w.finish(SourceEnd::Complete).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("z,0,0,0,\"b'{\"\"zip\"\":1}'\",b'',0,1\r\n"),
            "{text}"
        );
        assert!(text.contains("_s\\x001\\x00{}',b'',0,5\r\n"), "{text}");
    }

    #[tokio::test]
    async fn rows_are_written_as_cbtransfer_does_and_renamed_on_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut w = CsvWriter::new(path.clone());
        let d = w
            .write(vec![
                Message {
                    flags: 2,
                    expiry: 3,
                    cas: 4,
                    vbucket: 5,
                    rev_seqno: 6,
                    ..Message::mutation("k,1", "it's")
                },
                Message::deletion("gone"),
            ])
            .await
            .unwrap();
        assert_eq!((d.written, d.skipped), (1, 1));
        assert!(!path.exists());
        w.finish(SourceEnd::Complete).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "id,flags,expiration,cas,value,rev,vbid,dtype\r\n\"k,1\",2,3,4,\"b\"\"it's\"\"\",b'6',5,0\r\n"
        );
    }

    #[tokio::test]
    async fn an_incomplete_run_leaves_neither_the_file_nor_its_partial_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        for end in [SourceEnd::Failed, SourceEnd::Cancelled] {
            let mut w = CsvWriter::new(path.clone());
            w.write(vec![Message::mutation("k", "v")]).await.unwrap();
            assert!(dir.path().join("out.csv.partial").exists());
            w.finish(end).await.unwrap();
            assert!(!path.exists());
            assert!(!dir.path().join("out.csv.partial").exists());
        }
    }

    #[tokio::test]
    async fn the_partial_file_is_private_and_the_file_gets_its_final_mode_at_rename() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let partial = dir.path().join("out.csv.partial");
        let mode = |p: &std::path::Path| {
            std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
        };
        // A symlink planted at the partial name points at a file no one may read.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, &partial).unwrap();
        let mut w = CsvWriter::new(path.clone());
        w.write(vec![Message::mutation("k", "v")]).await.unwrap();
        assert_eq!(mode(&partial), 0o600);
        assert!(!std::fs::symlink_metadata(&partial)
            .unwrap()
            .file_type()
            .is_symlink());
        w.finish(SourceEnd::Complete).await.unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        assert_eq!(mode(&victim), 0o600);
        assert_eq!(mode(&path), 0o666 & !pump_files::umask());
        // Written again over a file of mode 0640: the file keeps 0640.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut w = CsvWriter::new(path.clone());
        w.write(vec![Message::mutation("k", "w")]).await.unwrap();
        w.finish(SourceEnd::Complete).await.unwrap();
        assert_eq!(mode(&path), 0o640);
        assert!(std::fs::read_to_string(&path).unwrap().contains("b'w'"));
    }
}
