//! The Grafana dashboard and the example Prometheus configuration, checked without running
//! anything but `promtool`: every metric the dashboard queries exists in `signalgate::metrics`
//! (no typo can ship), every panel uses the data-source variable, every selector is scoped to
//! the chosen job and instance. `tests/prometheus.rs` then evaluates every query for real.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use signalgate::metrics;

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana")
}

fn dashboard() -> Value {
    let path = grafana_dir().join("dashboards/signalgate.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("(untitled)")
}

/// (panel title, expr) of every query target.
fn panel_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target of {:?} has no expr", title(panel)));
            out.push((title(panel).to_string(), expr.to_string()));
        }
    }
    out
}

/// The queries of the `query` template variables (`label_values(...)`).
fn variable_queries(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| match &v["query"] {
            Value::String(q) => q.clone(),
            other => other["query"].as_str().expect("query.query").to_string(),
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Metric names in a PromQL expression: identifiers starting `signalgate_` or `process_`,
/// with the histogram series suffixes removed. (byte offset, name as written, base name)
fn metric_names(expr: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (start, _) in expr.char_indices() {
        let rest = &expr[start..];
        if !(rest.starts_with("signalgate_") || rest.starts_with("process_")) {
            continue;
        }
        if expr[..start].chars().next_back().is_some_and(is_ident) {
            continue; // Inside another identifier.
        }
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name)
            .to_string();
        out.push((start, name, base));
    }
    out
}

/// Label names in matchers (`name="..."`, `=~`, `!=`, `!~`) and in `by (...)` /
/// `without (...)` / `on (...)` / `ignoring (...)` clauses.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // Matchers inside braces.
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        for matcher in rest[open + 1..open + close].split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
        rest = &rest[open + close + 1..];
    }
    // Grouping clauses.
    for keyword in ["by", "without", "on", "ignoring"] {
        let mut rest = expr;
        while let Some(at) = rest.find(keyword) {
            let before = &expr[..expr.len() - rest.len() + at];
            let after = rest[at + keyword.len()..].trim_start();
            rest = &rest[at + keyword.len()..];
            if before.chars().next_back().is_some_and(is_ident) || !after.starts_with('(') {
                continue;
            }
            let close = after.find(')').expect("closing parenthesis");
            for name in after[1..close].split(',') {
                out.insert(name.trim().to_string());
            }
        }
    }
    out
}

/// Labels a dashboard may use: the gateway's own, the histogram's `le`, and the target
/// labels Prometheus attaches.
fn known_labels() -> BTreeSet<&'static str> {
    let mut known: BTreeSet<&str> = metrics::LABELS.iter().copied().collect();
    known.extend(["le", "job", "instance"]);
    known
}

#[test]
fn every_metric_the_dashboard_queries_exists_in_the_metrics_module() {
    let dashboard = dashboard();
    let mut queried = BTreeSet::new();
    let exprs = panel_exprs(&dashboard).into_iter().chain(
        variable_queries(&dashboard)
            .into_iter()
            .map(|q| ("variable".into(), q)),
    );
    for (panel, expr) in exprs {
        let names = metric_names(&expr);
        assert!(
            !names.is_empty(),
            "{panel:?} queries no signalgate metric: {expr}"
        );
        for (_, name, base) in names {
            assert!(
                metrics::ALL.contains(&base.as_str()),
                "{panel:?} queries {name}, which signalgate::metrics does not export \
                 (known: {:?})",
                metrics::ALL
            );
            queried.insert(base);
        }
    }
    // And the other way round: a metric that operators cannot see on the dashboard is
    // a deliberate choice, listed here.
    let not_on_dashboard = [metrics::PING_INTERVAL];
    for name in metrics::ALL {
        if !not_on_dashboard.contains(name) {
            assert!(
                queried.contains(*name),
                "{name} is exported but no dashboard panel shows it"
            );
        }
    }
}

#[test]
fn label_names_in_the_dashboard_are_the_documented_ones() {
    let dashboard = dashboard();
    let known = known_labels();
    for (panel, expr) in panel_exprs(&dashboard) {
        for label in label_names(&expr) {
            assert!(
                known.contains(label.as_str()),
                "{panel:?} uses label {label:?}, not one of {known:?}: {expr}"
            );
        }
    }
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or("");
            for part in legend.split("{{").skip(1) {
                let label = part.split("}}").next().unwrap_or("").trim();
                assert!(
                    known.contains(label),
                    "{:?}: legend {legend:?} names label {label:?}",
                    title(panel)
                );
            }
        }
    }
}

#[test]
fn every_panel_queries_the_datasource_variable() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a template variable named datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let by_variable = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(variable["datasource"], by_variable, "variable {variable}");
    }
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "{:?} has a bad gridPos {grid}",
            title(panel)
        );
        if is_row(panel) {
            continue;
        }
        assert_eq!(
            panel["datasource"],
            by_variable,
            "panel {:?} must use ${{datasource}}",
            title(panel)
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {:?} has no query", title(panel));
        for target in targets {
            assert_eq!(
                target["datasource"],
                by_variable,
                "a target of {:?} must use ${{datasource}}",
                title(panel)
            );
        }
    }
}

/// Otherwise a Prometheus that scrapes several jobs mixes, e.g., its own process_* series
/// into the gateway's process panels.
#[test]
fn every_selector_is_scoped_to_the_chosen_job_and_instance() {
    let dashboard = dashboard();
    for (panel, expr) in panel_exprs(&dashboard) {
        for (start, name, _) in metric_names(&expr) {
            let after = &expr[start + name.len()..];
            let selector = after
                .strip_prefix('{')
                .and_then(|s| s.split_once('}'))
                .map(|(inside, _)| inside)
                .unwrap_or_else(|| panic!("{panel:?}: {name} has no label selector: {expr}"));
            for scope in [r#"job=~"$job""#, r#"instance=~"$instance""#] {
                assert!(
                    selector.contains(scope),
                    "{panel:?}: {name}{{{selector}}} lacks {scope}"
                );
            }
        }
    }
    let variables = dashboard["templating"]["list"].as_array().expect("list");
    let instance = variables
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("instance variable");
    assert_eq!(instance["includeAll"], true);
    assert_eq!(instance["allValue"], ".*");
}

#[test]
fn the_extraction_helpers_work() {
    let expr = r#"histogram_quantile(0.99, sum by (le, transport) (rate(signalgate_rtt_seconds_bucket{job=~"$job", reason="x"}[5m]))) / process_open_fds"#;
    let names: Vec<String> = metric_names(expr).into_iter().map(|n| n.2).collect();
    assert_eq!(names, ["signalgate_rtt_seconds", "process_open_fds"]);
    let labels: Vec<String> = label_names(expr).into_iter().collect();
    assert_eq!(labels, ["job", "le", "reason", "transport"]);
}

#[test]
fn provisioning_points_grafana_at_the_dashboards_folder() {
    let provisioning = grafana_dir().join("provisioning");
    let provider = std::fs::read_to_string(provisioning.join("dashboards/signalgate.yaml"))
        .expect("dashboard provider");
    assert!(provider.contains("type: file"), "{provider}");
    let path = provider
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))
        .expect("a path in the dashboard provider")
        .trim();
    // Grafana expands environment variables in provisioning files.
    let path = path.replace(
        "${GF_PATHS_PROVISIONING}",
        provisioning.to_str().expect("UTF-8 path"),
    );
    let dashboards = Path::new(&path);
    assert!(
        dashboards.join("signalgate.json").is_file(),
        "the provider path {path} does not hold signalgate.json"
    );
    let datasource =
        std::fs::read_to_string(provisioning.join("datasources/prometheus.yaml")).expect("ds");
    assert!(datasource.contains("type: prometheus"), "{datasource}");
}

#[test]
fn promtool_accepts_the_example_scrape_config() {
    let config = grafana_dir().join("prometheus/prometheus.yml");
    let output = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}); it comes with the Debian package prometheus: \
                 apt-get install -y --no-install-recommends prometheus"
            )
        });
    assert!(
        output.status.success(),
        "promtool check config {} failed:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("job_name: signalgate"), "{text}");
    assert!(
        text.contains("127.0.0.1:9464"),
        "the default --metrics-listen"
    );
}
