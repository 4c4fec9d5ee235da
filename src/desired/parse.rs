//! Parsing and checking one desired-state file (and, in `check_set`, a folder of them): the
//! located YAML tree is checked key by key, and every problem is reported with its line,
//! column and what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::freeze::{self, FreezeWindow};
use super::yaml::{self, Location, Node};
use super::{
    AccountRole, DEFAULT_HOOK_TIMEOUT, DesiredState, DriftMode, HealthCheck, LogCheck,
    NotifyFormat, NotifyOn, NotifyTarget, Problem, Release, ServiceSpec, TaskHook, UrlFrom, Verify,
    parse_duration, truncate,
};

const TOP_KEYS: &[&str] = &[
    "environment",
    "region",
    "cluster",
    "release",
    "promote_from",
    "hotfix",
    "services",
    "hooks",
    "freeze",
    "suspend",
    "notify",
    "verify",
    "drift",
    "account",
];
const ACCOUNT_KEYS: &[&str] = &["role_arn", "external_id"];
const SERVICE_KEYS: &[&str] = &["repository", "container", "release"];
const VERIFY_KEYS: &[&str] = &[
    "alarms",
    "health",
    "tasks",
    "logs",
    "bake",
    "rollout_timeout",
];
const HOOKS_KEYS: &[&str] = &["pre_deploy"];
const FREEZE_KEYS: &[&str] = &["days", "from", "to", "timezone"];
const NOTIFY_KEYS: &[&str] = &["url_env", "url_file", "format", "on"];
const TASK_KEYS: &[&str] = &["name", "service", "container", "command", "timeout"];
const LOG_KEYS: &[&str] = &["group", "pattern", "max"];
const HEALTH_KEYS: &[&str] = &["url", "expect_status"];

/// The environment name a file must declare: its stem (`prod` for `desired-state/prod.yaml`).
pub fn stem_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// True for the file names the controller reads from the desired-state folder.
pub fn is_desired_state_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// Parses and validates one file. `path` is only used in messages and for the stem check.
pub fn parse(path: &Path, text: &str) -> Result<DesiredState, Vec<Problem>> {
    let mut c = Checker {
        path: path.to_path_buf(),
        problems: Vec::new(),
    };
    let root = match yaml::parse(text) {
        Ok(Some(node)) => node,
        Ok(None) => {
            c.at(
                Location { line: 1, col: 1 },
                "file is empty; a desired-state file is a mapping with environment, region, cluster, release and services",
            );
            return Err(c.problems);
        }
        Err(e) => {
            if let Some((open, bracket)) = e.unclosed {
                let close = if bracket == '[' { ']' } else { '}' };
                c.at(
                    open,
                    format!("`{bracket}` opened here is never closed; add the `{close}` (the YAML parser gave up at line {})", e.at.line),
                );
            }
            c.at(e.at, e.message);
            return Err(c.problems);
        }
    };
    let state = c.top(&root);
    match state {
        Some(s) if c.problems.is_empty() => Ok(s),
        _ => Err(c.problems),
    }
}

struct Checker {
    path: PathBuf,
    problems: Vec<Problem>,
}

type Fields<'a> = BTreeMap<&'a str, (Location, &'a Node)>;

impl Checker {
    fn at(&mut self, at: Location, message: impl Into<String>) {
        self.problems.push(Problem {
            path: self.path.clone(),
            at,
            message: message.into(),
        });
    }

    /// Checks that `node` is a mapping with only `known` keys; returns its fields.
    fn fields<'a>(&mut self, node: &'a Node, what: &str, known: &[&str]) -> Option<Fields<'a>> {
        let Node::Map { entries, .. } = node else {
            self.at(
                node.at(),
                format!(
                    "{what} must be a mapping of keys to values, found {}",
                    node.kind()
                ),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (key, key_at, value) in entries {
            if known.contains(&key.as_str()) {
                out.insert(key.as_str(), (*key_at, value));
            } else {
                let hint = match nearest(key, known) {
                    Some(k) => format!("did you mean `{k}`?"),
                    None => format!("known keys are: {}", known.join(", ")),
                };
                self.at(*key_at, format!("unknown key `{key}` in {what}; {hint}"));
            }
        }
        Some(out)
    }

    fn required<'a>(
        &mut self,
        fields: &Fields<'a>,
        map: &Node,
        key: &str,
        what: &str,
        example: &str,
    ) -> Option<&'a Node> {
        match fields.get(key) {
            Some((_, v)) if !v.is_null() => Some(v),
            Some((at, _)) => {
                self.at(
                    *at,
                    format!("`{key}` in {what} has no value; set it, e.g. `{key}: {example}`"),
                );
                None
            }
            None => {
                self.at(
                    map.at(),
                    format!("missing required key `{key}` in {what}; add e.g. `{key}: {example}`"),
                );
                None
            }
        }
    }

    fn optional<'a>(&self, fields: &Fields<'a>, key: &str) -> Option<&'a Node> {
        fields.get(key).map(|(_, v)| *v).filter(|v| !v.is_null())
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node {
            Node::Scalar { value, .. } => Some(value.clone()),
            other => {
                self.at(
                    other.at(),
                    format!("`{what}` must be a single value, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn name(
        &mut self,
        node: &Node,
        what: &str,
        rule: fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let s = self.string(node, what)?;
        match rule(&s) {
            Ok(()) => Some(s),
            Err(m) => {
                self.at(node.at(), format!("`{what}`: {m}"));
                None
            }
        }
    }

    fn release(&mut self, node: &Node, what: &str) -> Option<Release> {
        let s = self.string(node, what)?;
        match Release::parse(&s) {
            Ok(r) => Some(r),
            Err(m) => {
                self.at(node.at(), format!("`{what}`: {m}"));
                None
            }
        }
    }

    fn top(&mut self, root: &Node) -> Option<DesiredState> {
        let f = self.fields(root, "the file", TOP_KEYS)?;
        let stem = stem_of(&self.path);
        let environment = self
            .required(&f, root, "environment", "the file", &stem)
            .and_then(|n| {
                self.name(n, "environment", check_environment_name)
                    .map(|s| (s, n.at()))
            });
        if let Some((env, at)) = &environment
            && *env != stem
        {
            self.at(
                *at,
                format!(
                    "environment `{env}` does not match the file name `{}`; rename the file to `{env}.yaml` or set `environment: {stem}`",
                    self.path.file_name().map(|s| s.to_string_lossy()).unwrap_or_default()
                ),
            );
        }
        let region = self
            .required(&f, root, "region", "the file", "me-south-1")
            .and_then(|n| self.name(n, "region", check_region));
        let cluster = self
            .required(&f, root, "cluster", "the file", "saas-prod")
            .and_then(|n| self.name(n, "cluster", check_ecs_name));
        let release = self
            .required(&f, root, "release", "the file", "<40-hex git SHA>")
            .and_then(|n| self.release(n, "release"));
        let promote_from = self.optional(&f, "promote_from").and_then(|n| {
            let v = self.name(n, "promote_from", check_environment_name)?;
            if v == stem {
                self.at(
                    n.at(),
                    format!("`promote_from: {v}` names this environment itself; name the upstream environment (e.g. `staging`) or remove the key"),
                );
                return None;
            }
            Some((v, n.at()))
        });
        let hotfix = match f.get("hotfix") {
            None => None,
            Some((at, n)) => match self.string(n, "hotfix") {
                Some(reason) if reason.trim().is_empty() || n.is_null() => {
                    let at = if n.is_null() { *at } else { n.at() };
                    self.at(at, "`hotfix` reason is empty; say why the promotion gate is skipped (e.g. `hotfix: \"INC-123 checkout outage\"`) or remove the key");
                    None
                }
                other => other,
            },
        };
        let services = self
            .required(
                &f,
                root,
                "services",
                "the file",
                "{saas-backend: {repository: saas-backend}}",
            )
            .and_then(|n| self.services(n));
        let verify = match self.optional(&f, "verify") {
            Some(n) => self.verify(n),
            None => Some(Verify::default()),
        };
        let suspend = match self.optional(&f, "suspend") {
            None => Some(false),
            Some(n) => match self.string(n, "suspend")?.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                other => {
                    self.at(n.at(), format!("`suspend: {}` is not true or false; `suspend: true` stops all writes to AWS for this environment", truncate(other, 20)));
                    None
                }
            },
        };
        let notify = match self.optional(&f, "notify") {
            Some(Node::Seq { items, .. }) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in items {
                    match self.notify_target(item) {
                        Some(t) => out.push(t),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            Some(other) => {
                self.at(other.at(), format!("`notify` must be a list of targets like `- url_env: SLACK_WEBHOOK_PROD`, found {}", other.kind()));
                None
            }
            None => Some(Vec::new()),
        };
        let freeze = match self.optional(&f, "freeze") {
            Some(n) => self.freeze(n),
            None => Some(Vec::new()),
        };
        let pre_deploy = match self.optional(&f, "hooks") {
            Some(n) => self.hooks(n),
            None => Some(Vec::new()),
        };
        if let (Some(services), Some(pre), Some(v)) = (&services, &pre_deploy, &verify) {
            self.check_hooks(root, services, pre, &v.tasks);
        }
        let drift = match self.optional(&f, "drift") {
            None => Some(DriftMode::Correct),
            Some(n) => match self.string(n, "drift")?.as_str() {
                "correct" => Some(DriftMode::Correct),
                "report" => Some(DriftMode::Report),
                other => {
                    self.at(
                        n.at(),
                        format!("`drift: {}` is not a drift mode; use `correct` (put ECS back) or `report` (only report it)", truncate(other, 40)),
                    );
                    None
                }
            },
        };
        let account = match self.optional(&f, "account") {
            None => Some(None),
            Some(n) => self.account(n).map(Some),
        };
        Some(DesiredState {
            account: account?,
            environment: environment?.0,
            region: region?,
            cluster: cluster?,
            release: release?,
            promote_from_at: promote_from.as_ref().map(|p| p.1).unwrap_or_default(),
            promote_from: promote_from.map(|p| p.0),
            hotfix,
            services: services?,
            pre_deploy: pre_deploy?,
            freeze: freeze?,
            suspend: suspend?,
            notify: notify?,
            verify: verify?,
            drift: drift?,
        })
    }

    /// `account: {role_arn: arn:aws:iam::<12 digits>:role/<name>, external_id: ...}`.
    fn account(&mut self, node: &Node) -> Option<AccountRole> {
        let f = self.fields(node, "`account`", ACCOUNT_KEYS)?;
        let role_arn = self
            .required(
                &f,
                node,
                "role_arn",
                "`account`",
                "arn:aws:iam::210987654321:role/ecs-gitops-deployer",
            )
            .and_then(|n| self.name(n, "account.role_arn", check_role_arn));
        let external_id = match self.optional(&f, "external_id") {
            None => Some(None),
            Some(n) => self
                .name(n, "account.external_id", check_external_id)
                .map(Some),
        };
        Some(AccountRole {
            role_arn: role_arn?,
            external_id: external_id?,
        })
    }

    fn services(&mut self, node: &Node) -> Option<BTreeMap<String, ServiceSpec>> {
        let Node::Map { entries, at } = node else {
            self.at(
                node.at(),
                format!(
                    "`services` must be a mapping of ECS service names to settings, found {}",
                    node.kind()
                ),
            );
            return None;
        };
        if entries.is_empty() {
            self.at(*at, "`services` is empty; name at least one ECS service, e.g. `saas-backend: {repository: saas-backend}`");
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, name_at, spec) in entries {
            if let Err(m) = check_ecs_name(name) {
                self.at(
                    *name_at,
                    format!("service name `{}`: {m}", truncate(name, 40)),
                );
                ok = false;
                continue;
            }
            let what = format!("service `{name}`");
            let Some(f) = self.fields(spec, &what, SERVICE_KEYS) else {
                ok = false;
                continue;
            };
            let repository = self
                .required(&f, spec, "repository", &what, name)
                .and_then(|n| self.name(n, "repository", check_repository));
            let container = self
                .optional(&f, "container")
                .map(|n| self.name(n, "container", check_container));
            let release = self
                .optional(&f, "release")
                .map(|n| self.release(n, "release"));
            // `Some(None)` is a key that was present but invalid (already reported).
            match (repository, container, release) {
                (Some(repository), container, release)
                    if !matches!(container, Some(None)) && !matches!(release, Some(None)) =>
                {
                    out.insert(
                        name.clone(),
                        ServiceSpec {
                            repository,
                            container: container.flatten(),
                            release: release.flatten(),
                        },
                    );
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn verify(&mut self, node: &Node) -> Option<Verify> {
        let f = self.fields(node, "`verify`", VERIFY_KEYS)?;
        let mut v = Verify::default();
        let mut ok = true;
        if let Some(n) = self.optional(&f, "alarms") {
            match n {
                Node::Seq { items, .. } => {
                    for item in items {
                        match self.name(item, "alarms", check_alarm_name) {
                            Some(a) => v.alarms.push(a),
                            None => ok = false,
                        }
                    }
                }
                other => {
                    self.at(other.at(), format!("`alarms` must be a list of CloudWatch alarm names, e.g. `[saas-prod-5xx]`, found {}", other.kind()));
                    ok = false;
                }
            }
        }
        if let Some(n) = self.optional(&f, "health") {
            match n {
                Node::Seq { items, .. } => {
                    for item in items {
                        match self.health(item) {
                            Some(h) => v.health.push(h),
                            None => ok = false,
                        }
                    }
                }
                other => {
                    self.at(other.at(), format!("`health` must be a list of checks like `- url: https://host/health`, found {}", other.kind()));
                    ok = false;
                }
            }
        }
        if let Some(n) = self.optional(&f, "tasks") {
            match self.task_list(n, "verify.tasks") {
                Some(t) => v.tasks = t,
                None => ok = false,
            }
        }
        if let Some(n) = self.optional(&f, "logs") {
            match n {
                Node::Seq { items, .. } => {
                    for item in items {
                        match self.log_check(item) {
                            Some(l) => v.logs.push(l),
                            None => ok = false,
                        }
                    }
                }
                other => {
                    self.at(other.at(), format!("`logs` must be a list of checks like `- group: /prod/backend`, found {}", other.kind()));
                    ok = false;
                }
            }
        }
        for (key, slot) in [
            ("bake", &mut v.bake),
            ("rollout_timeout", &mut v.rollout_timeout),
        ] {
            if let Some(n) = self.optional(&f, key) {
                let Some(s) = self.string(n, key) else {
                    ok = false;
                    continue;
                };
                match parse_duration(&s) {
                    Ok(d) if key == "rollout_timeout" && d.is_zero() => {
                        self.at(n.at(), "`rollout_timeout` must be longer than 0s; give the rollout time to finish, e.g. `10m`");
                        ok = false;
                    }
                    Ok(d) => *slot = d,
                    Err(m) => {
                        self.at(n.at(), format!("`{key}`: {m}"));
                        ok = false;
                    }
                }
            }
        }
        ok.then_some(v)
    }

    fn notify_target(&mut self, node: &Node) -> Option<NotifyTarget> {
        let what = "a notify target";
        let f = self.fields(node, what, NOTIFY_KEYS)?;
        let url = match (self.optional(&f, "url_env"), self.optional(&f, "url_file")) {
            (Some(n), None) => {
                let s = self.string(n, "url_env")?;
                let ok = !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !s.as_bytes()[0].is_ascii_digit();
                if !ok {
                    self.at(n.at(), format!("`url_env: {}` is not an environment variable name; use letters, digits and `_`, e.g. SLACK_WEBHOOK_PROD", truncate(&s, 40)));
                    return None;
                }
                UrlFrom::Env(s)
            }
            (None, Some(n)) => {
                let s = self.string(n, "url_file")?;
                if s.trim().is_empty() {
                    self.at(
                        n.at(),
                        "`url_file` is empty; name the file that holds the webhook URL",
                    );
                    return None;
                }
                UrlFrom::File(PathBuf::from(s))
            }
            (Some(_), Some(n)) => {
                self.at(n.at(), "give either `url_env` or `url_file`, not both");
                return None;
            }
            (None, None) => {
                self.at(node.at(), "a notify target needs `url_env` (an environment variable holding the webhook URL) or `url_file`; the URL itself is a secret and never goes in git");
                return None;
            }
        };
        let format = match self.optional(&f, "format") {
            None => NotifyFormat::Slack,
            Some(n) => match self.string(n, "format")?.as_str() {
                "slack" => NotifyFormat::Slack,
                "json" => NotifyFormat::Json,
                other => {
                    self.at(
                        n.at(),
                        format!(
                            "`format: {}` is not a format; use `slack` or `json`",
                            truncate(other, 20)
                        ),
                    );
                    return None;
                }
            },
        };
        let on = match self.optional(&f, "on") {
            None => NotifyOn::ALL.to_vec(),
            Some(Node::Seq { items, .. }) => {
                let mut on = Vec::new();
                for item in items {
                    let s = self.string(item, "on")?;
                    match NotifyOn::ALL.into_iter().find(|k| k.as_str() == s) {
                        Some(k) => on.push(k),
                        None => {
                            self.at(item.at(), format!("`{}` is not a transition to notify; use deploying, verified, rolled_back, blocked or rejected", truncate(&s, 20)));
                            return None;
                        }
                    }
                }
                on
            }
            Some(other) => {
                self.at(
                    other.at(),
                    format!(
                        "`on` must be a list like `[verified, rolled_back]`, found {}",
                        other.kind()
                    ),
                );
                return None;
            }
        };
        Some(NotifyTarget { url, format, on })
    }

    fn freeze(&mut self, node: &Node) -> Option<Vec<FreezeWindow>> {
        let Node::Seq { items, .. } = node else {
            self.at(
                node.at(),
                format!("`freeze` must be a list of windows like `- {{days: [fri], from: \"16:00\", to: \"08:00\"}}`, found {}", node.kind()),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.freeze_window(item) {
                Some(w) => out.push(w),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn freeze_window(&mut self, node: &Node) -> Option<FreezeWindow> {
        let what = "a freeze window";
        let f = self.fields(node, what, FREEZE_KEYS)?;
        let days = match self.optional(&f, "days") {
            None => Some(Vec::new()),
            Some(Node::Seq { items, .. }) => {
                let mut days = Vec::new();
                let mut ok = true;
                for item in items {
                    let s = self.string(item, "days")?;
                    match freeze::parse_day(&s) {
                        Some(d) => days.push(d),
                        None => {
                            self.at(
                                item.at(),
                                format!(
                                    "`{}` is not a day; use mon, tue, wed, thu, fri, sat or sun",
                                    truncate(&s, 20)
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(days)
            }
            Some(other) => {
                self.at(
                    other.at(),
                    format!(
                        "`days` must be a list of days like `[fri, sat]`, found {}",
                        other.kind()
                    ),
                );
                None
            }
        };
        let mut time = |key: &str| {
            let n = self.required(&f, node, key, what, "\"16:00\"")?;
            let s = self.string(n, key)?;
            match freeze::parse_time(&s) {
                Some(t) => Some(t),
                None => {
                    self.at(n.at(), format!("`{key}: {}` is not a time; write 24-hour HH:MM in quotes, e.g. `{key}: \"16:00\"`", truncate(&s, 20)));
                    None
                }
            }
        };
        let from = time("from");
        let to = time("to");
        let (timezone, tz) = match self.optional(&f, "timezone") {
            None => ("UTC".to_string(), Some(jiff::tz::TimeZone::UTC)),
            Some(n) => {
                let s = self.string(n, "timezone")?;
                match freeze::parse_timezone(&s) {
                    Some(tz) => (s, Some(tz)),
                    None => {
                        self.at(n.at(), format!("`timezone: {}` is not an IANA time zone; use a name like Asia/Riyadh or Europe/Berlin", truncate(&s, 40)));
                        (s, None)
                    }
                }
            }
        };
        if let (Some(a), Some(b)) = (from, to)
            && a == b
        {
            self.at(node.at(), "a freeze window's `from` and `to` are equal; give it a length (`to` before `from` runs past midnight)");
            return None;
        }
        Some(FreezeWindow {
            days: days?,
            from: from?,
            to: to?,
            timezone,
            tz: tz?,
        })
    }

    fn hooks(&mut self, node: &Node) -> Option<Vec<TaskHook>> {
        let f = self.fields(node, "`hooks`", HOOKS_KEYS)?;
        match self.optional(&f, "pre_deploy") {
            Some(n) => self.task_list(n, "hooks.pre_deploy"),
            None => Some(Vec::new()),
        }
    }

    fn task_list(&mut self, node: &Node, what: &str) -> Option<Vec<TaskHook>> {
        let Node::Seq { items, .. } = node else {
            self.at(
                node.at(),
                format!(
                    "`{what}` must be a list of tasks like `- name: migrate`, found {}",
                    node.kind()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.task(item, what) {
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn task(&mut self, node: &Node, what: &str) -> Option<TaskHook> {
        let whose = format!("a task of `{what}`");
        let f = self.fields(node, &whose, TASK_KEYS)?;
        let name = self
            .required(&f, node, "name", &whose, "migrate")
            .and_then(|n| self.name(n, "name", check_hook_name));
        let service = self
            .required(&f, node, "service", &whose, "saas-backend")
            .and_then(|n| self.name(n, "service", check_ecs_name));
        let container = match self.optional(&f, "container") {
            None => Some(None),
            Some(n) => self.name(n, "container", check_container).map(Some),
        };
        let command = self
            .required(&f, node, "command", &whose, "[alembic, upgrade, head]")
            .and_then(|n| self.command(n));
        let timeout = match self.optional(&f, "timeout") {
            None => Some(DEFAULT_HOOK_TIMEOUT),
            Some(n) => {
                let s = self.string(n, "timeout")?;
                match parse_duration(&s) {
                    Ok(d) if d.is_zero() => {
                        self.at(n.at(), "`timeout` must be longer than 0s; give the task time to run, e.g. `10m`");
                        None
                    }
                    Ok(d) => Some(d),
                    Err(m) => {
                        self.at(n.at(), format!("`timeout`: {m}"));
                        None
                    }
                }
            }
        };
        Some(TaskHook {
            name: name?,
            service: service?,
            container: container?,
            command: command?,
            timeout: timeout?,
        })
    }

    fn command(&mut self, node: &Node) -> Option<Vec<String>> {
        let Node::Seq { items, at } = node else {
            self.at(
                node.at(),
                format!("`command` must be a list of strings, e.g. `[alembic, upgrade, head]`, found {}", node.kind()),
            );
            return None;
        };
        if items.is_empty() {
            self.at(*at, "`command` is empty; give the program and its arguments, e.g. `[alembic, upgrade, head]`");
            return None;
        }
        let mut out = Vec::new();
        for item in items {
            match item {
                Node::Scalar { value, .. } if !item.is_null() => out.push(value.clone()),
                other => {
                    self.at(
                        other.at(),
                        format!(
                            "each word of `command` must be a string, found {}",
                            other.kind()
                        ),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    fn log_check(&mut self, node: &Node) -> Option<LogCheck> {
        let f = self.fields(node, "a log check", LOG_KEYS)?;
        let group = self
            .required(&f, node, "group", "a log check", "/prod/backend")
            .and_then(|n| self.name(n, "group", check_log_group));
        let pattern = self
            .required(&f, node, "pattern", "a log check", "'\"ERROR\"'")
            .and_then(|n| {
                let s = self.string(n, "pattern")?;
                if s.trim().is_empty() || s.len() > 1024 {
                    self.at(n.at(), "`pattern` must be a CloudWatch Logs filter pattern of 1 to 1024 characters, e.g. '\"ERROR\"'");
                    return None;
                }
                Some(s)
            });
        let max = match self.optional(&f, "max") {
            None => Some(0),
            Some(n) => {
                let s = self.string(n, "max")?;
                match s.parse::<u64>() {
                    Ok(m) => Some(m),
                    Err(_) => {
                        self.at(
                            n.at(),
                            format!(
                                "`max: {}` is not a count; use a whole number of events, 0 or more",
                                truncate(&s, 20)
                            ),
                        );
                        None
                    }
                }
            }
        };
        Some(LogCheck {
            group: group?,
            pattern: pattern?,
            max: max?,
        })
    }

    /// Names are unique across hooks and verification tasks (each names a `startedBy`), and
    /// each runs a service of this file.
    fn check_hooks(
        &mut self,
        root: &Node,
        services: &BTreeMap<String, ServiceSpec>,
        pre: &[TaskHook],
        verify: &[TaskHook],
    ) {
        let mut seen = BTreeSet::new();
        for (what, t) in pre
            .iter()
            .map(|t| ("hooks.pre_deploy", t))
            .chain(verify.iter().map(|t| ("verify.tasks", t)))
        {
            let at = find_task(root, what, &t.name).unwrap_or(root.at());
            if !seen.insert(t.name.clone()) {
                self.at(at, format!("task name `{}` is used twice in hooks.pre_deploy and verify.tasks; give each task its own name (it becomes the task's startedBy)", t.name));
            }
            if !services.contains_key(&t.service) {
                let known: Vec<&str> = services.keys().map(String::as_str).collect();
                self.at(at, format!("{what} task `{}` runs service `{}`, which is not in `services`; use one of: {}", t.name, t.service, known.join(", ")));
            }
        }
    }

    fn health(&mut self, node: &Node) -> Option<HealthCheck> {
        let f = self.fields(node, "a health check", HEALTH_KEYS)?;
        let url = self
            .required(
                &f,
                node,
                "url",
                "a health check",
                "https://api.example.com/health",
            )
            .and_then(|n| self.name(n, "url", check_url));
        let expect_status = match self.optional(&f, "expect_status") {
            None => Some(200),
            Some(n) => {
                let s = self.string(n, "expect_status")?;
                match s.parse::<u16>() {
                    Ok(code) if (100..=599).contains(&code) => Some(code),
                    _ => {
                        self.at(
                            n.at(),
                            format!("`expect_status: {}` is not an HTTP status; use a number from 100 to 599, e.g. 200", truncate(&s, 20)),
                        );
                        None
                    }
                }
            }
        };
        Some(HealthCheck {
            url: url?,
            expect_status: expect_status?,
        })
    }
}

/// Where the task named `name` of list `what` (`hooks.pre_deploy` or `verify.tasks`) is.
fn find_task(root: &Node, what: &str, name: &str) -> Option<Location> {
    let (outer, inner) = what.split_once('.')?;
    let get = |node: &Node, key: &str| -> Option<Node> {
        let Node::Map { entries, .. } = node else {
            return None;
        };
        entries.iter().find(|e| e.0 == key).map(|e| e.2.clone())
    };
    let Node::Seq { items, .. } = get(&get(root, outer)?, inner)? else {
        return None;
    };
    items.iter().find_map(|item| {
        let n = get(item, "name")?;
        matches!(&n, Node::Scalar { value, .. } if value == name).then(|| n.at())
    })
}

/// Hook names become part of `startedBy` (`ecs-gitops/<env>/<name>/<sha7>`), which ECS limits
/// to 128 letters, digits, hyphens, underscores and slashes.
fn check_hook_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a task name; use 1 to 40 letters, digits, `-` or `_` (it becomes part of the task's startedBy), e.g. `migrate`",
            truncate(s, 60)
        ))
    }
}

/// CloudWatch Logs group names: 1 to 512 of letters, digits, `_ - / . #`.
fn check_log_group(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 512
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-/.#".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a CloudWatch Logs group name; use letters, digits and `_ - / . #`, e.g. `/prod/backend`",
            truncate(s, 60)
        ))
    }
}

fn check_environment_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an environment name; use lowercase letters, digits, `-` or `_` (at most 63), e.g. `prod`",
            truncate(s, 40)
        ))
    }
}

/// An IAM role ARN: `arn:<partition>:iam::<12 digits>:role/<path/><name>` (IAM's limits: a
/// name of 1 to 64 of `A-Za-z0-9+=,.@_-`).
fn check_role_arn(s: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "`{}` is not an IAM role ARN; use `arn:aws:iam::<12-digit account>:role/<role name>`, e.g. `arn:aws:iam::210987654321:role/ecs-gitops-deployer`",
            truncate(s, 80)
        ))
    };
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    if parts.len() != 6
        || parts[0] != "arn"
        || !matches!(parts[1], "aws" | "aws-cn" | "aws-us-gov")
        || parts[2] != "iam"
        || !parts[3].is_empty()
        || parts[4].len() != 12
        || !parts[4].bytes().all(|b| b.is_ascii_digit())
    {
        return bad();
    }
    let Some(path_name) = parts[5].strip_prefix("role/") else {
        return bad();
    };
    let name = path_name.rsplit('/').next().unwrap_or_default();
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) || path_name.len() > 512 {
        return bad();
    }
    Ok(())
}

/// STS' ExternalId: 2 to 1224 of `A-Za-z0-9+=,.@:/-` and `_`.
fn check_external_id(s: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c);
    if (2..=1224).contains(&s.len()) && s.chars().all(ok) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an STS external id; use 2 to 1224 letters, digits or `+=,.@:/-_` (the value the deployer role's trust policy names in `sts:ExternalId`)",
            truncate(s, 40)
        ))
    }
}

fn check_region(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('-').collect();
    let ok = parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an AWS region; use a region code such as `me-south-1` or `eu-west-1`",
            truncate(s, 40)
        ))
    }
}

fn check_ecs_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an ECS name; use letters, digits, `-` and `_` (at most 255)",
            truncate(s, 40)
        ))
    }
}

fn check_container(s: &str) -> Result<(), String> {
    check_ecs_name(s).map_err(|_| {
        format!(
            "`{}` is not a container name; use the `name` of a container in the task definition",
            truncate(s, 40)
        )
    })
}

fn check_repository(s: &str) -> Result<(), String> {
    let ok = s.len() >= 2
        && s.len() <= 256
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'/')
        })
        && s.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an ECR repository name; use lowercase letters, digits and `-_./`, e.g. `saas-backend` (the name only, not the URI)",
            truncate(s, 60)
        ))
    }
}

fn check_alarm_name(s: &str) -> Result<(), String> {
    if s.trim().is_empty() || s.len() > 255 {
        Err("alarm names must be 1 to 255 characters; give the CloudWatch alarm's name".into())
    } else {
        Ok(())
    }
}

fn check_url(s: &str) -> Result<(), String> {
    match reqwest::Url::parse(s) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => {
            Ok(())
        }
        Ok(u) => Err(format!(
            "`{}` uses `{}:`; health checks must be http:// or https:// URLs",
            truncate(s, 80),
            u.scheme()
        )),
        Err(_) => Err(format!(
            "`{}` is not a URL; write it in full, e.g. `https://api.example.com/health`",
            truncate(s, 80)
        )),
    }
}

/// The known key closest to `key` by edit distance, when it is close enough to be a typo.
fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    // A word of a known key (`status` for `expect_status`) is as good a hint as a typo.
    let lower = key.to_ascii_lowercase();
    if let Some(k) = known.iter().find(|k| k.split('_').any(|w| w == lower)) {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Cross-file checks over a whole folder: `promote_from` must name an environment that has a
/// file, and promotions must not form a cycle.
pub fn check_set(states: &[(PathBuf, DesiredState)]) -> Vec<Problem> {
    let by_env: BTreeMap<&str, &DesiredState> = states
        .iter()
        .map(|(_, s)| (s.environment.as_str(), s))
        .collect();
    let mut problems = Vec::new();
    for (path, s) in states {
        let Some(up) = &s.promote_from else { continue };
        if !by_env.contains_key(up.as_str()) {
            problems.push(Problem {
                path: path.clone(),
                at: s.promote_from_at,
                message: format!(
                    "`promote_from: {up}` names an environment with no file; add `{up}.yaml` beside this file or fix the name"
                ),
            });
            continue;
        }
        // Walk upstream; coming back to this environment is a cycle.
        let mut seen = BTreeSet::from([s.environment.as_str()]);
        let mut chain = vec![s.environment.as_str()];
        let mut cur = up.as_str();
        while let Some(next) = by_env.get(cur) {
            chain.push(cur);
            if !seen.insert(cur) {
                if cur == s.environment {
                    problems.push(Problem {
                        path: path.clone(),
                        at: s.promote_from_at,
                        message: format!(
                            "promotion cycle: {}; one environment in the chain must not have `promote_from`",
                            chain.join(" <- ")
                        ),
                    });
                }
                break;
            }
            match &next.promote_from {
                Some(n) => cur = n,
                None => break,
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::format_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_in_the_documented_forms() {
        for (s, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("1h", 3600),
            ("1h30m", 5400),
            ("0s", 0),
            ("2m5s", 125),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        for s in [
            "",
            "15",
            "m",
            "1m1h",
            "1x",
            "-5m",
            "1.5h",
            "1h1h",
            "99999999s",
        ] {
            assert!(parse_duration(s).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn durations_format_back() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn typos_suggest_the_nearest_key() {
        assert_eq!(nearest("relase", TOP_KEYS), Some("release"));
        assert_eq!(nearest("promote-from", TOP_KEYS), Some("promote_from"));
        assert_eq!(nearest("zzzzzzzz", TOP_KEYS), None);
        assert_eq!(nearest("status", HEALTH_KEYS), Some("expect_status"));
        assert_eq!(nearest("timeout", VERIFY_KEYS), Some("rollout_timeout"));
    }
}
