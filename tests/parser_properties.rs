//! Property tests of the desired-state parser (proptest): documents generated from the file
//! format's own keys, values and nesting, and valid files mutated byte by byte. Whatever the
//! input, the parser answers (no panic), and every problem it reports points inside the file.
//! `PROPTEST_CASES` sets how many inputs (256 by default; `scripts/fuzz` runs it for minutes).

use std::path::Path;

use ecs_gitops::desired;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const SHA: &str = "3f9c2a1e0b7d4c5a6f8e9d0c1b2a3f4e5d6c7b8a";

fn valid() -> String {
    format!(
        "environment: prod\nregion: me-south-1\ncluster: saas-prod\nrelease: {SHA}\nservices:\n  web:\n    repository: web\n    container: app\nhooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      command: [alembic, upgrade, head]\nverify:\n  alarms: [a, b]\n  health:\n    - url: https://example.com/health\n      expect_status: 200\n  tasks:\n    - name: smoke\n      service: web\n      command: [pytest]\n      timeout: 5m\n  logs:\n    - group: /prod/backend\n      pattern: '\"ERROR\"'\n      max: 0\n  bake: 15m\n  rollout_timeout: 10m\ndrift: correct\n"
    )
}

/// Every problem names this file and a line and column inside the text.
fn check(text: &str) -> Result<(), TestCaseError> {
    let lines = text.lines().count().max(1) + 1;
    match desired::parse(Path::new("desired-state/prod.yaml"), text) {
        Ok(d) => prop_assert_eq!(d.environment, "prod"),
        Err(problems) => {
            prop_assert!(!problems.is_empty());
            for p in problems {
                prop_assert!(
                    p.at.line >= 1 && p.at.line <= lines,
                    "{p} outside {lines} lines"
                );
                prop_assert!(p.at.col >= 1, "{p}");
                prop_assert!(p.to_string().starts_with("desired-state/prod.yaml:"), "{p}");
                prop_assert!(!p.message.is_empty());
            }
        }
    }
    Ok(())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("environment"),
        Just("region"),
        Just("cluster"),
        Just("release"),
        Just("services"),
        Just("verify"),
        Just("hooks"),
        Just("pre_deploy"),
        Just("tasks"),
        Just("logs"),
        Just("alarms"),
        Just("health"),
        Just("bake"),
        Just("rollout_timeout"),
        Just("name"),
        Just("service"),
        Just("command"),
        Just("timeout"),
        Just("group"),
        Just("pattern"),
        Just("max"),
        Just("drift"),
        Just("promote_from"),
        Just("hotfix"),
        Just("repository"),
        Just("container"),
        Just("url"),
        Just("expect_status"),
    ]
    .prop_map(str::to_string)
    .boxed()
    .prop_union("[a-z_]{1,12}".boxed())
    .boxed()
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(SHA.to_string()),
        Just("prod".to_string()),
        Just("15m".to_string()),
        Just("1h30m".to_string()),
        Just("-1".to_string()),
        Just("~".to_string()),
        Just("\"\"".to_string()),
        Just("[a, b]".to_string()),
        Just("{x: 1}".to_string()),
        Just("&a x".to_string()),
        Just("*a".to_string()),
        "[ -~]{0,20}",
        "[0-9]{1,12}",
    ]
}

/// A YAML-shaped document: nested mappings and lists of the format's keys and odd values.
fn document() -> impl Strategy<Value = String> {
    let leaf = (key(), scalar()).prop_map(|(k, v)| format!("{k}: {v}"));
    let tree = leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            (key(), prop::collection::vec(inner.clone(), 1..5)).prop_map(|(k, kids)| {
                let body: String = kids
                    .iter()
                    .flat_map(|c| c.lines().map(|l| format!("  {l}\n")).collect::<Vec<_>>())
                    .collect();
                format!("{k}:\n{body}")
            }),
            (key(), prop::collection::vec(inner, 1..4)).prop_map(|(k, kids)| {
                let body: String = kids
                    .iter()
                    .map(|c| {
                        let mut lines = c.lines();
                        let first = lines.next().unwrap_or_default();
                        let rest: String = lines.map(|l| format!("    {l}\n")).collect();
                        format!("  - {first}\n{rest}")
                    })
                    .collect();
                format!("{k}:\n{body}")
            }),
        ]
    });
    prop::collection::vec(tree, 1..8).prop_map(|parts| parts.join("\n") + "\n")
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/parser_properties.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_documents_are_answered_with_problems_inside_the_file(doc in document()) {
        check(&doc)?;
    }

    #[test]
    fn a_valid_file_mutated_byte_by_byte_is_answered(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12)
    ) {
        let mut bytes = valid().into_bytes();
        for (at, b, how) in edits {
            let len = bytes.len();
            let i = at.index(len.max(1));
            match how {
                0 if len > 0 => bytes[i.min(len - 1)] = b,
                1 => bytes.insert(i.min(len), b),
                _ if len > 0 => {
                    bytes.remove(i.min(len - 1));
                }
                _ => {}
            }
        }
        if let Ok(text) = String::from_utf8(bytes) {
            check(&text)?;
        }
    }

    #[test]
    fn the_valid_file_with_any_release_value_is_checked_at_its_line(v in "[ -~]{0,60}") {
        let text = valid().replace(SHA, &v);
        match desired::parse(Path::new("desired-state/prod.yaml"), &text) {
            Ok(d) => prop_assert_eq!(d.release.as_str(), v.as_str()),
            // At the release's line; a value that opens a flow collection it never closes
            // (`{0`) makes the YAML parser give up further down, and the opening is reported
            // too, except where the bracket scan is fooled (an anchor named `"{`, say), so a
            // syntax error anywhere is accepted.
            Err(problems) => prop_assert!(
                problems.iter().any(|p| p.at.line == 4 || p.message.starts_with("YAML syntax error")),
                "{problems:?}"
            ),
        }
    }
}
