//! The registry of source and sink kinds. The engine knows no kind by name: the binary fills
//! a [`Registry`] with every kind of `pump-sources` and `pump-sinks`, and a spec picks one.

use crate::error::Error;
use crate::options::Options;
use crate::pipeline::{Sink, Source};
use crate::spec::Spec;

/// What a kind's messages are: a sink takes only what it can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Key-value items of vbuckets (mutations, deletions, expirations).
    Items,
    /// Messages in a format a kind defines, named in the user's words (`"a meta2 base"`:
    /// rows and control messages, `pump_meta2::codec`). Only a sink of the same format (or a
    /// blackhole) takes them; the engine knows the format by this name only.
    Format(&'static str),
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Payload::Items => "key-value items",
            Payload::Format(name) => name,
        })
    }
}

/// A kind of source: how its spec looks and how to open it. `open` validates without I/O
/// where it can; connecting happens when the source runs.
pub trait SourceKind: Send + Sync {
    /// Short name (`gen`, `backup`, `memcached`).
    fn name(&self) -> &'static str;
    /// The spec syntax, for `pump kinds` and error messages.
    fn syntax(&self) -> &'static str;
    /// True when this kind handles the spec.
    fn matches(&self, spec: &Spec) -> bool;
    /// `-x` keys this kind reads besides the engine's.
    fn extra_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// What its messages are.
    fn payload(&self) -> Payload {
        Payload::Items
    }
    /// Builds the source.
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Source>, Error>;
}

/// A kind of sink; see [`SourceKind`].
pub trait SinkKind: Send + Sync {
    /// Short name.
    fn name(&self) -> &'static str;
    /// The spec syntax.
    fn syntax(&self) -> &'static str;
    /// True when this kind handles the spec.
    fn matches(&self, spec: &Spec) -> bool;
    /// `-x` keys this kind reads besides the engine's.
    fn extra_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// True when it can write messages of this payload.
    fn takes(&self, payload: Payload) -> bool {
        payload == Payload::Items
    }
    /// Builds the sink.
    fn open(&self, spec: &Spec, options: &Options) -> Result<Box<dyn Sink>, Error>;
}

/// Every kind the binary (or an embedder) knows.
#[derive(Default)]
pub struct Registry {
    sources: Vec<Box<dyn SourceKind>>,
    sinks: Vec<Box<dyn SinkKind>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a source kind. Earlier kinds win when two match.
    pub fn add_source(&mut self, kind: impl SourceKind + 'static) -> &mut Self {
        self.sources.push(Box::new(kind));
        self
    }

    /// Adds a sink kind.
    pub fn add_sink(&mut self, kind: impl SinkKind + 'static) -> &mut Self {
        self.sinks.push(Box::new(kind));
        self
    }

    /// The source kind for a spec, or a usage error listing what is known.
    pub fn source_kind(&self, spec: &Spec) -> Result<&dyn SourceKind, Error> {
        self.sources
            .iter()
            .find(|k| k.matches(spec))
            .map(|k| k.as_ref())
            .ok_or_else(|| {
                let known: Vec<_> = self.sources.iter().map(|k| k.syntax()).collect();
                Error::usage(format!(
                    "{spec}: not a source this pump knows; sources are: {}",
                    known.join(" | ")
                ))
            })
    }

    /// The sink kind for a spec, or a usage error listing what is known.
    pub fn sink_kind(&self, spec: &Spec) -> Result<&dyn SinkKind, Error> {
        self.sinks
            .iter()
            .find(|k| k.matches(spec))
            .map(|k| k.as_ref())
            .ok_or_else(|| {
                let known: Vec<_> = self.sinks.iter().map(|k| k.syntax()).collect();
                Error::usage(format!(
                    "{spec}: not a sink this pump knows; sinks are: {}",
                    known.join(" | ")
                ))
            })
    }

    /// The kinds of a transfer from `source` to `sink`, or a usage error when either is
    /// unknown or the sink cannot write what the source gives (a meta2 base into memcached,
    /// items into a meta2 base).
    pub fn pair(
        &self,
        source: &Spec,
        sink: &Spec,
    ) -> Result<(&dyn SourceKind, &dyn SinkKind), Error> {
        let (from, to) = (self.source_kind(source)?, self.sink_kind(sink)?);
        if !to.takes(from.payload()) {
            return Err(Error::usage(format!(
                "{sink} cannot take what {source} gives ({})",
                from.payload()
            )));
        }
        Ok((from, to))
    }

    /// Every source kind, in registration order.
    pub fn sources(&self) -> impl Iterator<Item = &dyn SourceKind> {
        self.sources.iter().map(|k| k.as_ref())
    }

    /// Every sink kind, in registration order.
    pub fn sinks(&self) -> impl Iterator<Item = &dyn SinkKind> {
        self.sinks.iter().map(|k| k.as_ref())
    }
}
