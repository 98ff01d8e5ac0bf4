//! Merging record files: agent files → orchestrator file → segment file → final
//! output. Each input is checked against the ids it must hold; valid records are
//! written once each, in input order, into a file written atomically.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::ids::IdKey;
use crate::validate::{check_jsonl, Problem};

/// How the merged records are framed in the output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One record per line.
    Jsonl,
    /// One JSON array, one record per line inside it.
    JsonArray,
}

/// One input of a merge: a JSONL file and the ids it must hold, in input order.
pub struct MergeInput<'a> {
    pub path: PathBuf,
    pub ids: &'a [IdKey],
}

#[derive(Debug, Default)]
pub struct MergeSummary {
    pub records: usize,
    pub problems: Vec<Problem>,
}

impl MergeSummary {
    pub fn missing(&self) -> usize {
        self.problems.iter().map(Problem::missing_count).sum()
    }

    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }
}

/// Merges `inputs` (each already in input order relative to the others) into
/// `output`. Inputs are JSONL files whose records may be in any order; the
/// output holds every valid record once, in input order.
pub fn merge_files(
    inputs: &[MergeInput<'_>],
    id_field: &str,
    output: &Path,
    framing: Framing,
) -> io::Result<MergeSummary> {
    let mut summary = MergeSummary::default();
    write_atomic(output, |out| {
        if framing == Framing::JsonArray {
            out.write_all(b"[")?;
        }
        let mut first = true;
        for input in inputs {
            // Merged inputs (orchestrator and segment files) were written in order
            // by a previous step; an agent file may not be.
            let checked = check_jsonl(&input.path, input.ids, id_field, false)?;
            for record in checked.record_bytes() {
                match framing {
                    Framing::Jsonl => {
                        out.write_all(record)?;
                        out.write_all(b"\n")?;
                    }
                    Framing::JsonArray => {
                        out.write_all(if first { b"\n" } else { b",\n" })?;
                        out.write_all(record)?;
                    }
                }
                first = false;
            }
            summary.records += checked.records.len();
            summary.problems.extend(checked.problems);
        }
        if framing == Framing::JsonArray {
            out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
        }
        Ok(())
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_in_input_order_and_reports_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(&a, "{\"id\":2,\"x\":\"b\"}\n{\"id\":1,\"x\":\"a\"}\n").expect("write");
        std::fs::write(&b, "{\"id\":4}\n").expect("write");
        let ids: Vec<IdKey> = (1..=4).map(IdKey::from_line_number).collect();
        let inputs = [
            MergeInput {
                path: a,
                ids: &ids[..2],
            },
            MergeInput {
                path: b,
                ids: &ids[2..],
            },
        ];
        let out = dir.path().join("out.json");
        let summary = merge_files(&inputs, "id", &out, Framing::JsonArray).expect("merge");
        assert_eq!(summary.records, 3);
        assert_eq!(summary.missing(), 1);
        let text = std::fs::read_to_string(&out).expect("read");
        assert_eq!(
            text,
            "[\n{\"id\":1,\"x\":\"a\"},\n{\"id\":2,\"x\":\"b\"},\n{\"id\":4}\n]\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed.as_array().map(Vec::len), Some(3));
    }
}
