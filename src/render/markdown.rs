//! The markdown plan for a pull-request comment (contract 3.2): the summary
//! line, a warning when the plan removes anything, a table per account, the
//! pending items and the diff in a collapsed block, all under
//! [`MARKDOWN_LIMIT`] characters.

use super::describe::{sections, summary_line, thousands, Entry};
use crate::plan::{Plan, Summary};

/// The most characters (counted as bytes, which is never fewer) a markdown
/// plan holds; GitHub refuses comments over 65,536.
pub const MARKDOWN_LIMIT: usize = 65_000;

/// Room kept for the notes that say what was cut.
const NOTE_RESERVE: usize = 400;

/// A diff is only worth showing cut if this much of it fits.
const MIN_DIFF: usize = 500;

/// Renders `plan` as markdown, with `diff` (a unified diff, as
/// [`render_diff`](super::render_diff) makes without colour) in a collapsed
/// block. When the whole would exceed [`MARKDOWN_LIMIT`], the diff is cut
/// first, then the table rows, and the comment says how much was cut; the
/// summary line and the warning are always kept. `refusal` is why the plan
/// may not be applied (the removal guard), shown as a warning too.
pub fn render_markdown(plan: &Plan, diff: Option<&str>, refusal: Option<&str>) -> String {
    let mut out = summary_line(plan);
    out.push('\n');
    if let Some(refusal) = refusal {
        out.push_str(&format!(
            "\n> **Warning:** refused: {}\n",
            refusal.replace('\n', " ")
        ));
    }
    let removes = Summary::of(&plan.changes).remove;
    if removes > 0 {
        let noun = if removes == 1 { "object" } else { "objects" };
        out.push_str(&format!(
            "\n> **Warning:** this plan removes {removes} {noun}.\n"
        ));
    }
    let budget = MARKDOWN_LIMIT.saturating_sub(out.len() + NOTE_RESERVE);
    let mut body = String::new();

    // Tables, row by row, until the budget runs out.
    let mut cut_changes = 0usize;
    let mut cutting = false;
    for section in sections(plan, false) {
        let header = format!(
            "\n#### account `{}`\n\n| | kind | object | change |\n| --- | --- | --- | --- |\n",
            cell(section.account)
        );
        let rows: Vec<(usize, String)> =
            section.entries.iter().map(|e| (e.count, row(e))).collect();
        let first_row = rows.first().map_or(0, |(_, row)| row.len());
        if cutting || body.len() + header.len() + first_row > budget {
            cutting = true;
            cut_changes += rows.iter().map(|(count, _)| count).sum::<usize>();
            continue;
        }
        body.push_str(&header);
        for (count, row) in rows {
            if cutting || body.len() + row.len() > budget {
                cutting = true;
                cut_changes += count;
                continue;
            }
            body.push_str(&row);
        }
    }
    if cut_changes > 0 {
        let noun = if cut_changes == 1 {
            "change"
        } else {
            "changes"
        };
        body.push_str(&format!(
            "\n… {} more {noun} not shown (cut to keep this comment under {} characters; `deed plan --format json` lists every change)\n",
            thousands(cut_changes),
            thousands(MARKDOWN_LIMIT)
        ));
    }

    // Pending items, the same way.
    if !plan.pending.is_empty() {
        let header = "\n#### pending\n\n| kind | object | reason |\n| --- | --- | --- |\n";
        let mut cut_pending = 0usize;
        let mut shown_header = false;
        for pending in &plan.pending {
            let row = format!(
                "| {} | `{}` | {} |\n",
                pending.kind,
                cell(&pending.object),
                cell(&pending.reason)
            );
            let extra = if shown_header { 0 } else { header.len() };
            if cut_pending > 0 || body.len() + extra + row.len() > budget {
                cut_pending += 1;
                continue;
            }
            if !shown_header {
                body.push_str(header);
                shown_header = true;
            }
            body.push_str(&row);
        }
        if cut_pending > 0 {
            let noun = if cut_pending == 1 { "item" } else { "items" };
            body.push_str(&format!(
                "\n… {} more pending {noun} not shown\n",
                thousands(cut_pending)
            ));
        }
    }

    // The diff gets what is left.
    if let Some(diff) = diff.filter(|diff| !diff.is_empty()) {
        let fence = "`".repeat(longest_backtick_run(diff).max(2) + 1);
        let open = format!("\n<details><summary>Diff</summary>\n\n{fence}diff\n");
        let close = format!("{fence}\n\n</details>\n");
        let room = budget.saturating_sub(body.len() + open.len() + close.len());
        let lines = diff.lines().count();
        if diff.len() < room {
            body.push_str(&open);
            body.push_str(diff);
            if !diff.ends_with('\n') {
                body.push('\n');
            }
            body.push_str(&close);
        } else if room >= MIN_DIFF {
            body.push_str(&open);
            let mut used = 0;
            let mut shown = 0;
            for line in diff.lines() {
                if used + line.len() + 1 > room {
                    break;
                }
                body.push_str(line);
                body.push('\n');
                used += line.len() + 1;
                shown += 1;
            }
            body.push_str(&close);
            body.push_str(&format!(
                "\n… {} more diff lines not shown\n",
                thousands(lines - shown)
            ));
        } else {
            body.push_str(&format!(
                "\n… diff not shown ({} lines): too large for this comment\n",
                thousands(lines)
            ));
        }
    }
    out.push_str(&body);
    out
}

fn row(entry: &Entry) -> String {
    let object = if entry.count > 1 {
        cell(&entry.object)
    } else {
        code(&entry.object)
    };
    let mut change = cell(&entry.detail);
    for note in &entry.notes {
        if !change.is_empty() {
            change.push_str("<br>");
        }
        change.push_str(&cell(note));
    }
    format!(
        "| `{}` | {} | {} | {} |\n",
        entry.action.sign(),
        entry.kind,
        object,
        change
    )
}

/// Text made safe for a table cell: no pipes, no line breaks, no HTML tags.
fn cell(text: &str) -> String {
    text.replace('<', "&lt;")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// An id in a code span, unless it holds a backtick.
fn code(text: &str) -> String {
    if text.contains('`') {
        cell(text)
    } else {
        format!("`{}`", text.replace('|', "\\|").replace(['\n', '\r'], " "))
    }
}

fn longest_backtick_run(text: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for character in text.chars() {
        if character == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::plan::{Action, Change, Pending};
    use serde_json::json;

    fn user_update(n: usize, reason: &str) -> Change {
        Change::new(
            Action::Update,
            Kind::User,
            format!("user-{n}@acme.com"),
            "acme",
            json!({"role": "member"})
                .as_object()
                .cloned()
                .map(crate::model::Fields::from),
            json!({"role": "admin"})
                .as_object()
                .cloned()
                .map(crate::model::Fields::from),
            reason,
        )
    }

    fn removal(object: &str) -> Change {
        Change::new(
            Action::Remove,
            Kind::Membership,
            object,
            "acme",
            None,
            None,
            "not in the specs",
        )
    }

    #[test]
    fn markdown_of_a_small_plan() {
        let plan = Plan::new(
            vec![
                user_update(1, "declared"),
                removal("acme/analysts/carol@acme.com"),
            ],
            vec![Pending {
                kind: Kind::Account,
                object: "acme".into(),
                reason: "owner -> frank waits".into(),
            }],
        );
        let diff = "--- a/acme.yaml\n+++ b/acme.yaml\n@@ -1 +1 @@\n-x\n+y\n";
        insta::assert_snapshot!(render_markdown(&plan, Some(diff), None));
    }

    #[test]
    fn an_empty_plan_is_the_no_changes_line() {
        let text = render_markdown(&Plan::new(Vec::new(), Vec::new()), None, None);
        assert_eq!(text, "No changes. The state matches the specs.\n");
    }

    #[test]
    fn a_huge_plan_stays_under_the_limit_and_keeps_summary_and_warning() {
        let mut changes: Vec<Change> = (0..100_000)
            .map(|n| user_update(n, &format!("reason {n}")))
            .collect();
        changes.push(removal("acme/analysts/carol@acme.com"));
        changes.push(removal("acme/analysts/dave@acme.com"));
        let plan = Plan::new(changes, Vec::new());
        let diff: String = (0..50_000).map(|n| format!("+line {n}\n")).collect();
        let text = render_markdown(&plan, Some(&diff), None);
        assert!(text.len() < MARKDOWN_LIMIT, "{}", text.len());
        assert!(text
            .starts_with("Plan: 0 to create, 100000 to update, 0 to transfer, 2 to remove.\n\n"));
        assert!(text.contains("> **Warning:** this plan removes 2 objects.\n"));
        assert!(text.contains("| `~` | user | `user-0@acme.com` | role: member -> admin |\n"));
        // The diff goes first, then rows; what is cut is counted.
        assert!(
            text.contains("… diff not shown (50,000 lines)"),
            "{}",
            &text[text.len() - 500..]
        );
        let shown = text.matches("| `~` | user |").count();
        assert!(shown > 100);
        let cut = 100_002 - shown;
        assert!(text.contains(&format!("… {} more changes not shown", thousands(cut))));
    }

    #[test]
    fn a_large_diff_is_cut_before_the_tables() {
        let plan = Plan::new(
            (0..10).map(|n| user_update(n, &format!("r{n}"))).collect(),
            Vec::new(),
        );
        let diff: String = (0..20_000).map(|n| format!("+line {n}\n")).collect();
        let text = render_markdown(&plan, Some(&diff), None);
        assert!(text.len() < MARKDOWN_LIMIT);
        assert_eq!(text.matches("| `~` | user |").count(), 10);
        assert!(text.contains("<details><summary>Diff</summary>\n\n```diff\n+line 0\n"));
        assert!(text.contains("more diff lines not shown"));
        assert!(!text.contains("more changes not shown"));
    }

    #[test]
    fn folded_changes_are_one_row_and_cells_are_escaped() {
        let mut changes: Vec<Change> = (0..7).map(|n| user_update(n, "rule 1")).collect();
        changes.push(Change::new(
            Action::Update,
            Kind::User,
            "x@acme.com",
            "acme",
            json!({"name": "a|b"})
                .as_object()
                .cloned()
                .map(crate::model::Fields::from),
            json!({"name": "<b>"})
                .as_object()
                .cloned()
                .map(crate::model::Fields::from),
            "declared",
        ));
        let text = render_markdown(&Plan::new(changes, Vec::new()), None, None);
        assert!(
            text.contains("| `~` | user | 7 users | role: member -> admin (rule 1) |\n"),
            "{text}"
        );
        assert!(
            text.contains("| `~` | user | `x@acme.com` | name: a\\|b -> &lt;b> |\n"),
            "{text}"
        );
        assert!(!text.contains("Warning"));
    }
}
