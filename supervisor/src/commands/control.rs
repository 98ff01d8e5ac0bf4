//! `nightshift control DIR --max-parallel N | --pause | --continue | --stop`:
//! changes a live run from another terminal, over its control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use shared::control::{ControlAction, ControlReply};

use crate::control::socket_path;
use crate::error::{Result, SupervisorError};
use crate::run::existing::open_run;
use crate::run::lock;

/// A live supervisor answers at once; one that does not is stuck or gone.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub fn control(dir: &Path, action: ControlAction) -> Result<i32> {
    if crate::run::pipeline::is_pipeline_dir(dir) {
        // Every stage working now (streaming stages run together; each
        // counts the others' agents towards max_parallel). Stages not
        // started yet start with the job's limits.
        let stages = crate::run::pipeline::stage_dirs(dir)?;
        let live: Vec<_> = stages
            .iter()
            .filter(|(_, stage)| {
                let run = shared::rundir::RunDir::new(stage);
                run.plan_json().exists() && lock::holder(&run).is_some()
            })
            .collect();
        if live.is_empty() {
            return Err(SupervisorError::NotLive(dir.to_owned()));
        }
        for (name, stage) in live {
            print!("stage {name}: ");
            control(stage, action)?;
        }
        return Ok(0);
    }
    let (run, _plan) = open_run(dir)?;
    let Some(pid) = lock::holder(&run).and_then(|pid| u32::try_from(pid).ok()) else {
        return Err(SupervisorError::NotLive(dir.to_owned()));
    };
    let path = socket_path(run.root(), pid);
    let cannot = |what: &str| SupervisorError::io(format!("{what} {}", path.display()));
    let mut stream =
        UnixStream::connect(&path).map_err(cannot("cannot reach the run's control socket"))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.write_all(action.to_line().as_bytes()))
        .map_err(cannot("cannot send to"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(cannot("no answer from"))?;
    match ControlReply::from_line(&line) {
        Some(reply) if reply.ok => {
            println!("{}", reply.message.unwrap_or_else(|| action.to_string()));
            Ok(0)
        }
        Some(reply) => Err(SupervisorError::Unsupported(format!(
            "the run refused {action}: {}",
            reply.error.unwrap_or_default()
        ))),
        None => Err(SupervisorError::Unsupported(format!(
            "the run answered {action} with {line:?}, not a control reply"
        ))),
    }
}
