//! Every source and sink kind this binary knows: the `pump-sources` and `pump-sinks` crates
//! registered into one [`pump::Registry`]. The command line and the repair phases (which
//! transfer through the pump) both take it from here.

/// Every source and sink kind this binary knows.
pub fn registry() -> pump::Registry {
    let mut r = pump::Registry::new();
    pump_sources::register(&mut r);
    pump_sinks::register(&mut r);
    r
}
