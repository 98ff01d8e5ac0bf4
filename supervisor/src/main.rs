//! `nightshift`: parse the command line, set up logging, run, exit with the
//! documented code.

use clap::Parser;

use supervisor::cli::Cli;

fn main() {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing::level_filters::LevelFilter::ERROR,
        (false, 0) => tracing::level_filters::LevelFilter::WARN,
        (false, 1) => tracing::level_filters::LevelFilter::INFO,
        _ => tracing::level_filters::LevelFilter::DEBUG,
    };
    supervisor::logging::init(level);
    let code = match supervisor::execute(cli) {
        Ok(code) => code,
        Err(error) => {
            let report = anyhow::Error::new(error);
            eprintln!("nightshift: {report:#}");
            report
                .downcast_ref::<supervisor::error::SupervisorError>()
                .map_or(
                    shared::exit_codes::INCOMPLETE,
                    supervisor::error::SupervisorError::exit_code,
                )
        }
    };
    std::process::exit(code);
}
