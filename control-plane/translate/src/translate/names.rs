//! Names and label values of generated objects: always valid Kubernetes
//! names whatever the input length, stable across runs, and distinct for
//! distinct sources (a hash of the full source identity is appended whenever
//! anything had to be cut).

use sha2::{Digest, Sha256};

/// Longest object name (a DNS subdomain).
pub const MAX_NAME: usize = 253;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 63;

/// Hex of the first `len / 2` bytes of SHA-256 of `input`.
pub fn short_hash(input: &str, len: usize) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut out = String::with_capacity(len);
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
        if out.len() >= len {
            break;
        }
    }
    out.truncate(len);
    out
}

/// Keeps the characters a DNS subdomain allows, lowercased.
fn sanitize_subdomain(input: &str) -> String {
    input
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect()
}

/// Trims characters a name may not start or end with.
fn trim_edges(s: &str, extra: &[char]) -> String {
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric() || extra.contains(&c)).to_string()
}

/// An object name for `readable` that stays unique for `identity`:
/// `readable` when it is a valid name of at most `max` characters and
/// `always_hash` is false, else `readable` cut short plus `-` plus a hash of
/// `identity`.
pub fn object_name(readable: &str, identity: &str, always_hash: bool) -> String {
    let clean = trim_edges(&sanitize_subdomain(readable), &[]);
    let valid = !clean.is_empty() && clean == readable && clean.len() <= MAX_NAME && !clean.contains("..");
    if valid && !always_hash {
        return clean;
    }
    let hash = short_hash(identity, 10);
    let room = MAX_NAME - hash.len() - 1;
    let mut prefix: String = clean.chars().take(room).collect();
    prefix = trim_edges(&prefix, &['.', '-']);
    if prefix.is_empty() { hash } else { format!("{prefix}-{hash}") }
}

/// A label value for `value`: itself when valid, else a readable prefix plus a
/// hash (label values are limited to 63 characters of `[a-zA-Z0-9._-]`).
pub fn label_value(value: &str) -> String {
    let valid_chars = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let valid_edges = value.is_empty()
        || (value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if value.len() <= MAX_LABEL_VALUE && valid_chars && valid_edges {
        return value.to_string();
    }
    let hash = short_hash(value, 10);
    let cleaned: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .take(MAX_LABEL_VALUE - hash.len() - 1)
        .collect();
    let cleaned = trim_edges(&cleaned, &['.', '-', '_']);
    if cleaned.is_empty() { hash } else { format!("{cleaned}-{hash}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_pass_through() {
        assert_eq!(object_name("edge.shop", "x", false), "edge.shop");
        assert_eq!(label_value("reviews"), "reviews");
    }

    #[test]
    fn long_names_are_cut_and_hashed_and_stay_distinct() {
        let long = "a".repeat(300);
        let a = object_name(&format!("{long}.ns1"), "Gateway/ns1/a", false);
        let b = object_name(&format!("{long}.ns2"), "Gateway/ns2/a", false);
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME);
        assert_ne!(a, b);
        assert_eq!(a, object_name(&format!("{long}.ns1"), "Gateway/ns1/a", false), "stable");
        let l = label_value(&"x".repeat(100));
        assert!(l.len() <= MAX_LABEL_VALUE);
        assert!(l.starts_with("xxx"));
    }

    #[test]
    fn invalid_characters_are_replaced() {
        let n = object_name("Route_Name", "id", true);
        assert!(n.starts_with("route-name-"), "{n}");
        assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'));
        assert_eq!(label_value("-x-").len(), 2 + 10 - 1 + 1);
    }
}
