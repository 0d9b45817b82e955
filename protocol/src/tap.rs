//! TAP messages (filled in by the streaming work).
