//! Where a request goes and what it asks of the edge: the route table
//! ([`table`]) matched on the path normalized once (`wire::path`), the
//! same path forwarded upstream; each route's [`policy`].

pub mod policy;
pub mod table;
