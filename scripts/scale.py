"""ecs-gitops' cost at scale, against the simulator: what it holds and spends idle, the AWS calls
it makes in sync with and without the events queue, and 10,000 services in 200 environments.

Started by `scripts/bench scale`. The services are created by the simulator's bulk endpoint
(`POST /_sim/services`, one task definition family per service, as CreateService calls would
make them). Memory is the daemon's RSS (VmRSS, and VmHWM for the peak), CPU its user + system
time from /proc; calls are counted by the simulator. Windows in which a rate is measured are
fixed lengths of time (a rate needs one), never waits for a condition.
"""

import os
import statistics
import threading
import time

import simkit
from bench import REGION, sha, summary, wait, yaml

TICKS = os.sysconf("SC_CLK_TCK")
# Seconds after adoption before a window: each environment's next look with the events queue
# is 5 minutes after its last, so a window that starts at once counts the adoption's burst.
SETTLE = 30


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Fleet:
    """A simulator with `envs` clusters of `per_env` services (desired count 1), an alarm per
    environment, a desired-state repository naming release 1 for all, and one daemon."""

    def __init__(self, tmp, envs, per_env, events=False, extra=(), interval="10s"):
        os.makedirs(tmp, exist_ok=True)
        self.tmp = tmp
        self.sim = simkit.Sim(os.path.join(tmp, "sim.log"))
        self.daemon = None
        try:
            self._start(envs, per_env, events, extra, interval)
        except BaseException:
            self.stop()
            raise

    def _start(self, envs, per_env, events, extra, interval):
        self.sim.control("config", {"rollout_seconds": 0.3})
        self.ecs, self.ecr, self.cw = (self.sim.client(n, REGION) for n in ("ecs", "ecr", "cloudwatch"))
        simkit.put_images(self.ecr, "app", [sha(n) for n in range(1, 4)])
        self.envs = [f"e{i:03d}" for i in range(envs)]
        self.services = []
        for e in self.envs:
            self.services = self.sim.control("services", {"region": REGION, "cluster": e, "count": per_env,
                                                          "image": simkit.image_uri(REGION, "app", sha(1))})["services"]
            simkit.put_alarm(self.cw, f"{e}-5xx")
        self.repo = simkit.Repo(os.path.join(self.tmp, "repo"))
        for e in self.envs:
            self.write(e, 1)
        self.repo.commit("start")
        if events:
            url = self.sim.client("sqs", REGION).create_queue(QueueName="ecs-gitops-events")["QueueUrl"]
            self.sim.control("events", {"queue_url": url, "region": REGION})
            extra = ("--events-queue", url, *extra)
        self.daemon = simkit.Daemon(self.repo.path, self.sim.env(REGION), os.path.join(self.tmp, "daemon.log"),
                                    interval=interval, extra=extra)
        self.pid = self.daemon.proc.pid

    def write(self, env, release, bake="1s"):
        # A rollout's calls wait their turn in the API budget behind every other environment's:
        # the timeout is for ECS, not for the queue.
        self.repo.write(env, yaml(env, env, sha(release), self.services, bake=bake, alarm=f"{env}-5xx",
                                  rollout_timeout="30m"))

    def phases(self):
        return {e["name"]: e for e in self.daemon.status()["environments"]}

    def all_verified(self, release, envs=None):
        st = self.phases()
        return all(st.get(e, {}).get("phase") == "InSync" and st[e].get("last_good_release") == sha(release)
                   for e in envs or self.envs)

    def stop(self):
        if self.daemon:
            self.daemon.stop()
        self.sim.stop()


def window(fleet, seconds):
    """Calls per operation, daemon CPU seconds and RSS over a fixed window."""
    fleet.sim.reset_calls()
    c0, t0 = cpu_seconds(fleet.pid), time.time()
    time.sleep(seconds)  # the measuring window (a rate needs a length of time)
    dt = time.time() - t0
    return fleet.sim.control("calls"), cpu_seconds(fleet.pid) - c0, dt, simkit.proc_status_kib(fleet.pid, "VmRSS")


def idle(tmp, services, seconds, out):
    """One environment of `services` services, in sync, default interval (10 s), no queue."""
    f = Fleet(tmp, 1, services)
    try:
        wait(lambda: f.all_verified(1), "in sync", timeout=300)
        calls, cpu, dt, rss = window(f, seconds)
        out[services] = (rss, cpu * 3600 / dt, sum(calls.values()) * 60 / dt)
    finally:
        f.stop()


def in_sync_calls(tmp, envs, per_env, events, seconds, out):
    """`envs` x `per_env` services in sync for `seconds`: AWS calls per minute."""
    f = Fleet(tmp, envs, per_env, events=events)
    try:
        wait(lambda: f.all_verified(1), "in sync", timeout=900)
        time.sleep(SETTLE)  # see SETTLE
        calls, cpu, dt, rss = window(f, seconds)
        out[events] = (calls, dt, cpu, rss)
    finally:
        f.stop()


def bench_idle_and_in_sync(tmp, idle_seconds, sync_seconds, envs, per_env):
    """Idle cost (1 and 100 services) and calls at `envs` x `per_env` services with and without
    the events queue, each on its own simulator, side by side in one run."""
    idles, syncs = {}, {}
    threads = [threading.Thread(target=idle, args=(os.path.join(tmp, f"idle{n}"), n, idle_seconds, idles)) for n in (1, 100)]
    threads += [threading.Thread(target=in_sync_calls, args=(os.path.join(tmp, f"sync{q}"), envs, per_env, q, sync_seconds, syncs))
                for q in (False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"idle, one environment in sync, --interval 10s (window {idle_seconds}s; CPU extrapolated to an hour):")
    for n in (1, 100):
        if n in idles:
            rss, cpu_h, calls_min = idles[n]
            print(f"  {n:>4} services: RSS {rss / 1024:6.1f} MiB   CPU {cpu_h:6.1f} s/hour   {calls_min:6.1f} AWS calls/minute")
    total = envs * per_env
    print(f"in sync, {total} services in {envs} environments, --interval 10s (window {sync_seconds}s):")
    for q in (False, True):
        if q not in syncs:
            continue
        calls, dt, cpu, rss = syncs[q]
        per_min = {k: v * 60 / dt for k, v in calls.items()}
        ds = per_min.get("ecs:DescribeServices", 0.0)
        label = "with --events-queue" if q else "polling only"
        detail = ", ".join(f"{k.split(':')[1]} {v:.1f}" for k, v in sorted(per_min.items()))
        print(f"  {label:<20} {sum(per_min.values()):7.1f} calls/minute ({detail})")
        print(f"  {'':<20} DescribeServices per 10 services per 5 minutes: {ds * 5 / (total / 10):.2f}; "
              f"CPU {cpu * 60 / dt:.2f} s/minute; RSS {rss / 1024:.1f} MiB")
    if False in syncs and True in syncs:
        a = sum(syncs[False][0].values()) / syncs[False][1]
        b = sum(syncs[True][0].values()) / syncs[True][1]
        print(f"  ratio with queue / polling only: {b / a:.3f}" if a else "  ratio with queue / polling only: n/a (no calls polling)")


def bench_scale(tmp, envs, per_env, max_rps, alarm_samples, seconds, deploy=True):
    """`envs` x `per_env` services with the events queue: adoption, the in-sync cost, one commit
    touching every file, and alarm -> rollback in environments baking while the rest deploy."""
    total = envs * per_env
    t0 = time.time()
    f = Fleet(tmp, envs, per_env, events=True, extra=("--aws-max-rps", str(max_rps)))
    try:
        setup = time.time() - t0
        t0 = time.time()
        wait(lambda: f.all_verified(1), "all adopted", timeout=3600)
        adopted = time.time() - t0
        print(f"scale: {total} services in {envs} environments, --events-queue, --aws-max-rps {max_rps} "
              f"(simulator setup {setup:.0f}s):")
        print(f"  start -> every environment InSync (adoption, one DescribeTaskDefinition per service): {adopted:.0f} s; "
              f"RSS {simkit.proc_status_kib(f.pid, 'VmRSS') / 1024:.1f} MiB")
        time.sleep(SETTLE)  # see SETTLE
        calls, cpu, dt, rss = window(f, seconds)
        print(f"  in sync (window {dt:.0f}s): RSS {rss / 1024:.1f} MiB; CPU {cpu * 60 / dt:.2f} s/minute; "
              f"{sum(calls.values()) * 60 / dt:.1f} AWS calls/minute")

        if not deploy:
            return
        # Some environments bake a release for long, with their own alarm; the rest take one
        # commit touching every file; while those deploy, each baking one's alarm fires.
        bakers = f.envs[:alarm_samples]
        rest = f.envs[alarm_samples:]
        for e in bakers:
            f.write(e, 2, bake="30m")
        f.repo.commit("bake a release in a few environments")
        wait(lambda: all(f.phases()[e]["phase"] == "Baking" for e in bakers), "baking", timeout=600)
        for e in rest:
            f.write(e, 3)
        t_commit = time.time()
        f.repo.commit(f"release 3 in {len(rest)} environments")
        # From the simulator's log: each environment's first UpdateService (its rollout has
        # begun in ECS) and its last (all its services updated); from the status page: when it
        # shows the environment Deploying (the pass that writes the rollout has finished).
        first, updated, shown = {}, {}, {}
        reactions, pending, alarm_at = [], list(bakers), None
        seen_until, polled = t_commit, 0.0
        deadline = time.time() + 3600
        while time.time() < deadline and (len(shown) < len(rest) or pending or alarm_at):
            # (A simulator at full load can take seconds to answer its control API.)
            log = f.sim.control(f"calls/log?since={seen_until}&operation=ecs:UpdateService", timeout=120)
            for c in log:
                seen_until = max(seen_until, c["at"])
                if c["cluster"] in rest:
                    first.setdefault(c["cluster"], c["at"] - t_commit)
                    updated[c["cluster"]] = updated.get(c["cluster"], 0) + 1
                elif alarm_at and c["cluster"] == alarm_at[0] and c["at"] >= alarm_at[1]:
                    reactions.append((c["at"] - alarm_at[1], len(first)))
                    alarm_at = None
            seen_until += 1e-6
            now = time.time()
            if alarm_at is None and now - polled >= 1.0:
                # (Not while an alarm's reaction is timed: the status of every service is a large
                # answer, and the daemon would be measuring its own page.)
                polled = now
                for e, st in f.phases().items():
                    if e in rest and e not in shown and (st["phase"] in ("Deploying", "Baking")
                                                         or st.get("last_good_release") == sha(3)):
                        shown[e] = now - t_commit
            if alarm_at is None and pending and len(first) >= len(rest) // 2:
                # Half the others are rolling out: one baking environment's alarm fires.
                e = pending.pop(0)
                f.cw.set_alarm_state(AlarmName=f"{e}-5xx", StateValue="ALARM", StateReason="bench")
                alarm_at = (e, time.time())
            time.sleep(0.5 if not alarm_at else 0.05)
        busy = [n for _, n in reactions]
        done = [updated.get(e, 0) for e in rest]
        print(f"  one commit touching {len(rest)} files ({len(rest) * per_env} services):")
        print(f"    -> every environment's first UpdateService (its rollout begun): {max(first.values()):.0f} s "
              f"(median environment {statistics.median(first.values()):.0f} s)")
        print(f"    -> every environment Deploying on the status page (all its services updated): "
              f"{max(shown.values()):.0f} s (median environment {statistics.median(shown.values()):.0f} s); "
              f"UpdateService calls seen per environment: min {min(done)}")
        print(f"  alarm -> rollback UpdateService in a baking environment while the others deploy "
              f"({min(busy)}-{max(busy)} of {len(rest)} rolling out):")
        summary("alarm to rollback under load", [r for r, _ in reactions])
        print(f"  peak RSS {simkit.proc_status_kib(f.pid, 'VmHWM') / 1024:.1f} MiB; CPU {cpu_seconds(f.pid):.0f} s in all")
    finally:
        f.stop()
