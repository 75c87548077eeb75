//! One way to print every command's result: a human table or `--output json`.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

use super::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for a person at a terminal.
    Human,
    /// One JSON document, for scripts.
    Json,
}

/// A command's result. `rows` is what the human table shows; the JSON form is the struct itself.
pub trait Report: Serialize {
    fn rows(&self) -> Vec<(String, String)>;
}

pub fn print(report: &impl Report, format: OutputFormat) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, report)?;
            writeln!(stdout)?;
        }
        OutputFormat::Human => stdout.write_all(render_table(&report.rows()).as_bytes())?,
    }
    Ok(())
}

/// Two columns, the first padded to its widest cell.
fn render_table(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(key, value)| format!("{key:<width$}  {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_the_first_column_to_the_widest_key() {
        let rows = vec![
            ("a".to_string(), "1".to_string()),
            ("longer".to_string(), "2".to_string()),
        ];
        assert_eq!(render_table(&rows), "a       1\nlonger  2\n");
    }

    #[test]
    fn empty_table_prints_nothing() {
        assert_eq!(render_table(&[]), "");
    }
}
