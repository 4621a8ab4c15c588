//! Named restoration tasks and the operators they build: shared by training (random draws),
//! evaluation (fixed tasks) and the app.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::Rng;

use super::masks::{BrushWidth, box_of_any_size, brush_strokes, random_box, random_pixels};
use super::{AvgPoolSr, Blur, Kernel, LinearOperator, Mask};
use crate::Result;

/// A restoration task with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TaskSpec {
    /// Random pixel mask hiding this fraction.
    RandomInpaint {
        /// Fraction of pixels hidden.
        hidden: f64,
    },
    /// One box (sides a quarter to a half of the image).
    BoxInpaint,
    /// Free-form brush strokes.
    BrushInpaint,
    /// A box of any size: sides `U[H/16, H/2] × U[W/16, W/2]`.
    AnyBoxInpaint,
    /// An object-sized blob of round-brush strokes around one spot, as a photographer paints
    /// over an object, covering a fraction in the given range.
    ObjectInpaint {
        /// Smallest covered fraction.
        min: f64,
        /// Largest covered fraction.
        max: f64,
    },
    /// Nothing observed: the EPS network as an unconditional denoiser.
    NothingObserved,
    /// Gaussian blur.
    GaussianDeblur {
        /// Standard deviation in pixels.
        sigma: f64,
    },
    /// Linear motion blur.
    MotionDeblur {
        /// Length in pixels.
        length: f64,
        /// Angle in degrees.
        angle: f64,
    },
    /// Average-pool super-resolution.
    SuperResolution {
        /// Scale factor.
        factor: usize,
    },
}

impl TaskSpec {
    /// The evaluation tasks (eps-method.md §4 operator settings): 70% random inpainting, box,
    /// brush, Gaussian deblur σ = 0.75 (11×11), motion deblur (length 11, 45°), SR ×4.
    pub fn evaluation_suite() -> Vec<(&'static str, Self)> {
        vec![
            ("inpaint-random-70", Self::RandomInpaint { hidden: 0.7 }),
            ("inpaint-box", Self::BoxInpaint),
            ("inpaint-brush", Self::BrushInpaint),
            ("deblur-gaussian", Self::GaussianDeblur { sigma: 0.75 }),
            (
                "deblur-motion",
                Self::MotionDeblur {
                    length: 11.0,
                    angle: 45.0,
                },
            ),
            ("sr-x4", Self::SuperResolution { factor: 4 }),
        ]
    }

    /// The baseline-defaults family of this task.
    pub fn sampler_task(&self) -> crate::sampler::Task {
        use crate::sampler::Task;
        match self {
            Self::RandomInpaint { .. } => Task::RandomInpaint,
            Self::BoxInpaint => Task::BoxInpaint,
            Self::BrushInpaint | Self::ObjectInpaint { .. } | Self::NothingObserved => {
                Task::BrushInpaint
            }
            Self::AnyBoxInpaint => Task::BoxInpaint,
            Self::GaussianDeblur { .. } => Task::GaussianDeblur,
            Self::MotionDeblur { .. } => Task::MotionDeblur,
            Self::SuperResolution { .. } => Task::SuperResolution,
        }
    }

    /// Builds the operator for an `h × w` image; masks are drawn from `rng` and shared by the
    /// batch (`[1, 1, h, w]`).
    pub fn operator(
        &self,
        h: usize,
        w: usize,
        rng: &mut impl Rng,
    ) -> Result<Arc<dyn LinearOperator>> {
        let mask = |m: Vec<f32>| -> Result<Arc<dyn LinearOperator>> {
            Ok(Arc::new(Mask::new(&Tensor::from_vec(
                m,
                (1, 1, h, w),
                &Device::Cpu,
            )?)?))
        };
        Ok(match *self {
            Self::RandomInpaint { hidden } => mask(random_pixels(h, w, hidden, rng))?,
            Self::BoxInpaint => mask(random_box(h, w, rng))?,
            Self::BrushInpaint => mask(brush_strokes(h, w, BrushWidth::random(rng), 0.5, rng))?,
            Self::AnyBoxInpaint => mask(box_of_any_size(h, w, rng))?,
            Self::ObjectInpaint { min, max } => {
                let fill = crate::eval::holes::object_mask(w, h, (min, max), rng);
                mask(fill.iter().map(|&f| if f { 0.0 } else { 1.0 }).collect())?
            }
            Self::NothingObserved => mask(vec![0.0; h * w])?,
            Self::GaussianDeblur { sigma } => {
                // 11×11 as in the paper, wider for large σ, never wider than the image.
                let want = Kernel::gaussian_default_size(sigma).max(11);
                let side = h.min(w).max(1);
                let cap = if side % 2 == 1 { side } else { side - 1 };
                let k = Kernel::gaussian(sigma, want.min(cap))?;
                Arc::new(Blur::new(k, h, w)?.with_label(format!("Gaussian blur σ={sigma}")))
            }
            Self::MotionDeblur { length, angle } => Arc::new(
                Blur::new(Kernel::motion(length, angle)?, h, w)?
                    .with_label(format!("motion blur {length:.0} px at {angle:.0}°")),
            ),
            Self::SuperResolution { factor } => Arc::new(AvgPoolSr::new(factor)?),
        })
    }
}
