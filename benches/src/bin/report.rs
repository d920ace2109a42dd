//! Benchmark report: reads run.sh's result lines (`benches/results/latest.jsonl` or a
//! committed `benches/measurements/*.jsonl`), prints the target table (met / missed) and
//! writes a self-contained HTML page with inline SVG charts (no network at build or view
//! time). See `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use palaver_bench::report::{Run, evaluate, render_html, targets_text};

/// Renders a benchmark report from run.sh's JSON result lines.
#[derive(Parser, Debug)]
#[command(name = "report")]
struct Args {
    /// Result lines, one JSON object per scenario and server (run.sh's latest.jsonl).
    jsonl: PathBuf,
    /// Where to write the HTML page (default: the input with `.html` instead of `.jsonl`).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// A line shown under the title, e.g. the machine and what else ran on it.
    #[arg(long, default_value = "")]
    note: String,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("report: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let text =
        std::fs::read_to_string(&args.jsonl).with_context(|| format!("reading {}", args.jsonl.display()))?;
    let results = Run::parse(&text).with_context(|| format!("parsing {}", args.jsonl.display()))?;
    let out = args.out.unwrap_or_else(|| args.jsonl.with_extension("html"));
    let source = args.jsonl.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let html = render_html(&results, &source, &args.note);
    std::fs::write(&out, html).with_context(|| format!("writing {}", out.display()))?;
    print!("{}", targets_text(&evaluate(&results)));
    eprintln!("report: wrote {}", out.display());
    Ok(())
}
