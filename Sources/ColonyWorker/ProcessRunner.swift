import Colony
import ColonyWire
import Foundation
import MemoryMap
import NIOCore
import Threading

/// What a worker child process is started with: its two queues, its progress word (the
/// assignment of the bundle it runs, the calls of it finished), and Python's
/// `maxtasksperchild` and `initializer`.
struct ChildSetup: Codable {
    var input: SharedMemoryQueue
    var output: SharedMemoryQueue
    var progress: SharedValue<Int>
    var maxTasks: Int?
    var initializer: String?
    var initializerArguments: WireValue

    /// Waits on the queues sleep at once: a node runs more busy processes (its children, its
    /// slot threads, often the manager) than a small machine has CPUs, and the other side of
    /// each wait is a task of unknown length, so spinning would only take the CPU it needs.
    func quiet() {
        input.spinsBeforeSleeping = false
        output.spinsBeforeSleeping = false
    }
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
    // Guarded by lock (`hand` and `abort` come from other threads).
    private var child: ChildProcess?
    private var setup: ChildSetup?
    /// The bundle the slot waits on, and the child's progress through it.
    private var current: (ids: [UInt64], progress: SharedValue<Int>)?
    /// Whether the current bundle is on the child's queue.
    private var given = false
    /// Aborts that arrived while no bundle was current (the slot was about to start one).
    private var earlyAborts: Set<UInt64> = []
    // Used only on the slot's thread.
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
        setup.quiet()
        let process = try ChildProcess(target: WorkerNode.childEntry, arguments: setup, name: "colony-worker-\(index)", daemon: true)
        try process.start()
        callsRun = 0
        lock.withLock {
            self.setup = setup
            child = process
        }
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

    /// Puts the bundle on the child's queue now if it is free (it is, on an idle slot);
    /// otherwise `run` does.
    func hand(_ bundle: [LocalAssignment]) {
        _ = try? give(bundle, waiting: false)
    }

    /// Makes `bundle` current and puts it on the child's queue; false when there is no child
    /// or, not `waiting`, its queue is not free. From here on an abort finds the bundle; one
    /// that came just before (the node had chosen this slot already) stops it now.
    private func give(_ bundle: [LocalAssignment], waiting: Bool) throws(MemoryMapError) -> Bool {
        let chosen: (setup: ChildSetup, child: ChildProcess, abortedFirst: Bool)? = lock.withLock {
            guard let setup, let child else { return nil }
            setup.progress.value = ProcessRunner.notStarted
            current = (bundle.map(\.id), setup.progress)
            given = false
            defer { earlyAborts.removeAll() }
            return (setup, child, earlyAborts.contains(bundle[0].id))
        }
        guard let chosen else { return false }
        let message = bundle.count == 1 ? bundle[0].body : ProcessRunner.bundleMessage(bundle)
        do {
            try chosen.setup.input.put(bytes: message, block: waiting)
        } catch where !waiting && error.code == .full {
            return false
        }
        lock.withLock { given = true }
        if chosen.abortedFirst { try? chosen.child.kill() }
        return true
    }

    func run(_ bundle: [LocalAssignment]) -> [WorkerReport?] {
        defer {
            lock.withLock {
                current = nil
                given = false
            }
        }
        if !lock.withLock({ given }) {
            if lock.withLock({ child?.isAlive != true }) { replaceChild(reason: "its process ended") }
            do {
                guard try give(bundle, waiting: true) else {
                    let unavailable = TaskFailure(index: 0, results: [], errorType: "WorkerProcessUnavailable", message: "no worker process", lost: true)
                    return bundle.map { _ in .failure(unavailable) }
                }
            } catch {
                let tooLarge = TaskFailure(
                    index: 0, results: [], errorType: "ChunkTooLarge",
                    message: "the assignment does not fit a worker process's queue (\(ProcessRunner.maxMessageSize) bytes): pass a smaller chunksize (\(error))")
                return bundle.map { _ in .failure(tooLarge) }
            }
        }
        let held: (setup: ChildSetup?, child: ChildProcess?) = lock.withLock { (setup, child) }
        guard let setup = held.setup, let child = held.child else { return bundle.map { _ in nil } }
        var reports: [WorkerReport?] = []
        while reports.count < bundle.count {
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
                // Reports the child finished but had not sent yet are lost with it: those
                // assignments run again as they were; the one it was running is blamed.
                let (running, finished) = ProcessRunner.position(setup.progress.value)
                let status = child.exitCode.map { $0 < 0 ? "signal \(-$0)" : "status \($0)" } ?? "unknown status"
                replaceChild(reason: "it died")
                // Died between assignments (the one it names is already reported): nobody is
                // blamed, the rest run again.
                if running >= reports.count, running < bundle.count {
                    reports += Array(repeating: nil, count: running - reports.count)
                    reports.append(.failure(TaskFailure(
                        index: finished, results: [], errorType: "WorkerProcessDied",
                        message: "the worker process running this call ended (\(status))", lost: true)))
                }
                break
            }
            guard let batch = ProcessRunner.reports(reply), reports.count + batch.count <= bundle.count else {
                replaceChild(reason: "a malformed report")
                reports.append(.failure(TaskFailure(index: 0, results: [], errorType: "WorkerProcessFailed", message: "a malformed report", lost: true)))
                break
            }
            for (report, calls) in batch {
                reports.append(report)
                callsRun += calls
            }
        }
        if let maximum = options.maxTasksPerChild, callsRun >= maximum, reports.count == bundle.count {
            try? child.join(timeout: 5)  // it exits by itself after `maximum` calls
            replaceChild(reason: "maxtasksperchild")
        }
        return reports + Array(repeating: nil, count: bundle.count - reports.count)
    }

    /// The child's progress word: the assignment of the bundle it is running (high half) and
    /// the calls of it finished (low half); `notStarted` until it takes the bundle.
    private static func position(_ progress: Int) -> (assignment: Int, finishedCalls: Int) {
        (progress >> 32, progress & 0xFFFF_FFFF)
    }

    /// The progress word of a bundle the child has not taken: if it dies now, nobody is
    /// blamed (a child that died idle is seen only when it is handed the next bundle).
    private static let notStarted = -1

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
    /// How long a finished assignment's report may wait for the next ones of its bundle.
    private static let reportDelay = Duration.milliseconds(1)

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

    /// A child's reports on its queue: their count (UInt32, big-endian), then for each a kind
    /// byte (0 result, 1 failure), the number of calls it ran and the length of the message
    /// body the node sends on as it is (UInt32s), then that body.
    private static func append(_ report: WorkerReport, calls: Int, to buffer: inout ByteBuffer) {
        var body: ByteBuffer
        let kind: UInt8
        switch report {
        case .result(let result):
            (kind, body) = (0, result.body)
        case .failure(let failure):
            (kind, body) = (1, failure.body)
        case .encoded(let frameKind, let encoded):
            (kind, body) = (frameKind == .taskResult ? 0 : 1, encoded)
        }
        buffer.writeInteger(kind)
        buffer.writeInteger(UInt32(calls))
        buffer.writeInteger(UInt32(body.readableBytes))
        buffer.writeBuffer(&body)
    }

    private static func reports(_ bytes: [UInt8]) -> [(WorkerReport, calls: Int)]? {
        var buffer = ByteBuffer(bytes: bytes)
        guard let count = buffer.readInteger(as: UInt32.self) else { return nil }
        var reports: [(WorkerReport, calls: Int)] = []
        for _ in 0..<count {
            guard let tag = buffer.readInteger(as: UInt8.self), tag <= 1, let calls = buffer.readInteger(as: UInt32.self),
                let length = buffer.readInteger(as: UInt32.self), let body = buffer.readSlice(length: Int(length))
            else { return nil }
            reports.append((.encoded(tag == 0 ? .taskResult : .taskFailure, body), Int(calls)))
        }
        return buffer.readableBytes == 0 ? reports : nil
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
        let target: ChildProcess? = lock.withLock {
            guard let current else {
                earlyAborts.insert(id)
                return nil
            }
            // Not started yet counts as running the first: the child must not start it.
            guard let index = current.ids.firstIndex(of: id), max(0, ProcessRunner.position(current.progress.value).assignment) == index else {
                return nil
            }
            return child
        }
        if let target { try? target.kill() }
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
        setup.quiet()
        if let initializer = setup.initializer { try registry.initialize(initializer, setup.initializerArguments) }
        let parent = CurrentProcess.parentPID
        var done = 0
        while true {
            guard let bytes = try ProcessRunner.nextMessage(setup.input, timeout: 1) else {
                if let parent, getppid() != parent { return }  // the node is gone
                continue
            }
            // Reports leave together unless an assignment took a while (then at once, so a
            // long bundle's early results do not wait for its end) or they would not fit.
            var pending = ReportBatch()
            var lastSent = ContinuousClock.now
            let bodies = try assignments(in: bytes)
            for (index, body) in bodies.enumerated() {
                var calls = 0
                setup.progress.store(index << 32)
                let report = WorkerReport.run(body, registry: registry) {
                    calls += 1
                    setup.progress.store(index << 32 | calls)
                }
                done += calls
                var encoded = ByteBuffer()
                append(report, calls: calls, to: &encoded)
                if pending.count > 0, pending.bytes.readableBytes + encoded.readableBytes + 4 > maxMessageSize {
                    try setup.output.put(bytes: pending.take().readableBytesView)
                }
                pending.add(&encoded)
                let now = ContinuousClock.now
                if index == bodies.count - 1 || now - lastSent > reportDelay {
                    try setup.output.put(bytes: pending.take().readableBytesView)
                    lastSent = now
                }
            }
            if let maximum = setup.maxTasks, done >= maximum { return }
        }
    }
}

/// Reports a child has encoded and not yet sent, as one queue message.
private struct ReportBatch {
    private(set) var bytes = ByteBuffer()
    private(set) var count: UInt32 = 0

    mutating func add(_ encoded: inout ByteBuffer) {
        bytes.writeBuffer(&encoded)
        count += 1
    }

    /// The message (count, then the reports); empties the batch.
    mutating func take() -> ByteBuffer {
        var message = ByteBuffer()
        message.writeInteger(count)
        message.writeBuffer(&bytes)
        self = ReportBatch()
        return message
    }
}
