//! Names and label values of generated objects: always valid Kubernetes
//! names whatever the input length, stable across runs, and distinct for
//! distinct sources (a hash of the full source identity is appended whenever
//! anything had to be cut).

/// Longest object name (a DNS subdomain).
pub const MAX_NAME: usize = 253;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 63;

/// `len` hex digits of the 64-bit FNV-1a hash of `input`. Names must stay
/// the same across Weft versions (a changed name means objects deleted and
/// recreated on upgrade), so this hash is fixed and written out here.
pub fn short_hash(input: &str, len: usize) -> String {
    hex(fnv1a(FNV_OFFSET, input.as_bytes()), len)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn hex(hash: u64, len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..len.min(16)).map(|i| HEX[((hash >> (60 - 4 * i)) & 15) as usize] as char).collect()
}

/// `readable-<hash of parts joined by "/">`, a valid object name: the same
/// as `object_name(readable, parts.join("/"), true)` without building the
/// joined string (generated routes are named this way, one per parent).
pub fn hashed_name(readable: &str, parts: &[&str]) -> String {
    let mut hash = FNV_OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash = fnv1a(hash, b"/");
        }
        hash = fnv1a(hash, part.as_bytes());
    }
    let suffix = hex(hash, 10);
    let simple = readable.len() + 1 + suffix.len() <= MAX_NAME
        && readable.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && readable.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && readable.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !readable.contains("..");
    if simple {
        let mut out = String::with_capacity(readable.len() + 11);
        out.push_str(readable);
        out.push('-');
        out.push_str(&suffix);
        return out;
    }
    let clean = trim_edges(&sanitize_subdomain(readable), &[]);
    let room = MAX_NAME - suffix.len() - 1;
    let prefix: String = clean.chars().take(room).collect();
    let prefix = trim_edges(&prefix, &['.', '-']);
    if prefix.is_empty() { suffix } else { format!("{prefix}-{suffix}") }
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
    fn the_hash_is_fnv1a_64() {
        // Reference values of FNV-1a 64: names depend on them staying fixed.
        assert_eq!(short_hash("", 16), "cbf29ce484222325");
        assert_eq!(short_hash("a", 16), "af63dc4c8601ec8c");
        assert_eq!(short_hash("foobar", 10), "85944171f7");
    }

    #[test]
    fn hashed_names_agree_with_object_name() {
        for readable in ["web", "Web_Route", &"r".repeat(260), "-x-"] {
            assert_eq!(
                hashed_name(readable, &["HTTPRoute", "ns", "web"]),
                object_name(readable, "HTTPRoute/ns/web", true)
            );
        }
    }

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
