//! Record files (JSONL, one result per line): finding each record's id without
//! building the whole record, splitting off a torn last line, and appending with
//! an fsync per record.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::ids::IdKey;

/// Why a line is not a usable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    NotJson(String),
    NotObject,
    NoId,
    BadId(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson(e) => write!(f, "not valid JSON ({e})"),
            Self::NotObject => f.write_str("not a JSON object"),
            Self::NoId => f.write_str("no id field"),
            Self::BadId(v) => write!(f, "id {v} is not a string or an integer"),
        }
    }
}

/// The id of one record line, validating the whole line as JSON on the way.
pub fn record_id(line: &[u8], id_field: &str) -> Result<IdKey, RecordError> {
    id_from_text(record_id_text(line, id_field)?)
}

/// The canonical id of an id's JSON text.
pub fn id_from_text(raw: &str) -> Result<IdKey, RecordError> {
    let value: Value =
        serde_json::from_str(raw).map_err(|e| RecordError::NotJson(e.to_string()))?;
    IdKey::from_value(&value).ok_or_else(|| RecordError::BadId(raw.to_owned()))
}

/// The id's JSON text exactly as the line has it (no copy), validating the
/// whole line as JSON on the way. For plain ids it equals the canonical
/// [`IdKey`] text, which lets a checker compare without allocating.
pub fn record_id_text<'l>(line: &'l [u8], id_field: &str) -> Result<&'l str, RecordError> {
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            // Still say "not JSON" for text that is not JSON at all.
            return match serde_json::from_slice::<IgnoredAny>(line) {
                Ok(_) => Err(RecordError::NotObject),
                Err(e) => Err(RecordError::NotJson(e.to_string())),
            };
        }
        None => return Err(RecordError::NotJson("empty line".into())),
    }
    let mut deserializer = serde_json::Deserializer::from_slice(line);
    let id = IdOfObject { field: id_field }
        .deserialize(&mut deserializer)
        .and_then(|id| deserializer.end().map(|()| id))
        .map_err(|e| RecordError::NotJson(e.to_string()))?;
    id.map(RawValue::get).ok_or(RecordError::NoId)
}

/// Visits an object, keeping only the value of one field.
pub(crate) struct IdOfObject<'a> {
    pub(crate) field: &'a str,
}

impl<'de> DeserializeSeed<'de> for IdOfObject<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for IdOfObject<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(is_id) = map.next_key_seed(KeyIs { field: self.field })? {
            if is_id && id.is_none() {
                id = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(id)
    }
}

/// Compares a key with the id field without allocating it.
pub(crate) struct KeyIs<'a> {
    pub(crate) field: &'a str,
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.field)
    }
}

/// The largest line buffer an appender keeps between records.
const LINE_KEPT: usize = 1 << 16;

/// A record file's bytes split into complete lines and a torn tail.
pub struct Lines<'a> {
    complete: &'a [u8],
    /// Bytes after the last newline: a write that a crash cut short.
    pub torn: &'a [u8],
}

impl<'a> Lines<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let end = memchr::memrchr(b'\n', bytes).map_or(0, |p| p + 1);
        Self {
            complete: &bytes[..end],
            torn: &bytes[end..],
        }
    }

    /// Non-blank complete lines: (1-based line number, byte range without the newline).
    pub fn iter(&self) -> impl Iterator<Item = (usize, Range<usize>)> + '_ {
        let mut start = 0;
        let mut number = 0;
        std::iter::from_fn(move || loop {
            if start >= self.complete.len() {
                return None;
            }
            let end = memchr::memchr(b'\n', &self.complete[start..])
                .map_or(self.complete.len(), |p| start + p);
            number += 1;
            let mut line_end = end;
            if line_end > start && self.complete[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            let range = start..line_end;
            start = end + 1;
            if !self.complete[range.clone()]
                .iter()
                .all(u8::is_ascii_whitespace)
            {
                return Some((number, range));
            }
        })
    }

    /// Number of the line a torn tail would have.
    pub fn torn_line_number(&self) -> usize {
        self.count() + 1
    }

    /// Complete lines (blank ones included).
    pub fn count(&self) -> usize {
        memchr::memchr_iter(b'\n', self.complete).count()
    }

    /// Bytes up to and with the last newline.
    pub fn complete_len(&self) -> usize {
        self.complete.len()
    }
}

/// An agent's output file, opened for appending: the torn tail of a crashed
/// writer is cut off first, and every record is fsynced before `append` returns.
pub struct RecordAppender {
    file: File,
    line: Vec<u8>,
}

/// What an agent file already held when it was opened.
pub struct Existing {
    /// Ids of the valid records, in file order.
    pub ids: Vec<IdKey>,
    /// Bytes of a torn last line that were cut off.
    pub torn_bytes: usize,
}

impl RecordAppender {
    pub fn open(path: &Path, id_field: &str) -> io::Result<(Self, Existing)> {
        let mut file = OpenOptions::new()
            .read(true)
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let lines = Lines::new(&bytes);
        let ids = lines
            .iter()
            .filter_map(|(_, range)| record_id(&bytes[range], id_field).ok())
            .collect();
        let torn_bytes = lines.torn.len();
        if torn_bytes > 0 {
            file.set_len((bytes.len() - torn_bytes) as u64)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok((
            Self {
                file,
                line: Vec::new(),
            },
            Existing { ids, torn_bytes },
        ))
    }

    /// Writes one record as one line and fsyncs it.
    pub fn append<T: serde::Serialize + ?Sized>(&mut self, record: &T) -> io::Result<()> {
        self.write(record)?;
        self.sync()
    }

    /// Writes one record as one line, durable once `sync` returns: records
    /// that finish together share one fsync.
    pub fn write<T: serde::Serialize + ?Sized>(&mut self, record: &T) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        let written = self.file.write_all(&self.line);
        // A batch's journal line can be megabytes: not kept for the next.
        if self.line.capacity() > LINE_KEPT {
            self.line = Vec::new();
        }
        written
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_come_from_the_named_field() {
        assert_eq!(
            record_id(
                br#"{"text": "a", "key": "x7", "n": [1, {"key": 2}]}"#,
                "key"
            ),
            Ok(IdKey::from_value(&json!("x7")).expect("id"))
        );
        assert_eq!(
            record_id(br#"{"text": "a"}"#, "key"),
            Err(RecordError::NoId)
        );
        assert_eq!(record_id(br#"[1, 2]"#, "id"), Err(RecordError::NotObject));
        assert!(matches!(
            record_id(br#"{"id": 1"#, "id"),
            Err(RecordError::NotJson(_))
        ));
        assert!(matches!(
            record_id(br#"{"id": 1} x"#, "id"),
            Err(RecordError::NotJson(_))
        ));
        assert!(matches!(
            record_id(b"hello", "id"),
            Err(RecordError::NotJson(_))
        ));
    }

    #[test]
    fn torn_tail_is_split_off() {
        let bytes = b"{\"id\":1}\n\n{\"id\":2}\r\n{\"id\":";
        let lines = Lines::new(bytes);
        let found: Vec<usize> = lines.iter().map(|(n, _)| n).collect();
        assert_eq!(found, vec![1, 3]);
        assert_eq!(lines.torn, b"{\"id\":");
        assert_eq!(lines.torn_line_number(), 4);
    }

    #[test]
    fn appender_truncates_torn_tail_then_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.jsonl");
        std::fs::write(&path, "{\"id\":1}\n{\"id\":2,\"out").expect("write");
        let (mut appender, existing) = RecordAppender::open(&path, "id").expect("open");
        assert_eq!(existing.ids.len(), 1);
        assert!(existing.torn_bytes > 0);
        appender.append(&json!({"id": 2})).expect("append");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"id\":1}\n{\"id\":2}\n"
        );
    }
}
