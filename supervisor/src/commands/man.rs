//! `nightshift man`: the manual page, generated from the command-line
//! definition, as roff on stdout (`nightshift man | man -l -`, or saved as
//! nightshift.1 in a man directory). Printed by the binary rather than built
//! as a file, so it ships with it and always matches it.

use clap::CommandFactory;

use shared::exit_codes;

use crate::cli::Cli;
use crate::error::{Result, SupervisorError};

pub fn man() -> Result<i32> {
    let page = clap_mangen::Man::new(Cli::command());
    let mut out = std::io::stdout().lock();
    page.render(&mut out)
        .map_err(SupervisorError::io("cannot write the manual page"))?;
    Ok(exit_codes::SUCCESS)
}
