//! Translation benchmark: 1k, 10k and 50k HTTPRoutes over 5k Services and
//! 50 Gateways. Not a timed test: it prints figures for docs/benchmarks.md.
//!
//! Run: `cargo bench --workspace --bench translate`
//!
//! Half of the routes attach to Gateways (hostnames, two rules, weighted
//! backends), half to Services (GAMMA producer and consumer routes). Each
//! size is translated several times; the median is reported with the
//! min–max, and a run is repeated when other processes used more than 10 %
//! of a core meanwhile (the quiet-machine guard of the benchmark protocol).

use std::time::{Duration, Instant};

// The allocator the control plane ships with (weft-cp sets the same).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed pages for reuse instead of returning them to the OS after
/// 10 ms: every translation allocates and frees about the same amount, and
/// refaulting those pages cost a fifth of the time (weft-cp does the same).
#[allow(unsafe_code)]
fn keep_freed_pages() {
    // SAFETY: sets a global mimalloc option before any other thread runs;
    // mi_option_set only stores the value.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // SAFETY: reads a global option.
    assert_eq!(
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
        -1,
        "mimalloc option numbering changed"
    );
}

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (the sys crate
/// does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

use serde_json::{Value, json};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weft_k8s_api::k8s_openapi::jiff::Timestamp;
use weft_translate::Snapshot;
use weft_translate::load::Loader;

const SERVICES: usize = 5_000;
const NAMESPACES: usize = 50;
const GATEWAYS: usize = 50;

fn snapshot(routes: usize) -> Snapshot {
    let mut docs: Vec<Value> = vec![json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "weft"}, "spec": {"controllerName": "weft.io/gateway-controller"}})];
    for n in 0..NAMESPACES {
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns{n}")}}));
    }
    for s in 0..SERVICES {
        docs.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc{s}"), "namespace": format!("ns{}", s % NAMESPACES)},
            "spec": {"ports": [{"name": "http", "port": 8080, "appProtocol": "http"}, {"name": "grpc", "port": 9090}]}}));
    }
    for g in 0..GATEWAYS {
        let ns = format!("ns{}", g % NAMESPACES);
        docs.push(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": format!("gw{g}"), "namespace": ns},
            "spec": {"gatewayClassName": "weft", "listeners": [
                {"name": "web", "port": 80, "protocol": "HTTP", "hostname": format!("*.gw{g}.example.com"),
                 "allowedRoutes": {"namespaces": {"from": "All"}}},
                {"name": "api", "port": 8080, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}]}}));
        docs.push(json!({"apiVersion": "weft.io/v1alpha1", "kind": "MeshGatewayInstance",
            "metadata": {"name": format!("gw{g}"), "namespace": ns},
            "spec": {"meshGateway": format!("gw{g}.{ns}"), "mesh": "default"},
            "status": {"readyReplicas": 1, "addresses": [{"type": "IPAddress", "value": format!("10.1.0.{g}")}]}}));
    }
    for r in 0..routes {
        let ns = r % NAMESPACES;
        let svc = |i: usize| format!("svc{}", (i * NAMESPACES + ns) % SERVICES);
        let parent = if r % 2 == 0 {
            let g = r % GATEWAYS;
            json!({"name": format!("gw{g}"), "namespace": format!("ns{}", g % NAMESPACES)})
        } else if r % 4 == 1 {
            json!({"group": "", "kind": "Service", "name": svc(r), "port": 8080})
        } else {
            json!({"group": "", "kind": "Service", "name": format!("svc{}", (r + 1) % SERVICES),
                   "namespace": format!("ns{}", (r + 1) % NAMESPACES), "port": 8080})
        };
        docs.push(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": format!("route{r}"), "namespace": format!("ns{ns}")},
            "spec": {"parentRefs": [parent], "hostnames": [format!("r{r}.gw{}.example.com", r % GATEWAYS)],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": format!("/api/{r}")},
                                  "headers": [{"name": "x-canary", "value": "true"}]}],
                     "backendRefs": [{"name": svc(r), "port": 8080, "weight": 90}, {"name": svc(r + 1), "port": 8080, "weight": 10}]},
                    {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-route", "value": format!("{r}")}]}}],
                     "backendRefs": [{"name": svc(r), "port": 8080}]}]}}));
    }
    let mut loader = Loader::default();
    for (i, d) in docs.into_iter().enumerate() {
        loader.add_document("bench", i + 1, d);
    }
    let (snapshot, report) = loader.finish();
    assert!(report.errors.is_empty(), "{:?}", &report.errors[..report.errors.len().min(3)]);
    snapshot
}

/// CPU time (user + system) used by every process on the machine, and by
/// this one, in clock ticks.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let total: u64 = stat
        .lines()
        .next()
        .map(|l| l.split_whitespace().skip(1).take(3).filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = me.rsplit(") ").next().unwrap_or("").split_whitespace().collect();
    let own = fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (total, own)
}

/// Times `rounds` translations; returns the durations and the share of a
/// core other processes used meanwhile.
fn measure(snapshot: &Snapshot, rounds: usize) -> (Vec<Duration>, f64) {
    let now = Time(Timestamp::from_second(1_800_000_000).unwrap());
    let (t0, o0) = cpu_ticks();
    let wall = Instant::now();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let out = weft_translate::translate(snapshot, &now);
        times.push(start.elapsed());
        std::hint::black_box(out);
    }
    let (t1, o1) = cpu_ticks();
    let ticks_per_sec = 100.0;
    let foreign = ((t1 - t0).saturating_sub(o1 - o0)) as f64 / ticks_per_sec / wall.elapsed().as_secs_f64();
    (times, foreign)
}

fn main() {
    keep_freed_pages();
    let rss_kb = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.to_string()))
            .unwrap_or_default()
    };
    println!("translate benchmark: {SERVICES} Services, {GATEWAYS} Gateways, {NAMESPACES} namespaces");
    println!("| HTTPRoutes | median | min | max | per route | generated routes | foreign CPU |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut previous: Option<(usize, f64)> = None;
    // WEFT_BENCH_SIZES=10000 limits the run (for profiling).
    let sizes: Vec<usize> = std::env::var("WEFT_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 50_000]);
    for routes in sizes {
        let snap = snapshot(routes);
        let rounds = if routes >= 50_000 { 5 } else { 9 };
        // Warm up once, then measure; retry while the machine is busy.
        let now = Time(Timestamp::from_second(1).unwrap());
        let generated = weft_translate::translate(&snap, &now).mesh_http_routes.len();
        let mut attempt = 0;
        let (mut times, foreign) = loop {
            let (times, foreign) = measure(&snap, rounds);
            attempt += 1;
            if foreign < 0.10 || attempt == 3 {
                break (times, foreign);
            }
            eprintln!("machine busy ({:.0} % of a core used by others); measuring {routes} again", foreign * 100.0);
        };
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = ms(times[times.len() / 2]);
        println!(
            "| {routes} | {median:.1} ms | {:.1} ms | {:.1} ms | {:.1} µs | {generated} | {:.1} % |",
            ms(times[0]),
            ms(times[times.len() - 1]),
            median * 1e3 / routes as f64,
            foreign * 100.0
        );
        if let Some((prev_routes, prev_ms)) = previous {
            eprintln!(
                "  growth {prev_routes} → {routes}: ×{:.2} time for ×{:.0} routes",
                median / prev_ms,
                routes as f64 / prev_routes as f64
            );
        }
        previous = Some((routes, median));
    }
    println!("{}", rss_kb());
}
