//! Endpoint hold-down: for a short window after a config stream opens, the
//! proxy does not let the control plane empty (or remove) an endpoint set
//! that it holds non-empty.
//!
//! A control plane that has just (re)started may not know every workload
//! yet (in local mode, until their proxies reconnect; after a bug, ever). An
//! empty endpoint set it sends then would turn a working Service into 503s
//! for every request, while the endpoints the proxy already holds are most
//! likely still right. So within the window such a change is held: the old
//! set keeps serving, the proxy logs what it held, and when the window ends
//! the latest held value is applied unless the control plane has sent a
//! non-empty set for it meanwhile. Outside the window every change applies
//! at once, so a Service scaled to zero empties within the window at worst.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weft_api::config as api;

use crate::model::Resource;
use crate::state::Config;

/// How long after a stream opens emptying changes are held.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// The held changes of one stream.
#[derive(Debug)]
pub struct HoldDown {
    until: Instant,
    /// Endpoint set name → the held value (`None`: a removal).
    held: BTreeMap<String, Option<api::Resource>>,
}

impl HoldDown {
    /// A window of `window` from `opened`.
    pub fn new(opened: Instant, window: Duration) -> Self {
        HoldDown { until: opened + window, held: BTreeMap::new() }
    }

    /// The update to apply now: `update` without the changes that would
    /// empty a non-empty endpoint set of `current` while the window lasts.
    /// A later value of a held set replaces the held one (and goes through
    /// when it is not empty).
    pub fn filter(&mut self, current: &Config, mut update: api::ConfigUpdate, now: Instant) -> api::ConfigUpdate {
        let open = now < self.until;
        let holds = |name: &str| open && name.starts_with("ep/") && non_empty(current, name);
        let mut removed = Vec::with_capacity(update.removed.len());
        for name in std::mem::take(&mut update.removed) {
            if holds(&name) {
                self.hold(&name, None, current, now);
            } else {
                self.held.remove(&name);
                removed.push(name);
            }
        }
        update.removed = removed;
        let mut resources = Vec::with_capacity(update.resources.len());
        for r in std::mem::take(&mut update.resources) {
            if holds(&r.name) && is_empty_endpoint_set(&r) {
                let name = r.name.clone();
                self.hold(&name, Some(r), current, now);
            } else {
                self.held.remove(&r.name);
                resources.push(r);
            }
        }
        update.resources = resources;
        update
    }

    fn hold(&mut self, name: &str, value: Option<api::Resource>, current: &Config, now: Instant) {
        if !self.held.contains_key(name) {
            tracing::warn!(
                resource = name,
                kept = current.endpoints.get(name).map_or(0, |e| e.endpoints.len()),
                change = if value.is_some() { "empty set" } else { "removal" },
                apply_in_ms = self.until.saturating_duration_since(now).as_millis() as u64,
                "the control plane, just connected, would empty this endpoint set; keeping the endpoints held until the hold-down ends"
            );
        }
        self.held.insert(name.to_owned(), value);
    }

    /// When the held changes are due, if any are held.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.held.is_empty()).then_some(self.until)
    }

    /// The held changes as one update (with `nonce`, the last one applied),
    /// emptying the hold.
    pub fn release(&mut self, nonce: u64) -> Option<api::ConfigUpdate> {
        if self.held.is_empty() {
            return None;
        }
        let mut update = api::ConfigUpdate { nonce, ..Default::default() };
        for (name, value) in std::mem::take(&mut self.held) {
            match value {
                Some(r) => update.resources.push(r),
                None => update.removed.push(name),
            }
        }
        tracing::info!(
            emptied = update.resources.len(),
            removed = update.removed.len(),
            "endpoint hold-down over; applying the held changes the control plane still stands by"
        );
        Some(update)
    }
}

fn non_empty(current: &Config, name: &str) -> bool {
    current.endpoints.get(name).is_some_and(|e| !e.endpoints.is_empty())
}

fn is_empty_endpoint_set(r: &api::Resource) -> bool {
    // An undecodable resource is not held: applying it rejects it visibly
    // (NACK) and keeps the old set anyway.
    matches!(Resource::from_api(r), Ok(Resource::Endpoints(e)) if e.endpoints.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, ips: &[&str], version: &str) -> api::Resource {
        api::Resource {
            name: format!("ep/bookinfo/{name}"),
            version: version.into(),
            kind: Some(api::resource::Kind::Endpoints(api::Endpoints {
                namespace: "bookinfo".into(),
                name: name.into(),
                endpoints: ips
                    .iter()
                    .map(|ip| api::Endpoint { ip: (*ip).into(), ports: [(9080, 9080)].into(), ..Default::default() })
                    .collect(),
            })),
        }
    }

    fn update(nonce: u64, resources: Vec<api::Resource>, removed: &[&str]) -> api::ConfigUpdate {
        api::ConfigUpdate { nonce, resources, removed: removed.iter().map(|s| s.to_string()).collect() }
    }

    fn held_config() -> Config {
        let (config, rejected) = Config::default().apply(&update(
            1,
            vec![ep("v1", &["10.0.0.1"], "a"), ep("v2", &["10.0.0.2"], "a"), ep("v3", &[], "a")],
            &[],
        ));
        assert!(rejected.is_empty());
        config
    }

    #[test]
    fn emptying_a_held_set_waits_for_the_window_and_then_applies() {
        let t0 = Instant::now();
        let current = held_config();
        let mut hold = HoldDown::new(t0, Duration::from_secs(10));
        let incoming =
            update(2, vec![ep("v1", &[], "b"), ep("v3", &[], "b"), ep("v4", &["10.0.0.4"], "b")], &["ep/bookinfo/v2"]);
        let now = hold.filter(&current, incoming, t0 + Duration::from_secs(1));
        // v1 emptied and v2 removed are held; v3 was already empty and v4
        // is not empty: both go through.
        let names: Vec<&str> = now.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ep/bookinfo/v3", "ep/bookinfo/v4"]);
        assert!(now.removed.is_empty());
        assert_eq!(hold.deadline(), Some(t0 + Duration::from_secs(10)));
        let (after, _) = current.apply(&now);
        assert_eq!(after.endpoints["ep/bookinfo/v1"].endpoints.len(), 1);
        assert_eq!(after.versions["ep/bookinfo/v1"], "a", "the held set keeps its version");

        let released = hold.release(2).expect("held changes");
        assert_eq!(released.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["ep/bookinfo/v1"]);
        assert_eq!(released.removed, ["ep/bookinfo/v2"]);
        assert_eq!(hold.deadline(), None);
        let (last, _) = after.apply(&released);
        assert!(last.endpoints["ep/bookinfo/v1"].endpoints.is_empty());
        assert!(!last.endpoints.contains_key("ep/bookinfo/v2"));
    }

    #[test]
    fn a_later_non_empty_value_cancels_the_hold() {
        let t0 = Instant::now();
        let current = held_config();
        let mut hold = HoldDown::new(t0, Duration::from_secs(10));
        let first = hold.filter(&current, update(2, vec![ep("v1", &[], "b")], &[]), t0);
        assert!(first.resources.is_empty());
        let second = hold.filter(&current, update(3, vec![ep("v1", &["10.0.0.9"], "c")], &[]), t0);
        assert_eq!(second.resources.len(), 1);
        assert_eq!(hold.deadline(), None, "nothing left to apply");
        assert!(hold.release(3).is_none());
    }

    #[test]
    fn after_the_window_everything_applies_at_once() {
        let t0 = Instant::now();
        let current = held_config();
        let mut hold = HoldDown::new(t0, Duration::from_secs(10));
        let out = hold.filter(
            &current,
            update(2, vec![ep("v1", &[], "b")], &["ep/bookinfo/v2"]),
            t0 + Duration::from_secs(11),
        );
        assert_eq!(out.resources.len(), 1);
        assert_eq!(out.removed, ["ep/bookinfo/v2"]);
        assert_eq!(hold.deadline(), None);
    }

    #[test]
    fn other_resources_are_never_held() {
        let t0 = Instant::now();
        let current = held_config();
        let mut hold = HoldDown::new(t0, Duration::from_secs(10));
        let out = hold.filter(&current, update(2, vec![], &["svc/bookinfo/reviews", "mesh"]), t0);
        assert_eq!(out.removed, ["svc/bookinfo/reviews", "mesh"]);
    }
}
