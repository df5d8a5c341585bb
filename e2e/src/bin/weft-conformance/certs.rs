//! The Secrets and ConfigMaps the upstream suite creates in code before
//! the gateway tests (certificates for HTTPS listeners, TLS backends, TLS
//! passthrough and terminate), made here with one test CA: every leaf is
//! signed by it and each Secret's `tls.crt` carries the leaf and the CA, so
//! a client told to trust "`tls.crt` of this Secret" trusts the CA and
//! verifies the leaf's name, as upstream's self-signed certificates are
//! trusted. The PEM files are also written to a directory: the clients read
//! their trust from there and the TLS echo backends their certificates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};

/// Where each object's PEM files are, and the manifest holding them all.
pub struct Certs {
    pub manifest: String,
    /// `namespace/name` of a Secret → (chain file, key file).
    pub secrets: BTreeMap<String, (PathBuf, PathBuf)>,
    /// `namespace/name` of a CA ConfigMap → its `ca.crt` file.
    pub config_maps: BTreeMap<String, PathBuf>,
}

const INFRA: &str = "gateway-conformance-infra";

/// (namespace, Secret name, DNS names of the leaf).
const SECRETS: &[(&str, &str, &[&str])] = &[
    ("gateway-conformance-web-backend", "certificate", &["web-backend", "*.example.com"]),
    (
        INFRA,
        "tls-validity-checks-certificate",
        &["example.org", "second-example.org", "unknown-example.org", "https-listener.org", "*.wildcard.org"],
    ),
    (INFRA, "tls-checks-certificate", &["abc.example.com", "other.example.com"]),
    (INFRA, "tls-checks-client-certificate", &["client.example.com"]),
    (INFRA, "tls-passthrough-checks-certificate", &["abc.example.com"]),
    ("gateway-conformance-app-backend", "tls-passthrough-checks-certificate", &["abc.example.com"]),
    (INFRA, "tls-terminate-checks-certificate", &["tls.example.com"]),
];

/// CA ConfigMaps (all hold the test CA).
const CONFIG_MAPS: &[(&str, &str)] = &[
    ("gateway-conformance-web-backend", "web-backend-cm"),
    (INFRA, "tls-checks-ca-certificate"),
    (INFRA, "tls-validity-checks-ca-certificate"),
    (INFRA, "tls-validity-checks-per-port-ca-certificate"),
];

pub fn make(dir: &Path) -> anyhow::Result<Certs> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "weft conformance CA");
    let ca_pem = ca_params.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut manifest = String::new();
    let mut secrets = BTreeMap::new();
    for (ns, name, names) in SECRETS {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let chain = format!("{}{ca_pem}", params.signed_by(&key, &issuer)?.pem());
        let key_pem = key.serialize_pem();
        let (crt_file, key_file) = (dir.join(format!("{ns}_{name}.crt")), dir.join(format!("{ns}_{name}.key")));
        std::fs::write(&crt_file, &chain)?;
        std::fs::write(&key_file, &key_pem)?;
        manifest += &format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
            b64(&chain),
            b64(&key_pem)
        );
        secrets.insert(format!("{ns}/{name}"), (crt_file, key_file));
    }
    let mut config_maps = BTreeMap::new();
    for (ns, name) in CONFIG_MAPS {
        let file = dir.join(format!("{ns}_{name}.ca.crt"));
        std::fs::write(&file, &ca_pem)?;
        let indented: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
        manifest += &format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata:\n  ca.crt: |\n{indented}"
        );
        config_maps.insert(format!("{ns}/{name}"), file);
    }
    Ok(Certs { manifest, secrets, config_maps })
}
