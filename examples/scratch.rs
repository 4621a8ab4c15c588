use eps_studio::eval::posterior_check::*;
use eps_studio::sampler::*;
use eps_studio::inverse::dense::*;
use std::sync::Arc;
fn main() -> eps_studio::Result<()> {
    let cfg = CheckConfig { samples: 4000, floor_pairs: 0, ..Default::default() };
    for op in CheckOperator::ALL {
    let c = OperatorCheck::new(op, &cfg)?;
    let oracle = eps_studio::prior::GmmPosteriorOracle::new(Arc::clone(&c.prior), &c.problem)?;
    let seeds: Vec<u64> = (0..4000).collect();
    let exact = &c.reference;
    let ev = exact.column_variance();
    for (solver, steps, rho) in [(Solver::Heun, 20, 7.0), (Solver::Heun, 20, 30.0), (Solver::Heun, 80, 7.0)] {
        let cfgs = EpsConfig { steps, solver, schedule: EdmSchedule { rho, ..Default::default() } };
        let out = eps::sample(&oracle, &c.problem, &seeds, &cfgs, &mut ignore_progress)?;
        let s = columns_from_batch(&out.samples)?;
        let sv = s.row_variance_tr();
        let _ = sv;
        let sv = s.transpose().row_variance();
        let ev2 = exact.transpose().row_variance();
        let ratios: Vec<f64> = sv.iter().zip(ev2.iter()).map(|(a,b)| a/b).collect();
        let mut r = ratios.clone(); r.sort_by(f64::total_cmp);
        let mmd = eps_studio::eval::metrics::mmd2_unbiased(&s, exact)?;
        println!("{op:?} {solver:?} {steps} rho {rho}: var ratio min {:.3} med {:.3} max {:.3}  mmd {mmd:.2e}", r[0], r[32], r[63]);
    }
    let _ = ev;
    }
    Ok(())
}
