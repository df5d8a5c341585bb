//! Endpoint choice: power of two choices over peak-EWMA load, with passive
//! outlier ejection. Statistics live per endpoint address and survive
//! config updates (a weight change does not reset what the proxy learned
//! about latency or failures).
//!
//! A new endpoint has no latency to compare yet, and its first answers are
//! not typical (cold caches, first connections): during a warm-up after
//! its first success it is taken to be as fast as the endpoint it is
//! compared with, so only the requests in flight decide and a new replica
//! gets its share at once. (Assuming a fixed default latency, or trusting
//! its first samples, starves it: under peak-EWMA one slow first answer
//! keeps it out for as long as the peak takes to decay, over 10 s.)

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Latency assumed for an endpoint before its first response.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast a latency peak is forgotten.
const DECAY: Duration = Duration::from_secs(10);
/// Consecutive failures (5xx or connection errors) that eject an endpoint.
const EJECT_AFTER: u32 = 5;
/// First ejection; each further one doubles, up to `MAX_EJECTION`.
const BASE_EJECTION: Duration = Duration::from_secs(5);
const MAX_EJECTION: Duration = Duration::from_secs(300);
/// An endpoint that has never answered is not ejected during its first
/// seconds: a new replica may be reachable a moment before it can accept
/// connections (its proxy still getting its certificate); requests it
/// cannot take go to another endpoint meanwhile, and ejecting it then would
/// keep it out of the traffic long after it is ready.
const NEW_ENDPOINT_GRACE: Duration = Duration::from_secs(5);
/// Loads within this factor of each other count as equal, and the random
/// first candidate wins: among equally fast endpoints, noise in the
/// latency estimate must not send all the traffic to one of them.
const EQUIVALENT_LOAD: f64 = 1.25;
/// How long after its first success an endpoint's latency is not compared.
const WARMUP: Duration = Duration::from_secs(5);

/// What the balancer knows of one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    in_flight: AtomicU32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Peak-EWMA latency estimate, in nanoseconds.
    cost_ns: f64,
    updated: Instant,
    consecutive_failures: u32,
    /// Ejections since the endpoint last answered well.
    ejections: u32,
    /// Whether any attempt has succeeded (the cost means something).
    observed: bool,
    /// When the first attempt succeeded.
    first_success: Option<Instant>,
    /// When the proxy first knew the endpoint.
    created: Instant,
    ejected_until: Option<Instant>,
}

impl EndpointStats {
    pub fn new(now: Instant) -> Self {
        EndpointStats {
            in_flight: AtomicU32::new(0),
            state: Mutex::new(State {
                cost_ns: DEFAULT_RTT.as_nanos() as f64,
                updated: now,
                consecutive_failures: 0,
                ejections: 0,
                ejected_until: None,
                observed: false,
                first_success: None,
                created: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decayed latency estimate times the requests waiting on it (an
    /// endpoint not observed yet counts [`DEFAULT_RTT`]).
    pub fn load(&self, now: Instant) -> f64 {
        self.cost(now).unwrap_or(DEFAULT_RTT.as_nanos() as f64) * self.waiting()
    }

    /// The decayed latency estimate in nanoseconds; `None` before the first
    /// success and during the warm-up after it.
    fn cost(&self, now: Instant) -> Option<f64> {
        let s = self.lock();
        if s.first_success.is_none_or(|t| now.saturating_duration_since(t) < WARMUP) {
            return None;
        }
        let elapsed = now.saturating_duration_since(s.updated).as_secs_f64();
        Some((s.cost_ns * (-elapsed / DECAY.as_secs_f64()).exp()).max(1.0))
    }

    /// The requests in flight, plus the one being placed.
    fn waiting(&self) -> f64 {
        f64::from(self.in_flight.load(Ordering::Relaxed) + 1)
    }

    /// Counts a request as in flight until the guard drops.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records a success whose time is not the endpoint's latency (it
    /// included opening a connection): it ends a failure streak, and the
    /// latency estimate stays as it was.
    pub fn observe_success_without_sample(&self, now: Instant) {
        let mut s = self.lock();
        s.consecutive_failures = 0;
        if s.ejected_until.is_none_or(|t| now >= t) {
            s.ejections = 0;
            s.ejected_until = None;
        }
    }

    /// Records how an attempt went. Only successes are latency samples: a
    /// failure is often fast (a refused connection), and counting it would
    /// draw traffic to the endpoint that fails; failures eject instead.
    pub fn observe(&self, rtt: Duration, ok: bool, now: Instant) {
        let mut s = self.lock();
        if ok {
            let sample = rtt.as_nanos() as f64;
            if !s.observed {
                s.observed = true;
                s.first_success = Some(now);
                s.cost_ns = sample;
            } else if sample > s.cost_ns {
                s.cost_ns = sample;
            } else {
                let elapsed = now.saturating_duration_since(s.updated).as_secs_f64();
                let w = (-elapsed / DECAY.as_secs_f64()).exp();
                s.cost_ns = s.cost_ns * w + sample * (1.0 - w);
            }
            s.updated = now;
            s.consecutive_failures = 0;
            if s.ejected_until.is_none_or(|t| now >= t) {
                s.ejections = 0;
                s.ejected_until = None;
            }
            return;
        }
        s.consecutive_failures += 1;
        let starting = !s.observed && now.saturating_duration_since(s.created) < NEW_ENDPOINT_GRACE;
        if !starting && s.consecutive_failures >= EJECT_AFTER && s.ejected_until.is_none_or(|t| now >= t) {
            let factor = 1u32 << s.ejections.min(6);
            let period = (BASE_EJECTION * factor).min(MAX_EJECTION);
            s.ejected_until = Some(now + period);
            s.ejections += 1;
            s.consecutive_failures = 0;
            tracing::info!(ejection_secs = period.as_secs(), "endpoint ejected after consecutive failures");
        }
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.lock().ejected_until.is_some_and(|t| now < t)
    }
}

/// Marks a request in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight<'a>(&'a EndpointStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks an endpoint: two distinct random candidates among those not
/// ejected (all of them when every one is ejected — better to try than to
/// fail), the less loaded wins.
pub fn pick<'a, T>(
    candidates: &'a [T],
    stats: impl Fn(&T) -> &EndpointStats,
    now: Instant,
    rng: &mut fastrand::Rng,
) -> Option<&'a T> {
    // Ejected endpoints are skipped unless every endpoint is ejected.
    let healthy = candidates.iter().filter(|c| !stats(c).is_ejected(now)).count();
    // The n-th eligible endpoint, without collecting them.
    let nth = |n: usize| -> &'a T {
        if healthy == 0 || healthy == candidates.len() {
            &candidates[n]
        } else {
            candidates.iter().filter(|c| !stats(c).is_ejected(now)).nth(n).unwrap_or(&candidates[0])
        }
    };
    let n = if healthy == 0 { candidates.len() } else { healthy };
    match n {
        0 => None,
        1 => Some(nth(0)),
        n => {
            let a = rng.usize(..n);
            let mut b = rng.usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let (pa, pb) = (nth(a), nth(b));
            let (sa, sb) = (stats(pa), stats(pb));
            // An endpoint with no latency yet is compared as if it had the
            // other one's.
            let (ca, cb) = match (sa.cost(now), sb.cost(now)) {
                (Some(a), Some(b)) => (a, b),
                (Some(a), None) => (a, a),
                (None, Some(b)) => (b, b),
                (None, None) => (1.0, 1.0),
            };
            let (la, lb) = (ca * sa.waiting(), cb * sb.waiting());
            let equivalent = la <= lb * EQUIVALENT_LOAD && lb <= la * EQUIVALENT_LOAD;
            Some(if equivalent || la < lb { pa } else { pb })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slower_endpoint_gets_less_traffic() {
        let now = Instant::now();
        let eps: Vec<EndpointStats> = (0..2).map(|_| EndpointStats::new(now)).collect();
        eps[0].observe(Duration::from_millis(1), true, now);
        eps[1].observe(Duration::from_millis(200), true, now);
        let mut rng = fastrand::Rng::with_seed(7);
        let warm = now + WARMUP;
        let fast = (0..1000).filter(|_| std::ptr::eq(pick(&eps, |e| e, warm, &mut rng).unwrap(), &eps[0])).count();
        // With two endpoints p2c always compares both: all go to the fast one.
        assert_eq!(fast, 1000);
    }

    #[test]
    fn a_new_endpoint_gets_its_share_at_once() {
        let now = Instant::now();
        let eps: Vec<EndpointStats> = (0..4).map(|_| EndpointStats::new(now)).collect();
        // Three known, fast endpoints; a fourth just added.
        for e in &eps[..3] {
            e.observe(Duration::from_micros(300), true, now);
        }
        let mut rng = fastrand::Rng::with_seed(3);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let chosen = pick(&eps, |e| e, now, &mut rng).unwrap();
            counts[eps.iter().position(|e| std::ptr::eq(e, chosen)).unwrap()] += 1;
        }
        // Nothing in flight and equal costs: p2c spreads evenly (the first
        // of a tied pair wins, which is random).
        assert!(counts[3] >= 800, "the new endpoint got {counts:?}");
        // A slow first answer (cold start) does not shut it out while it
        // warms up.
        eps[3].observe(Duration::from_millis(3), true, now);
        let during = now + WARMUP / 2;
        let warming = (0..4000).filter(|_| std::ptr::eq(pick(&eps, |e| e, during, &mut rng).unwrap(), &eps[3])).count();
        assert!(warming >= 800, "the warming endpoint got {warming} of 4000");
        // Once it has answered and warmed up, its real latency counts.
        eps[3].observe(Duration::from_millis(50), true, now + WARMUP);
        let warm = now + WARMUP;
        let new = (0..1000).filter(|_| std::ptr::eq(pick(&eps, |e| e, warm, &mut rng).unwrap(), &eps[3])).count();
        assert_eq!(new, 0, "a slow endpoint keeps losing once its latency is known");
    }

    #[test]
    fn a_starting_endpoint_is_not_ejected_and_its_failures_are_not_latency() {
        let now = Instant::now();
        let e = EndpointStats::new(now);
        for _ in 0..20 {
            e.observe(Duration::from_micros(50), false, now + Duration::from_secs(1));
        }
        assert!(!e.is_ejected(now + Duration::from_secs(1)), "ejected while it was starting");
        assert!(e.cost(now).is_none(), "a failure became a latency sample");
        // Still failing once the grace is over: ejected as any other.
        let later = now + NEW_ENDPOINT_GRACE;
        for _ in 0..EJECT_AFTER {
            e.observe(Duration::from_micros(50), false, later);
        }
        assert!(e.is_ejected(later));
    }

    #[test]
    fn equally_fast_endpoints_share_the_traffic() {
        let now = Instant::now();
        let eps: Vec<EndpointStats> = (0..2).map(|_| EndpointStats::new(now)).collect();
        eps[0].observe(Duration::from_micros(1000), true, now);
        eps[1].observe(Duration::from_micros(1100), true, now);
        let mut rng = fastrand::Rng::with_seed(5);
        let first = (0..1000).filter(|_| std::ptr::eq(pick(&eps, |e| e, now, &mut rng).unwrap(), &eps[0])).count();
        assert!((400..=600).contains(&first), "{first} of 1000 to the marginally faster endpoint");
    }

    #[test]
    fn in_flight_requests_raise_the_load() {
        let now = Instant::now();
        let e = EndpointStats::new(now);
        let idle = e.load(now);
        let g = e.start();
        assert!(e.load(now) > idle * 1.9);
        drop(g);
        assert!((e.load(now) - idle).abs() < 1.0);
    }

    #[test]
    fn a_peak_is_taken_at_once_and_forgotten_slowly() {
        let now = Instant::now();
        let e = EndpointStats::new(now);
        e.observe(Duration::from_millis(1), true, now);
        let now = now + WARMUP;
        e.observe(Duration::from_millis(500), true, now);
        assert!(e.load(now) >= 500e6);
        let later = now + Duration::from_secs(10);
        e.observe(Duration::from_millis(1), true, later);
        let cost = e.load(later);
        assert!(cost < 500e6 && cost > 100e6, "{cost}");
    }

    #[test]
    fn consecutive_failures_eject_with_growing_backoff() {
        let now = Instant::now();
        let e = EndpointStats::new(now);
        e.observe(Duration::from_millis(1), true, now);
        for _ in 0..4 {
            e.observe(Duration::from_millis(1), false, now);
        }
        assert!(!e.is_ejected(now));
        e.observe(Duration::from_millis(1), false, now);
        assert!(e.is_ejected(now));
        assert!(e.is_ejected(now + Duration::from_secs(4)));
        let back = now + Duration::from_secs(5);
        assert!(!e.is_ejected(back));
        for _ in 0..5 {
            e.observe(Duration::from_millis(1), false, back);
        }
        assert!(e.is_ejected(back + Duration::from_secs(9)), "the second ejection lasts twice as long");
        assert!(!e.is_ejected(back + Duration::from_secs(10)));
    }

    #[test]
    fn ejected_endpoints_are_avoided_unless_all_are_ejected() {
        let now = Instant::now();
        let eps: Vec<EndpointStats> = (0..3).map(|_| EndpointStats::new(now)).collect();
        for e in &eps {
            e.observe(Duration::from_millis(1), true, now);
        }
        for _ in 0..5 {
            eps[0].observe(Duration::from_millis(1), false, now);
        }
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..200 {
            assert!(!std::ptr::eq(pick(&eps, |e| e, now, &mut rng).unwrap(), &eps[0]));
        }
        for e in &eps[1..] {
            for _ in 0..5 {
                e.observe(Duration::from_millis(1), false, now);
            }
        }
        assert!(pick(&eps, |e| e, now, &mut rng).is_some());
    }
}
