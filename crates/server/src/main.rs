//! `dlm_server`: the OpenAI-compatible block-diffusion server (same as `dlm serve`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "dlm_server",
    version,
    about = "OpenAI-compatible server for block-diffusion (Fast-dLLM v2) and autoregressive GGUF models"
)]
struct Cli {
    #[command(flatten)]
    args: server::ServeArgs,
    /// Kernel worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    server::init_logging();
    let cli = Cli::parse();
    match server::serve(cli.args, cli.threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
