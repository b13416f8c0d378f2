import ArgumentParser
import Colony
import Glibc

/// `colony-bench`: Colony's benchmarks. Each prints one JSON object on stdout.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "colony-bench",
        abstract: "Benchmarks that print one JSON object per run; build with -c release.",
        subcommands: [Local.self, Wire.self, ManagerBench.self, SessionBench.self, MmapBench.self, SchedulerBench.self, PoolBench.self]
    )
}

@main
enum BenchMain {
    static func main() async {
        // The mmap benchmark's processes are this program started again.
        MmapBench.registerEntryPoints()
        do {
            try ChildProcess.bootstrap()
        } catch {
            print("colony-bench: a benchmark child process could not start: \(error)")
            exit(1)
        }
        await Bench.main()
    }
}

/// `colony-bench local`: the thread core against CPython's threading, queue and
/// concurrent.futures, in the same run.
struct Local: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Locks, queues, the thread pool and Event ping-pong, compared with CPython.")

    @Option(help: "Seconds to run each workload.")
    var seconds: Double = 1.0

    @Flag(help: "Skip the CPython reference run.")
    var noCompare = false

    @Option(help: "Run only these workloads (comma-separated: lock, rlock, queue, queue_two_thread, executor, event).")
    var only: String?

    func validate() throws {
        guard seconds > 0, seconds <= 600 else {
            throw ValidationError("--seconds must be in (0, 600], got \(seconds)")
        }
    }

    func run() throws {
        let workloads = LocalWorkloads(seconds: seconds)
        let selected = Set((only ?? "lock,rlock,queue,queue_two_thread,executor,event").split(separator: ",").map(String.init))
        var colony: [String: Double] = [:]
        var report: [String: Any] = [
            "benchmark": "local",
            "parameters": ["seconds_per_workload": seconds, "cpu_count": cpuCount(), "executor_workers": 2,
                           "executor_batch": 1_000, "two_thread_items": 200_000,
                           "spin_policy": "spin \(SpinPolicy.rounds) pause rounds, then futex"],
        ]
        if selected.contains("lock") { colony["lock_acquire_release_per_s"] = workloads.lockAcquireRelease() }
        if selected.contains("rlock") { colony["rlock_acquire_release_per_s"] = workloads.rlockAcquireRelease() }
        if selected.contains("queue") { colony["queue_put_get_per_s"] = try workloads.queuePutGet() }
        if selected.contains("queue_two_thread") { colony["queue_two_thread_items_per_s"] = try workloads.queueTwoThreads() }
        if selected.contains("executor") { colony["executor_submit_result_per_s"] = try workloads.executorSubmitResult() }
        if selected.contains("event") {
            let pingPong = try workloads.eventPingPong()
            colony["event_ping_pong_round_trips_per_s"] = pingPong.perSecond
            report["event_ping_pong_p50_us"] = percentile(pingPong.latenciesMicros, 0.5)
            report["event_ping_pong_p99_us"] = percentile(pingPong.latenciesMicros, 0.99)
        }
        for (key, value) in colony { report[key] = value }
        if !noCompare {
            addCPython(runPythonReference(script: localPythonScript, arguments: [String(seconds)]), ours: colony, to: &report)
        }
        print(jsonLine(report))
    }
}

/// Puts CPython's figures under "cpython" and ours divided by them under "ratio" (or says
/// why CPython could not run).
func addCPython(_ reference: Result<[String: Double], ReferenceUnavailable>, ours: [String: Double], to report: inout [String: Any]) {
    switch reference {
    case .success(let cpython):
        report["cpython"] = cpython
        var ratios: [String: Double] = [:]
        for (key, value) in ours {
            if let figure = cpython[key], figure > 0 { ratios[key] = value / figure }
        }
        report["ratio"] = ratios
    case .failure(let unavailable):
        report["cpython"] = ["unavailable": unavailable.reason]
    }
}
