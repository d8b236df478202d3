//! The text plan for a terminal (contract 3.2): one line per change grouped by
//! account, folds of many alike changes, the pending items, and exactly one
//! final summary line.

use super::describe::{sections, summary_line};
use crate::plan::{Action, Plan};

/// How to render a text plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Colour with ANSI escapes (for a terminal).
    pub color: bool,
    /// List every change, never fold (`plan --expand`).
    pub expand: bool,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const RED: &str = "\x1b[31m";

/// The label column is at least this wide, and padded to at most this width.
const MIN_LABEL_WIDTH: usize = 28;
const MAX_LABEL_WIDTH: usize = 44;

/// Renders `plan` as text; ends with a newline.
pub fn render_text(plan: &Plan, options: &TextOptions) -> String {
    let sections = sections(plan, options.expand);
    let pending_labels: Vec<String> = plan
        .pending
        .iter()
        .map(|pending| format!("{} {}", pending.kind, pending.object))
        .collect();
    // Labels of changes start two columns further right than pending ones
    // (after the sign), so their widths are compared with that offset.
    let widest = sections
        .iter()
        .flat_map(|section| section.entries.iter())
        .map(|entry| width(&entry.label))
        .chain(
            pending_labels
                .iter()
                .map(|label| width(label).saturating_sub(2)),
        )
        .max()
        .unwrap_or(0);
    let column = widest.clamp(MIN_LABEL_WIDTH, MAX_LABEL_WIDTH);
    let paint = |code: &str, text: &str| {
        if options.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    };

    let mut out = String::new();
    for section in &sections {
        out.push_str(&paint(BOLD, &format!("account {}", section.account)));
        out.push('\n');
        for entry in &section.entries {
            let colour = match entry.action {
                Action::Create => GREEN,
                Action::Update => YELLOW,
                Action::Transfer => CYAN,
                Action::Remove => RED,
            };
            let head = format!("{} {}", entry.action.sign(), entry.label);
            let mut line = format!("  {}", paint(colour, &head));
            if !entry.detail.is_empty() {
                line.push_str(&" ".repeat(column.saturating_sub(width(&entry.label)) + 2));
                line.push_str(&entry.detail);
            }
            out.push_str(line.trim_end());
            out.push('\n');
            for note in &entry.notes {
                out.push_str("      ");
                out.push_str(note);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    if !plan.pending.is_empty() {
        out.push_str(&paint(BOLD, "pending"));
        out.push('\n');
        for (pending, label) in plan.pending.iter().zip(&pending_labels) {
            let mut line = format!("  {label}");
            if !pending.reason.is_empty() {
                line.push_str(&" ".repeat((column + 2).saturating_sub(width(label)) + 2));
                line.push_str(&pending.reason);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&summary_line(plan));
    out.push('\n');
    out
}

fn width(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fields, Kind};
    use crate::plan::{Change, Pending};
    use serde_json::json;

    fn fields(value: serde_json::Value) -> Option<Fields> {
        match value {
            serde_json::Value::Object(map) => Some(map.into()),
            _ => None,
        }
    }

    fn change(
        action: Action,
        kind: Kind,
        object: &str,
        account: &str,
        before: serde_json::Value,
        after: serde_json::Value,
        reason: &str,
    ) -> Change {
        Change::new(
            action,
            kind,
            object,
            account,
            fields(before),
            fields(after),
            reason,
        )
    }

    fn small_plan() -> Plan {
        let mut changes = vec![
            change(
                Action::Create,
                Kind::User,
                "frank@acme.com",
                "acme",
                json!(null),
                json!({"account": "acme", "role": "member", "name": null, "status": "invited",
                       "invitation_expires": "2026-11-25T12:00:00Z"}),
                "declared in specs/acme.yaml",
            ),
            change(
                Action::Update,
                Kind::User,
                "bob@acme.com",
                "acme",
                json!({"role": "member"}),
                json!({"role": "admin"}),
                "declared in specs/acme.yaml",
            ),
            change(
                Action::Transfer,
                Kind::License,
                "lic-42",
                "acme",
                json!({"assignee": "carol@acme.com", "expires": "2027-03-31"}),
                json!({"assignee": "dave@acme.com", "expires": "2027-03-31"}),
                "declared in specs/acme.yaml",
            ),
            change(
                Action::Create,
                Kind::Product,
                "prod-7",
                "acme",
                json!(null),
                json!({"organization": "research", "name": "kDrive 2TB", "access": ["carol@acme.com"]}),
                "declared in specs/acme.yaml",
            ),
            change(
                Action::Remove,
                Kind::Membership,
                "acme/analysts/carol@acme.com",
                "acme",
                json!({"account": "acme", "group": "analysts", "user": "carol@acme.com", "role": "member"}),
                json!(null),
                "not in the specs",
            ),
            change(
                Action::Transfer,
                Kind::User,
                "dave@acme.com",
                "us",
                json!({"account": "eu"}),
                json!({"account": "us"}),
                "declared in account us",
            ),
            change(
                Action::Transfer,
                Kind::Asset,
                "file/f-1",
                "us",
                json!({"account": "eu"}),
                json!({"account": "us", "folder": "folder/moved-from-eu"}),
                "moves with dave@acme.com from eu to us",
            ),
            change(
                Action::Transfer,
                Kind::Asset,
                "view/v-1",
                "eu",
                json!({"owner": "user:dave@acme.com"}),
                json!({"owner": "user:erin@acme.com"}),
                "dave@acme.com leaves eu",
            ),
            change(
                Action::Create,
                Kind::Grant,
                "folder/fo-1:dave@acme.com",
                "eu",
                json!(null),
                json!({"account": "eu", "asset": "folder/fo-1", "user": "dave@acme.com", "level": "read"}),
                "dave@acme.com leaves eu",
            ),
        ];
        changes.extend(reassigns(6));
        Plan::new(
            changes,
            vec![Pending {
                kind: Kind::Account,
                object: "acme".into(),
                reason: "new owner frank@acme.com has not accepted the invitation".into(),
            }],
        )
    }

    fn reassigns(count: usize) -> Vec<Change> {
        (0..count)
            .map(|n| {
                change(
                    Action::Transfer,
                    Kind::Asset,
                    &format!("dataset/ds-{n}"),
                    "acme",
                    json!({"owner": "user:dave@acme.com"}),
                    json!({"owner": "group:analysts", "tags": {"original-owner": "dave@acme.com"}}),
                    "reassign rule 1 of account acme",
                )
            })
            .collect()
    }

    #[test]
    fn text_plan_of_a_small_plan() {
        let text = render_text(
            &small_plan(),
            &TextOptions {
                color: false,
                expand: false,
            },
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn five_alike_changes_fold_into_one_line_with_a_count() {
        let plan = Plan::new(reassigns(1_204), Vec::new());
        let text = render_text(&plan, &TextOptions::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "account acme");
        assert!(lines[1].starts_with("  > 1,204 assets   "), "{text}");
        assert!(
            lines[1].ends_with(
                "user:dave@acme.com -> group:analysts, tags: {original-owner: dave@acme.com} (reassign rule 1 of account acme)"
            ),
            "{text}"
        );
        assert_eq!(
            lines[3],
            "Plan: 0 to create, 0 to update, 1204 to transfer, 0 to remove."
        );
    }

    #[test]
    fn four_alike_changes_do_not_fold() {
        let plan = Plan::new(reassigns(4), Vec::new());
        let text = render_text(&plan, &TextOptions::default());
        assert_eq!(text.matches("> asset dataset/ds-").count(), 4, "{text}");
    }

    #[test]
    fn expand_lists_folded_changes_one_by_one() {
        let plan = Plan::new(reassigns(5), Vec::new());
        let folded = render_text(
            &plan,
            &TextOptions {
                color: false,
                expand: false,
            },
        );
        assert!(folded.contains("> 5 assets"), "{folded}");
        let expanded = render_text(
            &plan,
            &TextOptions {
                color: false,
                expand: true,
            },
        );
        assert!(!expanded.contains("> 5 assets"), "{expanded}");
        for n in 0..5 {
            assert!(
                expanded.contains(&format!("  > asset dataset/ds-{n} ")),
                "{expanded}"
            );
        }
    }

    #[test]
    fn an_empty_plan_is_one_line() {
        let text = render_text(&Plan::new(Vec::new(), Vec::new()), &TextOptions::default());
        assert_eq!(text, "No changes. The state matches the specs.\n");
    }

    #[test]
    fn pending_items_without_changes_still_end_with_no_changes() {
        let plan = Plan::new(
            Vec::new(),
            vec![Pending {
                kind: Kind::Account,
                object: "acme".into(),
                reason: "waits".into(),
            }],
        );
        let text = render_text(&plan, &TextOptions::default());
        assert!(text.starts_with("pending\n  account acme "), "{text}");
        assert!(
            text.ends_with("\n\nNo changes. The state matches the specs.\n"),
            "{text}"
        );
    }

    #[test]
    fn colour_off_has_no_escape_codes_and_colour_on_has_them() {
        let plain = render_text(
            &small_plan(),
            &TextOptions {
                color: false,
                expand: true,
            },
        );
        assert!(!plain.contains('\x1b'));
        let coloured = render_text(
            &small_plan(),
            &TextOptions {
                color: true,
                expand: true,
            },
        );
        assert!(
            coloured.contains("\x1b[1maccount acme\x1b[0m"),
            "{coloured}"
        );
        assert!(
            coloured.contains("\x1b[32m+ user frank@acme.com\x1b[0m"),
            "{coloured}"
        );
        assert!(coloured.contains("\x1b[31m- membership"), "{coloured}");
        // Same text once the escapes are gone.
        let stripped = coloured
            .replace(RESET, "")
            .replace(BOLD, "")
            .replace(GREEN, "")
            .replace(YELLOW, "")
            .replace(CYAN, "")
            .replace(RED, "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn the_text_plan_is_deterministic() {
        let plan = small_plan();
        let options = TextOptions::default();
        assert_eq!(
            render_text(&plan, &options),
            render_text(&plan.clone(), &options)
        );
    }
}
