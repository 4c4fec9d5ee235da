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

fn cli(w: &World, args: &[&str]) -> std::process::Output {
    support::world::binary(&w.sim.url)
        .args(args)
        .arg("--repo")
        .arg(w.repo.path())
        .envs(support::world::GIT_IDENTITY)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_commits_a_verified_release_refuses_an_unverified_one_and_history_shows_both() {
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    for n in 1..=4 {
        w.image("web", &sha(n)).await;
    }
    let prod = |r: &str| {
        World::yaml(
            "prod",
            "c",
            r,
            &[("web", "web")],
            "# the bake a release must pass\nverify:\n  bake: 1s\n",
        )
    };
    w.commit("prod", &prod(&sha(1)));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", std::time::Duration::from_secs(30));
    for n in [2u8, 3] {
        w.commit("prod", &prod(&sha(n)));
        support::wait_for(std::time::Duration::from_secs(30), "verified", || {
            (d.env("prod")?["last_good_release"] == sha(n).as_str()).then_some(())
        });
    }
    // A release the record never verified: refused, nothing committed.
    let head = git_out(w.repo.path(), &["rev-parse", "HEAD"]);
    let out = cli(&w, &["rollback", "--env", "prod", "--to", &sha(4)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} was never verified in prod", &sha(4)[..7]))
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(git_out(w.repo.path(), &["rev-parse", "HEAD"]), head);
    // Back to a release prod verified before: one commit naming both, the comment kept.
    let out = cli(&w, &["rollback", "--env", "prod", "--to", &sha(2)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::read_to_string(w.repo.path().join("desired-state/prod.yaml")).unwrap();
    assert!(file.contains(&format!("release: {}", sha(2))), "{file}");
    assert!(file.contains("# the bake a release must pass"));
    let message = git_out(w.repo.path(), &["log", "-1", "--format=%B"]);
    assert!(
        message.contains(&format!(
            "roll back to {} (was {})",
            &sha(2)[..7],
            &sha(3)[..7]
        )),
        "{message}"
    );
    // The controller deploys it like any commit.
    support::wait_for(
        std::time::Duration::from_secs(30),
        "sha(2) running again",
        || {
            let e = d.env("prod")?;
            (e["phase"] == "InSync" && e["last_good_release"] == sha(2).as_str()).then_some(())
        },
    );
    // Without --to: the last good release, already named, so nothing to commit.
    let out = cli(&w, &["rollback", "--env", "prod"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to commit"));
    // --force commits an unverified release.
    let out = cli(
        &w,
        &["rollback", "--env", "prod", "--to", &sha(4), "--force"],
    );
    assert!(out.status.success());
    assert!(git_out(w.repo.path(), &["log", "-1", "--format=%B"]).contains("--force"));
    let out = cli(&w, &["history", "--env", "prod"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = String::from_utf8_lossy(&out.stdout).to_string();
    let row = |r: u8| {
        h.lines()
            .find(|l| l.starts_with(&sha(r)[..7]))
            .unwrap_or_else(|| panic!("no row for {}: {h}", &sha(r)[..7]))
            .to_string()
    };
    assert!(row(4).contains(" no "), "{h}");
    assert!(row(3).contains(" yes "), "{h}");
    assert!(
        h.lines().next().unwrap().contains("last good 0202020"),
        "{h}"
    );
}
