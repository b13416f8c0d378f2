import Colony
import ColonyWorker
import Glibc

/// The chapter's example programs, written with Colony. `colony-examples NAME` runs one;
/// `colony-examples` alone lists them. Where the Python program sleeps for seconds, these
/// sleep for hundredths of a second, so that tests can run them quickly.
@main
enum ExamplePrograms {
    static let all: [(name: String, summary: String, run: @Sendable () throws -> Void)] = [
        ("event", "Event: ten threads wait for one set()", ThreadingExamples.event),
        ("barrier", "Barrier: ten threads meet, the action announces the release", ThreadingExamples.barrier),
        ("thread-local", "threading.local: each thread sees its own attribute", ThreadingExamples.threadLocal),
        ("rlock", "RLock: printing the lock outside and inside `with lock`", ThreadingExamples.rlockSession),
        ("periodic", "The Periodic timer recipe: a callback every interval until it throws", ThreadingExamples.periodic),
        ("queue-eafp", "queue: asking forgiveness with get_nowait and Empty", ThreadingExamples.queueEAFP),
        ("external-interfacing", "Architecture: one thread owns an external resource, fed by a queue", ArchitectureExamples.externalInterfacing),
        ("serializer", "Architecture: a Serializer thread runs any callable, one at a time", ArchitectureExamples.serializer),
        ("worker-pool", "Architecture: worker threads with request and result queues", ArchitectureExamples.workerPool),
        ("executor-map", "concurrent.futures: make_dict with Executor.map", FuturesExamples.executorMap),
        ("as-completed", "concurrent.futures: make_dict with as_completed", FuturesExamples.asCompletedDict),
        ("executor-exit", "shutdown(wait: false): the queued calls still run before the process exits", FuturesExamples.shutdownWithoutWaiting),
        ("exit-waits", "A non-daemon thread keeps the process alive after main returns", ThreadingExamples.exitWaitsForThreads),
        ("daemon-exit", "A daemon thread does not keep the process alive", ThreadingExamples.daemonDoesNotDelayExit),
        ("join-main", "A thread joining the main thread returns once main has returned", ThreadingExamples.joinMainThread),
        ("manager-hold", "PORT STATE_DIR READY_FILE: connect to a manager, fill anonymous objects, wait to be killed", ManagerExamples.hold),
        ("process-basics", "Process: start, join, exitcode, is_alive, terminate, kill, close", ProcessExamples.basics),
        ("mmap-ipc", "mmap for IPC: a child rewrites a file, this process watches it through a map", ProcessExamples.mmapIPC),
        ("process-barrier", "A ProcessBarrier's registered action runs once per round, in the process that completes it", ProcessExamples.processBarrier),
        ("shared-value", "Value with get_lock() and atomic adds from two processes", ProcessExamples.sharedValue),
        ("shared-queue", "A child produces into a JoinableQueue in shared memory; this process consumes", ProcessExamples.sharedQueue),
        ("readme-processes", "The README's process example: four children count into a shared Value", ProcessExamples.readme),
        ("process-exit", "At exit: non-daemon children are waited for, daemon children terminated", ProcessExamples.exitBehaviour),
        ("process-crashes", "Children killed holding a lock, or in the middle of queue puts and gets", ProcessExamples.crashes),
        ("make-dict", "PORT STATE_DIR: Example 15-1, processes store f(s) in a manager's dict", ManagerExamples.makeDict),
        ("manager-hold-locks", "PORT STATE_DIR READY_FILE: take shared locks and park calls, wait to be killed", ManagerExamples.holdLocks),
        ("pool-map", "PORT STATE_DIR: a map over colony worker's stock sha256 task", PoolExamples.map),
        ("pool-worker", "PORT STATE_DIR [PROCESSES]: a worker program of your own, with the task square", PoolExamples.worker),
        ("pool-squares", "PORT STATE_DIR: map square over 1...10 on pool-worker nodes", PoolExamples.squares),
        ("pool-orphan", "PORT STATE_DIR READY_FILE: submit pool calls, save their ids, wait to be killed", PoolExamples.orphan),
    ]

    static func main() throws {
        // Child processes are this program started again: register their entry points, then
        // let bootstrap() run the child's target (it returns only in the original program).
        ProcessExamples.registerEntryPoints()
        try WorkerNode.bootstrap(registry: SquareTasks.registry)  // registers the pool's worker processes, then bootstraps
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first else {
            print("usage: colony-examples NAME\n")
            for example in all { print("  \(example.name.padding(20))\(example.summary)") }
            return
        }
        guard let example = all.first(where: { $0.name == name }) else {
            var message = Array("colony-examples: no example named '\(name)'; run without arguments to list them\n".utf8)
            _ = write(2, &message, message.count)
            exit(2)
        }
        try example.run()
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}

/// Milliseconds since the program started, for the "running at" lines.
let programStart = Clock.now()

enum Clock {
    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func sinceStart() -> String {
        let ms = (now() - programStart) * 1000
        return String(Int(ms)) + " ms"
    }
}

/// A thread-safe print: whole lines never interleave, and each is flushed at once so the
/// lines of parent and child processes sharing one output keep their real order.
func say(_ line: String) {
    printLock.withLock {
        print(line)
        fflush(nil)  // every output stream
    }
}

let printLock = Lock()
