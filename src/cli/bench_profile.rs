//! `eps-studio bench --profile`: where a forward pass of the network spends its time, layer by
//! layer and op by op, against the GEMM it is built on, measured with the same library in the
//! same run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use candle_core::{DType, Device, Tensor};

use super::bench::BenchArgs;
use crate::denoiser::profile::{self, Record};
use crate::denoiser::{Conditioning, ModelFile, Network};

/// Seconds of the fastest of `repeats` runs of `f` (after one warm-up run).
fn best_of(repeats: usize, f: &mut dyn FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// GFLOP/s of candle's CPU matrix product `[m, k] · [k, n]`, best of `repeats`.
fn gemm_rate(m: usize, k: usize, n: usize, repeats: usize) -> anyhow::Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)?;
    let secs = best_of(repeats, &mut || {
        a.matmul(&b)?;
        Ok(())
    })?;
    Ok(2.0 * (m * k * n) as f64 / secs / 1e9)
}

/// One forward pass of `net` on a `b × 3 × n × n` input (EPS networks with a conditioning of
/// the same size).
fn forward(net: &Network, b: usize, n: usize) -> anyhow::Result<()> {
    let x = Tensor::randn(0f32, 1.0, (b, 3, n, n), &Device::Cpu)?;
    let s = Tensor::full(1.0f64, b, &Device::Cpu)?;
    let inner = net.inner();
    if inner.is_conditional() {
        let cond = Conditioning {
            obs: x.clone(),
            variance: Tensor::ones((b, 1, n, n), DType::F32, &Device::Cpu)?,
        };
        inner.forward_padded(&x, &s, Some(&cond))?;
    } else {
        inner.forward_padded(&x, &s, None)?;
    }
    Ok(())
}

#[derive(Default, Clone)]
struct Sum {
    calls: usize,
    seconds: f64,
    flops: f64,
    bytes: f64,
}

impl Sum {
    fn add(&mut self, r: &Record) {
        self.calls += 1;
        self.seconds += r.seconds;
        self.flops += r.flops;
        self.bytes += r.bytes;
    }
}

fn rate(x: f64, secs: f64) -> String {
    if x > 0.0 && secs > 0.0 {
        format!("{:.1}", x / secs / 1e9)
    } else {
        "–".into()
    }
}

/// The profile of one network: a table by kind of operation and the slowest layers.
fn network_profile(
    name: &str,
    net: &Network,
    (b, n): (usize, usize),
    repeats: usize,
    gemm: f64,
) -> anyhow::Result<String> {
    forward(net, b, n)?;
    let plain = best_of(repeats, &mut || forward(net, b, n))?;
    // Recorded runs: the records of the fastest run.
    let mut best: Option<(f64, Vec<Record>)> = None;
    for _ in 0..repeats.max(1) {
        profile::enable(true);
        let t = Instant::now();
        let out = forward(net, b, n);
        let secs = t.elapsed().as_secs_f64();
        let records = profile::take();
        profile::enable(false);
        out?;
        if best.as_ref().is_none_or(|(s, _)| secs < *s) {
            best = Some((secs, records));
        }
    }
    let (total, records) = best.context("no profiled run")?;
    let flops = b as f64 * net.inner().config().flops(n, n) as f64;
    let mut by_kind: BTreeMap<&str, Sum> = BTreeMap::new();
    let mut by_layer: BTreeMap<(&str, &str), Sum> = BTreeMap::new();
    for r in &records {
        by_kind.entry(r.kind).or_default().add(r);
        by_layer
            .entry((r.kind, r.detail.as_str()))
            .or_default()
            .add(r);
    }
    let top: f64 = records
        .iter()
        .filter(|r| !r.kind.starts_with('·'))
        .map(|r| r.seconds)
        .sum();
    let mut s = format!(
        "### {name} network, {b} × 3 × {n} × {n}\n\n\
         Forward pass {plain:.3} s unprofiled ({:.1} GFLOP/s of its {:.2} GFLOP: {:.0}% of the \
         GEMM's {gemm:.1} GFLOP/s); profiled {total:.3} s, of which the timed operations cover \
         {top:.3} s and the rest (preconditioning, inputs, bookkeeping) {:.3} s.\n\n\
         | operation | calls | seconds | share of the pass | GFLOP | GFLOP/s | GB/s |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        flops / plain / 1e9,
        flops / 1e9,
        100.0 * flops / plain / 1e9 / gemm,
        (total - top).max(0.0),
    );
    let mut kinds: Vec<(&&str, &Sum)> = by_kind.iter().collect();
    kinds.sort_by(|a, b| {
        (a.0.starts_with('·'), -a.1.seconds)
            .partial_cmp(&(b.0.starts_with('·'), -b.1.seconds))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for (kind, sum) in kinds {
        let label = if kind.starts_with('·') {
            format!("{kind} (inside the 3×3 and strided convolutions)")
        } else {
            (*kind).to_string()
        };
        s.push_str(&format!(
            "| {label} | {} | {:.4} | {:.1}% | {:.2} | {} | {} |\n",
            sum.calls,
            sum.seconds,
            100.0 * sum.seconds / total,
            sum.flops / 1e9,
            rate(sum.flops, sum.seconds),
            rate(sum.bytes, sum.seconds),
        ));
    }
    s.push_str(&format!(
        "\nThe {} slowest layers:\n\n| operation | shape | calls | seconds | share | GFLOP/s |\n|---|---|---:|---:|---:|---:|\n",
        12
    ));
    let mut layers: Vec<(&(&str, &str), &Sum)> = by_layer
        .iter()
        .filter(|((k, _), _)| !k.starts_with('·'))
        .collect();
    layers.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    for ((kind, detail), sum) in layers.into_iter().take(12) {
        s.push_str(&format!(
            "| {kind} | {detail} | {} | {:.4} | {:.1}% | {} |\n",
            sum.calls,
            sum.seconds,
            100.0 * sum.seconds / total,
            rate(sum.flops, sum.seconds),
        ));
    }
    Ok(s)
}

fn load(path: &Path) -> anyhow::Result<Network> {
    let f = ModelFile::load(path, &Device::Cpu)
        .with_context(|| format!("cannot load {}", path.display()))?;
    Ok(Network::new(f.build(&Device::Cpu)?))
}

/// The report.
pub fn profile_report(args: &BenchArgs) -> anyhow::Result<()> {
    let n = args.size;
    let repeats = args.repeats.max(1);
    let prior = load(&args.prior)?;
    let eps = load(&args.eps)?;
    eprintln!("GEMM reference …");
    let square = gemm_rate(2048, 2048, 2048, repeats)?;
    // The network's largest product class: a 3×3 convolution of 64 channels at 128×128 is
    // 16384 × 577 · 577 × 64.
    let conv_like = gemm_rate(16384, 577, 64, repeats)?;
    let mut report = format!(
        "# Where a forward pass goes\n\nMachine: {} CPU threads. Command:\n\n```\n./target/release/eps-studio bench --profile --repeats {repeats}{}{}\n```\n\n\
         candle's CPU matrix product (the library every convolution here multiplies with), best of {repeats}: \
         {square:.1} GFLOP/s on 2048² · 2048², {conv_like:.1} GFLOP/s on 16384 × 577 · 577 × 64 \
         (a 3×3 convolution of 64 channels at 128 × 128, bias row included). The forward pass's \
         share below is of the 2048² rate.\n\n",
        rayon::current_num_threads(),
        if args.batch > 1 {
            format!(" --batch {}", args.batch)
        } else {
            String::new()
        },
        args.out
            .as_ref()
            .map(|p| format!(" --out {}", p.display()))
            .unwrap_or_default(),
    );
    for (name, net) in [("prior", &prior), ("EPS", &eps)] {
        eprintln!("profiling the {name} network …");
        report.push_str(&network_profile(
            name,
            net,
            (args.batch, n),
            repeats,
            square,
        )?);
        report.push('\n');
    }
    println!("{report}");
    if let Some(out) = &args.out {
        crate::fsutil::write(out, report.as_bytes(), args.overwrite)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
