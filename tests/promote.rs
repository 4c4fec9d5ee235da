//! `ecs-gitops promote`: the verified release of one environment, read from AWS, committed
//! into another's file with its comments and layout kept.

mod support;

use support::world::{World, git_out, sha};

fn promote(w: &World) -> std::process::Output {
    support::world::binary(&w.sim.url)
        .args(["promote", "--from", "staging", "--to", "prod", "--repo"])
        .arg(w.repo.path())
        .envs(support::world::GIT_IDENTITY)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_commits_the_release_staging_verified_and_keeps_comments() {
    let w = World::new().await;
    w.cluster("staging").await;
    w.service("staging", "web", "web", &sha(1), false).await;
    w.commit(
        "staging",
        &World::yaml("staging", "staging", &sha(2), &[("web", "web")], ""),
    );
    let prod = format!(
        "# Production: only what staging verified.\nenvironment: prod\nregion: me-south-1\ncluster: prod\nrelease: {}   # bumped by promote\npromote_from: staging\n\nservices:\n  web:\n    repository: web   # same image as staging\n    container: app\n",
        sha(1)
    );
    w.commit("prod", &prod);

    // Staging has verified nothing yet: refused, nothing committed.
    let head = git_out(w.repo.path(), &["rev-parse", "HEAD"]);
    let out = promote(&w);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("staging has no verified release yet"), "{err}");
    assert_eq!(git_out(w.repo.path(), &["rev-parse", "HEAD"]), head);

    // Staging's record (as the controller writes it) names sha(2) as verified.
    let arn = w
        .describe("staging", "web")
        .await
        .service_arn()
        .unwrap()
        .to_string();
    let tag = |k: &str, v: &str| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build();
    w.ecs
        .tag_resource()
        .resource_arn(arn)
        .tags(tag("ecs-gitops:phase", "InSync"))
        .tags(tag("ecs-gitops:since", "1800000000"))
        .tags(tag("ecs-gitops:last-good-release", &sha(2)))
        .send()
        .await
        .unwrap();
    let out = promote(&w);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(w.repo.path().join("desired-state/prod.yaml")).unwrap();
    assert_eq!(
        text,
        prod.replace(&sha(1), &sha(2)),
        "only the release value changed"
    );
    let message = git_out(w.repo.path(), &["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with(&format!("prod: promote {} from staging", &sha(2)[..7])),
        "{message}"
    );
    assert!(
        message.contains(&sha(2)) && message.contains(&sha(1)),
        "{message}"
    );
    assert_eq!(
        git_out(w.repo.path(), &["status", "--porcelain"]),
        "",
        "the change is committed"
    );

    // Promoting again is a no-op.
    let head = git_out(w.repo.path(), &["rev-parse", "HEAD"]);
    let out = promote(&w);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to commit"));
    assert_eq!(git_out(w.repo.path(), &["rev-parse", "HEAD"]), head);
}
