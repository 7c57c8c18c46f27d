//! Who is asking: the bearer token ([`token`], verified with the static
//! [`keys`] and the fetched [`jwks`]; what else it says in [`claims`]) and
//! the user it names, resolved to a
//! UUID through the [`directory`] and its cache ([`identity`]); the
//! PostgreSQL connection settings, TLS included, in [`database`].

pub mod claims;
pub mod database;
pub mod directory;
pub mod identity;
pub mod jwks;
pub mod keys;
pub mod notify;
pub mod token;
