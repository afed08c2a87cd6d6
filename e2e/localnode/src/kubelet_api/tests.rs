//! End-to-end tests of the kubelet API over real TLS on loopback.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

/// A CA that issues leaf certificates.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// Issues a leaf; returns (certificate PEM, key PEM).
    fn issue(&self, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A running API over a temporary state dir; returns its address and the CA that
/// signs client certificates.
struct Fixture {
    addr: SocketAddr,
    server_ca: Ca,
    client_ca: Ca,
    state: tempfile::TempDir,
}

async fn start() -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("kubelet-ca"), Ca::new("client-ca"));
    let (cert, key) = server_ca.issue(
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let dir = state.path();
    std::fs::write(dir.join("kubelet.crt"), cert).unwrap();
    std::fs::write(dir.join("kubelet.key"), key).unwrap();
    std::fs::write(dir.join("client-ca.crt"), client_ca.0.pem()).unwrap();
    let tls = tls::server_config(
        &dir.join("kubelet.crt"),
        &dir.join("kubelet.key"),
        &dir.join("client-ca.crt"),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let source = Arc::new(LogSource {
        state_dir: dir.to_owned(),
        client: None,
    });
    tokio::spawn(serve(listener, Arc::new(tls), source));
    Fixture {
        addr,
        server_ca,
        client_ca,
        state,
    }
}

/// A TLS connection to the API, with a client certificate from `client` if given.
async fn connect(
    f: &Fixture,
    client: Option<&Ca>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(f.server_ca.0.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(ca) => {
            let (cert, key) = ca.issue(&["apiserver"], ExtendedKeyUsagePurpose::ClientAuth);
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(f.addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

/// Sends an HTTP/1.0 GET (close-delimited response) with an optional client
/// certificate; returns the raw response or the error.
async fn get(f: &Fixture, path: &str, client: Option<&Ca>) -> std::io::Result<String> {
    let mut tls = connect(f, client, &[]).await?;
    tls.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The body of a raw HTTP response.
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Writes a container log and the pod's by-name link.
fn write_log(state: &Path, restart: u32, text: &str) {
    let dir = logs::container_dir(&logs::pod_dir(state, "uid-1"), "app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(logs::log_file(&dir, restart), text).unwrap();
    let by_name = state.join("pods/by-name");
    std::fs::create_dir_all(&by_name).unwrap();
    let _ = std::os::unix::fs::symlink(state.join("pods/uid-1"), by_name.join("ns_web"));
}

#[tokio::test]
async fn healthz_requires_a_client_certificate() {
    let f = start().await;
    let ok = get(&f, "/healthz", Some(&f.client_ca)).await.unwrap();
    assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
    assert_eq!(body(&ok), "ok");

    let anonymous = get(&f, "/healthz", None).await;
    assert!(
        anonymous.as_ref().map_or(true, |r| !r.contains("200")),
        "{anonymous:?}"
    );
    let rogue = Ca::new("rogue");
    let forged = get(&f, "/healthz", Some(&rogue)).await;
    assert!(
        forged.as_ref().map_or(true, |r| !r.contains("200")),
        "{forged:?}"
    );
}

#[tokio::test]
async fn serves_container_logs() {
    let f = start().await;
    let state = f.state.path();
    write_log(state, 0, "old 1\nold 2\n");
    write_log(state, 1, "new 1\nnew 2\nnew 3\n");
    let c = Some(&f.client_ca);

    let r = get(&f, "/containerLogs/ns/web/app", c).await.unwrap();
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    assert_eq!(body(&r), "new 1\nnew 2\nnew 3\n");
    let r = get(
        &f,
        "/containerLogs/ns/web/app?tailLines=2&timestamps=true",
        c,
    )
    .await
    .unwrap();
    assert_eq!(body(&r), "new 2\nnew 3\n");
    let r = get(&f, "/containerLogs/ns/web/app?previous=true", c)
        .await
        .unwrap();
    assert_eq!(body(&r), "old 1\nold 2\n");
    let r = get(&f, "/containerLogs/ns/web/app?limitBytes=3", c)
        .await
        .unwrap();
    assert_eq!(body(&r), "new");
    let r = get(&f, "/containerLogs/ns/web/app?tailLines=1&limitBytes=3", c)
        .await
        .unwrap();
    assert_eq!(body(&r), "new");

    for path in ["/containerLogs/ns/nope/app", "/containerLogs/ns/web/nope"] {
        let r = get(&f, path, c).await.unwrap();
        assert!(r.starts_with("HTTP/1.0 404"), "{path}: {r}");
        assert!(body(&r).contains("not found"), "{r}");
    }
    let r = get(&f, "/containerLogs/ns/web/..", c).await.unwrap();
    assert!(!r.starts_with("HTTP/1.0 200"), "{r}");
}

#[tokio::test]
async fn follows_until_the_pod_directory_is_removed() {
    let f = start().await;
    let state = f.state.path().to_owned();
    write_log(&state, 0, "first\n");
    let file = logs::log_file(
        &logs::container_dir(&logs::pod_dir(&state, "uid-1"), "app"),
        0,
    );
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(b"second\n").unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::remove_dir_all(state.join("pods/uid-1")).unwrap();
    });
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        get(
            &f,
            "/containerLogs/ns/web/app?follow=true",
            Some(&f.client_ca),
        ),
    )
    .await
    .expect("follow must end when the pod directory goes away")
    .unwrap();
    writer.await.unwrap();
    assert_eq!(body(&r), "first\nsecond\n");
}

#[tokio::test]
async fn speaks_http2_like_the_apiserver() {
    use http_body_util::BodyExt as _;
    let f = start().await;
    write_log(f.state.path(), 0, "a\nb\n");
    let tls = connect(&f, Some(&f.client_ca), &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = axum::http::Request::get("https://127.0.0.1/containerLogs/ns/web/app?tailLines=1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"b\n");
}
