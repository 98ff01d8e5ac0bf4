//! `nightshift completions SHELL`: the shell's completion script, generated
//! from the command-line definition, on stdout.

use clap::CommandFactory;
use clap_complete::Shell;

use shared::exit_codes;

use crate::cli::Cli;
use crate::error::Result;

pub fn completions(shell: Shell) -> Result<i32> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "nightshift", &mut std::io::stdout());
    Ok(exit_codes::SUCCESS)
}
