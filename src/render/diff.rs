//! `plan --diff`: a unified diff of each changed account as YAML (the specs
//! [`crate::export`] writes), before and after the plan.

use similar::TextDiff;

use crate::export::account_documents;
use crate::model::State;

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";

/// The unified diffs (3 lines of context, headers `a/<account>.yaml` and
/// `b/<account>.yaml`) of `accounts`, in the order given; accounts whose YAML
/// is the same before and after are left out. Coloured with ANSI escapes
/// when `color`.
pub fn render_diff(before: &State, after: &State, accounts: &[String], color: bool) -> String {
    let old_documents = account_documents(before, accounts);
    let new_documents = account_documents(after, accounts);
    let mut out = String::new();
    for ((account, old), new) in accounts.iter().zip(&old_documents).zip(&new_documents) {
        if old == new {
            continue;
        }
        let diff = TextDiff::from_lines(old.as_str(), new.as_str());
        let text = diff
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{account}.yaml"), &format!("b/{account}.yaml"))
            .to_string();
        if color {
            out.push_str(&paint(&text));
        } else {
            out.push_str(&text);
        }
    }
    out
}

fn paint(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len() + diff.len() / 4);
    for line in diff.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let code = if body.starts_with("---") || body.starts_with("+++") {
            Some(BOLD)
        } else if body.starts_with("@@") {
            Some(CYAN)
        } else if body.starts_with('+') {
            Some(GREEN)
        } else if body.starts_with('-') {
            Some(RED)
        } else {
            None
        };
        match code {
            Some(code) => {
                out.push_str(code);
                out.push_str(body);
                out.push_str(RESET);
            }
            None => out.push_str(body),
        }
        out.push_str(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Account, Duration, Role, User, UserStatus};

    fn state(bob_role: Role, with_carol: bool) -> State {
        let mut state = State::default();
        for account in ["acme", "globex"] {
            state.accounts.insert(
                account.into(),
                Account {
                    owner: Some(format!("alice@{account}.com")),
                    domains: vec![format!("{account}.com")],
                    hub: None,
                    connections: Vec::new(),
                    credits: 0,
                    merged_into: None,
                    invite_ttl: Duration::DEFAULT_INVITE_TTL,
                    successor: None,
                },
            );
            let user = |role| User {
                account: account.into(),
                role,
                name: None,
                status: UserStatus::Active,
                invitation_expires: None,
            };
            state
                .users
                .insert(format!("alice@{account}.com"), user(Role::Owner));
        }
        let user = |role| User {
            account: "acme".into(),
            role,
            name: None,
            status: UserStatus::Active,
            invitation_expires: None,
        };
        state.users.insert("bob@acme.com".into(), user(bob_role));
        if with_carol {
            state
                .users
                .insert("carol@acme.com".into(), user(Role::Member));
        }
        state
    }

    fn accounts() -> Vec<String> {
        vec!["acme".to_string(), "globex".to_string(), "new".to_string()]
    }

    #[test]
    fn diff_of_two_states_shows_only_changed_accounts() {
        let before = state(Role::Member, true);
        let after = state(Role::Admin, false);
        let diff = render_diff(&before, &after, &accounts(), false);
        assert_eq!(
            diff,
            "--- a/acme.yaml\n+++ b/acme.yaml\n@@ -2,5 +2,4 @@\n domains: [acme.com]\n users:\n   alice@acme.com: {role: owner}\n\
             -  bob@acme.com: {}\n-  carol@acme.com: {}\n+  bob@acme.com: {role: admin}\n"
        );
        assert!(!diff.contains('\x1b'));
    }

    #[test]
    fn identical_states_give_no_diff() {
        let before = state(Role::Member, true);
        assert_eq!(render_diff(&before, &before.clone(), &accounts(), true), "");
    }

    #[test]
    fn a_new_account_diffs_from_nothing() {
        let before = State::default();
        let after = state(Role::Member, false);
        let diff = render_diff(&before, &after, &["globex".to_string()], false);
        assert!(
            diff.starts_with(
                "--- a/globex.yaml\n+++ b/globex.yaml\n@@ -0,0 +1,4 @@\n+account: globex\n"
            ),
            "{diff}"
        );
    }

    #[test]
    fn coloured_diff_marks_added_and_removed_lines() {
        let diff = render_diff(
            &state(Role::Member, true),
            &state(Role::Admin, true),
            &accounts(),
            true,
        );
        assert!(
            diff.contains("\x1b[31m-  bob@acme.com: {}\x1b[0m\n"),
            "{diff:?}"
        );
        assert!(
            diff.contains("\x1b[32m+  bob@acme.com: {role: admin}\x1b[0m\n"),
            "{diff:?}"
        );
        assert!(diff.contains("\x1b[1m--- a/acme.yaml\x1b[0m\n"), "{diff:?}");
        assert!(
            diff.contains("   alice@acme.com: {role: owner}\n"),
            "{diff:?}"
        );
    }
}
