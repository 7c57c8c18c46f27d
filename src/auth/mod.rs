//! Who is asking: the bearer token ([`token`]) and the user it names,
//! resolved to a UUID through the directory and its cache ([`identity`]).

pub mod identity;
pub mod token;
