//! The reference node (built in the node work).
