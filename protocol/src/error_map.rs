//! GET_ERROR_MAP (0xfe): what each status means, for clients that negotiated XERROR.
//!
//! ```text
//! request:  value = u16 highest error map version the client reads
//! response: value = JSON {"version": 2, "revision": R,
//!                         "errors": {"<hex code>": {"name", "desc", "attrs": [...]}, ...}}
//! ```
//!
//! Names, descriptions and attributes are kv_engine's (`docs/ErrorMap.md`,
//! `etc/couchbase/kv/error_maps/error_map_v2.json`), for every status [`Status`] names.

use crate::opcode::Status;

/// The error map format version served (kv_engine's current one).
pub const VERSION: u16 = 2;
/// The revision of this map.
pub const REVISION: u16 = 1;

/// One status: code, name, description, attributes.
pub type Entry = (u16, &'static str, &'static str, &'static [&'static str]);

/// Every status this crate names, with its error map entry.
pub const ENTRIES: &[Entry] = &[
    (0x00, "SUCCESS", "Success", &["success"]),
    (0x01, "KEY_ENOENT", "Not Found", &["item-only"]),
    (
        0x02,
        "KEY_EEXISTS",
        "key already exists, or CAS mismatch",
        &["item-only"],
    ),
    (
        0x03,
        "E2BIG",
        "Value is too big",
        &["item-only", "invalid-input"],
    ),
    (
        0x04,
        "EINVAL",
        "Invalid packet",
        &["internal", "invalid-input"],
    ),
    (0x05, "NOT_STORED", "Not Stored", &["internal", "item-only"]),
    (
        0x06,
        "DELTA_BADVAL",
        "Existing document not a number",
        &["item-only", "invalid-input"],
    ),
    (
        0x07,
        "NOT_MY_VBUCKET",
        "Server does not know about this vBucket",
        &["fetch-config", "invalid-input"],
    ),
    (
        0x08,
        "NO_BUCKET",
        "Not connected to any bucket",
        &["conn-state-invalidated"],
    ),
    (
        0x09,
        "LOCKED",
        "Requested resource is locked",
        &["item-locked", "item-only", "retry-now"],
    ),
    (
        0x1f,
        "AUTH_STALE",
        "Reauthentication required",
        &["conn-state-invalidated", "auth"],
    ),
    (
        0x20,
        "AUTH_ERROR",
        "Authentication failed",
        &["conn-state-invalidated", "auth"],
    ),
    (
        0x21,
        "AUTH_CONTINUE",
        "Continue authentication processs",
        &["special-handling"],
    ),
    (
        0x22,
        "ERANGE",
        "Invalid range requested",
        &["invalid-input"],
    ),
    (0x23, "ROLLBACK", "Rollback", &["dcp", "special-handling"]),
    (0x24, "EACCESS", "Not authorized for command", &["support"]),
    (
        0x81,
        "UNKNOWN_COMMAND",
        "Unknown command. Maybe a newer server version knows about it",
        &["support"],
    ),
    (
        0x82,
        "ENOMEM",
        "No memory available to store item. Add memory or remove some items and try later",
        &["temp", "retry-later"],
    ),
    (
        0x83,
        "NOT_SUPPORTED",
        "Command not supported with current bucket type/configuration",
        &["support"],
    ),
    (
        0x84,
        "EINTERNAL",
        "Internal error. Reconnect recommended",
        &["internal", "conn-state-invalidated"],
    ),
    (0x85, "EBUSY", "Busy, try again", &["temp", "retry-now"]),
    (
        0x86,
        "ETMPFAIL",
        "Temporary failure. Try again",
        &["temp", "retry-now"],
    ),
    (
        0x87,
        "XATTR_EINVAL",
        "Invalid extended attribute",
        &["invalid-input"],
    ),
    (
        0x88,
        "UNKNOWN_COLLECTION",
        "Operation specified an unknown collection.",
        &["invalid-input"],
    ),
];

/// The entry of `status`, if the map has one.
pub fn entry(status: Status) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.0 == status.value())
}

/// The error map as JSON, in the version the client asked for (`requested`, at most
/// [`VERSION`]; version 1 keeps only the attributes version 1 defined).
pub fn json(requested: u16) -> String {
    let version = requested.clamp(1, VERSION);
    const V2_ONLY: &[&str] = &["rate-limit", "system-constraint"];
    let mut out = format!("{{\"version\":{version},\"revision\":{REVISION},\"errors\":{{");
    for (i, (code, name, desc, attrs)) in ENTRIES.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let attrs: Vec<String> = attrs
            .iter()
            .filter(|a| version >= 2 || !V2_ONLY.contains(a))
            .map(|a| format!("\"{a}\""))
            .collect();
        // Names and descriptions are plain ASCII without quotes or backslashes.
        out.push_str(&format!(
            "\"{code:x}\":{{\"name\":\"{name}\",\"desc\":\"{desc}\",\"attrs\":[{}]}}",
            attrs.join(",")
        ));
    }
    out.push_str("}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_status_has_an_entry_with_its_name() {
        for v in 0..=0xffffu16 {
            let s = Status::from(v);
            if matches!(s, Status::Other(_)) {
                continue;
            }
            let e = entry(s).unwrap_or_else(|| panic!("{s} has no error map entry"));
            assert!(!e.3.is_empty(), "{s}: no attributes");
        }
        assert_eq!(entry(Status::NotMyVbucket).unwrap().1, "NOT_MY_VBUCKET");
    }

    #[test]
    fn the_json_is_keyed_by_lowercase_hex_codes() {
        let j = json(2);
        assert!(j.starts_with("{\"version\":2,\"revision\":1,\"errors\":{\"0\":"));
        assert!(j.contains("\"86\":{\"name\":\"ETMPFAIL\""));
        assert!(j.ends_with("}}"));
        assert!(json(1).starts_with("{\"version\":1,"));
        assert!(json(9).starts_with("{\"version\":2,"));
    }
}
