//! `agent_NN.task.json`: everything an agent needs to do its work.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::ids::IdKey;
use crate::job::AgentSettings;
use crate::records::record_id;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskFile {
    /// The agent's name, e.g. `segment_01/orch_02/agent_03`.
    pub agent: String,
    /// The field of each item (and record) that holds its id.
    pub id_field: String,
    /// The agent's items, whole, in input order.
    pub items: Vec<Value>,
    /// The job's [agent] section.
    pub settings: AgentSettings,
    /// Whether every call asks the rate broker for a permit
    /// (`JobSettings::permits_from_start`: the job sets limits). When false,
    /// an agent asks only where a limit may show or once one has
    /// (nightshift-agent's `PermitPolicy`): a run without limits sends the
    /// broker nothing.
    #[serde(default)]
    pub permits: bool,
}

/// The ids of an agent's items, in input order, read from its task file: the
/// plan in memory keeps only counts, and this is where one agent's ids come
/// from when a check or a merge needs them.
pub fn read_task_ids(path: &Path) -> io::Result<Vec<IdKey>> {
    #[derive(Deserialize)]
    struct ItemsOnly {
        id_field: String,
        items: Vec<Box<RawValue>>,
    }
    let bytes = std::fs::read(path)?;
    let task: ItemsOnly = serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    task.items
        .iter()
        .map(|item| {
            record_id(item.get().as_bytes(), &task.id_field).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })
        })
        .collect()
}
