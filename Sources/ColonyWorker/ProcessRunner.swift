import Colony
import ColonyWire
import Foundation
import MemoryMap
import NIOCore
import Threading

/// What a worker child process is started with: its two queues, the counter of calls it has
/// finished in the current assignment, and Python's `maxtasksperchild` and `initializer`.
struct ChildSetup: Codable {
    var input: SharedMemoryQueue
    var output: SharedMemoryQueue
    var progress: SharedValue<Int>
    var maxTasks: Int?
    var initializer: String?
    var initializerArguments: WireValue
}

/// Runs a slot's assignments in a child process (this program started again, as
/// `ChildProcess` does), fed through shared-memory queues. The child counts finished calls in
/// shared memory, so when it dies the node knows which call was running: that call alone is
/// blamed (one more attempt), the ones before it run again as they were.
final class ProcessRunner: AssignmentRunner, @unchecked Sendable {
    private let index: Int
    private let options: WorkerOptions
    private let log: @Sendable (String) -> Void
    private let lock = Threading.Lock()
    // Guarded by lock (abort comes from another thread).
    private var child: ChildProcess?
    /// The assignment whose report the slot waits for.
    private var current: UInt64?
    // Used only on the slot's thread.
    private var setup: ChildSetup?
    private var callsRun = 0

    /// The largest assignment or report a queue slot holds; larger chunks fail with a clear
    /// error (pass a smaller chunksize).
    static let maxMessageSize = 8 << 20

    init(index: Int, options: WorkerOptions, log: @escaping @Sendable (String) -> Void) {
        self.index = index
        self.options = options
        self.log = log
    }

    func prepare() throws { try startChild() }

    /// A new child with new queues: nothing a dead child left half-written is read again.
    private func startChild() throws {
        let setup = ChildSetup(
            input: try SharedMemoryQueue(capacity: 1, maxMessageSize: ProcessRunner.maxMessageSize),
            output: try SharedMemoryQueue(capacity: 1, maxMessageSize: ProcessRunner.maxMessageSize),
            progress: try SharedValue<Int>(0, lock: false), maxTasks: options.maxTasksPerChild, initializer: options.initializer,
            initializerArguments: options.initializerArguments)
        let process = try ChildProcess(target: WorkerNode.childEntry, arguments: setup, name: "colony-worker-\(index)", daemon: true)
        try process.start()
        self.setup = setup
        callsRun = 0
        lock.withLock { child = process }
    }

    private func replaceChild(reason: String) {
        let old = lock.withLock { child }
        if let old, old.isAlive { try? old.kill() }
        try? old?.join(timeout: 5)
        do {
            try startChild()
        } catch {
            log("cannot start worker process \(index) after \(reason): \(error)")
        }
    }

    var bundles: Bool { options.maxTasksPerChild == nil }  // maxtasksperchild counts calls one assignment at a time

    func run(_ bundle: [LocalAssignment]) -> [WorkerReport?] {
        if lock.withLock({ child?.isAlive != true }) { replaceChild(reason: "its process ended") }
        guard let setup, let child = lock.withLock({ child }) else {
            let unavailable = TaskFailure(index: 0, results: [], errorType: "WorkerProcessUnavailable", message: "no worker process", lost: true)
            return bundle.map { _ in .failure(unavailable) }
        }
        do {
            setup.progress.value = 0
            try setup.input.put(bytes: bundle.count == 1 ? bundle[0].body : ProcessRunner.bundleMessage(bundle))
        } catch {
            let tooLarge = TaskFailure(
                index: 0, results: [], errorType: "ChunkTooLarge",
                message: "the assignment does not fit a worker process's queue (\(ProcessRunner.maxMessageSize) bytes): pass a smaller chunksize (\(error))")
            return bundle.map { _ in .failure(tooLarge) }
        }
        var reports: [WorkerReport?] = []
        while reports.count < bundle.count {
            lock.withLock { current = bundle[reports.count].id }
            let reply: [UInt8]?
            do {
                reply = try ProcessRunner.nextMessage(setup.output, timeout: 0.05)
            } catch {
                replaceChild(reason: "a broken queue")
                reports.append(.failure(TaskFailure(index: 0, results: [], errorType: "WorkerProcessFailed", message: "\(error)", lost: true)))
                break
            }
            guard let reply else {
                guard !child.isAlive else { continue }
                let finished = setup.progress.value
                let status = child.exitCode.map { $0 < 0 ? "signal \(-$0)" : "status \($0)" } ?? "unknown status"
                replaceChild(reason: "it died")
                reports.append(.failure(TaskFailure(
                    index: finished, results: [], errorType: "WorkerProcessDied",
                    message: "the worker process running this call ended (\(status))", lost: true)))
                break
            }
            guard let (report, calls) = ProcessRunner.report(reply) else {
                replaceChild(reason: "a malformed report")
                reports.append(.failure(TaskFailure(index: 0, results: [], errorType: "WorkerProcessFailed", message: "a malformed report", lost: true)))
                break
            }
            reports.append(report)
            callsRun += calls
        }
        lock.withLock { current = nil }
        if let maximum = options.maxTasksPerChild, callsRun >= maximum, reports.count == bundle.count {
            try? child.join(timeout: 5)  // it exits by itself after `maximum` calls
            replaceChild(reason: "maxtasksperchild")
        }
        return reports + Array(repeating: nil, count: bundle.count - reports.count)
    }

    /// Several assignments for one message: a marker byte MessagePack never uses (0xc1),
    /// their count, then each body with its length (UInt32s, big-endian).
    private static func bundleMessage(_ bundle: [LocalAssignment]) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(bundleMarker)
        buffer.writeInteger(UInt32(bundle.count))
        for assignment in bundle {
            buffer.writeInteger(UInt32(assignment.body.count))
            buffer.writeBytes(assignment.body)
        }
        return Array(buffer.readableBytesView)
    }

    private static let bundleMarker: UInt8 = 0xC1

    /// The assignment bodies in a message from the node.
    private static func assignments(in message: [UInt8]) throws -> [[UInt8]] {
        guard message.first == bundleMarker else { return [message] }
        var buffer = ByteBuffer(bytes: message.dropFirst())
        guard let count = buffer.readInteger(as: UInt32.self) else { throw TaskError("a malformed bundle from the node") }
        return try (0..<count).map { _ in
            guard let length = buffer.readInteger(as: UInt32.self), let body = buffer.readBytes(length: Int(length)) else {
                throw TaskError("a malformed bundle from the node")
            }
            return body
        }
    }

    /// A child's report on its queue: a kind byte (0 result, 1 failure), the number of
    /// calls it ran (UInt32, big-endian), then the message body the node sends on as it is.
    private static func encode(_ report: WorkerReport, calls: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        switch report {
        case .result(let result):
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(UInt32(calls))
            _ = buffer.writeWireValue(result.wireValue)
        case .failure(let failure):
            buffer.writeInteger(UInt8(1))
            buffer.writeInteger(UInt32(calls))
            _ = buffer.writeWireValue(failure.wireValue)
        case .encoded(let kind, var body):
            buffer.writeInteger(UInt8(kind == .taskResult ? 0 : 1))
            buffer.writeInteger(UInt32(calls))
            buffer.writeBuffer(&body)
        }
        return buffer
    }

    private static func report(_ bytes: [UInt8]) -> (WorkerReport, calls: Int)? {
        var buffer = ByteBuffer(bytes: bytes)
        guard let tag = buffer.readInteger(as: UInt8.self), tag <= 1, let calls = buffer.readInteger(as: UInt32.self) else { return nil }
        return (.encoded(tag == 0 ? .taskResult : .taskFailure, buffer), Int(calls))
    }

    /// The next message of `queue`, or nil if none arrives within `timeout` seconds.
    private static func nextMessage(_ queue: SharedMemoryQueue, timeout: Double) throws(MemoryMapError) -> [UInt8]? {
        do {
            return try queue.getBytes(timeout: timeout)
        } catch where error.code == .empty {
            return nil
        }
    }

    /// Kills the worker process if it is running assignment `id` now (one queued behind it
    /// in the same bundle still runs; the manager ignores its answer).
    func abort(_ id: UInt64) {
        if let child = lock.withLock({ current == id ? child : nil }) { try? child.kill() }
    }

    func shutdown() {
        if let child = lock.withLock({ child }) {
            try? child.kill()
            try? child.join(timeout: 5)
        }
    }

    /// A worker child's whole life: run the initializer, then assignments until the node
    /// is gone or `maxtasksperchild` calls have run.
    static func childLoop(_ setup: ChildSetup, registry: TaskRegistry) throws {
        if let initializer = setup.initializer { try registry.initialize(initializer, setup.initializerArguments) }
        let parent = CurrentProcess.parentPID
        var done = 0
        while true {
            guard let bytes = try ProcessRunner.nextMessage(setup.input, timeout: 1) else {
                if let parent, getppid() != parent { return }  // the node is gone
                continue
            }
            for body in try assignments(in: bytes) {
                var calls = 0
                setup.progress.value = 0
                let report = WorkerReport.run(body, registry: registry) {
                    calls += 1
                    _ = setup.progress.add(1)
                }
                try setup.output.put(bytes: encode(report, calls: calls).readableBytesView)
                done += calls
            }
            if let maximum = setup.maxTasks, done >= maximum { return }
        }
    }
}
