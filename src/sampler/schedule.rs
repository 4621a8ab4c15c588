//! The EDM noise schedule (Karras et al. 2022; eps-method.md §5):
//! `σ_i = (σmax^{1/ρ} + i/(N−1) (σmin^{1/ρ} − σmax^{1/ρ}))^ρ` for `i < N`, and `σ_N = 0`.

use crate::{Error, Result};

/// EDM schedule parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdmSchedule {
    /// Largest noise level (80 for images in [-1, 1]).
    pub sigma_max: f64,
    /// Smallest non-zero noise level.
    pub sigma_min: f64,
    /// Time-warping exponent ρ.
    pub rho: f64,
}

impl Default for EdmSchedule {
    fn default() -> Self {
        Self {
            sigma_max: 80.0,
            sigma_min: 0.002,
            rho: 7.0,
        }
    }
}

impl EdmSchedule {
    /// The `steps + 1` noise levels `σ_0 > … > σ_{N−1} > σ_N = 0`.
    pub fn sigmas(&self, steps: usize) -> Result<Vec<f64>> {
        if steps == 0 {
            return Err(Error::invalid(
                "steps",
                steps,
                "a sampler needs at least one step",
            ));
        }
        if !(self.sigma_max > self.sigma_min && self.sigma_min > 0.0 && self.sigma_max.is_finite())
        {
            return Err(Error::invalid(
                "schedule",
                format!("σmax {} σmin {}", self.sigma_max, self.sigma_min),
                "need σmax > σmin > 0",
            ));
        }
        if !(self.rho > 0.0 && self.rho.is_finite()) {
            return Err(Error::invalid("ρ", self.rho, "must be positive"));
        }
        let (a, b) = (
            self.sigma_max.powf(1.0 / self.rho),
            self.sigma_min.powf(1.0 / self.rho),
        );
        let mut s: Vec<f64> = (0..steps)
            .map(|i| {
                let t = if steps == 1 {
                    0.0
                } else {
                    i as f64 / (steps - 1) as f64
                };
                (a + t * (b - a)).powf(self.rho)
            })
            .collect();
        s.push(0.0);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_monotone() -> Result<()> {
        let s = EdmSchedule::default().sigmas(20)?;
        assert_eq!(s.len(), 21);
        assert!((s[0] - 80.0).abs() < 1e-9);
        assert!((s[19] - 0.002).abs() < 1e-12);
        assert_eq!(s[20], 0.0);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
        assert!(EdmSchedule::default().sigmas(0).is_err());
        Ok(())
    }
}
