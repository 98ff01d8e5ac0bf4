//! nightshift-agent: reads the agent contract's environment, runs the task and
//! turns the result into the documented exit code.

use std::process::ExitCode;

use shared::exit_codes;

/// jemalloc rather than the system allocator: a record is made on an event
/// loop's thread and freed on the writer's, and glibc's arenas took a lock
/// for each such free (a tenth of the agent's CPU at thousands of requests a
/// second, measured with perf). mimalloc avoided that too, but asked for
/// transparent huge pages and zeroed 2 MiB ones again and again in short
/// agents (scripts/bench_llm.py: 10 agents of 1,000 requests used a fifth
/// more CPU than with jemalloc).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str = "\
nightshift-agent: the ready-made agent of nightshift

Started by the supervisor, configured through the environment:
  NIGHTSHIFT_TASK     path of the task file (items and [agent] settings)
  NIGHTSHIFT_OUTPUT   path of the JSONL file to append one record per item to
  NIGHTSHIFT_AGENT    the agent's name, for messages
  NIGHTSHIFT_ATTEMPT  which launch of this agent this is (default 1)
  NIGHTSHIFT_SOCKET   the supervisor's rate broker: a Unix socket's path, or
                      tcp:HOST:PORT (under Slurm). A permit is taken before
                      every backend call. Unset: no permits; not reachable: a
                      warning, and the agent goes on without them.
  NIGHTSHIFT_SECRET   the broker's per-run secret, for tcp:HOST:PORT

Rate limits (exec backend): a command that is rate-limited by its API says so
by exiting with code 75 (EX_TEMPFAIL), or by printing as its first stdout line
  NIGHTSHIFT_RATE_LIMITED [retry_after=SECONDS]
The agent then asks the broker to pause every agent's permits (retry_after, or
the broker's rate.backoff), or without a broker waits itself, and retries the
item with the same command without counting it against agent.item_retries (up
to 20 times per item; past that it is an ordinary failed attempt).

LLM backends (backend = openai | anthropic, settings in agent.llm): the
API key is read from the environment variable agent.llm.api_key_env names.
A 429 answer pauses that key for every agent (retry-after when given) and is
not counted against agent.item_retries; 5xx, timeouts and broken connections
are retried after a growing pause; other 4xx fail the item with the server's
message. A key answered with 401/403 is dropped for the next key of the list,
then the next [[agent.llm.fallback]] endpoint; with none left the agent stops.

Provider batches (agent.llm.mode = \"batch\"): each launch sends its items
not yet saved as one batch; the batch id goes to agent_NN.batch.jsonl
(beside the output file) before anything else, and a relaunch polls the
batches found there instead of submitting again. mode = \"auto\": the same,
until the time in NIGHTSHIFT_BATCH_ONLINE_AT (ms since the epoch, set by the
supervisor from the deadline): then open batches are cancelled, what they
finished is saved, and the items left go online.
  --cancel-batches    cancel this agent's batches still at the provider
                      (what `nightshift cancel RUN` runs for each agent)

Exit codes: 0 every item saved, 1 some items failed, 2 bad setup, 5 cannot go
on (no usable API key; the items not saved did not fail, resume them).
Options: --help, --version, --cancel-batches";

/// Reads the contract's environment, runs `work` on it, and turns how it
/// ended into the exit code.
fn launch(work: impl FnOnce(&agent::Setup) -> Result<i32, agent::AgentError>) -> ExitCode {
    let setup = match agent::Setup::from_env() {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("nightshift-agent: {:#}", anyhow::Error::from(error));
            return code(exit_codes::USAGE);
        }
    };
    match work(&setup) {
        Ok(exit) => code(exit),
        Err(error) => {
            let exit = error.exit_code();
            eprintln!("{}: {:#}", setup.agent, anyhow::Error::from(error));
            code(exit)
        }
    }
}

fn main() -> ExitCode {
    if let Some(arg) = std::env::args_os().nth(1) {
        return match arg.to_str() {
            Some("--help" | "-h") => {
                println!("{USAGE}");
                code(exit_codes::SUCCESS)
            }
            // 0 when every batch still running was cancelled.
            Some("--cancel-batches") => launch(|setup| {
                agent::cancel_batches(setup).map(|done| {
                    if done.failed.is_empty() {
                        exit_codes::SUCCESS
                    } else {
                        exit_codes::INCOMPLETE
                    }
                })
            }),
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
    launch(|setup| {
        agent::run(setup).map(|outcome| {
            eprintln!("{}: {outcome}", setup.agent);
            outcome.exit_code()
        })
    })
}

fn code(exit: i32) -> ExitCode {
    ExitCode::from(u8::try_from(exit).unwrap_or(1))
}
