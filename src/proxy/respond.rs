//! The responses the gateway writes itself, on the request path: the
//! error envelope of [`crate::errors`], decorated like every response.

use http::header::STRICT_TRANSPORT_SECURITY;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::Session;

use crate::errors::{is_grpc, render_envelope, render_grpc, GatewayError};
use crate::proxy::context::RequestCtx;
use crate::proxy::forwarding::insert_rate_limit_headers;

/// What happens to the client connection after an error the gateway sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    /// Refused before any upstream work: keep it if no body is unread.
    KeepIfNoBody,
    /// Failed while proxying: close it.
    Close,
}

/// Sends the envelope for `err` (for a gRPC call: its gRPC status), with
/// the request id, the rate-limit, CORS and HSTS headers of this request.
pub async fn respond_error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    err: GatewayError,
    after: AfterError,
    draining: bool,
) {
    ctx.error_code = Some(err.code());
    if is_grpc(session.req_header()) {
        return respond_grpc_error(session, ctx, err).await;
    }
    let hsts = ctx.connection(session).hsts.clone();
    let rendered = render_envelope(&err, ctx.request_id()).and_then(|(mut resp, body)| {
        decorate(&mut resp, ctx, hsts)?;
        trace_header(&mut resp, ctx)?;
        Ok((resp, body))
    });
    let (resp, body) = match rendered {
        Ok(rendered) => rendered,
        Err(e) => {
            log::error!("cannot render error envelope: {e}");
            return;
        }
    };
    let downstream = session.as_downstream_mut();
    // A refused request without a body leaves nothing unread behind it:
    // the connection stays usable (a client refused with 401 or 429
    // does not have to reconnect). Otherwise, or while draining, close.
    let keep_alive = after == AfterError::KeepIfNoBody && !draining && downstream.is_body_empty();
    let sent = if keep_alive {
        match downstream.write_response_header(Box::new(resp)).await {
            Ok(()) => downstream.write_response_body(body, true).await,
            Err(e) => Err(e),
        }
    } else {
        downstream.write_error_response(resp, body).await
    };
    if let Err(e) = sent {
        log::debug!("cannot send error response: {e}");
    }
}

/// What every response carries besides its own headers, proxied or written
/// by the gateway: the rate-limit and CORS headers of this request, and
/// the listener's HSTS.
pub fn decorate(
    resp: &mut ResponseHeader,
    ctx: &RequestCtx,
    hsts: Option<HeaderValue>,
) -> pingora::Result<()> {
    if let Some(decision) = &ctx.rate_limit {
        insert_rate_limit_headers(resp, decision)?;
    }
    if let Some(cors) = &ctx.gateway.cors {
        cors.apply(resp, ctx.cors_origin.as_ref())?;
    }
    transport_headers(resp, hsts)
}

/// A gateway-written error's `traceparent`: the trace a client can report.
fn trace_header(resp: &mut ResponseHeader, ctx: &RequestCtx) -> pingora::Result<()> {
    if let Some(trace) = &ctx.trace {
        resp.insert_header(crate::wire::names::TRACEPARENT, trace.traceparent())?;
    }
    Ok(())
}

/// What even a CORS preflight answer carries (it has CORS headers of its
/// own and comes before any rate-limit decision): the listener's HSTS.
pub fn transport_headers(
    resp: &mut ResponseHeader,
    hsts: Option<HeaderValue>,
) -> pingora::Result<()> {
    if let Some(hsts) = hsts {
        resp.insert_header(STRICT_TRANSPORT_SECURITY, hsts)?;
    }
    Ok(())
}

/// A gRPC call's error: trailers-only, so the stream ends with the header
/// frame; the connection (HTTP/2 in practice) stays usable.
async fn respond_grpc_error(session: &mut Session, ctx: &mut RequestCtx, err: GatewayError) {
    let hsts = ctx.connection(session).hsts.clone();
    let rendered = render_grpc(&err, ctx.request_id()).and_then(|mut resp| {
        decorate(&mut resp, ctx, hsts)?;
        trace_header(&mut resp, ctx)?;
        Ok(resp)
    });
    let resp = match rendered {
        Ok(resp) => resp,
        Err(e) => {
            log::error!("cannot render gRPC error: {e}");
            return;
        }
    };
    // The header frame ends the stream: a trailers-only response.
    if let Err(e) = session.write_response_header(Box::new(resp), true).await {
        log::debug!("cannot send gRPC error: {e}");
    }
}
