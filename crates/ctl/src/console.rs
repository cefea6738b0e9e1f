//! Prompts as click shows them: `Question [default]: ` and `Question? [y/N]: `, answers read
//! line by line from standard input (so scripts and tests can pipe them in). At the end of
//! input a prompt takes its default, a confirmation is "no".

use anyhow::{bail, Result};
use std::io::{BufRead, Write};

/// Asks `question`, returns the answer or `default` for an empty line / end of input.
pub fn prompt(question: &str, default: Option<&str>) -> Result<String> {
    let shown = match default {
        Some(d) => format!("{question} [{d}]: "),
        None => format!("{question}: "),
    };
    ask(&shown, question, default)
}

fn ask(shown: &str, question: &str, default: Option<&str>) -> Result<String> {
    let mut out = std::io::stdout().lock();
    write!(out, "{shown}")?;
    out.flush()?;
    drop(out);
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line)?;
    if read == 0 {
        // End of input: the default, or a clear error when there is none.
        println!();
        return match default {
            Some(d) => Ok(d.to_string()),
            None => bail!("no answer to {question:?} (standard input is closed)"),
        };
    }
    let answer = line.trim().to_string();
    Ok(if answer.is_empty() {
        default.unwrap_or_default().to_string()
    } else {
        answer
    })
}

/// `question [y/N]: `: true only for y/yes.
pub fn confirm(question: &str) -> Result<bool> {
    let answer = ask(&format!("{question} [y/N]: "), question, Some("n"))?;
    Ok(matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// patronictl's `timestamp()`: local time with microseconds.
pub fn timestamp() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}
