import Colony
import ColonyWire
import Foundation
import MemoryMap
import NIOCore
import Threading

/// How a worker node connects and runs its tasks (`colony worker`'s options).
public struct WorkerOptions: Sendable {
    public var host: String
    public var port: Int
    public var authKey: [UInt8]?
    public var trust: ManagerTrust
    public var clientCertificate: ClientCertificate?
    public var serverName = "localhost"
    /// Reach the manager over its Unix domain socket instead of host and port.
    public var unixSocketPath: String?
    /// The named pool to join.
    public var pool = WorkerHello.defaultPool
    /// Worker processes (or threads) running tasks at once.
    public var processes = cpuCount()
    /// Run tasks on threads of this process instead of child processes: no isolation (a
    /// crashing task takes the node down), no process start-up cost.
    public var useThreads = false
    /// The node's name in `colony status`.
    public var node = "\(ProcessInfo.processInfo.hostName)-\(getpid())"
    public var heartbeat: Duration = .seconds(5)
    /// Assignments held per process: one running, the rest waiting here instead of a round
    /// trip away. The manager fills every node's processes before any node's prefetch, and
    /// uses more than one prefetch place per process only while the node's assignments are
    /// quick (`PoolSettings.quickAssignment`). Measured with 2 processes and one-call
    /// assignments (apply_async, in one run): 8 gave 23-25k calls/s, 64 gave 50-64k.
    public var prefetch = 64
    /// Python's `maxtasksperchild`: a child process is replaced after running this many calls.
    public var maxTasksPerChild: Int?
    /// Python's `initializer` and `initargs`: a registered initializer run once in each
    /// worker process (or thread) before its first task.
    public var initializer: String?
    public var initializerArguments: WireValue = .null
    public var busyPoll: Duration = .microseconds(200)

    public init(host: String = "127.0.0.1", port: Int, authKey: [UInt8]? = nil, trust: ManagerTrust) {
        self.host = host
        self.port = port
        self.authKey = authKey
        self.trust = trust
    }
}

/// A worker node: one connection to a manager and N worker processes (or threads) that run
/// the pool's assignments. It joins the pool live, reports results and failures, sends
/// heartbeats, stops on SIGINT/SIGTERM after finishing what it holds (`drain`), and when the
/// manager goes away, connects again with backoff and is given fresh work.
public final class WorkerNode: @unchecked Sendable {
    public let options: WorkerOptions
    let registry: TaskRegistry
    private let work = Threading.Queue<WorkItem>()
    private let lock = Threading.Lock()
    // Guarded by lock.
    private var slots: [WorkerSlot] = []
    private var running: [UInt64: WorkerSlot] = [:]
    private var aborted: Set<UInt64> = []
    /// Assignments received and not yet answered (queued here or running).
    private var outstanding = 0
    private var link: WorkerLink?
    private var draining = false
    /// The manager acknowledged this node's drain on the current link: it sends no more
    /// assignments after that frame.
    private var drainAcknowledged = false
    private var stopped = false
    private let drained = Threading.Event()

    /// The child-process entry point every worker process runs.
    static let childEntry = "colony.pool.process"

    public init(options: WorkerOptions, registry: TaskRegistry) throws {
        guard options.processes >= 1, options.processes <= 4096 else {
            throw TaskError("a worker runs 1 to 4096 processes or threads, not \(options.processes)")
        }
        guard options.prefetch >= 1, options.prefetch <= 256 else { throw TaskError("prefetch must be between 1 and 256, not \(options.prefetch)") }
        if let maximum = options.maxTasksPerChild, maximum < 1 {
            throw TaskError("maxtasksperchild must be at least 1, not \(maximum)")
        }
        self.options = options
        self.registry = registry
    }

    /// Call at the start of a worker program's `main`, after building `registry` and before
    /// anything else: in a worker child process it runs the child's loop and exits; in the
    /// node itself it returns at once. (Child processes are this program started again.)
    public static func bootstrap(registry: TaskRegistry) throws {
        ChildProcess.register(childEntry) { (setup: ChildSetup) in try ProcessRunner.childLoop(setup, registry: registry) }
        try ChildProcess.bootstrap()
    }

    /// Runs until drained (SIGINT, SIGTERM or `drain()`), reconnecting when the manager goes
    /// away.
    public func run() async throws {
        try startSlots()
        defer { stopSlots() }
        var backoff = 0.1
        while !isDraining {
            let holder = LinkHolder()
            let link: WorkerLink
            do {
                link = try await WorkerLink.connect(
                    host: options.host, port: options.port, authKey: options.authKey, trust: options.trust,
                    clientCertificate: options.clientCertificate, serverName: options.serverName, busyPoll: options.busyPoll,
                    unixSocketPath: options.unixSocketPath
                ) { [weak self] message in self?.received(message, holder) }
            } catch {
                log("cannot reach the manager at \(options.unixSocketPath.map { "unix:" + $0 } ?? "\(options.host):\(options.port)") (\(error)); trying again in \(backoff) s")
                try await Task.sleep(for: .seconds(backoff))
                backoff = min(backoff * 2, 5)
                continue
            }
            backoff = 0.1
            holder.link = link
            lock.withLock {
                self.link = link
                drainAcknowledged = false
            }
            link.send(hello)
            let heartbeats = Task { [options] in
                while !Task.isCancelled, link.isConnected {
                    try? await Task.sleep(for: options.heartbeat)
                    link.send(Heartbeat(busy: self.busy, capacity: self.capacity))
                }
            }
            if isDraining { link.send(Drain(reason: "the node is stopping")) }
            await link.closed()
            heartbeats.cancel()
            lock.withLock { self.link = nil }
            // What was queued here came from the lost session: the manager runs it again.
            dropQueuedWork(of: link)
            if !isDraining {
                log("lost the connection to the manager; reconnecting")
                try await Task.sleep(for: .seconds(backoff))
            }
        }
    }

    /// Stops taking work, finishes the assignments held, says goodbye; `run` then returns.
    public func drain() {
        let current: WorkerLink? = lock.withLock {
            guard !draining else { return nil }
            draining = true
            return link
        }
        guard let current else { return }
        current.send(Drain(reason: "the node is stopping"))
        Task {
            // Assignments sent before the manager saw the drain may still be on the way: wait
            // for its acknowledgement (up to 10 s, for a manager that does not send one), then
            // for every answer.
            let deadline = ContinuousClock.now + .seconds(10)
            while !lock.withLock({ drainAcknowledged }), ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            while busy > 0 { try? await Task.sleep(for: .milliseconds(20)) }
            await current.close()
        }
    }

    private var isDraining: Bool { lock.withLock { draining } }
    private var capacity: Int { options.processes * options.prefetch }
    private var busy: Int { lock.withLock { outstanding } }

    private var hello: WorkerHello {
        WorkerHello(
            node: options.node, capacity: capacity, tasks: registry.names, pid: Int(getpid()), pool: options.pool,
            processes: options.processes, heartbeatSeconds: Double(options.heartbeat.components.seconds)
                + Double(options.heartbeat.components.attoseconds) / 1e18)
    }

    // MARK: Frames from the manager

    private func received(_ message: Message, _ holder: LinkHolder) {
        guard let link = holder.link else { return }
        do {
            switch message.kind {
            case .taskAssign:
                // Decoded by whoever runs it (a slot thread, or the worker process itself), not
                // on the connection's event loop.
                lock.withLock { outstanding += 1 }
                try work.put(.assignment(LocalAssignment(id: message.requestID, body: Array(message.body.readableBytesView), link: link)))
            case .cancel:
                abort(message.requestID)
            case .drain:
                // The manager's acknowledgement of our drain, or its own order to drain: either
                // way no assignment follows this frame.
                lock.withLock { drainAcknowledged = true }
                drain()
            case .error:
                log("the manager refused: \(try RemoteError(wireValue: message.value()))")
            default:
                break
            }
        } catch {
            log("a malformed \(message.kind) frame from the manager: \(error)")
        }
    }

    /// The manager cancelled an assignment: skip it if queued, stop it if running.
    private func abort(_ id: UInt64) {
        let slot: WorkerSlot? = lock.withLock {
            if let slot = running[id] { return slot }
            aborted.insert(id)
            return nil
        }
        slot?.runner.abort(id)
    }

    private func dropQueuedWork(of link: WorkerLink) {
        var kept: [WorkItem] = []
        while let item = try? work.getNowait() {
            if case .assignment(let assignment) = item, assignment.link === link {
                lock.withLock { outstanding -= 1 }
                continue
            }
            kept.append(item)
        }
        for item in kept { try? work.put(item) }
    }

    // MARK: Slots

    private func startSlots() throws {
        let made: [WorkerSlot] = (0..<options.processes).map { index in
            let runner: any AssignmentRunner =
                options.useThreads
                ? ThreadRunner(registry: registry, options: options) : ProcessRunner(index: index, options: options, log: log)
            return WorkerSlot(index: index, runner: runner, node: self)
        }
        lock.withLock { slots = made }
        for slot in made { try slot.start() }
    }

    private func stopSlots() {
        let all = lock.withLock { slots }
        for _ in all { try? work.put(.stop) }
        for slot in all { slot.stop() }
    }

    /// The most assignments, and bytes of them, a worker process is handed at once. Only
    /// small assignments are bundled: a bundle of large chunks would keep the node's other
    /// processes idle while one runs them all (a 100,000-call map's 8 chunks went to one).
    static let maxBundle = 64
    static let maxBundleBytes = 16 << 10

    /// A slot's loop: takes assignments until told to stop. A process slot takes whatever
    /// else is queued with the first (a bundle): one wake of the worker process for many small
    /// assignments, which is what one-call assignments (apply_async, imap with chunksize 1)
    /// cost most.
    func serve(_ slot: WorkerSlot) {
        while case .assignment(let first)? = try? work.get() {
            var bundle = [first]
            var bytes = first.body.count
            while slot.runner.bundles, bundle.count < WorkerNode.maxBundle, bytes < WorkerNode.maxBundleBytes, let item = try? work.getNowait() {
                guard case .assignment(let next) = item else {
                    try? work.put(item)  // a stop: for whichever slot takes it next
                    break
                }
                bundle.append(next)
                bytes += next.body.count
            }
            var runnable: [LocalAssignment] = []
            for assignment in bundle {
                if lock.withLock({ aborted.remove(assignment.id) != nil }) {
                    finish([(assignment, .failure(TaskFailure(index: 0, results: [], errorType: "Cancelled", message: "aborted by the manager", lost: true)))])
                } else {
                    runnable.append(assignment)
                }
            }
            guard !runnable.isEmpty else { continue }
            lock.withLock { for assignment in runnable { running[assignment.id] = slot } }
            var done: [(LocalAssignment, WorkerReport)] = []
            for (assignment, report) in zip(runnable, slot.runner.run(runnable)) {
                guard let report else {
                    // Not reached before its worker process died: it runs on the next one.
                    lock.withLock { _ = running.removeValue(forKey: assignment.id) }
                    try? work.put(.assignment(assignment))
                    continue
                }
                done.append((assignment, report))
            }
            finish(done)
        }
    }

    /// Sends the reports of assignments run together, in one write per connection. Only then
    /// are they done: a drain that sees the node idle must find every report already on the
    /// way (the goodbye queues behind them).
    private func finish(_ done: [(LocalAssignment, WorkerReport)]) {
        var link: WorkerLink?
        var messages: [Message] = []
        for (assignment, report) in done {
            if let current = link, current !== assignment.link {
                current.send(encoded: messages)
                messages.removeAll()
            }
            link = assignment.link
            messages.append(report.message(requestID: assignment.id))
        }
        if let link, !messages.isEmpty { link.send(encoded: messages) }
        lock.withLock {
            for (assignment, _) in done { running.removeValue(forKey: assignment.id) }
            outstanding -= done.count
        }
    }

    @Sendable func log(_ text: String) {
        FileHandle.standardError.write(Data("colony worker \(options.node): \(text)\n".utf8))
    }
}

/// The link an incoming frame arrived on (set once the handshake is done).
final class LinkHolder: @unchecked Sendable {
    var link: WorkerLink?
}

enum WorkItem {
    case assignment(LocalAssignment)
    /// One slot stops.
    case stop
}

struct LocalAssignment {
    let id: UInt64
    /// The task-assign message's body, as the manager encoded it.
    let body: [UInt8]
    let link: WorkerLink

}

/// What running an assignment gave.
enum WorkerReport {
    case result(TaskResult)
    case failure(TaskFailure)
    /// A task-result or task-failure body a worker process encoded, passed on as it is.
    case encoded(FrameKind, ByteBuffer)

    /// The report as the message the manager gets for assignment `requestID`.
    func message(requestID: UInt64) -> Message {
        switch self {
        case .result(let result): Message(kind: TaskResult.kind, requestID: requestID, body: result.body)
        case .failure(let failure): Message(kind: TaskFailure.kind, requestID: requestID, body: failure.body)
        case .encoded(let kind, let body): Message(kind: kind, requestID: requestID, body: body)
        }
    }

    /// Runs an encoded assignment (a decoding failure fails its first call).
    static func run(_ assignment: [UInt8], registry: TaskRegistry, afterEach: () -> Void = {}) -> WorkerReport {
        do {
            return run(try TaskAssignment(body: ByteBuffer(bytes: assignment)), registry: registry, afterEach: afterEach)
        } catch {
            return .failure(TaskFailure(index: 0, results: [], errorType: "MalformedAssignment", message: "\(error)"))
        }
    }

    /// Runs every call of an assignment in order, stopping at the first that throws.
    static func run(_ assignment: TaskAssignment, registry: TaskRegistry, afterEach: () -> Void = {}) -> WorkerReport {
        var results: [WireValue] = []
        results.reserveCapacity(assignment.calls.count)
        let body: TaskRegistry.Body
        do {
            body = try registry.body(of: assignment.task)
        } catch {
            return .failure(TaskFailure(index: 0, results: [], errorType: String(describing: type(of: error)), message: "\(error)"))
        }
        for index in 0..<assignment.calls.count {
            do {
                results.append(try body(assignment.arguments(index)))
            } catch {
                return .failure(TaskFailure(index: index, results: results, errorType: String(describing: type(of: error)), message: "\(error)"))
            }
            afterEach()
        }
        return .result(TaskResult(results: results))
    }
}

/// What runs a slot's assignments: tasks on the slot's own thread, or in a child process.
protocol AssignmentRunner: AnyObject, Sendable {
    /// Runs once on the slot's thread before its first assignment.
    func prepare() throws
    /// Whether `run` takes several assignments at once.
    var bundles: Bool { get }
    /// Runs the assignments in order; a report for each, or nil for those not reached
    /// (their worker process died before them: they run again on the next one).
    func run(_ bundle: [LocalAssignment]) -> [WorkerReport?]
    /// Stops assignment `id` if it is running now and this kind of runner can.
    func abort(_ id: UInt64)
    /// The node is stopping.
    func shutdown()
}

/// One place that runs assignments, on a thread of its own.
final class WorkerSlot: @unchecked Sendable {
    let runner: any AssignmentRunner
    private let thread: Threading.Thread

    init(index: Int, runner: any AssignmentRunner, node: WorkerNode) {
        self.runner = runner
        let box = SlotBox()
        thread = Threading.Thread(name: "colony-worker-\(index)", daemon: true) {
            guard let slot = box.slot else { return }
            do {
                try runner.prepare()
            } catch {
                node.log("worker \(index) could not start: \(error)")
            }
            node.serve(slot)
        }
        box.slot = self
    }

    func start() throws { try thread.start() }

    func stop() {
        _ = try? thread.join(timeout: 5)
        runner.shutdown()
    }
}

private final class SlotBox: @unchecked Sendable {
    weak var slot: WorkerSlot?
}

/// Runs tasks on the slot's own thread (`--threads`): no isolation, no start-up cost.
final class ThreadRunner: AssignmentRunner, @unchecked Sendable {
    private let registry: TaskRegistry
    private let options: WorkerOptions

    init(registry: TaskRegistry, options: WorkerOptions) {
        self.registry = registry
        self.options = options
    }

    func prepare() throws {
        if let initializer = options.initializer { try registry.initialize(initializer, options.initializerArguments) }
    }

    var bundles: Bool { false }

    func run(_ bundle: [LocalAssignment]) -> [WorkerReport?] {
        bundle.map { WorkerReport.run($0.body, registry: registry) }
    }

    func abort(_ id: UInt64) {}
    func shutdown() {}
}
