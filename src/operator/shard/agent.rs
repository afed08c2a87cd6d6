//! The instance agents' API as the operator uses it: `GET /status` of every Pod
//! with an IP, concurrently, and `POST /role`; Bearer token from the credentials
//! Secret, 4 s deadline each (the agent probes its server for each answer).
//!
//! HTTP/1.0 over a plain TCP connection: the body ends with the connection, never
//! chunked, which is all these two small JSON documents need.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::plan::terminating;
use crate::api::Shard;
use crate::api::agent::{AgentStatus, RoleAnswer, RoleCommand};
use crate::operator::context::Context;
use crate::operator::names::{self, AGENT_PORT, secret_key};

/// Deadline of one request.
pub const DEADLINE: Duration = Duration::from_secs(4);
/// Largest response read.
const MAX_RESPONSE: u64 = 256 * 1024;

/// Errors of one request to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent did not answer within [`DEADLINE`].
    #[error("no answer within {DEADLINE:?}")]
    Timeout,
    /// Connecting, writing or reading failed.
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    /// The response was not the expected status and document.
    #[error("unexpected response: {0}")]
    Response(String),
}

/// The agent token of the shard's cluster, if the Secret holds one.
pub async fn token(ctx: &Context, shard: &Shard) -> Option<String> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &shard.namespace().unwrap_or_default());
    let secret = api
        .get_opt(&names::secret_name(&shard.spec.cluster))
        .await
        .ok()??;
    let bytes = secret.data?.remove(secret_key::AGENT_TOKEN)?;
    String::from_utf8(bytes.0).ok()
}

/// `/status` of every Pod that has an IP and is not being deleted, by Pod name;
/// agents that do not answer are absent.
pub async fn statuses(pods: &[Pod], token: &str) -> BTreeMap<String, AgentStatus> {
    let asks = pods.iter().filter(|p| !terminating(p)).filter_map(|pod| {
        let ip = pod.status.as_ref()?.pod_ip.clone()?;
        let name = pod.name_any();
        Some(async move {
            match status(&ip, token).await {
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

/// `GET http://<ip>:8000/status`.
pub async fn status(ip: &str, token: &str) -> Result<AgentStatus, AgentError> {
    let response = exchange(ip, &request("GET", "/status", ip, token, None)).await?;
    let (code, body) = split_response(&response)?;
    if code != 200 {
        return Err(AgentError::Response(format!("status {code}")));
    }
    serde_json::from_str(&body).map_err(|e| AgentError::Response(e.to_string()))
}

/// `POST http://<ip>:8000/role` with `command`: the agent's answer, taken (202) or
/// refused as stale (409).
pub async fn send_role(
    ip: &str,
    token: &str,
    command: &RoleCommand,
) -> Result<RoleAnswer, AgentError> {
    let body = serde_json::to_string(command).map_err(|e| AgentError::Response(e.to_string()))?;
    let response = exchange(ip, &request("POST", "/role", ip, token, Some(&body))).await?;
    let (code, body) = split_response(&response)?;
    match code {
        200..=299 | 409 => {
            serde_json::from_str(&body).map_err(|e| AgentError::Response(e.to_string()))
        }
        _ => Err(AgentError::Response(format!(
            "status {code}: {}",
            body.trim()
        ))),
    }
}

/// The raw HTTP/1.0 request. The token goes on the wire only.
fn request(method: &str, path: &str, ip: &str, token: &str, body: Option<&str>) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {ip}:{AGENT_PORT}\r\nAuthorization: Bearer {token}\r\n"
    );
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        head.push_str("\r\n");
    }
    head
}

/// Sends `request` to the agent and reads the whole response, within [`DEADLINE`].
async fn exchange(ip: &str, request: &str) -> Result<Vec<u8>, AgentError> {
    let port = u16::try_from(AGENT_PORT).unwrap_or(8000);
    http_exchange(ip, port, request, DEADLINE).await
}

/// Sends a raw HTTP/1.0 `request` to `ip:port` and reads the response until the
/// server closes the connection (at most 256 KiB), within `deadline`.
pub async fn http_exchange(
    ip: &str,
    port: u16,
    request: &str,
    deadline: std::time::Duration,
) -> Result<Vec<u8>, AgentError> {
    let work = async {
        let mut stream = TcpStream::connect((ip, port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
        Ok::<_, AgentError>(response)
    };
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| AgentError::Timeout)?
}

/// The status code and body of a raw HTTP response.
pub fn split_response(response: &[u8]) -> Result<(u16, String), AgentError> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| AgentError::Response("no header end".into()))?;
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| AgentError::Response(format!("bad status line {status_line:?}")))?;
    Ok((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::agent::DesiredRole;

    #[test]
    fn parses_a_status_response() {
        let raw = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"engine\":\"redis\",\"role\":\"primary\",\"desiredRole\":\"primary\",\"epoch\":2,\"serverUp\":true,\"dataDirInitialised\":true,\"podName\":\"c-0-0\",\"phase\":\"running\",\"restarts\":0}";
        let (code, body) = split_response(raw).unwrap();
        assert_eq!(code, 200);
        let status: AgentStatus = serde_json::from_str(&body).unwrap();
        assert_eq!(status.desired_role, DesiredRole::Primary);
        assert_eq!(status.epoch, 2);
        assert!(status.server_up);
    }

    #[test]
    fn rejects_garbage() {
        assert!(split_response(b"garbage").is_err());
        assert!(split_response(b"HTTP/1.0 abc\r\n\r\n").is_err());
        assert_eq!(
            split_response(b"HTTP/1.0 401 Unauthorized\r\n\r\n")
                .unwrap()
                .0,
            401
        );
    }

    #[test]
    fn a_post_carries_its_length_and_the_token() {
        let r = request("POST", "/role", "10.0.0.1", "tok", Some("{}"));
        assert!(r.starts_with("POST /role HTTP/1.0\r\n"), "{r}");
        assert!(r.contains("Authorization: Bearer tok\r\n"), "{r}");
        assert!(r.ends_with("Content-Length: 2\r\n\r\n{}"), "{r}");
    }

    #[tokio::test]
    async fn role_commands_round_trip_through_a_fake_agent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let answer = r#"{"epoch":3,"accepted":true,"message":"ok"}"#;
            let response = format!("HTTP/1.1 202 Accepted\r\n\r\n{answer}");
            socket.write_all(response.as_bytes()).await.unwrap();
            text
        });
        // The fake listens on another port than the agent's: talk to it directly.
        let command: RoleCommand = serde_json::from_str(r#"{"epoch":3,"role":"fenced"}"#).unwrap();
        let body = serde_json::to_string(&command).unwrap();
        let raw = request("POST", "/role", "127.0.0.1", "t", Some(&body));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let (code, body) = split_response(&response).unwrap();
        assert_eq!(code, 202);
        let answer: RoleAnswer = serde_json::from_str(&body).unwrap();
        assert!(answer.accepted);
        let seen = server.await.unwrap();
        assert!(seen.contains("\"role\":\"fenced\""), "{seen}");
    }
}
