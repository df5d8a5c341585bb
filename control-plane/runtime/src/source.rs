//! Local mode's source: a directory of YAML, loaded at start and reloaded
//! (debounced) whenever something in it changes.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use weft_translate::load;

use crate::control::{ControlHandle, Input};

/// How long the directory must stay quiet before it is reloaded: editors
/// write files in several steps.
const QUIET: Duration = Duration::from_millis(100);
/// Reload anyway after this long, even while changes keep coming.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Loads `dir` into the control loop now and after every change. Runs until
/// the control loop stops.
pub async fn watch_directory(dir: PathBuf, control: ControlHandle) -> anyhow::Result<()> {
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !matches!(e.kind, notify::EventKind::Access(_))
        {
            let _ = events_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::Recursive)?;
    // Unchanged files are not parsed again.
    let mut cache = load::ManifestCache::default();
    loop {
        let d = dir.clone();
        let started = std::time::Instant::now();
        let (snapshot, report);
        (cache, snapshot, report) = tokio::task::spawn_blocking(move || {
            let (snapshot, report) = cache.load(&[d]);
            (cache, snapshot, report)
        })
        .await?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        tracing::info!(dir = %dir.display(), objects = report.loaded, errors = errors.len(), elapsed_ms, "loaded");
        if control.send(Input::TlsMaterials(report.tls_materials.clone())).await.is_err() {
            return Ok(());
        }
        if control.send(Input::Snapshot { snapshot: Box::new(snapshot), errors }).await.is_err() {
            return Ok(());
        }
        // Wait for a change, then for the directory to settle.
        if events_rx.recv().await.is_none() {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        loop {
            let left = MAX_DELAY.saturating_sub(started.elapsed());
            match tokio::time::timeout(QUIET.min(left), events_rx.recv()).await {
                Ok(Some(())) if !left.is_zero() => continue,
                Ok(None) => return Ok(()),
                _ => break,
            }
        }
    }
}
