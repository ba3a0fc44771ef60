//! The run report as one HTML page with inline SVG charts: latency over
//! time (p50 and p99 of polls and of deliveries, per second) and latency
//! histograms. No script, no external file: it opens anywhere.
//!
//! The charts are drawn here (a few polylines and rectangles) rather than
//! with a plotting crate: they need no fonts, no images, and stay small.

use std::fmt::Write as _;

use crate::run::{Bar, Report};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis (1, 2, 5 × 10^n).
fn nice_max(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if value <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// A number for an axis label: as many digits as it deserves.
fn short(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// An open `<svg>` of the page's width with `title` at its top.
fn svg_open(title: &str, height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\"><text x=\"{LEFT}\" y=\"18\" font-size=\"13\" \
         font-weight=\"bold\">{}</text>",
        escape(title)
    )
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

fn line_chart(title: &str, y_label: &str, series: &[Series<'_>]) -> String {
    if series.iter().all(|s| s.points.is_empty()) {
        return svg_open(title, 60.0)
            + &format!("<text x=\"{LEFT}\" y=\"45\">no samples</text></svg>");
    }
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |v: f64| LEFT + v / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let mut svg = svg_open(title, HEIGHT);
    for i in 0..=4 {
        let value = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(value) + 4.0,
            short(value),
            y0 = y(value),
        );
    }
    for i in 0..=5 {
        let value = x_max * f64::from(i) / 5.0;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{value:.0}</text>",
            x(value),
            HEIGHT - BOTTOM + 16.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">seconds since start</text>\
         <text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"18\" fill=\"{}\">{}</text>",
            s.color,
            points.join(" "),
            WIDTH - RIGHT - 200.0 + 100.0 * i as f64,
            s.color,
            escape(s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn bar_chart(title: &str, bars: &[Bar]) -> String {
    let mut svg = svg_open(title, HEIGHT);
    if bars.is_empty() {
        let _ = write!(svg, "<text x=\"{LEFT}\" y=\"60\">no samples</text></svg>");
        return svg;
    }
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let count_max = nice_max(bars.iter().map(|b| b.count as f64).fold(0.0, f64::max));
    let width = plot_w / bars.len() as f64;
    for i in 0..=4 {
        let value = count_max * f64::from(i) / 4.0;
        let y0 = TOP + plot_h - value / count_max * plot_h;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{value}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y0 + 4.0
        );
    }
    let label_every = (bars.len() / 10).max(1);
    for (i, bar) in bars.iter().enumerate() {
        let h = bar.count as f64 / count_max * plot_h;
        let x0 = LEFT + i as f64 * width;
        let _ = write!(
            svg,
            "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#3b5bdb\">\
             <title>≤ {} ms: {}</title></rect>",
            TOP + plot_h - h,
            (width - 1.0).max(1.0),
            bar.upper_ms,
            bar.count
        );
        if i % label_every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x0 + width / 2.0,
                HEIGHT - BOTTOM + 16.0,
                short(bar.upper_ms)
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latency, ms (log scale: each bar up to twice the previous)</text></svg>",
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0
    );
    svg
}

/// The whole report page.
pub fn html(report: &Report) -> String {
    let timeline = &report.timeline;
    let points = |f: fn(&crate::run::TimelinePoint) -> (u64, f64)| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter(|p| f(p).0 > 0)
            .map(|p| (p.second as f64, f(p).1))
            .collect()
    };
    let poll_chart = line_chart(
        "Poll latency over time",
        "ms",
        &[
            Series {
                name: "p50",
                color: "#2f9e44",
                points: points(|p| (p.polls, p.poll_p50_ms)),
            },
            Series {
                name: "p99",
                color: "#c92a2a",
                points: points(|p| (p.polls, p.poll_p99_ms)),
            },
            // Beside the polls: when this line follows the p99, the load
            // generator made the latency, not the server.
            Series {
                name: "client lag (max)",
                color: "#868e96",
                points: points(|p| (p.polls, p.client_lag_max_ms)),
            },
        ],
    );
    let delivery_chart = line_chart(
        "Delivery latency over time (send start to arrival)",
        "ms",
        &[
            Series {
                name: "p50",
                color: "#2f9e44",
                points: points(|p| (p.deliveries, p.delivery_p50_ms)),
            },
            Series {
                name: "p99",
                color: "#c92a2a",
                points: points(|p| (p.deliveries, p.delivery_p99_ms)),
            },
        ],
    );
    let table = crate::run::table(report);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Chatty bench: {name}</title></head>\
         <body style=\"font-family:sans-serif;max-width:800px;margin:2em auto\">\
         <h1>Chatty bench: {name}</h1><p>{description}</p><pre>{table}</pre>\
         {poll_chart}{delivery_chart}{poll_bars}{delivery_bars}</body></html>\n",
        name = escape(&report.scenario.name),
        description = escape(&report.scenario.description),
        table = escape(&table),
        poll_bars = bar_chart("Poll latency histogram", &report.poll_histogram),
        delivery_bars = bar_chart("Delivery latency histogram", &report.delivery_histogram),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(17.0), 20.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(nice_max(0.04), 0.05);
    }

    #[test]
    fn text_from_scenario_files_is_escaped() {
        assert_eq!(
            escape("<b>\"x\" & y</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; y&lt;/b&gt;"
        );
    }
}
