//! Failures while proxying: the `kind` label of
//! `gateway_proxy_errors_total` and the envelope the client gets for a
//! Pingora error (used by `fail_to_proxy` and `suppress_error_log`).

use pingora::{Error, ErrorSource, ErrorType};

use crate::edge::slack::INVALID_SIGNATURE;
use crate::errors::GatewayError;
use crate::upstream::attempts::NO_HEALTHY_PEER;

/// The `kind` label of `gateway_proxy_errors_total`.
pub fn proxy_error_kind(e: &Error) -> &'static str {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, Custom(INVALID_SIGNATURE)) => "invalid_signature",
        (_, Custom(NO_HEALTHY_PEER)) => "no_healthy_peer",
        (_, HTTPStatus(413)) => "body_too_large",
        (ErrorSource::Upstream, ConnectRefused) => "connect_refused",
        (ErrorSource::Upstream, ConnectTimedout) => "connect_timeout",
        (ErrorSource::Upstream, ReadTimedout) => "read_timeout",
        (ErrorSource::Upstream, WriteTimedout) => "write_timeout",
        (ErrorSource::Upstream, ConnectionClosed | ReadError | WriteError) => "upstream_closed",
        (ErrorSource::Upstream, _) => "upstream_other",
        (ErrorSource::Downstream, _) => "downstream",
        _ => "internal",
    }
}

/// The gateway error for a Pingora error that ended a proxied request, or
/// `None` when the client is gone and nothing can be sent.
pub fn classify_proxy_error(e: &Error) -> Option<GatewayError> {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, Custom(INVALID_SIGNATURE)) => Some(GatewayError::InvalidSignature),
        (_, HTTPStatus(413)) => Some(GatewayError::PayloadTooLarge),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
        (ErrorSource::Downstream, _) => Some(GatewayError::BadRequest("malformed request")),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => Some(GatewayError::GatewayTimeout),
        _ => Some(GatewayError::ServiceUnavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_errors_map_to_design_codes() {
        let e = |src, t| {
            let mut e = Error::new(t);
            e.esource = src;
            classify_proxy_error(&e)
        };
        use ErrorType::*;
        assert_eq!(
            e(ErrorSource::Upstream, ConnectRefused),
            Some(GatewayError::ServiceUnavailable)
        );
        assert_eq!(
            e(ErrorSource::Upstream, ConnectTimedout),
            Some(GatewayError::ServiceUnavailable)
        );
        assert_eq!(
            e(ErrorSource::Upstream, ReadTimedout),
            Some(GatewayError::GatewayTimeout)
        );
        assert_eq!(e(ErrorSource::Downstream, ReadError), None);
        assert_eq!(
            e(ErrorSource::Internal, HTTPStatus(413)),
            Some(GatewayError::PayloadTooLarge)
        );
        assert_eq!(
            e(ErrorSource::Downstream, InvalidHTTPHeader),
            Some(GatewayError::BadRequest("malformed request"))
        );
    }
}
