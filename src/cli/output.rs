//! One way to print every command's result: a table for people, `--output json` for scripts, and
//! `--output tsv` where a command has a natural one-line-per-item form.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

use super::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for a person at a terminal.
    #[value(alias = "table")]
    Human,
    /// One JSON document.
    Json,
    /// Tab-separated lines, no header (commands that list items).
    Tsv,
}

/// A command's result. The JSON form is the struct itself.
pub trait Report: Serialize {
    fn human(&self) -> String;
    /// None where the command has no tab-separated form.
    fn tsv(&self) -> Option<String> {
        None
    }
}

pub fn print(report: &impl Report, format: OutputFormat, command: &'static str) -> Result<(), CliError> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(report)? + "\n",
        OutputFormat::Human => report.human(),
        OutputFormat::Tsv => report.tsv().ok_or(CliError::NoTsv { command })?,
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// Columns padded to their widest cell; numbers are not treated specially so the output stays predictable.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).chain([headers.len()]).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for (i, header) in headers.iter().enumerate() {
        widths[i] = header.chars().count();
    }
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = if headers.is_empty() { String::new() } else { line(headers.to_vec()) };
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_each_column_to_its_widest_cell() {
        let rows = vec![vec!["m5.large".to_string(), "29".to_string()], vec!["t3.a".to_string(), "110".to_string()]];
        assert_eq!(table(&["TYPE", "PODS"], &rows), "TYPE      PODS\nm5.large  29\nt3.a      110\n");
    }

    #[test]
    fn a_headerless_table_aligns_its_rows() {
        assert_eq!(table(&[], &[]), "");
        let rows = vec![vec!["a".to_string(), "1".to_string()], vec!["longer".to_string(), "2".to_string()]];
        assert_eq!(table(&[], &rows), "a       1\nlonger  2\n");
    }
}
