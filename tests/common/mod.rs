//! Test harness: a real PostgreSQL (from the environment `make test` sets
//! up), the real gateway binary, real upstream processes, and a raw HTTP/1.1
//! client that sends request targets exactly as written.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const SLACK_SECRET: &str = "slack-signing-secret-for-tests";
pub const ALICE_ID: &str = "6f1c1d0e-4a7b-4c43-9a0e-2b8f1c9d7e01";

mod browser;
mod client;
mod faults;
mod keys;
mod otlp;
mod postgres;
mod processes;
mod redis;
mod tls;
mod tokens;

// Each test binary uses a part of the harness.
#[allow(unused_imports)]
pub use browser::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use faults::*;
#[allow(unused_imports)]
pub use keys::*;
#[allow(unused_imports)]
pub use otlp::*;
#[allow(unused_imports)]
pub use postgres::*;
#[allow(unused_imports)]
pub use processes::*;
#[allow(unused_imports)]
pub use redis::*;
#[allow(unused_imports)]
pub use tls::*;
#[allow(unused_imports)]
pub use tokens::*;
