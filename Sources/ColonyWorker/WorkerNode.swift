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
    private let lock = Threading.Lock()
    // Guarded by lock.
    private var slots: [any WorkerSlot] = []
    /// Slots with nothing to run.
    private var idleSlots: [any WorkerSlot] = []
    /// Assignments no slot has taken yet.
    private var waiting = WaitingLine<LocalAssignment>()
    private var running: [UInt64: any WorkerSlot] = [:]
    /// Assignments received and not yet answered (waiting here or running).
    private var outstanding = 0
    private var link: WorkerLink?
    private var draining = false
    /// The manager acknowledged this node's drain on the current link: it sends no more
    /// assignments after that frame.
    private var drainAcknowledged = false
    private var stopping = false

    /// The child-process entry point every worker process runs.
    static let childEntry = "colony.pool.process"

    /// The loop of the node's connection and of its worker processes' pipes: a report is read
    /// and sent on to the manager in one go.
    private let loop: any EventLoop = Manager.defaultEventLoopGroup.next()

    public init(options: WorkerOptions, registry: TaskRegistry) throws {
        guard options.processes >= 1, options.processes <= 4096 else {
            throw TaskError("a worker runs 1 to 4096 processes or threads, not \(options.processes)")
        }
        guard options.prefetch >= 1, options.prefetch <= 256 else { throw TaskError("prefetch must be between 1 and 256, not \(options.prefetch)") }
        if let maximum = options.maxTasksPerChild, maximum < 1 {
            throw TaskError("maxtasksperchild must be at least 1, not \(maximum)")
        }
        if let initializer = options.initializer, registry.initializers[initializer] == nil {
            let known = registry.initializers.keys.sorted()
            throw TaskError(
                "this worker has no initializer named '\(initializer)'"
                    + (known.isEmpty ? "; register one with TaskRegistry.registerInitializer" : " (it has \(known.joined(separator: ", ")))"))
        }
        self.options = options
        self.registry = registry
    }

    /// Call at the start of a worker program's `main`, after building `registry` and before
    /// anything else: in a worker child process it runs the child's loop and exits; in the
    /// node itself it returns at once. (Child processes are this program started again.)
    public static func bootstrap(registry: TaskRegistry) throws {
        ChildProcess.register(childEntry) { (setup: ChildSetup) in try ProcessSlot.childLoop(setup, registry: registry) }
        try ChildProcess.bootstrap()
    }

    /// Runs until drained (SIGINT, SIGTERM or `drain()`), reconnecting when the manager goes
    /// away.
    public func run() async throws {
        try await startSlots()
        defer { stopSlots() }
        var backoff = 0.1
        while !isDraining {
            let holder = LinkHolder()
            let link: WorkerLink
            do {
                link = try await WorkerLink.connect(
                    host: options.host, port: options.port, authKey: options.authKey, trust: options.trust,
                    clientCertificate: options.clientCertificate, serverName: options.serverName, eventLoopGroup: loop,
                    busyPoll: options.busyPoll, unixSocketPath: options.unixSocketPath
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
                // Decoded by whoever runs it (the worker process, or a thread slot), not on the
                // connection's event loop.
                accept(LocalAssignment(id: message.requestID, body: message.body, link: link))
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

    /// The manager cancelled an assignment: stop it if running, answer it as cancelled if it
    /// is still waiting here.
    private func abort(_ id: UInt64) {
        let (slot, unstarted): ((any WorkerSlot)?, LocalAssignment?) = lock.withLock {
            if let slot = running[id] { return (slot, nil) }
            return (nil, waiting.removeFirst { $0.id == id })
        }
        if let unstarted { finish([(unstarted, WorkerNode.cancelled)]) }
        slot?.abort(id)
    }

    static let cancelled = WorkerReport.failure(
        TaskFailure(index: 0, results: [], errorType: "Cancelled", message: "aborted by the manager", lost: true))

    private func dropQueuedWork(of link: WorkerLink) {
        lock.withLock { outstanding -= waiting.removeAll { $0.link === link } }
    }

    // MARK: Slots

    private func startSlots() async throws {
        if options.useThreads {
            let made = (0..<options.processes).map { ThreadSlot(index: $0, registry: registry, options: options, node: self) }
            lock.withLock { slots = made }
            for slot in made { try slot.start() }
        } else {
            let made = (0..<options.processes).map { ProcessSlot(index: $0, options: options, loop: loop, node: self) }
            lock.withLock { slots = made }
            for slot in made { try await slot.start() }
        }
    }

    private func stopSlots() {
        let all: [any WorkerSlot] = lock.withLock {
            stopping = true
            return slots
        }
        for slot in all { slot.stop() }
    }

    /// The most assignments, and bytes of them, a worker process is handed at once. Only
    /// small assignments are bundled: a bundle of large chunks would keep the node's other
    /// processes idle while one runs them all (a 100,000-call map's 8 chunks went to one).
    static let maxBundle = 64
    static let maxBundleBytes = 16 << 10

    /// An assignment from the manager goes straight to an idle slot, from the connection's
    /// event loop. With no slot idle it waits in line, for the next slot that finishes.
    private func accept(_ assignment: LocalAssignment) {
        let slot: (any WorkerSlot)? = lock.withLock {
            outstanding += 1
            guard !stopping, let slot = idleSlots.popLast() else {
                waiting.append(assignment)
                return nil
            }
            running[assignment.id] = slot
            return slot
        }
        slot?.give([assignment])
    }

    /// What `slot` runs next: the first assignment waiting and, for a process slot, whatever
    /// small ones follow it (a bundle: one wake of the worker process for many one-call
    /// assignments, which is what apply_async and imap with chunksize 1 cost most). Nil when
    /// the line is empty: the slot is idle from then on.
    func next(for slot: any WorkerSlot) -> [LocalAssignment]? {
        lock.withLock {
            guard let bundle = takeBundle(for: slot) else {
                if !stopping { idleSlots.append(slot) }
                return nil
            }
            return bundle
        }
    }

    /// Under lock: a bundle from the front of the line for `slot`, marked as running there.
    private func takeBundle(for slot: any WorkerSlot) -> [LocalAssignment]? {
        guard !stopping, let first = waiting.popFirst() else { return nil }
        var bundle = [first]
        var bytes = first.body.readableBytes
        while slot.bundles, bundle.count < WorkerNode.maxBundle, bytes < WorkerNode.maxBundleBytes, let next = waiting.popFirst() {
            bundle.append(next)
            bytes += next.body.readableBytes
        }
        for assignment in bundle { running[assignment.id] = slot }
        return bundle
    }

    /// Assignments a slot could not run (its worker process ended first) go back to the front
    /// of the line, and idle slots take them.
    func putBack(_ assignments: [LocalAssignment]) {
        var handed: [(any WorkerSlot, [LocalAssignment])] = []
        lock.withLock {
            for assignment in assignments { running.removeValue(forKey: assignment.id) }
            waiting.putBack(assignments)
            while !idleSlots.isEmpty, waiting.count > 0 {
                let idle = idleSlots.removeLast()
                if let bundle = takeBundle(for: idle) { handed.append((idle, bundle)) }
            }
        }
        for (idle, bundle) in handed { idle.give(bundle) }
    }

    /// `slot` cannot take work now (its worker process ended).
    func leaveIdle(_ slot: any WorkerSlot) {
        lock.withLock { idleSlots.removeAll { $0 === slot } }
    }

    /// Sends the reports of assignments run together, in one write per connection. Only then
    /// are they done: a drain that sees the node idle must find every report already on the
    /// way (the goodbye queues behind them).
    func finish(_ done: [(LocalAssignment, WorkerReport)]) {
        guard !done.isEmpty else { return }
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

/// What a thread slot is told while idle.
enum SlotOrder {
    /// Run this bundle.
    case run([LocalAssignment])
    case stop
}

struct LocalAssignment {
    let id: UInt64
    /// The task-assign message's body, as the manager encoded it.
    let body: ByteBuffer
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
    static func run(_ assignment: ByteBuffer, registry: TaskRegistry, afterEach: () -> Void = {}) -> WorkerReport {
        do {
            return run(try TaskAssignment(body: assignment), registry: registry, afterEach: afterEach)
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

/// A place that runs assignments: a worker process (`ProcessSlot`) or a thread of the node
/// (`ThreadSlot`).
protocol WorkerSlot: AnyObject, Sendable {
    /// Whether it takes several small assignments at once.
    var bundles: Bool { get }
    /// Runs `bundle`; the node chose this slot because it was idle.
    func give(_ bundle: [LocalAssignment])
    /// Stops assignment `id` if it is running now and this kind of slot can.
    func abort(_ id: UInt64)
    /// The node is stopping.
    func stop()
}

/// Runs tasks on a thread of the node (`--threads`): no isolation, no start-up cost.
final class ThreadSlot: WorkerSlot, @unchecked Sendable {
    /// Where the thread waits while idle.
    private let inbox = Threading.Queue<SlotOrder>()
    private let thread: Threading.Thread

    init(index: Int, registry: TaskRegistry, options: WorkerOptions, node: WorkerNode) {
        let box = SlotBox()
        thread = Threading.Thread(name: "colony-worker-\(index)", daemon: true) {
            guard let slot = box.slot else { return }
            if let initializer = options.initializer {
                do {
                    try registry.initialize(initializer, options.initializerArguments)
                } catch {
                    node.log("worker \(index) could not start: \(error)")
                }
            }
            slot.serve(node: node, registry: registry)
        }
        box.slot = self
    }

    func start() throws { try thread.start() }

    var bundles: Bool { false }

    func give(_ bundle: [LocalAssignment]) { try? inbox.put(.run(bundle)) }

    /// The thread's loop: runs what it is given while idle, and after each bundle takes the
    /// next from the line itself, until told to stop.
    private func serve(node: WorkerNode, registry: TaskRegistry) {
        var taken = node.next(for: self)
        while true {
            let bundle: [LocalAssignment]
            if let taken {
                bundle = taken
            } else {
                guard case .run(let handed)? = try? inbox.get() else { return }
                bundle = handed
            }
            node.finish(bundle.map { ($0, WorkerReport.run($0.body, registry: registry)) })
            taken = node.next(for: self)
        }
    }

    func abort(_ id: UInt64) {}

    func stop() {
        try? inbox.put(.stop)
        _ = try? thread.join(timeout: 5)
    }
}

private final class SlotBox: @unchecked Sendable {
    weak var slot: ThreadSlot?
}

/// Assignments no slot has taken yet, oldest first: slots take from the front, the node adds
/// at the back, and those a dead worker process never reached go back to the front.
struct WaitingLine<Element> {
    private var items: [Element] = []
    /// Where the line starts in `items`: taking from the front moves it instead of the rest.
    private var start = 0

    var count: Int { items.count - start }

    mutating func append(_ element: Element) { items.append(element) }

    mutating func popFirst() -> Element? {
        guard start < items.count else { return nil }
        let first = items[start]
        start += 1
        if start == items.count {
            items.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 64, start * 2 >= items.count {
            items.removeFirst(start)
            start = 0
        }
        return first
    }

    /// Puts `returned` back at the front, in its order.
    mutating func putBack(_ returned: [Element]) {
        guard !returned.isEmpty else { return }
        items.replaceSubrange(0..<start, with: returned)
        start = 0
    }

    mutating func removeFirst(where matches: (Element) -> Bool) -> Element? {
        guard let index = items[start...].firstIndex(where: matches) else { return nil }
        return items.remove(at: index)
    }

    /// Removes those `shouldRemove` picks; returns how many.
    mutating func removeAll(where shouldRemove: (Element) -> Bool) -> Int {
        items.removeSubrange(0..<start)
        start = 0
        let before = items.count
        items.removeAll(where: shouldRemove)
        return before - items.count
    }
}
