//! `bench`: Gantry against the reference node (issue 7). See README "Benchmarks".
//!
//!   bench [--rounds N] [--out DIR] [--quick] [--p5-only]

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use gantry_e2e::bench::{report, run};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Benchmark gantry node against the upstream kubelet on containerd's CRI, on one test bed"
)]
struct Cli {
    /// A/B alternation rounds of P1, P2 and P6.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Where results.md, results.json, startup.svg and critest's output go
    /// (default: e2e/bench-results/<date>, or <date>-quick).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fewer pods, shorter windows and fewer samples, for development.
    #[arg(long)]
    quick: bool,
    /// Only P5 (critest -benchmark on both CRIs), for work on CRI latencies; the
    /// other rows stay empty.
    #[arg(long)]
    p5_only: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Several rustls crypto providers may be compiled in (feature unification with
    // the gantry binary): choose ring, as gantry does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let out = cli.out.unwrap_or_else(|| {
        let date = jiff::Zoned::now().strftime("%Y-%m-%d").to_string();
        gantry_e2e::paths::repo_root()
            .join("e2e/bench-results")
            .join(if cli.quick {
                format!("{date}-quick")
            } else {
                date
            })
    });
    let opts = run::Options {
        rounds: cli.rounds,
        out: out.clone(),
        quick: cli.quick,
        p5_only: cli.p5_only,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (res, outcome) = rt.block_on(run::run(&opts));
    std::fs::create_dir_all(&out)?;
    let md = report::write(&res, &out)?;
    println!("{md}");
    eprintln!("bench: results in {}", out.display());
    outcome
}
