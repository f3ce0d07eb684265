//! SVG charts of the report (plotters, SVG backend): the scaling curves (new connections/s
//! against the number of services or published ports, netbpf against iptables; netbpf's
//! per-packet cost against the number of entries) and the per-scenario ratios.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use plotters::{coord::ranged1d::SegmentValue, prelude::*};

/// One line of a chart: its name and its (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// A line chart over a logarithmic x axis (counts from 1 on), y from 0.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> anyhow::Result<PathBuf> {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (0.8f64..x_max * 1.3).log_scale(),
            0f64..(y_max * 1.15).max(1.0),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(path.to_owned())
}

/// A horizontal bar per (label, value): how many times better netbpf is than the baseline
/// (1 = the same), a line at 1.
pub fn ratio_bars(path: &Path, title: &str, bars: &[(String, f64)]) -> anyhow::Result<PathBuf> {
    let n = bars.len().max(1) as i32;
    let x_max = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let height = 90 + 22 * n as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(380)
        .build_cartesian_2d(0f64..x_max, (0..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels
                .get((n - 1 - *i) as usize)
                .cloned()
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .x_desc("netbpf against the baseline, times better (median of the per-round ratios)")
        .x_label_formatter(&|x| format!("{x:.1}"))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .filter(|(_, b)| b.1.is_finite())
                .map(|(i, (_, v))| {
                    let row = n - 1 - i as i32;
                    let color = if *v >= 1.0 { COLORS[2] } else { COLORS[0] };
                    let mut bar = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(row)),
                            (*v, SegmentValue::Exact(row + 1)),
                        ],
                        color.mix(0.7).filled(),
                    );
                    bar.set_margin(3, 3, 0, 0);
                    bar
                }),
        )
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(1),
        )))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_kinds() {
        let dir = std::env::temp_dir().join(format!("xtask-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let line = lines(
            &dir.join("l.svg"),
            "new connections/s",
            "services",
            "conn/s",
            &[
                Series {
                    name: "iptables".into(),
                    points: vec![(1.0, 10_000.0), (1000.0, 8000.0), (10_000.0, 4000.0)],
                },
                Series {
                    name: "netbpf".into(),
                    points: vec![(1.0, 13_000.0), (1000.0, 13_500.0), (10_000.0, f64::NAN)],
                },
            ],
        )
        .expect("draws");
        let svg = std::fs::read_to_string(line).expect("written");
        assert!(svg.starts_with("<svg") && svg.contains("netbpf") && svg.contains("iptables"));
        let bars = ratio_bars(
            &dir.join("b.svg"),
            "ratios",
            &[("east-west: latency p50".into(), 1.4), ("x".into(), 0.8)],
        )
        .expect("draws");
        let svg = std::fs::read_to_string(bars).expect("written");
        assert!(svg.contains("east-west: latency p50"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
