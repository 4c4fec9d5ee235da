//! Desired-state validation: every kind of mistake is reported at its line and column with a
//! message that says what to do; the example files are valid; no input makes it panic or hang.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ecs_gitops::desired::{self, check_set};

const SHA: &str = "3f9c2a1e0b7d4c5a6f8e9d0c1b2a3f4e5d6c7b8a";

fn valid() -> String {
    format!(
        "environment: prod\nregion: me-south-1\ncluster: saas-prod\nrelease: {SHA}\nservices:\n  web:\n    repository: web\nverify:\n  alarms: [a]\n  bake: 1m\n"
    )
}

/// (what, file name, content, line, col, part of the message)
fn cases() -> Vec<(
    &'static str,
    &'static str,
    String,
    usize,
    usize,
    &'static str,
)> {
    let v = valid();
    let with = |from: &str, to: &str| {
        assert!(v.contains(from), "{from}");
        v.replacen(from, to, 1)
    };
    vec![
        (
            "syntax error",
            "prod.yaml",
            with("cluster: saas-prod", "cluster: [saas-prod"),
            4,
            8,
            "YAML syntax error",
        ),
        (
            "an unclosed list is reported where it was opened",
            "prod.yaml",
            with("  alarms: [a]", "  alarms: [a, b"),
            9,
            11,
            "`[` opened here is never closed; add the `]`",
        ),
        (
            "tab indentation",
            "prod.yaml",
            with("  web:\n", "\tweb:\n"),
            6,
            2,
            "tabs disallowed",
        ),
        (
            "unknown top-level key",
            "prod.yaml",
            with("cluster: saas-prod", "cluster: saas-prod\nrelase: x"),
            4,
            1,
            "did you mean `release`",
        ),
        (
            "unknown service key",
            "prod.yaml",
            with(
                "    repository: web",
                "    repository: web\n    containr: app",
            ),
            8,
            5,
            "did you mean `container`",
        ),
        (
            "unknown verify key",
            "prod.yaml",
            with("  bake: 1m", "  bake: 1m\n  bake_time: 2m"),
            11,
            3,
            "unknown key `bake_time`",
        ),
        (
            "unknown health key",
            "prod.yaml",
            with(
                "  bake: 1m",
                "  bake: 1m\n  health:\n    - url: http://x/h\n      status: 200",
            ),
            13,
            7,
            "did you mean `expect_status`",
        ),
        (
            "environment is not the stem",
            "prod.yaml",
            with("environment: prod", "environment: production"),
            1,
            14,
            "does not match the file name",
        ),
        (
            "short release",
            "prod.yaml",
            with(SHA, "3f9c2a1"),
            4,
            10,
            "is 7 characters",
        ),
        (
            "uppercase release",
            "prod.yaml",
            with(SHA, &SHA.to_uppercase()),
            4,
            10,
            "lowercase",
        ),
        (
            "release not hex",
            "prod.yaml",
            with(SHA, "latest"),
            4,
            10,
            "not a 40-character lowercase hex",
        ),
        (
            "service release override bad",
            "prod.yaml",
            with(
                "    repository: web",
                "    repository: web\n    release: main",
            ),
            8,
            14,
            "not a 40-character",
        ),
        (
            "missing region",
            "prod.yaml",
            with("region: me-south-1\n", ""),
            1,
            1,
            "missing required key `region`",
        ),
        (
            "missing cluster",
            "prod.yaml",
            with("cluster: saas-prod\n", ""),
            1,
            1,
            "missing required key `cluster`",
        ),
        (
            "missing services",
            "prod.yaml",
            with("services:\n  web:\n    repository: web\n", ""),
            1,
            1,
            "missing required key `services`",
        ),
        (
            "empty services",
            "prod.yaml",
            with("services:\n  web:\n    repository: web\n", "services: {}\n"),
            5,
            11,
            "`services` is empty",
        ),
        (
            "services is a list",
            "prod.yaml",
            with(
                "services:\n  web:\n    repository: web\n",
                "services: [web]\n",
            ),
            5,
            11,
            "must be a mapping",
        ),
        (
            "missing repository",
            "prod.yaml",
            with("    repository: web", "    container: app"),
            7,
            5,
            "missing required key `repository`",
        ),
        (
            "duplicate key",
            "prod.yaml",
            with("cluster: saas-prod", "cluster: saas-prod\ncluster: other"),
            4,
            1,
            "duplicate key `cluster` (first at line 3)",
        ),
        (
            "bad bake duration",
            "prod.yaml",
            with("bake: 1m", "bake: 15 minutes"),
            10,
            9,
            "not a duration",
        ),
        (
            "bad rollout_timeout",
            "prod.yaml",
            with("bake: 1m", "bake: 1m\n  rollout_timeout: 1m1h"),
            11,
            20,
            "not a duration",
        ),
        (
            "zero rollout_timeout",
            "prod.yaml",
            with("bake: 1m", "bake: 1m\n  rollout_timeout: 0s"),
            11,
            20,
            "longer than 0s",
        ),
        (
            "health url not http",
            "prod.yaml",
            with("  bake: 1m", "  bake: 1m\n  health:\n    - url: ftp://x/h"),
            12,
            12,
            "must be http:// or https://",
        ),
        (
            "health url garbage",
            "prod.yaml",
            with("  bake: 1m", "  bake: 1m\n  health:\n    - url: not a url"),
            12,
            12,
            "is not a URL",
        ),
        (
            "expect_status too low",
            "prod.yaml",
            with(
                "  bake: 1m",
                "  bake: 1m\n  health:\n    - url: https://x/h\n      expect_status: 99",
            ),
            13,
            22,
            "from 100 to 599",
        ),
        (
            "expect_status too high",
            "prod.yaml",
            with(
                "  bake: 1m",
                "  bake: 1m\n  health:\n    - url: https://x/h\n      expect_status: 600",
            ),
            13,
            22,
            "from 100 to 599",
        ),
        (
            "account role that is not an IAM role ARN",
            "prod.yaml",
            with(
                "verify:",
                "account:\n  role_arn: arn:aws:iam::2109876543:user/deployer\nverify:",
            ),
            9,
            13,
            "is not an IAM role ARN",
        ),
        (
            "account external id too short",
            "prod.yaml",
            with(
                "verify:",
                "account:\n  role_arn: arn:aws:iam::210987654321:role/deployer\n  external_id: x\nverify:",
            ),
            10,
            16,
            "is not an STS external id",
        ),
        (
            "account without role_arn",
            "prod.yaml",
            with(
                "verify:",
                "account:\n  external_id: ecs-gitops-prod\nverify:",
            ),
            9,
            3,
            "`role_arn`",
        ),
        (
            "account key misspelt",
            "prod.yaml",
            with(
                "verify:",
                "account:\n  role: arn:aws:iam::210987654321:role/deployer\nverify:",
            ),
            9,
            3,
            "unknown key `role`",
        ),
        (
            "drift mode unknown",
            "prod.yaml",
            with("verify:", "drift: fix\nverify:"),
            8,
            8,
            "`correct`",
        ),
        (
            "empty hotfix",
            "prod.yaml",
            with("verify:", "hotfix: \"\"\nverify:"),
            8,
            9,
            "`hotfix` reason is empty",
        ),
        (
            "hotfix without value",
            "prod.yaml",
            with("verify:", "hotfix:\nverify:"),
            8,
            1,
            "`hotfix` reason is empty",
        ),
        (
            "promote_from itself",
            "prod.yaml",
            with("verify:", "promote_from: prod\nverify:"),
            8,
            15,
            "names this environment itself",
        ),
        (
            "alarms not a list",
            "prod.yaml",
            with("alarms: [a]", "alarms: a"),
            9,
            11,
            "must be a list",
        ),
        (
            "bad region",
            "prod.yaml",
            with("region: me-south-1", "region: Middle East"),
            2,
            9,
            "not an AWS region",
        ),
        (
            "repository is a URI",
            "prod.yaml",
            with(
                "repository: web",
                "repository: 1234.dkr.ecr.me-south-1.amazonaws.com/web:tag",
            ),
            7,
            17,
            "not an ECR repository name",
        ),
        (
            "empty file",
            "prod.yaml",
            String::new(),
            1,
            1,
            "file is empty",
        ),
        (
            "not a mapping",
            "prod.yaml",
            "- a\n- b\n".to_string(),
            1,
            1,
            "must be a mapping",
        ),
        (
            "two documents",
            "prod.yaml",
            format!("{v}---\n{v}"),
            11,
            1,
            "one YAML document",
        ),
        (
            "alias bomb",
            "prod.yaml",
            {
                let mut d = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
                for i in 1..8 {
                    let p = i - 1;
                    d.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
                }
                d
            },
            5,
            10,
            "expands to more than",
        ),
        (
            "deep nesting",
            "prod.yaml",
            format!("environment: {}{}\n", "[".repeat(40), "]".repeat(40)),
            1,
            45,
            "nesting deeper than",
        ),
        (
            "empty folded block scalar as the release (found by the property tests)",
            "prod.yaml",
            with(&format!("release: {SHA}"), "release: >"),
            4,
            10,
            "is not a 40-character",
        ),
        (
            "literal block scalar as the release",
            "prod.yaml",
            with(&format!("release: {SHA}"), "release: |-\n  abc"),
            4,
            10,
            "is 3 characters",
        ),
        (
            "a notify target without a URL source",
            "prod.yaml",
            format!("{v}notify:\n  - format: slack\n"),
            12,
            5,
            "needs `url_env`",
        ),
        (
            "a notify target with an unknown transition",
            "prod.yaml",
            format!("{v}notify:\n  - url_env: SLACK\n    on: [deployed]\n"),
            13,
            10,
            "`deployed` is not a transition to notify",
        ),
        (
            "suspend not a boolean",
            "prod.yaml",
            format!("{v}suspend: maybe\n"),
            11,
            10,
            "is not true or false",
        ),
        (
            "freeze day misspelled",
            "prod.yaml",
            format!("{v}freeze:\n  - days: [friday]\n    from: \"16:00\"\n    to: \"08:00\"\n"),
            12,
            12,
            "`friday` is not a day",
        ),
        (
            "freeze time not HH:MM",
            "prod.yaml",
            format!("{v}freeze:\n  - from: \"4pm\"\n    to: \"08:00\"\n"),
            12,
            11,
            "is not a time",
        ),
        (
            "freeze time zone unknown",
            "prod.yaml",
            format!(
                "{v}freeze:\n  - from: \"16:00\"\n    to: \"08:00\"\n    timezone: Mars/Olympus\n"
            ),
            14,
            15,
            "not an IANA time zone",
        ),
        // ---- release hooks (base ends at line 10, `  bake: 1m`) ----
        (
            "pre_deploy not a list",
            "prod.yaml",
            format!("{v}hooks:\n  pre_deploy: migrate\n"),
            12,
            15,
            "must be a list of tasks",
        ),
        (
            "hook runs a service the file does not have",
            "prod.yaml",
            format!(
                "{v}hooks:\n  pre_deploy:\n    - name: migrate\n      service: api\n      command: [x]\n"
            ),
            13,
            13,
            "runs service `api`, which is not in `services`",
        ),
        (
            "empty hook command",
            "prod.yaml",
            format!(
                "{v}hooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      command: []\n"
            ),
            15,
            16,
            "`command` is empty",
        ),
        (
            "hook command not a list",
            "prod.yaml",
            format!(
                "{v}hooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      command: alembic upgrade\n"
            ),
            15,
            16,
            "must be a list of strings",
        ),
        (
            "the same name in pre_deploy and verify.tasks",
            "prod.yaml",
            format!(
                "{}hooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      command: [y]\n",
                with(
                    "  bake: 1m\n",
                    "  bake: 1m\n  tasks:\n    - name: migrate\n      service: web\n      command: [x]\n"
                )
            ),
            12,
            13,
            "is used twice",
        ),
        (
            "hook timeout not a duration",
            "prod.yaml",
            format!(
                "{v}hooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      command: [x]\n      timeout: soon\n"
            ),
            16,
            16,
            "`timeout`:",
        ),
        (
            "hook name with a space",
            "prod.yaml",
            format!(
                "{v}hooks:\n  pre_deploy:\n    - name: my migration\n      service: web\n      command: [x]\n"
            ),
            13,
            13,
            "is not a task name",
        ),
        (
            "typo in a hook key",
            "prod.yaml",
            format!(
                "{v}hooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      comand: [x]\n"
            ),
            15,
            7,
            "did you mean `command`",
        ),
        (
            "negative log max",
            "prod.yaml",
            with(
                "  bake: 1m\n",
                "  bake: 1m\n  logs:\n    - group: /prod/backend\n      pattern: ERROR\n      max: -1\n",
            ),
            14,
            12,
            "is not a count",
        ),
        (
            "empty log pattern",
            "prod.yaml",
            with(
                "  bake: 1m\n",
                "  bake: 1m\n  logs:\n    - group: /prod/backend\n      pattern: \"\"\n",
            ),
            13,
            16,
            "must be a CloudWatch Logs filter pattern",
        ),
    ]
}

#[test]
fn each_invalid_file_is_rejected_at_its_location_with_advice() {
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 25, "the table must cover at least 25 mistakes");
    for (what, name, text, line, col, fragment) in all {
        let path = Path::new("desired-state").join(name);
        match desired::parse(&path, &text) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(problems) => {
                let hit = problems
                    .iter()
                    .any(|p| p.at.line == line && p.at.col == col && p.message.contains(fragment));
                if !hit {
                    failures.push(format!(
                        "{what}: wanted {line}:{col} containing {fragment:?}, got {:?}",
                        problems.iter().map(ToString::to_string).collect::<Vec<_>>()
                    ));
                }
                for p in &problems {
                    assert!(
                        p.to_string().starts_with("desired-state/prod.yaml:"),
                        "{what}: {p}"
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_problem_in_a_file_is_reported_not_only_the_first() {
    let text = valid()
        .replace("region: me-south-1", "region: x")
        .replace("bake: 1m", "bake: soon");
    let problems = desired::parse(Path::new("prod.yaml"), &text).unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn hooks_and_verification_tasks_parse_with_their_defaults() {
    let text = format!(
        "{}hooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      command: [alembic, upgrade, head]\n",
        valid().replace(
            "  bake: 1m\n",
            "  bake: 1m\n  tasks:\n    - name: smoke\n      service: web\n      container: app\n      command: [pytest, -m, smoke]\n      timeout: 5m\n  logs:\n    - group: /prod/backend\n      pattern: '\"ERROR\"'\n"
        )
    );
    let d = desired::parse(Path::new("desired-state/prod.yaml"), &text).unwrap();
    let m = &d.pre_deploy[0];
    assert_eq!((m.name.as_str(), m.service.as_str()), ("migrate", "web"));
    assert_eq!(m.command, ["alembic", "upgrade", "head"]);
    assert_eq!(m.timeout, Duration::from_secs(600), "10m by default");
    assert_eq!(m.container, None);
    let t = &d.verify.tasks[0];
    assert_eq!(
        (t.container.as_deref(), t.timeout),
        (Some("app"), Duration::from_secs(300))
    );
    let l = &d.verify.logs[0];
    assert_eq!(
        (l.group.as_str(), l.pattern.as_str(), l.max),
        ("/prod/backend", "\"ERROR\"", 0)
    );
}

#[test]
fn the_valid_base_parses_into_its_fields() {
    let d = desired::parse(Path::new("desired-state/prod.yaml"), &valid()).unwrap();
    assert_eq!(d.environment, "prod");
    assert_eq!(d.release.as_str(), SHA);
    assert_eq!(d.services["web"].repository, "web");
    assert_eq!(d.verify.bake, Duration::from_secs(60));
    assert_eq!(d.verify.alarms, vec!["a".to_string()]);
    assert_eq!(d.verify.rollout_timeout, desired::DEFAULT_ROLLOUT_TIMEOUT);
}

#[test]
fn the_example_files_are_valid_and_promote_prod_from_staging() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("desired-state");
    let mut states = Vec::new();
    for env in ["staging", "prod"] {
        let path = dir.join(format!("{env}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let d = desired::parse(&path, &text).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(d.services.len(), 2);
        assert!(d.services.contains_key("saas-backend") && d.services.contains_key("saas-worker"));
        states.push((path, d));
    }
    let prod = &states[1].1;
    assert_eq!(prod.promote_from.as_deref(), Some("staging"));
    assert_eq!(prod.verify.bake, Duration::from_secs(15 * 60));
    assert!(prod.verify.alarms.iter().any(|a| a.contains("5xx")));
    assert!(prod.verify.alarms.iter().any(|a| a.contains("latency")));
    assert!(check_set(&states).is_empty());
}

fn parsed(env: &str, promote_from: Option<&str>) -> (std::path::PathBuf, desired::DesiredState) {
    let mut text = valid().replace("environment: prod", &format!("environment: {env}"));
    if let Some(up) = promote_from {
        text.push_str(&format!("promote_from: {up}\n"));
    }
    let path = Path::new("desired-state").join(format!("{env}.yaml"));
    let d = desired::parse(&path, &text).unwrap();
    (path, d)
}

#[test]
fn promote_from_an_environment_without_a_file_is_reported_at_the_key() {
    let problems = check_set(&[parsed("prod", Some("staging"))]);
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].at.line, problems[0].at.col), (11, 15));
    assert!(problems[0].message.contains("no file"), "{}", problems[0]);
}

#[test]
fn a_promotion_cycle_is_reported() {
    let problems = check_set(&[
        parsed("a", Some("b")),
        parsed("b", Some("c")),
        parsed("c", Some("a")),
    ]);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].message.contains("promotion cycle"),
        "{}",
        problems[0]
    );
}

/// A small deterministic generator, so a failure can be replayed from its seed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn arbitrary_input_never_panics_and_is_answered_quickly() {
    let base = valid();
    let alphabet: &[u8] = b"{}[]:,-&*!|>'\"#%@` \n\t?abcxyz0123456789.\\";
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut slowest = Duration::ZERO;
    for i in 0..3000 {
        let text = if i % 2 == 0 {
            // Mutations of a valid file reach deep into the checks.
            let mut bytes = base.clone().into_bytes();
            for _ in 0..(1 + rng.next() % 6) {
                let at = (rng.next() as usize) % bytes.len();
                match rng.next() % 3 {
                    0 => bytes[at] = alphabet[(rng.next() as usize) % alphabet.len()],
                    1 => bytes.insert(at, alphabet[(rng.next() as usize) % alphabet.len()]),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            let len = (rng.next() % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let start = Instant::now();
        let result = std::panic::catch_unwind(|| {
            desired::parse(Path::new("desired-state/prod.yaml"), &text)
        });
        slowest = slowest.max(start.elapsed());
        assert!(result.is_ok(), "panicked on input #{i}: {text:?}");
    }
    // Generous: a debug build on a loaded machine parses these in well under a millisecond.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest parse took {slowest:?}"
    );
}

#[test]
fn a_file_over_one_mebibyte_is_refused_before_parsing() {
    let text = format!("{}# {}\n", valid(), "x".repeat(1024 * 1024));
    let problems = desired::parse(Path::new("desired-state/prod.yaml"), &text).unwrap_err();
    assert!(problems[0].message.contains("byte limit"), "{problems:?}");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ecs-gitops"))
}

#[test]
fn validate_exits_0_on_the_examples_1_on_problems_and_2_on_usage_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = bin().current_dir(root).arg("validate").output().unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("prod.yaml");
    std::fs::write(&bad, valid().replace("bake: 1m", "bake: 1x")).unwrap();
    let out = bin().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{}:10:9: `bake`", bad.display())),
        "{stdout}"
    );

    let usage = bin().args(["validate", "--no-such-flag"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let missing = bin()
        .args(["validate", "/no/such/file.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}
