//! The agent's HTTP API: probes for the kubelet and the authenticated status.
//!
//! | path | answers |
//! |---|---|
//! | `GET /healthz` | 200 unless the server died and is no longer restarted |
//! | `GET /readyz` | 200 when the server answers an authenticated probe now |
//! | `GET /startupz` | 200 once the data directory is initialised and the server has answered |
//! | `GET /status` | [`AgentStatus`] JSON, with `Authorization: Bearer <agent token>`; 401 otherwise |
//! | `POST /role` | a [`RoleCommand`] (same token): 202 taken, 409 stale epoch ([`RoleAnswer`]) |
//!
//! [`AgentStatus`]: crate::api::agent::AgentStatus
//! [`RoleCommand`]: crate::api::agent::RoleCommand
//! [`RoleAnswer`]: crate::api::agent::RoleAnswer

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use super::role::RoleCommand;
use super::secret::Secret;
use super::status::{Phase, Shared, Submitted};

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/startupz", get(startupz))
        .route("/status", get(status))
        .route("/role", post(role))
        .with_state(shared)
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

type Answer = (StatusCode, String);

fn ok() -> Answer {
    (StatusCode::OK, "ok\n".into())
}

fn unavailable(why: impl std::fmt::Display) -> Answer {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
}

async fn healthz(State(s): State<Arc<Shared>>) -> Answer {
    match s.snapshot().phase {
        Phase::Failed => unavailable("the server died too often and is no longer restarted"),
        _ => ok(),
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Answer {
    match s.snapshot().phase {
        Phase::Starting | Phase::Running => {}
        phase => return unavailable(format_args!("not ready: {phase:?}")),
    }
    match s.probe().await {
        Ok(_) => ok(),
        Err(e) => unavailable(format_args!("not ready: {e}")),
    }
}

async fn startupz(State(s): State<Arc<Shared>>) -> Answer {
    let state = s.snapshot();
    if !state.data_dir_initialised {
        return unavailable("the data directory is not initialised yet");
    }
    if state.answered_once {
        return ok();
    }
    match s.probe().await {
        Ok(_) => ok(),
        Err(e) => unavailable(format_args!("the server has not answered yet: {e}")),
    }
}

fn unauthorised() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required\n",
    )
        .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn status(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorised(&headers, &s.config.agent_token) {
        return unauthorised();
    }
    axum::Json(s.status().await).into_response()
}

async fn role(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorised(&headers, &s.config.agent_token) {
        return unauthorised();
    }
    let command: RoleCommand = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid role command: {e}\n"),
            )
                .into_response();
        }
    };
    match s.submit(&command) {
        Ok(Submitted::Accepted(answer)) => {
            tracing::info!(epoch = command.epoch, role = ?command.role,
                upstream = ?command.upstream.as_ref().map(|u| u.address()),
                replicas = ?command.replicas, "role command accepted");
            (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
        }
        Ok(Submitted::Stale(answer)) => {
            tracing::warn!(
                epoch = command.epoch,
                held = answer.epoch,
                "stale role command refused"
            );
            (StatusCode::CONFLICT, axum::Json(answer)).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "persisting the role command");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>`.
fn authorised(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, given)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && token.matches(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn bearer_token_is_required() {
        let t = Secret::new("tok-123");
        assert!(authorised(&headers(Some("Bearer tok-123")), &t));
        assert!(authorised(&headers(Some("bearer tok-123")), &t));
        assert!(!authorised(&headers(None), &t));
        assert!(!authorised(&headers(Some("Bearer tok-124")), &t));
        assert!(!authorised(&headers(Some("Bearer tok-123 ")), &t));
        assert!(!authorised(&headers(Some("Basic tok-123")), &t));
        assert!(!authorised(&headers(Some("Bearer")), &t));
        assert!(!authorised(&headers(Some("tok-123")), &t));
    }
}
