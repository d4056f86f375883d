//! `docs/benchmarks.svg`: throughput and p99 latency against clients for the 1-core PostgreSQL
//! set-up, with the Argon2 bound drawn as a line, so the shape of the run reads at a glance.

use std::{path::Path, time::Duration};

use plotters::prelude::*;

use crate::report::{Placement, Row, Work};

/// The client counts span 1 to 256: a log axis with a little room on both sides.
const CLIENTS: std::ops::Range<f64> = 0.8..320.0;

/// One line of the chart: `(clients, value)` points.
type Line = Vec<(f64, f64)>;

/// Draws the chart into `path`.
pub(crate) fn draw(path: &Path, rows: &[Row], bound: f64) -> Result<(), String> {
    let series = |work: Work, value: fn(&Row) -> f64| -> Line {
        rows.iter()
            .filter(|row| {
                row.placement == Placement::PinnedPostgres && row.work == work && row.round == 1
            })
            .map(|row| (crate::client::count(row.clients), value(row)))
            .collect()
    };
    let rate = |row: &Row| row.outcome.rate();
    let p99 = |row: &Row| milliseconds(crate::report::percentile(&row.outcome.ok, 99));
    let throughput = [
        ("registrations/s", series(Work::Register, rate), BLUE),
        ("activations/s", series(Work::Activate, rate), RED),
    ];
    let latency = [
        ("registration p99", series(Work::Register, p99), BLUE),
        ("activation p99", series(Work::Activate, p99), RED),
    ];
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(text)?;
    let (left, right) = root.split_horizontally(550);

    let highest = throughput
        .iter()
        .flat_map(|(_, line, _)| line.iter().map(|point| point.1))
        .fold(bound, f64::max);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "Throughput, server on 1 core (PostgreSQL)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(CLIENTS.log_scale(), 0.0..highest * 1.15)
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("per second")
        .draw()
        .map_err(text)?;
    for (label, line, colour) in throughput {
        plot(&mut chart, label, line, colour)?;
    }
    chart
        .draw_series(LineSeries::new(
            [(CLIENTS.start, bound), (CLIENTS.end, bound)],
            BLACK.stroke_width(2),
        ))
        .map_err(text)?
        .label(format!("Argon2 bound, CPU 0 ({bound:.1}/s)"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(text)?;

    let highest = latency
        .iter()
        .flat_map(|(_, line, _)| line.iter().map(|point| point.1))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "p99 latency, server on 1 core (PostgreSQL)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(CLIENTS.log_scale(), 0.0..highest * 1.15)
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("ms")
        .draw()
        .map_err(text)?;
    for (label, line, colour) in latency {
        plot(&mut chart, label, line, colour)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(text)?;
    root.present().map_err(text)
}

/// A line with a dot on each measured point, in the legend as `label`.
fn plot<DB: DrawingBackend, Coord: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, Coord>,
    label: &str,
    line: Line,
    colour: RGBColor,
) -> Result<(), String> {
    chart
        .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
        .map_err(text)?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    chart
        .draw_series(
            line.into_iter()
                .map(|point| Circle::new(point, 3, colour.filled())),
        )
        .map_err(text)?;
    Ok(())
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn text(error: impl std::fmt::Display) -> String {
    format!("cannot draw the chart: {error}")
}
