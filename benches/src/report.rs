//! The benchmark report: reads `run.sh`'s result lines (one JSON object per scenario and
//! server) and renders
//!
//! * the target table (met / missed), the same rules as README's "Performance" table;
//! * a self-contained HTML page with inline SVG charts drawn here: receive-latency CDFs of
//!   the ceiling and Palaver side by side per fan-out scenario, deliveries/s and deliveries
//!   per server CPU-second, memory per idle socket. No scripts, fonts or anything fetched:
//!   the page opens offline.
//!
//! Result lines recorded before `receive_cdf_ms` existed still render: their CDF is drawn
//! through the four summary points (p50, p90, p99, max) and marked as such.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde_json::Value;

/// Result lines of one run, in file order.
#[derive(Debug)]
pub struct Run {
    lines: Vec<Value>,
}

impl Run {
    /// Parses JSON lines; blank lines are skipped.
    pub fn parse(text: &str) -> Result<Run> {
        let lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}: not JSON", i + 1)))
            .collect::<Result<Vec<Value>>>()?;
        Ok(Run { lines })
    }

    /// The last successful result of `kind` (`ceiling` / `palaver`) for `label`.
    pub fn pick(&self, kind: &str, label: &str) -> Option<&Value> {
        self.lines.iter().rev().find(|l| {
            l["target_kind"] == kind && l["label"] == label && l.get("error").is_none_or(Value::is_null)
        })
    }

    /// Whether Palaver ran `label` in this run (successfully or not).
    fn has_palaver(&self, label: &str) -> bool {
        self.lines.iter().any(|l| l["label"] == label && l["target_kind"] == "palaver")
    }

    fn has_label(&self, label: &str) -> bool {
        self.lines.iter().any(|l| l["label"] == label)
    }

    /// Labels of the fan-out results, fewest senders first.
    pub fn fanout_labels(&self) -> Vec<String> {
        let mut found: Vec<(u64, String)> = Vec::new();
        for l in &self.lines {
            if l["scenario"] != "fanout" {
                continue;
            }
            let (Some(label), senders) = (l["label"].as_str(), l["senders"].as_u64().unwrap_or(0)) else {
                continue;
            };
            if !found.iter().any(|(_, x)| x == label) {
                found.push((senders, label.to_owned()));
            }
        }
        found.sort();
        found.into_iter().map(|(_, l)| l).collect()
    }

    /// Lines that record a failure (`error`), as `kind / label`.
    fn failures(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.get("error").is_some_and(|e| !e.is_null()))
            .map(|l| {
                format!("{} / {}: {}", str_of(&l["target_kind"]), str_of(&l["label"]), str_of(&l["error"]))
            })
            .collect()
    }

    fn time_span(&self) -> Option<(String, String)> {
        let mut at: Vec<&str> = self.lines.iter().filter_map(|l| l["at"].as_str()).collect();
        at.sort_unstable();
        Some(((*at.first()?).to_owned(), (*at.last()?).to_owned()))
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".to_owned(),
        other => other.to_string(),
    }
}

/// A number at a dotted path (`recv_latency_ms.p99`).
fn num(v: Option<&Value>, path: &str) -> Option<f64> {
    let mut cur = v?;
    for key in path.split('.') {
        cur = cur.get(key)?;
    }
    cur.as_f64()
}

// ---- targets -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Met,
    Missed,
    /// A figure the rule needs is not in the run (a failed or skipped scenario).
    NoData,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Missed => "MISSED",
            Status::NoData => "no data",
        }
    }
}

/// One row of the target table.
#[derive(Debug, Clone)]
pub struct Check {
    pub scenario: String,
    pub target: String,
    pub measured: String,
    pub status: Status,
}

fn check(scenario: &str, target: &str, measured: String, ok: Option<bool>) -> Check {
    let status = match ok {
        Some(true) => Status::Met,
        Some(false) => Status::Missed,
        None => Status::NoData,
    };
    Check { scenario: scenario.to_owned(), target: target.to_owned(), measured, status }
}

/// `palaver / ceiling ≤ limit` (or `≥ limit` when `higher_is_better`).
fn ratio_check(
    scenario: &str,
    target: &str,
    palaver: Option<f64>,
    ceiling: Option<f64>,
    limit: f64,
    higher_is_better: bool,
    unit: &str,
) -> Check {
    match (palaver, ceiling) {
        (Some(p), Some(c)) if c > 0.0 => {
            let r = p / c;
            let ok = if higher_is_better { r >= limit } else { r <= limit };
            let measured = format!("{}{unit} vs {}{unit} = {:.2}×", fmt_num(p), fmt_num(c), r);
            check(scenario, target, measured, Some(ok))
        }
        (p, c) => check(scenario, target, format!("palaver {}, reference {}", opt_num(p), opt_num(c)), None),
    }
}

/// `value ≤ limit` style checks on Palaver's own figure.
fn value_check(
    scenario: &str,
    target: &str,
    value: Option<f64>,
    unit: &str,
    ok: impl Fn(f64) -> bool,
) -> Check {
    match value {
        Some(v) => check(scenario, target, format!("{}{unit}", fmt_num(v)), Some(ok(v))),
        None => check(scenario, target, "not measured".to_owned(), None),
    }
}

fn opt_num(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "n/a".to_owned())
}

/// Fan-outs with at least this many senders (× 5/s to 1 000 receivers: 1 M deliveries/s
/// offered) count as saturation.
const SATURATION_SENDERS: u64 = 200;

/// Evaluates README's performance targets against a run. Rows appear only for scenarios
/// the run contains (so an `ONLY=` subset gives a short table); a rule whose figures are
/// missing (a failed loadgen run, no ceiling counterpart) says "no data".
///
/// * fan-out, fewest senders (`fanout-s$SENDERS`): 0 lost; recv p99 ≤ 1.2 × ceiling;
///   send→ack p99 ≤ 1.5 × ceiling.
/// * every other fan-out: all acked and delivered; below saturation (e.g. 100 senders)
///   send→ack p99 ≤ 1.5 × ceiling and deliveries/s ≥ 0.9 × ceiling; at saturation (200+
///   senders) deliveries/s ≥ 1.0 × ceiling.
/// * every fan-out: deliveries per server CPU-second ≥ 0.9 × ceiling (≥ 1.0 × at saturation).
/// * idle: 0 failures; connect ≤ 1.3 × ceiling; ≤ 20 KiB RSS per socket.
/// * presence: quiet within 5 s; ≤ 10 presence frames per socket.
/// * history: ≥ 2 × the same endpoint with the in-memory page off.
/// * ingest: nothing acked missing from the history.
/// * recovery: no gaps, duplicates or positions out of order; the steady receivers' p99 and
///   deliveries per receiver within 10 % of plain fan-out at the same senders; their p99 for
///   messages sent in a wave within 10 % of the same run's between waves.
pub fn evaluate(run: &Run) -> Vec<Check> {
    let mut out = Vec::new();
    let fanouts = run.fanout_labels();
    let low = fanouts.first();

    // Second-round targets (issue 15), against the gathering ceiling: latency at moderate
    // load (the lowest sender count), throughput and efficiency at saturation (200+ senders),
    // the commit path's ack latency at 100 senders, and every run all acked and delivered.
    for label in &fanouts {
        let (p, c) = (run.pick("palaver", label), run.pick("ceiling", label));
        if !run.has_palaver(label) {
            continue; // a ceiling-only run: nothing to judge
        }
        let senders = p.and_then(|l| l["senders"].as_u64()).unwrap_or(0);
        let saturated = senders >= SATURATION_SENDERS;
        if Some(label) == low {
            let lost = num(p, "lost");
            out.push(check(
                label,
                "0 lost",
                match (lost, num(p, "expected")) {
                    (Some(l), Some(e)) => format!("{} lost of {} expected", fmt_num(l), fmt_num(e)),
                    _ => "not measured".to_owned(),
                },
                lost.map(|l| l == 0.0),
            ));
            out.push(ratio_check(
                label,
                "recv p99 ≤ 1.2 × ceiling",
                num(p, "recv_latency_ms.p99"),
                num(c, "recv_latency_ms.p99"),
                1.2,
                false,
                " ms",
            ));
        } else {
            let (sent, acked, lost) = (num(p, "sent"), num(p, "acked"), num(p, "lost"));
            out.push(check(
                label,
                "all acked and delivered",
                match (sent, acked, lost) {
                    (Some(s), Some(a), Some(l)) => {
                        format!("{} of {} acked, {} lost", fmt_num(a), fmt_num(s), fmt_num(l))
                    }
                    _ => "not measured".to_owned(),
                },
                match (sent, acked, lost) {
                    (Some(s), Some(a), Some(l)) => Some(a == s && l == 0.0),
                    _ => None,
                },
            ));
            let floor = if saturated { 1.0 } else { 0.9 };
            out.push(ratio_check(
                label,
                if saturated { "deliveries/s ≥ 1.0 × ceiling" } else { "deliveries/s ≥ 0.9 × ceiling" },
                num(p, "deliveries_per_s"),
                num(c, "deliveries_per_s"),
                floor,
                true,
                "/s",
            ));
        }
        // The commit path's latency: at moderate load and at 100 senders, not at saturation.
        if !saturated {
            out.push(ratio_check(
                label,
                "send→ack p99 ≤ 1.5 × ceiling",
                num(p, "ack_latency_ms.p99"),
                num(c, "ack_latency_ms.p99"),
                1.5,
                false,
                " ms",
            ));
        }
        out.push(ratio_check(
            label,
            if saturated {
                "deliveries per server CPU-s ≥ 1.0 × ceiling"
            } else {
                "deliveries per server CPU-s ≥ 0.9 × ceiling"
            },
            num(p, "deliveries_per_cpu_s"),
            num(c, "deliveries_per_cpu_s"),
            if saturated { 1.0 } else { 0.9 },
            true,
            "",
        ));
    }

    if run.has_palaver("idle") {
        let (p, c) = (run.pick("palaver", "idle"), run.pick("ceiling", "idle"));
        out.push(value_check("idle", "0 failures", num(p, "failures"), " failures", |f| f == 0.0));
        out.push(ratio_check(
            "idle",
            "connect all ≤ 1.3 × ceiling",
            num(p, "connect_total_s"),
            num(c, "connect_total_s"),
            1.3,
            false,
            " s",
        ));
        out.push(value_check(
            "idle",
            "≤ 20 KiB RSS per socket",
            num(p, "rss_per_socket_kb"),
            " KiB",
            |k| k <= 20.0,
        ));
    }

    if run.has_palaver("presence") {
        let p = run.pick("palaver", "presence");
        out.push(value_check(
            "presence",
            "quiet within 5 s of the last connect",
            num(p, "quiet_after_s"),
            " s",
            |s| s <= 5.0,
        ));
        out.push(value_check(
            "presence",
            "≤ 10 presence frames per socket (max)",
            num(p, "presence_frames_per_socket.max"),
            " frames",
            |f| f <= 10.0,
        ));
    }

    if run.has_palaver("history") || run.has_palaver("history-nocache") {
        out.push(ratio_check(
            "history",
            "requests/s ≥ 2 × with the in-memory page off",
            num(run.pick("palaver", "history"), "requests_per_s"),
            num(run.pick("palaver", "history-nocache"), "requests_per_s"),
            2.0,
            true,
            "/s",
        ));
    }

    if run.has_palaver("ingest") {
        let p = run.pick("palaver", "ingest");
        let missing = num(p, "missing_after");
        out.push(check(
            "ingest",
            "nothing acked missing from the history",
            match missing {
                Some(m) => format!(
                    "{} missing; {} committed msg/s, ack p99 {} ms",
                    fmt_num(m),
                    opt_num(num(p, "committed_per_s")),
                    opt_num(num(p, "ack_latency_ms.p99"))
                ),
                None => "not measured".to_owned(),
            },
            missing.map(|m| m == 0.0),
        ));
    }

    if run.has_palaver("recovery") {
        let p = run.pick("palaver", "recovery");
        // replay_mismatches came later than the others: absent counts as none.
        let faults: Option<f64> = ["gaps", "duplicates", "cseq_not_rising"]
            .iter()
            .map(|k| num(p, k))
            .sum::<Option<f64>>()
            .map(|f| f + num(p, "replay_mismatches").unwrap_or(0.0));
        out.push(check(
            "recovery",
            "0 gaps, duplicates, positions out of order",
            faults.map(fmt_num).unwrap_or_else(|| "not measured".to_owned()),
            faults.map(|f| f == 0.0),
        ));
        let plain =
            p.and_then(|r| r["senders"].as_u64()).and_then(|s| run.pick("palaver", &format!("fanout-s{s}")));
        out.push(ratio_check(
            "recovery",
            "steady recv p99 ≤ 1.1 × plain fan-out",
            num(p, "steady.recv_latency_ms.p99"),
            num(plain, "recv_latency_ms.p99"),
            1.1,
            false,
            " ms",
        ));
        // The same comparison within one run: what the waves cost the others, free of the
        // run-to-run spread of a shared machine (which moves p99 by ±25 % between runs).
        out.push(ratio_check(
            "recovery",
            "steady recv p99, sent in a wave ≤ 1.1 × sent between waves",
            num(p, "steady.recv_latency_in_waves_ms.p99"),
            num(p, "steady.recv_latency_between_waves_ms.p99"),
            1.1,
            false,
            " ms",
        ));
        let plain_per_receiver = match (num(plain, "deliveries_per_s"), num(plain, "receivers")) {
            (Some(d), Some(r)) if r > 0.0 => Some(d / r),
            _ => None,
        };
        out.push(ratio_check(
            "recovery",
            "steady deliveries/s per receiver ≥ 0.9 × plain fan-out",
            num(p, "steady.deliveries_per_s_per_receiver"),
            plain_per_receiver,
            0.9,
            true,
            "/s",
        ));
    }
    out
}

/// The target table as aligned plain text (for the terminal and `latest-summary.txt`).
pub fn targets_text(checks: &[Check]) -> String {
    let head = ["scenario", "target", "measured", "status"];
    let rows: Vec<[&str; 4]> = checks
        .iter()
        .map(|c| [c.scenario.as_str(), c.target.as_str(), c.measured.as_str(), c.status.as_str()])
        .collect();
    let width =
        |i: usize| rows.iter().map(|r| r[i].chars().count()).chain([head[i].len()]).max().unwrap_or(0);
    let widths = [width(0), width(1), width(2)];
    let mut s = String::new();
    for r in std::iter::once(&head).chain(&rows) {
        for (i, w) in widths.iter().enumerate() {
            let pad = w - r[i].chars().count();
            let _ = write!(s, "{}{}  ", r[i], " ".repeat(pad));
        }
        let _ = writeln!(s, "{}", r[3]);
    }
    s
}

// ---- formatting --------------------------------------------------------------------------

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Readable numbers: thousands separated from 1,000, else three significant digits.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let n = x.round() as i64;
        let digits = n.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(ch);
        }
        if n < 0 { format!("-{grouped}") } else { grouped }
    } else if a >= 100.0 || x == x.trunc() {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// An axis label for 10^k × {1, 2, 5}: "0.01", "0.5", "20", "1,000".
fn fmt_tick(v: f64) -> String {
    if v >= 1.0 { fmt_num(v.round()) } else { format!("{}", (v * 1e6).round() / 1e6) }
}

// ---- HTML --------------------------------------------------------------------------------

const PALAVER_COLOR: &str = "#1f6fb4";
const CEILING_COLOR: &str = "#e07b10";
const FONT: &str = "font-family=\"sans-serif\" font-size=\"11\"";

/// Renders the whole page. `source` names the result file, `note` (may be empty) says
/// where and how it was measured.
pub fn render_html(run: &Run, source: &str, note: &str) -> String {
    let checks = evaluate(run);
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Palaver benchmark report</title>\n<style>\n\
         body{font-family:sans-serif;margin:2em auto;max-width:1000px;color:#222;line-height:1.4}\n\
         table{border-collapse:collapse;margin:0.5em 0 1.5em}\n\
         th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\n\
         td.n{text-align:right;font-variant-numeric:tabular-nums}\n\
         th{background:#f3f3f3}\n\
         .met{color:#176b1d;font-weight:bold}.missed{color:#b00020;font-weight:bold}.nodata{color:#777}\n\
         .note{color:#555;font-size:90%}\n\
         svg{display:block;margin:0.3em 0 1em}\n\
         </style>\n</head>\n<body>\n<h1>Palaver vs. ceiling</h1>\n",
    );
    let span = run.time_span().map(|(a, b)| format!(", {a} – {b}")).unwrap_or_default();
    let _ = writeln!(
        h,
        "<p class=\"note\">Result file <code>{}</code>: {} result lines{}. Ratios are palaver/ceiling; \
         the ceiling is the thinnest broadcast server on Palaver's transport crates.</p>",
        esc(source),
        run.lines.len(),
        esc(&span)
    );
    if !note.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", esc(note));
    }
    let failures = run.failures();
    if !failures.is_empty() {
        h.push_str("<p class=\"missed\">Failed runs:</p>\n<ul>\n");
        for f in &failures {
            let _ = writeln!(h, "<li>{}</li>", esc(f));
        }
        h.push_str("</ul>\n");
    }

    // Targets.
    let met = checks.iter().filter(|c| c.status == Status::Met).count();
    let _ = writeln!(h, "<h2 id=\"targets\">Targets ({met} of {} met)</h2>", checks.len());
    if checks.is_empty() {
        h.push_str("<p>No Palaver results with a target in this run.</p>\n");
    } else {
        h.push_str("<table>\n<tr><th>scenario</th><th>target</th><th>measured</th><th></th></tr>\n");
        for c in &checks {
            let class = match c.status {
                Status::Met => "met",
                Status::Missed => "missed",
                Status::NoData => "nodata",
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
                esc(&c.scenario),
                esc(&c.target),
                esc(&c.measured),
                c.status.as_str()
            );
        }
        h.push_str("</table>\n");
    }

    // Latency CDFs.
    let fanouts = run.fanout_labels();
    if !fanouts.is_empty() {
        h.push_str(
            "<h2 id=\"latency\">Receive latency</h2>\n<p class=\"note\">Send → arrival on a receiving \
             socket, every delivery. Each panel draws one server's distribution in colour and the other's \
             in grey; both panels share their axes. The latency axis is logarithmic; the vertical axis \
             stretches the tail (equal steps for 90 %, 99 %, 99.9 %, …).</p>\n",
        );
        for label in &fanouts {
            let (p, c) = (run.pick("palaver", label), run.pick("ceiling", label));
            let any = p.or(c);
            let params = any
                .map(|l| {
                    format!(
                        " — {} receivers, {} senders × {}/s for {} s",
                        opt_num(num(Some(l), "receivers")),
                        opt_num(num(Some(l), "senders")),
                        opt_num(num(Some(l), "rate")),
                        opt_num(num(Some(l), "duration_s"))
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(h, "<h3>{}{}</h3>", esc(label), esc(&params));
            h.push_str(&cdf_chart("cdf", label, "receive", p, c, "receive_cdf_ms", "recv_latency_ms"));
            if [p, c].iter().any(|l| num(*l, "ack_latency_ms.count").is_some_and(|n| n > 0.0)) {
                let _ = writeln!(
                    h,
                    "<p class=\"note\">Send → ack (<code>message_sent</code>) on the senders:</p>"
                );
                h.push_str(&cdf_chart("cdf-ack", label, "ack", p, c, "ack_cdf_ms", "ack_latency_ms"));
            }
        }

        // Throughput.
        h.push_str(
            "<h2 id=\"throughput\">Deliveries</h2>\n<p class=\"note\">Messages written to receiving \
             sockets per second of the delivery span, and per second of server CPU (user + system).</p>\n",
        );
        h.push_str("<table>\n<tr><th>scenario</th><th>metric</th><th>ceiling</th><th>palaver</th><th>palaver/ceiling</th></tr>\n");
        for label in &fanouts {
            for (name, key) in [
                ("deliveries/s", "deliveries_per_s"),
                ("deliveries per CPU-s", "deliveries_per_cpu_s"),
                ("recv p50 ms", "recv_latency_ms.p50"),
                ("recv p99 ms", "recv_latency_ms.p99"),
                ("ack p99 ms", "ack_latency_ms.p99"),
                ("lost", "lost"),
            ] {
                let (c, p) = (num(run.pick("ceiling", label), key), num(run.pick("palaver", label), key));
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    esc(label),
                    opt_num(c),
                    opt_num(p),
                    ratio_text(p, c)
                );
            }
        }
        h.push_str("</table>\n");
        let rows = |key: &str| -> Vec<(String, Option<f64>, Option<f64>)> {
            fanouts
                .iter()
                .map(|l| (l.clone(), num(run.pick("ceiling", l), key), num(run.pick("palaver", l), key)))
                .collect()
        };
        h.push_str(&bar_chart("bars-throughput", "deliveries/s", &rows("deliveries_per_s"), None));
        h.push_str(&bar_chart(
            "bars-efficiency",
            "deliveries per server CPU-second",
            &rows("deliveries_per_cpu_s"),
            None,
        ));
    }

    // Memory.
    if run.has_label("idle") {
        let (p, c) = (run.pick("palaver", "idle"), run.pick("ceiling", "idle"));
        h.push_str("<h2 id=\"memory\">Memory per idle socket</h2>\n");
        let _ = writeln!(
            h,
            "<p class=\"note\">Server RSS growth while holding {} authenticated, subscribed sockets, per socket \
             (dashed: the 32 KiB target).</p>",
            opt_num(num(p.or(c), "connected"))
        );
        h.push_str(&bar_chart(
            "bars-memory",
            "KiB per idle socket",
            &[("idle".to_owned(), num(c, "rss_per_socket_kb"), num(p, "rss_per_socket_kb"))],
            Some(32.0),
        ));
        h.push_str(
            "<table>\n<tr><th>metric</th><th>ceiling</th><th>palaver</th><th>palaver/ceiling</th></tr>\n",
        );
        for (name, key) in [
            ("sockets connected", "connected"),
            ("failures", "failures"),
            ("KiB per socket", "rss_per_socket_kb"),
            ("RSS before, KiB", "server_rss_kb.before"),
            ("RSS after, KiB", "server_rss_kb.after"),
            ("connect all, s", "connect_total_s"),
            ("connect p99, ms", "connect_ms.p99"),
        ] {
            let (cv, pv) = (num(c, key), num(p, key));
            let _ = writeln!(
                h,
                "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                opt_num(cv),
                opt_num(pv),
                ratio_text(pv, cv)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn ratio_text(p: Option<f64>, c: Option<f64>) -> String {
    match (p, c) {
        (Some(p), Some(c)) if c != 0.0 => format!("{:.2}", p / c),
        _ => "n/a".to_owned(),
    }
}

/// A CDF as `(quantile, ms)` points, and whether it came from the four summary figures only.
fn cdf_points(line: Option<&Value>, cdf_key: &str, summary_key: &str) -> Option<(Vec<(f64, f64)>, bool)> {
    let line = line?;
    if let Some(arr) = line.get(cdf_key).and_then(Value::as_array) {
        let pts: Vec<(f64, f64)> =
            arr.iter().filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?))).collect();
        if !pts.is_empty() {
            return Some((pts, false));
        }
    }
    let s = line.get(summary_key)?;
    if s.get("count").and_then(Value::as_f64).unwrap_or(0.0) == 0.0 {
        return None;
    }
    let pts: Vec<(f64, f64)> = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (1.0, "max")]
        .iter()
        .filter_map(|(q, k)| Some((*q, s.get(*k)?.as_f64()?)))
        .collect();
    (!pts.is_empty()).then_some((pts, true))
}

/// The tail-stretching vertical scale: −log10(1 − q), with q = 1 (the max) drawn at TOP.
const Q_TOP: f64 = 4.6;
fn q_scale(q: f64) -> f64 {
    if q >= 1.0 { Q_TOP } else { (-(1.0 - q).log10()).clamp(0.0, Q_TOP - 0.3) }
}

/// Two panels side by side (ceiling, palaver) sharing their axes.
fn cdf_chart(
    class: &str,
    label: &str,
    what: &str,
    palaver: Option<&Value>,
    ceiling: Option<&Value>,
    cdf_key: &str,
    summary_key: &str,
) -> String {
    let series = [
        ("ceiling", CEILING_COLOR, cdf_points(ceiling, cdf_key, summary_key)),
        ("palaver", PALAVER_COLOR, cdf_points(palaver, cdf_key, summary_key)),
    ];
    let all_ms: Vec<f64> = series
        .iter()
        .filter_map(|s| s.2.as_ref())
        .flat_map(|(p, _)| p.iter().map(|x| x.1.max(0.001)))
        .collect();
    let (lo, hi) = if all_ms.is_empty() {
        (0.0, 1.0)
    } else {
        let min = all_ms.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = all_ms.iter().cloned().fold(0.0, f64::max);
        let lo = min.log10().floor();
        (lo, max.log10().ceil().max(lo + 1.0))
    };
    let (pw, ph, ml, mr, mt, mb, gap) = (430.0, 250.0, 56.0, 12.0, 24.0, 38.0, 20.0);
    let width = 2.0 * (ml + pw + mr) + gap;
    let height = mt + ph + mb;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg class=\"{class}\" data-scenario=\"{}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{} latency CDF, {}\">",
        esc(label),
        esc(what),
        esc(label)
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let x0 = ml + i as f64 * (ml + pw + mr + gap);
        let xs = |ms: f64| x0 + (ms.max(0.001).log10() - lo) / (hi - lo) * pw;
        let ys = |q: f64| mt + ph - q_scale(q) / Q_TOP * ph;
        // Frame and grid.
        let _ = writeln!(
            s,
            "<rect x=\"{x0}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#999\"/>"
        );
        let mut decade = lo;
        while decade <= hi + 1e-9 {
            for m in [1.0, 2.0, 5.0] {
                let v = 10f64.powf(decade) * m;
                if v.log10() > hi + 1e-9 {
                    continue;
                }
                let x = xs(v);
                let stroke = if m == 1.0 { "#ccc" } else { "#eee" };
                let _ = writeln!(
                    s,
                    "<line x1=\"{x:.1}\" y1=\"{mt}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"{stroke}\"/>",
                    mt + ph
                );
                if m == 1.0 || (hi - lo) <= 2.0 {
                    let _ = writeln!(
                        s,
                        "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" {FONT}>{}</text>",
                        mt + ph + 14.0,
                        fmt_tick(v)
                    );
                }
            }
            decade += 1.0;
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" {FONT}>{} latency, ms (log)</text>",
            x0 + pw / 2.0,
            mt + ph + 30.0,
            esc(what)
        );
        for (q, text) in [
            (0.5, "50 %"),
            (0.9, "90 %"),
            (0.99, "99 %"),
            (0.999, "99.9 %"),
            (0.9999, "99.99 %"),
            (1.0, "max"),
        ] {
            let y = ys(q);
            let _ = writeln!(
                s,
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" {FONT}>{text}</text>",
                x0 + pw,
                x0 - 4.0,
                y + 4.0
            );
        }
        // The other server in grey, this one in colour on top.
        let other = &series[1 - i];
        for (pts, stroke, w, dash) in
            [(other.2.as_ref(), "#aaa", 1.5, " stroke-dasharray=\"4 3\""), (pts.as_ref(), *color, 2.2, "")]
        {
            if let Some((pts, _)) = pts {
                let path: Vec<String> =
                    pts.iter().map(|(q, ms)| format!("{:.1},{:.1}", xs(*ms), ys(*q))).collect();
                let _ = writeln!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{stroke}\" stroke-width=\"{w}\"{dash} points=\"{}\"/>",
                    path.join(" ")
                );
            }
        }
        let title = match pts {
            Some((p, summary_only)) => {
                let p99 = p.iter().find(|(q, _)| (*q - 0.99).abs() < 1e-9).map(|x| x.1);
                let max = p.last().map(|x| x.1);
                format!(
                    "{name}: p99 {} ms, max {} ms{}",
                    opt_num(p99),
                    opt_num(max),
                    if *summary_only { " (summary points only)" } else { "" }
                )
            }
            None => format!("{name}: no result"),
        };
        let _ = writeln!(
            s,
            "<text x=\"{x0}\" y=\"{}\" fill=\"{color}\" font-family=\"sans-serif\" font-size=\"13\" font-weight=\"bold\">{}</text>",
            mt - 8.0,
            esc(&title)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Horizontal bars, ceiling and palaver per row, with the ratio; `target` draws a dashed
/// vertical line at that value.
fn bar_chart(
    class: &str,
    title: &str,
    rows: &[(String, Option<f64>, Option<f64>)],
    target: Option<f64>,
) -> String {
    let max = rows.iter().flat_map(|r| [r.1, r.2]).flatten().chain(target).fold(0.0, f64::max);
    let max = if max > 0.0 { max * 1.15 } else { 1.0 };
    let (ml, bw, bar, row_gap, mt) = (110.0, 620.0, 16.0, 14.0, 26.0);
    let row_h = 2.0 * bar + row_gap;
    let height = mt + rows.len() as f64 * row_h + 10.0;
    let width = ml + bw + 140.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg class=\"{class}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let _ = writeln!(
        s,
        "<text x=\"0\" y=\"14\" font-family=\"sans-serif\" font-size=\"13\" font-weight=\"bold\">{}</text>\
         <text x=\"{}\" y=\"14\" fill=\"{CEILING_COLOR}\" {FONT}>■ ceiling</text>\
         <text x=\"{}\" y=\"14\" fill=\"{PALAVER_COLOR}\" {FONT}>■ palaver</text>",
        esc(title),
        ml + bw - 120.0,
        ml + bw - 50.0
    );
    for (i, (label, c, p)) in rows.iter().enumerate() {
        let y = mt + i as f64 * row_h;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" {FONT}>{}</text>",
            ml - 6.0,
            y + bar + 4.0,
            esc(label)
        );
        for (j, (v, color)) in [(c, CEILING_COLOR), (p, PALAVER_COLOR)].iter().enumerate() {
            let yb = y + j as f64 * bar;
            match v {
                Some(v) => {
                    let w = v / max * bw;
                    let _ = writeln!(
                        s,
                        "<rect x=\"{ml}\" y=\"{yb:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\
                         <text x=\"{:.1}\" y=\"{:.1}\" {FONT}>{}</text>",
                        bar - 2.0,
                        ml + w + 4.0,
                        yb + bar - 4.0,
                        fmt_num(*v)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "<text x=\"{}\" y=\"{:.1}\" fill=\"#777\" {FONT}>no result</text>",
                        ml + 4.0,
                        yb + bar - 4.0
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" {FONT}>palaver/ceiling {}</text>",
            ml + bw + 30.0,
            y + bar + 4.0,
            ratio_text(*p, *c)
        );
    }
    if let Some(t) = target {
        let x = ml + t / max * bw;
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#b00020\" stroke-dasharray=\"5 3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#b00020\" {FONT}>target {}</text>",
            mt - 4.0,
            height - 6.0,
            x + 3.0,
            height - 2.0,
            fmt_num(t)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fanout(kind: &str, label: &str, senders: u64, p99: f64, dps: f64, per_cpu: f64, cdf: bool) -> Value {
        let mut l = json!({
            "scenario": "fanout", "target": "http://127.0.0.1:1", "target_kind": kind, "label": label,
            "at": "2026-12-06T18:00:00Z", "receivers": 100, "senders": senders, "rate": 5.0, "duration_s": 10,
            "sent": 500, "acked": 500, "lost": 0, "expected": 50000,
            "deliveries_per_s": dps, "deliveries_per_cpu_s": per_cpu,
            "recv_latency_ms": {"count": 50000, "p50": p99 / 4.0, "p90": p99 / 2.0, "p99": p99, "max": p99 * 2.0, "mean": 1.0},
            "ack_latency_ms": {"count": 500, "p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0, "mean": 1.0},
        });
        if cdf {
            l["receive_cdf_ms"] = json!([[0.01, 0.1], [0.5, p99 / 4.0], [0.99, p99], [1.0, p99 * 2.0]]);
        }
        l
    }

    fn run_of(lines: &[Value]) -> Run {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        Run::parse(&text).unwrap()
    }

    fn sample() -> Run {
        run_of(&[
            fanout("ceiling", "fanout-s20", 20, 10.0, 10_000.0, 100_000.0, true),
            fanout("ceiling", "fanout-s100", 100, 50.0, 50_000.0, 200_000.0, false),
            json!({"scenario": "idle", "target_kind": "ceiling", "label": "idle", "connected": 5000,
                   "failures": 0, "connect_total_s": 1.0, "rss_per_socket_kb": 14.0}),
            fanout("ceiling", "fanout-s300", 300, 300.0, 900_000.0, 1_000_000.0, false),
            // recv p99 1.2× (met), per CPU-s 0.95× (met)
            fanout("palaver", "fanout-s20", 20, 12.0, 10_000.0, 95_000.0, true),
            // deliveries/s 0.8× (missed), per CPU-s 0.5× (missed)
            fanout("palaver", "fanout-s100", 100, 200.0, 40_000.0, 100_000.0, false),
            // deliveries/s 1.0× (met), per CPU-s 0.99× (missed: saturation needs 1.0×)
            fanout("palaver", "fanout-s300", 300, 400.0, 900_000.0, 990_000.0, false),
            json!({"scenario": "idle", "target_kind": "palaver", "label": "idle", "connected": 5000,
                   "failures": 0, "connect_total_s": 1.3, "rss_per_socket_kb": 20.5}),
            json!({"target_kind": "palaver", "label": "ingest", "error": "loadgen failed <script>"}),
        ])
    }

    fn status(checks: &[Check], scenario: &str, target_starts: &str) -> Status {
        checks
            .iter()
            .find(|c| c.scenario == scenario && c.target.starts_with(target_starts))
            .unwrap_or_else(|| panic!("no check {scenario} / {target_starts} in {checks:?}"))
            .status
    }

    #[test]
    fn targets_follow_the_readme_rules() {
        let checks = evaluate(&sample());
        assert_eq!(status(&checks, "fanout-s20", "0 lost"), Status::Met);
        assert_eq!(status(&checks, "fanout-s20", "recv p99"), Status::Met);
        assert_eq!(status(&checks, "fanout-s20", "send→ack"), Status::Met);
        assert_eq!(status(&checks, "fanout-s20", "deliveries per server CPU-s"), Status::Met);
        // Receive latency only on the low-sender fan-out; throughput on the others.
        assert!(!checks.iter().any(|c| c.scenario == "fanout-s100" && c.target.starts_with("recv p99")));
        assert_eq!(status(&checks, "fanout-s100", "all acked"), Status::Met);
        assert_eq!(status(&checks, "fanout-s100", "send→ack p99 ≤ 1.5"), Status::Met);
        assert_eq!(status(&checks, "fanout-s100", "deliveries/s ≥ 0.9"), Status::Missed);
        assert_eq!(status(&checks, "fanout-s100", "deliveries per server CPU-s ≥ 0.9"), Status::Missed);
        // Saturation: ≥ 1.0× on both, and no ack-latency target.
        assert_eq!(status(&checks, "fanout-s300", "deliveries/s ≥ 1.0"), Status::Met);
        assert_eq!(status(&checks, "fanout-s300", "deliveries per server CPU-s ≥ 1.0"), Status::Missed);
        assert!(!checks.iter().any(|c| c.scenario == "fanout-s300" && c.target.starts_with("send→ack")));
        assert_eq!(status(&checks, "idle", "0 failures"), Status::Met);
        assert_eq!(status(&checks, "idle", "connect all ≤ 1.3"), Status::Met); // 1.3×, inclusive
        assert_eq!(status(&checks, "idle", "≤ 20 KiB"), Status::Missed); // 20.5
        // A failed scenario is "no data", not met.
        assert_eq!(status(&checks, "ingest", "nothing acked missing"), Status::NoData);
        // Scenarios absent from the run get no rows.
        assert!(!checks.iter().any(|c| c.scenario == "presence" || c.scenario == "history"));
        let text = targets_text(&checks);
        assert!(text.contains("12 ms vs 10 ms = 1.20×"), "{text}");
        assert!(text.lines().all(|l| l.ends_with("met")
            || l.ends_with("MISSED")
            || l.ends_with("no data")
            || l.ends_with("status")));
    }

    #[test]
    fn ratio_limits_are_inclusive() {
        assert_eq!(ratio_check("s", "t", Some(15.0), Some(10.0), 1.5, false, "").status, Status::Met);
        assert_eq!(ratio_check("s", "t", Some(15.1), Some(10.0), 1.5, false, "").status, Status::Missed);
        assert_eq!(ratio_check("s", "t", Some(9.0), Some(10.0), 0.9, true, "").status, Status::Met);
        assert_eq!(ratio_check("s", "t", Some(1.0), None, 0.9, true, "").status, Status::NoData);
    }

    #[test]
    fn html_has_a_chart_per_fanout_and_nothing_external() {
        let html = render_html(&sample(), "results/<latest>.jsonl", "2-core VM & friends");
        assert_eq!(html.matches("<svg class=\"cdf\"").count(), 3, "one receive CDF per fan-out scenario");
        assert_eq!(html.matches("<svg class=\"cdf-ack\"").count(), 3);
        assert!(
            ["fanout-s20", "fanout-s100", "fanout-s300"]
                .iter()
                .all(|label| html.contains(&format!("data-scenario=\"{label}\"")))
        );
        assert!(html.contains("<svg class=\"bars-memory\""));
        assert!(html.contains("(summary points only)"), "fanout-s100 has no CDF: drawn from the summary");
        // Self-contained: no URLs (the result lines' server address is not shown either), no scripts.
        assert!(
            !html.contains("http:") && !html.contains("https:") && !html.contains("//"),
            "external reference"
        );
        assert!(!html.contains("<script"), "text from result lines must be escaped");
        assert!(html.contains("loadgen failed &lt;script&gt;"));
        assert!(html.contains("results/&lt;latest&gt;.jsonl") && html.contains("2-core VM &amp; friends"));
        assert!(html.contains("class=\"missed\">MISSED"));
    }

    #[test]
    fn parse_rejects_bad_lines_and_skips_blank_ones() {
        assert!(Run::parse("{}\n\nnot json\n").unwrap_err().to_string().contains("line 3"));
        assert_eq!(Run::parse("{}\n\n{}\n").unwrap().lines.len(), 2);
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(-1500.0), "-1,500");
        assert_eq!(fmt_num(999.6), "1000");
        assert_eq!(fmt_num(26.14), "26.1");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.1234), "0.123");
        assert_eq!(fmt_tick(0.1), "0.1");
        assert_eq!(fmt_tick(0.02), "0.02");
        assert_eq!(fmt_tick(1000.0), "1,000");
        assert_eq!(esc("<a href='x'>&\""), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;");
    }
}
