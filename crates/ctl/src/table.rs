//! patronictl-style ASCII tables (prettytable look): `+---+` borders, `|` separators,
//! multi-line cells, a title embedded in the top border.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

pub struct Table {
    pub headers: Vec<String>,
    pub align: Vec<Align>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn render(&self, title: Option<&str>) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                for line in cell.lines() {
                    widths[i] = widths[i].max(line.chars().count());
                }
            }
        }
        let border: String = {
            let mut b = String::from("+");
            for w in &widths {
                b.push_str(&"-".repeat(w + 2));
                b.push('+');
            }
            b
        };
        let mut out = String::new();
        match title {
            Some(t) => out.push_str(&embed_title(&border, t)),
            None => out.push_str(&border),
        }
        out.push('\n');
        out.push_str(&self.render_row(&self.headers, &widths, true));
        out.push_str(&border);
        out.push('\n');
        for row in &self.rows {
            out.push_str(&self.render_row(row, &widths, false));
        }
        out.push_str(&border);
        out.push('\n');
        out
    }

    fn render_row(&self, cells: &[String], widths: &[usize], header: bool) -> String {
        let height = cells
            .iter()
            .map(|c| c.lines().count().max(1))
            .max()
            .unwrap_or(1);
        let mut out = String::new();
        for line_no in 0..height {
            out.push('|');
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let line = cell.lines().nth(line_no).unwrap_or("");
                let pad = w - line.chars().count();
                let align = if header {
                    Align::Left
                } else {
                    self.align.get(i).copied().unwrap_or(Align::Left)
                };
                match align {
                    Align::Left => out.push_str(&format!(" {line}{} |", " ".repeat(pad))),
                    Align::Right => out.push_str(&format!(" {}{line} |", " ".repeat(pad))),
                }
            }
            out.push('\n');
        }
        out
    }
}

/// `+ Cluster: x -----+----+`: the title overwrites the start of the border, which grows if
/// the title is longer than the table.
fn embed_title(border: &str, title: &str) -> String {
    let mut out = String::from("+ ");
    out.push_str(title);
    out.push(' ');
    let used = out.chars().count();
    let total = border.chars().count();
    if used < total {
        out.extend(border.chars().skip(used));
    } else {
        out.push('+');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_prettytable() {
        let t = Table {
            headers: vec!["Member".into(), "TL".into()],
            align: vec![Align::Left, Align::Right],
            rows: vec![
                vec!["node0".into(), "2".into()],
                vec!["n1".into(), "".into()],
            ],
        };
        let s = t.render(Some("Cluster: b"));
        let expected = "\
+ Cluster: b -+
| Member | TL |
+--------+----+
| node0  |  2 |
| n1     |    |
+--------+----+
";
        assert_eq!(s, expected);
    }

    #[test]
    fn multiline_cells_expand_rows() {
        let t = Table {
            headers: vec!["A".into(), "Tags".into()],
            align: vec![Align::Left, Align::Left],
            rows: vec![vec!["x".into(), "a: 1\nb: 2".into()]],
        };
        let s = t.render(None);
        assert!(s.contains("| x | a: 1 |\n|   | b: 2 |\n"), "{s}");
    }
}
