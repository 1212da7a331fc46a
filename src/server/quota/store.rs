//! The daily budgets' persistence: `quota-state.json` under `--state-dir`, one entry per key
//! name with its UTC day and tokens used. Written whole to a temporary file, synced, then
//! renamed over the old one, so a crash leaves the old or the new file, never half of one.
//! A missing file is a first start; an unreadable one is reported (and kept aside for a
//! look) rather than silently taken for a fresh day.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "quota-state.json";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Days since 1970-01-01, UTC.
    pub day: u64,
    /// Prompt + completion tokens used that day.
    pub used: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// When it was written (RFC 3339), for people reading the file.
    saved_at: String,
    keys: BTreeMap<String, Usage>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What was found at start-up.
#[derive(Debug)]
pub enum Loaded {
    /// No state file yet.
    Missing,
    Found(BTreeMap<String, Usage>),
    /// The file could not be read or parsed; it was renamed to `kept_as` (when that worked).
    Corrupt {
        reason: String,
        kept_as: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store in `dir`, which is created if need be.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: dir.join(FILE_NAME),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Loaded {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => return self.corrupt(e.to_string()),
        };
        match serde_json::from_str::<StateFile>(&text) {
            Ok(f) if f.version == VERSION => Loaded::Found(f.keys),
            Ok(f) => self.corrupt(format!("unknown version {}", f.version)),
            Err(e) => self.corrupt(e.to_string()),
        }
    }

    /// Moves the bad file aside so the next save does not destroy the evidence.
    fn corrupt(&self, reason: String) -> Loaded {
        let kept = self
            .path
            .with_extension(format!("json.corrupt-{}", crate::server::unix_now()));
        let kept_as = std::fs::rename(&self.path, &kept).ok().map(|()| kept);
        Loaded::Corrupt { reason, kept_as }
    }

    /// Replaces the file with `keys`, atomically.
    pub fn save(&self, keys: &BTreeMap<String, Usage>) -> Result<(), StoreError> {
        let file = StateFile {
            version: VERSION,
            saved_at: crate::server::audit::rfc3339(std::time::SystemTime::now()),
            keys: keys.clone(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let err = |source| StoreError::Write {
            path: tmp.display().to_string(),
            source,
        };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| err(e.into()))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|source| StoreError::Write {
            path: self.path.display().to_string(),
            source,
        })?;
        // The rename itself is durable once the directory is synced (best effort).
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("indus-quota-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip() {
        let dir = temp_dir("rt");
        let s = Store::open(&dir.join("nested")).unwrap();
        assert!(matches!(s.load(), Loaded::Missing));
        let mut keys = BTreeMap::new();
        keys.insert("team-a".to_string(), Usage { day: 7, used: 42 });
        keys.insert("team-b".to_string(), Usage { day: 7, used: 0 });
        s.save(&keys).unwrap();
        match s.load() {
            Loaded::Found(k) => assert_eq!(k, keys),
            other => panic!("{other:?}"),
        }
        keys.insert("team-a".to_string(), Usage { day: 7, used: 43 });
        s.save(&keys).unwrap();
        match Store::open(&dir.join("nested")).unwrap().load() {
            Loaded::Found(k) => assert_eq!(k["team-a"].used, 43),
            other => panic!("{other:?}"),
        }
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_corrupt_file_is_reported_and_kept_aside() {
        let dir = temp_dir("bad");
        let s = Store::open(&dir).unwrap();
        std::fs::write(s.path(), "{\"version\": 1, \"keys\": {\"a\": ").unwrap();
        let Loaded::Corrupt { reason, kept_as } = s.load() else {
            panic!("a truncated file must be reported");
        };
        assert!(!reason.is_empty());
        let kept = kept_as.expect("the bad file is kept");
        assert!(kept.exists());
        assert!(!s.path().exists());
        // The next save starts a fresh file beside the kept one.
        s.save(&BTreeMap::new()).unwrap();
        assert!(matches!(s.load(), Loaded::Found(k) if k.is_empty()));
        assert!(kept.exists());
        std::fs::write(s.path(), r#"{"version": 9, "saved_at": "", "keys": {}}"#).unwrap();
        assert!(matches!(s.load(), Loaded::Corrupt { reason, .. } if reason.contains("version 9")));
        let _ = std::fs::remove_dir_all(dir);
    }
}
