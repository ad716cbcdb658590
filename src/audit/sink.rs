//! A JSON Lines copy of the audit log, for SIEMs: each committed record (and each checkpoint)
//! as one line, in the exported form (`docs/audit.md`), appended to a file or written to
//! standard output.
//!
//! The copy is written after the commit by a thread of its own, so a slow reader never holds
//! up issuance. It is a copy: the store is the record, and a line lost to a full disk is
//! logged, not retried.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc;

use super::AuditError;

/// Where committed records are mirrored. Dropping it lets the thread finish its queue.
#[derive(Debug)]
pub struct JsonlSink {
    lines: mpsc::Sender<Vec<String>>,
}

impl JsonlSink {
    /// Opens `target`: `-` for standard output, otherwise a file appended to (created with
    /// mode 0600).
    pub fn open(target: &str) -> Result<JsonlSink, AuditError> {
        let mut output: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(target)
                .map_err(|error| AuditError::Sink {
                    target: target.to_owned(),
                    message: error.to_string(),
                })?;
            Box::new(file)
        };

        let (lines, queue) = mpsc::channel::<Vec<String>>();
        let thread_target = target.to_owned();
        std::thread::Builder::new()
            .name("audit-jsonl".into())
            .spawn(move || {
                for group in queue {
                    let mut text = group.join("\n");
                    text.push('\n');
                    if let Err(error) = output
                        .write_all(text.as_bytes())
                        .and_then(|()| output.flush())
                    {
                        tracing::error!(sink = %thread_target, %error, "audit JSON Lines copy failed");
                    }
                }
            })
            .map_err(|error| AuditError::Sink {
                target: target.to_owned(),
                message: error.to_string(),
            })?;
        Ok(JsonlSink { lines })
    }

    /// Queues one group of lines.
    pub fn send(&self, group: Vec<String>) {
        if !group.is_empty() {
            let _ = self.lines.send(group);
        }
    }
}
