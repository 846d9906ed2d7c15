#!/usr/bin/env python3
"""Each protocol's loom model must fail when the protocol is broken.

For each mutation below (a weakened ordering, a skipped re-check, a ticket given back too
early), this copies the crate to a scratch directory, applies the one change, and runs the
models named with it, expecting each to FAIL. A model that still passes is reported: it no
longer checks what it claims to. Run by hand (it rebuilds once per mutation, ~1-2 min each):

    python3 .ci/loom-mutations.py            # every mutation
    python3 .ci/loom-mutations.py capacity   # those whose name contains "capacity"
    python3 .ci/loom-mutations.py --check    # only that each one still applies (CI, instant)

Exit status 0 only if every mutation was caught.
"""
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRATCH = os.environ.get("MUTATION_DIR", "/tmp/tasker-loom-mutations")

# (name, file, original text, mutated text, models that must fail)
MUTATIONS = [
    (
        "sleep: no fence before a submitter reads the sleeper count",
        "src/scheduler/sleep.rs",
        "        // Step 2.\n        fence(Ordering::SeqCst);\n",
        "",
        [
            "submit_racing_a_worker_falling_asleep_loses_no_wakeup",
            "submit_racing_a_sleeping_worker_is_run",
        ],
    ),
    (
        "sleep: a worker woken while more work is queued does not pass the wake-up on",
        "src/scheduler/sleep.rs",
        "        if more_work {\n            self.notify_one();",
        "        if more_work && WAKE_PENDING == 0 {\n            self.notify_one();",
        ["submit_racing_a_worker_falling_asleep_loses_no_wakeup"],
    ),
    (
        "blocking submission: the wait never pays the wake-up its push skipped",
        "src/completion.rs",
        "        if self.owes_wake.replace(false) && slot.is_queued() {\n            self.manager.wake();",
        "        if self.owes_wake.replace(false) && slot.is_queued() {\n            let _ = self.manager;",
        ["submit_racing_a_sleeping_worker_is_run"],
    ),
    (
        "completion: READY stored Relaxed",
        "src/completion.rs",
        "self.state.store(READY, Ordering::Release);",
        "self.state.store(READY, Ordering::Relaxed);",
        ["completion_slot_complete_vs_wait_vs_cancel_vs_drop"],
    ),
    (
        "completion: a woken wait that got its outcome never uncounts itself",
        "src/completion.rs",
        "                self.slot().resumed();\n                return Ok(outcome);",
        "                return Ok(outcome);",
        ["completion_slot_complete_vs_wait_vs_cancel_vs_drop"],
    ),
    (
        "task cell: a cancel drops the closure before it won the race with the claim",
        "src/task.rs",
        "    fn cancel(&self) -> bool {\n        if !self.port.cancel() {",
        "    fn cancel(&self) -> bool {\n"
        "        // SAFETY: none: this mutation breaks the protocol on purpose.\n"
        "        drop(unsafe { self.with_body(Option::take) });\n"
        "        if !self.port.cancel() {",
        ["completion_slot_complete_vs_wait_vs_cancel_vs_drop"],
    ),
    (
        "local deque: a push to a worker's own deque wakes nobody",
        "src/shared.rs",
        "        self.push_quietly(queued, priority);\n        self.sleep.notify_one();",
        "        let local = !priority && self.local_queue().is_some();\n"
        "        self.push_quietly(queued, priority);\n"
        "        if local {\n            return;\n        }\n"
        "        self.sleep.notify_one();",
        ["a_task_made_inside_a_task_is_stolen_by_an_idle_peer"],
    ),
    (
        "kill_queued: the resolved task's ticket is not given back",
        "src/shared.rs",
        "            delivered.report(&observer);\n            self.finish(ticket);",
        "            delivered.report(&observer);\n            std::mem::forget(ticket);",
        ["kill_queued_racing_the_worker_resolves_each_once"],
    ),
    (
        "lifecycle: the last task out looks for the drain before it leaves",
        "src/lifecycle.rs",
        "        self.count(shard).fetch_sub(n, Ordering::SeqCst);\n        if self.is_drained() {",
        "        let drained = self.is_drained();\n"
        "        self.count(shard).fetch_sub(n, Ordering::SeqCst);\n"
        "        if drained {",
        [
            "stop_racing_a_submission_neither_strands_nor_runs_twice",
            "kill_racing_queued_and_running_tasks_resolves_each_once",
        ],
    ),
    (
        "lifecycle: a submitter reads the flags before it counts itself in",
        "src/lifecycle.rs",
        "        self.count(shard).fetch_add(1, Ordering::SeqCst);\n"
        "        if self.flags.load(Ordering::SeqCst) & CLOSED == 0 {",
        "        let open = self.flags.load(Ordering::SeqCst) & CLOSED == 0;\n"
        "        self.count(shard).fetch_add(1, Ordering::SeqCst);\n"
        "        if open {",
        ["stop_racing_a_submission_neither_strands_nor_runs_twice"],
    ),
    (
        "lifecycle: a thread that read CLOSED sums the shards without a fence first",
        "src/lifecycle.rs",
        "        fence(Ordering::SeqCst);\n        self.counts\n",
        "        self.counts\n",
        ["stop_racing_a_submission_neither_strands_nor_runs_twice"],
    ),
    (
        "retry: the re-queue gives its ticket back and takes a fresh one",
        "src/worker.rs",
        "                shared.push(Queued { job, ticket }, true);\n                return;",
        "                shared.finish(ticket);\n"
        "                match shared.admit() {\n"
        "                    Ok(ticket) => shared.push(Queued { job, ticket }, true),\n"
        "                    Err(_) => {\n"
        "                        let _ = job.fail(TaskError::Killed);\n"
        "                    }\n"
        "                }\n"
        "                return;",
        ["unhealthy_requeue_racing_stop"],
    ),
    (
        "burst slot: a parked slot does not check CLOSED before it waits",
        "src/slot.rs",
        "                    if closed() {\n                        return Wakeup::Exit;\n                    }\n",
        "",
        ["parked_burst_slot_does_not_miss_shutdown"],
    ),
    (
        "burst slot: a slot asked to park before it ran waits for the word to leave PARKED",
        "src/slot.rs",
        "                PARK_REQUESTED => {\n                    let _ = self.0.compare_exchange(",
        "                PARK_REQUESTED if false => {\n                    let _ = self.0.compare_exchange(",
        ["burst_slot_parking_while_a_task_arrives"],
    ),
    (
        "capacity: a waiter does not try again after it counted itself",
        "src/scheduler/capacity.rs",
        "            let outcome = if self.try_reserve() {\n                Some(true)",
        "            let outcome = if false {\n                Some(true)",
        ["a_full_queue_waiter_gets_the_room_a_worker_frees"],
    ),
    (
        "capacity: a waiter does not re-check shutdown after it counted itself",
        "src/scheduler/capacity.rs",
        "            } else if closed() {\n                Some(false)\n            } else {",
        "            } else {",
        ["a_full_queue_waiter_is_answered_when_stop_begins"],
    ),
    (
        "lifecycle: a worker about to search does not apply the outcomes it held back",
        "src/worker.rs",
        "        // (see `lifecycle`), before any look at whether the manager is drained.\n"
        "        shared.settle();\n",
        "        // (see `lifecycle`), before any look at whether the manager is drained.\n",
        ["stop_racing_a_submission_neither_strands_nor_runs_twice"],
    ),
    (
        "lifecycle: a task admitted against an owed outcome does not use it up",
        "src/lifecycle.rs",
        "            owed.store(held - 1, Ordering::Relaxed);",
        "            owed.store(held, Ordering::Relaxed);",
        ["stop_racing_tasks_made_on_a_worker_that_holds_outcomes_back"],
    ),
    (
        "cell cache: a shared cell's last owner does not acquire the other's uses",
        "src/cells.rs",
        "owners.fetch_sub(1, Ordering::Release) != 1 {\n            return;\n        }\n"
        "        // Acquire: pairs with the other owner's Release decrement.\n"
        "        fence(Ordering::Acquire);",
        "owners.fetch_sub(1, Ordering::Relaxed) != 1 {\n            return;\n        }\n"
        "        let _ = fence;",
        ["completion_slot_complete_vs_wait_vs_cancel_vs_drop"],
    ),
    (
        "handle: a view's clone that finds 0 takes no strong reference",
        "src/handle.rs",
        "            unsafe { Arc::increment_strong_count(self.ptr) };\n",
        "",
        ["last_handle_dropped_while_a_task_clones_its_lent_manager"],
    ),
    (
        "handle: the last drop neither releases nor acquires",
        "src/handle.rs",
        "        if self.handles().fetch_sub(1, Ordering::Release) != 1 {\n            return;\n        }\n        fence(Ordering::Acquire);",
        "        if self.handles().fetch_sub(1, Ordering::Relaxed) != 1 {\n            return;\n        }\n        let _ = fence;",
        ["last_handle_dropped_while_a_task_clones_its_lent_manager"],
    ),
]


def copy_crate():
    os.makedirs(SCRATCH, exist_ok=True)
    for item in ["Cargo.toml", "Cargo.lock", "src", "loom-tests"]:
        src, dst = os.path.join(ROOT, item), os.path.join(SCRATCH, item)
        if os.path.isdir(src):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
        elif os.path.exists(src):
            shutil.copy2(src, dst)
    # The copy is a workspace of the root crate and its loom tests only.
    manifest = os.path.join(SCRATCH, "Cargo.toml")
    text = open(manifest).read()
    start = text.index("[workspace]")
    end = text.index("[package]")
    text = text[:start] + '[workspace]\nmembers = ["loom-tests"]\n\n' + text[end:]
    # Drop [[bench]], [[example]] and [[test]] targets and dev-dependencies the copy lacks.
    for section in ("[[bench]]", "[[example]]", "[[test]]"):
        while section in text:
            i = text.index(section)
            j = text.find("\n[", i + 1)
            text = text[:i] + (text[j + 1:] if j >= 0 else "")
    open(manifest, "w").write(text)


def run_model(model):
    env = dict(os.environ)
    env.update(
        RUSTFLAGS="--cfg loom",
        LOOM_MAX_PREEMPTIONS=env.get("LOOM_MAX_PREEMPTIONS", "3"),
        CARGO_TARGET_DIR=os.path.join(SCRATCH, "target"),
    )
    cmd = ["cargo", "test", "-q", "-p", "loom-tests", "--release", "--", "--exact", model]
    done = subprocess.run(cmd, cwd=SCRATCH, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def check_texts():
    """`--check`: each mutation's original text is in its file exactly once (no build, no
    model run), so an edit of the code a mutation targets cannot leave it stale unnoticed."""
    stale = []
    for name, path, old, _new, _models in MUTATIONS:
        count = open(os.path.join(ROOT, path)).read().count(old)
        if count != 1:
            stale.append(f"{name}: its original text is found {count} times in {path}")
    for line in stale:
        print(f"!!! {line}")
    print(f"{len(MUTATIONS) - len(stale)} of {len(MUTATIONS)} mutations apply")
    sys.exit(1 if stale else 0)


def main():
    if sys.argv[1:] == ["--check"]:
        check_texts()
    wanted = sys.argv[1:]
    missed = []
    for name, path, old, new, models in MUTATIONS:
        if wanted and not any(w in name for w in wanted):
            continue
        copy_crate()
        file = os.path.join(SCRATCH, path)
        text = open(file).read()
        if text.count(old) != 1:
            print(f"!!! {name}: the original text is not found exactly once in {path}")
            missed.append(name)
            continue
        open(file, "w").write(text.replace(old, new))
        for model in models:
            start = time.time()
            code, output = run_model(model)
            took = time.time() - start
            if "error[" in output and "could not compile" in output:
                print(f"!!! {name}: the mutated crate does not build\n{output[-2000:]}")
                missed.append(name)
            elif code == 0:
                print(f"!!! {name}: {model} still PASSES ({took:.0f} s)")
                missed.append(name)
            else:
                print(f"ok  {name}: {model} fails, as it must ({took:.0f} s)")
    print(f"{len(missed)} mutation(s) not caught" if missed else "every mutation was caught")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
