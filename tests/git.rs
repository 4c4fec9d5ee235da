//! Git misbehaving: history rewritten, the branch deleted, an environment's file deleted, a
//! symbolic link or a file that is not UTF-8 in `desired-state/`. Each gives a clear status,
//! deploys nothing from it, and undoes nothing.

mod support;

use std::time::Duration;

use support::wait_for;
use support::world::{Daemon, World, git, git_out, sha};

const T: Duration = Duration::from_secs(30);

fn prod(release: &str) -> String {
    World::yaml(
        "prod",
        "c",
        release,
        &[("web", "web")],
        "verify:\n  bake: 1s\n  rollout_timeout: 20s\n",
    )
}

/// prod verified on sha(2) after adopting sha(1); returns the running revision.
async fn verified_twice() -> (World, Daemon, String) {
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    for n in 1..=3 {
        w.image("web", &sha(n)).await;
    }
    w.commit("prod", &prod(&sha(1)));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod(&sha(2)));
    wait_for(T, "sha(2) verified", || {
        let e = d.env("prod")?;
        (e["phase"] == "InSync" && e["last_good_release"] == sha(2).as_str()).then_some(())
    });
    let td = w.current_td("c", "web").await;
    (w, d, td)
}

fn source_error(d: &Daemon) -> Option<String> {
    d.status()["source_error"].as_str().map(str::to_string)
}

fn writes(w: &World) -> u64 {
    [
        "ecs:RegisterTaskDefinition",
        "ecs:UpdateService",
        "ecs:TagResource",
    ]
    .iter()
    .map(|op| w.sim.call_count(op))
    .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_branch_rewound_to_an_older_commit_is_refused_and_nothing_is_undone() {
    let (w, d, td2) = verified_twice().await;
    w.sim.reset_calls();
    // Someone force-resets main to the commit that named sha(1).
    git(w.repo.path(), &["reset", "--quiet", "--hard", "HEAD~1"]);
    let e = wait_for(T, "the rewrite reported", || {
        source_error(&d).filter(|e| e.contains("was rewritten"))
    });
    assert!(
        e.contains("branch `main`") && e.contains("restart ecs-gitops"),
        "{e}"
    );
    let env = d.env("prod").unwrap();
    assert_eq!(
        env["desired_release"],
        sha(2).as_str(),
        "the last accepted state stays"
    );
    let passes = env["passes"].as_u64().unwrap();
    wait_for(T, "two more passes", || {
        (d.env("prod")?["passes"].as_u64()? >= passes + 2).then_some(())
    });
    assert_eq!(writes(&w), 0, "nothing deployed from the rewritten branch");
    assert_eq!(w.current_td("c", "web").await, td2);
    // A commit on top of the accepted history is taken again.
    git(w.repo.path(), &["reset", "--quiet", "--hard", "HEAD@{1}"]);
    w.commit("prod", &prod(&sha(3)));
    wait_for(T, "sha(3) verified", || {
        let e = d.env("prod")?;
        (e["last_good_release"] == sha(3).as_str()).then_some(())
    });
    assert!(source_error(&d).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_branch_is_reported_and_the_last_state_kept() {
    let (w, d, td2) = verified_twice().await;
    w.sim.reset_calls();
    git(w.repo.path(), &["checkout", "--quiet", "-b", "other"]);
    git(w.repo.path(), &["branch", "--quiet", "-D", "main"]);
    let e = wait_for(T, "the missing branch reported", || {
        source_error(&d).filter(|e| e.contains("branch `main` not found"))
    });
    assert!(e.contains("--branch"), "{e}");
    assert_eq!(writes(&w), 0);
    assert_eq!(w.current_td("c", "web").await, td2);
    assert_eq!(d.env("prod").unwrap()["phase"], "InSync");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_environment_file_stops_its_management_and_touches_nothing() {
    let (w, d, td2) = verified_twice().await;
    // Another file keeps the folder in git once prod.yaml is gone (other environments would).
    std::fs::write(
        w.repo.path().join("desired-state/README.md"),
        "environments\n",
    )
    .unwrap();
    git(w.repo.path(), &["add", "-A"]);
    git(w.repo.path(), &["commit", "--quiet", "-m", "readme"]);
    git(w.repo.path(), &["rm", "--quiet", "desired-state/prod.yaml"]);
    git(
        w.repo.path(),
        &["commit", "--quiet", "-m", "prod: stop managing"],
    );
    let deleted = git_out(w.repo.path(), &["rev-parse", "HEAD"]);
    let e = wait_for(T, "the deletion in the status", || {
        let e = d.env("prod")?;
        e["message"].as_str()?.contains("was deleted").then_some(e)
    });
    assert!(e["message"].as_str().unwrap().contains(&deleted), "{e}");
    w.sim.reset_calls();
    // Another commit wakes every loop: still no pass for prod.
    std::fs::write(w.repo.path().join("README"), "unrelated\n").unwrap();
    git(w.repo.path(), &["add", "README"]);
    git(w.repo.path(), &["commit", "--quiet", "-m", "docs"]);
    let head = git_out(w.repo.path(), &["rev-parse", "HEAD"]);
    wait_for(T, "the new head read", || {
        (d.status()["source_revision"] == head.as_str()).then_some(())
    });
    let calls = w.sim.calls();
    assert!(
        calls.keys().all(|op| !op.starts_with("ecs:")),
        "an unmanaged environment is not looked at or changed: {calls:?}"
    );
    assert_eq!(w.current_td("c", "web").await, td2);
    assert_eq!(
        w.tags("c", "web").await["ecs-gitops:last-good-release"],
        sha(2),
        "its record stays for when the file comes back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symbolic_link_or_a_file_that_is_not_utf8_is_refused_by_name() {
    let (w, d, td2) = verified_twice().await;
    w.sim.reset_calls();
    let dir = w.repo.path().join("desired-state");
    std::fs::remove_file(dir.join("prod.yaml")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("prod.yaml")).unwrap();
    git(w.repo.path(), &["add", "-A"]);
    git(w.repo.path(), &["commit", "--quiet", "-m", "prod: a link"]);
    let e = wait_for(T, "the link refused", || {
        let e = d.env("prod")?;
        e["file_problems"]
            .to_string()
            .contains("is a symbolic link")
            .then_some(e)
    });
    let problems = e["file_problems"].to_string();
    assert!(
        problems.contains("desired-state/prod.yaml") && problems.contains("/etc/hostname"),
        "{problems}"
    );
    std::fs::remove_file(dir.join("prod.yaml")).unwrap();
    std::fs::write(
        dir.join("prod.yaml"),
        b"environment: prod\nrelease: \xff\xfe\n",
    )
    .unwrap();
    git(w.repo.path(), &["add", "-A"]);
    git(w.repo.path(), &["commit", "--quiet", "-m", "prod: latin-1"]);
    wait_for(T, "the encoding refused", || {
        let e = d.env("prod")?;
        e["file_problems"]
            .to_string()
            .contains("not UTF-8")
            .then_some(())
    });
    assert_eq!(writes(&w), 0, "nothing deployed from a refused file");
    assert_eq!(w.current_td("c", "web").await, td2);
    assert_eq!(d.env("prod").unwrap()["phase"], "InSync", "nothing undone");
}
