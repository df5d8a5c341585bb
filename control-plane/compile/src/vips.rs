//! Virtual IPs for Services that have no cluster IP (local mode): the
//! sidecar picks a Service by the destination address a client connected
//! to, so every Service needs one. Allocation is deterministic: a hash of
//! `namespace/name` picks a slot in 10.96.0.0/12, probing past collisions in
//! name order, so a Service keeps its address while others come and go
//! (unless two hash to the same slot).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use weft_translate::ObjectKey;

const BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SLOTS: u32 = 1 << 20;

fn slot(key: &ObjectKey) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in key.namespace.bytes().chain(std::iter::once(b'/')).chain(key.name.bytes()) {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // Skip .0 and .1 of the range (network and gateway-style addresses).
    2 + hash % (SLOTS - 2)
}

/// Assigns an address to each Service in `needing` (in name order), avoiding
/// addresses in `taken` (real cluster IPs).
pub(crate) fn allocate(needing: &BTreeSet<ObjectKey>, taken: &BTreeSet<Ipv4Addr>) -> BTreeMap<ObjectKey, Ipv4Addr> {
    let mut used: BTreeSet<Ipv4Addr> = taken.clone();
    let mut out = BTreeMap::new();
    for key in needing {
        let mut s = slot(key);
        loop {
            let ip = Ipv4Addr::from(BASE + s);
            if used.insert(ip) {
                out.insert(key.clone(), ip);
                break;
            }
            s = 2 + (s - 1) % (SLOTS - 2);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_stable_and_unique() {
        let keys: BTreeSet<ObjectKey> = (0..2000).map(|i| ObjectKey::new("ns", format!("svc{i}"))).collect();
        let a = allocate(&keys, &BTreeSet::new());
        let distinct: BTreeSet<_> = a.values().collect();
        assert_eq!(distinct.len(), keys.len());
        // Removing one Service leaves the others where they were, unless
        // they had probed past it (rare).
        let mut fewer = keys.clone();
        fewer.remove(&ObjectKey::new("ns", "svc7"));
        let b = allocate(&fewer, &BTreeSet::new());
        let moved = fewer.iter().filter(|k| a[*k] != b[*k]).count();
        assert!(moved <= 2, "{moved} services moved");
        assert!(a.values().all(|ip| ip.octets()[0] == 10 && (96..112).contains(&ip.octets()[1])));
    }
}
