//! The control plane's state directory (local mode): the join-token key and
//! each mesh's CA. Kubernetes mode keeps the same material in Secrets.
//!
//! ```text
//! <state>/token.key                   32 random bytes, mode 0600
//! <state>/meshes/<mesh>/ca.crt        the mesh root (PEM); a user may put their own here
//! <state>/meshes/<mesh>/ca.key        its key (PEM), mode 0600
//! <state>/meshes/<mesh>/previous.crt  the root before the last rotation, trusted until
//! <state>/meshes/<mesh>/previous.until  (Unix seconds) so certificates it signed keep working
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

use crate::ca::{CaError, MeshCa, ROOT_LIFETIME};
use crate::token::TokenKey;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Ca { path: PathBuf, source: CaError },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// Writes a file atomically; `secret` files are readable by the owner only.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(if secret { 0o600 } else { 0o644 });
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io { path: path.to_owned(), source: e }),
    }
}

/// The token key, created on first use.
pub fn token_key(state: &Path) -> Result<TokenKey, StoreError> {
    let path = state.join("token.key");
    match std::fs::read(&path) {
        Ok(raw) if raw.len() >= 32 => Ok(TokenKey::from_bytes(&raw)),
        Ok(_) => Err(StoreError::Invalid { path, what: "shorter than 32 bytes".into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = TokenKey::generate();
            write_file(&path, key.as_bytes(), true)?;
            Ok(key)
        }
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

/// The token key of an existing state directory (for `weftctl token
/// create`, which must not invent a key the control plane does not have).
pub fn existing_token_key(state: &Path) -> Result<TokenKey, StoreError> {
    let path = state.join("token.key");
    let raw = std::fs::read(&path).map_err(io(&path))?;
    if raw.len() < 32 {
        return Err(StoreError::Invalid { path, what: "shorter than 32 bytes".into() });
    }
    Ok(TokenKey::from_bytes(&raw))
}

/// A mesh's CA and the extra roots still trusted, created on first use.
#[derive(Debug)]
pub struct StoredCa {
    pub ca: MeshCa,
    pub extra_roots_pem: Vec<String>,
    /// When the previous root stops being trusted, during an overlap.
    pub previous_until_unix: Option<i64>,
}

/// The latest modification time of a mesh's CA files: a change means the
/// CA was rotated (or replaced by the user) and must be loaded again.
pub fn mesh_ca_modified(state: &Path, mesh: &str) -> Option<std::time::SystemTime> {
    let dir = mesh_dir(state, mesh);
    ["ca.crt", "ca.key", "previous.crt", "previous.until"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).and_then(|m| m.modified()).ok())
        .max()
}

fn mesh_dir(state: &Path, mesh: &str) -> PathBuf {
    state.join("meshes").join(mesh)
}

pub fn mesh_ca(state: &Path, mesh: &str, trust_domain: &str, now: OffsetDateTime) -> Result<StoredCa, StoreError> {
    let dir = mesh_dir(state, mesh);
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (cert, key) = match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            let ca = MeshCa::generate(trust_domain, now, ROOT_LIFETIME)
                .map_err(|source| StoreError::Ca { path: cert_path.clone(), source })?;
            write_file(&key_path, ca.key_pem().as_bytes(), true)?;
            write_file(&cert_path, ca.root_pem().as_bytes(), false)?;
            (ca.root_pem().to_owned(), ca.key_pem().to_owned())
        }
        (Some(_), None) => return Err(StoreError::Invalid { path: key_path, what: "missing (ca.crt exists)".into() }),
        (None, Some(_)) => return Err(StoreError::Invalid { path: cert_path, what: "missing (ca.key exists)".into() }),
    };
    let previous = match read_optional(&dir.join("previous.crt"))? {
        Some(previous) => {
            let until_path = dir.join("previous.until");
            let until = read_optional(&until_path)?
                .ok_or_else(|| StoreError::Invalid { path: until_path, what: "missing or not a number".into() })?;
            Some((previous, until))
        }
        None => None,
    };
    let material = CaMaterial { cert_pem: cert, key_pem: key, previous };
    material.load(trust_domain, now).map_err(|e| match e {
        MaterialError::Ca(source) => StoreError::Ca { path: cert_path, source },
        MaterialError::PreviousUntil => {
            StoreError::Invalid { path: dir.join("previous.until"), what: "missing or not a number".into() }
        }
    })
}

/// A mesh CA as stored, wherever it is stored (files in local mode, a
/// Secret in Kubernetes): the PEM root and key, and the previous root with
/// the Unix time (as text) until which it stays trusted after a rotation.
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    pub previous: Option<(String, String)>,
}

impl std::fmt::Debug for CaMaterial {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("previous", &self.previous.as_ref().map(|(_, until)| until))
            .finish()
    }
}

/// Why stored CA material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("previous.until is not a number of Unix seconds")]
    PreviousUntil,
}

impl CaMaterial {
    /// Parses the material; the previous root is kept only while its
    /// overlap lasts.
    pub fn load(&self, trust_domain: &str, now: OffsetDateTime) -> Result<StoredCa, MaterialError> {
        let ca = MeshCa::from_pem(trust_domain, &self.cert_pem, &self.key_pem)?;
        let mut extra_roots_pem = Vec::new();
        let mut previous_until_unix = None;
        if let Some((previous, until)) = &self.previous {
            let until: i64 = until.trim().parse().map_err(|_| MaterialError::PreviousUntil)?;
            if until > now.unix_timestamp() {
                extra_roots_pem.push(previous.clone());
                previous_until_unix = Some(until);
            }
        }
        Ok(StoredCa { ca, extra_roots_pem, previous_until_unix })
    }

    /// New material with a freshly generated CA.
    pub fn generate(trust_domain: &str, now: OffsetDateTime) -> Result<Self, CaError> {
        let ca = MeshCa::generate(trust_domain, now, ROOT_LIFETIME)?;
        Ok(CaMaterial { cert_pem: ca.root_pem().to_owned(), key_pem: ca.key_pem().to_owned(), previous: None })
    }
}

/// Mesh CAs held in memory, as the Kubernetes source reads them from their
/// Secrets: every replica of the control plane signs with the CA the
/// cluster holds. Each change bumps the mesh's revision, which is how the
/// signer notices a rotation.
#[derive(Debug, Default)]
pub struct SharedCas {
    inner: std::sync::RwLock<std::collections::BTreeMap<String, (CaMaterial, u64)>>,
    next_revision: std::sync::atomic::AtomicU64,
}

impl SharedCas {
    /// Sets a mesh's material; returns whether it changed.
    pub fn set(&self, mesh: &str, material: CaMaterial) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.get(mesh).is_some_and(|(m, _)| *m == material) {
            return false;
        }
        let revision = self.next_revision.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        inner.insert(mesh.to_owned(), (material, revision));
        true
    }

    /// Forgets a mesh's material; returns whether it was held.
    pub fn remove(&self, mesh: &str) -> bool {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(mesh).is_some()
    }

    /// A mesh's material and its revision.
    pub fn get(&self, mesh: &str) -> Option<(CaMaterial, u64)> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(mesh).cloned()
    }

    /// Meshes held.
    pub fn meshes(&self) -> Vec<String> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }
}

/// Replaces a mesh's CA with a new one. The old root stays trusted for
/// `overlap` (at least the longest certificate lifetime), so certificates
/// it signed keep working while proxies renew with the new CA.
pub fn rotate_mesh_ca(
    state: &Path,
    mesh: &str,
    trust_domain: &str,
    now: OffsetDateTime,
    overlap: Duration,
) -> Result<StoredCa, StoreError> {
    let dir = mesh_dir(state, mesh);
    let current = mesh_ca(state, mesh, trust_domain, now)?;
    write_file(&dir.join("previous.crt"), current.ca.root_pem().as_bytes(), false)?;
    write_file(&dir.join("previous.until"), (now + overlap).unix_timestamp().to_string().as_bytes(), false)?;
    let ca = MeshCa::generate(trust_domain, now, ROOT_LIFETIME)
        .map_err(|source| StoreError::Ca { path: dir.join("ca.crt"), source })?;
    write_file(&dir.join("ca.key"), ca.key_pem().as_bytes(), true)?;
    write_file(&dir.join("ca.crt"), ca.root_pem().as_bytes(), false)?;
    mesh_ca(state, mesh, trust_domain, now)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_once_then_reloads_with_secret_files_private() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let key = token_key(dir.path()).unwrap();
        assert_eq!(token_key(dir.path()).unwrap().as_bytes(), key.as_bytes());
        assert_eq!(existing_token_key(dir.path()).unwrap().as_bytes(), key.as_bytes());
        let first = mesh_ca(dir.path(), "default", "default.weft.local", now).unwrap();
        let again = mesh_ca(dir.path(), "default", "default.weft.local", now).unwrap();
        assert_eq!(first.ca.root_pem(), again.ca.root_pem());
        for secret in ["token.key", "meshes/default/ca.key"] {
            let mode = std::fs::metadata(dir.path().join(secret)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{secret}");
        }
        assert!(existing_token_key(&dir.path().join("elsewhere")).is_err());
    }

    #[test]
    fn rotation_trusts_both_roots_until_the_overlap_ends() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let old = mesh_ca(dir.path(), "default", "default.weft.local", now).unwrap();
        let rotated = rotate_mesh_ca(dir.path(), "default", "default.weft.local", now, Duration::hours(1)).unwrap();
        assert_ne!(rotated.ca.root_pem(), old.ca.root_pem());
        assert_eq!(rotated.extra_roots_pem, vec![old.ca.root_pem().to_owned()]);
        let later = mesh_ca(dir.path(), "default", "default.weft.local", now + Duration::hours(2)).unwrap();
        assert!(later.extra_roots_pem.is_empty());
    }
}
