//! nightshift-agent: reads the agent contract's environment, runs the task and
//! turns the result into the documented exit code.

use std::process::ExitCode;

use shared::exit_codes;

const USAGE: &str = "\
nightshift-agent: the ready-made agent of nightshift

Started by the supervisor, configured through the environment:
  NIGHTSHIFT_TASK     path of the task file (items and [agent] settings)
  NIGHTSHIFT_OUTPUT   path of the JSONL file to append one record per item to
  NIGHTSHIFT_AGENT    the agent's name, for messages
  NIGHTSHIFT_ATTEMPT  which launch of this agent this is (default 1)

Exit codes: 0 every item saved, 1 some items failed, 2 bad setup.
Options: --help, --version";

fn main() -> ExitCode {
    if let Some(arg) = std::env::args_os().nth(1) {
        return match arg.to_str() {
            Some("--help" | "-h") => {
                println!("{USAGE}");
                code(exit_codes::SUCCESS)
            }
            Some("--version" | "-V") => {
                println!("nightshift-agent {}", env!("CARGO_PKG_VERSION"));
                code(exit_codes::SUCCESS)
            }
            _ => {
                eprintln!(
                    "nightshift-agent: unexpected argument {arg:?}; it takes none (see --help)"
                );
                code(exit_codes::USAGE)
            }
        };
    }
    let setup = match agent::Setup::from_env() {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("nightshift-agent: {:#}", anyhow::Error::from(error));
            return code(exit_codes::USAGE);
        }
    };
    match agent::run(&setup) {
        Ok(outcome) => {
            eprintln!("{}: {outcome}", setup.agent);
            code(outcome.exit_code())
        }
        Err(error) => {
            let exit = error.exit_code();
            eprintln!("{}: {:#}", setup.agent, anyhow::Error::from(error));
            code(exit)
        }
    }
}

fn code(exit: i32) -> ExitCode {
    ExitCode::from(u8::try_from(exit).unwrap_or(1))
}
