//! [`GpuArithmetic`]: the EPS sampler's state and arithmetic in GPU buffers. The pivot runs in the
//! operator's shader (mask, super-resolution, or the FFT pipeline for blur); the solver updates in
//! `lincomb.wgsl`. Per network call one batch goes down (`μ*`) and one comes up (`x̂0`).

use std::cell::RefCell;
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};

use super::fft::{self, Axis};
use super::uniforms::{CombineParams, LincombParams, MaskParams, PlaneParams, SrParams};
use super::{GpuContext, dispatch};
use crate::inverse::{Dims4, Interpolant, Problem, Structure, prox_gains};
use crate::sampler::StepArithmetic;
use crate::{Error, Result};

/// An image batch in a GPU buffer; the buffer returns to its arithmetic's pool when dropped, so
/// a run allocates a handful of buffers once and reuses them at every step.
#[derive(Debug)]
pub struct GpuBatch {
    buffer: Option<wgpu::Buffer>,
    pool: Rc<RefCell<Vec<wgpu::Buffer>>>,
}

impl GpuBatch {
    fn buffer(&self) -> Result<&wgpu::Buffer> {
        self.buffer
            .as_ref()
            .ok_or_else(|| Error::Gpu("a GPU batch was used after release".into()))
    }
}

impl Drop for GpuBatch {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.borrow_mut().push(b);
        }
    }
}

/// The operator's data on the GPU.
enum Operator {
    Mask {
        params: wgpu::Buffer,
        y: wgpu::Buffer,
        mask: wgpu::Buffer,
        shape: MaskParams,
    },
    SuperResolution {
        params: wgpu::Buffer,
        y: wgpu::Buffer,
        shape: SrParams,
        eigenvalue: f64,
    },
    Blur(Box<BlurPlan>),
}

/// Buffers and prebuilt bind groups of the blur pivot: pack → forward FFT → combine → inverse FFT
/// → unpack, ping-ponging between two spectrum buffers.
struct BlurPlan {
    pack_params: wgpu::Buffer,
    spectra: [wgpu::Buffer; 2],
    combine_params: wgpu::Buffer,
    combine_shape: CombineParams,
    /// Forward passes, for a source in spectra[0] and in spectra[1].
    forward: Vec<[wgpu::BindGroup; 2]>,
    inverse: Vec<[wgpu::BindGroup; 2]>,
    /// Combine reading spectra[i], writing spectra[1 − i].
    combine: [wgpu::BindGroup; 2],
    /// Unpack from spectra[i] into μ*.
    unpack: [wgpu::BindGroup; 2],
    /// Kept alive for the bind groups.
    _resources: Vec<wgpu::Buffer>,
}

/// The EPS sampler's arithmetic on a [`GpuContext`] for one problem and one batch size.
pub struct GpuArithmetic<'a> {
    ctx: &'a GpuContext,
    dims: Dims4,
    sigma_y: f64,
    operator: Operator,
    mu: wgpu::Buffer,
    staging: wgpu::Buffer,
    lincomb_params: wgpu::Buffer,
    pool: Rc<RefCell<Vec<wgpu::Buffer>>>,
    allocated: usize,
}

impl std::fmt::Debug for GpuArithmetic<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuArithmetic")
            .field("dims", &self.dims)
            .field("allocated", &self.allocated)
            .finish_non_exhaustive()
    }
}

fn host_f32(x: &Tensor) -> Result<Vec<f32>> {
    Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl<'a> GpuArithmetic<'a> {
    /// Uploads `problem`'s measurement and operator for batches of `batch` images. Fails with
    /// [`Error::Unsupported`] for operators without a shader (use the CPU path for those).
    pub fn new(ctx: &'a GpuContext, problem: &Problem, batch: usize) -> Result<Self> {
        let (c, h, w) = problem.image_chw();
        let dims = (batch, c, h, w);
        let planes = batch * c;
        let len = planes * h * w;
        crate::inverse::check_batch("GPU batch", problem.measurement_batch(), batch)?;
        let y_batch = problem.measurement_batch() as u32;
        let y = problem.y();
        let mu = ctx.storage("pivot μ*", len)?;
        let operator = match problem.operator().structure() {
            Structure::Mask(mask) => {
                let (mb, mc, _, _) = mask.dims();
                crate::inverse::check_batch("GPU mask", mb, batch)?;
                let shape = MaskParams {
                    width: w as u32,
                    height: h as u32,
                    channels: c as u32,
                    planes: planes as u32,
                    y_batch,
                    mask_batch: mb as u32,
                    mask_channels: mc as u32,
                    ..MaskParams::default()
                };
                Operator::Mask {
                    params: ctx.uniform("mask params", &shape.to_bytes()),
                    y: ctx.storage_with("measurement y", &host_f32(y)?)?,
                    mask: ctx.storage_with("mask", &host_f32(mask.tensor())?)?,
                    shape,
                }
            }
            Structure::SuperResolution(sr) => {
                let s = sr.factor();
                let shape = SrParams {
                    width: w as u32,
                    height: h as u32,
                    channels: c as u32,
                    planes: planes as u32,
                    y_batch,
                    factor: s as u32,
                    ..SrParams::default()
                };
                Operator::SuperResolution {
                    params: ctx.uniform("super-resolution params", &shape.to_bytes()),
                    y: ctx.storage_with("measurement y", &host_f32(y)?)?,
                    shape,
                    eigenvalue: 1.0 / (s * s) as f64,
                }
            }
            Structure::Blur(blur) => {
                Operator::Blur(Box::new(BlurPlan::new(ctx, blur, y, dims, y_batch, &mu)?))
            }
            Structure::Other => {
                return Err(Error::Unsupported(format!(
                    "{} has no GPU shader; it runs on the CPU",
                    problem.operator().name()
                )));
            }
        };
        let staging = ctx.staging("read-back staging", len);
        let lincomb_params = ctx.uniform("lincomb params", &LincombParams::default().to_bytes());
        let arith = Self {
            ctx,
            dims,
            sigma_y: problem.sigma_y(),
            operator,
            mu,
            staging,
            lincomb_params,
            pool: Rc::new(RefCell::new(Vec::new())),
            allocated: 0,
        };
        ctx.check_fault()?;
        Ok(arith)
    }

    fn len(&self) -> usize {
        let (b, c, h, w) = self.dims;
        b * c * h * w
    }

    /// A buffer from the pool, or a new one.
    fn take(&mut self) -> Result<GpuBatch> {
        let reused = self.pool.borrow_mut().pop();
        let buffer = match reused {
            Some(b) => b,
            None => {
                self.allocated += 1;
                self.ctx
                    .storage(&format!("sampler batch {}", self.allocated), self.len())?
            }
        };
        Ok(GpuBatch {
            buffer: Some(buffer),
            pool: Rc::clone(&self.pool),
        })
    }

    /// Buffers allocated so far (they are reused across steps).
    pub fn buffers_allocated(&self) -> usize {
        self.allocated
    }

    fn check_dims(&self, x: &Tensor, what: &str) -> Result<()> {
        let d = crate::inverse::dims4(x, what)?;
        if d != self.dims {
            return Err(Error::shape(
                what,
                format!("{:?}", self.dims),
                format!("{d:?}"),
            ));
        }
        Ok(())
    }

    fn tensor(&self, data: Vec<f32>) -> Result<Tensor> {
        Ok(Tensor::from_vec(data, self.dims, &Device::Cpu)?)
    }

    /// Runs the pivot into `self.mu` without reading it back (benchmarks time this alone).
    pub fn pivot_in_place(&mut self, x_t: &GpuBatch, interp: Interpolant) -> Result<()> {
        interp.validate()?;
        let sigma_y = self.sigma_y;
        let Interpolant { alpha, beta } = interp;
        let (p, q) = (alpha * alpha * sigma_y * sigma_y, beta * beta);
        let inv_alpha = (1.0 / alpha) as f32;
        let (b, c, h, w) = self.dims;
        let ctx = self.ctx;
        let x = x_t.buffer()?;
        let groups = ctx.groups(w, h, b * c)?;
        match &self.operator {
            Operator::Mask {
                params,
                y,
                mask,
                shape,
            } => {
                let (gz, gy) = prox_gains(1.0, p, q);
                let params_now = MaskParams {
                    inv_alpha,
                    gain_z: gz as f32,
                    gain_y: gy as f32,
                    ..*shape
                };
                ctx.queue.write_buffer(params, 0, &params_now.to_bytes());
                let bg = ctx.bind(
                    "mask pivot",
                    &ctx.pipelines.mask_pivot,
                    &[params, x, y, mask, &self.mu],
                );
                ctx.submit("mask pivot", |e| {
                    dispatch(e, "mask pivot", &ctx.pipelines.mask_pivot, &bg, groups);
                    Ok(())
                })
            }
            Operator::SuperResolution {
                params,
                y,
                shape,
                eigenvalue,
            } => {
                let (gz, gy) = prox_gains(*eigenvalue, p, q);
                let params_now = SrParams {
                    inv_alpha,
                    gain_z: gz as f32,
                    gain_y: gy as f32,
                    ..*shape
                };
                ctx.queue.write_buffer(params, 0, &params_now.to_bytes());
                let bg = ctx.bind(
                    "super-resolution pivot",
                    &ctx.pipelines.sr_pivot,
                    &[params, x, y, &self.mu],
                );
                ctx.submit("super-resolution pivot", |e| {
                    dispatch(
                        e,
                        "super-resolution pivot",
                        &ctx.pipelines.sr_pivot,
                        &bg,
                        groups,
                    );
                    Ok(())
                })
            }
            Operator::Blur(plan) => plan.run(ctx, x, self.dims, inv_alpha, p, q),
        }
    }
}

impl BlurPlan {
    fn new(
        ctx: &GpuContext,
        blur: &crate::inverse::Blur,
        y: &Tensor,
        dims: Dims4,
        y_batch: u32,
        mu: &wgpu::Buffer,
    ) -> Result<Self> {
        let (b, c, h, w) = dims;
        let planes = b * c;
        let spectra = [
            ctx.storage("spectrum A", 2 * planes * h * w)?,
            ctx.storage("spectrum B", 2 * planes * h * w)?,
        ];
        // conj(K̂)·Ŷ once per measurement plane, in f64 on the host: y never changes in a run.
        let y_host = crate::inverse::to_host_f64(y)?;
        let aty_hat: Vec<f32> = y_host
            .chunks(h * w)
            .flat_map(|plane| blur.adjoint_spectrum(plane))
            .flat_map(|v| [v.re as f32, v.im as f32])
            .collect();
        let aty_hat = ctx.storage_with("conj(K̂)·Ŷ", &aty_hat)?;
        let gram: Vec<f32> = blur.gram_eigenvalues().iter().map(|&e| e as f32).collect();
        let gram = ctx.storage_with("|K̂|²", &gram)?;
        let tw_rows = ctx.storage_with("twiddles (rows)", &fft::twiddles(w))?;
        let tw_cols = ctx.storage_with("twiddles (columns)", &fft::twiddles(h))?;
        let pack_params = ctx.uniform(
            "fft pack params",
            &PlaneParams {
                width: w as u32,
                height: h as u32,
                planes: planes as u32,
                scale: 1.0,
            }
            .to_bytes(),
        );
        let mut resources = vec![aty_hat, gram, tw_rows, tw_cols];
        let passes = |inverse: bool, resources: &mut Vec<wgpu::Buffer>| {
            let mut groups = Vec::new();
            for (axis, tw) in [(Axis::Rows, 2), (Axis::Columns, 3)] {
                for params in fft::passes(axis, planes, h, w, inverse) {
                    let u = ctx.uniform("fft pass params", &params.to_bytes());
                    let pipe = &ctx.pipelines.fft_pass;
                    let pair = [
                        ctx.bind(
                            "fft pass A→B",
                            pipe,
                            &[&u, &spectra[0], &spectra[1], &resources[tw]],
                        ),
                        ctx.bind(
                            "fft pass B→A",
                            pipe,
                            &[&u, &spectra[1], &spectra[0], &resources[tw]],
                        ),
                    ];
                    groups.push(pair);
                    resources.push(u);
                }
            }
            groups
        };
        let forward = passes(false, &mut resources);
        let inverse = passes(true, &mut resources);
        let combine_shape = CombineParams {
            width: w as u32,
            height: h as u32,
            channels: c as u32,
            planes: planes as u32,
            y_batch,
            inv_size: 1.0 / (h * w) as f32,
            ..CombineParams::default()
        };
        let combine_params = ctx.uniform("blur combine params", &combine_shape.to_bytes());
        let pipe = &ctx.pipelines.blur_combine;
        let combine = [
            ctx.bind(
                "blur combine A→B",
                pipe,
                &[
                    &combine_params,
                    &spectra[0],
                    &resources[0],
                    &resources[1],
                    &spectra[1],
                ],
            ),
            ctx.bind(
                "blur combine B→A",
                pipe,
                &[
                    &combine_params,
                    &spectra[1],
                    &resources[0],
                    &resources[1],
                    &spectra[0],
                ],
            ),
        ];
        let pipe = &ctx.pipelines.fft_unpack;
        let unpack = [
            ctx.bind("fft unpack A", pipe, &[&pack_params, &spectra[0], mu]),
            ctx.bind("fft unpack B", pipe, &[&pack_params, &spectra[1], mu]),
        ];
        Ok(Self {
            pack_params,
            spectra,
            combine_params,
            combine_shape,
            forward,
            inverse,
            combine,
            unpack,
            _resources: resources,
        })
    }

    fn run(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        dims: Dims4,
        inv_alpha: f32,
        p: f64,
        q: f64,
    ) -> Result<()> {
        let (b, c, h, w) = dims;
        let planes = b * c;
        let image_groups = ctx.groups(w, h, planes)?;
        let row_groups = ctx.groups(w, planes * h, 1)?;
        let col_groups = ctx.groups(h, planes * w, 1)?;
        let n_row_passes = fft::radices(w).len();
        ctx.queue.write_buffer(
            &self.pack_params,
            0,
            &PlaneParams {
                width: w as u32,
                height: h as u32,
                planes: planes as u32,
                scale: inv_alpha,
            }
            .to_bytes(),
        );
        ctx.queue.write_buffer(
            &self.combine_params,
            0,
            &CombineParams {
                p: p as f32,
                q: q as f32,
                ..self.combine_shape
            }
            .to_bytes(),
        );
        let pack = ctx.bind(
            "fft pack",
            &ctx.pipelines.fft_pack,
            &[&self.pack_params, x, &self.spectra[0]],
        );
        ctx.submit("blur pivot", |e| {
            dispatch(e, "fft pack", &ctx.pipelines.fft_pack, &pack, image_groups);
            let mut at = 0;
            for (i, pair) in self.forward.iter().enumerate() {
                let g = if i < n_row_passes {
                    row_groups
                } else {
                    col_groups
                };
                dispatch(e, "fft forward pass", &ctx.pipelines.fft_pass, &pair[at], g);
                at = 1 - at;
            }
            dispatch(
                e,
                "blur combine",
                &ctx.pipelines.blur_combine,
                &self.combine[at],
                image_groups,
            );
            at = 1 - at;
            for (i, pair) in self.inverse.iter().enumerate() {
                let g = if i < n_row_passes {
                    row_groups
                } else {
                    col_groups
                };
                dispatch(e, "fft inverse pass", &ctx.pipelines.fft_pass, &pair[at], g);
                at = 1 - at;
            }
            dispatch(
                e,
                "fft unpack",
                &ctx.pipelines.fft_unpack,
                &self.unpack[at],
                image_groups,
            );
            Ok(())
        })
    }
}

impl StepArithmetic for GpuArithmetic<'_> {
    type Batch = GpuBatch;

    fn name(&self) -> String {
        format!("wgpu: {}", self.ctx.adapter_name())
    }

    fn load(&mut self, x: &Tensor) -> Result<GpuBatch> {
        self.check_dims(x, "GPU batch")?;
        let data = host_f32(x)?;
        let batch = self.take()?;
        self.ctx
            .queue
            .write_buffer(batch.buffer()?, 0, bytemuck::cast_slice(&data));
        Ok(batch)
    }

    fn pivot(&mut self, x_t: &GpuBatch, interp: Interpolant) -> Result<Tensor> {
        self.pivot_in_place(x_t, interp)?;
        let data = self.ctx.read(&self.mu, &self.staging, self.len())?;
        self.tensor(data)
    }

    fn combine(&mut self, terms: &[(f64, &GpuBatch)]) -> Result<GpuBatch> {
        if terms.is_empty() || terms.len() > 4 {
            return Err(Error::invalid(
                "linear combination",
                terms.len(),
                "takes one to four terms",
            ));
        }
        let (b, c, h, w) = self.dims;
        let mut coefficients = [0f32; 4];
        let mut inputs = Vec::with_capacity(4);
        for (i, (k, batch)) in terms.iter().enumerate() {
            coefficients[i] = *k as f32;
            inputs.push(batch.buffer()?);
        }
        while inputs.len() < 4 {
            inputs.push(inputs[0]);
        }
        let out = self.take()?;
        let ctx = self.ctx;
        ctx.queue.write_buffer(
            &self.lincomb_params,
            0,
            &LincombParams {
                width: w as u32,
                height: h as u32,
                planes: (b * c) as u32,
                coefficients,
            }
            .to_bytes(),
        );
        let bg = ctx.bind(
            "linear combination",
            &ctx.pipelines.lincomb,
            &[
                &self.lincomb_params,
                inputs[0],
                inputs[1],
                inputs[2],
                inputs[3],
                out.buffer()?,
            ],
        );
        let groups = ctx.groups(w, h, b * c)?;
        ctx.submit("linear combination", |e| {
            dispatch(e, "linear combination", &ctx.pipelines.lincomb, &bg, groups);
            Ok(())
        })?;
        Ok(out)
    }

    fn read(&mut self, x: &GpuBatch) -> Result<Tensor> {
        let data = self.ctx.read(x.buffer()?, &self.staging, self.len())?;
        self.tensor(data)
    }
}
