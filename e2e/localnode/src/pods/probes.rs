//! Probes and lifecycle hooks: exec (in the container's sandbox), httpGet,
//! tcpSocket (gRPC probes are approximated by a TCP connect), and the probe
//! loops that drive `started`, `ready` and liveness restarts.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, LifecycleHandler, Probe,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::env::EnvList;
use super::expand::expand;
use super::procs::Procs;
use crate::sandbox;

/// Most output of an exec probe kept for messages.
const MAX_OUTPUT: usize = 10 * 1024;

/// What a probe or hook does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run a command in the container's sandbox.
    Exec(Vec<String>),
    /// HTTP GET.
    Http {
        host: Option<String>,
        port: u16,
        https: bool,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// TCP connect.
    Tcp { host: Option<String>, port: u16 },
    /// Sleep (lifecycle hooks only).
    Sleep(u64),
}

/// Result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Success,
    /// Failed, with the reason.
    Failure(String),
}

/// Everything a probe needs to reach the container.
#[derive(Clone)]
pub struct Target {
    /// The pod IP (default host of httpGet and tcpSocket).
    pub pod_ip: Ipv4Addr,
    /// The container's sandbox spec (exec runs in a copy of it).
    pub sandbox: sandbox::Spec,
    /// The node binary.
    pub exe: PathBuf,
    /// Starts sandboxes.
    pub spawner: sandbox::Spawner,
    /// The container's environment (for `$(VAR)` in exec commands).
    pub env: EnvList,
    /// Live process groups.
    pub procs: Arc<Procs>,
}

/// A probe with its timing.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    /// What to do.
    pub action: Action,
    /// initialDelaySeconds.
    pub initial_delay: Duration,
    /// periodSeconds.
    pub period: Duration,
    /// timeoutSeconds.
    pub timeout: Duration,
    /// successThreshold.
    pub success_threshold: u32,
    /// failureThreshold.
    pub failure_threshold: u32,
    /// Probe-level terminationGracePeriodSeconds.
    pub grace: Option<i64>,
}

/// The probes of a container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probes {
    /// startupProbe.
    pub startup: Option<ProbeSpec>,
    /// livenessProbe.
    pub liveness: Option<ProbeSpec>,
    /// readinessProbe.
    pub readiness: Option<ProbeSpec>,
}

/// What the probe loop reports to the container's supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The container counts as started.
    Started,
    /// Readiness changed.
    Ready(bool),
    /// A probe failed (for an Unhealthy event).
    Unhealthy(String),
    /// Kill the container (liveness or startup failure), with an optional grace override.
    Kill { reason: String, grace: Option<i64> },
}

/// Resolves a port number or a named container port.
pub fn port(p: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    let n = match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(s))
                .map(|cp| cp.container_port)
                .ok_or_else(|| format!("port name {s:?} not found among the container's ports"))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port {n}"))
}

fn http_action(h: &HTTPGetAction, ports: &[ContainerPort]) -> Result<Action, String> {
    let https = match h.scheme.as_deref().unwrap_or("HTTP") {
        "HTTP" => false,
        "HTTPS" => true,
        other => return Err(format!("unsupported httpGet scheme {other:?}")),
    };
    let mut path = h.path.clone().unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let headers = h
        .http_headers
        .iter()
        .flatten()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    Ok(Action::Http {
        host: h.host.clone().filter(|s| !s.is_empty()),
        port: port(&h.port, ports)?,
        https,
        path,
        headers,
    })
}

/// The action of a probe.
pub fn probe_action(p: &Probe, ports: &[ContainerPort]) -> Result<Action, String> {
    if let Some(e) = &p.exec {
        return Ok(Action::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &p.http_get {
        return http_action(h, ports);
    }
    if let Some(t) = &p.tcp_socket {
        return Ok(Action::Tcp {
            host: t.host.clone().filter(|s| !s.is_empty()),
            port: port(&t.port, ports)?,
        });
    }
    if let Some(g) = &p.grpc {
        let port = u16::try_from(g.port).map_err(|_| format!("invalid grpc port {}", g.port))?;
        return Ok(Action::Tcp { host: None, port });
    }
    Err("probe has no handler".to_string())
}

/// The action of a lifecycle hook.
pub fn hook_action(h: &LifecycleHandler, ports: &[ContainerPort]) -> Result<Action, String> {
    if let Some(e) = &h.exec {
        return Ok(Action::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(x) = &h.http_get {
        return http_action(x, ports);
    }
    if let Some(t) = &h.tcp_socket {
        return Ok(Action::Tcp {
            host: t.host.clone().filter(|s| !s.is_empty()),
            port: port(&t.port, ports)?,
        });
    }
    if let Some(s) = &h.sleep {
        return Ok(Action::Sleep(s.seconds.max(0) as u64));
    }
    Err("lifecycle hook has no handler".to_string())
}

fn secs(v: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(min) as u64)
}

fn probe_spec(p: &Probe, ports: &[ContainerPort], what: &str) -> Result<ProbeSpec, String> {
    let action = probe_action(p, ports).map_err(|e| format!("{what}: {e}"))?;
    Ok(ProbeSpec {
        action,
        initial_delay: secs(p.initial_delay_seconds, 0, 0),
        period: secs(p.period_seconds, 10, 1),
        timeout: secs(p.timeout_seconds, 1, 1),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        grace: p.termination_grace_period_seconds,
    })
}

impl Probes {
    /// The container's probes (an error names a malformed one, e.g. a bad port name).
    pub fn of(c: &Container) -> Result<Probes, String> {
        let ports = c.ports.clone().unwrap_or_default();
        let one =
            |p: &Option<Probe>, what| p.as_ref().map(|p| probe_spec(p, &ports, what)).transpose();
        Ok(Probes {
            startup: one(&c.startup_probe, "startupProbe")?,
            liveness: one(&c.liveness_probe, "livenessProbe")?,
            readiness: one(&c.readiness_probe, "readinessProbe")?,
        })
    }
}

/// Runs an action once, bounded by `timeout`.
pub async fn run_action(t: &Target, a: &Action, timeout: Duration) -> Outcome {
    let host = |h: &Option<String>| h.clone().unwrap_or_else(|| t.pod_ip.to_string());
    let fut = async {
        match a {
            Action::Exec(cmd) => exec(t, cmd, timeout).await,
            Action::Http {
                host: h,
                port,
                https,
                path,
                headers,
            } => http_get(&host(h), *port, *https, path, headers).await,
            Action::Tcp { host: h, port } => {
                match tokio::net::TcpStream::connect((host(h).as_str(), *port)).await {
                    Ok(_) => Outcome::Success,
                    Err(e) => Outcome::Failure(format!("dial tcp {}:{port}: {e}", host(h))),
                }
            }
            Action::Sleep(s) => {
                tokio::time::sleep(Duration::from_secs(*s)).await;
                Outcome::Success
            }
        }
    };
    let limit = if matches!(a, Action::Sleep(_) | Action::Exec(_)) {
        timeout + Duration::from_secs(1)
    } else {
        timeout
    };
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Outcome::Failure(format!("timeout after {}s", timeout.as_secs())))
}

async fn exec(t: &Target, cmd: &[String], timeout: Duration) -> Outcome {
    let mut spec = t.sandbox.clone();
    spec.argv = cmd
        .iter()
        .map(|s| expand(s, |n| t.env.get(n).map(str::to_string)))
        .collect();
    spec.error_file = None;
    let spawned = t
        .spawner
        .spawn(&spec, &t.exe, Stdio::piped(), Stdio::piped())
        .await;
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(format!("starting exec probe: {e}")),
    };
    let pgid = child.id().map_or(0, |p| p as i32);
    t.procs.add(pgid);
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let collect = async {
        let (a, b) = tokio::join!(read_capped(out.as_mut()), read_capped(err.as_mut()));
        let status = child.wait().await;
        (status, a + &b)
    };
    let result = tokio::time::timeout(timeout, collect).await;
    t.procs.finish(pgid);
    match result {
        Err(_) => Outcome::Failure(format!("command timed out after {}s", timeout.as_secs())),
        Ok((Err(e), _)) => Outcome::Failure(format!("exec probe: {e}")),
        Ok((Ok(s), _)) if s.success() => Outcome::Success,
        Ok((Ok(s), output)) => {
            let code = s
                .code()
                .map_or_else(|| "signal".to_string(), |c| c.to_string());
            Outcome::Failure(format!(
                "command {:?} exited with {code}: {}",
                cmd,
                output.trim()
            ))
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(r: Option<&mut R>) -> String {
    let Some(r) = r else { return String::new() };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        if buf.len() < MAX_OUTPUT {
            buf.extend_from_slice(&chunk[..n.min(MAX_OUTPUT - buf.len())]);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Performs an HTTP(S) GET; 200..=399 is success. TLS certificates are not verified.
pub async fn http_get(
    host: &str,
    port: u16,
    https: bool,
    path: &str,
    headers: &[(String, String)],
) -> Outcome {
    let fail = |e: String| {
        Outcome::Failure(format!(
            "Get \"{}://{host}:{port}{path}\": {e}",
            if https { "https" } else { "http" }
        ))
    };
    let tcp = match tokio::net::TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let req = http_request(host, port, path, headers);
    let code = if https {
        let name = match rustls::pki_types::ServerName::try_from(host.to_string()) {
            Ok(n) => n,
            Err(e) => return fail(e.to_string()),
        };
        match tls_connector().connect(name, tcp).await {
            Ok(tls) => exchange(tls, &req).await,
            Err(e) => return fail(e.to_string()),
        }
    } else {
        exchange(tcp, &req).await
    };
    match code {
        Ok(c) if (200..400).contains(&c) => Outcome::Success,
        Ok(c) => Outcome::Failure(format!("HTTP probe failed with statuscode: {c}")),
        Err(e) => fail(e),
    }
}

/// The request bytes of an HTTP probe.
pub fn http_request(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> String {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/1.35\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: &str) -> Result<u16, String> {
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status_line(&buf).ok_or_else(|| "malformed HTTP response".to_string())
}

/// The status code of an HTTP response's first line.
pub fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(buf);
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONNECTOR: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        })
        .clone()
}

/// Accepts any server certificate (probes do not verify TLS, like the kubelet).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Consecutive-result counter of one probe.
#[derive(Debug, Default, Clone)]
pub struct Counter {
    successes: u32,
    failures: u32,
}

impl Counter {
    /// Records a result; returns `Some(true)` when the success threshold is
    /// reached, `Some(false)` when the failure threshold is, `None` otherwise.
    pub fn record(&mut self, ok: bool, spec: &ProbeSpec) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes += 1;
            (self.successes >= spec.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures >= spec.failure_threshold).then_some(false)
        }
    }
}

/// Runs the container's probes until the container stops (the task is aborted)
/// or a liveness/startup failure asks for a kill.
pub async fn run(t: Arc<Target>, probes: Probes, tx: mpsc::UnboundedSender<Report>) {
    if let Some(sp) = &probes.startup
        && !startup(&t, sp, &tx).await
    {
        return;
    }
    let _ = tx.send(Report::Started);
    if probes.readiness.is_none() {
        let _ = tx.send(Report::Ready(true));
    }
    let readiness = async {
        if let Some(sp) = &probes.readiness {
            readiness(&t, sp, &tx).await;
        }
    };
    let liveness = async {
        if let Some(sp) = &probes.liveness {
            liveness(&t, sp, &tx).await;
        }
    };
    tokio::join!(readiness, liveness);
}

async fn startup(t: &Target, sp: &ProbeSpec, tx: &mpsc::UnboundedSender<Report>) -> bool {
    tokio::time::sleep(sp.initial_delay).await;
    let mut counter = Counter::default();
    loop {
        let out = run_action(t, &sp.action, sp.timeout).await;
        match (counter.record(out == Outcome::Success, sp), out) {
            (Some(true), _) => return true,
            (Some(false), Outcome::Failure(m)) => {
                let _ = tx.send(Report::Unhealthy(format!("Startup probe failed: {m}")));
                let _ = tx.send(Report::Kill {
                    reason: "failed startup probe".into(),
                    grace: sp.grace,
                });
                return false;
            }
            (_, Outcome::Failure(m)) => {
                let _ = tx.send(Report::Unhealthy(format!("Startup probe failed: {m}")));
            }
            _ => {}
        }
        tokio::time::sleep(sp.period).await;
    }
}

async fn readiness(t: &Target, sp: &ProbeSpec, tx: &mpsc::UnboundedSender<Report>) {
    tokio::time::sleep(sp.initial_delay).await;
    let mut counter = Counter::default();
    loop {
        let out = run_action(t, &sp.action, sp.timeout).await;
        if let Outcome::Failure(m) = &out {
            let _ = tx.send(Report::Unhealthy(format!("Readiness probe failed: {m}")));
        }
        if let Some(ready) = counter.record(out == Outcome::Success, sp) {
            let _ = tx.send(Report::Ready(ready));
        }
        tokio::time::sleep(sp.period).await;
    }
}

async fn liveness(t: &Target, sp: &ProbeSpec, tx: &mpsc::UnboundedSender<Report>) {
    tokio::time::sleep(sp.initial_delay).await;
    let mut counter = Counter::default();
    loop {
        let out = run_action(t, &sp.action, sp.timeout).await;
        if let Outcome::Failure(m) = &out {
            let _ = tx.send(Report::Unhealthy(format!("Liveness probe failed: {m}")));
        }
        if counter.record(out == Outcome::Success, sp) == Some(false) {
            let _ = tx.send(Report::Kill {
                reason: "failed liveness probe".into(),
                grace: sp.grace,
            });
            return;
        }
        tokio::time::sleep(sp.period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn parses_probes_and_named_ports() {
        let c = container(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "healthz", "port": "http", "scheme": "HTTPS",
                               "httpHeaders": [{"name": "X-A", "value": "b"}]}, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 5432}, "failureThreshold": 5},
            "startupProbe": {"exec": {"command": ["true"]}}}),
        );
        let p = Probes::of(&c).unwrap();
        let r = p.readiness.unwrap();
        assert_eq!(
            r.action,
            Action::Http {
                host: None,
                port: 8080,
                https: true,
                path: "/healthz".into(),
                headers: vec![("X-A".into(), "b".into())]
            }
        );
        assert_eq!(r.period, Duration::from_secs(2));
        assert_eq!(r.timeout, Duration::from_secs(1));
        let l = p.liveness.unwrap();
        assert_eq!(
            l.action,
            Action::Tcp {
                host: None,
                port: 5432
            }
        );
        assert_eq!(l.failure_threshold, 5);
        assert_eq!(p.startup.unwrap().action, Action::Exec(vec!["true".into()]));
    }

    #[test]
    fn bad_port_name_is_an_error() {
        let c = container(json!({"name": "c", "livenessProbe": {"httpGet": {"port": "nope"}}}));
        let err = Probes::of(&c).unwrap_err();
        assert!(
            err.contains("livenessProbe") && err.contains("\"nope\""),
            "{err}"
        );
    }

    #[test]
    fn thresholds() {
        let c = container(
            json!({"name": "c", "readinessProbe": {"tcpSocket": {"port": 1}, "successThreshold": 2, "failureThreshold": 2}}),
        );
        let sp = Probes::of(&c).unwrap().readiness.unwrap();
        let mut k = Counter::default();
        assert_eq!(k.record(true, &sp), None);
        assert_eq!(k.record(true, &sp), Some(true));
        assert_eq!(k.record(false, &sp), None);
        assert_eq!(k.record(true, &sp), None);
        assert_eq!(k.record(false, &sp), None);
        assert_eq!(k.record(false, &sp), Some(false));
    }

    #[test]
    fn http_request_and_status() {
        let req = http_request("127.10.0.2", 80, "/x", &[("Host".into(), "svc".into())]);
        assert!(req.starts_with("GET /x HTTP/1.1\r\n"));
        assert!(req.contains("Host: svc\r\n") && !req.contains("127.10.0.2:80"));
        assert!(req.ends_with("Connection: close\r\n\r\n"));
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"garbage"), None);
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for code in [200, 503] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        assert_eq!(
            http_get("127.0.0.1", port, false, "/", &[]).await,
            Outcome::Success
        );
        assert!(
            matches!(http_get("127.0.0.1", port, false, "/", &[]).await, Outcome::Failure(m) if m.contains("503"))
        );
        assert!(matches!(
            http_get("127.0.0.1", 1, false, "/", &[]).await,
            Outcome::Failure(_)
        ));
    }
}
