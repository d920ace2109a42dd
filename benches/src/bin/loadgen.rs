//! Load generator: drives a running Palaver (or the ceiling) over real sockets and
//! prints one JSON line of results on stdout. See `--help`.

use std::process::ExitCode;

use clap::Parser;
use palaver_bench::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    palaver_bench::clock::now_ns(); // pin the clock epoch before any task runs
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(palaver_bench::scenarios::run(args));
    // Don't wait for lingering socket tasks to wind down.
    runtime.shutdown_background();
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
