//! Merging record files: agent files → orchestrator file → segment file → final
//! output. Each input is checked against the ids it must hold; valid records are
//! written once each, in input order, into a file written atomically.
//!
//! A merged file is valid by construction (only checked records go in, each
//! once, in order). So a higher level does not parse again a file that a lower
//! level produced and that is unchanged since — same size and modification time
//! as its [`FileStamp`] says — and complete: it copies its bytes. Any other
//! input (an agent file, a file edited or rewritten since, an incomplete one)
//! is checked record by record.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

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

/// What a merge wrote: enough to recognise the file unchanged later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub bytes: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: u64,
    pub records: usize,
}

impl FileStamp {
    pub fn of(path: &Path, records: usize) -> io::Result<Self> {
        let (bytes, modified_ns) = size_and_time(path)?;
        Ok(Self {
            bytes,
            modified_ns,
            records,
        })
    }

    /// The file is still exactly what was stamped.
    pub fn matches(&self, path: &Path) -> bool {
        size_and_time(path).is_ok_and(|(bytes, modified_ns)| {
            bytes == self.bytes && modified_ns == self.modified_ns
        })
    }
}

fn size_and_time(path: &Path) -> io::Result<(u64, u64)> {
    let metadata = std::fs::metadata(path)?;
    let since_epoch = metadata
        .modified()?
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Ok((
        metadata.len(),
        u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX),
    ))
}

/// Where a merge input's ids come from: read only when the file must be
/// checked record by record (a stamped, unchanged file is copied as it is), so
/// a merge holds at most one input's ids at a time.
pub type IdSource<'a> = Box<dyn Fn() -> io::Result<Vec<IdKey>> + Send + Sync + 'a>;

/// One input of a merge: a JSONL file and the ids it must hold, in input order.
pub struct MergeInput<'a> {
    pub path: PathBuf,
    /// How many ids `ids` gives.
    pub items: usize,
    pub ids: IdSource<'a>,
    /// Set when this file was written by an earlier merge (see the module docs).
    pub stamp: Option<FileStamp>,
}

#[derive(Debug, Default)]
pub struct MergeSummary {
    pub records: usize,
    pub problems: Vec<Problem>,
    /// The merged file as written.
    pub stamp: Option<FileStamp>,
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
        let mut first = true;
        if framing == Framing::JsonArray {
            out.write_all(b"[")?;
        }
        for input in inputs {
            let trusted = input
                .stamp
                .filter(|s| s.records == input.items && s.matches(&input.path));
            if trusted.is_some() {
                copy_records(&input.path, out, framing, &mut first)?;
                summary.records += input.items;
                continue;
            }
            let ids = (input.ids)()?;
            let checked = check_jsonl(&input.path, &ids, id_field, false)?;
            for record in checked.record_bytes() {
                write_record(out, record, framing, &mut first)?;
            }
            summary.records += checked.records.len();
            summary.problems.extend(checked.problems);
        }
        if framing == Framing::JsonArray {
            out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
        }
        Ok(())
    })?;
    summary.stamp = Some(FileStamp::of(output, summary.records)?);
    Ok(summary)
}

fn write_record(
    out: &mut impl Write,
    record: &[u8],
    framing: Framing,
    first: &mut bool,
) -> io::Result<()> {
    match framing {
        Framing::Jsonl => {
            out.write_all(record)?;
            out.write_all(b"\n")?;
        }
        Framing::JsonArray => {
            out.write_all(if *first { b"\n" } else { b",\n" })?;
            out.write_all(record)?;
        }
    }
    *first = false;
    Ok(())
}

/// Copies the records of a trusted JSONL file: whole (in the kernel where it
/// can) for JSONL, line by line with separators for a JSON array.
fn copy_records(
    path: &Path,
    out: &mut BufWriter<&File>,
    framing: Framing,
    first: &mut bool,
) -> io::Result<()> {
    let mut source = File::open(path)?;
    if framing == Framing::Jsonl {
        out.flush()?;
        io::copy(&mut source, out.get_mut())?;
        *first = false;
        return Ok(());
    }
    let mut buffer = vec![0u8; 1 << 20];
    let mut at_line_start = true;
    loop {
        let n = match source.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut chunk = &buffer[..n];
        while !chunk.is_empty() {
            if at_line_start {
                out.write_all(if *first { b"\n" } else { b",\n" })?;
                *first = false;
            }
            match memchr::memchr(b'\n', chunk) {
                Some(end) => {
                    out.write_all(&chunk[..end])?;
                    chunk = &chunk[end + 1..];
                    at_line_start = true;
                }
                None => {
                    out.write_all(chunk)?;
                    chunk = &[];
                    at_line_start = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::RangeInclusive<usize>) -> (usize, IdSource<'static>) {
        let ids: Vec<IdKey> = range.map(IdKey::from_line_number).collect();
        (ids.len(), Box::new(move || Ok(ids.clone())))
    }

    #[test]
    fn merges_in_input_order_and_reports_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(&a, "{\"id\":2,\"x\":\"b\"}\n{\"id\":1,\"x\":\"a\"}\n").expect("write");
        std::fs::write(&b, "{\"id\":4}\n").expect("write");
        let (first, second) = (ids(1..=2), ids(3..=4));
        let inputs = [
            MergeInput {
                path: a,
                items: first.0,
                ids: first.1,
                stamp: None,
            },
            MergeInput {
                path: b,
                items: second.0,
                ids: second.1,
                stamp: None,
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

    #[test]
    fn trusted_inputs_are_copied_and_changed_ones_checked_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lower = dir.path().join("lower.jsonl");
        std::fs::write(&lower, "{\"id\":1}\n{\"id\":2}\n").expect("write");
        let (items, source) = ids(1..=2);
        let first = merge_files(
            &[MergeInput {
                path: lower.clone(),
                items,
                ids: source,
                stamp: None,
            }],
            "id",
            &dir.path().join("mid.jsonl"),
            Framing::Jsonl,
        )
        .expect("merge");
        let mid = dir.path().join("mid.jsonl");
        let top = dir.path().join("top.json");
        let trusted = MergeInput {
            path: mid.clone(),
            items,
            ids: Box::new(|| Err(io::Error::other("a trusted file is not checked"))),
            stamp: first.stamp,
        };
        merge_files(&[trusted], "id", &top, Framing::JsonArray).expect("merge");
        assert_eq!(
            std::fs::read_to_string(&top).expect("read"),
            "[\n{\"id\":1},\n{\"id\":2}\n]\n"
        );

        // Edited after its merge: the stamp no longer matches, so it is checked.
        std::fs::write(&mid, "{\"id\":1}\nnot json\n").expect("tamper");
        let checked = MergeInput {
            path: mid,
            items,
            ids: ids(1..=2).1,
            stamp: first.stamp,
        };
        let summary = merge_files(&[checked], "id", &top, Framing::JsonArray).expect("merge");
        assert!(summary.has_errors());
        assert_eq!(summary.records, 1);
    }
}
