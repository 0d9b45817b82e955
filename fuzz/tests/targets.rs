//! 1,000 cases of each fuzz target (`pump_fuzz::TEST_CASES`), from a new random seed each run
//! (printed with a failure; `PUMP_FUZZ_SEED=N` replays it).

fn run(name: &str) {
    let seed = std::env::var("PUMP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let target = pump_fuzz::target(name).expect("a target");
    let mut runner = pump_fuzz::runner(pump_fuzz::TEST_CASES, seed);
    let before = pump_fuzz::cases_run();
    if let Err(e) = (target.run)(&mut runner) {
        panic!("{name}: PUMP_FUZZ_SEED={seed}: {e}");
    }
    assert!(
        pump_fuzz::cases_run() - before >= u64::from(pump_fuzz::TEST_CASES),
        "{name}: fewer cases than asked"
    );
}

#[test]
fn frame() {
    run("frame");
}

#[test]
fn tap() {
    run("tap");
}

#[test]
fn dcp() {
    run("dcp");
}

#[test]
fn cbb() {
    run("cbb");
}

#[test]
fn csv() {
    run("csv");
}

#[test]
fn meta2_codec() {
    run("meta2_codec");
}

#[test]
fn rest_json() {
    run("rest_json");
}

#[test]
fn spec() {
    run("spec");
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = pump_fuzz::TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "frame",
            "tap",
            "dcp",
            "cbb",
            "csv",
            "meta2_codec",
            "rest_json",
            "spec"
        ]
    );
}
