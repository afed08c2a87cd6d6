//! Asks the instance agents' `GET /status` (Bearer token from the credentials
//! Secret, 2 s deadline) what role their server runs in.
//!
//! Best effort: an agent that does not answer is simply not reported; the status
//! then falls back to the role the operator labelled.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::plan::pod_ready;
use super::status::AgentReport;
use crate::api::Shard;
use crate::api::shard::Role;
use crate::operator::context::Context;
use crate::operator::names::{self, AGENT_PORT, secret_key};

/// Deadline of one `/status` request.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Largest response read.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Errors of one `/status` request.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent did not answer within [`DEADLINE`].
    #[error("no answer within {DEADLINE:?}")]
    Timeout,
    /// Connecting, writing or reading failed.
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    /// The response was not `200` with a status document.
    #[error("unexpected response: {0}")]
    Response(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    role: Option<Role>,
    #[serde(default)]
    server_up: bool,
}

/// Reports of the shard's ready Pods, by Pod name.
pub async fn reports(ctx: &Context, shard: &Shard, pods: &[Pod]) -> BTreeMap<String, AgentReport> {
    let Some(token) = token(ctx, shard).await else {
        return BTreeMap::new();
    };
    let asks = pods.iter().filter(|p| pod_ready(p)).filter_map(|pod| {
        let ip = pod.status.as_ref()?.pod_ip.clone()?;
        let name = pod.name_any();
        let token = token.clone();
        Some(async move {
            match fetch(&ip, &token).await {
                Ok(report) => Some((name, report)),
                Err(error) => {
                    tracing::debug!(pod = %name, %error, "agent /status unavailable");
                    None
                }
            }
        })
    });
    join_all(asks).await.into_iter().flatten().collect()
}

/// The agent token of the shard's cluster, if the Secret holds one.
async fn token(ctx: &Context, shard: &Shard) -> Option<String> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &shard.namespace().unwrap_or_default());
    let secret = api
        .get_opt(&names::secret_name(&shard.spec.cluster))
        .await
        .ok()??;
    let bytes = secret.data?.remove(secret_key::AGENT_TOKEN)?;
    String::from_utf8(bytes.0).ok()
}

/// `GET http://<ip>:8000/status` with the token, within [`DEADLINE`].
pub async fn fetch(ip: &str, token: &str) -> Result<AgentReport, AgentError> {
    tokio::time::timeout(DEADLINE, fetch_unbounded(ip, token))
        .await
        .map_err(|_| AgentError::Timeout)?
}

async fn fetch_unbounded(ip: &str, token: &str) -> Result<AgentReport, AgentError> {
    let mut stream = TcpStream::connect((ip, AGENT_PORT as u16)).await?;
    // HTTP/1.0: the body ends with the connection, never chunked.
    let request = format!(
        "GET /status HTTP/1.0\r\nHost: {ip}:{AGENT_PORT}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
    parse_response(&response)
}

/// Parses a raw HTTP response to `/status`.
pub fn parse_response(response: &[u8]) -> Result<AgentReport, AgentError> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| AgentError::Response("no header end".into()))?;
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(AgentError::Response(format!("status {code}")));
    }
    let body: StatusBody =
        serde_json::from_str(body).map_err(|e| AgentError::Response(e.to_string()))?;
    Ok(AgentReport {
        role: body.role,
        server_up: body.server_up,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_status_response() {
        let raw = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"engine\":\"redis\",\"role\":\"primary\",\"serverUp\":true}";
        let report = parse_response(raw).unwrap();
        assert_eq!(report.role, Some(Role::Primary));
        assert!(report.server_up);
    }

    #[test]
    fn rejects_unauthorised_and_garbage() {
        assert!(parse_response(b"HTTP/1.0 401 Unauthorized\r\n\r\n").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n\r\nnot json").is_err());
    }
}
