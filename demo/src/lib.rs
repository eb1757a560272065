//! The CPU side of the gated-pipeline demo (`cargo xtask demo`, `src/main.rs`): the deterministic
//! function chain every strategy computes, the calibrated host work, the summary statistics and
//! the SVG plot. Everything here runs without a GPU and is unit-tested.
//!
//! # The chain
//!
//! Step `s` (1-based) of a pipeline of depth `D`:
//!
//! ```text
//! vector_s = gpu_step(s, value_{s-D})          (GPU: a kernel; value_k = 0 for k <= 0)
//! value_s  = host_value(vector_s, iterations)   (host: CPU work of a calibrated length)
//! ```
//!
//! The GPU consumes the value the host computed `D` steps earlier, so with `D >= 2` the host can
//! compute `value_s` while the GPU already runs steps `s+1 .. s+D-1`. Every strategy computes the
//! same chain; the demo checks that their values are equal, and equal to [`reference_chain`].

#![deny(missing_docs)]

use std::fmt::Write as _;
use std::time::Instant;

/// splitmix64's finaliser (the kernel's `mix`).
pub const fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Element `i` of the vector the GPU step `step` writes when it consumes `prev`: the CPU twin of
/// `produce` in `demo/kernels/gated_pipeline.cu`.
pub const fn gpu_element(step: u64, prev: u64, i: u32) -> u64 {
    let seed = mix(step ^ prev.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    mix(seed.wrapping_add(i as u64))
}

/// The whole vector of a GPU step, on the CPU.
pub fn gpu_step(step: u64, prev: u64, len: u32) -> Vec<u64> {
    (0..len).map(|i| gpu_element(step, prev, i)).collect()
}

/// The host's work: folds the vector into a hash, then runs `iterations` more rounds of
/// [`mix`] (a dependent chain, so the compiler cannot shorten it). Its length is set with
/// [`HostWork::calibrate`].
pub fn host_value(vector: &[u64], iterations: u64) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &x in vector {
        h = mix(h ^ x);
    }
    for _ in 0..iterations {
        h = mix(h);
    }
    // `max(1)`: 0 is the "no value yet" of steps before the first.
    h.max(1)
}

/// The value `value_{s-depth}` that step `s` consumes, from `values[k] = value_k` (`values[0] = 0`).
pub fn consumed(values: &[u64], step: u64, depth: u64) -> u64 {
    step.checked_sub(depth).map_or(0, |k| values[k as usize])
}

/// The chain computed on the CPU: `values[s]` for `s` in `0..=steps` (`values[0] = 0`).
pub fn reference_chain(steps: u64, depth: u64, len: u32, iterations: u64) -> Vec<u64> {
    let mut values = vec![0u64; steps as usize + 1];
    for s in 1..=steps {
        let v = gpu_step(s, consumed(&values, s, depth), len);
        values[s as usize] = host_value(&v, iterations);
    }
    values
}

/// Rounds of [`mix`] per microsecond on this machine, to turn a host-work length into
/// iterations of [`host_value`].
#[derive(Debug, Clone, Copy)]
pub struct HostWork {
    /// Iterations per microsecond.
    pub per_us: f64,
}

impl HostWork {
    /// Times a few runs of the hash loop and keeps the fastest (the least disturbed).
    pub fn calibrate() -> HostWork {
        const N: u64 = 2_000_000;
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            std::hint::black_box(host_value(&[1, 2, 3], std::hint::black_box(N)));
            best = best.min(t.elapsed().as_secs_f64() * 1e6);
        }
        HostWork {
            per_us: N as f64 / best.max(1e-3),
        }
    }

    /// Iterations for `us` microseconds of host work.
    pub fn iterations(&self, us: f64) -> u64 {
        (self.per_us * us).round().max(0.0) as u64
    }
}

/// `1 - busy / total`: the share of the GPU's time line, from the first kernel's start to the
/// last kernel's end, in which no kernel of the pipeline ran. `busy_ms` is the sum of the kernels'
/// own durations. Clamped to `[0, 1]` (CUDA documents event timestamps as having a resolution of
/// around half a microsecond).
pub fn idle_fraction(busy_ms: f64, total_ms: f64) -> f64 {
    if total_ms <= 0.0 {
        return 0.0;
    }
    (1.0 - busy_ms / total_ms).clamp(0.0, 1.0)
}

/// One line of a plot: a name, a colour and (x, y) points.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// An SVG colour (`#1f77b4`).
    pub color: &'static str,
    /// Points, in the order they are joined.
    pub points: Vec<(f64, f64)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" upper bound for an axis (1, 2 or 5 times a power of ten, at least `max`).
fn nice_max(max: f64) -> f64 {
    if max.is_nan() || max <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * p)
}

/// A line plot as a standalone SVG document: axes from 0 to a rounded maximum, five ticks each,
/// one polyline with point markers per series, a legend. Points that are not finite are left out.
pub fn svg_plot(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (720.0, 440.0);
    let (left, right, top, bottom) = (80.0, 190.0, 50.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all = || series.iter().flat_map(|s| s.points.iter()).filter(finite);
    let x_max = nice_max(all().map(|p| p.0).fold(0.0, f64::max));
    let y_max = nice_max(all().map(|p| p.1).fold(0.0, f64::max));
    let px = |x: f64| left + x / x_max * pw;
    let py = |y: f64| top + ph - y / y_max * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="15">{}</text>"#,
        left + pw / 2.0,
        escape(title)
    );
    for k in 0..=5 {
        let f = f64::from(k) / 5.0;
        let (x, y) = (px(f * x_max), py(f * y_max));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0,
            tick(f * y_max)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + ph,
            top + ph + 18.0,
            tick(f * x_max)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        h - 15.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + ph / 2.0,
        escape(y_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(finite)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            ser.color,
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                s,
                r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{}"/>"#,
                ser.color
            );
        }
        let ly = top + 14.0 + 20.0 * i as f64;
        let lx = left + pw + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            ser.color,
            lx + 28.0,
            ly + 4.0,
            escape(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn tick(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_matches_splitmix64_reference_values() {
        // splitmix64 from state 0: the generator adds the constant, then finalises.
        assert_eq!(mix(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn gpu_step_depends_on_step_prev_and_index() {
        let a = gpu_step(3, 7, 64);
        assert_eq!(a.len(), 64);
        assert_ne!(a, gpu_step(4, 7, 64));
        assert_ne!(a, gpu_step(3, 8, 64));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 64);
    }

    #[test]
    fn host_value_is_deterministic_and_depends_on_iterations_and_data() {
        let v = gpu_step(1, 0, 16);
        assert_eq!(host_value(&v, 1000), host_value(&v, 1000));
        assert_ne!(host_value(&v, 1000), host_value(&v, 1001));
        assert_ne!(host_value(&v, 10), host_value(&gpu_step(2, 0, 16), 10));
        assert_ne!(host_value(&[], 0), 0);
    }

    #[test]
    fn reference_chain_feeds_each_value_depth_steps_later() {
        let (steps, depth, len, it) = (12, 3, 8, 5);
        let values = reference_chain(steps, depth, len, it);
        assert_eq!(values[0], 0);
        for s in 1..=steps {
            let prev = if s > depth {
                values[(s - depth) as usize]
            } else {
                0
            };
            assert_eq!(values[s as usize], host_value(&gpu_step(s, prev, len), it));
        }
        // A different depth is a different chain (from step depth + 1 on).
        assert_ne!(values, reference_chain(steps, 2, len, it));
        assert_eq!(values[..=2], reference_chain(steps, 2, len, it)[..=2]);
    }

    #[test]
    fn consumed_is_zero_before_the_first_value() {
        let values = [0, 11, 22, 33];
        assert_eq!(consumed(&values, 1, 2), 0);
        assert_eq!(consumed(&values, 2, 2), 0);
        assert_eq!(consumed(&values, 3, 2), 11);
        assert_eq!(consumed(&values, 3, 1), 22);
    }

    #[test]
    fn calibrated_host_work_takes_about_the_asked_time() {
        let hw = HostWork::calibrate();
        assert!(hw.per_us > 1.0, "{hw:?}");
        let it = hw.iterations(2000.0);
        let t = Instant::now();
        std::hint::black_box(host_value(&[5], it));
        let us = t.elapsed().as_secs_f64() * 1e6;
        // Loose: the CI machine is shared; the point is the order of magnitude.
        assert!(
            (500.0..20_000.0).contains(&us),
            "2000 us asked, {us:.0} us taken"
        );
        assert_eq!(hw.iterations(0.0), 0);
    }

    #[test]
    fn idle_fraction_is_one_minus_busy_share() {
        assert_eq!(idle_fraction(5.0, 10.0), 0.5);
        assert_eq!(idle_fraction(10.0, 10.0), 0.0);
        assert_eq!(idle_fraction(10.2, 10.0), 0.0);
        assert_eq!(idle_fraction(1.0, 0.0), 0.0);
    }

    #[test]
    fn nice_max_rounds_up_to_1_2_5() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(7000.0), 10_000.0);
        assert_eq!(nice_max(150.0), 200.0);
        assert_eq!(nice_max(100.0), 100.0);
    }

    #[test]
    fn svg_has_one_polyline_and_marker_per_point_and_escapes_text() {
        let series = vec![
            Series {
                name: "sync <a>".into(),
                color: "#d62728",
                points: vec![(25.0, 4000.0), (50.0, 3500.0), (100.0, 2800.0)],
            },
            Series {
                name: "flag".into(),
                color: "#2ca02c",
                points: vec![(25.0, 9000.0), (f64::NAN, 1.0), (100.0, 8000.0)],
            },
        ];
        let svg = svg_plot("steps/s & host work", "host µs", "steps/s", &series);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("<circle").count(),
            5,
            "the NaN point is left out"
        );
        assert!(svg.contains("sync &lt;a&gt;") && svg.contains("steps/s &amp; host work"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Every open tag is closed or self-closing.
        let opens = svg.matches('<').count();
        let closes = svg.matches("/>").count() + svg.matches("</").count() * 2;
        assert_eq!(opens, closes);
    }
}
