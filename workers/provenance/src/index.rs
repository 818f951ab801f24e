//! The local index of provenance records kept by `voxproof synth`: one JSON line per record
//! in a file, looked up by record id when a file's manifest has been stripped.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use voxproof_watermark::Payload;

use crate::manifest::ProvenanceRecord;
use crate::ProvenanceError;

/// A JSON-lines file of [`ProvenanceRecord`]s.
#[derive(Debug, Clone)]
pub struct LocalIndex {
    path: PathBuf,
}

impl LocalIndex {
    pub fn at(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self) -> impl Fn(std::io::Error) -> ProvenanceError + '_ {
        move |e| ProvenanceError::Index(format!("{}: {e}", self.path.display()))
    }

    /// Every record, in the order they were added. Lines that do not parse (a write cut
    /// short by a crash) are skipped.
    pub fn records(&self) -> Result<Vec<ProvenanceRecord>, ProvenanceError> {
        let file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io()(e)),
        };
        let mut records = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(self.io())?;
            if let Ok(record) = serde_json::from_str::<ProvenanceRecord>(&line) {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// The record with `record_id`, if any.
    pub fn find(&self, record_id: u32) -> Result<Option<ProvenanceRecord>, ProvenanceError> {
        Ok(self
            .records()?
            .into_iter()
            .find(|r| r.record_id == record_id))
    }

    /// A record id not used in this index yet, and its watermark payload under `key`.
    /// Ids are random so that they say nothing about how many files were made.
    pub fn allocate(&self, key: &[u8]) -> Result<(u32, Payload), ProvenanceError> {
        let used: std::collections::HashSet<u32> =
            self.records()?.iter().map(|r| r.record_id).collect();
        loop {
            let mut bytes = [0u8; 4];
            getrandom::fill(&mut bytes)
                .map_err(|e| ProvenanceError::Index(format!("no randomness: {e}")))?;
            let id = u32::from_be_bytes(bytes);
            if !used.contains(&id) {
                return Ok((id, Payload::for_record(key, id)));
            }
        }
    }

    /// Appends `record` as one line, in one write, so that concurrent writers never
    /// interleave within a line.
    pub fn add(&self, record: &ProvenanceRecord) -> Result<(), ProvenanceError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(self.io())?;
        }
        let mut line =
            serde_json::to_string(record).map_err(|e| ProvenanceError::Index(e.to_string()))?;
        line.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(self.io())?;
        file.write_all(line.as_bytes()).map_err(self.io())?;
        file.sync_data().map_err(self.io())
    }
}
