//! Edits that damage a seed (a valid frame, a real file, a document) the way a bad disk, a
//! bad copy or a hostile peer would: bytes set, bits flipped, boundary values written over a
//! field, bytes inserted, removed, copied from elsewhere, the end cut off, and for paged files
//! edits aimed at a page's header and first cell pointers. An input is kept as its seed's
//! index and its edits, so a failure prints small and replays exactly.
//!
//! ```text
//! positions   taken modulo the seed's length (an edit never misses)
//! boundaries  0, 1, 0x7f.., 0x80.., 0xff.. as 1, 2, 4 or 8 big-endian bytes
//! pages       page (modulo the pages) * page size + offset (modulo 64)
//! ```

use proptest::prelude::*;

/// One edit.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Byte `at` becomes `byte`.
    Set { at: usize, byte: u8 },
    /// Bit `bit` (modulo 8) of byte `at` flips.
    Flip { at: usize, bit: u8 },
    /// A boundary value (`which`, see [`boundary`]) written over `width` bytes at `at`.
    Boundary { at: usize, width: u8, which: u8 },
    /// `bytes` inserted before `at`.
    Insert { at: usize, bytes: Vec<u8> },
    /// `len` bytes removed from `at`.
    Remove { at: usize, len: usize },
    /// `len` bytes from `from` written over `at` (a record or pointer repeated elsewhere).
    Copy { from: usize, at: usize, len: usize },
    /// Everything from `at` on cut off.
    Cut { at: usize },
    /// Byte `off` (modulo 64) of page `page` becomes `byte` (a page's header and first
    /// cell pointers); on an input without pages, byte `page * 64 + off`.
    InPage { page: usize, off: usize, byte: u8 },
}

/// The boundary value `which` (modulo 8) on `width` bytes, big-endian.
pub fn boundary(which: u8, width: usize) -> Vec<u8> {
    let max = if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    let v = match which % 8 {
        0 => 0,
        1 => 1,
        2 => max >> 1,
        3 => (max >> 1) + 1,
        4 => max,
        5 => max - 1,
        6 => 0x80,
        _ => 0xff,
    };
    v.to_be_bytes()[8 - width..].to_vec()
}

/// Any one edit; cuts are rarer than the rest (they destroy most of an input).
pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set { at, byte }),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        4 => (any::<usize>(), prop::sample::select(vec![1u8, 2, 4, 8]), any::<u8>())
            .prop_map(|(at, width, which)| Edit::Boundary { at, width, which }),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        2 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Edit::Remove { at, len }),
        2 => (any::<usize>(), any::<usize>(), 1usize..32)
            .prop_map(|(from, at, len)| Edit::Copy { from, at, len }),
        1 => any::<usize>().prop_map(|at| Edit::Cut { at }),
        6 => (any::<usize>(), any::<usize>(), any::<u8>())
            .prop_map(|(page, off, byte)| Edit::InPage { page, off, byte }),
    ]
}

/// Up to `max` edits (none at all now and then: the seed itself must pass).
pub fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 0..=max)
}

/// `seed` with `edits` applied in order; `page_size` aims [`Edit::InPage`].
pub fn apply(seed: &[u8], edits: &[Edit], page_size: Option<usize>) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let n = b.len();
        match e {
            Edit::Set { at, byte } if n > 0 => b[at % n] = *byte,
            Edit::Flip { at, bit } if n > 0 => b[at % n] ^= 1 << (bit % 8),
            Edit::Boundary { at, width, which } if n > 0 => {
                let v = boundary(*which, *width as usize);
                let at = at % n;
                let end = (at + v.len()).min(n);
                b[at..end].copy_from_slice(&v[..end - at]);
            }
            Edit::Insert { at, bytes } => {
                let at = at % (n + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove { at, len } if n > 0 => {
                let at = at % n;
                b.drain(at..(at + len).min(n));
            }
            Edit::Copy { from, at, len } if n > 0 => {
                let (from, at) = (from % n, at % n);
                let len = (*len).min(n - from).min(n - at);
                let part = b[from..from + len].to_vec();
                b[at..at + len].copy_from_slice(&part);
            }
            Edit::Cut { at } => b.truncate(at % (n + 1)),
            Edit::InPage { page, off, byte } if n > 0 => {
                let at = match page_size {
                    Some(ps) if n >= ps => (page % (n / ps)) * ps + off % 64,
                    _ => page.wrapping_mul(64).wrapping_add(off % 64),
                };
                b[at % n] = *byte;
            }
            _ => {}
        }
    }
    b
}

/// Decimal text, or text that looks like a number and is not one: the fields a text format
/// holds numbers in.
pub fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        (0u8..8).prop_map(|w| format!(
            "{}",
            u64::from_be_bytes({
                let mut a = [0u8; 8];
                let v = boundary(w, 8);
                a.copy_from_slice(&v);
                a
            })
        )),
        Just(String::new()),
        Just("18446744073709551616".to_string()),
        Just(" 7 ".to_string()),
        Just("-0".to_string()),
        Just("1e9".to_string()),
        Just("0x10".to_string()),
        "[0-9]{0,30}",
        ".{0,8}",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_stay_in_the_input_and_an_empty_input_takes_them_all() {
        let seed = vec![7u8; 100];
        let all = [
            Edit::Set { at: 1000, byte: 1 },
            Edit::Flip { at: 99, bit: 9 },
            Edit::Boundary {
                at: 98,
                width: 8,
                which: 4,
            },
            Edit::Insert {
                at: 5000,
                bytes: vec![1, 2],
            },
            Edit::Remove { at: 50, len: 1000 },
            Edit::Copy {
                from: 3,
                at: 40,
                len: 100,
            },
            Edit::InPage {
                page: 9,
                off: 70,
                byte: 3,
            },
            Edit::Cut { at: 7 },
        ];
        let out = apply(&seed, &all, Some(16));
        assert_eq!(out.len(), 7);
        assert!(apply(&[], &all, None).is_empty());
        assert_eq!(boundary(3, 2), vec![0x80, 0]);
        assert_eq!(boundary(4, 1), vec![0xff]);
        let paged = apply(
            &[0u8; 64],
            &[Edit::InPage {
                page: 3,
                off: 2,
                byte: 9,
            }],
            Some(16),
        );
        assert_eq!(paged[3 * 16 + 2], 9);
    }
}
