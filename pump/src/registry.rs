//! The registry of source and sink kinds. The engine knows no kind by name: the binary fills
//! a [`Registry`] with every kind of `pump-sources` and `pump-sinks`, and a spec picks one.

use crate::error::Error;
use crate::options::Options;
use crate::pipeline::{Sink, Source};
use crate::spec::Spec;

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

    /// Every source kind, in registration order.
    pub fn sources(&self) -> impl Iterator<Item = &dyn SourceKind> {
        self.sources.iter().map(|k| k.as_ref())
    }

    /// Every sink kind, in registration order.
    pub fn sinks(&self) -> impl Iterator<Item = &dyn SinkKind> {
        self.sinks.iter().map(|k| k.as_ref())
    }
}
