//! Status conditions: the Gateway API vocabulary, and a builder that keeps
//! `lastTransitionTime` stable while a condition's status does not change.

use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const CONFLICTED: &str = "Conflicted";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";
    pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";
}

/// Condition reasons, as the Gateway API defines them (plus the few Weft
/// needs where the spec has none, documented where used).
pub mod reasons {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";
    pub const INVALID: &str = "Invalid";
    pub const PENDING: &str = "Pending";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";
    pub const ADDRESS_NOT_USABLE: &str = "AddressNotUsable";
    pub const ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const NOT_ALLOWED: &str = "NotAllowed";
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const PARENT_NOT_ACCEPTED: &str = "ParentNotAccepted";
    pub const PARENT_NOT_PROGRAMMED: &str = "ParentNotProgrammed";
}

/// Builds a list of conditions for one object (or listener, or route
/// parent). A condition whose status equals the previous one keeps the
/// previous `lastTransitionTime`; otherwise it takes `now`. So a pure
/// translation of an unchanged world gives byte-identical status.
#[derive(Debug)]
pub struct Conditions<'a> {
    previous: &'a [Condition],
    now: &'a Time,
    generation: Option<i64>,
    out: Vec<Condition>,
}

impl<'a> Conditions<'a> {
    /// Starts an empty list; `previous` is what the object's status held.
    pub fn new(previous: &'a [Condition], now: &'a Time, generation: Option<i64>) -> Self {
        Self { previous, now, generation, out: Vec::new() }
    }

    /// Sets a condition (replacing one of the same type).
    pub fn set(&mut self, type_: &str, status: bool, reason: &str, message: impl Into<String>) -> &mut Self {
        let status = if status { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.now.clone());
        let condition = Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time,
        };
        match self.out.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => *existing = condition,
            None => self.out.push(condition),
        }
        self
    }

    /// The conditions, in the order first set.
    pub fn build(self) -> Vec<Condition> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_k8s_api::k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let t0 = at(100);
        let t1 = at(200);
        let mut first = Conditions::new(&[], &t0, Some(1));
        first.set(types::ACCEPTED, true, reasons::ACCEPTED, "ok");
        let first = first.build();
        let mut second = Conditions::new(&first, &t1, Some(2));
        second.set(types::ACCEPTED, true, reasons::ACCEPTED, "ok").set(types::PROGRAMMED, false, reasons::PENDING, "");
        let second = second.build();
        assert_eq!(second[0].last_transition_time, t0);
        assert_eq!(second[0].observed_generation, Some(2));
        assert_eq!(second[1].last_transition_time, t1);
        let t2 = at(300);
        let mut third = Conditions::new(&second, &t2, Some(2));
        third.set(types::ACCEPTED, false, reasons::INVALID, "no");
        assert_eq!(third.build()[0].last_transition_time, at(300));
    }
}
