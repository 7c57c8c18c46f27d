//! A bare Pingora proxy, the instruction bench's floor: Pingora's defaults
//! with one worker thread and no work stealing (as the gateway runs in the
//! bench), every request forwarded to one upstream, nothing else.
//!
//! It runs on the gateway's allocator with the gateway's options (jemalloc,
//! blocks up to 64 KiB cached per thread: `src/main.rs`), so that the
//! difference from the gateway is the gateway's code, not the allocator's
//! speed at Pingora's own allocations.
//!
//! `bare_pingora LISTEN_ADDR UPSTREAM_ADDR`

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{http_proxy_service, ProxyHttp};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: &[u8; 17] = b"tcache_max:65536\0";

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_pingora LISTEN_ADDR UPSTREAM_ADDR";
    let listen = args.next().expect(usage);
    let upstream = args.next().expect(usage);
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
