//! The `/metrics` body of the control plane and of the proxies, in the
//! format the scraper asked for.
//!
//! prometheus-client only writes OpenMetrics 1.0. Served as the classic text
//! format (0.0.4), which is what a scraper without an `Accept` header,
//! `promtool check metrics`, and many agents read, one difference matters: an
//! OpenMetrics counter family `x` has samples named `x_total`, so a 0.0.4
//! reader sees `# HELP x`/`# TYPE x counter` describing nothing and an
//! undescribed `x_total`. [`encode`] therefore negotiates on `Accept`
//! (OpenMetrics when the client prefers it, as Prometheus does) and otherwise
//! rewrites the OpenMetrics text into 0.0.4 with [`openmetrics_to_text`].

use prometheus_client::registry::Registry;

/// The content type of an OpenMetrics 1.0 body.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of a classic text-format body.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition of `registry` for a request with this `Accept` header:
/// `(content type, body)`.
pub fn encode(registry: &Registry, accept: Option<&str>) -> (&'static str, String) {
    let mut openmetrics = String::new();
    // Writing into a String cannot fail; an encoding error of the registry
    // itself (a metric that refuses to encode) leaves what was written.
    let _ = prometheus_client::encoding::text::encode(&mut openmetrics, registry);
    if prefers_openmetrics(accept) {
        (OPENMETRICS_CONTENT_TYPE, openmetrics)
    } else {
        (TEXT_CONTENT_TYPE, openmetrics_to_text(&openmetrics))
    }
}

/// Whether an `Accept` header ranks `application/openmetrics-text` above
/// `text/plain` (RFC 9110 §12.5.1 quality values; a missing `q` is 1). No
/// header, `*/*`, or a tie keeps the classic format, which every scraper
/// reads.
pub fn prefers_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut q = 1.0_f32;
        for param in parts {
            if let Some((name, value)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("q")
            {
                q = value.trim().parse().unwrap_or(0.0);
            }
        }
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > text
}

/// Rewrites an OpenMetrics 1.0 exposition into the classic text format
/// 0.0.4: a counter's `# HELP`/`# TYPE` name its `_total` samples, an info
/// family becomes a gauge named `x_info`, `unknown` becomes `untyped`,
/// `_created` samples, `# UNIT` lines, exemplars and `# EOF` are dropped,
/// and help text keeps only the escapes 0.0.4 knows (`\\`, `\n`).
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP line comes before its TYPE line, which decides the
    // name it is written under.
    let mut pending_help: Option<(&str, &str)> = None;
    let mut counter: Option<String> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, pending_help.take(), None);
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "unknown" => (family.to_string(), "untyped"),
                "gauge" | "histogram" | "summary" => (family.to_string(), kind),
                // stateset and gaugehistogram have no 0.0.4 type; their
                // samples stay, untyped.
                _ => (family.to_string(), "untyped"),
            };
            counter = (kind == "counter").then(|| family.to_string());
            flush_help(&mut out, pending_help.take().filter(|(n, _)| *n == family), Some(&name));
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" || line.is_empty() {
        } else if line.starts_with('#') {
            // Other comments are legal in 0.0.4 too.
            flush_help(&mut out, pending_help.take(), None);
            out.push_str(line);
            out.push('\n');
        } else {
            flush_help(&mut out, pending_help.take(), None);
            if counter.as_deref().is_some_and(|c| sample_name(line) == format!("{c}_created")) {
                continue;
            }
            out.push_str(without_exemplar(line));
            out.push('\n');
        }
    }
    flush_help(&mut out, pending_help, None);
    out
}

/// Writes a held HELP line, under `name` when its TYPE renamed the family.
fn flush_help(out: &mut String, help: Option<(&str, &str)>, name: Option<&str>) {
    let Some((family, text)) = help else { return };
    out.push_str("# HELP ");
    out.push_str(name.unwrap_or(family));
    out.push(' ');
    // OpenMetrics also escapes `"` in help text; 0.0.4 does not.
    out.push_str(&text.replace("\\\"", "\""));
    out.push('\n');
}

fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// A sample line without its exemplar (` # {labels} value [timestamp]`),
/// which 0.0.4 does not have. Label values may hold `#`, `}` and escaped
/// quotes, so the label set is skipped quote-aware before looking for it.
fn without_exemplar(line: &str) -> &str {
    let mut labels_end = 0;
    if let Some(open) = line.find('{')
        && open == sample_name(line).len()
    {
        let (mut in_quotes, mut escaped) = (false, false);
        for (i, c) in line[open..].char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    labels_end = open + i + 1;
                    break;
                }
                _ => {}
            }
        }
    }
    match line[labels_end..].find(" # ") {
        Some(at) => &line[..labels_end + at],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        route: String,
    }

    fn registry() -> Registry {
        let mut r = Registry::with_prefix("weft");
        let requests = Family::<Labels, Counter>::default();
        requests.get_or_create(&Labels { route: "a \"quoted\" # {route}".into() }).inc_by(3);
        r.register("requests", "Requests \"forwarded\", by route", requests);
        let open = Gauge::<i64>::default();
        open.set(2);
        r.register("connections_open", "Open connections", open);
        let h = Histogram::new([0.1, 1.0]);
        h.observe(0.5);
        r.register_with_unit("latency", "Latency", prometheus_client::registry::Unit::Seconds, h);
        r.register("build", "Build", Info::new(vec![("version".to_string(), "1".to_string())]));
        r
    }

    #[test]
    fn the_classic_format_names_counters_by_their_samples() {
        let (content_type, text) = encode(&registry(), None);
        assert_eq!(content_type, TEXT_CONTENT_TYPE);
        let expected = "\
# HELP weft_requests_total Requests \"forwarded\", by route.
# TYPE weft_requests_total counter
weft_requests_total{route=\"a \\\"quoted\\\" # {route}\"} 3
# HELP weft_connections_open Open connections.
# TYPE weft_connections_open gauge
weft_connections_open 2
# HELP weft_latency_seconds Latency.
# TYPE weft_latency_seconds histogram
weft_latency_seconds_sum 0.5
weft_latency_seconds_count 1
weft_latency_seconds_bucket{le=\"0.1\"} 0
weft_latency_seconds_bucket{le=\"1.0\"} 1
weft_latency_seconds_bucket{le=\"+Inf\"} 1
# HELP weft_build_info Build.
# TYPE weft_build_info gauge
weft_build_info{version=\"1\"} 1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn openmetrics_is_served_to_scrapers_that_prefer_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        let (content_type, body) = encode(&registry(), Some(prometheus));
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(body.contains("# TYPE weft_requests counter\n"), "{body}");
        assert!(body.contains("# UNIT weft_latency_seconds seconds\n"), "{body}");
    }

    #[test]
    fn accept_ranks_by_quality() {
        assert!(!prefers_openmetrics(None));
        assert!(!prefers_openmetrics(Some("*/*")));
        assert!(!prefers_openmetrics(Some("text/plain")));
        assert!(prefers_openmetrics(Some("application/openmetrics-text")));
        assert!(prefers_openmetrics(Some("application/openmetrics-text; version=1.0.0, text/plain;q=0.9")));
        assert!(!prefers_openmetrics(Some("application/openmetrics-text;q=0.2, text/plain;q=0.3")));
        assert!(!prefers_openmetrics(Some("application/openmetrics-text;q=0.5, */*;q=0.5")));
        assert!(!prefers_openmetrics(Some("application/openmetrics-text;q=0")));
    }

    #[test]
    fn exemplars_created_samples_and_unknown_types_are_rewritten() {
        let om = "\
# HELP x_requests Requests.
# TYPE x_requests counter
x_requests_total{a=\"}\"} 1 # {trace_id=\"abc\"} 1.0 1520879607.789
x_requests_created 1520430000.123
# TYPE x_thing unknown
x_thing 4
# EOF
";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{a=\"}\"} 1\n# TYPE x_thing untyped\nx_thing 4\n"
        );
    }
}
