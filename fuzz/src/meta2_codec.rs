//! The meta2 encodings a base travels in through the pump ([`pump_meta2::codec`]): cells
//! (row keys and values), schema messages, the base message and table ends.
//!
//! ```text
//! input     values of every SQLite storage class (integers at their edges, reals with NaN
//!           and infinities, text and blobs), statements, headers, row counts and digests;
//!           encoded, then damaged by edits
//! checks    no panic; undamaged encodings decode to what was encoded; the copying and the
//!           borrowing cell decoders agree on every damaged input
//! ```

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use pump_meta2::codec::{
    decode_base, decode_cells, decode_refs, decode_schema, decode_table_end, encode_base,
    encode_cells, encode_schema, encode_table_end, BaseHeader, Cell,
};
use rusqlite::types::ValueRef;

use crate::mutate::{apply, edits, Edit};

fn cell() -> impl Strategy<Value = Cell> {
    prop_oneof![
        Just(Cell::Null),
        prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0)].prop_map(Cell::Integer),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0)
        ]
        .prop_map(Cell::Real),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Cell::Text),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Cell::Blob),
    ]
}

/// A cell compared by its bits (a NaN equals itself).
fn key(c: &Cell) -> (u8, Vec<u8>) {
    match c {
        Cell::Null => (0, vec![]),
        Cell::Integer(i) => (1, i.to_be_bytes().to_vec()),
        Cell::Real(f) => (2, f.to_bits().to_be_bytes().to_vec()),
        Cell::Text(t) => (3, t.clone()),
        Cell::Blob(b) => (4, b.clone()),
    }
}

fn as_ref(c: &Cell) -> ValueRef<'_> {
    match c {
        Cell::Null => ValueRef::Null,
        Cell::Integer(i) => ValueRef::Integer(*i),
        Cell::Real(f) => ValueRef::Real(*f),
        Cell::Text(t) => ValueRef::Text(t),
        Cell::Blob(b) => ValueRef::Blob(b),
    }
}

/// What a case encodes, then damages.
#[derive(Debug, Clone)]
pub enum Input {
    Cells(Vec<Cell>, Vec<Edit>),
    Schema(Vec<String>, Vec<Edit>),
    Base(u32, u32, u32, Vec<Edit>),
    TableEnd(u64, String, Vec<Edit>),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => (prop::collection::vec(cell(), 0..12), edits(4)).prop_map(|(c, e)| Input::Cells(c, e)),
        2 => (prop::collection::vec(".{0,60}", 0..5), edits(4)).prop_map(|(s, e)| Input::Schema(s, e)),
        1 => (any::<u32>(), any::<u32>(), any::<u32>(), edits(2))
            .prop_map(|(a, b, c, e)| Input::Base(a, b, c, e)),
        1 => (any::<u64>(), "[0-9a-f]{0,64}|.{0,10}", edits(3))
            .prop_map(|(r, d, e)| Input::TableEnd(r, d, e)),
    ]
}

fn check(input: &Input) -> Result<(), String> {
    match input {
        Input::Cells(cells, e) => {
            let bytes = encode_cells(cells.iter().map(as_ref));
            let back = decode_cells(&bytes).map_err(|e| format!("undamaged cells: {e}"))?;
            if back.iter().map(key).collect::<Vec<_>>() != cells.iter().map(key).collect::<Vec<_>>()
            {
                return Err(format!("{cells:?} decode as {back:?}"));
            }
            let damaged = apply(&bytes, e, None);
            let owned = decode_cells(&damaged);
            let borrowed = decode_refs(&damaged);
            match (&owned, &borrowed) {
                (Ok(a), Ok(b)) => {
                    let b: Vec<Cell> = b.iter().map(|v| Cell::from_ref(*v)).collect();
                    if a.iter().map(key).collect::<Vec<_>>()
                        != b.iter().map(key).collect::<Vec<_>>()
                    {
                        return Err(format!("the decoders disagree: {a:?} / {b:?}"));
                    }
                }
                (Err(_), Err(_)) => {}
                _ => {
                    return Err(format!(
                        "one decoder accepts, the other not: {owned:?} / {borrowed:?}"
                    ))
                }
            }
        }
        Input::Schema(s, e) => {
            let bytes = encode_schema(s);
            if decode_schema(&bytes).as_ref().ok() != Some(s) {
                return Err(format!("{s:?} decodes otherwise"));
            }
            let _ = decode_schema(&apply(&bytes, e, None));
        }
        Input::Base(a, b, c, e) => {
            let h = BaseHeader {
                page_size: *a,
                user_version: *b,
                application_id: *c,
            };
            let bytes = encode_base(&h);
            match decode_base(&bytes) {
                Ok(back) if back == h => {}
                other => return Err(format!("{h:?} decodes as {other:?}")),
            }
            let damaged = apply(&bytes, e, None);
            if decode_base(&damaged).is_ok() != (damaged.len() == 12) {
                return Err(format!("a base message of {} bytes", damaged.len()));
            }
        }
        Input::TableEnd(rows, digest, e) => {
            let bytes = encode_table_end(*rows, digest);
            if decode_table_end(&bytes).ok() != Some((*rows, digest.clone())) {
                return Err(format!("({rows}, {digest:?}) decodes otherwise"));
            }
            let _ = decode_table_end(&apply(&bytes, e, None));
        }
    }
    Ok(())
}

/// The target.
pub fn run(runner: &mut TestRunner) -> Result<(), String> {
    crate::check_all(runner, input(), check)
}
