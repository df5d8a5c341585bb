//! A new replica gets its share of the traffic at once: the client's
//! balancer compares an endpoint that has not answered yet by the requests
//! in flight alone, so a new replica is not starved while the known ones
//! have lower latency than a default guess.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_e2e::load::shares;
use weft_e2e::mesh::{Mesh, PodSpec};

const REVIEWS_VIP: &str = "10.96.100.10";

const MANIFESTS: &str = "apiVersion: weft.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  mtls: {mode: Strict}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  clusterIP: 10.96.100.10\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080, appProtocol: http}]\n";

#[test]
fn a_new_replica_reaches_its_fair_share_within_five_seconds() -> anyhow::Result<()> {
    let mut mesh = Mesh::start("balance", &[("mesh.yaml", MANIFESTS)])?;
    let replica = |name: &str| PodSpec::new(name, "bookinfo").label("app", "reviews").port("http", 9080);
    mesh.add_pod(&replica("reviews-a"))?;
    mesh.add_pod(&replica("reviews-b"))?;
    let client = mesh.add_pod(&PodSpec::new("productpage-a", "bookinfo").label("app", "productpage"))?;
    let endpoints =
        |d: &serde_json::Value| d["endpoints"]["ep/bookinfo/reviews"]["endpoints"].as_array().map_or(0, Vec::len);
    mesh.wait_for_config(&client, "both replicas", Duration::from_secs(30), |d| endpoints(d) == 2)?;
    for pod in mesh.pods.clone() {
        mesh.wait_for_certificate(&pod, Duration::from_secs(30))?;
    }
    let vip = SocketAddr::new(REVIEWS_VIP.parse()?, 9080);
    let load = mesh.start_load(&client, vip, "reviews.bookinfo:9080", 200, 20.0)?;
    std::thread::sleep(Duration::from_secs(5));

    // The third replica: measured from the moment the client holds it as
    // an endpoint and its proxy can accept mTLS.
    let new = mesh.add_pod(&replica("reviews-c"))?;
    mesh.wait_for_certificate(&new, Duration::from_secs(30))?;
    mesh.wait_for_config(&client, "the third replica", Duration::from_secs(30), |d| endpoints(d) == 3)?;
    let ready_ms = Instant::now().duration_since(load.started).as_millis() as u64;
    let outcomes = load.finish()?;
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status != 200).collect();
    assert!(failed.is_empty(), "failed: {:?}", &failed[..failed.len().min(5)]);
    for (from, to) in [(0, 1000), (1000, 2000), (2000, 3000), (3000, 5000)] {
        let window: Vec<_> =
            outcomes.iter().filter(|o| o.at_ms >= ready_ms + from && o.at_ms < ready_ms + to).collect();
        let s = shares(window.iter().copied(), &["reviews-a", "reviews-b", "reviews-c"]);
        println!(
            "{:.0}-{:.0} s after the new replica was ready: {} requests, shares a {:.1} % b {:.1} % new {:.1} %",
            from as f64 / 1000.0,
            to as f64 / 1000.0,
            window.len(),
            s[0] * 100.0,
            s[1] * 100.0,
            s[2] * 100.0
        );
    }
    let within: Vec<_> = outcomes.iter().filter(|o| o.at_ms >= ready_ms && o.at_ms < ready_ms + 5000).collect();
    let s = shares(within.iter().copied(), &["reviews-a", "reviews-b", "reviews-c"]);
    let fair = 1.0 / 3.0;
    println!("first 5 s: the new replica got {:.1} % of its fair share", s[2] / fair * 100.0);
    assert!(s[2] >= 0.8 * fair, "the new replica got {:.1} % of the traffic in its first 5 s", s[2] * 100.0);
    Ok(())
}
