//! cbtransfer's CSV: a header row, then one row per mutation (deletions are not written).
//!
//! ```text
//! id,flags,expiration,cas,value,rev,vbid,dtype
//! pymc0,0,0,1558712345,b'0123456789',b'',912,0
//! ```
//!
//! `value` and `rev` (the backup format's `meta` column) are Python bytes literals, as
//! `str(bytes)` prints them; a reader also takes plain text. Lines end in `\r\n` (Python's csv
//! default dialect).
//!
//! With collections (a source holding any but `_default._default`), two more columns name
//! each row's scope and collection; a file without them is of the default collection:
//!
//! ```text
//! id,flags,expiration,cas,value,rev,vbid,dtype,scope,collection
//! pymc0,0,0,1558712345,b'0123456789',b'',912,0,s1,c1
//! ```

/// The header, in column order.
pub const COLUMNS: [&str; 8] = [
    "id",
    "flags",
    "expiration",
    "cas",
    "value",
    "rev",
    "vbid",
    "dtype",
];

/// The columns after [`COLUMNS`] when the rows are not all of the default collection.
pub const COLLECTION_COLUMNS: [&str; 2] = ["scope", "collection"];

/// The vbucket cbtransfer's CSV source gives every row: unknown, hash the key.
pub const UNKNOWN_VBUCKET: u32 = 0xffff;

/// Appends `bytes` as a Python bytes literal (`b'...'`), exactly as Python's `repr` does:
/// single quotes unless the bytes hold `'` and no `"`; `\\`, `\t`, `\n`, `\r` and the quote
/// escaped; other bytes outside printable ASCII as `\xhh`.
pub fn write_bytes_literal(bytes: &[u8], out: &mut Vec<u8>) {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    out.reserve(bytes.len() + 3);
    out.push(b'b');
    out.push(quote);
    for &c in bytes {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            c if c == quote => {
                out.push(b'\\');
                out.push(c);
            }
            0x20..=0x7e => out.push(c),
            c => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[(c >> 4) as usize],
                    HEX[(c & 15) as usize],
                ]);
            }
        }
    }
    out.push(quote);
}

/// Reads a field written by [`write_bytes_literal`] (or by Python), or takes the field as plain
/// text when it is not a bytes literal. Fails with a description when it looks like a literal
/// (`b'` ... `'`) but holds a bad escape.
pub fn read_bytes_field(field: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    let is_literal = field.len() >= 3
        && matches!(field[0], b'b' | b'B')
        && matches!(field[1], b'\'' | b'"')
        && field[field.len() - 1] == field[1];
    if !is_literal {
        return Ok(std::borrow::Cow::Borrowed(field));
    }
    let inner = &field[2..field.len() - 1];
    if !inner.contains(&b'\\') {
        return Ok(std::borrow::Cow::Borrowed(inner));
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *inner
            .get(i)
            .ok_or_else(|| "a bytes literal ends with a lone backslash".to_string())?;
        i += 1;
        match e {
            b'\\' | b'\'' | b'"' => out.push(e),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'\n' => {}
            b'x' => {
                let hex = inner
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "\\x must be followed by two hex digits".to_string())?;
                out.push(hex);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match inner.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                // Python keeps unknown escapes as they are.
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(b: &[u8]) -> String {
        let mut out = Vec::new();
        write_bytes_literal(b, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bytes_literals_match_python_repr() {
        assert_eq!(lit(b"abc"), "b'abc'");
        assert_eq!(lit(b""), "b''");
        assert_eq!(lit(b"it's"), "b\"it's\"");
        assert_eq!(lit(b"'\""), "b'\\'\"'");
        assert_eq!(lit(b"a\\b\n\t\r\x00\xff"), "b'a\\\\b\\n\\t\\r\\x00\\xff'");
    }

    #[test]
    fn literals_and_plain_text_read_back() {
        for v in [
            &b"abc"[..],
            b"",
            b"it's",
            b"'\"",
            b"a\\b\n\t\r\x00\xff",
            b"b'x'",
        ] {
            assert_eq!(
                &*read_bytes_field(lit(v).as_bytes()).unwrap(),
                v,
                "{}",
                lit(v)
            );
        }
        assert_eq!(&*read_bytes_field(b"plain text").unwrap(), b"plain text");
        assert_eq!(&*read_bytes_field(b"{\"a\":1}").unwrap(), b"{\"a\":1}");
        assert_eq!(&*read_bytes_field(b"b'\\101'").unwrap(), b"A");
        assert!(read_bytes_field(b"b'\\xZZ'").is_err());
    }
}
