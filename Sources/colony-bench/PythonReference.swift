import Foundation

/// Runs a CPython script that prints one JSON object, and returns that object, or a reason
/// why the reference could not run (so the benchmark says so instead of failing).
func runPythonReference(script: String, arguments: [String]) -> Result<[String: Double], ReferenceUnavailable> {
    guard let python = findExecutable("python3") else {
        return .failure(ReferenceUnavailable(reason: "python3 is not installed; install it (apt-get install python3) to compare with CPython"))
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = ["-c", unblockSignals + script] + arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    do {
        try process.run()
    } catch {
        return .failure(ReferenceUnavailable(reason: "could not start \(python): \(error)"))
    }
    // A reference that hangs must not hang the benchmark.
    let started = DispatchTime.now()
    let watchdog = DispatchWorkItem { kill(-process.processIdentifier, SIGKILL) }
    DispatchQueue.global().asyncAfter(deadline: started + referenceTimeoutSeconds, execute: watchdog)
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    watchdog.cancel()
    if process.terminationReason == .uncaughtSignal, DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds >= UInt64(referenceTimeoutSeconds * 1e9) {
        return .failure(ReferenceUnavailable(reason: "the CPython reference did not finish within \(Int(referenceTimeoutSeconds)) s and was killed ; run again"))
    }
    guard process.terminationStatus == 0,
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else {
        return .failure(ReferenceUnavailable(reason: "the CPython reference failed (status \(process.terminationStatus)): \(errorText.suffix(300))"))
    }
    var figures: [String: Double] = [:]
    for (key, value) in object {
        if let number = value as? NSNumber { figures[key] = number.doubleValue }
    }
    return .success(figures)
}

/// The first lines of every reference script. A process inherits the signal mask of the
/// thread that spawns it, and Swift's concurrency threads block nearly every signal: CPython's
/// `Pool` stops its workers with SIGTERM at `with` exit, and with SIGTERM blocked it waits for
/// them forever.
private let unblockSignals = """
    import signal
    signal.pthread_sigmask(signal.SIG_SETMASK, [])

    """

/// How long a CPython reference may run before the benchmark gives up on it.
let referenceTimeoutSeconds = 300.0

struct ReferenceUnavailable: Error {
    let reason: String
}

func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// Serializes a flat or nested dictionary of numbers and strings as one JSON line.
func jsonLine(_ object: [String: Any]) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
        return "{}"
    }
    return String(decoding: data, as: UTF8.self)
}

/// The CPython loops matching `LocalWorkloads`, timed the same way.
let localPythonScript = #"""
import json, queue, sys, threading, time
from concurrent.futures import ThreadPoolExecutor

seconds = float(sys.argv[1])

def ops_per_second(batch, body):
    body()
    start = time.perf_counter()
    ops = 0
    while True:
        body()
        ops += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return ops / elapsed

def lock_loop(lock):
    def body():
        acquire, release = lock.acquire, lock.release
        for _ in range(100_000):
            acquire(); release()
    return body

def queue_put_get():
    q = queue.Queue()
    def body():
        for i in range(100_000):
            q.put(i); q.get()
    return body

def queue_two_threads():
    q = queue.Queue()
    items = 200_000
    def consume():
        for _ in range(items):
            q.get()
    def body():
        t = threading.Thread(target=consume)
        t.start()
        for i in range(items):
            q.put(i)
        t.join()
    return items, body

def executor_submit_result(executor):
    def task(i):
        return i
    def body():
        futures = [executor.submit(task, i) for i in range(1_000)]
        for f in futures:
            f.result()
    return body

def event_ping_pong():
    ping, pong, stop = threading.Event(), threading.Event(), threading.Event()
    def respond():
        while True:
            ping.wait(); ping.clear()
            if stop.is_set():
                return
            pong.set()
    t = threading.Thread(target=respond)
    t.start()
    def body():
        for _ in range(1_000):
            ping.set(); pong.wait(); pong.clear()
    rate = ops_per_second(1_000, body)
    stop.set(); ping.set(); t.join()
    return rate

result = {}
result["lock_acquire_release_per_s"] = ops_per_second(100_000, lock_loop(threading.Lock()))
result["rlock_acquire_release_per_s"] = ops_per_second(100_000, lock_loop(threading.RLock()))
result["queue_put_get_per_s"] = ops_per_second(100_000, queue_put_get())
items, body = queue_two_threads()
result["queue_two_thread_items_per_s"] = ops_per_second(items, body)
with ThreadPoolExecutor(max_workers=2) as executor:
    result["executor_submit_result_per_s"] = ops_per_second(1_000, executor_submit_result(executor))
result["event_ping_pong_round_trips_per_s"] = event_ping_pong()
print(json.dumps(result))
"""#
