//! Seeded Gaussian noise with one independent stream per batch element.
//!
//! Each sample owns its random stream, so sample `i` with seed `s` is the same whether it is drawn
//! alone or inside a batch: "resample" in the app and "same seeds for every method" in the
//! evaluation both rely on this.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, StandardNormal};

use crate::Result;

/// One seeded random stream per batch element.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    rngs: Vec<StdRng>,
}

impl SeededNoise {
    /// One stream per seed; the batch size is `seeds.len()`.
    pub fn new(seeds: &[u64]) -> Self {
        Self {
            rngs: seeds.iter().map(|&s| StdRng::seed_from_u64(s)).collect(),
        }
    }

    /// Number of streams (the batch size).
    pub fn batch(&self) -> usize {
        self.rngs.len()
    }

    /// Standard normal noise of shape `[batch, c, h, w]`, each image from its own stream.
    pub fn normal(
        &mut self,
        chw: (usize, usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (c, h, w) = chw;
        let per = c * h * w;
        let mut data = Vec::with_capacity(per * self.rngs.len());
        for rng in &mut self.rngs {
            data.extend((0..per).map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                z as f32
            }));
        }
        let t = Tensor::from_vec(data, (self.rngs.len(), c, h, w), device)?;
        Ok(t.to_dtype(dtype)?)
    }

    /// Standard normal noise shaped like `like` (which must be `[batch, ...]` with this batch).
    pub fn normal_like(&mut self, like: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = crate::inverse::dims4(like, "noise")?;
        if b != self.rngs.len() {
            return Err(crate::Error::shape("noise batch", self.rngs.len(), b));
        }
        self.normal((c, h, w), like.dtype(), like.device())
    }
}

/// Seeds `base, base + 1, …` for `n` samples: the convention used by the CLI and the evaluation.
pub fn consecutive_seeds(base: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| base.wrapping_add(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_independent_of_batch_position() -> Result<()> {
        let dev = Device::Cpu;
        let alone = SeededNoise::new(&[7]).normal((1, 2, 3), DType::F32, &dev)?;
        let batch = SeededNoise::new(&[3, 7]).normal((1, 2, 3), DType::F32, &dev)?;
        let second = batch.narrow(0, 1, 1)?;
        let diff = (alone - second)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            diff == 0.0,
            "same seed must give the same noise, diff {diff}"
        );
        Ok(())
    }
}
