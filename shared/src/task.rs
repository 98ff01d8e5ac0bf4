//! `agent_NN.task.json`: everything an agent needs to do its work.

use std::fmt;
use std::io;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::IdKey;
use crate::job::AgentSettings;
use crate::records::{id_from_text, IdOfObject};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskFile {
    /// The agent's name, e.g. `segment_01/orch_02/agent_03`.
    pub agent: String,
    /// The field of each item (and record) that holds its id.
    pub id_field: String,
    /// The agent's items, whole, in input order, as their JSON text: an
    /// agent holds a task of 50,000 items as text and parses each when it
    /// works on it (as JSON values they would take several times the space).
    pub items: Vec<Box<RawValue>>,
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
/// from when a check or a merge needs them. Only the id of each item is
/// taken out, without copying the items.
pub fn read_task_ids(path: &Path) -> io::Result<Vec<IdKey>> {
    let bytes = std::fs::read(path)?;
    let invalid = |e: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    };
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let texts = TaskIds
        .deserialize(&mut deserializer)
        .map_err(|e| invalid(e.to_string()))?;
    texts
        .into_iter()
        .map(|text| match text {
            Some(text) => id_from_text(text).map_err(|e| invalid(e.to_string())),
            None => Err(invalid("an item has no id".to_owned())),
        })
        .collect()
}

/// The task file's `items`, each as its id's JSON text. The supervisor writes
/// `id_field` before `items`, which lets one pass pick the ids out.
struct TaskIds;

impl<'de> DeserializeSeed<'de> for TaskIds {
    type Value = Vec<Option<&'de str>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TaskIds {
    type Value = Vec<Option<&'de str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a task file")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id_field: Option<String> = None;
        let mut ids = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            match (key, &id_field) {
                ("id_field", _) => id_field = Some(map.next_value()?),
                ("items", Some(field)) => {
                    ids = Some(map.next_value_seed(ItemIds { field })?);
                }
                ("items", None) => {
                    return Err(de::Error::custom("`items` comes before `id_field`"))
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        ids.ok_or_else(|| de::Error::missing_field("items"))
    }
}

/// An array of items, each as the JSON text of its id (None: it has none).
struct ItemIds<'a> {
    field: &'a str,
}

impl<'de> DeserializeSeed<'de> for ItemIds<'_> {
    type Value = Vec<Option<&'de str>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemIds<'_> {
    type Value = Vec<Option<&'de str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(id) = seq.next_element_seed(IdOfObject { field: self.field })? {
            ids.push(id.map(RawValue::get));
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_of_a_task_file_come_out_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent_01.task.json");
        std::fs::write(
            &path,
            r#"{"agent":"a","id_field":"key","items":[{"x":{"key":9},"key":"b\u0041"},{"key":7}],"settings":{}}"#,
        )
        .expect("write");
        let ids = read_task_ids(&path).expect("ids");
        assert_eq!(
            ids,
            vec![
                IdKey::from_value(&serde_json::json!("bA")).expect("id"),
                IdKey::from_line_number(7)
            ]
        );
        std::fs::write(&path, r#"{"id_field":"key","items":[{"x":1}]}"#).expect("write");
        assert!(read_task_ids(&path).is_err(), "an item without its id");
    }
}
