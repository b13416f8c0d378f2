import CMemoryMapShim
import Colony
import ColonyTransport
import ColonyWire
import Foundation
import Glibc
import MemoryMap
import NIOCore
import NIOPosix
import Threading

/// What a worker child process is started with: its progress word (the assignment of the
/// bundle it runs, the calls of it finished), and Python's `maxtasksperchild` and
/// `initializer`. Its pipes from and to the node are `ChildProcess.firstPassedDescriptor`
/// and the one after it.
struct ChildSetup: Codable {
    var progress: SharedValue<Int>
    var maxTasks: Int?
    var initializer: String?
    var initializerArguments: WireValue
}

/// One worker process, driven from the node's event loop. The node writes it bundles of
/// assignments down one pipe and reads its reports from another on the loop that sends them
/// to the manager, with no thread in between; the loop's busy poll watches that pipe too, so
/// a short task's report is usually read without a wake-up. The end of the pipe is the end
/// of the process. The process counts finished calls in shared memory, so when it dies the
/// node knows which call was running: that call alone is blamed (one more attempt), the ones
/// before it run again as they were.
final class ProcessSlot: WorkerSlot, @unchecked Sendable {
    private let index: Int
    private let options: WorkerOptions
    private let loop: any EventLoop
    private let poller: BusyPoller
    private weak var node: WorkerNode?
    // Touched only on `loop`.
    private var running: Running?
    private var callsRun = 0
    /// Processes in a row that ended before starting any task (an initializer that throws,
    /// say): each waits longer before the next starts.
    private var barrenEnds = 0
    // Guarded by lock (`stop` comes from another thread).
    private let lock = Threading.Lock()
    private var child: ChildProcess?
    private var stopping = false

    /// The process the slot runs now, and the bundle it is running.
    private struct Running {
        let process: ChildProcess
        let progress: SharedValue<Int>
        let channel: any Channel
        var bundle: ChildBundle?
        var assignments: [LocalAssignment] = []
        /// Whether it has sent a report.
        var reported = false
    }

    /// The largest report message the node reads from a worker process; a longer one means
    /// the process is broken (it is replaced, and its bundle reported lost).
    static let maxReportSize = 1 << 30

    init(index: Int, options: WorkerOptions, loop: any EventLoop, node: WorkerNode) {
        self.index = index
        self.options = options
        self.loop = loop
        poller = BusyPoller.shared(by: loop)
        self.node = node
    }

    var bundles: Bool { options.maxTasksPerChild == nil }  // maxtasksperchild counts calls one assignment at a time

    /// Starts the first worker process; the slot is idle once it is attached.
    func start() async throws {
        let spawned = try spawn()
        try await attach(spawned).get()
    }

    // MARK: The worker process

    fileprivate struct Spawned: @unchecked Sendable {
        let process: ChildProcess
        let progress: SharedValue<Int>
        /// The node's ends of the pipes: reports come in on `input`, bundles go out on `output`.
        let input: CInt
        let output: CInt
    }

    /// A new worker process with new pipes and progress word: nothing a dead one left
    /// half-written is read again. Two pipes, not a socket pair: reading from a Unix socket
    /// wakes its writer if it sleeps on the same socket (here, the worker process waiting for
    /// its next bundle), one needless wake-up per report. Blocks for the spawn: call it off
    /// the loop.
    private func spawn() throws -> Spawned {
        var reports: [CInt] = [-1, -1]
        var bundles: [CInt] = [-1, -1]
        defer { for end in [reports[1], bundles[0]] where end >= 0 { Glibc.close(end) } }
        guard colony_pipe_cloexec(&reports) == 0, colony_pipe_cloexec(&bundles) == 0 else {
            for end in [reports[0], bundles[1]] where end >= 0 { Glibc.close(end) }
            throw TaskError("cannot make pipes for worker process \(index) (errno \(errno))")
        }
        do {
            let progress = try SharedValue<Int>(0, lock: false)
            let setup = ChildSetup(
                progress: progress, maxTasks: options.maxTasksPerChild, initializer: options.initializer,
                initializerArguments: options.initializerArguments)
            let process = try ChildProcess(target: WorkerNode.childEntry, arguments: setup, name: "colony-worker-\(index)", daemon: true)
            try process.start(passing: [bundles[0], reports[1]])
            return Spawned(process: process, progress: progress, input: reports[0], output: bundles[1])
        } catch {
            Glibc.close(reports[0])
            Glibc.close(bundles[1])
            throw error
        }
    }

    /// Hands the process's pipes to the loop; the slot takes work once they are active. A
    /// process started while the node stopped is killed instead.
    private func attach(_ spawned: Spawned) -> EventLoopFuture<Void> {
        let stopped = lock.withLock {
            if !stopping { child = spawned.process }
            return stopping
        }
        guard !stopped else {
            try? spawned.process.kill()
            Glibc.close(spawned.input)
            Glibc.close(spawned.output)
            return loop.makeFailedFuture(TaskError("the node is stopping"))
        }
        return NIOPipeBootstrap(group: loop)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ChildFrameDecoder(maxSize: ProcessSlot.maxReportSize)))
                    try channel.pipeline.syncOperations.addHandler(ChildPipeHandler(slot: self, spawned: spawned))
                }
            }
            .takingOwnershipOfDescriptors(input: spawned.input, output: spawned.output)
            .map { _ in }
    }

    /// On the loop: the process's pipes are up.
    fileprivate func attached(_ spawned: Spawned, channel: any Channel) -> Bool {
        callsRun = 0
        running = Running(process: spawned.process, progress: spawned.progress, channel: channel)
        let watched = poller.watch(descriptor: spawned.input)
        if let next = node?.next(for: self) { give(next) }
        return watched
    }

    /// Kills the process and starts another, off the loop, after `delay` seconds; `reason` goes
    /// to the log if that fails.
    private func replace(_ old: ChildProcess, reason: String, delay: Double) {
        DispatchQueue.global().async { [self] in
            if old.isAlive { try? old.kill() }
            try? old.join(timeout: 5)
            if delay > 0 { usleep(UInt32(delay * 1e6)) }
            while !lock.withLock({ stopping }) {
                do {
                    let spawned = try spawn()
                    attach(spawned).whenFailure { [self] error in
                        if !lock.withLock({ stopping }) { node?.log("cannot watch worker process \(index): \(error)") }
                        try? spawned.process.kill()
                    }
                    return
                } catch {
                    node?.log("cannot start worker process \(index) after \(reason): \(error); trying again in 1 s")
                    sleep(1)
                }
            }
        }
    }

    // MARK: Bundles

    /// On the loop: writes `bundle` to the idle process.
    func give(_ bundle: [LocalAssignment]) {
        guard loop.inEventLoop else {
            loop.execute { self.give(bundle) }
            return
        }
        guard var current = running, current.bundle == nil else {
            // Its process ended after the node chose it: another slot takes the bundle.
            node?.putBack(bundle)
            return
        }
        current.progress.store(ChildBundle.notStarted)
        current.bundle = ChildBundle(ids: bundle.map(\.id))
        current.assignments = bundle
        running = current
        current.channel.writeAndFlush(ProcessSlot.message(bundle, allocator: current.channel.allocator), promise: nil)
    }

    /// On the loop: a report message from the process.
    fileprivate func received(_ message: ByteBuffer) {
        guard var current = running else { return }
        guard var bundle = current.bundle, let reports = ProcessSlot.reports(message), let finished = bundle.reported(reports.count) else {
            node?.log("worker process \(index) sent a malformed report; replacing it")
            try? current.process.kill()
            return
        }
        for (_, calls) in reports { callsRun += calls }
        barrenEnds = 0
        current.reported = true
        let done = zip(current.assignments[finished], reports).map { ($0, $1.0) }
        let complete = bundle.isComplete
        current.bundle = complete ? nil : bundle
        if complete { current.assignments = [] }
        running = current
        node?.finish(done)
        guard complete else { return }
        // It exits by itself after `maxtasksperchild` calls: the next bundle waits for the
        // next process.
        if let maximum = options.maxTasksPerChild, callsRun >= maximum { return }
        if let next = node?.next(for: self) { give(next) }
    }

    /// On the loop: its pipe ended, so the process has (it died, was killed, or ran its
    /// `maxtasksperchild` calls). What it had not reported is answered or run again; a new
    /// process takes its place.
    fileprivate func ended(_ spawned: Spawned, watched: Bool) {
        if watched { poller.unwatch() }
        guard let current = running, current.process === spawned.process else { return }
        running = nil
        node?.leaveIdle(self)
        let stopping = lock.withLock {
            if child === spawned.process { child = nil }
            return self.stopping
        }
        if let bundle = current.bundle {
            // Its pipe closes as it exits: its status follows at once.
            try? spawned.process.join(timeout: 0.01)
            let status = spawned.process.exitCode.map { $0 < 0 ? "signal \(-$0)" : "status \($0)" } ?? "killed or crashed"
            let outcome = bundle.ended(progress: current.progress.value, status: status)
            node?.finish(outcome.answered.map { (current.assignments[$0.index], $0.report) })
            node?.putBack(outcome.unreached.map { current.assignments[$0] })
        }
        // Ended before it reported or started anything: it may never get that far.
        let started = current.reported || (current.bundle != nil && current.progress.value != ChildBundle.notStarted)
        barrenEnds = started ? 0 : barrenEnds + 1
        let delay = barrenEnds < 2 ? 0 : min(0.05 * Double(1 << min(barrenEnds, 10)), 5)
        if !stopping { replace(spawned.process, reason: current.bundle == nil ? "it ended" : "it died", delay: delay) }
    }

    /// Kills the process if it is running assignment `id` now (one queued behind it in the
    /// same bundle still runs; the manager ignores its answer).
    func abort(_ id: UInt64) {
        guard loop.inEventLoop else {
            loop.execute { self.abort(id) }
            return
        }
        guard var current = running, var bundle = current.bundle else { return }
        if bundle.abort(id, progress: current.progress.value) { try? current.process.kill() }
        current.bundle = bundle
        running = current
    }

    func stop() {
        let process: ChildProcess? = lock.withLock {
            stopping = true
            return child
        }
        if let process {
            try? process.kill()
            try? process.join(timeout: 5)
        }
    }

    // MARK: Messages

    /// The message (with its length) for `bundle`: one assignment's body as it came, or for
    /// several a marker byte MessagePack never uses (0xc1), their count, then each body with
    /// its length (UInt32s, big-endian).
    private static func message(_ bundle: [LocalAssignment], allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: bundle.reduce(13) { $0 + $1.body.readableBytes + 4 })
        buffer.writeInteger(UInt32(0))  // the length, set below
        if bundle.count == 1 {
            buffer.writeImmutableBuffer(bundle[0].body)
        } else {
            buffer.writeInteger(bundleMarker)
            buffer.writeInteger(UInt32(bundle.count))
            for assignment in bundle {
                buffer.writeInteger(UInt32(assignment.body.readableBytes))
                buffer.writeImmutableBuffer(assignment.body)
            }
        }
        buffer.setInteger(UInt32(buffer.readableBytes - 4), at: buffer.readerIndex)
        return buffer
    }

    private static let bundleMarker: UInt8 = 0xC1
    /// How long a finished assignment's report may wait for the next ones of its bundle.
    private static let reportDelay = Duration.milliseconds(1)

    /// The assignment bodies in a message from the node.
    private static func assignments(in message: [UInt8]) throws -> [ByteBuffer] {
        var buffer = ByteBuffer(bytes: message)
        guard message.first == bundleMarker else { return [buffer] }
        buffer.moveReaderIndex(forwardBy: 1)
        guard let count = buffer.readInteger(as: UInt32.self) else { throw TaskError("a malformed bundle from the node") }
        return try (0..<count).map { _ in
            guard let length = buffer.readInteger(as: UInt32.self), let body = buffer.readSlice(length: Int(length)) else {
                throw TaskError("a malformed bundle from the node")
            }
            return body
        }
    }

    /// A child's report message: the count of reports (UInt32, big-endian), then for each a
    /// kind byte (0 result, 1 failure), the number of calls it ran and the length of the
    /// message body the node sends on as it is (UInt32s), then that body.
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

    static func reports(_ message: ByteBuffer) -> [(WorkerReport, calls: Int)]? {
        var buffer = message
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

    // MARK: The worker process's side

    /// A worker child's whole life: run the initializer, then assignments until the node
    /// is gone (its pipe ends) or `maxtasksperchild` calls have run.
    static func childLoop(_ setup: ChildSetup, registry: TaskRegistry) throws {
        if let initializer = setup.initializer { try registry.initialize(initializer, setup.initializerArguments) }
        var node = NodePipes(input: ChildProcess.firstPassedDescriptor, output: ChildProcess.firstPassedDescriptor + 1)
        var done = 0
        while let bytes = try node.read() {
            // Reports leave together unless an assignment took a while (then at once, so a
            // long bundle's early results do not wait for its end).
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
                pending.add(&encoded)
                let now = ContinuousClock.now
                if index == bodies.count - 1 || now - lastSent > reportDelay {
                    guard try node.write(pending.take()) else { return }  // the node is gone
                    lastSent = now
                }
            }
            if let maximum = setup.maxTasks, done >= maximum { return }
        }
    }
}

/// One bundle a worker process runs, as the node follows it: how many of its assignments
/// have reported (they report in order), and what the rest get if the process ends first.
struct ChildBundle {
    let ids: [UInt64]
    private(set) var reportedCount = 0
    /// Assignments the manager aborted whose process was killed for it.
    private(set) var aborted: Set<UInt64> = []

    /// The progress word of a bundle the process has not taken: if it dies now, nobody is
    /// blamed.
    static let notStarted = -1

    init(ids: [UInt64]) {
        precondition(!ids.isEmpty, "a bundle holds at least one assignment")
        self.ids = ids
    }

    var isComplete: Bool { reportedCount == ids.count }

    /// `count` more assignments reported: their positions, or nil if the bundle has fewer
    /// left (a broken process).
    mutating func reported(_ count: Int) -> Range<Int>? {
        guard count >= 1, reportedCount + count <= ids.count else { return nil }
        defer { reportedCount += count }
        return reportedCount..<(reportedCount + count)
    }

    /// The manager aborted assignment `id`: whether the process must be killed for it (it is
    /// running it, or about to start with it).
    mutating func abort(_ id: UInt64, progress: Int) -> Bool {
        guard let position = ids[reportedCount...].firstIndex(of: id), max(reportedCount, ChildBundle.position(progress).assignment) == position
        else { return false }
        aborted.insert(id)
        return true
    }

    /// The process ended with `progress` in its word: the assignment it was running fails as
    /// lost (one more attempt elsewhere), an aborted one is answered cancelled, and the others
    /// not reported (not reached, or finished but not sent) run again.
    func ended(progress: Int, status: String) -> (answered: [(index: Int, report: WorkerReport)], unreached: [Int]) {
        let (running, finishedCalls) = ChildBundle.position(progress)
        var answered: [(index: Int, report: WorkerReport)] = []
        var unreached: [Int] = []
        for position in reportedCount..<ids.count {
            if aborted.contains(ids[position]) {
                answered.append((position, WorkerNode.cancelled))
            } else if position == running {
                let failure = TaskFailure(
                    index: finishedCalls, results: [], errorType: "WorkerProcessDied", message: "the worker process running this call ended (\(status))",
                    lost: true)
                answered.append((position, .failure(failure)))
            } else {
                unreached.append(position)
            }
        }
        return (answered, unreached)
    }

    /// The progress word: the assignment of the bundle the process is running (high half)
    /// and the calls of it finished (low half); `notStarted` until it takes the bundle.
    static func position(_ progress: Int) -> (assignment: Int, finishedCalls: Int) {
        progress == notStarted ? (-1, 0) : (progress >> 32, progress & 0xFFFF_FFFF)
    }
}

/// The loop's end of a worker process's pipes.
private final class ChildPipeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let slot: ProcessSlot
    private let spawned: ProcessSlot.Spawned
    private var watched = false

    init(slot: ProcessSlot, spawned: ProcessSlot.Spawned) {
        self.slot = slot
        self.spawned = spawned
    }

    func channelActive(context: ChannelHandlerContext) {
        watched = slot.attached(spawned, channel: context.channel)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        slot.received(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        slot.ended(spawned, watched: watched)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A report too long to be one, or a pipe failing: the process is replaced.
        context.close(promise: nil)
    }
}

/// Messages on a node's pipes to and from a worker process: a length (UInt32,
/// big-endian), then that many bytes.
struct ChildFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maxSize: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= maxSize else { throw TaskError("a worker process's message of \(length) bytes is over the \(maxSize)-byte limit") }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

/// The worker process's ends of its pipes to the node: blocking reads and writes of
/// length-prefixed messages.
private struct NodePipes {
    let input: CInt
    let output: CInt
    /// Bytes read and not yet taken: `buffer[start..<end]`. One buffer for the process's life
    /// (a fresh 64 KiB one per read was page faults on every message).
    private var buffer = [UInt8](repeating: 0, count: 65536)
    private var start = 0
    private var end = 0

    init(input: CInt, output: CInt) {
        self.input = input
        self.output = output
        // A write to a node that is gone fails with EPIPE instead of killing the process.
        signal(SIGPIPE, SIG_IGN)
    }

    /// The next message; nil once the node has closed its end (it is gone).
    mutating func read() throws -> [UInt8]? {
        guard let header = try take(4) else { return nil }
        return try take(header.reduce(0) { $0 << 8 | Int($1) })
    }

    private mutating func take(_ count: Int) throws -> [UInt8]? {
        var taken: [UInt8] = []
        taken.reserveCapacity(count)
        while taken.count < count {
            if start == end {
                let read = buffer.withUnsafeMutableBytes { Glibc.read(input, $0.baseAddress, $0.count) }
                if read == 0 { return nil }
                if read < 0 {
                    guard errno == EINTR else { throw TaskError("reading from the node failed (errno \(errno))") }
                    continue
                }
                (start, end) = (0, read)
            }
            let moved = min(count - taken.count, end - start)
            taken += buffer[start..<(start + moved)]
            start += moved
        }
        return taken
    }

    /// Writes `message` with its length; false once the node is gone.
    func write(_ message: ByteBuffer) throws -> Bool {
        var framed = ByteBuffer()
        framed.reserveCapacity(message.readableBytes + 4)
        framed.writeInteger(UInt32(message.readableBytes))
        framed.writeImmutableBuffer(message)
        return try framed.withUnsafeReadableBytes { raw in
            var written = 0
            while written < raw.count {
                let count = Glibc.write(output, raw.baseAddress! + written, raw.count - written)
                if count > 0 {
                    written += count
                } else if errno == EPIPE {
                    return false
                } else if errno != EINTR {
                    throw TaskError("writing to the node failed (errno \(errno))")
                }
            }
            return true
        }
    }
}

/// Reports a child has encoded and not yet sent, as one message.
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
