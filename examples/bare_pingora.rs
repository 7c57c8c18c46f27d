//! A bare Pingora proxy, the instruction bench's floor: Pingora's defaults
//! with one worker thread and no work stealing (as the gateway runs in the
//! bench), every request forwarded to one upstream, nothing else.
//!
//! `bare_pingora LISTEN_ADDR UPSTREAM_ADDR`

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{http_proxy_service, ProxyHttp};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

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
