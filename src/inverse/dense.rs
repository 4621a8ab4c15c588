//! Dense matrices of operators on small images, for exact checks (never on the sampling path).

use candle_core::{DType, Device, Tensor};
use nalgebra::DMatrix;

use super::{LinearOperator, dims4};
use crate::Result;

/// Columns `A e_j` for every basis image `e_j` of shape `[1, c, h, w]`: an `m × d` matrix.
pub fn forward_matrix<O: LinearOperator + ?Sized>(
    op: &O,
    chw: (usize, usize, usize),
) -> Result<DMatrix<f64>> {
    let (c, h, w) = chw;
    let d = c * h * w;
    let basis = Tensor::eye(d, DType::F64, &Device::Cpu)?.reshape((d, c, h, w))?;
    let out = op.forward(&basis)?;
    columns_from_batch(&out)
}

/// Columns `Aᵀ e_i` for every basis measurement of shape `[1, m_c, m_h, m_w]`: a `d × m` matrix.
pub fn adjoint_matrix<O: LinearOperator + ?Sized>(
    op: &O,
    chw: (usize, usize, usize),
) -> Result<DMatrix<f64>> {
    let (_, mc, mh, mw) = op.measurement_dims((1, chw.0, chw.1, chw.2))?;
    let m = mc * mh * mw;
    let basis = Tensor::eye(m, DType::F64, &Device::Cpu)?.reshape((m, mc, mh, mw))?;
    let out = op.adjoint(&basis)?;
    columns_from_batch(&out)
}

/// A batch `[N, ...]` as a matrix whose column `n` is image `n` flattened.
pub fn columns_from_batch(x: &Tensor) -> Result<DMatrix<f64>> {
    let (n, c, h, w) = dims4(x, "dense conversion")?;
    let data = super::to_host_f64(x)?;
    // Row-major [N, d] data is column-major [d, N].
    Ok(DMatrix::from_vec(c * h * w, n, data))
}

/// The inverse of [`columns_from_batch`]: column `n` becomes image `n` of `[N, c, h, w]`.
pub fn batch_from_columns(
    m: &DMatrix<f64>,
    chw: (usize, usize, usize),
    like: &Tensor,
) -> Result<Tensor> {
    let (c, h, w) = chw;
    super::from_host_f64(m.as_slice().to_vec(), (m.ncols(), c, h, w), like)
}
