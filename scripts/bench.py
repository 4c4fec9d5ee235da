"""Benchmarks of ecs-gitops' reaction times and steady-state cost, against the simulator.

Started by scripts/bench. Latencies are measured from the AWS side: the simulator logs the
wall-clock time of every call, so "commit to first AWS call" is the time from `git commit`
returning to the first DescribeServices the daemon sends. Prints medians and p90s, and ratios
measured in the same run; the machine is shared and noisy, so read the ratios.
"""

import argparse
import hashlib
import hmac
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import urllib.request

import simkit

REGION = "me-south-1"


def sha(n):
    return f"{n:02x}" * 20


def yaml(env, cluster, release, services, bake="1s", extra="", alarm="app-5xx", rollout_timeout="30s"):
    s = f"environment: {env}\nregion: {REGION}\ncluster: {cluster}\nrelease: {release}\nservices:\n"
    for name in services:
        s += f"  {name}:\n    repository: app\n    container: app\n"
    s += f"verify:\n  alarms: [{alarm}]\n  bake: {bake}\n  rollout_timeout: {rollout_timeout}\n{extra}"
    return s


def first_call_after(sim, t0, operation, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for c in sim.control("calls/log"):
            if c["operation"] == operation and c["at"] >= t0:
                return c["at"] - t0
        time.sleep(0.01)
    raise simkit.Failed(f"no {operation} within {timeout}s")


def wait(pred, what, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise simkit.Failed(f"timed out waiting for {what}")


def summary(name, samples, unit="ms", scale=1000.0):
    xs = sorted(x * scale for x in samples)
    p90 = xs[min(len(xs) - 1, int(len(xs) * 0.9))]
    print(f"  {name:<58} median {statistics.median(xs):8.1f} {unit}   p90 {p90:8.1f} {unit}   n={len(xs)}", flush=True)
    return statistics.median(xs)


class World:
    def __init__(self, tmp, services=("web",)):
        self.tmp = tmp
        os.makedirs(tmp, exist_ok=True)
        self.sim = simkit.Sim(os.path.join(tmp, "sim.log"))
        self.sim.control("config", {"rollout_seconds": 0.3, "task_fail_seconds": 0.1})
        self.ecs, self.ecr, self.cw = (self.sim.client(n, REGION) for n in ("ecs", "ecr", "cloudwatch"))
        self.ecs.create_cluster(clusterName="c")
        simkit.put_images(self.ecr, "app", [sha(n) for n in range(1, 40)])
        for name in services:
            simkit.create_service(self.ecs, "c", name, name, simkit.image_uri(REGION, "app", sha(1)))
        simkit.put_alarm(self.cw, "app-5xx")
        self.repo = simkit.Repo(os.path.join(tmp, "repo"))
        self.services = services
        self.daemons = []

    def daemon(self, repo=None, **kw):
        d = simkit.Daemon(repo or self.repo.path, self.sim.env(REGION), os.path.join(self.tmp, f"daemon{len(self.daemons)}.log"), **kw)
        self.daemons.append(d)
        return d

    def stop(self):
        for d in self.daemons:
            d.stop()
        self.sim.stop()


def passes(d):
    e = d.env("prod")
    return e["passes"] if e else 0


def bench_commit_latency(tmp, n):
    """Local repository, watched: commit -> first AWS call, against polling a remote."""
    w = World(tmp)
    try:
        w.repo.write("prod", yaml("prod", "c", sha(1), w.services))
        w.repo.commit("start")
        d = w.daemon(interval="60s")
        wait(lambda: (d.env("prod") or {}).get("phase") == "InSync", "InSync")
        local = []
        for i in range(n):
            p = passes(d)
            w.repo.write("prod", yaml("prod", "c", sha(1), w.services) + f"# change {i}\n")
            w.repo.commit(f"change {i}")
            t0 = time.time()
            local.append(first_call_after(w.sim, t0, "ecs:DescribeServices"))
            wait(lambda: passes(d) > p, "the pass to finish")
        d.stop()

        secret = "bench-webhook-secret"
        secret_file = os.path.join(tmp, "secret")
        with open(secret_file, "w") as f:
            f.write(secret)
        d = w.daemon(repo=f"file://{w.repo.path}", interval="60s", extra=("--github-webhook-secret-file", secret_file))
        wait(lambda: (d.env("prod") or {}).get("phase") == "InSync", "InSync (webhook daemon)")
        hook = []
        for i in range(n):
            p = passes(d)
            w.repo.write("prod", yaml("prod", "c", sha(1), w.services) + f"# hook {i}\n")
            rev = w.repo.commit(f"hook {i}")
            body = json.dumps({"ref": "refs/heads/main", "after": rev}).encode()
            sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            req = urllib.request.Request(d.url + "/hooks/github", data=body, method="POST", headers={
                "Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": sig})
            t0 = time.time()
            urllib.request.urlopen(req, timeout=5).read()
            hook.append(first_call_after(w.sim, t0, "ecs:DescribeServices"))
            wait(lambda: passes(d) > p, "the pass to finish")
        d.stop()

        poll = []
        d = w.daemon(repo=f"file://{w.repo.path}", interval="10s")
        wait(lambda: (d.env("prod") or {}).get("phase") == "InSync", "InSync (polling daemon)")
        rng = random.Random(7)
        for i in range(max(3, n // 4)):
            p = passes(d)
            # Commits arrive at any point of the polling interval, not just after a poll.
            time.sleep(rng.uniform(0, 10))
            w.repo.write("prod", yaml("prod", "c", sha(1), w.services) + f"# poll {i}\n")
            rev = w.repo.commit(f"poll {i}")
            t0 = time.time()
            wait(lambda: d.status()["source_revision"] == rev, "the polled commit", timeout=30)
            poll.append(first_call_after(w.sim, t0, "ecs:DescribeServices"))
            wait(lambda: passes(d) > p, "the pass to finish")
        print("reaction to a desired-state commit (commit or webhook -> first DescribeServices):")
        a = summary("local repository, inotify (--interval 60s)", local)
        b = summary("remote repository + signed push webhook (--interval 60s)", hook)
        c = summary("remote repository, polled (--interval 10s, no webhook)", poll)
        print(f"  polling / inotify: {c / a:.0f}x   polling / webhook: {c / b:.0f}x")
    finally:
        w.stop()


def bench_alarm_reaction(tmp, n, events=False):
    """During a bake: alarm set to ALARM -> first UpdateService of the rollback; with
    `events`, the daemon reads the events queue the simulator publishes to (as the rule in
    deploy/events-rule.json would)."""
    w = World(tmp)
    try:
        w.repo.write("prod", yaml("prod", "c", sha(1), w.services, bake="60s"))
        w.repo.commit("start")
        extra = ()
        if events:
            sqs = w.sim.client("sqs", REGION)
            url = sqs.create_queue(QueueName="ecs-gitops-events")["QueueUrl"]
            w.sim.control("events", {"queue_url": url, "region": REGION})
            extra = ("--events-queue", url)
        d = w.daemon(interval="10s", extra=extra)
        wait(lambda: (d.env("prod") or {}).get("phase") == "InSync", "InSync")
        samples = []
        for i in range(n):
            w.repo.write("prod", yaml("prod", "c", sha(2 + i), w.services, bake="60s"))
            w.repo.commit(f"release {i}")
            wait(lambda: (d.env("prod") or {}).get("phase") == "Baking", "Baking")
            t0 = time.time()
            w.cw.set_alarm_state(AlarmName="app-5xx", StateValue="ALARM", StateReason="bench")
            samples.append(first_call_after(w.sim, t0, "ecs:UpdateService"))
            wait(lambda: (d.env("prod") or {}).get("phase") == "Rejected", "Rejected")
            w.cw.set_alarm_state(AlarmName="app-5xx", StateValue="OK", StateReason="bench")
        if events:
            print("reaction to an alarm during a bake with --events-queue (alarm -> rollback UpdateService;")
            print("  the alarm's EventBridge event wakes the environment; in-flight poll relaxed to 10 s):")
            summary("alarm to rollback, events queue", samples)
            return statistics.median(samples)
        print("reaction to an alarm during a bake (alarm -> rollback UpdateService; in-flight poll every 2 s;")
        print("  the alarm is set right after a pass, so this is the worst case of the poll):")
        summary("alarm to rollback", samples, unit="s", scale=1.0)
        return statistics.median(samples)
    finally:
        w.stop()


def bench_steady_state(tmp, services):
    """In sync with many services: API calls and time per pass, memory."""
    names = [f"svc{i:03d}" for i in range(services)]
    w = World(tmp, services=names)
    try:
        w.repo.write("prod", yaml("prod", "c", sha(1), names))
        w.repo.commit("start")
        d = w.daemon(interval="1s")
        wait(lambda: (d.env("prod") or {}).get("phase") == "InSync", "InSync", timeout=120)
        wait(lambda: passes(d) >= 3, "a few passes")

        def hist():
            total = count = 0.0
            for line in d.metrics().splitlines():
                if line.startswith('ecs_gitops_reconcile_duration_seconds_sum{environment="prod"}'):
                    total = float(line.split()[-1])
                if line.startswith('ecs_gitops_reconcile_duration_seconds_count{environment="prod"}'):
                    count = float(line.split()[-1])
            return total, count

        w.sim.reset_calls()
        p0, (s0, c0) = passes(d), hist()
        wait(lambda: passes(d) >= p0 + 10, "10 passes", timeout=60)
        p1, (s1, c1) = passes(d), hist()
        calls = w.sim.control("calls")
        writes = sum(v for k, v in calls.items() if k.split(":")[1] in ("UpdateService", "RegisterTaskDefinition", "TagResource", "UntagResource"))
        per = (p1 - p0) or 1
        print(f"steady state, {services} services in sync ({p1 - p0} passes, --interval 1s):")
        print(f"  AWS calls per pass: {sum(calls.values()) / per:.1f} (DescribeServices {calls.get('ecs:DescribeServices', 0) / per:.1f}); write calls: {writes}")
        print(f"  pass duration (mean of {c1 - c0:.0f}): {1000 * (s1 - s0) / max(c1 - c0, 1):.1f} ms; daemon RSS {d.rss_kib() / 1024:.1f} MiB")
    finally:
        w.stop()


def lease_holders(daemons, env):
    out = []
    for rid, d in daemons.items():
        try:
            m = d.metrics()
        except OSError:
            continue
        if f'ecs_gitops_lease_held{{environment="{env}"}} 1' in m:
            out.append(rid)
    return out


def bench_replicas(tmp, n, ttl_s):
    """Several replicas over 9 environments: takeover after SIGKILL, DynamoDB calls in steady
    state, and one commit to all 9 with 1 and with 3 replicas."""
    envs = [f"e{i}" for i in range(9)]
    w = World(tmp, services=())
    try:
        for e in envs:
            w.ecs.create_cluster(clusterName=e)
            simkit.create_service(w.ecs, e, "web", f"web-{e}", simkit.image_uri(REGION, "app", sha(1)))
            w.repo.write(e, yaml(e, e, sha(1), ["web"]))
        w.repo.commit("start")
        w.sim.client("dynamodb", REGION).create_table(
            TableName="leases", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
        seq = [0]

        def replica(rid=None):
            seq[0] += 1
            rid = rid or f"r{seq[0]}"
            env = dict(w.sim.env(REGION), AWS_ACCESS_KEY_ID=f"key-{rid}")
            d = simkit.Daemon(w.repo.path, env, os.path.join(tmp, f"{rid}.log"), interval="10s",
                              extra=("--lease-table", "leases", "--replica-id", rid, "--lease-ttl", f"{ttl_s}s"))
            w.daemons.append(d)
            return rid, d

        def all_in_sync(daemons, release):
            for e in envs:
                if not any((d.env(e) or {}).get("phase") == "InSync" and not (d.env(e) or {}).get("owned_elsewhere")
                           and (d.env(e) or {}).get("last_good_release") == release for d in daemons.values()):
                    return False
            return True

        # One commit to all 9 files: 1 replica, then 3 (each run from the same state).
        release = [1]

        def deploy_all(daemons, label):
            release[0] += 1
            for e in envs:
                w.repo.write(e, yaml(e, e, sha(release[0]), ["web"]))
            t0 = time.time()
            w.repo.commit(f"release {release[0]}")
            wait(lambda: all_in_sync(daemons, sha(release[0])), f"9 verified ({label})", timeout=180)
            return time.time() - t0

        one = dict([replica()])
        wait(lambda: all_in_sync(one, sha(1)), "adopted by one replica", timeout=120)
        t_one = [deploy_all(one, "1 replica") for _ in range(2)]
        three = dict(one)
        for _ in range(2):
            rid, d = replica()
            three[rid] = d

        def spread():
            counts = {}
            for e in envs:
                h = lease_holders(three, e)
                if len(h) != 1:
                    return False
                counts[h[0]] = counts.get(h[0], 0) + 1
            return sorted(counts.values()) == [3, 3, 3]

        wait(spread, "3 environments each", timeout=120)
        t_three = [deploy_all(three, "3 replicas") for _ in range(2)]
        print(f"9 environments, one commit to all 9 files -> all verified (bake 1s, rollout {0.3}s in the simulator):")
        m1, m3 = summary("1 replica", t_one, unit="s", scale=1.0), summary("3 replicas", t_three, unit="s", scale=1.0)
        print(f"  ratio 3 replicas / 1 replica: {m3 / m1:.2f}")

        # DynamoDB calls per replica per minute, steady state.
        w.sim.control("calls")  # warm
        w.sim.reset_calls()
        t0 = time.time()
        time.sleep(30)  # a measuring window, not a wait for a condition
        dt = time.time() - t0
        log = w.sim.control("calls/log")
        print(f"steady state, 3 replicas x 9 environments, --lease-ttl {ttl_s}s (renewal every {ttl_s / 3:.1f}s):")
        for rid in three:
            k = f"key-{rid}"
            ddb = sum(1 for c in log if c["access_key"] == k and c["operation"].startswith("dynamodb:"))
            print(f"  {rid}: {60 * ddb / dt:.0f} DynamoDB calls per minute")

        # Takeover after SIGKILL of e0's owner; the killed replica is replaced before the next sample.
        samples = []
        for i in range(n):
            wait(spread, "3 environments each", timeout=120)
            owner = lease_holders(three, "e0")[0]
            d = three.pop(owner)
            d.proc.kill()
            d.proc.wait()
            t0 = time.time()
            wait(lambda: len(lease_holders(three, "e0")) == 1, "e0 taken over", timeout=120)
            samples.append(time.time() - t0)
            rid, nd = replica()
            three[rid] = nd
        print(f"takeover after SIGKILL of the owner (--lease-ttl {ttl_s}s; goal < TTL + 2 s = {ttl_s + 2}s):")
        summary("SIGKILL -> another replica holds the lease", samples, unit="s", scale=1.0)
    finally:
        w.stop()


def main():
    ap = argparse.ArgumentParser(description="ecs-gitops benchmarks")
    ap.add_argument("what", nargs="?", default="basics", choices=["basics", "all", "reaction", "replicas", "scale"],
                    help="basics: commit and alarm reaction, steady state; reaction: alarm -> rollback with and "
                         "without the events queue; replicas: several replicas with leases; scale: idle cost, "
                         "calls in sync with and without the queue, 10,000 services; all: every one of them "
                         "(scripts/bench all adds peers)")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--lease-ttl", type=int, default=6, help="seconds (replicas)")
    ap.add_argument("--envs", type=int, default=200, help="scale: environments")
    ap.add_argument("--per-env", type=int, default=50, help="scale: services per environment")
    ap.add_argument("--sync-envs", type=int, default=20, help="scale: environments of the in-sync call count (x --per-env); 0 skips it and the idle cost")
    ap.add_argument("--max-rps", type=float, default=50.0, help="scale: --aws-max-rps of the 10,000-service run")
    ap.add_argument("--idle-seconds", type=int, default=120, help="scale: window of the idle measurement")
    ap.add_argument("--sync-seconds", type=int, default=360, help="scale: window of the in-sync call count")
    ap.add_argument("--settle", type=int, default=30, help="scale: seconds after adoption before a window")
    ap.add_argument("--no-deploy", action="store_true", help="scale: stop after the in-sync window")
    ap.add_argument("--alarm-samples", type=int, default=5, help="scale: environments whose alarm fires under load")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ecs-gitops-bench-")
    try:
        if args.what in ("replicas", "all"):
            bench_replicas(os.path.join(tmp, "r"), min(args.samples, 10), args.lease_ttl)
        if args.what in ("reaction", "all"):
            polled = bench_alarm_reaction(os.path.join(tmp, "p"), args.samples)
            pushed = bench_alarm_reaction(os.path.join(tmp, "e"), args.samples, events=True)
            print(f"  ratio events queue / polling: {pushed / polled:.3f}")
        if args.what in ("basics", "all"):
            bench_commit_latency(os.path.join(tmp, "a"), args.samples)
            bench_alarm_reaction(os.path.join(tmp, "b"), max(3, args.samples // 4))
            bench_steady_state(os.path.join(tmp, "c"), args.services)
        if args.what in ("scale", "all"):
            import scale
            scale.SETTLE = args.settle
            if args.sync_envs > 0:
                scale.bench_idle_and_in_sync(os.path.join(tmp, "i"), args.idle_seconds, args.sync_seconds,
                                             args.sync_envs, args.per_env)
            scale.bench_scale(os.path.join(tmp, "s"), args.envs, args.per_env, args.max_rps, args.alarm_samples,
                              args.sync_seconds, deploy=not args.no_deploy)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
