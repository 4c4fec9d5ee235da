//! The local AWS simulator, exercised with the real AWS SDK for Rust over HTTP: ECS
//! deployments that progress like ECS', CloudWatch over rpc-v2-cbor, and fault injection.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{DeploymentCircuitBreaker, DeploymentConfiguration, Service};
use support::{Sim, wait_for_async};

const REGION: &str = "eu-west-1";

async fn ecs(sim: &Sim) -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::new(&support::sdk_config(&sim.url, REGION).await)
}

async fn register(ecs: &aws_sdk_ecs::Client, family: &str, tag: &str) -> String {
    let image = format!("123456789012.dkr.ecr.{REGION}.amazonaws.com/app:{tag}");
    support::world::register(ecs, family, &image).await
}

async fn describe(ecs: &aws_sdk_ecs::Client, service: &str) -> Service {
    ecs.describe_services()
        .cluster("c")
        .services(service)
        .send()
        .await
        .unwrap()
        .services()[0]
        .clone()
}

async fn service(ecs: &aws_sdk_ecs::Client, name: &str, td: &str, desired: i32, breaker: bool) {
    ecs.create_cluster().cluster_name("c").send().await.unwrap();
    let mut create = ecs
        .create_service()
        .cluster("c")
        .service_name(name)
        .task_definition(td)
        .desired_count(desired);
    if breaker {
        create = create.deployment_configuration(
            DeploymentConfiguration::builder()
                .deployment_circuit_breaker(
                    DeploymentCircuitBreaker::builder()
                        .enable(true)
                        .rollback(true)
                        .build(),
                )
                .maximum_percent(200)
                .minimum_healthy_percent(100)
                .build(),
        );
    }
    create.send().await.unwrap();
}

async fn steady(ecs: &aws_sdk_ecs::Client, name: &str, td: &str) -> Service {
    wait_for_async(Duration::from_secs(20), "steady state", || async {
        let s = describe(ecs, name).await;
        let d = s.deployments();
        (d.len() == 1
            && d[0].task_definition() == Some(td)
            && d[0].rollout_state().map(|r| r.as_str()) == Some("COMPLETED")
            && s.running_count() == s.desired_count())
        .then_some(s)
    })
    .await
}

#[tokio::test]
async fn update_service_starts_a_deployment_that_completes() {
    let sim = Sim::start();
    sim.config(r#"{"rollout_seconds": 0.5}"#);
    let ecs = ecs(&sim).await;
    let td1 = register(&ecs, "web", "one").await;
    service(&ecs, "web", "web:1", 3, false).await;
    steady(&ecs, "web", &td1).await;
    let td2 = register(&ecs, "web", "two").await;
    // By family:revision, as operators often do; ECS reports the full ARN.
    let updated = ecs
        .update_service()
        .cluster("c")
        .service("web")
        .task_definition("web:2")
        .send()
        .await
        .unwrap();
    let s = updated.service().unwrap();
    assert_eq!(s.task_definition(), Some(td2.as_str()));
    assert_eq!(s.deployments()[0].status(), Some("PRIMARY"));
    assert_eq!(
        s.deployments()[0].rollout_state().unwrap().as_str(),
        "IN_PROGRESS"
    );
    let done = steady(&ecs, "web", &td2).await;
    assert_eq!(done.running_count(), 3);
    assert!(
        done.events().iter().any(|e| e
            .message()
            .unwrap_or_default()
            .contains("has reached a steady state")),
        "{:?}",
        done.events()
    );
}

#[tokio::test]
async fn two_quick_updates_leave_one_primary_and_one_active_that_drains() {
    let sim = Sim::start();
    sim.config(r#"{"rollout_seconds": 0.3}"#);
    sim.behaviour("two", "slow", Some(3.0));
    sim.behaviour("three", "slow", Some(3.0));
    let ecs = ecs(&sim).await;
    let td1 = register(&ecs, "web", "one").await;
    service(&ecs, "web", "web:1", 4, false).await;
    steady(&ecs, "web", &td1).await;
    let td2 = register(&ecs, "web", "two").await;
    let td3 = register(&ecs, "web", "three").await;
    for td in [&td2, &td3] {
        ecs.update_service()
            .cluster("c")
            .service("web")
            .task_definition(td)
            .send()
            .await
            .unwrap();
    }
    // The second update replaced the first before any of its tasks ran: one PRIMARY on the
    // newest revision, one ACTIVE (the old one) draining as the new tasks come up.
    let mid = wait_for_async(
        Duration::from_secs(10),
        "half-way through the rollout",
        || async {
            let s = describe(&ecs, "web").await;
            let d = s.deployments();
            (d.len() == 2 && d[0].running_count() >= 1 && d[0].running_count() < 4).then_some(s)
        },
    )
    .await;
    let d = mid.deployments();
    assert_eq!(d[0].status(), Some("PRIMARY"));
    assert_eq!(d[0].task_definition(), Some(td3.as_str()));
    assert_eq!(d[1].status(), Some("ACTIVE"));
    assert_eq!(d[1].task_definition(), Some(td1.as_str()));
    assert_eq!(d[0].running_count() + d[1].running_count(), 4);
    assert_eq!(mid.running_count(), 4);
    assert!(d[1].running_count() < 4, "the old deployment drains");
    steady(&ecs, "web", &td3).await;
}

#[tokio::test]
async fn a_crash_loop_never_completes_and_failed_tasks_grow() {
    let sim = Sim::start();
    sim.config(r#"{"rollout_seconds": 0.2, "task_fail_seconds": 0.2}"#);
    sim.behaviour("bad", "crash", None);
    let ecs = ecs(&sim).await;
    let td1 = register(&ecs, "web", "good").await;
    service(&ecs, "web", "web:1", 2, false).await;
    steady(&ecs, "web", &td1).await;
    let td2 = register(&ecs, "web", "bad").await;
    ecs.update_service()
        .cluster("c")
        .service("web")
        .task_definition(&td2)
        .send()
        .await
        .unwrap();
    let first = wait_for_async(Duration::from_secs(10), "a failed task", || async {
        let s = describe(&ecs, "web").await;
        let f = s.deployments()[0].failed_tasks();
        (f >= 1).then_some(f)
    })
    .await;
    let later = wait_for_async(Duration::from_secs(10), "more failed tasks", || async {
        let s = describe(&ecs, "web").await;
        let f = s.deployments()[0].failed_tasks();
        (f > first + 2).then_some(s)
    })
    .await;
    let p = &later.deployments()[0];
    assert_eq!(p.task_definition(), Some(td2.as_str()));
    assert_eq!(p.rollout_state().unwrap().as_str(), "IN_PROGRESS");
    assert_eq!(p.running_count(), 0);
    // Without a circuit breaker nothing rolls back: the old tasks keep serving.
    assert_eq!(later.deployments()[1].running_count(), 2);
}

#[tokio::test]
async fn the_circuit_breaker_fails_a_crash_loop_and_rolls_back_like_ecs() {
    let sim = Sim::start();
    sim.config(r#"{"rollout_seconds": 0.2, "task_fail_seconds": 0.1}"#);
    sim.behaviour("bad", "crash", None);
    let ecs = ecs(&sim).await;
    let td1 = register(&ecs, "web", "good").await;
    service(&ecs, "web", "web:1", 2, true).await;
    let s = steady(&ecs, "web", &td1).await;
    let cfg = s
        .deployment_configuration()
        .expect("deploymentConfiguration kept on create");
    assert_eq!(
        cfg.deployment_circuit_breaker().map(|c| c.rollback()),
        Some(true)
    );
    let td2 = register(&ecs, "web", "bad").await;
    ecs.update_service()
        .cluster("c")
        .service("web")
        .task_definition(&td2)
        .send()
        .await
        .unwrap();
    let rolled = wait_for_async(
        Duration::from_secs(10),
        "the circuit breaker rollback",
        || async {
            let s = describe(&ecs, "web").await;
            (s.task_definition() == Some(td1.as_str())).then_some(s)
        },
    )
    .await;
    let failed = rolled
        .deployments()
        .iter()
        .find(|d| d.task_definition() == Some(td2.as_str()))
        .expect("the failed deployment is still listed while it drains");
    assert_eq!(failed.rollout_state().unwrap().as_str(), "FAILED");
    assert!(failed.failed_tasks() >= 3);
    assert!(
        rolled
            .events()
            .iter()
            .any(|e| e.message().unwrap_or_default().contains("rolling back"))
    );
    steady(&ecs, "web", &td1).await;
}

#[tokio::test]
async fn cloudwatch_alarms_work_over_rpc_v2_cbor() {
    let sim = Sim::start();
    let cw = aws_sdk_cloudwatch::Client::new(&support::sdk_config(&sim.url, REGION).await);
    cw.put_metric_alarm()
        .alarm_name("web-5xx")
        .metric_name("HTTPCode_Target_5XX_Count")
        .namespace("AWS/ApplicationELB")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(5.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    cw.put_metric_data()
        .namespace("AWS/ApplicationELB")
        .metric_data(
            aws_sdk_cloudwatch::types::MetricDatum::builder()
                .metric_name("HTTPCode_Target_5XX_Count")
                .value(1.0)
                .timestamp(aws_smithy_types::DateTime::from_secs(1_795_000_000))
                .build(),
        )
        .send()
        .await
        .unwrap();
    cw.set_alarm_state()
        .alarm_name("web-5xx")
        .state_value(StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .unwrap();
    let out = cw
        .describe_alarms()
        .alarm_names("web-5xx")
        .send()
        .await
        .unwrap();
    let alarm = &out.metric_alarms()[0];
    assert_eq!(alarm.alarm_name(), Some("web-5xx"));
    assert_eq!(alarm.state_value(), Some(&StateValue::Alarm));
    assert_eq!(alarm.threshold(), Some(5.0));
    assert!(
        alarm.state_updated_timestamp().is_some(),
        "timestamps arrive as CBOR tag 1"
    );
    // Errors cross the translation too, as the SDK's modeled error.
    let err = cw
        .set_alarm_state()
        .alarm_name("no-such-alarm")
        .state_value(StateValue::Ok)
        .state_reason("test")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.code().unwrap_or_default().contains("ResourceNotFound"),
        "{err:?}"
    );
    assert!(sim.call_count("cloudwatch:DescribeAlarms") >= 1);
}

#[tokio::test]
async fn each_fault_kind_reaches_the_sdk_as_aws_would_send_it() {
    let sim = Sim::start();
    let ecs = ecs(&sim).await;
    ecs.create_cluster().cluster_name("c").send().await.unwrap();
    let list = || async { ecs.list_services().cluster("c").send().await };

    sim.fault(r#"{"operation":"ecs:ListServices","fault":"throttle","nth":1}"#);
    let e = list().await.unwrap_err();
    assert_eq!(e.code(), Some("ThrottlingException"));
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 400);
    assert!(list().await.is_ok(), "only the first call was faulted");
    sim.clear_faults();

    sim.fault(r#"{"operation":"ecs:*","fault":"http500","times":1}"#);
    let e = list().await.unwrap_err();
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 500);
    sim.clear_faults();

    sim.fault(r#"{"operation":"*","fault":"http503","times":1}"#);
    let e = list().await.unwrap_err();
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 503);
    sim.clear_faults();

    sim.fault(r#"{"operation":"ecs:ListServices","fault":"drop","times":1}"#);
    let e = list().await.unwrap_err();
    assert!(
        matches!(
            e,
            aws_sdk_ecs::error::SdkError::DispatchFailure(_)
                | aws_sdk_ecs::error::SdkError::ResponseError(_)
        ),
        "a dropped connection is a transport error, got {e:?}"
    );
    sim.clear_faults();

    sim.fault(r#"{"operation":"ecs:ListServices","fault":"latency","latency_ms":400,"times":1}"#);
    let start = Instant::now();
    list().await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    sim.clear_faults();

    // CloudWatch's CBOR protocol gets its own error shape.
    let cw = aws_sdk_cloudwatch::Client::new(&support::sdk_config(&sim.url, REGION).await);
    sim.fault(r#"{"operation":"cloudwatch:DescribeAlarms","fault":"throttle","times":1}"#);
    let e = cw.describe_alarms().send().await.unwrap_err();
    assert_eq!(e.code(), Some("Throttling"));
}

#[tokio::test]
async fn a_fault_rate_with_a_seed_repeats_exactly() {
    let sim = Sim::start();
    let ecs = ecs(&sim).await;
    ecs.create_cluster().cluster_name("c").send().await.unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        sim.clear_faults();
        sim.fault(r#"{"operation":"ecs:ListServices","fault":"http500","rate":0.5,"seed":7}"#);
        let mut pattern = Vec::new();
        for _ in 0..20 {
            pattern.push(ecs.list_services().cluster("c").send().await.is_ok());
        }
        runs.push(pattern);
    }
    assert_eq!(runs[0], runs[1]);
    let failures = runs[0].iter().filter(|ok| !**ok).count();
    assert!(
        (3..=17).contains(&failures),
        "rate 0.5 over 20 calls gave {failures} failures"
    );
}

#[tokio::test]
async fn calls_are_counted_per_operation_and_reset_clears_everything() {
    let sim = Sim::start();
    let ecs = ecs(&sim).await;
    ecs.create_cluster().cluster_name("c").send().await.unwrap();
    sim.reset_calls();
    for _ in 0..3 {
        ecs.list_services().cluster("c").send().await.unwrap();
    }
    assert_eq!(sim.call_count("ecs:ListServices"), 3);
    assert_eq!(sim.call_count("ecs:CreateCluster"), 0);
    sim.reset();
    let e = ecs.list_services().cluster("c").send().await.unwrap_err();
    assert_eq!(e.code(), Some("ClusterNotFoundException"));
    assert_eq!(sim.call_count("ecs:ListServices"), 1);
}

async fn tasks_of(
    ecs: &aws_sdk_ecs::Client,
    list: aws_sdk_ecs::operation::list_tasks::builders::ListTasksFluentBuilder,
) -> Vec<aws_sdk_ecs::types::Task> {
    let arns = list.send().await.unwrap().task_arns().to_vec();
    if arns.is_empty() {
        return Vec::new();
    }
    ecs.describe_tasks()
        .cluster("c")
        .set_tasks(Some(arns))
        .send()
        .await
        .unwrap()
        .tasks()
        .to_vec()
}

#[tokio::test]
async fn run_task_tasks_start_run_and_exit_as_the_rule_says_and_stop_task_stops_them() {
    use aws_sdk_ecs::types::{
        AwsVpcConfiguration, Compatibility, ContainerDefinition, ContainerOverride, DesiredStatus,
        LaunchType, NetworkConfiguration, NetworkMode, TaskOverride,
    };
    let sim = Sim::start();
    let ecs = ecs(&sim).await;
    ecs.create_cluster().cluster_name("c").send().await.unwrap();
    let td = ecs
        .register_task_definition()
        .family("job")
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image(format!(
                    "123456789012.dkr.ecr.{REGION}.amazonaws.com/app:v1"
                ))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_string();
    let cmd = |words: &[&str]| {
        TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name("app")
                    .set_command(Some(words.iter().map(|w| w.to_string()).collect()))
                    .build(),
            )
            .build()
    };
    // Fargate's rule: awsvpc needs a network configuration.
    let err = ecs
        .run_task()
        .cluster("c")
        .task_definition(&td)
        .launch_type(LaunchType::Fargate)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterException"));
    assert!(
        err.message()
            .unwrap()
            .contains("Network Configuration must be provided")
    );
    let (subnets, _) = sim.network(REGION);
    let net = NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .set_subnets(Some(subnets))
                .build()
                .unwrap(),
        )
        .build();
    sim.task_rule(r#"{"command": "migrate", "exit": 3, "seconds": 0.3}"#);
    sim.task_rule(r#"{"command": "serve", "hang": true}"#);
    let run = |words: &'static [&'static str], by: &'static str| {
        ecs.run_task()
            .cluster("c")
            .task_definition(&td)
            .launch_type(LaunchType::Fargate)
            .network_configuration(net.clone())
            .overrides(cmd(words))
            .started_by(by)
            .send()
    };
    let first = run(&["migrate"], "hook/migrate").await.unwrap();
    assert_eq!(first.tasks()[0].last_status(), Some("PROVISIONING"));
    run(&["serve"], "hook/serve").await.unwrap();
    let stopped = wait_for_async(Duration::from_secs(10), "the migration to exit", || async {
        let t = tasks_of(
            &ecs,
            ecs.list_tasks()
                .cluster("c")
                .started_by("hook/migrate")
                .desired_status(DesiredStatus::Stopped),
        )
        .await;
        (t.len() == 1).then(|| t[0].clone())
    })
    .await;
    assert_eq!(stopped.last_status(), Some("STOPPED"));
    assert_eq!(stopped.containers()[0].exit_code(), Some(3));
    assert_eq!(
        stopped.stop_code().map(|c| c.as_str()),
        Some("EssentialContainerExited")
    );
    assert!(stopped.started_at().is_some() && stopped.stopped_at().is_some());
    let hanging = tasks_of(&ecs, ecs.list_tasks().cluster("c").started_by("hook/serve")).await;
    assert_eq!(hanging.len(), 1);
    assert_eq!(hanging[0].last_status(), Some("RUNNING"));
    let arn = hanging[0].task_arn().unwrap().to_string();
    let out = ecs
        .stop_task()
        .cluster("c")
        .task(&arn)
        .reason("timeout")
        .send()
        .await
        .unwrap();
    let t = out.task().unwrap();
    assert_eq!(t.last_status(), Some("STOPPED"));
    assert_eq!(t.stop_code().map(|c| c.as_str()), Some("UserInitiated"));
    assert_eq!(t.stopped_reason(), Some("timeout"));
    let missing = ecs
        .describe_tasks()
        .cluster("c")
        .tasks("arn:aws:ecs:eu-west-1:123456789012:task/c/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.failures()[0].reason(), Some("MISSING"));
}

#[tokio::test]
async fn service_tasks_follow_the_deployment_counts_and_a_crash_loop_leaves_stopped_tasks() {
    use aws_sdk_ecs::types::DesiredStatus;
    let sim = Sim::start();
    sim.config(r#"{"rollout_seconds": 0.5, "task_fail_seconds": 0.2}"#);
    sim.behaviour("bad", "crash", None);
    let ecs = ecs(&sim).await;
    let good = register(&ecs, "web", "good").await;
    service(&ecs, "web", &good, 3, false).await;
    let s = steady(&ecs, "web", &good).await;
    let running = tasks_of(&ecs, ecs.list_tasks().cluster("c").service_name("web")).await;
    assert_eq!(running.len(), 3);
    let dep = s.deployments()[0].id().unwrap();
    assert!(running.iter().all(|t| t.started_by() == Some(dep)
        && t.task_definition_arn() == Some(good.as_str())
        && t.last_status() == Some("RUNNING")));
    let bad = register(&ecs, "web", "bad").await;
    ecs.update_service()
        .cluster("c")
        .service("web")
        .task_definition(&bad)
        .send()
        .await
        .unwrap();
    let crashed = wait_for_async(Duration::from_secs(10), "failed tasks", || async {
        let t = tasks_of(
            &ecs,
            ecs.list_tasks()
                .cluster("c")
                .service_name("web")
                .desired_status(DesiredStatus::Stopped),
        )
        .await;
        (t.len() >= 3).then_some(t)
    })
    .await;
    for t in &crashed {
        assert_eq!(t.task_definition_arn(), Some(bad.as_str()));
        assert_eq!(
            t.stop_code().map(|c| c.as_str()),
            Some("EssentialContainerExited")
        );
        assert_eq!(t.containers()[0].exit_code(), Some(1));
    }
    // The old deployment's tasks keep running while the new one cannot start.
    let running = tasks_of(&ecs, ecs.list_tasks().cluster("c").service_name("web")).await;
    assert!(
        running
            .iter()
            .all(|t| t.task_definition_arn() == Some(good.as_str()))
    );
}

#[tokio::test]
async fn log_events_put_through_the_control_api_are_found_by_filter_log_events() {
    let sim = Sim::start();
    let logs = aws_sdk_cloudwatchlogs::Client::new(&support::sdk_config(&sim.url, REGION).await);
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    sim.put_logs(
        REGION,
        "/prod/backend",
        &[
            (t0, "ERROR early"),
            (t0 + 10, "INFO fine"),
            (t0 + 20, "ERROR late"),
        ],
    );
    let out = logs
        .filter_log_events()
        .log_group_name("/prod/backend")
        .filter_pattern("\"ERROR\"")
        .start_time(t0 + 5)
        .end_time(t0 + 100)
        .send()
        .await
        .unwrap();
    let found: Vec<&str> = out.events().iter().filter_map(|e| e.message()).collect();
    assert_eq!(found, ["ERROR late"]);
    let err = logs
        .filter_log_events()
        .log_group_name("/prod/none")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFoundException"));
}

/// The current service deployment of `name`, through DescribeServices' `currentServiceDeployment`.
async fn current_sd(
    ecs: &aws_sdk_ecs::Client,
    name: &str,
) -> aws_sdk_ecs::types::ServiceDeployment {
    let arn = describe(ecs, name)
        .await
        .current_service_deployment()
        .expect("DescribeServices names the current service deployment")
        .to_string();
    ecs.describe_service_deployments()
        .service_deployment_arns(arn)
        .send()
        .await
        .unwrap()
        .service_deployments()[0]
        .clone()
}

#[tokio::test]
async fn a_blue_green_service_deployment_is_followed_and_stopped_with_rollback_through_the_rust_sdk()
 {
    use aws_sdk_ecs::types::{
        DeploymentStrategy, ServiceDeploymentLifecycleStage as Stage, ServiceDeploymentStatus,
        StopServiceDeploymentStopType,
    };
    let sim = Sim::start();
    sim.config(
        r#"{"rollout_seconds": 0.2, "stage_seconds": 0.1, "minute_seconds": 60, "cleanup_seconds": 0.2}"#,
    );
    let ecs = ecs(&sim).await;
    let old = register(&ecs, "bg", "a").await;
    let new = register(&ecs, "bg", "b").await;
    service(&ecs, "bg", &old, 2, false).await;
    steady(&ecs, "bg", &old).await;
    ecs.update_service()
        .cluster("c")
        .service("bg")
        .deployment_configuration(
            DeploymentConfiguration::builder()
                .strategy(DeploymentStrategy::BlueGreen)
                .bake_time_in_minutes(30)
                .build(),
        )
        .send()
        .await
        .unwrap();
    ecs.update_service()
        .cluster("c")
        .service("bg")
        .task_definition(&new)
        .send()
        .await
        .unwrap();
    // ECS' own bake (30 minutes here) keeps it IN_PROGRESS with both revisions running.
    let sd = wait_for_async(Duration::from_secs(20), "BAKE_TIME", || async {
        let d = current_sd(&ecs, "bg").await;
        (d.lifecycle_stage() == Some(&Stage::BakeTime)).then_some(d)
    })
    .await;
    assert_eq!(sd.status(), Some(&ServiceDeploymentStatus::InProgress));
    let target = sd.target_service_revision().unwrap();
    assert_eq!(target.requested_production_traffic_weight(), Some(100.0));
    let revs = ecs
        .describe_service_revisions()
        .service_revision_arns(target.arn().unwrap())
        .service_revision_arns(sd.source_service_revisions()[0].arn().unwrap())
        .send()
        .await
        .unwrap();
    let tds: Vec<&str> = revs
        .service_revisions()
        .iter()
        .map(|r| r.task_definition().unwrap())
        .collect();
    assert_eq!(tds, [new.as_str(), old.as_str()]);
    let listed = ecs
        .list_service_deployments()
        .cluster("c")
        .service("bg")
        .status(ServiceDeploymentStatus::InProgress)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.service_deployments()[0].service_deployment_arn(),
        sd.service_deployment_arn()
    );
    ecs.stop_service_deployment()
        .service_deployment_arn(sd.service_deployment_arn().unwrap())
        .stop_type(StopServiceDeploymentStopType::Rollback)
        .send()
        .await
        .unwrap();
    // Traffic goes back to blue at once; the deployment ends ROLLBACK_SUCCESSFUL.
    assert_eq!(
        describe(&ecs, "bg").await.task_definition(),
        Some(old.as_str())
    );
    let done = wait_for_async(Duration::from_secs(20), "ROLLBACK_SUCCESSFUL", || async {
        let d = current_sd(&ecs, "bg").await;
        (d.status() == Some(&ServiceDeploymentStatus::RollbackSuccessful)).then_some(d)
    })
    .await;
    assert_eq!(
        done.rollback().and_then(|r| r.service_revision_arn()),
        sd.source_service_revisions()[0].arn()
    );
    steady(&ecs, "bg", &old).await;
    let err = ecs
        .stop_service_deployment()
        .service_deployment_arn(sd.service_deployment_arn().unwrap())
        .stop_type(StopServiceDeploymentStopType::Rollback)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ClientException"));
}

#[test]
fn the_simulators_service_deployments_hold_up_through_boto3() {
    // scripts/aws_sim/test_service_deployments.py: stages, traffic steps, stops, ECS' own
    // rollbacks, rolling records and PAUSE hooks; test_events.py: EventBridge events to SQS;
    // through the AWS SDK for Python.
    let _ = Sim::start(); // installs the simulator's virtualenv (boto3 comes with moto)
    let root = support::root();
    let out = std::process::Command::new(root.join(".aws-sim/venv/bin/python"))
        .args([
            "-m",
            "unittest",
            "-v",
            "test_service_deployments",
            "test_events",
        ])
        .current_dir(root.join("scripts/aws_sim"))
        .output()
        .expect("run the boto3 tests");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Ran 8 tests"), "{log}");
}
