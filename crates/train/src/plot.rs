//! The loss-curve PNG, drawn with `plotters`' bitmap backend and no system font library: axes,
//! grid and lines are paths, and the few numbers (axis ranges) use a built-in 3×5 pixel font.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Result, TrainError};

/// One curve: a colour and its (step, value) points.
pub struct Series<'a> {
    /// Line colour.
    pub color: RGBColor,
    /// Points in step order.
    pub points: &'a [(f64, f64)],
}

/// 3×5 glyphs for `0-9 . - e +`, one row of three bits per line, top first.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => return None,
    })
}

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels wide.
fn draw_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    (x, y): (i32, i32),
    scale: i32,
) -> Result<()> {
    let mut cx = x;
    for c in text.chars() {
        if let Some(rows) = glyph(c) {
            for (r, bits) in rows.iter().enumerate() {
                for b in 0..3 {
                    if bits & (4 >> b) != 0 {
                        let px = cx + b * scale;
                        let py = y + r as i32 * scale;
                        area.draw(&Rectangle::new(
                            [(px, py), (px + scale - 1, py + scale - 1)],
                            BLACK.filled(),
                        ))
                        .map_err(|e| TrainError::Config(format!("plot: {e}")))?;
                    }
                }
            }
        }
        cx += 4 * scale;
    }
    Ok(())
}

fn short(v: f64) -> String {
    if v.abs() >= 1e4 || (v != 0.0 && v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        format!("{v:.2}")
    }
}

/// Writes a `width × height` PNG of the series to `path` (through a temporary file and a rename).
/// The y range covers every point; the minimum and maximum are printed at the left axis and the
/// last step under the right end of the x axis.
pub fn loss_png(path: &Path, series: &[Series], width: u32, height: u32) -> Result<()> {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    // The encoder picks the format from the extension, so the temporary name ends in `.png`.
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (width, height)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| TrainError::Config(format!("plot: {e}"));
        root.fill(&WHITE).map_err(err)?;
        let (left, right, top, bottom) = (60i32, 20i32, 20i32, 40i32);
        let (w, h) = (width as i32 - left - right, height as i32 - top - bottom);
        let map = |(x, y): (f64, f64)| -> (i32, i32) {
            (
                left + ((x - x0) / (x1 - x0) * w as f64).round() as i32,
                top + ((y1 - y) / (y1 - y0) * h as f64).round() as i32,
            )
        };
        for i in 0..=4 {
            let gy = top + h * i / 4;
            let gx = left + w * i / 4;
            let grid = RGBColor(225, 225, 225);
            root.draw(&PathElement::new(vec![(left, gy), (left + w, gy)], grid))
                .map_err(err)?;
            root.draw(&PathElement::new(vec![(gx, top), (gx, top + h)], grid))
                .map_err(err)?;
        }
        root.draw(&PathElement::new(
            vec![(left, top), (left, top + h), (left + w, top + h)],
            BLACK.stroke_width(2),
        ))
        .map_err(err)?;
        for s in series {
            let line: Vec<(i32, i32)> = s
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&p| map(p))
                .collect();
            root.draw(&PathElement::new(line, s.color.stroke_width(2)))
                .map_err(err)?;
        }
        draw_text(&root, &short(y1), (4, top), 2)?;
        draw_text(&root, &short(y0), (4, top + h - 10), 2)?;
        draw_text(&root, &short(x0), (left, top + h + 8), 2)?;
        let last = short(x1);
        draw_text(
            &root,
            &last,
            (left + w - 8 * last.len() as i32, top + h + 8),
            2,
        )?;
        root.present().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}
