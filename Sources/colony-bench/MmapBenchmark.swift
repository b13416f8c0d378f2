import ArgumentParser
import CMemoryMapShim
import Colony
import Glibc

/// `colony-bench mmap`: memory maps against plain memcpy, and the shared-memory queue and
/// locked Value between processes, each next to CPython's same loop in the same run.
struct MmapBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmap",
        abstract: "mmap read/write vs memcpy; shared-memory queue and locked Value between two processes; compared with CPython.")

    @Option(help: "Bytes per copy for the mmap and memcpy figures.")
    var megabytes = 64

    @Option(help: "Seconds per copy figure.")
    var seconds = 1.0

    @Option(help: "64-byte messages from the producer process to the consumer process.")
    var messages = 1_000_000

    @Option(help: "Locked increments per process (two processes).")
    var increments = 1_000_000

    @Flag(help: "Skip the CPython reference run.")
    var noCompare = false

    func validate() throws {
        guard megabytes >= 1, megabytes <= 4096 else { throw ValidationError("--megabytes must be 1...4096") }
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
        guard messages >= 1000, increments >= 1000 else { throw ValidationError("--messages and --increments must be at least 1000") }
    }

    static func registerEntryPoints() {
        ChildProcess.register("bench-produce", QueueRun.produce)
        ChildProcess.register("bench-consume", QueueRun.consume)
        ChildProcess.register("bench-increment", IncrementRun.increment)
    }

    func run() throws {
        let size = megabytes << 20
        var colony: [String: Double] = [:]
        let (write, read, copy) = try copyFigures(size: size)
        colony["mmap_write_gib_per_s"] = write
        colony["mmap_read_gib_per_s"] = read
        colony["memcpy_gib_per_s"] = copy
        colony["shared_queue_msgs_per_s"] = try QueueRun.measure(messages: messages)
        colony["shared_value_locked_increments_per_s"] = try IncrementRun.measure(increments: increments)
        var report: [String: Any] = [
            "benchmark": "mmap",
            "parameters": ["bytes": size, "seconds_per_copy_figure": seconds, "messages": messages, "message_bytes": 64,
                           "increments_per_process": increments, "processes": 2],
            "mmap_vs_memcpy": ["write": write / copy, "read": read / copy],
        ]
        for (key, value) in colony { report[key] = value }
        if !noCompare {
            let arguments = [String(size), String(seconds), String(messages), String(increments)]
            addCPython(runPythonReference(script: MmapBench.pythonScript, arguments: arguments), ours: colony, to: &report)
        }
        print(jsonLine(report))
    }

    /// GiB/s writing a heap buffer into a shared map, reading the map into a heap buffer, and
    /// plain memcpy between two heap buffers of the same size.
    func copyFigures(size: Int) throws -> (write: Double, read: Double, copy: Double) {
        let source = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        memset(source, 0x5a, size)
        memset(destination, 0, size)
        let map = try MemoryMap(anonymousLength: size)
        func gibPerSecond(_ body: () throws -> Void) rethrows -> Double {
            try opsPerSecond(seconds: seconds, batch: 1, body) * Double(size) / Double(1 << 30)
        }
        let write = try gibPerSecond {
            try map.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: source, byteCount: size) }
        }
        let read = try gibPerSecond {
            try map.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress!, byteCount: size) }
        }
        let copy = gibPerSecond { destination.copyMemory(from: source, byteCount: size) }
        return (write, read, copy)
    }

    enum QueueRun {
        struct Job: Codable {
            var queue: SharedMemoryQueue
            var messages: Int
            var times: SharedArray<UInt64>  // consumer's first and last message, in ns
        }

        static func measure(messages: Int) throws -> Double {
            let job = Job(
                queue: try SharedMemoryQueue(capacity: 4096, maxMessageSize: 64), messages: messages,
                times: try SharedArray<UInt64>(repeating: 0, count: 2, lock: false))
            let consumer = try ChildProcess(target: "bench-consume", arguments: job)
            let producer = try ChildProcess(target: "bench-produce", arguments: job)
            try consumer.start()
            try producer.start()
            try producer.join()
            try consumer.join()
            guard consumer.exitCode == 0, producer.exitCode == 0 else { throw ValidationError("a queue benchmark process failed") }
            let times = job.times.copy()
            return Double(messages) / (Double(times[1] - times[0]) / 1e9)
        }

        static func produce(_ job: Job) throws {
            let message = [UInt8](repeating: 0x78, count: 64)
            for _ in 0..<job.messages { try job.queue.put(bytes: message) }
        }

        static func consume(_ job: Job) throws {
            _ = try job.queue.getBytes()
            try job.times.set(0, colony_monotonic_ns())
            for _ in 1..<job.messages { _ = try job.queue.getBytes() }
            try job.times.set(1, colony_monotonic_ns())
        }
    }

    enum IncrementRun {
        struct Job: Codable {
            var value: SharedValue<Int>
            var increments: Int
            var times: SharedArray<UInt64>  // [start, end] per process
            var slot: Int
        }

        static func measure(increments: Int) throws -> Double {
            let value = try SharedValue<Int>(0)
            let times = try SharedArray<UInt64>(repeating: 0, count: 4, lock: false)
            let workers = try (0..<2).map { slot in
                try ChildProcess(target: "bench-increment", arguments: Job(value: value, increments: increments, times: times, slot: slot))
            }
            for worker in workers { try worker.start() }
            for worker in workers { try worker.join() }
            guard value.value == 2 * increments else { throw ValidationError("lost increments: \(value.value) of \(2 * increments)") }
            let stamps = times.copy()
            let elapsed = max(stamps[1], stamps[3]) - min(stamps[0], stamps[2])
            return Double(2 * increments) / (Double(elapsed) / 1e9)
        }

        /// Python's `with v.get_lock(): v.value += 1`.
        static func increment(_ job: Job) throws {
            let lock = job.value.getLock() as! ProcessRLock  // made with its own RLock above
            try job.times.set(2 * job.slot, colony_monotonic_ns())
            for _ in 0..<job.increments {
                _ = try lock.acquire()
                job.value.unlockedValue += 1
                try lock.release()
            }
            try job.times.set(2 * job.slot + 1, colony_monotonic_ns())
        }
    }

    static let pythonScript = #"""
import json, mmap, sys, time
import multiprocessing as mp

size, seconds, messages, increments = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def gib_per_s(body):
    body()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        body()
        count += 1
    return count * size / (time.perf_counter() - start) / (1 << 30)

def produce(q, n):
    message = b"x" * 64
    for _ in range(n):
        q.put(message)

def consume(q, n, times):
    q.get()
    times[0] = time.perf_counter()
    for _ in range(n - 1):
        q.get()
    times[1] = time.perf_counter()

def increment(v, n, times, slot):
    times[2 * slot] = time.perf_counter()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    times[2 * slot + 1] = time.perf_counter()

if __name__ == "__main__":
    data = b"\x5a" * size
    m = mmap.mmap(-1, size)
    m[:] = data
    write = gib_per_s(lambda: m.__setitem__(slice(0, size), data))
    read = gib_per_s(lambda: m[:])
    q = mp.Queue()
    times = mp.Array("d", 2, lock=False)
    consumer = mp.Process(target=consume, args=(q, messages, times))
    producer = mp.Process(target=produce, args=(q, messages))
    consumer.start(); producer.start(); producer.join(); consumer.join()
    queue_rate = messages / (times[1] - times[0])
    v = mp.Value("i", 0)
    stamps = mp.Array("d", 4, lock=False)
    workers = [mp.Process(target=increment, args=(v, increments, stamps, slot)) for slot in range(2)]
    for w in workers: w.start()
    for w in workers: w.join()
    elapsed = max(stamps[1], stamps[3]) - min(stamps[0], stamps[2])
    print(json.dumps({
        "mmap_write_gib_per_s": write, "mmap_read_gib_per_s": read,
        "shared_queue_msgs_per_s": queue_rate,
        "shared_value_locked_increments_per_s": 2 * increments / elapsed,
        "value_correct": v.value == 2 * increments,
    }))
"""#
}
