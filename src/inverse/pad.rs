//! Padding and cropping of `[B, C, H, W]` images.
//!
//! Circular blur is exact only on periodic images; a real photo padded by reflection (mirror
//! without repeating the edge pixel, like NumPy's `reflect`) is close to periodic at its borders,
//! so deblurring a padded photo and cropping it back avoids wrap-around seams.

use candle_core::Tensor;

use super::dims4;
use crate::{Error, Result};

/// Padding amounts in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    /// Rows added above.
    pub top: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding {
    /// The same amount on every side.
    pub fn uniform(p: usize) -> Self {
        Self {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }
}

/// Index of the reflected source pixel for padded position `i` (may be out of `[0, n)`).
fn reflect_index(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Mirror-pads the last two dimensions of `x`. Padding wider than the image reflects repeatedly.
pub fn reflect_pad(x: &Tensor, pad: Padding) -> Result<Tensor> {
    let (_, _, h, w) = dims4(x, "reflect padding")?;
    if h == 0 || w == 0 {
        return Err(Error::invalid(
            "image size",
            format!("{h}×{w}"),
            "cannot pad an empty image",
        ));
    }
    let rows: Vec<u32> = (0..h + pad.top + pad.bottom)
        .map(|i| reflect_index(i as isize - pad.top as isize, h) as u32)
        .collect();
    let cols: Vec<u32> = (0..w + pad.left + pad.right)
        .map(|i| reflect_index(i as isize - pad.left as isize, w) as u32)
        .collect();
    let rows = Tensor::new(rows.as_slice(), x.device())?;
    let cols = Tensor::new(cols.as_slice(), x.device())?;
    // index_select needs contiguous input; crops and other views are not.
    Ok(x.contiguous()?
        .index_select(&rows, 2)?
        .index_select(&cols, 3)?)
}

/// Removes `pad` from the borders of `x` (the inverse of [`reflect_pad`]).
pub fn crop(x: &Tensor, pad: Padding) -> Result<Tensor> {
    let (_, _, h, w) = dims4(x, "crop")?;
    if pad.top + pad.bottom >= h || pad.left + pad.right >= w {
        return Err(Error::shape(
            "crop",
            format!("more than {pad:?}"),
            format!("{h}×{w}"),
        ));
    }
    let rows = x.narrow(2, pad.top, h - pad.top - pad.bottom)?;
    Ok(rows
        .narrow(3, pad.left, w - pad.left - pad.right)?
        .contiguous()?)
}

/// Padding (bottom/right) that makes `h × w` divisible by `multiple`.
pub fn padding_to_multiple(h: usize, w: usize, multiple: usize) -> Padding {
    let up = |n: usize| n.div_ceil(multiple.max(1)) * multiple.max(1) - n;
    Padding {
        top: 0,
        bottom: up(h),
        left: 0,
        right: up(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reflect_matches_numpy_convention() -> Result<()> {
        // numpy.pad([0,1,2,3], 2, mode="reflect") == [2,1,0,1,2,3,2,1]
        let x = Tensor::new(&[[[[0f32, 1., 2., 3.]]]], &Device::Cpu)?;
        let p = reflect_pad(
            &x,
            Padding {
                top: 0,
                bottom: 0,
                left: 2,
                right: 2,
            },
        )?;
        assert_eq!(
            p.flatten_all()?.to_vec1::<f32>()?,
            vec![2., 1., 0., 1., 2., 3., 2., 1.]
        );
        let back = crop(
            &p,
            Padding {
                top: 0,
                bottom: 0,
                left: 2,
                right: 2,
            },
        )?;
        assert_eq!(back.flatten_all()?.to_vec1::<f32>()?, vec![0., 1., 2., 3.]);
        Ok(())
    }

    #[test]
    fn wide_padding_reflects_repeatedly() {
        // Mirror about the first and last pixel, again and again: the period is 0,1,2,1.
        // numpy.pad([0,1,2], 5, mode="reflect") == [1,0,1,2,1, 0,1,2, 1,0,1,2,1]
        let got: Vec<usize> = (-5..8).map(|i| reflect_index(i, 3)).collect();
        assert_eq!(got, vec![1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]);
    }

    #[test]
    fn padding_to_multiple_rounds_up() {
        let p = padding_to_multiple(30, 32, 8);
        assert_eq!((p.bottom, p.right), (2, 0));
    }
}
