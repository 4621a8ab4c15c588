//! A perceptually ordered colour map (dark → purple → orange → pale yellow) for uncertainty and
//! residual heat maps.

/// Colour stops of an inferno-like map.
const STOPS: [[f32; 3]; 6] = [
    [0.0, 0.0, 0.016],
    [0.258, 0.039, 0.408],
    [0.576, 0.149, 0.404],
    [0.867, 0.317, 0.227],
    [0.988, 0.647, 0.039],
    [0.988, 1.0, 0.643],
];

/// The colour of `v` in `[0, 1]` (clamped); NaN (nothing measured) is mid-grey.
pub fn colour(v: f32) -> [f32; 3] {
    if v.is_nan() {
        return [0.35, 0.35, 0.35];
    }
    let t = v.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [
        a[0] + (b[0] - a[0]) * f,
        a[1] + (b[1] - a[1]) * f,
        a[2] + (b[2] - a[2]) * f,
    ]
}

/// A heat-map image of `values` (`width × height`), scaled so `full_scale` maps to the top
/// colour; 8 bits per channel, like the picture it becomes.
pub fn image(values: &[f32], width: usize, height: usize, full_scale: f32) -> crate::photo::Pixels {
    let scale = if full_scale > 0.0 {
        1.0 / full_scale
    } else {
        0.0
    };
    let data = values
        .iter()
        .flat_map(|&v| colour(v * scale).map(crate::photo::to_u8))
        .collect();
    crate::photo::Pixels::U8 {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_monotone_brightness() {
        assert_eq!(colour(0.0), STOPS[0]);
        assert_eq!(colour(1.0), STOPS[5]);
        assert_eq!(colour(7.0), STOPS[5]);
        let luma = |c: [f32; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
        let mut last = -1.0;
        for i in 0..=20 {
            let l = luma(colour(i as f32 / 20.0));
            assert!(l > last);
            last = l;
        }
    }
}
