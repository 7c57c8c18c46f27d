//! Where a request goes: its path normalized once ([`path`]), the same path
//! matched against the route table ([`table`]) and forwarded upstream.

pub mod path;
pub mod table;
