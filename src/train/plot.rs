//! A loss curve as a standalone SVG: training loss (moving average) and validation loss against
//! the step, on a logarithmic loss axis.

use std::fmt::Write as _;

/// One logged step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossPoint {
    /// Optimiser step.
    pub step: usize,
    /// Training loss of that step's batch.
    pub train: f64,
    /// Validation loss, when measured at that step.
    pub val: Option<f64>,
}

/// Renders the curves to SVG text (`width × height` pixels).
pub fn loss_svg(points: &[LossPoint], title: &str, width: f64, height: f64) -> String {
    let (ml, mr, mt, mb) = (70.0, 20.0, 36.0, 44.0);
    let (pw, ph) = (width - ml - mr, height - mt - mb);
    let train: Vec<&LossPoint> = points.iter().filter(|p| p.train.is_finite()).collect();
    let smooth: Vec<(usize, f64)> = {
        let k = (train.len() / 50).clamp(1, 100);
        train
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let lo = i.saturating_sub(k - 1);
                let win = &train[lo..=i];
                (
                    p.step,
                    win.iter().map(|q| q.train).sum::<f64>() / win.len() as f64,
                )
            })
            .collect()
    };
    let vals: Vec<(usize, f64)> = points
        .iter()
        .filter_map(|p| p.val.map(|v| (p.step, v)))
        .collect();
    let all = smooth
        .iter()
        .chain(&vals)
        .map(|p| p.1)
        .filter(|v| *v > 0.0 && v.is_finite());
    let (mut lo, mut hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.1, 1.0);
    }
    let (llo, lhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let max_step = points.last().map_or(1, |p| p.step.max(1)) as f64;
    let x = |s: usize| ml + pw * s as f64 / max_step;
    let y = |v: f64| mt + ph * (1.0 - (v.max(1e-12).log10() - llo) / (lhi - llo));
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{ml}" y="22" font-size="14">{title}</text>"#
    );
    for d in (llo as i32)..=(lhi as i32) {
        let yy = y(10f64.powi(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{ml}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">1e{d}</text>"##,
            ml + pw,
            ml - 6.0,
            yy + 4.0
        );
    }
    for i in 0..=4 {
        let s = (max_step * f64::from(i) / 4.0) as usize;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{s}</text>"#,
            x(s),
            mt + ph + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">step</text>"#,
        ml + pw / 2.0,
        height - 6.0
    );
    let path = |pts: &[(usize, f64)]| {
        pts.iter()
            .map(|(s, v)| format!("{:.1},{:.1}", x(*s), y(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##,
        path(&smooth)
    );
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#d62728" stroke-width="2" points="{}"/>"##,
        path(&vals)
    );
    for (s, v) in &vals {
        let _ = writeln!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#d62728"/>"##,
            x(*s),
            y(*v)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" fill="#1f77b4">train (moving average)</text><text x="{}" y="{}" fill="#d62728">validation (EMA weights)</text>"##,
        ml + pw - 300.0,
        mt + 14.0,
        ml + pw - 140.0,
        mt + 14.0
    );
    svg.push_str("</svg>\n");
    svg
}
