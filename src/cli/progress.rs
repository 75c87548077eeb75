//! Progress for setup and teardown: on a terminal, a spinner naming the current step with a line per resource
//! above it; elsewhere (CI logs, pipes), plain lines. Both on stderr: stdout carries the report.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::bootstrap::report::{Action, ProgressEvent, ProgressObserver, ResourceChange};

/// Draws the progress of one command; `finish` clears the spinner.
pub struct Progress {
    spinner: Option<ProgressBar>,
}

impl Progress {
    /// `command` prefixes plain lines (`setup: ...`).
    pub fn start(command: &'static str) -> (Self, ProgressObserver) {
        if std::io::stderr().is_terminal() {
            let spinner = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                spinner.set_style(style);
            }
            spinner.enable_steady_tick(Duration::from_millis(100));
            let drawn = spinner.clone();
            let observer = ProgressObserver(Arc::new(move |event| match event {
                ProgressEvent::Step(step) => drawn.set_message(format!("{command}: {step}")),
                ProgressEvent::Resource(change) => drawn.println(line(change)),
            }));
            (Self { spinner: Some(spinner) }, observer)
        } else {
            // A closed stderr (a reader gone) must not stop the work: lines that cannot be written are dropped.
            let observer = ProgressObserver(Arc::new(move |event| {
                let text = match event {
                    ProgressEvent::Step(step) => format!("{command}: {step}"),
                    ProgressEvent::Resource(change) => format!("{command}:   {}", line(change)),
                };
                let _ = writeln!(std::io::stderr(), "{text}");
            }));
            (Self { spinner: None }, observer)
        }
    }

    pub fn finish(self) {
        if let Some(spinner) = self.spinner {
            spinner.finish_and_clear();
        }
    }
}

fn line(change: &ResourceChange) -> String {
    let action = match change.action {
        Action::Created => "created",
        Action::Updated => "updated",
        Action::Unchanged => "unchanged",
        Action::Deleted => "deleted",
        Action::Kept => "kept",
    };
    match &change.note {
        Some(note) => format!("{action} {} {} ({note})", change.kind, change.id),
        None => format!("{action} {} {}", change.kind, change.id),
    }
}
