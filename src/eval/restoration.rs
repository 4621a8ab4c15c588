//! The restoration benchmark (`eps-studio eval`): validation crops × tasks × methods, scored with
//! PSNR, SSIM, pixel MMD² and pixel CRPS (eps-method.md §7). Every method sees the same images,
//! the same operators, the same measurement noise and the same sampler seeds.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nalgebra::DMatrix;
use rand::SeedableRng as _;
use rand::rngs::StdRng;

use super::lpips::Lpips;
use super::metrics::{
    CrpsForm, crps, frechet_distance, kid, mmd2_unbiased, psnr_batch, ssim_batch,
};
use crate::inverse::dense::columns_from_batch;
use crate::inverse::{LinearOperator, Mask, OperatorKind, Problem, TaskSpec};
use crate::noise::SeededNoise;
use crate::sampler::{self, Denoisers, ignore_progress};
use crate::{Error, Result};

pub use crate::restore::MethodChoice;

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Image side (crops are `size × size`).
    pub size: usize,
    /// Posterior samples per image.
    pub samples: usize,
    /// Measurement noise σ_y.
    pub sigma_y: f64,
    /// Seed of operators, noise and samplers.
    pub seed: u64,
    /// Tasks, by name.
    pub tasks: Vec<(String, TaskSpec)>,
    /// Methods.
    pub methods: Vec<MethodChoice>,
    /// Images per sampler call (each with all its samples).
    pub images_per_batch: usize,
    /// Networks for the perceptual and VGG-feature columns (none: pixel metrics only).
    pub features: FeatureNets,
}

/// The networks behind the perceptual (LPIPS) and VGG16-feature columns; either may be absent.
#[derive(Debug, Clone, Default)]
pub struct FeatureNets {
    /// LPIPS with the AlexNet backbone.
    pub alex: Option<Lpips>,
    /// LPIPS with the VGG16 backbone; its relu5_3 embedding also feeds FD, KID, MMD² and CRPS.
    pub vgg: Option<Lpips>,
}

/// Perceptual and feature-space scores of one row (`None` where the network was not loaded).
#[derive(Debug, Clone, Copy, Default)]
pub struct FeatureScores {
    /// Mean LPIPS (AlexNet) of the samples against their ground truth.
    pub lpips_alex: Option<f64>,
    /// Mean LPIPS (VGG16).
    pub lpips_vgg: Option<f64>,
    /// Fréchet distance between the VGG16 embeddings of all samples and of all ground truths.
    pub fd_vgg: Option<f64>,
    /// KID estimator (cubic-kernel MMD²) on the same embeddings.
    pub kid_vgg: Option<f64>,
    /// Unbiased Gaussian-kernel MMD² on the same embeddings.
    pub mmd_vgg: Option<f64>,
    /// Fair CRPS per embedding coordinate of each crop's samples against its ground truth.
    pub crps_vgg: Option<f64>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            size: 64,
            samples: 4,
            sigma_y: 0.05,
            seed: 0,
            tasks: TaskSpec::evaluation_suite()
                .into_iter()
                .map(|(n, t)| (n.to_owned(), t))
                .collect(),
            methods: MethodChoice::ALL.to_vec(),
            images_per_batch: 8,
            features: FeatureNets::default(),
        }
    }
}

/// One table row.
#[derive(Debug, Clone)]
pub struct EvalRow {
    /// Task name.
    pub task: String,
    /// Method name.
    pub method: String,
    /// Network evaluations per sample.
    pub nfe: usize,
    /// Mean PSNR (dB) of the samples against the ground truth.
    pub psnr: f64,
    /// Mean SSIM of the samples.
    pub ssim: f64,
    /// Unbiased MMD² between all samples and the ground-truth images, in pixel space.
    pub mmd: f64,
    /// Fair CRPS per pixel (on [0, 1]), averaged over pixels and images.
    pub crps: f64,
    /// LPIPS and VGG16-feature scores.
    pub features: FeatureScores,
    /// Wall-clock seconds per sample.
    pub secs_per_sample: f64,
    /// Images evaluated.
    pub images: usize,
    /// Inpainting only: scores on the hole alone, means over samples (the texture ratio over
    /// samples where the eroded hole is not empty; NaN for scattered random-pixel masks).
    pub hole: Option<super::holes::HoleScores>,
}

/// The measured problem of one image: its operator and measurement.
struct Case {
    op: Arc<dyn LinearOperator>,
    y: Tensor,
}

/// A batch of images with all their samples: one problem whose measurement holds each image's
/// `y` repeated `samples` times (masks likewise, per sample).
fn batched_problem(
    cases: &[Case],
    samples: usize,
    chw: (usize, usize, usize),
    sigma_y: f64,
) -> Result<Problem> {
    let rep = |t: &Tensor| -> Result<Tensor> {
        let (_, c, h, w) = t.dims4()?;
        Ok(t.broadcast_as((samples, c, h, w))?.contiguous()?)
    };
    let ys = cases
        .iter()
        .map(|c| rep(&c.y))
        .collect::<Result<Vec<_>>>()?;
    let y = Tensor::cat(&ys, 0)?;
    let op: Arc<dyn LinearOperator> = if cases[0].op.kind() == OperatorKind::Mask {
        // Per-image masks: read each mask back through A applied to ones.
        let ones = Tensor::ones((1, 1, chw.1, chw.2), DType::F32, &Device::Cpu)?;
        let masks = cases
            .iter()
            .map(|c| rep(&c.op.forward(&ones)?))
            .collect::<Result<Vec<_>>>()?;
        Arc::new(Mask::new(&Tensor::cat(&masks, 0)?)?)
    } else {
        Arc::clone(&cases[0].op)
    };
    Problem::new(op, &y, sigma_y, chw)
}

/// Runs the benchmark on ground-truth images `truth` (`[N, 3, size, size]` in [-1, 1]).
pub fn evaluate(
    cfg: &EvalConfig,
    truth: &Tensor,
    denoisers: Denoisers<'_>,
    on_row: &mut dyn FnMut(&EvalRow),
) -> Result<Vec<EvalRow>> {
    let (n, c, h, w) = truth.dims4()?;
    if n == 0 || cfg.samples < 2 {
        return Err(Error::invalid(
            "evaluation size",
            format!("{n} images × {} samples", cfg.samples),
            "need images and at least 2 samples (CRPS, MMD)",
        ));
    }
    let mut rows = Vec::new();
    for (t_index, (task_name, task)) in cfg.tasks.iter().enumerate() {
        // Operators and measurements: the same for every method.
        let mut rng = StdRng::seed_from_u64(
            cfg.seed ^ (t_index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
        );
        let mut cases = Vec::with_capacity(n);
        for i in 0..n {
            let op = task.operator(h, w, &mut rng)?;
            let x0 = truth.narrow(0, i, 1)?;
            let clean = op.forward(&x0)?;
            let noise = SeededNoise::new(&[cfg
                .seed
                .wrapping_mul(7919)
                .wrapping_add((t_index * n + i) as u64)])
            .normal_like(&clean)?;
            let y = op.restrict_measurement(&(clean + noise.affine(cfg.sigma_y, 0.0)?)?)?;
            cases.push(Case { op, y });
        }
        for choice in &cfg.methods {
            let method = choice.method(task);
            let started = Instant::now();
            let mut all = Vec::with_capacity(n);
            let mut nfe = 0;
            for start in (0..n).step_by(cfg.images_per_batch.max(1)) {
                let end = (start + cfg.images_per_batch.max(1)).min(n);
                let problem =
                    batched_problem(&cases[start..end], cfg.samples, (c, h, w), cfg.sigma_y)?;
                let seeds: Vec<u64> = (start * cfg.samples..end * cfg.samples)
                    .map(|k| cfg.seed.wrapping_mul(1_000_003).wrapping_add(k as u64))
                    .collect();
                let out =
                    sampler::sample(&method, denoisers, &problem, &seeds, &mut ignore_progress)?;
                nfe = out.nfe;
                all.push(out.samples.clamp(-1.0, 1.0)?);
            }
            let secs = started.elapsed().as_secs_f64();
            let samples = Tensor::cat(&all, 0)?;
            let mut row = score(
                task_name,
                &method.name(),
                nfe,
                &samples,
                truth,
                cfg.samples,
                secs,
            )?;
            row.features = feature_scores(&cfg.features, &samples, truth, cfg.samples)?;
            if cases[0].op.kind() == OperatorKind::Mask {
                row.hole = Some(hole_means(
                    &cases,
                    &samples,
                    truth,
                    cfg.samples,
                    cfg.features.alex.as_ref(),
                )?);
            }
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Mean hole scores of `samples` (`[N·S, C, H, W]`, image-major) over every case's hidden pixels.
fn hole_means(
    cases: &[Case],
    samples: &Tensor,
    truth: &Tensor,
    s: usize,
    lpips: Option<&Lpips>,
) -> Result<super::holes::HoleScores> {
    use crate::restore::from_tensor;
    let (_, _, h, w) = truth.dims4()?;
    let ones = Tensor::ones((1, 1, h, w), DType::F32, &Device::Cpu)?;
    let (mut p, mut q, mut l, mut t) = (0.0, 0.0, 0.0, 0.0);
    let (mut n, mut nl, mut nt) = (0usize, 0usize, 0usize);
    let (mut rr, mut nr) = (0.0, 0usize);
    for (i, case) in cases.iter().enumerate() {
        let m: Vec<f32> = case.op.forward(&ones)?.flatten_all()?.to_vec1()?;
        let fill: Vec<bool> = m.iter().map(|&v| v == 0.0).collect();
        if !fill.iter().any(|&f| f) {
            continue;
        }
        let truth_img = from_tensor(truth, i)?;
        for k in 0..s {
            let img = from_tensor(samples, i * s + k)?;
            let sc = super::holes::hole_scores(&img, &truth_img, &fill, lpips)?;
            p += sc.psnr;
            q += sc.ssim;
            n += 1;
            if let Some(v) = sc.lpips {
                l += v;
                nl += 1;
            }
            if sc.texture_ratio.is_finite() {
                t += sc.texture_ratio;
                nt += 1;
            }
            if sc.ring_ratio.is_finite() {
                rr += sc.ring_ratio;
                nr += 1;
            }
        }
    }
    let k = n.max(1) as f64;
    Ok(super::holes::HoleScores {
        psnr: p / k,
        ssim: q / k,
        lpips: (nl > 0).then(|| l / nl as f64),
        texture_ratio: if nt > 0 { t / nt as f64 } else { f64::NAN },
        ring_ratio: if nr > 0 { rr / nr as f64 } else { f64::NAN },
    })
}

/// The hole-only scores of the inpainting rows as a markdown table.
pub fn holes_markdown(rows: &[EvalRow]) -> String {
    let mut s = String::from(
        "| task | method | hole PSNR ↑ | hole SSIM ↑ | hole LPIPS-Alex ↓ | texture ratio (1 = natural) |\n|---|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let Some(h) = &r.hole else { continue };
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.3} | {} | {} |\n",
            r.task,
            r.method,
            h.psnr,
            h.ssim,
            h.lpips.map_or("–".into(), |v| format!("{v:.3}")),
            if h.texture_ratio.is_finite() {
                format!("{:.2}", h.texture_ratio)
            } else {
                "–".into()
            }
        ));
    }
    s
}

/// Scores `samples` (`[N·S, C, H, W]`, image-major) against `truth` (`[N, C, H, W]`).
fn score(
    task: &str,
    method: &str,
    nfe: usize,
    samples: &Tensor,
    truth: &Tensor,
    s: usize,
    secs: f64,
) -> Result<EvalRow> {
    let n = truth.dim(0)?;
    let per = |i: usize| samples.narrow(0, i * s, s);
    let (mut p, mut q, mut cr) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let xi = per(i)?;
        let ti = truth.narrow(0, i, 1)?;
        p += psnr_batch(&xi, &ti)?.iter().sum::<f64>() / s as f64;
        q += ssim_batch(&xi, &ti)?.iter().sum::<f64>() / s as f64;
        let unit = |t: &Tensor| -> Result<DMatrix<f64>> {
            Ok(columns_from_batch(t)?.map(|v| (v + 1.0) / 2.0))
        };
        let truth_col = unit(&ti)?;
        cr += crps(&unit(&xi)?, truth_col.as_slice(), CrpsForm::Fair)?;
    }
    let unit = |t: &Tensor| -> Result<DMatrix<f64>> {
        Ok(columns_from_batch(t)?.map(|v| (v + 1.0) / 2.0))
    };
    let mmd = mmd2_unbiased(&unit(samples)?, &unit(truth)?)?;
    Ok(EvalRow {
        task: task.to_owned(),
        method: method.to_owned(),
        nfe,
        psnr: p / n as f64,
        ssim: q / n as f64,
        mmd,
        crps: cr / n as f64,
        features: FeatureScores::default(),
        secs_per_sample: secs / (n * s) as f64,
        images: n,
        hole: None,
    })
}

/// Images per network call when computing features (bounds memory at 256×256).
const FEATURE_CHUNK: usize = 16;

/// LPIPS and VGG16-feature scores of `samples` (`[N·S, C, H, W]`, image-major) against `truth`.
pub fn feature_scores(
    nets: &FeatureNets,
    samples: &Tensor,
    truth: &Tensor,
    s: usize,
) -> Result<FeatureScores> {
    let n = truth.dim(0)?;
    let mut out = FeatureScores::default();
    if let Some(alex) = &nets.alex {
        let mut total = 0.0;
        for i in 0..n {
            let d = alex.distance(&samples.narrow(0, i * s, s)?, &truth.narrow(0, i, 1)?)?;
            total += d.iter().sum::<f64>() / s as f64;
        }
        out.lpips_alex = Some(total / n as f64);
    }
    if let Some(vgg) = &nets.vgg {
        let (mut lpips, mut crps_total) = (0.0, 0.0);
        let mut sample_embeddings = Vec::with_capacity(n * s);
        let mut truth_embeddings = Vec::with_capacity(n);
        for i in 0..n {
            let ft = vgg.features(&truth.narrow(0, i, 1)?)?;
            let et = Lpips::embedding_from_features(&ft)?;
            let mut es = Vec::with_capacity(s);
            for start in (0..s).step_by(FEATURE_CHUNK) {
                let len = FEATURE_CHUNK.min(s - start);
                let fx = vgg.features(&samples.narrow(0, i * s + start, len)?)?;
                lpips += vgg.distance_from_features(&fx, &ft)?.iter().sum::<f64>();
                es.push(Lpips::embedding_from_features(&fx)?);
            }
            let es = Tensor::cat(&es, 0)?.to_dtype(DType::F64)?;
            let cols = DMatrix::from_row_slice(s, es.dim(1)?, &es.flatten_all()?.to_vec1::<f64>()?)
                .transpose();
            let truth_col = et.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            crps_total += crps(&cols, &truth_col, CrpsForm::Fair)?;
            sample_embeddings.extend(cols.column_iter().map(nalgebra::Matrix::into_owned));
            truth_embeddings.push(nalgebra::DVector::from_vec(truth_col));
        }
        let xs = DMatrix::from_columns(&sample_embeddings);
        let ts = DMatrix::from_columns(&truth_embeddings);
        out.lpips_vgg = Some(lpips / (n * s) as f64);
        out.crps_vgg = Some(crps_total / n as f64);
        if n >= 2 {
            out.fd_vgg = Some(frechet_distance(&xs, &ts)?);
            out.kid_vgg = Some(kid(&xs, &ts)?);
            out.mmd_vgg = Some(mmd2_unbiased(&xs, &ts)?);
        }
    }
    Ok(out)
}

/// A markdown table of `rows`, grouped by task, best PSNR and CRPS per task in bold.
pub fn to_markdown(rows: &[EvalRow]) -> String {
    type Column = (
        &'static str,
        fn(&FeatureScores) -> Option<f64>,
        &'static str,
    );
    const FEATURE_COLUMNS: [Column; 6] = [
        ("LPIPS-Alex ↓", |f| f.lpips_alex, "{:.3}"),
        ("LPIPS-VGG ↓", |f| f.lpips_vgg, "{:.3}"),
        ("FD-VGG ↓", |f| f.fd_vgg, "{:.3}"),
        ("KID-VGG ↓", |f| f.kid_vgg, "{:.2e}"),
        ("MMD² VGG ↓", |f| f.mmd_vgg, "{:.2e}"),
        ("CRPS VGG ↓", |f| f.crps_vgg, "{:.4}"),
    ];
    let shown: Vec<&Column> = FEATURE_COLUMNS
        .iter()
        .filter(|(_, get, _)| rows.iter().any(|r| get(&r.features).is_some()))
        .collect();
    let mut s = String::from("| task | method | NFE | PSNR ↑ | SSIM ↑ | MMD² pix ↓ | CRPS pix ↓ |");
    for (name, _, _) in &shown {
        s.push_str(&format!(" {name} |"));
    }
    s.push_str(" s / sample |\n|---|---|---:|---:|---:|---:|---:|");
    for _ in &shown {
        s.push_str("---:|");
    }
    s.push_str("---:|\n");
    let mut tasks: Vec<&str> = Vec::new();
    for r in rows {
        if !tasks.contains(&r.task.as_str()) {
            tasks.push(&r.task);
        }
    }
    for t in tasks {
        let group: Vec<&EvalRow> = rows.iter().filter(|r| r.task == t).collect();
        let best_psnr = group
            .iter()
            .map(|r| r.psnr)
            .fold(f64::NEG_INFINITY, f64::max);
        let best_crps = group.iter().map(|r| r.crps).fold(f64::INFINITY, f64::min);
        for r in &group {
            let b = |v: String, best: bool| if best { format!("**{v}**") } else { v };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.3} | {:.2e} | {} |",
                r.task,
                r.method,
                r.nfe,
                b(format!("{:.2}", r.psnr), r.psnr == best_psnr),
                r.ssim,
                r.mmd,
                b(format!("{:.4}", r.crps), r.crps == best_crps),
            ));
            for (_, get, fmt) in &shown {
                let best = group
                    .iter()
                    .filter_map(|g| get(&g.features))
                    .fold(f64::INFINITY, f64::min);
                let cell = match get(&r.features) {
                    Some(v) => {
                        let text = if *fmt == "{:.2e}" {
                            format!("{v:.2e}")
                        } else if *fmt == "{:.4}" {
                            format!("{v:.4}")
                        } else {
                            format!("{v:.3}")
                        };
                        // Signed estimators (KID, MMD²) are not ranked: near zero they are noise.
                        b(text, v == best && *fmt != "{:.2e}")
                    }
                    None => "–".to_owned(),
                };
                s.push_str(&format!(" {cell} |"));
            }
            s.push_str(&format!(" {:.3} |\n", r.secs_per_sample));
        }
    }
    s
}
