//! `agent_NN.task.json`: everything an agent needs to do its work.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::AgentSettings;

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
