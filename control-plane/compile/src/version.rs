//! Resource versions: a hash of the encoded content, so equal content has
//! equal versions across restarts and reconnects.

use std::sync::Arc;

use prost::Message;
use weft_api::Resource;

use crate::{CompiledResource, SharedResource};

/// Wraps `kind` into a named resource whose version hashes its content.
pub fn versioned(name: String, kind: weft_api::resource::Kind) -> SharedResource {
    let mut resource = Resource { name, version: String::new(), kind: Some(kind) };
    let bytes = resource.encode_to_vec();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    resource.version = format!("{hash:016x}");
    let encoded = resource.encode_to_vec().into();
    Arc::new(CompiledResource { resource, encoded })
}
