//! DCP messages (filled in by the streaming work).
