//! The first pass over the input: every item parses, has an id, and no id is
//! repeated — in memory that does not grow with the number of items.
//!
//! Repeats are found with a Bloom filter (one bit per input byte, at most
//! 32 MiB): an id it may have seen before is a candidate, and only candidates
//! are checked exactly, by a second pass that notes where each first appears.
//! A false candidate costs that second pass, never a wrong answer.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

use super::reader::ItemReader;
use super::{syntax, IdProblems, InputError};
use crate::ids::IdKey;
use crate::job::InputFormat;
use crate::records::{record_id, RecordError};

/// Bits of the filter: one per byte of input, between these bounds.
const MIN_BITS: u64 = 1 << 20;
const MAX_BITS: u64 = 1 << 28;
/// Probes per id: near the optimum for ten or more bits per id.
const PROBES: u64 = 7;

/// An input that passed the first pass: how many items it holds, and how to
/// read them again.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    pub format: InputFormat,
    pub id_field: String,
    pub count: usize,
}

impl InputFile {
    /// The items again, in order, each with its line.
    pub fn items(&self) -> Result<ItemReader, InputError> {
        ItemReader::open(&self.path, self.format, &self.id_field)
    }

    /// The items again with their ids (which the first pass checked).
    pub fn items_with_ids(
        &self,
    ) -> Result<
        impl Iterator<Item = Result<(IdKey, Box<serde_json::value::RawValue>), InputError>> + '_,
        InputError,
    > {
        Ok(self.items()?.map(move |item| {
            let (line, raw) = item?;
            let id = record_id(raw.get().as_bytes(), &self.id_field)
                .map_err(|e| syntax(&self.path, line, e.to_string()))?;
            Ok((id, raw))
        }))
    }
}

/// Reads the input once and checks that every item has a unique id.
pub fn check_input(
    path: &Path,
    format: InputFormat,
    id_field: &str,
) -> Result<InputFile, InputError> {
    let bytes = std::fs::metadata(path)
        .map_err(|source| InputError::Read {
            path: path.to_owned(),
            source,
        })?
        .len();
    let mut seen = Bloom::new(bytes.clamp(MIN_BITS, MAX_BITS));
    let mut offenders = Vec::new();
    let mut candidates: HashSet<IdKey> = HashSet::new();
    let mut count = 0;
    let mut any = false;
    for item in ItemReader::open(path, format, id_field)? {
        let (line, raw) = item?;
        any = true;
        let id = match record_id(raw.get().as_bytes(), id_field) {
            Ok(id) => id,
            Err(RecordError::NoId) => {
                offenders.push((line, format!("no `{id_field}` field")));
                continue;
            }
            Err(RecordError::BadId(value)) => {
                offenders.push((
                    line,
                    format!("`{id_field}` is {value}, not a string or an integer"),
                ));
                continue;
            }
            Err(RecordError::NotObject) => {
                return Err(syntax(path, line, "an item must be a JSON object"))
            }
            Err(RecordError::NotJson(e)) => {
                return Err(syntax(path, line, format!("not valid JSON: {e}")))
            }
        };
        if seen.insert(id.as_str()) {
            candidates.insert(id);
        }
        count += 1;
    }
    if !any {
        return Err(InputError::Empty {
            path: path.to_owned(),
        });
    }
    if !candidates.is_empty() {
        offenders.extend(repeats(path, format, id_field, &candidates)?);
        offenders.sort_by_key(|(line, _)| *line);
    }
    if !offenders.is_empty() {
        return Err(InputError::BadIds(IdProblems {
            path: path.to_owned(),
            id_field: id_field.to_owned(),
            offenders,
        }));
    }
    Ok(InputFile {
        path: path.to_owned(),
        format,
        id_field: id_field.to_owned(),
        count,
    })
}

/// The second pass: the repeats among the candidates, each with the line of
/// the id's first appearance.
fn repeats(
    path: &Path,
    format: InputFormat,
    id_field: &str,
    candidates: &HashSet<IdKey>,
) -> Result<Vec<(usize, String)>, InputError> {
    let mut first: HashMap<IdKey, usize> = HashMap::new();
    let mut found = Vec::new();
    for item in ItemReader::open(path, format, id_field)? {
        let (line, raw) = item?;
        let Ok(id) = record_id(raw.get().as_bytes(), id_field) else {
            continue;
        };
        if !candidates.contains(&id) {
            continue;
        }
        match first.get(&id) {
            Some(at) => found.push((line, format!("duplicate id {id} (first at line {at})"))),
            None => {
                first.insert(id, line);
            }
        }
    }
    Ok(found)
}

/// A Bloom filter over id texts.
struct Bloom {
    words: Vec<u64>,
    bits: u64,
    hashers: (RandomState, RandomState),
}

impl Bloom {
    fn new(bits: u64) -> Self {
        Self {
            words: vec![0; bits.div_ceil(64) as usize],
            bits,
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    /// Adds `key`; true when every one of its bits was set already (it may
    /// have been added before).
    fn insert(&mut self, key: &str) -> bool {
        let (a, b) = (
            self.hashers.0.hash_one(key),
            self.hashers.1.hash_one(key) | 1,
        );
        let mut present = true;
        for probe in 0..PROBES {
            let bit = a.wrapping_add(probe.wrapping_mul(b)) % self.bits;
            let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
            present &= self.words[word] & mask != 0;
            self.words[word] |= mask;
        }
        present
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_flags_every_repeat_and_few_newcomers() {
        let mut bloom = Bloom::new(MIN_BITS);
        let fresh = (0..50_000).filter(|n| bloom.insert(&n.to_string())).count();
        assert!(fresh < 50, "{fresh} false candidates in 50,000 new ids");
        assert!((0..50_000).all(|n| bloom.insert(&n.to_string())));
    }
}
