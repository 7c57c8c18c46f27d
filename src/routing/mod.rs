//! Where a request goes: the route table ([`table`]) matched on the path
//! normalized once (`wire::path`), the same path forwarded upstream.

pub mod table;
