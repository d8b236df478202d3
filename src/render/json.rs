//! The JSON plan (contract 3.1): what `plan --format json` prints and
//! `plan --out` writes. The serde derives of [`Plan`] define the format.

use std::io::Write;

use crate::plan::Plan;

/// Renders `plan` as pretty JSON with a trailing newline.
pub fn render_json(plan: &Plan) -> String {
    // A plan holds only strings, numbers and JSON maps with string keys, so
    // serializing it cannot fail.
    let mut text = serde_json::to_string_pretty(plan).expect("a plan always serializes to JSON");
    text.push('\n');
    text
}

/// Writes what [`render_json`] gives to `out` as it goes, without holding
/// the whole text (half a gigabyte for a plan of a million transfers).
/// Only the writer can fail.
pub fn write_json(plan: &Plan, out: impl std::io::Write) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    serde_json::to_writer_pretty(&mut out, plan).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::plan::{Action, Change, Pending};
    use serde_json::json;

    #[test]
    fn json_plan_has_the_contract_shape_and_reads_back() {
        let after = json!({"owner": "group:analysts"})
            .as_object()
            .cloned()
            .map(crate::model::Fields::from);
        let plan = Plan::new(
            vec![
                Change::new(
                    Action::Transfer,
                    Kind::Asset,
                    "dataset/ds-1",
                    "acme",
                    json!({"owner": "user:dave@acme.com"})
                        .as_object()
                        .cloned()
                        .map(crate::model::Fields::from),
                    after,
                    "reassign rule 1 of account acme",
                ),
                Change::new(
                    Action::Remove,
                    Kind::Group,
                    "acme/old",
                    "acme",
                    None,
                    None,
                    "gone",
                ),
            ],
            vec![Pending {
                kind: Kind::Account,
                object: "acme".into(),
                reason: "waits".into(),
            }],
        );
        let text = render_json(&plan);
        assert!(text.ends_with("}\n"));
        let mut written = Vec::new();
        write_json(&plan, &mut written).unwrap();
        assert_eq!(written, text.as_bytes());
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["format_version"], 1);
        assert_eq!(
            value["summary"],
            json!({"create": 0, "update": 0, "transfer": 1, "remove": 1})
        );
        assert_eq!(value["changes"][0]["action"], "transfer");
        assert_eq!(value["changes"][0]["kind"], "asset");
        assert_eq!(value["changes"][1]["before"], serde_json::Value::Null);
        assert_eq!(value["changes"][1]["after"], serde_json::Value::Null);
        assert_eq!(value["pending"][0]["kind"], "account");
        let keys: Vec<&str> = [
            "\"format_version\"",
            "\"summary\"",
            "\"changes\"",
            "\"pending\"",
        ]
        .to_vec();
        let positions: Vec<usize> = keys.iter().map(|key| text.find(key).unwrap()).collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));
        let back: Plan = serde_json::from_str(&text).unwrap();
        assert_eq!(back, plan);
    }
}
