//! The files for running ecs-gitops for real: the IAM policy grants exactly what the code
//! calls (both ways), and the ECS and systemd files are what they claim to be.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn json(rel: &str) -> Value {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// IAM actions whose name differs from the API operation they authorize.
const IAM_ACTION: [(&str, &str); 1] = [("sqs:DeleteMessageBatch", "sqs:DeleteMessage")];

/// Every AWS operation the code can call: all calls go through `Aws::call(region, service, op, ..)`.
fn operations_called() -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices(".call(") {
                // .call(&c.region, "ecs", "DescribeServices", ...): the region first.
                let rest = text[i + 6..].trim_start();
                let rest = rest
                    .strip_prefix("&c.region,")
                    .map(str::trim_start)
                    .unwrap_or(rest);
                let lits: Vec<&str> = rest.split('"').collect();
                // .call("ecs", "DescribeServices", ...) -> ["", "ecs", ", ", "DescribeServices", ...]
                if lits.len() > 3 && lits[0].is_empty() && lits[2].trim() == "," {
                    let op = format!("{}:{}", lits[1], lits[3]);
                    let action = IAM_ACTION
                        .iter()
                        .find(|(o, _)| *o == op)
                        .map(|(_, a)| a.to_string())
                        .unwrap_or(op);
                    ops.insert(action);
                }
            }
        }
    }
    ops
}

/// Operations an operator runs once, not the controller: `ecs-gitops lease-table create`
/// (documented as run with an administrator's credentials, or replaced by the AWS CLI call).
const SETUP_ONLY: [&str; 1] = ["dynamodb:CreateTable"];

/// The code assumes `account.role_arn` roles (aws-config's AssumeRoleProvider, outside
/// `Aws::call`).
fn assumes_roles() -> bool {
    std::fs::read_to_string(root().join("src/aws/account.rs"))
        .map(|t| t.contains("AssumeRoleProvider"))
        .unwrap_or(false)
}

fn policy_actions() -> BTreeSet<String> {
    actions_of("deploy/iam-policy.json")
}

fn actions_of(file: &str) -> BTreeSet<String> {
    let policy = json(file);
    let mut actions = BTreeSet::new();
    for st in policy["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow");
        match &st["Action"] {
            Value::String(a) => {
                actions.insert(a.clone());
            }
            Value::Array(a) => actions.extend(a.iter().map(|x| x.as_str().unwrap().to_string())),
            other => panic!("unexpected Action {other}"),
        }
        assert!(
            !actions.iter().any(|a| a.contains('*')),
            "no wildcard actions"
        );
    }
    actions
}

#[test]
fn the_iam_policy_grants_exactly_the_operations_the_code_calls() {
    let mut called = operations_called();
    assert!(called.len() >= 8, "the scan found the calls: {called:?}");
    for op in SETUP_ONLY {
        assert!(called.remove(op), "{op} is called by the code");
    }
    assert!(called.contains("ecs:UpdateService") && called.contains("cloudwatch:DescribeAlarms"));
    let granted = policy_actions();
    // Registering a revision, or running a hook's task, that names task and execution roles
    // needs iam:PassRole.
    let mut needed = called.clone();
    needed.insert("iam:PassRole".into());
    if assumes_roles() {
        needed.insert("sts:AssumeRole".into());
    }
    let missing: Vec<&String> = needed.difference(&granted).collect();
    let unused: Vec<&String> = granted.difference(&needed).collect();
    assert!(missing.is_empty(), "called but not granted: {missing:?}");
    assert!(unused.is_empty(), "granted but never called: {unused:?}");
}

#[test]
fn resources_are_scoped_where_aws_allows() {
    let policy = json("deploy/iam-policy.json");
    for st in policy["Statement"].as_array().unwrap() {
        let actions = st["Action"].to_string();
        let star = st["Resource"] == "*";
        let unscopable = [
            "ecs:DescribeTaskDefinition",
            "ecs:ListTaskDefinitions",
            "ecs:RegisterTaskDefinition",
        ];
        // ListTasks has no resource type of its own here; it is scoped by cluster instead.
        let by_cluster = !st["Condition"]["ArnEquals"]["ecs:cluster"].is_null();
        if star && !by_cluster {
            for a in st["Action"].as_array().unwrap() {
                assert!(
                    unscopable.contains(&a.as_str().unwrap()),
                    "{a} could be scoped: {actions}"
                );
            }
        }
    }
    let pass = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"].to_string().contains("iam:PassRole"))
        .unwrap();
    assert_eq!(
        pass["Condition"]["StringEquals"]["iam:PassedToService"],
        "ecs-tasks.amazonaws.com"
    );
}

#[test]
fn the_ecs_files_run_replicas_over_the_lease_table_with_a_healthz_check_and_the_webhook_port() {
    let td = json("deploy/ecs-task-definition.json");
    let c = &td["containerDefinitions"][0];
    assert!(c["healthCheck"]["command"].to_string().contains("/healthz"));
    assert_eq!(c["portMappings"][0]["containerPort"], 9400);
    let cmd: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cmd[0], "run");
    assert!(cmd.windows(2).any(|w| w == ["--listen", "0.0.0.0:9400"]));
    assert_ne!(c["user"], "0", "not root");
    // Several replicas share the environments through the lease table, so a deployment of
    // the controller itself may run old and new tasks side by side.
    assert!(
        cmd.windows(2)
            .any(|w| w == ["--lease-table", "ecs-gitops-leases"])
    );
    let svc = json("deploy/ecs-service.json");
    assert!(svc["desiredCount"].as_i64().unwrap() >= 2);
    let policy = std::fs::read_to_string(root().join("deploy/iam-policy.json")).unwrap();
    assert!(
        policy.contains(":table/ecs-gitops-leases"),
        "the policy names the same table"
    );
    let unit = std::fs::read_to_string(root().join("deploy/ecs-gitops.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/ecs-gitops run"));
    assert!(unit.contains("User=ecs-gitops"));
    let docker = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert!(
        docker.contains("USER 10001")
            && docker.contains(" git ")
            && docker.contains("ca-certificates")
    );
}

#[test]
fn the_deployer_role_grants_in_its_account_what_the_code_calls_there_and_trusts_only_the_controller()
 {
    assert!(assumes_roles(), "the code assumes roles");
    // Permissions: every call about an environment (not STS, which is made with the
    // controller's own credentials), in the environment's account.
    // The lease table and the events queue live with the controller, reached with its own
    // credentials.
    let mut needed: BTreeSet<String> = operations_called()
        .into_iter()
        .filter(|op| !op.starts_with("dynamodb:") && !op.starts_with("sqs:"))
        .collect();
    needed.insert("iam:PassRole".into());
    let granted = actions_of("deploy/deployer-role-policy.json");
    let missing: Vec<&String> = needed.difference(&granted).collect();
    let unused: Vec<&String> = granted.difference(&needed).collect();
    assert!(missing.is_empty(), "called but not granted: {missing:?}");
    assert!(unused.is_empty(), "granted but never called: {unused:?}");
    let text = std::fs::read_to_string(root().join("deploy/deployer-role-policy.json")).unwrap();
    assert!(
        !text.contains(":123456789012:"),
        "the deployer role's resources are in its own account"
    );
    // Trust: the controller's task role, with the external id, and nobody else.
    let task_role = json("deploy/ecs-task-definition.json")["taskRoleArn"].clone();
    let trust = json("deploy/deployer-role-trust-policy.json");
    let statements = trust["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1);
    let st = &statements[0];
    assert_eq!(st["Effect"], "Allow");
    assert_eq!(st["Action"], "sts:AssumeRole");
    assert_eq!(st["Principal"]["AWS"], task_role);
    let external_id = st["Condition"]["StringEquals"]["sts:ExternalId"]
        .as_str()
        .expect("the trust policy requires an external id");
    // The controller's policy may assume exactly the role the trust policy belongs to.
    let controller = json("deploy/iam-policy.json");
    let assume = controller["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"].to_string().contains("sts:AssumeRole"))
        .unwrap();
    let role = assume["Resource"][0].as_str().unwrap();
    assert!(
        role.starts_with("arn:aws:iam::210987654321:role/"),
        "{role}"
    );
    // The README's example names the same role and external id.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains(role) && readme.contains(external_id));
}

#[test]
fn the_events_rule_delivers_what_the_controller_reads_to_the_queue_it_polls() {
    let rule = json("deploy/events-rule.json");
    let pattern: Value = serde_json::from_str(rule["EventPattern"].as_str().unwrap()).unwrap();
    let code = std::fs::read_to_string(root().join("src/events.rs")).unwrap();
    for t in pattern["detail-type"].as_array().unwrap() {
        let t = t.as_str().unwrap();
        assert!(code.contains(&format!("\"{t}\"")), "the code reads {t}");
    }
    let queue = json("deploy/events-queue.json");
    let policy: Value =
        serde_json::from_str(queue["Attributes"]["Policy"].as_str().unwrap()).unwrap();
    let st = &policy["Statement"][0];
    assert_eq!(st["Principal"]["Service"], "events.amazonaws.com");
    let rule_arn = st["Condition"]["ArnEquals"]["aws:SourceArn"]
        .as_str()
        .unwrap();
    assert!(rule_arn.ends_with(&format!("rule/{}", rule["Name"].as_str().unwrap())));
    let queue_arn = st["Resource"].as_str().unwrap();
    assert!(queue_arn.ends_with(&format!(":{}", queue["QueueName"].as_str().unwrap())));
    let targets = json("deploy/events-target.json");
    assert_eq!(targets["Rule"], rule["Name"]);
    assert_eq!(targets["Targets"][0]["Arn"], queue_arn);
    // The controller polls that queue, and may.
    let td = json("deploy/ecs-task-definition.json");
    let cmd = td["containerDefinitions"][0]["command"].to_string();
    assert!(cmd.contains("/ecs-gitops-events"), "{cmd}");
    let controller = std::fs::read_to_string(root().join("deploy/iam-policy.json")).unwrap();
    assert!(controller.contains(queue_arn));
}
