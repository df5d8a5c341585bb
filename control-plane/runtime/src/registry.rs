//! The workloads a local-mode control plane last knew, kept in its state
//! directory so that a restart does not look like every workload leaving.
//!
//! In local mode a Service's endpoints are the proxies connected to the
//! control plane. A control plane that has just restarted knows none of
//! them: the first proxy to reconnect would be sent empty endpoint sets for
//! every Service whose proxies had not reconnected yet, and its requests
//! would fail until they had. So the control loop writes the connected
//! workloads here whenever they change, and a restarted control plane
//! starts from this list: each remembered workload stays an endpoint until
//! it reconnects (its live session then stands for it) or until the grace
//! period ends (a workload that died while the control plane was down is
//! then dropped, as it would have been on disconnect).
//!
//! The file holds length-delimited `weft.config.v1.Workload` messages (what
//! proxies announce: names, labels, addresses, ports; no secrets).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;
use weft_api as api;

/// Where a control plane keeps its workload list.
#[derive(Clone, Debug)]
pub struct WorkloadRegistry {
    path: PathBuf,
}

/// Why the remembered workloads could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not a workload list ({source}); starting without remembered workloads")]
    Decode { path: String, source: prost::DecodeError },
}

impl WorkloadRegistry {
    /// The registry file in `state_dir`.
    pub fn in_state_dir(state_dir: &Path) -> Self {
        WorkloadRegistry { path: state_dir.join("workloads.pb") }
    }

    /// The workloads written last, by `namespace/name`; none when there is
    /// no file yet.
    pub fn load(&self) -> Result<BTreeMap<String, api::Workload>, RegistryError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => return Err(RegistryError::Read { path: self.path.display().to_string(), source }),
        };
        decode(&bytes).map_err(|source| RegistryError::Decode { path: self.path.display().to_string(), source })
    }

    /// Replaces the list (written to a temporary file, then renamed, so a
    /// crash leaves the old list or the new one).
    pub fn store<'a>(&self, workloads: impl IntoIterator<Item = &'a api::Workload>) -> io::Result<()> {
        let mut bytes = Vec::new();
        for w in workloads {
            w.encode_length_delimited(&mut bytes).map_err(io::Error::other)?;
        }
        let tmp = self.path.with_extension("pb.tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &self.path)
    }
}

fn decode(mut bytes: &[u8]) -> Result<BTreeMap<String, api::Workload>, prost::DecodeError> {
    let mut out = BTreeMap::new();
    while !bytes.is_empty() {
        let w = api::Workload::decode_length_delimited(&mut bytes)?;
        out.insert(format!("{}/{}", w.namespace, w.name), w);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str, ip: &str) -> api::Workload {
        api::Workload {
            name: name.into(),
            namespace: "bookinfo".into(),
            service_account: "reviews".into(),
            labels: [("app".to_string(), "reviews".to_string())].into(),
            ips: vec![ip.into()],
            ports: vec![api::WorkloadPort { name: "http".into(), port: 9080 }],
            ..Default::default()
        }
    }

    #[test]
    fn what_is_stored_is_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let registry = WorkloadRegistry::in_state_dir(dir.path());
        assert!(registry.load().unwrap().is_empty(), "no file yet");
        let (a, b) = (workload("reviews-v1-a", "10.0.0.1"), workload("reviews-v2-a", "10.0.0.2"));
        registry.store([&a, &b]).unwrap();
        let loaded = registry.load().unwrap();
        assert_eq!(loaded.keys().collect::<Vec<_>>(), ["bookinfo/reviews-v1-a", "bookinfo/reviews-v2-a"]);
        assert_eq!(loaded["bookinfo/reviews-v2-a"], b);
        registry.store([&a]).unwrap();
        assert_eq!(registry.load().unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let registry = WorkloadRegistry::in_state_dir(dir.path());
        std::fs::write(dir.path().join("workloads.pb"), [0x05, 0xff, 0xff]).unwrap();
        assert!(matches!(registry.load(), Err(RegistryError::Decode { .. })));
    }
}
