//! The benchmark's picture, written as SVG by hand: the CDFs of P1's creation→Running
//! latencies of both setups (and the floor), and a stacked bar of the mean per-phase
//! breakdown of a pod start. Hand-written rather than drawn with a plotting crate: two
//! polylines and a few rectangles do not justify a dependency tree built on every run.

use std::fmt::Write;

/// One latency distribution (seconds) with its legend and colour.
pub struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub samples: &'a [f64],
}

/// One stacked bar: a label and (phase, mean seconds) parts.
pub struct Bar<'a> {
    pub label: &'a str,
    pub parts: &'a [(String, f64)],
}

const W: f64 = 900.0;
const PLOT_H: f64 = 380.0;
const BAR_H: f64 = 34.0;
const LEFT: f64 = 190.0;
const RIGHT: f64 = 40.0;
const PALETTE: &[&str] = &[
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

pub fn render(title: &str, series: &[Series], bars: &[Bar]) -> String {
    let bars_h = 90.0 + bars.len() as f64 * (BAR_H + 26.0) + 40.0;
    let h = 60.0 + PLOT_H + 60.0 + bars_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="17" text-anchor="middle">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    cdf(&mut s, series, 60.0);
    stacked(&mut s, bars, 60.0 + PLOT_H + 70.0);
    s.push_str("</svg>\n");
    s
}

/// Overlaid empirical CDFs on a linear time axis from 0 to the largest p99 of the
/// series: the few slowest samples of a noisy run would otherwise squeeze the rest
/// into the left edge. Samples past the axis are drawn at its end, and a note says so.
fn cdf(s: &mut String, series: &[Series], top: f64) {
    let (x0, x1, y0, y1) = (LEFT - 120.0, W - RIGHT, top + PLOT_H - 40.0, top + 10.0);
    let p99 = |samples: &[f64]| {
        let mut v = samples.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let max = series
        .iter()
        .map(|se| p99(se.samples))
        .fold(0.0f64, f64::max);
    let xmax = nice_ceiling(max.max(0.001));
    let clipped = series
        .iter()
        .flat_map(|se| se.samples.iter())
        .filter(|v| **v > xmax)
        .count();
    if clipped > 0 {
        let _ = writeln!(
            s,
            r#"<text x="{x1}" y="{}" text-anchor="end" font-size="11">{clipped} sample(s) past {} s drawn at the edge</text>"#,
            y0 + 38.0,
            trim(xmax)
        );
    }
    let sx = |v: f64| x0 + (x1 - x0) * v.min(xmax) / xmax;
    let sy = |p: f64| y0 - (y0 - y1) * p;
    axis(s, x0, x1, y0, y1, xmax, "creation → Running (s)");
    for p in [0.25, 0.5, 0.75, 0.99, 1.0] {
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{p}</text>"##,
            y = sy(p),
            tx = x0 - 6.0,
            ty = sy(p) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" transform="rotate(-90 {} {})" text-anchor="middle">fraction of pods</text>"#,
        x0 - 45.0,
        (y0 + y1) / 2.0,
        x0 - 45.0,
        (y0 + y1) / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let mut v = se.samples.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len() as f64;
        let mut pts = format!("{},{}", sx(0.0), sy(0.0));
        for (k, x) in v.iter().enumerate() {
            let _ = write!(
                pts,
                " {:.1},{:.1} {:.1},{:.1}",
                sx(*x),
                sy(k as f64 / n),
                sx(*x),
                sy((k + 1) as f64 / n)
            );
        }
        let _ = writeln!(
            s,
            r#"<polyline points="{pts}" fill="none" stroke="{}" stroke-width="2"/>"#,
            se.color
        );
        let ly = y1 + 10.0 + i as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{} (n={})</text>"#,
            x1 - 260.0,
            x1 - 235.0,
            se.color,
            x1 - 228.0,
            ly + 4.0,
            esc(se.label),
            v.len()
        );
    }
}

fn axis(s: &mut String, x0: f64, x1: f64, y0: f64, y1: f64, xmax: f64, label: &str) {
    let _ = writeln!(
        s,
        r#"<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="black"/><line x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}" stroke="black"/>"#
    );
    for k in 0..=5 {
        let v = xmax * k as f64 / 5.0;
        let x = x0 + (x1 - x0) * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" x2="{x}" y1="{y0}" y2="{}" stroke="black"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            y0 + 5.0,
            y0 + 20.0,
            trim(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y0 + 38.0,
        esc(label)
    );
}

/// Horizontal stacked bars of mean seconds per phase, one per setup, on a shared axis.
fn stacked(s: &mut String, bars: &[Bar], top: f64) {
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{top}" font-size="15" text-anchor="middle">Mean pod start by phase (P1; from the nodes' runtime metrics, rest = create call → Running seen minus the phases)</text>"#,
        W / 2.0
    );
    let total = bars
        .iter()
        .map(|b| b.parts.iter().map(|p| p.1.max(0.0)).sum::<f64>())
        .fold(0.0f64, f64::max);
    let xmax = nice_ceiling(total.max(0.001));
    let (x0, x1) = (LEFT, W - RIGHT);
    let sx = |v: f64| (x1 - x0) * v / xmax;
    let mut names: Vec<&str> = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        let y = top + 20.0 + i as f64 * (BAR_H + 26.0);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            x0 - 8.0,
            y + BAR_H / 2.0 + 4.0,
            esc(b.label)
        );
        let mut x = x0;
        for (name, v) in b.parts.iter() {
            let idx = match names.iter().position(|n| n == name) {
                Some(i) => i,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            };
            let w = sx(v.max(0.0));
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="{BAR_H}" fill="{}"><title>{}: {:.1} ms</title></rect>"#,
                PALETTE[idx % PALETTE.len()],
                esc(name),
                v * 1000.0
            );
            if w > 38.0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11" fill="white">{:.0} ms</text>"#,
                    x + w / 2.0,
                    y + BAR_H / 2.0 + 4.0,
                    v * 1000.0
                );
            }
            x += w;
        }
    }
    let ay = top + 20.0 + bars.len() as f64 * (BAR_H + 26.0);
    for k in 0..=5 {
        let v = xmax * k as f64 / 5.0;
        let x = x0 + (x1 - x0) * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" x2="{x}" y1="{}" y2="{ay}" stroke="black"/><text x="{x}" y="{}" text-anchor="middle">{} s</text>"#,
            ay - 5.0,
            ay + 15.0,
            trim(v)
        );
    }
    let mut lx = 20.0;
    let ly = ay + 40.0;
    for (i, n) in names.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{ly}">{}</text>"#,
            ly - 10.0,
            PALETTE[i % PALETTE.len()],
            lx + 16.0,
            esc(n)
        );
        lx += 24.0 + 7.5 * n.len() as f64;
    }
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn trim(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0.37), 0.5);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
    }

    #[test]
    fn renders_a_closed_svg_document() {
        let parts = vec![("sandbox".to_string(), 0.1), ("start".to_string(), 0.05)];
        let svg = render(
            "t <x>",
            &[Series {
                label: "gantry",
                color: "#000",
                samples: &[0.1, 0.2],
            }],
            &[Bar {
                label: "gantry",
                parts: &parts,
            }],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;x&gt;") && svg.contains("polyline"));
    }
}
