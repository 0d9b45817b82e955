//! The corpus of damaged backup files (issue 18's cases on a small real file), as regression
//! cases: each is refused by the restore reader with an error that names the file and says
//! where (page, row, table or journal); without the page checks the damaged pages read short
//! or twice, which shows each file holds the damage it is named after.

use pump_formats::sqlite_file::Verify;

/// (file, what the error must say)
const CASES: &[(&str, &[&str])] = &[
    ("root-cell-count-minus-1", &["page 2: "]),
    ("leaf-cell-count-minus-5", &["page ", "do not fill"]),
    ("leaf-cell-count-plus-1", &["page "]),
    ("leaf-cell-pointer-repeated", &["page ", "rowid"]),
    ("root-children-swapped", &["page ", "rowid"]),
    (
        "flg-4294967297",
        &[
            "row 200 (rowid 200)",
            "flg 4294967297 is not 0 to 4294967295",
        ],
    ),
    (
        "exp-99999999999",
        &["row 200 (rowid 200)", "exp 99999999999 is not 0 to"],
    ),
    (
        "dtype-300",
        &["row 200 (rowid 200)", "dtype 300 is not 0 to 255"],
    ),
    ("unknown-cmd", &["row 100 (rowid 100)", "unknown cmd 0x7"]),
    ("cbb_msg-dropped", &["no table cbb_msg", "table other"]),
    ("cbb_msg-a-view", &["cbb_msg is a view, not a table"]),
    ("garbage-journal", &["-journal: a rollback journal beside"]),
];

/// A copy of corpus file `name` (and its journal) in `dir`, as a data file.
fn copy(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let from = pump_fuzz::cbb::corpus_dir().join(format!("{name}.cbb"));
    let to = dir.join("data-0000.cbb");
    std::fs::copy(&from, &to).unwrap();
    let mut j = from.into_os_string();
    j.push("-journal");
    if std::path::Path::new(&j).exists() {
        std::fs::copy(&j, dir.join("data-0000.cbb-journal")).unwrap();
    }
    to
}

#[test]
fn every_corpus_file_is_refused_naming_the_file_and_where() {
    let names: Vec<String> = pump_fuzz::cbb::corpus()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let mut listed: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
    listed.sort();
    assert_eq!(names, listed, "every corpus file has its case here");
    for (name, want) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let path = copy(dir.path(), name);
        let err = pump_sources::backup::read_data_file(&path, Verify::Quick)
            .err()
            .unwrap_or_else(|| panic!("{name}: read without an error"));
        assert!(err.contains(&path.display().to_string()), "{name}: {err}");
        for w in *want {
            assert!(err.contains(w), "{name}: {err}");
        }
    }
}

#[test]
fn without_page_checks_the_damaged_pages_read_short_or_twice() {
    for name in [
        "root-cell-count-minus-1",
        "leaf-cell-count-minus-5",
        "leaf-cell-pointer-repeated",
        "root-children-swapped",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = copy(dir.path(), name);
        let read = pump_sources::backup::read_data_file(&path, Verify::None);
        let Ok(messages) = read else {
            continue;
        };
        let keys: std::collections::BTreeSet<&[u8]> = messages.iter().map(|m| &m.key[..]).collect();
        let in_order = messages
            .windows(2)
            .all(|w| key_number(&w[0].key) < key_number(&w[1].key));
        assert!(
            keys.len() < 400 || !in_order,
            "{name}: {} rows, {} keys, in order: {in_order}",
            messages.len(),
            keys.len()
        );
    }
}

fn key_number(k: &[u8]) -> u64 {
    std::str::from_utf8(&k[4..]).unwrap().parse().unwrap()
}
