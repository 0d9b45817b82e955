//! Specs: what names a source or a sink on the command line (`kind:...`, `kind://user:pass@
//! host:port/path?query`, a bare path), and vbucket lists (`-l 500,612,700-712`).
//!
//! ```text
//! input     specs built from schemes pump knows and any, users and passwords with ':', '@'
//!           and '%', hosts (names, IPv4, [IPv6]), ports in and out of range, paths,
//!           key=value bodies; vbucket lists with ranges, spaces and junk; then damaged by
//!           edits (as bytes, read back as text)
//! checks    no panic in parse, scheme, body, authority, params, credentials, addr, Display;
//!           a parsed spec keeps its text; a vbucket set lists only what it contains
//! ```

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use pump::spec::{Spec, VbucketSet};

use crate::mutate::{apply, edits, Edit};

fn spec_text() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("gen"),
        Just("csv"),
        Just("memcached"),
        Just("tap"),
        Just("dcp"),
        Just("couchbase"),
        Just("http"),
        Just("meta2"),
        Just("stdout"),
        Just("blackhole"),
        Just("C"),
        Just("x+y.z-w"),
        Just(""),
    ];
    let userinfo = prop_oneof![
        Just(String::new()),
        "[a-z]{1,6}@",
        "[a-z]{1,6}:[ -~]{0,10}@",
        Just("admin:p@ssW0RD@".to_string()),
        Just("u:%40%3A@".to_string()),
    ];
    let host = prop_oneof![
        Just("127.0.0.1".to_string()),
        Just("[::1]".to_string()),
        Just("[::1".to_string()),
        "[a-z0-9.-]{0,12}",
    ];
    let port = prop_oneof![
        Just(String::new()),
        (0u32..70000).prop_map(|p| format!(":{p}")),
        Just(":".to_string()),
        Just(":99999999999".to_string()),
    ];
    let tail = prop_oneof![
        Just(String::new()),
        "/[a-z/]{0,10}",
        "\\?[a-z=&]{0,12}",
        "[a-z_-]{1,8}=[ -~]{0,8}(,[a-z_-]{1,8}=[ -~]{0,8}){0,3}",
    ];
    prop_oneof![
        4 => (scheme.clone(), userinfo, host, port, tail)
            .prop_map(|(s, u, h, p, t)| format!("{s}://{u}{h}{p}{t}")),
        2 => (scheme, "[ -~]{0,30}").prop_map(|(s, rest)| format!("{s}:{rest}")),
        1 => "[ -~]{0,30}",
        1 => "/[ -~]{0,20}",
    ]
}

fn vbucket_list() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        any::<u16>().prop_map(|n| n.to_string()),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u16..1100, 0u16..1100).prop_map(|(a, b)| format!(" {a} - {b} ")),
        "[ -~]{0,4}",
    ];
    prop::collection::vec(item, 0..5).prop_map(|v| v.join(","))
}

/// Input: a spec and a vbucket list, each damaged by edits.
pub type Input = (String, Vec<Edit>, String, Vec<Edit>);

fn input() -> impl Strategy<Value = Input> {
    (spec_text(), edits(3), vbucket_list(), edits(2))
}

fn check((spec, e, list, le): &Input) -> Result<(), String> {
    let text = String::from_utf8_lossy(&apply(spec.as_bytes(), e, None)).into_owned();
    if let Ok(s) = Spec::parse(&text) {
        if s.raw() != text {
            return Err(format!("{text:?} parsed keeps {:?}", s.raw()));
        }
        let _ = (s.scheme(), s.body(), s.to_string(), s.params());
        if let Ok(a) = s.authority() {
            let _ = (a.addr(), a.credentials(None));
        }
    }
    let list = String::from_utf8_lossy(&apply(list.as_bytes(), le, None)).into_owned();
    if let Ok(set) = VbucketSet::parse(&list) {
        for vb in set.iter().take(70_000) {
            if !set.contains(vb) {
                return Err(format!("{list:?}: {vb} listed but not contained"));
            }
        }
        let _ = (set.is_empty(), set.to_list_string());
    }
    Ok(())
}

/// The target.
pub fn run(runner: &mut TestRunner) -> Result<(), String> {
    crate::check_all(runner, input(), check)
}
