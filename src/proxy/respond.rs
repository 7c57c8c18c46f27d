//! The responses the gateway writes itself, on the request path: the
//! error envelope of [`crate::errors`], decorated like every response.

use pingora::prelude::Session;

use crate::errors::{render_envelope, GatewayError};
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

/// Sends the envelope for `err`, with the request id, the rate-limit and
/// the CORS headers of this request.
pub async fn respond_error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    err: GatewayError,
    after: AfterError,
    draining: bool,
) {
    let rendered = render_envelope(&err, ctx.request_id()).and_then(|(mut resp, body)| {
        if let Some(decision) = &ctx.rate_limit {
            insert_rate_limit_headers(&mut resp, decision)?;
        }
        if let Some(cors) = &ctx.gateway.cors {
            cors.apply(&mut resp, ctx.cors_origin.as_ref())?;
        }
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
