//! The write queue: one pending write per object (the latest wins, so a
//! burst of changes to one object costs one write), drained at a bounded
//! rate (kube-rs has no client-side rate limit; client-go's default is
//! 5/s with bursts of 10), and only while this replica leads.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use weft_translate::ObjectKey;

use crate::FIELD_MANAGER;
use crate::kinds::Resource;
use crate::leader::Leadership;
use crate::metrics::Metrics;

/// What is written: the object itself, or its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Object,
    Status,
}

/// Identifies a pending write.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteKey {
    pub resource: Resource,
    pub key: ObjectKey,
    pub part: Part,
}

/// A write.
#[derive(Clone, Debug)]
pub enum Op {
    /// Server-side apply of a generated object, forced: Weft owns it.
    Apply { body: Value },
    /// Deletion of a stale generated object, only if it is still the
    /// object Weft saw.
    Delete { uid: String, resource_version: String },
    /// Server-side apply of a status Weft owns whole (GatewayClass,
    /// Gateway, Weft's kinds), with its own field manager.
    ApplyStatus { body: Value },
    /// A merge patch of a status shared with other controllers (route
    /// `status.parents`), with the resourceVersion it was computed from:
    /// a concurrent change makes it a 409 instead of a lost entry.
    MergeStatus { body: Value },
}

/// A queued write with what is needed to send it.
#[derive(Clone, Debug)]
pub struct Write {
    pub key: WriteKey,
    pub api_resource: ApiResource,
    pub op: Op,
}

/// How a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The object changed since the write was computed (409, or a failed
    /// precondition): the next pass recomputes from the newer object.
    Conflict,
    /// Gone already (a deletion that found nothing is done).
    NotFound,
    Failed(String),
    /// Dropped: this replica no longer leads.
    NotLeader,
}

/// Rate limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { per_second: 50.0, burst: 100.0 }
    }
}

#[derive(Debug, Default)]
struct Inner {
    pending: BTreeMap<WriteKey, Write>,
    order: VecDeque<WriteKey>,
}

/// The queue; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl Queue {
    /// Queues a write, replacing any pending one for the same object part.
    pub fn push(&self, write: Write) {
        let mut inner = self.inner.lock();
        if inner.pending.insert(write.key.clone(), write.clone()).is_none() {
            inner.order.push_back(write.key);
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Whether a write for this key is pending.
    pub fn contains(&self, key: &WriteKey) -> bool {
        self.inner.lock().pending.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every pending write (leadership lost).
    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.pending.clear();
        inner.order.clear();
    }

    fn pop(&self) -> Option<Write> {
        let mut inner = self.inner.lock();
        while let Some(key) = inner.order.pop_front() {
            if let Some(w) = inner.pending.remove(&key) {
                return Some(w);
            }
        }
        None
    }
}

/// A token bucket.
struct Bucket {
    limits: Limits,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    async fn take(&mut self) {
        loop {
            let now = Instant::now();
            self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.limits.per_second).min(self.limits.burst);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / self.limits.per_second;
            tokio::time::sleep(Duration::from_secs_f64(wait.max(0.001))).await;
        }
    }
}

/// Drains the queue forever; `report` learns each outcome.
pub async fn drain(
    client: kube::Client,
    queue: Queue,
    limits: Limits,
    leadership: watch::Receiver<Leadership>,
    metrics: Metrics,
    report: impl Fn(&WriteKey, &Outcome) + Send,
) {
    let mut bucket = Bucket { limits, tokens: limits.burst, at: Instant::now() };
    loop {
        metrics.queue_depth.set(queue.len() as i64);
        let Some(write) = queue.pop() else {
            queue.notify.notified().await;
            continue;
        };
        bucket.take().await;
        let outcome = if leadership.borrow().is_leader() {
            execute(&client, &write, &metrics).await
        } else {
            queue.clear();
            Outcome::NotLeader
        };
        if let Outcome::Failed(e) = &outcome {
            tracing::warn!(resource = %write.key.resource, object = %write.key.key, part = ?write.key.part, error = %e, "write failed; retried later");
        }
        report(&write.key, &outcome);
    }
}

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn execute(client: &kube::Client, write: &Write, metrics: &Metrics) -> Outcome {
    let key = &write.key;
    let api: Api<DynamicObject> = if key.resource.namespaced() {
        Api::namespaced_with(client.clone(), &key.key.namespace, &write.api_resource)
    } else {
        Api::all_with(client.clone(), &write.api_resource)
    };
    let name = key.key.name.as_str();
    let (result, family) = match &write.op {
        Op::Apply { body } => (api.patch(name, &params(), &Patch::Apply(body)).await.map(|_| ()), &metrics.applies),
        Op::Delete { uid, resource_version } => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: Some(resource_version.clone()),
                }),
                ..Default::default()
            };
            (api.delete(name, &dp).await.map(|_| ()), &metrics.deletes)
        }
        Op::ApplyStatus { body } => {
            let pp = PatchParams::apply(&format!("{FIELD_MANAGER}/status")).force();
            (api.patch_status(name, &pp, &Patch::Apply(body)).await.map(|_| ()), &metrics.status_writes)
        }
        Op::MergeStatus { body } => {
            let pp = PatchParams { field_manager: Some(format!("{FIELD_MANAGER}/status")), ..Default::default() };
            (api.patch_status(name, &pp, &Patch::Merge(body)).await.map(|_| ()), &metrics.status_writes)
        }
    };
    let (outcome, label) = match result {
        Ok(()) => (Outcome::Done, "ok"),
        Err(kube::Error::Api(s)) if s.code == 409 => (Outcome::Conflict, "conflict"),
        Err(kube::Error::Api(s)) if s.code == 404 => (Outcome::NotFound, "not_found"),
        Err(e) => (Outcome::Failed(e.to_string()), "error"),
    };
    family.get_or_create(&Metrics::write(key.resource, label)).inc();
    outcome
}
