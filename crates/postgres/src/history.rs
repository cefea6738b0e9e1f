//! Timeline history files (`pg_wal/<TLI>.history`), published by the leader in the DCS
//! `history` key.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::{PgError, Result};
use crate::lsn::parse_lsn;

/// One line: timeline `timeline` ended at `switch_lsn` because of `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub timeline: u64,
    pub switch_lsn: u64,
    pub reason: String,
}

/// The parsed history file of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    /// The timeline whose history this is (the file name).
    pub timeline: u64,
    /// Parent timelines, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// File modification time: when the promotion that created `timeline` happened.
    pub modified: SystemTime,
}

/// File name of a timeline's history file (`00000002.history`).
pub fn history_file_name(timeline: u64) -> String {
    format!("{timeline:08X}.history")
}

/// Parses a history file: `<tli>\t<lsn>\t<reason>` lines; blank and `#` lines are skipped.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let (Some(tli), Some(lsn)) = (fields.next(), fields.next()) else {
                return Err(format!(
                    "expected '<timeline>\\t<lsn>\\t<reason>': {line:?}"
                ));
            };
            Ok(HistoryEntry {
                timeline: tli
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad timeline in {line:?}"))?,
                switch_lsn: parse_lsn(lsn).ok_or_else(|| format!("bad LSN in {line:?}"))?,
                reason: fields.next().unwrap_or("").trim().to_string(),
            })
        })
        .collect()
}

/// Reads `<wal_dir>/<timeline>.history`; `None` when the file does not exist (timeline 1,
/// or the history was never copied to this node).
pub(crate) fn read_history(wal_dir: &Path, timeline: u64) -> Result<Option<TimelineHistory>> {
    let path = wal_dir.join(history_file_name(timeline));
    let Some(text) = crate::fsutil::read_optional(&path)? else {
        return Ok(None);
    };
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_err(|e| PgError::io("stat", &path, e))?;
    let entries = parse_history(&text).map_err(|reason| PgError::History {
        path: path.clone(),
        reason,
    })?;
    Ok(Some(TimelineHistory {
        timeline,
        entries,
        modified,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_history() {
        let text = "1\t0/4000108\tno recovery target specified\n\
                    \n\
                    # comment\n\
                    2\t0/50000A0\tat restore point \"before upgrade\"\n";
        let h = parse_history(text).unwrap();
        assert_eq!(
            h,
            vec![
                HistoryEntry {
                    timeline: 1,
                    switch_lsn: 0x4000108,
                    reason: "no recovery target specified".into()
                },
                HistoryEntry {
                    timeline: 2,
                    switch_lsn: 0x50000A0,
                    reason: "at restore point \"before upgrade\"".into()
                },
            ]
        );
        assert_eq!(parse_history("").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(parse_history("1 0/1 x").is_err());
        assert!(parse_history("x\t0/1\treason").is_err());
        assert!(parse_history("1\tzz\treason").is_err());
    }

    #[test]
    fn file_names_are_upper_hex() {
        assert_eq!(history_file_name(2), "00000002.history");
        assert_eq!(history_file_name(26), "0000001A.history");
    }

    #[test]
    fn reads_file_with_mtime() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_history(dir.path(), 2).unwrap().is_none());
        std::fs::write(
            dir.path().join("00000002.history"),
            "1\t0/3000060\tno recovery target specified\n",
        )
        .unwrap();
        let h = read_history(dir.path(), 2).unwrap().unwrap();
        assert_eq!(h.timeline, 2);
        assert_eq!(h.entries[0].switch_lsn, 0x3000060);
        assert!(h.modified <= SystemTime::now());
        std::fs::write(dir.path().join("00000003.history"), "garbage").unwrap();
        assert!(matches!(
            read_history(dir.path(), 3),
            Err(PgError::History { .. })
        ));
    }
}
