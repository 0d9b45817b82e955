use super::*;
use rusqlite::types::Value;
use rusqlite::Connection;

/// A fixed pseudo-random sequence (xorshift), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A value of any storage class, with the cases SQLite orders specially: integers beside
/// reals of the same value, text differing only in case or in trailing spaces, empty text and
/// blobs, and sizes that spill into overflow pages.
fn value(rng: &mut Rng, big: bool) -> Value {
    let words = ["a", "A", "b", "B ", "b", "ab", "aB", "", "z  ", "Z"];
    match rng.below(9) {
        0 => Value::Null,
        1 => Value::Integer(rng.below(7) as i64 - 3),
        2 => Value::Integer(rng.next() as i64),
        3 => Value::Real((rng.below(13) as f64 - 6.0) / 2.0),
        4 => Value::Real(
            f64::from_bits(rng.next() >> 2) * if rng.below(2) == 0 { 1.0 } else { -1.0 },
        ),
        5 => Value::Text(words[rng.below(words.len() as u64) as usize].to_string()),
        6 => {
            let n = if big { rng.below(3000) } else { rng.below(40) };
            Value::Text(
                (0..n)
                    .map(|i| (b'a' + ((i + rng.below(3)) % 26) as u8) as char)
                    .collect(),
            )
        }
        7 => Value::Blob(vec![rng.below(3) as u8; rng.below(4) as usize]),
        _ => {
            let n = if big { rng.below(5000) } else { rng.below(60) };
            Value::Blob((0..n).map(|_| rng.next() as u8).collect())
        }
    }
}

fn as_ref(v: &Value) -> ValueRef<'_> {
    ValueRef::from(v)
}

/// One index of the test table `t (a, b, c)`: its statement and (column, order) keys.
struct Index {
    name: &'static str,
    sql: &'static str,
    keys: Vec<(usize, KeyOrder)>,
}

fn order(collation: Collation, descending: bool) -> KeyOrder {
    KeyOrder {
        collation,
        descending,
    }
}

fn indexes() -> Vec<Index> {
    vec![
        Index {
            name: "t_a",
            sql: "CREATE INDEX t_a ON t(a)",
            keys: vec![(0, order(Collation::Binary, false))],
        },
        Index {
            name: "t_b_nocase_desc_c",
            sql: "CREATE INDEX t_b_nocase_desc_c ON t(b COLLATE NOCASE DESC, c)",
            keys: vec![
                (1, order(Collation::NoCase, true)),
                (2, order(Collation::Binary, false)),
            ],
        },
        Index {
            name: "t_c_rtrim",
            sql: "CREATE INDEX t_c_rtrim ON t(c COLLATE RTRIM, a DESC)",
            keys: vec![
                (2, order(Collation::RTrim, false)),
                (0, order(Collation::Binary, true)),
            ],
        },
    ]
}

/// Writes `rows` (rowid, a, b, c) as table `t` with [`indexes`] into a new file.
fn build(path: &Path, page_size: usize, rows: &[(i64, [Value; 3])]) {
    let mut f = FileBuilder::create(path, page_size).unwrap();
    let mut t = TreeBuilder::table();
    let mut record = Vec::new();
    for (rowid, cols) in rows {
        record.clear();
        let refs: Vec<ValueRef<'_>> = cols.iter().map(as_ref).collect();
        encode_record(&refs, &mut record);
        t.push_row(&mut f, *rowid, &record).unwrap();
    }
    let root = t.finish(&mut f).unwrap();
    let mut schema = vec![SchemaRow {
        kind: "table".into(),
        name: "t".into(),
        table: "t".into(),
        root,
        sql: Some("CREATE TABLE t (a, b, c)".into()),
    }];
    for ix in indexes() {
        let mut entries: Vec<(Vec<ValueRef<'_>>, i64)> = rows
            .iter()
            .map(|(rowid, cols)| {
                (
                    ix.keys.iter().map(|(c, _)| as_ref(&cols[*c])).collect(),
                    *rowid,
                )
            })
            .collect();
        let orders: Vec<KeyOrder> = ix.keys.iter().map(|(_, o)| *o).collect();
        entries.sort_by(|(a, ra), (b, rb)| compare_keys(a, b, &orders).then(ra.cmp(rb)));
        let mut tree = TreeBuilder::index();
        for (key, rowid) in &entries {
            record.clear();
            let mut vals = key.clone();
            vals.push(ValueRef::Integer(*rowid));
            encode_record(&vals, &mut record);
            tree.push_record(&mut f, &record).unwrap();
        }
        schema.push(SchemaRow {
            kind: "index".into(),
            name: ix.name.into(),
            table: "t".into(),
            root: tree.finish(&mut f).unwrap(),
            sql: Some(ix.sql.into()),
        });
    }
    f.finish(&schema).unwrap();
}

fn rows_of(rng: &mut Rng, n: usize, big: bool) -> Vec<(i64, [Value; 3])> {
    let mut rowid = -5;
    (0..n)
        .map(|_| {
            let step = if rng.below(10) == 0 { 1 << 40 } else { 3 };
            rowid += 1 + rng.below(step) as i64;
            (rowid, [value(rng, big), value(rng, big), value(rng, big)])
        })
        .collect()
}

/// SQLite's full check (structure, every index entry against its row, and the order of
/// every index), and the rows read back equal to those written.
fn assert_sqlite_agrees(path: &Path, rows: &[(i64, [Value; 3])]) {
    let db = Connection::open(path).unwrap();
    let check: Vec<String> = db
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(check, ["ok"], "{}", path.display());
    let back: Vec<(i64, [Value; 3])> = db
        .prepare("SELECT rowid, a, b, c FROM t ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?])))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back.len(), rows.len());
    for (b, r) in back.iter().zip(rows) {
        assert_eq!(b.0, r.0);
        for (x, y) in b.1.iter().zip(&r.1) {
            match (x, y) {
                (Value::Real(x), Value::Real(y)) => assert_eq!(x.to_bits(), y.to_bits()),
                _ => assert_eq!(x, y),
            }
        }
    }
    // Each index answers a query through itself.
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM t INDEXED BY t_b_nocase_desc_c WHERE b IS NOT NULL OR b IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n as usize, rows.len());
}

#[test]
fn varints_are_sqlites() {
    let cases: &[(u64, &[u8])] = &[
        (0, &[0]),
        (0x7f, &[0x7f]),
        (0x80, &[0x81, 0x00]),
        (0x3fff, &[0xff, 0x7f]),
        (0x4000, &[0x81, 0x80, 0x00]),
        (
            0x00ff_ffff_ffff_ffff,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ),
        (
            0x0100_0000_0000_0000,
            &[0x80, 0xc0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
        ),
        (u64::MAX, &[0xff; 9]),
    ];
    for (v, want) in cases {
        let mut out = Vec::new();
        put_varint(&mut out, *v);
        assert_eq!(&out, want, "{v:#x}");
        assert_eq!(varint_len(*v), want.len(), "{v:#x}");
    }
    for shift in 0..64 {
        for v in [1u64 << shift, (1u64 << shift) - 1] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "{v:#x}");
        }
    }
}

#[test]
fn files_of_every_page_size_pass_sqlites_integrity_check() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for page_size in [512, 1024, 4096, 65536] {
        for (n, big) in [(0, false), (1, false), (3000, false), (400, true)] {
            let rows = rows_of(&mut rng, n, big);
            let path = d.path().join(format!("p{page_size}-{n}-{big}.db"));
            build(&path, page_size, &rows);
            assert_sqlite_agrees(&path, &rows);
        }
    }
}

/// Every count of rows up to a few pages: each way a level can end (a record held back as
/// the divider that turns out to be the last, a full interior page before the last child).
#[test]
fn every_tree_shape_at_the_end_of_a_level_is_valid() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(42);
    for n in 0..260 {
        let rows = rows_of(&mut rng, n, false);
        let path = d.path().join(format!("n{n}.db"));
        build(&path, 512, &rows);
        assert_sqlite_agrees(&path, &rows);
    }
}

#[test]
fn the_order_of_values_is_sqlites() {
    let db = Connection::open_in_memory().unwrap();
    db.execute_batch("CREATE TABLE v (x)").unwrap();
    let mut rng = Rng(7);
    let mut values: Vec<Value> = (0..600).map(|_| value(&mut rng, false)).collect();
    // Integers against reals near them and at the edges of i64.
    values.extend([
        Value::Integer(i64::MAX),
        Value::Integer(i64::MIN),
        Value::Real(i64::MAX as f64),
        Value::Real(9_223_372_036_854_774_784.0),
        Value::Real(i64::MIN as f64),
        Value::Integer(9_007_199_254_740_993),
        Value::Real(9_007_199_254_740_992.0),
        Value::Real(2.5),
        Value::Integer(2),
        Value::Real(-2.5),
        Value::Integer(-2),
        Value::Real(-0.0),
        Value::Integer(0),
    ]);
    for v in &values {
        db.execute("INSERT INTO v VALUES (?1)", [v]).unwrap();
    }
    for (name, collation) in [
        ("BINARY", Collation::Binary),
        ("NOCASE", Collation::NoCase),
        ("RTRIM", Collation::RTrim),
    ] {
        assert_eq!(Collation::named(&name.to_lowercase()), Some(collation));
        // SQLite's order, ties by rowid; ours the same way.
        let sqlite: Vec<i64> = db
            .prepare(&format!(
                "SELECT rowid FROM v ORDER BY x COLLATE {name}, rowid"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut ours: Vec<i64> = (1..=values.len() as i64).collect();
        ours.sort_by(|a, b| {
            let (x, y) = (&values[*a as usize - 1], &values[*b as usize - 1]);
            compare(&as_ref(x), &as_ref(y), collation).then(a.cmp(b))
        });
        assert_eq!(ours, sqlite, "{name}");
    }
    assert_eq!(Collation::named("french"), None);
}

/// sqlite_schema too big for page 1 becomes a tree whose root is still page 1.
#[test]
fn a_schema_bigger_than_page_one_is_rooted_there() {
    let d = tempfile::tempdir().unwrap();
    for tables in [1usize, 5, 40, 300] {
        let path = d.path().join(format!("s{tables}.db"));
        let mut f = FileBuilder::create(&path, 512).unwrap();
        let mut schema = Vec::new();
        let mut record = Vec::new();
        for i in 0..tables {
            let mut t = TreeBuilder::table();
            record.clear();
            encode_record(&[ValueRef::Integer(i as i64)], &mut record);
            t.push_row(&mut f, 1, &record).unwrap();
            schema.push(SchemaRow {
                kind: "table".into(),
                name: format!("table_with_a_long_name_{i}"),
                table: format!("table_with_a_long_name_{i}"),
                root: t.finish(&mut f).unwrap(),
                sql: Some(format!(
                    "CREATE TABLE table_with_a_long_name_{i} (column_with_a_long_name)"
                )),
            });
        }
        f.finish(&schema).unwrap();
        let db = Connection::open(&path).unwrap();
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "{tables} tables");
        for i in [0, tables - 1] {
            let v: i64 = db
                .query_row(
                    &format!("SELECT * FROM table_with_a_long_name_{i}"),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(v, i as i64);
        }
    }
}

#[test]
fn rowids_out_of_order_and_an_existing_file_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("x.db");
    let mut f = FileBuilder::create(&path, 4096).unwrap();
    let mut t = TreeBuilder::table();
    t.push_row(&mut f, 5, &[2, 8]).unwrap();
    let e = t.push_row(&mut f, 5, &[2, 8]).unwrap_err();
    assert!(e.contains("rowid 5 after rowid 5"), "{e}");
    let e = FileBuilder::create(&path, 4096).err().unwrap();
    assert!(e.contains("x.db"), "{e}");
    let e = FileBuilder::create(&d.path().join("y.db"), 1000)
        .err()
        .unwrap();
    assert!(e.contains("page size 1000"), "{e}");
}

/// A record whose header takes more than one varint byte to size (over 127 bytes of serial
/// types) and more than 16 columns.
#[test]
fn a_record_with_a_long_header_reads_back() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("wide.db");
    let n = 200;
    let values: Vec<Value> = (0..n)
        .map(|i| match i % 3 {
            0 => Value::Text("é".repeat(i)),
            1 => Value::Integer(i as i64 * 1_000_003),
            _ => Value::Blob(vec![i as u8; 70]),
        })
        .collect();
    let mut f = FileBuilder::create(&path, 4096).unwrap();
    let mut t = TreeBuilder::table();
    let mut record = Vec::new();
    let refs: Vec<ValueRef<'_>> = values.iter().map(as_ref).collect();
    encode_record(&refs, &mut record);
    t.push_row(&mut f, 1, &record).unwrap();
    let cols: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let root = t.finish(&mut f).unwrap();
    f.finish(&[SchemaRow {
        kind: "table".into(),
        name: "w".into(),
        table: "w".into(),
        root,
        sql: Some(format!("CREATE TABLE w ({})", cols.join(", "))),
    }])
    .unwrap();
    let db = Connection::open(&path).unwrap();
    let back: Vec<Value> = db
        .query_row("SELECT * FROM w", [], |r| {
            (0..n).map(|i| r.get(i)).collect::<Result<_, _>>()
        })
        .unwrap();
    assert_eq!(back, values);
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
