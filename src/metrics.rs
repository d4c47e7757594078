//! Operability: the counters, gauges and histograms that `podbridge serve` (on the readiness
//! listener) and `podbridge operator` (on its metrics listener) expose at `/metrics`, in
//! Prometheus' text exposition format 0.0.4.
//!
//! Kept by hand rather than with a client library: a few families, each a small sorted map
//! behind a mutex that is held only for a lookup and an addition, so the request path pays one
//! map lookup and allocates nothing once a series exists, and an idle process holds a few
//! kilobytes. Label values are bounded by construction: templated routes, numeric statuses,
//! object kinds, rule names from the policy files, container states and session phases. No
//! label carries a container id, a name a client chose, an environment variable or a credential.
//!
//! Gauges that describe state (containers by state, sessions by phase) are computed at scrape
//! time from the watch caches through a source registered by the process, so they cannot drift
//! from what `docker ps` and `kubectl get bridgesessions` show.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Duration;

use parking_lot::Mutex;

use crate::rules::report::RuleResult;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, in seconds, of every duration histogram. Fixed so that series from different
/// instances aggregate; they reach 120 s because a `start` waits for its container up to
/// `start_timeout_seconds` (120 by default).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The route label of a request no Docker route matched (unknown paths, too old API versions).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Docker container states, always reported (zero included) so a dashboard sees each series.
const CONTAINER_STATES: [&str; 7] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

/// BridgeSession phases, always reported.
const SESSION_PHASES: [&str; 4] = ["Pending", "Ready", "Failed", "Terminating"];

/// Gives the label value of each item a gauge counts (a container's state, a session's phase),
/// read at scrape time.
pub type StateSource = Box<dyn Fn() -> Vec<&'static str> + Send + Sync>;

/// Observations of durations, counted per bucket (not cumulative: [`write_histogram`] sums them
/// as the format requires).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index] += 1;
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

/// A label value escaped as the text format wants it: backslash, double quote and line feed.
pub fn escape_label_value(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 2);
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    Cow::Owned(escaped)
}

/// The `# HELP` and `# TYPE` lines that open a family.
fn write_header(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP text escapes backslash and line feed only.
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (index, (name, value)) in labels.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape_label_value(value));
    }
    out.push('}');
}

/// One sample line.
fn write_sample(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    write_labels(out, labels);
    let _ = writeln!(out, " {value}");
}

/// A histogram's `_bucket` lines (cumulative, `+Inf` last, equal to `_count`), `_sum` and
/// `_count`.
fn write_histogram(out: &mut String, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
    let bucket_name = format!("{name}_bucket");
    let bounds = DURATION_BUCKETS.map(|bound| bound.to_string());
    let mut with_bound: Vec<(&str, &str)> = labels.to_vec();
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(histogram.buckets) {
        cumulative += count;
        with_bound.push(("le", bound));
        write_sample(out, &bucket_name, &with_bound, cumulative);
        with_bound.pop();
    }
    with_bound.push(("le", "+Inf"));
    write_sample(out, &bucket_name, &with_bound, histogram.count);
    write_sample(out, &format!("{name}_sum"), labels, histogram.sum_seconds);
    write_sample(out, &format!("{name}_count"), labels, histogram.count);
}

/// A gauge over [`StateSource`] items: every `known` value (zero included), then any other.
fn write_state_gauge(
    out: &mut String,
    (name, help, label): (&str, &str, &str),
    known: &[&'static str],
    items: Vec<&'static str>,
) {
    let mut counts: BTreeMap<&str, u64> = known.iter().map(|state| (*state, 0)).collect();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    write_header(out, name, "gauge", help);
    for state in known {
        write_sample(out, name, &[(label, state)], counts[state]);
    }
    for (state, count) in counts.iter().filter(|(s, _)| !known.contains(s)) {
        write_sample(out, name, &[(label, state)], count);
    }
}

/// One method of one route: its durations and its answers by status.
#[derive(Debug, Default)]
struct MethodSeries {
    duration: Histogram,
    statuses: BTreeMap<u16, u64>,
}

/// Counts by result (`applied`, `pass`, …) of each rule, by policy name then rule name: nested
/// so that a lookup borrows the names of a [`RuleResult`] instead of allocating a key.
type PolicyDecisions = BTreeMap<String, BTreeMap<String, BTreeMap<&'static str, u64>>>;

/// What `podbridge serve` records.
#[derive(Default)]
pub struct ServeMetrics {
    /// By templated route, then method.
    requests: Mutex<BTreeMap<Box<str>, BTreeMap<&'static str, MethodSeries>>>,
    /// By kind and operation.
    apply: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
    /// By watched kind.
    watch_restarts: Mutex<BTreeMap<String, u64>>,
    policy_decisions: Mutex<PolicyDecisions>,
    containers: Mutex<Option<StateSource>>,
}

/// The metrics of this `podbridge serve` process (created on first use: other commands that
/// share code paths, `translate` and `policy test`, record into it unseen).
pub fn serve() -> &'static ServeMetrics {
    static METRICS: LazyLock<ServeMetrics> = LazyLock::new(ServeMetrics::default);
    &METRICS
}

/// The text of [`serve`], for the readiness listener's `/metrics`.
pub fn render_serve() -> String {
    serve().render()
}

impl ServeMetrics {
    /// One answered Docker request; `route` is the templated route or [`UNMATCHED_ROUTE`].
    /// `method` must come from a fixed set (the caller maps unknown methods to one value).
    pub fn record_request(
        &self,
        method: &'static str,
        route: &str,
        status: u16,
        elapsed: Duration,
    ) {
        let mut requests = self.requests.lock();
        let methods = match requests.get_mut(route) {
            Some(methods) => methods,
            None => requests.entry(route.into()).or_default(),
        };
        let series = methods.entry(method).or_default();
        series.duration.observe(elapsed);
        *series.statuses.entry(status).or_default() += 1;
    }

    /// One cluster write by the Applier: `operation` is `create`, `apply` or `delete`.
    pub fn observe_apply(&self, kind: &'static str, operation: &'static str, elapsed: Duration) {
        self.apply
            .lock()
            .entry((kind, operation))
            .or_default()
            .observe(elapsed);
    }

    /// A watch of `kind` began: its restart counter shows, at zero.
    pub fn watch_started(&self, kind: &str) {
        let mut restarts = self.watch_restarts.lock();
        if !restarts.contains_key(kind) {
            restarts.insert(kind.to_string(), 0);
        }
    }

    /// A watch stream of `kind` failed and is retried with backoff.
    pub fn watch_failed(&self, kind: &str) {
        let mut restarts = self.watch_restarts.lock();
        match restarts.get_mut(kind) {
            Some(count) => *count += 1,
            None => {
                restarts.insert(kind.to_string(), 1);
            }
        }
    }

    /// The rule results of one translation (a container's create or start, a volume's claim).
    pub fn record_policy_results(&self, results: &[RuleResult]) {
        let mut decisions = self.policy_decisions.lock();
        for result in results {
            let rules = match decisions.get_mut(result.policy.as_str()) {
                Some(rules) => rules,
                None => decisions.entry(result.policy.clone()).or_default(),
            };
            let outcomes = match rules.get_mut(result.rule.as_str()) {
                Some(outcomes) => outcomes,
                None => rules.entry(result.rule.clone()).or_default(),
            };
            *outcomes.entry(result.result.as_str()).or_default() += 1;
        }
    }

    /// Where the containers gauge reads each container's state at scrape time.
    pub fn set_container_states(&self, source: StateSource) {
        *self.containers.lock() = Some(source);
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // The source runs outside the lock: it reads the watch caches.
        let states = self.containers.lock().as_ref().map(|source| source());
        if let Some(states) = states {
            write_state_gauge(
                &mut out,
                (
                    "podbridge_containers",
                    "Docker containers of this instance by state, from the watch caches.",
                    "state",
                ),
                &CONTAINER_STATES,
                states,
            );
        }
        {
            let requests = self.requests.lock();
            write_header(
                &mut out,
                "podbridge_requests_total",
                "counter",
                "Docker API requests answered, by method, templated route and status.",
            );
            for (route, methods) in requests.iter() {
                for (method, series) in methods {
                    for (status, count) in &series.statuses {
                        let status = status.to_string();
                        let labels = [
                            ("method", *method),
                            ("route", &**route),
                            ("status", &status),
                        ];
                        write_sample(&mut out, "podbridge_requests_total", &labels, count);
                    }
                }
            }
            write_header(
                &mut out,
                "podbridge_request_duration_seconds",
                "histogram",
                "Time to answer a Docker API request (to the response head; streams go on), by \
                 method and templated route.",
            );
            for (route, methods) in requests.iter() {
                for (method, series) in methods {
                    let labels = [("method", *method), ("route", &**route)];
                    write_histogram(
                        &mut out,
                        "podbridge_request_duration_seconds",
                        &labels,
                        &series.duration,
                    );
                }
            }
        }
        write_header(
            &mut out,
            "podbridge_apply_duration_seconds",
            "histogram",
            "Duration of the cluster writes of the Applier, by kind and operation \
             (create, apply, delete).",
        );
        for ((kind, operation), histogram) in self.apply.lock().iter() {
            let labels = [("kind", *kind), ("operation", *operation)];
            write_histogram(
                &mut out,
                "podbridge_apply_duration_seconds",
                &labels,
                histogram,
            );
        }
        write_header(
            &mut out,
            "podbridge_watch_restarts_total",
            "counter",
            "Failures of a watch stream (pods, services, configmaps, claims), each followed by a \
             retry with backoff, by kind.",
        );
        for (kind, count) in self.watch_restarts.lock().iter() {
            write_sample(
                &mut out,
                "podbridge_watch_restarts_total",
                &[("kind", kind.as_str())],
                count,
            );
        }
        write_header(
            &mut out,
            "podbridge_policy_decisions_total",
            "counter",
            "Rule results of the policy chain per translation, by policy, rule and result \
             (applied, pass, fail, warn, skip, error).",
        );
        for (policy, rules) in self.policy_decisions.lock().iter() {
            for (rule, outcomes) in rules {
                for (result, count) in outcomes {
                    let labels = [
                        ("policy", policy.as_str()),
                        ("rule", rule.as_str()),
                        ("result", *result),
                    ];
                    write_sample(&mut out, "podbridge_policy_decisions_total", &labels, count);
                }
            }
        }
        out
    }
}

/// What `podbridge operator` records.
#[derive(Default)]
pub struct OperatorMetrics {
    /// By result: `success` or `error`.
    reconciles: Mutex<BTreeMap<&'static str, u64>>,
    sessions: Mutex<Option<StateSource>>,
    /// Whether this replica reconciles: it holds the leadership Lease, or runs without leader
    /// election. Standbys scrape as 0, so `sum(podbridge_operator_leader)` shows a split or a gap.
    leader: std::sync::atomic::AtomicBool,
}

/// The metrics of this `podbridge operator` process.
pub fn operator() -> &'static OperatorMetrics {
    static METRICS: LazyLock<OperatorMetrics> = LazyLock::new(OperatorMetrics::default);
    &METRICS
}

/// The text of [`operator`], for the operator's `/metrics`.
pub fn render_operator() -> String {
    operator().render()
}

impl OperatorMetrics {
    /// One finished reconcile.
    pub fn record_reconcile(&self, succeeded: bool) {
        let result = if succeeded { "success" } else { "error" };
        *self.reconciles.lock().entry(result).or_default() += 1;
    }

    /// Where the sessions gauge reads each session's phase at scrape time.
    pub fn set_session_phases(&self, source: StateSource) {
        *self.sessions.lock() = Some(source);
    }

    /// Forgets the session source when this replica stops reconciling: a standby's cache is
    /// stale, and only the leader should count sessions.
    pub fn clear_session_phases(&self) {
        *self.sessions.lock() = None;
    }

    /// Whether this replica reconciles now.
    pub fn set_leader(&self, leading: bool) {
        self.leader
            .store(leading, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let phases = self.sessions.lock().as_ref().map(|source| source());
        write_state_gauge(
            &mut out,
            (
                "podbridge_operator_sessions",
                "BridgeSessions by phase, from the controller's cache.",
                "phase",
            ),
            &SESSION_PHASES,
            phases.unwrap_or_default(),
        );
        write_header(
            &mut out,
            "podbridge_operator_reconciles_total",
            "counter",
            "Reconciles of a BridgeSession, by result (success, error).",
        );
        let reconciles = self.reconciles.lock().clone();
        for result in ["success", "error"] {
            let count = reconciles.get(result).copied().unwrap_or_default();
            write_sample(
                &mut out,
                "podbridge_operator_reconciles_total",
                &[("result", result)],
                count,
            );
        }
        write_header(
            &mut out,
            "podbridge_operator_leader",
            "gauge",
            "1 while this replica reconciles (holds the leadership Lease, or runs without leader \
             election), 0 while it stands by.",
        );
        let leading = self.leader.load(std::sync::atomic::Ordering::Relaxed);
        write_sample(
            &mut out,
            "podbridge_operator_leader",
            &[],
            u8::from(leading),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::report::Outcome;

    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("plain"), "plain");
        assert!(matches!(escape_label_value("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("one\ntwo"), "one\\ntwo");
        let mut out = String::new();
        write_sample(&mut out, "m", &[("rule", "say \"hi\"\n")], 1);
        assert_eq!(out, "m{rule=\"say \\\"hi\\\"\\n\"} 1\n");
    }

    #[test]
    fn families_open_with_help_and_type() {
        let metrics = ServeMetrics::default();
        metrics.watch_started("Pod");
        let text = metrics.render();
        for family in [
            "podbridge_requests_total counter",
            "podbridge_request_duration_seconds histogram",
            "podbridge_apply_duration_seconds histogram",
            "podbridge_watch_restarts_total counter",
            "podbridge_policy_decisions_total counter",
        ] {
            let name = family.split(' ').next().unwrap();
            assert!(text.contains(&format!("# TYPE {family}\n")), "{text}");
            let help = text.find(&format!("# HELP {name} ")).unwrap();
            let kind = text.find(&format!("# TYPE {name} ")).unwrap();
            assert!(help < kind, "HELP before TYPE for {name}");
        }
        assert!(text.contains("podbridge_watch_restarts_total{kind=\"Pod\"} 0\n"));
        // no containers source: no containers family
        assert!(!text.contains("podbridge_containers"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let mut histogram = Histogram::default();
        histogram.observe(Duration::from_millis(3)); // le 0.005
        histogram.observe(Duration::from_millis(40)); // le 0.05
        histogram.observe(Duration::from_millis(50)); // le 0.05 (bounds are inclusive)
        histogram.observe(Duration::from_secs(500)); // +Inf only
        let mut out = String::new();
        write_histogram(&mut out, "h", &[("kind", "Pod")], &histogram);
        let buckets = lines_of(&out, "h_bucket");
        assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(buckets[0], "h_bucket{kind=\"Pod\",le=\"0.005\"} 1");
        assert_eq!(buckets[1], "h_bucket{kind=\"Pod\",le=\"0.01\"} 1");
        assert_eq!(buckets[3], "h_bucket{kind=\"Pod\",le=\"0.05\"} 3");
        assert_eq!(buckets[13], "h_bucket{kind=\"Pod\",le=\"120\"} 3");
        assert_eq!(buckets[14], "h_bucket{kind=\"Pod\",le=\"+Inf\"} 4");
        let values: Vec<u64> = buckets
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{out}");
        assert_eq!(lines_of(&out, "h_count"), ["h_count{kind=\"Pod\"} 4"]);
        let sum: f64 = lines_of(&out, "h_sum")[0]
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 500.093).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let metrics = ServeMetrics::default();
        let ms = Duration::from_millis;
        metrics.record_request("POST", "/containers/create", 201, ms(20));
        metrics.record_request("POST", "/containers/create", 201, ms(30));
        metrics.record_request("POST", "/containers/create", 409, ms(5));
        metrics.record_request("POST", "/containers/{id}/start", 204, ms(900));
        metrics.record_request("GET", UNMATCHED_ROUTE, 404, ms(1));
        let text = metrics.render();
        let requests = lines_of(&text, "podbridge_requests_total{");
        assert_eq!(
            requests,
            [
                "podbridge_requests_total{method=\"POST\",route=\"/containers/create\",status=\"201\"} 2",
                "podbridge_requests_total{method=\"POST\",route=\"/containers/create\",status=\"409\"} 1",
                "podbridge_requests_total{method=\"POST\",route=\"/containers/{id}/start\",status=\"204\"} 1",
                "podbridge_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
            ]
        );
        assert!(text.contains(
            "podbridge_request_duration_seconds_count{method=\"POST\",route=\"/containers/create\"} 3\n"
        ));
        assert!(text.contains(
            "podbridge_request_duration_seconds_bucket{method=\"POST\",route=\"/containers/{id}/start\",le=\"1\"} 1\n"
        ));
    }

    #[test]
    fn apply_and_watch_series() {
        let metrics = ServeMetrics::default();
        metrics.observe_apply("Pod", "create", Duration::from_millis(12));
        metrics.watch_started("ConfigMap");
        metrics.watch_failed("ConfigMap");
        metrics.watch_failed("ConfigMap");
        let text = metrics.render();
        assert!(text.contains(
            "podbridge_apply_duration_seconds_bucket{kind=\"Pod\",operation=\"create\",le=\"0.025\"} 1\n"
        ));
        assert!(text.contains("podbridge_watch_restarts_total{kind=\"ConfigMap\"} 2\n"));
    }

    #[test]
    fn policy_decisions_by_policy_rule_and_result() {
        let result = |policy: &str, rule: &str, outcome| RuleResult {
            policy: policy.into(),
            rule: rule.into(),
            file: "f.yaml".into(),
            result: outcome,
            reason: String::new(),
            changes: vec![],
            prints: vec![],
        };
        let metrics = ServeMetrics::default();
        let translation = [
            result("baseline", "drop-capabilities", Outcome::Applied),
            result("baseline", "no-privileged", Outcome::Pass),
        ];
        metrics.record_policy_results(&translation);
        metrics.record_policy_results(&translation);
        metrics.record_policy_results(&[result("baseline", "no-privileged", Outcome::Fail)]);
        let text = metrics.render();
        assert_eq!(
            lines_of(&text, "podbridge_policy_decisions_total{"),
            [
                "podbridge_policy_decisions_total{policy=\"baseline\",rule=\"drop-capabilities\",result=\"applied\"} 2",
                "podbridge_policy_decisions_total{policy=\"baseline\",rule=\"no-privileged\",result=\"fail\"} 1",
                "podbridge_policy_decisions_total{policy=\"baseline\",rule=\"no-privileged\",result=\"pass\"} 2",
            ]
        );
    }

    #[test]
    fn containers_gauge_reports_every_state() {
        let metrics = ServeMetrics::default();
        metrics.set_container_states(Box::new(|| vec!["running", "running", "exited"]));
        let text = metrics.render();
        let containers = lines_of(&text, "podbridge_containers{");
        assert_eq!(containers.len(), CONTAINER_STATES.len());
        assert!(containers.contains(&"podbridge_containers{state=\"running\"} 2"));
        assert!(containers.contains(&"podbridge_containers{state=\"exited\"} 1"));
        assert!(containers.contains(&"podbridge_containers{state=\"paused\"} 0"));
        assert!(text.contains("# TYPE podbridge_containers gauge\n"));
    }

    #[test]
    fn operator_sessions_and_reconciles() {
        let metrics = OperatorMetrics::default();
        metrics.set_session_phases(Box::new(|| vec!["Ready", "Ready", "Pending"]));
        metrics.record_reconcile(true);
        metrics.record_reconcile(true);
        metrics.record_reconcile(false);
        let text = metrics.render();
        assert!(text.contains("# TYPE podbridge_operator_sessions gauge\n"));
        assert!(text.contains("podbridge_operator_sessions{phase=\"Ready\"} 2\n"));
        assert!(text.contains("podbridge_operator_sessions{phase=\"Terminating\"} 0\n"));
        assert!(text.contains("# TYPE podbridge_operator_reconciles_total counter\n"));
        assert!(text.contains("podbridge_operator_reconciles_total{result=\"success\"} 2\n"));
        assert!(text.contains("podbridge_operator_reconciles_total{result=\"error\"} 1\n"));
        assert!(text.contains("# TYPE podbridge_operator_leader gauge\n"));
        assert!(text.contains("\npodbridge_operator_leader 0\n"));
    }

    #[test]
    fn a_standby_reports_no_leadership_and_no_sessions() {
        let metrics = OperatorMetrics::default();
        metrics.set_session_phases(Box::new(|| vec!["Ready"]));
        metrics.set_leader(true);
        assert!(metrics.render().contains("\npodbridge_operator_leader 1\n"));
        metrics.set_leader(false);
        metrics.clear_session_phases();
        let text = metrics.render();
        assert!(text.contains("\npodbridge_operator_leader 0\n"));
        assert!(text.contains("podbridge_operator_sessions{phase=\"Ready\"} 0\n"));
    }
}
