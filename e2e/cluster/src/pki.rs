//! Certificates and keys of the local cluster, generated with rcgen (ECDSA P-256).
//!
//! One CA signs everything: the apiserver's serving certificate, the client
//! certificates of the admin, the controller manager, the apiserver (towards the
//! kubelet API) and the node, and the node's kubelet-API serving certificate. The
//! ServiceAccount token signing key is a separate key pair.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Common name of the admin user (member of `system:masters`).
pub const ADMIN_USER: &str = "kubernetes-admin";
/// Common name of the controller manager's user.
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// Common name the apiserver presents to the kubelet API.
pub const APISERVER_KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// Group with unrestricted access (built-in `cluster-admin` binding).
pub const MASTERS_GROUP: &str = "system:masters";
/// Group of node users.
pub const NODES_GROUP: &str = "system:nodes";
/// Common name the apiserver presents to aggregated API servers.
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// What the certificates must name.
#[derive(Debug, Clone)]
pub struct PkiSpec {
    /// Name of the Node; the node's client certificate is `system:node:<name>`.
    pub node_name: String,
    /// First address of the service CIDR: the `kubernetes` Service's ClusterIP.
    pub service_ip: Ipv4Addr,
}

/// A PEM certificate with its PEM (PKCS#8) private key.
#[derive(Debug, Clone)]
pub struct CertPem {
    /// The certificate.
    pub cert: String,
    /// The private key.
    pub key: String,
}

/// A key pair as PEM (no certificate).
#[derive(Debug, Clone)]
pub struct KeyPem {
    /// The PKCS#8 private key.
    pub private: String,
    /// The SubjectPublicKeyInfo public key.
    pub public: String,
}

/// Every credential of a cluster, in memory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA (self-signed).
    pub ca: CertPem,
    /// The apiserver's serving certificate.
    pub apiserver: CertPem,
    /// Admin client (`kubernetes-admin`, `system:masters`).
    pub admin: CertPem,
    /// Controller manager client (`system:kube-controller-manager`).
    pub controller_manager: CertPem,
    /// The apiserver's client certificate towards the kubelet API.
    pub apiserver_kubelet_client: CertPem,
    /// The node's kubelet-API serving certificate.
    pub node_serving: CertPem,
    /// The node's client certificate (`system:node:<name>`, `system:nodes`).
    pub node_client: CertPem,
    /// ServiceAccount token signing key.
    pub service_account: KeyPem,
    /// CA of the aggregation layer's request-header authentication (self-signed).
    pub front_proxy_ca: CertPem,
    /// The apiserver's client certificate towards aggregated API servers.
    pub front_proxy_client: CertPem,
}

/// Paths of a certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairPaths {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key (mode 0600).
    pub key: PathBuf,
}

/// Where [`Pki::write`] puts each credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    /// The CA.
    pub ca: PairPaths,
    /// The apiserver's serving pair.
    pub apiserver: PairPaths,
    /// The admin's client pair.
    pub admin: PairPaths,
    /// The controller manager's client pair.
    pub controller_manager: PairPaths,
    /// The apiserver's kubelet-client pair.
    pub apiserver_kubelet_client: PairPaths,
    /// The node's kubelet-API serving pair.
    pub node_serving: PairPaths,
    /// The node's client pair.
    pub node_client: PairPaths,
    /// ServiceAccount signing key (private).
    pub service_account_key: PathBuf,
    /// ServiceAccount verification key (public).
    pub service_account_pub: PathBuf,
    /// The front-proxy CA.
    pub front_proxy_ca: PairPaths,
    /// The front-proxy client pair.
    pub front_proxy_client: PairPaths,
}

impl PkiFiles {
    /// The file names used under `dir`.
    pub fn at(dir: &Path) -> Self {
        let pair = |name: &str| PairPaths {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        PkiFiles {
            ca: pair("ca"),
            apiserver: pair("apiserver"),
            admin: pair("admin"),
            controller_manager: pair("controller-manager"),
            apiserver_kubelet_client: pair("apiserver-kubelet-client"),
            node_serving: pair("node-serving"),
            node_client: pair("node-client"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
            front_proxy_ca: pair("front-proxy-ca"),
            front_proxy_client: pair("front-proxy-client"),
        }
    }
}

/// The user name of a node's client certificate.
pub fn node_user(node_name: &str) -> String {
    format!("system:node:{node_name}")
}

/// The DNS names and addresses the apiserver's certificate covers.
pub fn apiserver_sans(service_ip: Ipv4Addr) -> Vec<String> {
    [
        "127.0.0.1",
        "localhost",
        &service_ip.to_string(),
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Whether a leaf certificate authenticates a server or a client.
#[derive(Clone, Copy)]
enum Usage {
    Server,
    Client,
}

impl Pki {
    /// Generates a fresh CA and every certificate signed by it.
    pub fn generate(spec: &PkiSpec) -> Result<Pki> {
        let (ca, issuer) = new_ca("ringmaster-local-ca")?;
        let (front_proxy_ca, front_proxy) = new_ca("ringmaster-local-front-proxy-ca")?;
        let front_proxy_client =
            issue(&front_proxy, FRONT_PROXY_CLIENT, &[], vec![], Usage::Client)?;
        let leaf = |cn: &str, orgs: &[&str], sans: Vec<String>, usage| {
            issue(&issuer, cn, orgs, sans, usage)
        };
        let local = || vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut node_sans = local();
        node_sans.push(spec.node_name.clone());
        let node_user = node_user(&spec.node_name);
        Ok(Pki {
            apiserver: leaf(
                "kube-apiserver",
                &[],
                apiserver_sans(spec.service_ip),
                Usage::Server,
            )?,
            admin: leaf(ADMIN_USER, &[MASTERS_GROUP], vec![], Usage::Client)?,
            controller_manager: leaf(CONTROLLER_MANAGER_USER, &[], vec![], Usage::Client)?,
            apiserver_kubelet_client: leaf(
                APISERVER_KUBELET_CLIENT_USER,
                &[MASTERS_GROUP],
                vec![],
                Usage::Client,
            )?,
            node_serving: leaf(&spec.node_name, &[], node_sans, Usage::Server)?,
            node_client: leaf(&node_user, &[NODES_GROUP], vec![], Usage::Client)?,
            service_account: new_key_pair()?,
            ca,
            front_proxy_ca,
            front_proxy_client,
        })
    }

    /// Writes every credential under `dir` (keys with mode 0600).
    pub fn write(&self, dir: &Path) -> Result<PkiFiles> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = PkiFiles::at(dir);
        let pairs = [
            (&self.ca, &files.ca),
            (&self.apiserver, &files.apiserver),
            (&self.admin, &files.admin),
            (&self.controller_manager, &files.controller_manager),
            (
                &self.apiserver_kubelet_client,
                &files.apiserver_kubelet_client,
            ),
            (&self.node_serving, &files.node_serving),
            (&self.node_client, &files.node_client),
            (&self.front_proxy_ca, &files.front_proxy_ca),
            (&self.front_proxy_client, &files.front_proxy_client),
        ];
        for (pem, paths) in pairs {
            write_file(&paths.cert, &pem.cert, 0o644)?;
            write_file(&paths.key, &pem.key, 0o600)?;
        }
        write_file(
            &files.service_account_key,
            &self.service_account.private,
            0o600,
        )?;
        write_file(
            &files.service_account_pub,
            &self.service_account.public,
            0o644,
        )?;
        Ok(files)
    }
}

/// Writes `contents` to `path`, created with `mode` (replacing any old file).
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn distinguished_name(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for org in orgs {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn new_ca(cn: &str) -> Result<(CertPem, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = distinguished_name(cn, &[]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    let pem = CertPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    Ok((pem, Issuer::new(params, key)))
}

fn issue(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    orgs: &[&str],
    sans: Vec<String>,
    usage: Usage,
) -> Result<CertPem> {
    let key = KeyPair::generate().with_context(|| format!("generating the key of {cn}"))?;
    let mut params = CertificateParams::new(sans).with_context(|| format!("SANs of {cn}"))?;
    params.distinguished_name = distinguished_name(cn, orgs);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing the certificate of {cn}"))?;
    Ok(CertPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn new_key_pair() -> Result<KeyPem> {
    let key = KeyPair::generate().context("generating the ServiceAccount key")?;
    Ok(KeyPem {
        private: key.serialize_pem(),
        public: key.public_key_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::pem::parse_x509_pem;
    use x509_parser::prelude::X509Certificate;

    fn spec() -> PkiSpec {
        PkiSpec {
            node_name: "localnode".into(),
            service_ip: Ipv4Addr::new(127, 21, 0, 1),
        }
    }

    fn with_cert<R>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
        let (_, pem) = parse_x509_pem(pem.as_bytes()).expect("PEM parses");
        let cert = pem.parse_x509().expect("certificate parses");
        f(&cert)
    }

    fn sans(pem: &str) -> Vec<String> {
        with_cert(pem, |cert| {
            let ext = cert.subject_alternative_name().unwrap();
            ext.map(|san| {
                san.value
                    .general_names
                    .iter()
                    .map(|name| match name {
                        GeneralName::DNSName(dns) => dns.to_string(),
                        GeneralName::IPAddress(ip) => match ip.len() {
                            4 => Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
                            _ => format!("{ip:?}"),
                        },
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .unwrap_or_default()
        })
    }

    fn subject(pem: &str) -> (String, Vec<String>) {
        with_cert(pem, |cert| {
            let cn = cert.subject().iter_common_name().next().unwrap();
            let orgs = cert.subject().iter_organization();
            let orgs = orgs.map(|o| o.as_str().unwrap().to_string()).collect();
            (cn.as_str().unwrap().to_string(), orgs)
        })
    }

    #[test]
    fn every_certificate_chains_to_the_ca() {
        let pki = Pki::generate(&spec()).unwrap();
        let (_, ca_pem) = parse_x509_pem(pki.ca.cert.as_bytes()).unwrap();
        let ca = ca_pem.parse_x509().unwrap();
        assert!(ca.is_ca());
        ca.verify_signature(None).expect("the CA is self-signed");
        for leaf in [
            &pki.apiserver,
            &pki.admin,
            &pki.controller_manager,
            &pki.apiserver_kubelet_client,
            &pki.node_serving,
            &pki.node_client,
        ] {
            with_cert(&leaf.cert, |cert| {
                assert!(!cert.is_ca());
                assert_eq!(cert.issuer(), ca.subject());
                cert.verify_signature(Some(ca.public_key()))
                    .expect("signed by the CA");
            });
        }
        let (_, front_pem) = parse_x509_pem(pki.front_proxy_ca.cert.as_bytes()).unwrap();
        let front = front_pem.parse_x509().unwrap();
        assert_ne!(front.subject(), ca.subject());
        with_cert(&pki.front_proxy_client.cert, |cert| {
            cert.verify_signature(Some(front.public_key()))
                .expect("signed by the front-proxy CA");
            assert!(cert.verify_signature(Some(ca.public_key())).is_err());
        });
    }

    #[test]
    fn apiserver_certificate_names_every_address() {
        let pki = Pki::generate(&spec()).unwrap();
        let names = sans(&pki.apiserver.cert);
        for expected in apiserver_sans(spec().service_ip) {
            assert!(names.contains(&expected), "{expected} missing in {names:?}");
        }
        assert!(names.contains(&"127.21.0.1".to_string()));
        assert!(sans(&pki.node_serving.cert).contains(&"127.0.0.1".to_string()));
    }

    #[test]
    fn client_certificates_carry_users_and_groups() {
        let pki = Pki::generate(&spec()).unwrap();
        assert_eq!(
            subject(&pki.admin.cert),
            (ADMIN_USER.into(), vec![MASTERS_GROUP.into()])
        );
        assert_eq!(
            subject(&pki.controller_manager.cert),
            (CONTROLLER_MANAGER_USER.into(), vec![])
        );
        assert_eq!(
            subject(&pki.apiserver_kubelet_client.cert),
            (
                APISERVER_KUBELET_CLIENT_USER.into(),
                vec![MASTERS_GROUP.into()]
            )
        );
        assert_eq!(
            subject(&pki.node_client.cert),
            ("system:node:localnode".into(), vec![NODES_GROUP.into()])
        );
    }

    #[test]
    fn keys_are_written_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ringmaster-pki-test-{}", std::process::id()));
        let files = Pki::generate(&spec()).unwrap().write(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.ca.key), 0o600);
        assert_eq!(mode(&files.admin.key), 0o600);
        assert_eq!(mode(&files.service_account_key), 0o600);
        assert_eq!(mode(&files.ca.cert), 0o644);
        let public = fs::read_to_string(&files.service_account_pub).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        fs::remove_dir_all(dir).unwrap();
    }
}
