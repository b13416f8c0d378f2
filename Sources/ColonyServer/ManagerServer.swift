import Atomics
import ColonyTransport
import ColonyWire
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Threading

/// Everything a manager needs to start.
public struct ManagerConfiguration: Sendable {
    public enum Transport: Sendable {
        /// TLS 1.3 with this certificate chain and key (PEM files). With `clientCAPath`, clients
        /// must present a certificate issued by that CA (mutual TLS).
        case tls(certificatePath: String, privateKeyPath: String, clientCAPath: String?)
        /// No encryption: only for loopback tests and benchmarks.
        case insecurePlaintext
    }

    public var host: String
    public var port: Int
    public var transport: Transport
    public var authKey: [UInt8]
    public var maxConnections: Int = 10_000
    public var maxFrameBody: Int = Frame.defaultMaxBodySize
    public var maxMessageSize: Int = 1 << 30
    public var maxInFlight: Int = 4096
    public var maxObjects: Int = 1_000_000
    public var eventLoopThreads: Int = System.coreCount
    public var handshakeTimeoutSeconds: Double = 5
    public var keepaliveIntervalSeconds: Double = 10
    /// How long an event loop keeps polling its sessions after answering, before it sleeps
    /// (see `BusyPoller`); 0 turns it off.
    public var busyPollMicroseconds: Int = 200
    /// Also listen on this Unix domain socket (SPEC 1): for peers on this host, mode 0600,
    /// the authkey handshake without TLS (the file's mode is the channel's protection).
    public var unixSocketPath: String?
    /// Where object ids are reserved (the state directory's `object-ids`), so that they
    /// never repeat across restarts; nil starts them at 1 each time.
    public var objectIDFile: String?
    /// How often anonymous objects that only reference each other are looked for and freed
    /// (`ObjectStore.collectCycles`); 0 never.
    public var cycleCollectionSeconds: Double = 10
    /// The most memory the manager may hold (`--max-memory`); nil: three quarters of what
    /// this machine, or its cgroup, allows.
    public var maxMemory: Int?
    /// Keep named objects across restarts in this directory (`--persist`: the state
    /// directory), journaled and synced as `durability` says; nil keeps nothing.
    public var persistDirectory: String?
    public var durability: DurabilityPolicy = .no
    /// The journal size from which it is compacted into a snapshot (when it is also larger
    /// than the last snapshot).
    public var journalCompactionBytes = 64 << 20
    public var authFailureDelaySeconds: Double = 0.5
    /// Counts requests, errors, handshakes and sessions through swift-metrics (`--http-listen`
    /// serves them); nil counts nothing.
    public var metrics: ManagerMetrics?
    public var logger = Logger(label: "colony.manager")

    public init(host: String, port: Int, transport: Transport, authKey: [UInt8]) {
        self.host = host
        self.port = port
        self.transport = transport
        self.authKey = authKey
    }
}

/// The manager server (`colony manager`): a NIO listener around `ObjectStore` and
/// `ManagerSession`, which hold all the logic.
///
/// States: created → running (`start`) → draining (`shutdown`: stop accepting, say goodbye to
/// every session, wait for them to close) → stopped.
public final class ManagerServer: ManagerContext, @unchecked Sendable {
    public let store: ObjectStore
    public let configuration: ManagerConfiguration
    /// Keeps named objects across restarts (`--persist`); nil keeps nothing.
    public let persistence: Persistence?
    /// This run's identity, drawn at start and sent in every welcome: a client that sees
    /// another one than before knows the manager restarted.
    public let instance: [UInt8] = (0..<16).map { _ in UInt8.random(in: 0...255) }
    private let group: MultiThreadedEventLoopGroup
    /// Runs heavy requests (RequestWeight) off the event loops.
    private let offloadPool: NIOThreadPool
    private let handshake: HandshakeConfiguration
    private let sslContext: NIOSSLContext?
    private let started = Date()
    private let nextSessionID = ManagedAtomic<UInt64>(1)
    private let lock = Lock()
    // Guarded by lock.
    private var serverChannel: (any Channel)?
    private var unixChannel: (any Channel)?
    private var poolTicks: RepeatedTask?
    private var cycleCollections: RepeatedTask?
    private var memorySamples: RepeatedTask?
    private var sessions: [UInt64: SessionRecord] = [:]
    private var counters: [String: UInt64] = [:]
    private var isDraining = false
    /// The busy pollers of the event loops that have had sessions.
    private var pollers: [ObjectIdentifier: BusyPoller] = [:]
    /// With `--persist always`, each event loop's answers that wait for the journal.
    private var keptAnswers: [ObjectIdentifier: KeptAnswers] = [:]
    /// With metrics, each event loop's request counters.
    private var meters: [ObjectIdentifier: RequestMeter] = [:]
    private var dashboardURL: String?

    public init(configuration: ManagerConfiguration) throws {
        self.configuration = configuration
        let budget = MemoryBudget(limit: configuration.maxMemory ?? MemoryBudget.defaultLimit())
        store = try configuration.objectIDFile.map { try ObjectStore(maxObjects: configuration.maxObjects, objectIDFile: $0, budget: budget) }
            ?? ObjectStore(maxObjects: configuration.maxObjects, budget: budget)
        let store = store
        persistence = try configuration.persistDirectory.map {
            try Persistence(
                directory: $0, policy: configuration.durability, compactionBytes: configuration.journalCompactionBytes,
                journalPollNanoseconds: UInt64(max(0, configuration.busyPollMicroseconds)) * 1000, store: store, logger: configuration.logger)
        }
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.eventLoopThreads))
        offloadPool = NIOThreadPool(numberOfThreads: max(1, configuration.eventLoopThreads))
        var handshake = HandshakeConfiguration(
            authKey: try AuthKey(configuration.authKey),
            timeoutNanoseconds: UInt64(configuration.handshakeTimeoutSeconds * 1e9),
            failureDelayNanoseconds: UInt64(configuration.authFailureDelaySeconds * 1e9), agent: "colony-manager/\(colonyReleaseVersion)")
        handshake.instance = instance
        self.handshake = handshake
        switch configuration.transport {
        case .tls(let certificatePath, let privateKeyPath, let clientCAPath):
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificatePath).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)))
            tls.minimumTLSVersion = .tlsv13
            if let clientCAPath {
                tls.certificateVerification = .noHostnameVerification
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCAPath))
            }
            sslContext = try NIOSSLContext(configuration: tls)
        case .insecurePlaintext:
            sslContext = nil
        }
    }

    /// Binds and starts serving; returns the address actually bound (port 0 picks one).
    public func start() async throws -> SocketAddress {
        offloadPool.start()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try self.setUp(channel, tls: true) }
            }
        let channel = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
        if let path = configuration.unixSocketPath {
            let local = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .childChannelOption(.maxMessagesPerRead, value: 16)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture { try self.setUp(channel, tls: false) }
                }
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            guard chmod(path, 0o600) == 0 else {
                try? await local.close()
                throw ManagerStartError("cannot make the Unix socket \(path) private (chmod 0600 failed, errno \(errno))")
            }
            lock.withLock { unixChannel = local }
            configuration.logger.info("listening", metadata: ["address": "unix:\(path)"])
        }
        // Pools lose workers whose heartbeats stopped; once a second is often enough for
        // deadlines of three intervals.
        // The journal is compacted, off the event loops, once it has grown enough.
        let store = self.store
        let persistence = self.persistence
        let ticks = group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            store.tickPools(now: ManagerServer.now())
            if let persistence, persistence.wantsCompaction {
                DispatchQueue.global(qos: .utility).async { persistence.compactIfDue() }
            }
        }
        // The memory budget's view of what the manager holds, ten times a second.
        let samples = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in
            store.budget?.sample()
        }
        // Off the event loops: the first pass reads every object alongside the sessions.
        let collections = configuration.cycleCollectionSeconds > 0 ? group.next().scheduleRepeatedTask(
            initialDelay: .nanoseconds(Int64(configuration.cycleCollectionSeconds * 1e9)),
            delay: .nanoseconds(Int64(configuration.cycleCollectionSeconds * 1e9))
        ) { _ in
            DispatchQueue.global(qos: .utility).async { store.collectCycles() }
        } : nil
        lock.withLock {
            serverChannel = channel
            poolTicks = ticks
            memorySamples = samples
            cycleCollections = collections
        }
        configuration.logger.info("listening", metadata: ["address": "\(channel.localAddress!)"])
        return channel.localAddress!
    }

    private func setUp(_ channel: any Channel, tls: Bool) throws {
        let admitted: Bool = lock.withLock {
            guard !isDraining, sessions.count < configuration.maxConnections else {
                counters["connections_refused", default: 0] += 1
                return false
            }
            return true
        }
        guard admitted else {
            channel.close(promise: nil)
            return
        }
        let id = nextSessionID.loadThenWrappingIncrement(ordering: .relaxed)
        let record = SessionRecord(id: id, channel: channel, peer: channel.remoteAddress?.description ?? "?")
        lock.withLock {
            sessions[id] = record
            counters["connections_accepted", default: 0] += 1
        }
        channel.closeFuture.whenComplete { [weak self] _ in
            guard let self else { return }
            lock.withLock {
                // Kept so that request totals (the dashboard's rate) do not fall when sessions end.
                guard let ended = sessions.removeValue(forKey: id) else { return }
                counters["requests_of_closed_sessions", default: 0] += ended.requestCount
            }
        }
        let operations = channel.pipeline.syncOperations
        if tls, let sslContext {
            try operations.addHandler(NIOSSLServerHandler(context: sslContext))
        }
        let poller = BusyPoller.shared(by: channel.eventLoop)
        let meter: RequestMeter? = lock.withLock {
            pollers[ObjectIdentifier(poller)] = poller
            guard let metrics = configuration.metrics else { return nil }
            if let existing = meters[ObjectIdentifier(poller)] { return existing }
            let made = RequestMeter(metrics: metrics)
            meters[ObjectIdentifier(poller)] = made
            return made
        }
        let outlet = ChannelOutlet(poller: poller, store: store)
        let session = ManagerSession(
            id: id, context: self, handshake: handshake, maxFrameBody: configuration.maxFrameBody,
            maxMessageSize: configuration.maxMessageSize, maxInFlight: configuration.maxInFlight, outlet: outlet, meter: meter,
            offloadsHeavyRequests: true, now: ManagerServer.now())
        try operations.addHandler(
            SessionHandler(
                session: session, record: record, outlet: outlet, poller: poller, offloadPool: offloadPool,
                busyPollNanoseconds: UInt64(max(0, configuration.busyPollMicroseconds)) * 1000, maxFrameBody: configuration.maxFrameBody,
                handshakeTimeout: configuration.handshakeTimeoutSeconds, keepaliveInterval: configuration.keepaliveIntervalSeconds,
                keptAnswers: keptAnswers(for: poller),
                logger: configuration.logger))
    }

    static func now() -> UInt64 { UInt64(DispatchTime.now().uptimeNanoseconds) }

    /// With `--persist always`, the waiting answers of `poller`'s event loop; else nil.
    private func keptAnswers(for poller: BusyPoller) -> KeptAnswers? {
        guard let journal = store.journal, journal.policy == .always else { return nil }
        return lock.withLock {
            if let existing = keptAnswers[ObjectIdentifier(poller)] { return existing }
            let made = KeptAnswers(poller: poller, journal: journal)
            keptAnswers[ObjectIdentifier(poller)] = made
            return made
        }
    }

    /// Stops accepting, says goodbye to every session, and waits (up to `gracePeriod`
    /// seconds) for them to close before closing the rest and stopping the event loops.
    public func shutdown(gracePeriod: Double = 5) async {
        let (listener, open): ([any Channel], [SessionRecord]) = lock.withLock {
            isDraining = true
            poolTicks?.cancel()
            poolTicks = nil
            cycleCollections?.cancel()
            cycleCollections = nil
            memorySamples?.cancel()
            memorySamples = nil
            defer {
                serverChannel = nil
                unixChannel = nil
            }
            return ([serverChannel, unixChannel].compactMap { $0 }, Array(sessions.values))
        }
        for channel in listener { try? await channel.close() }
        if let path = configuration.unixSocketPath { unlink(path) }
        for record in open {
            // The session answers its parked calls with ShutDown, says goodbye and closes.
            record.channel.pipeline.fireUserInboundEventTriggered(ManagerShuttingDown())
        }
        let deadline = Date().addingTimeInterval(gracePeriod)
        for record in open {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { record.channel.close(promise: nil); continue }
            _ = try? await record.channel.closeFuture.get()
        }
        try? await group.shutdownGracefully()
        try? await offloadPool.shutdownGracefully()
        // Every change the sessions made is written and synced before the manager stops.
        persistence?.stop()
    }

    /// Sessions open now.
    public var sessionCount: Int { lock.withLock { sessions.count } }

    /// Where the manager's HTTP listener serves its dashboard (`--http-listen`), without the
    /// token: `status` reports it, and `colony status --dashboard-url` adds the token.
    public func announceDashboard(url: String) { lock.withLock { dashboardURL = url } }

    public func statusReport() -> WireValue { statusReport(objectRowLimit: nil) }

    /// The status; with `objectRowLimit`, the object table holds only that many rows (the
    /// lowest ids) and the objects are summed up instead: `objects_total`, `object_types`
    /// (`[{type, count, items, waiting}]`) and `named_queues` (`[{name, size}]`). For what
    /// reads the status often (the dashboard's feed each second, `/metrics` at each scrape).
    public func statusReport(objectRowLimit: Int?) -> WireValue {
        let (records, recorded, pollers, dashboard) = lock.withLock {
            (Array(sessions.values), self.counters, Array(self.pollers.values), dashboardURL)
        }
        var counters = recorded
        let polling = pollers.map(\.statistics)
        (counters["cycle_collections"], counters["cycles_freed"]) = store.cycleStatistics
        counters["busy_polls_ended_by_work"] = polling.reduce(0) { $0 + $1.endedByWork }
        counters["busy_polls_timed_out"] = polling.reduce(0) { $0 + $1.timedOut }
        counters["busy_poll_chances_skipped"] = polling.reduce(0) { $0 + $1.skipped }
        counters["busy_poll_chances_skipped_while_crowded"] = polling.reduce(0) { $0 + $1.skippedWhileCrowded }
        var objects: [WirePair] = [WirePair("objects", store.describeObjects())]
        if let objectRowLimit {
            let summary = store.summarizeObjects(rowLimit: objectRowLimit)
            objects = [
                WirePair("objects", summary.rows), WirePair("objects_total", .integer(summary.total)),
                WirePair("object_types", summary.byType), WirePair("named_queues", summary.namedQueues),
            ]
        }
        let report: WireValue = [
            "version": .string(colonyReleaseVersion),
            "instance": .bytes(instance),
            "memory": store.budget?.wireValue ?? .null,
            "persistence": persistence?.wireValue ?? .null,
            "uptime": .double(Date().timeIntervalSince(started)),
            "dashboard": dashboard.map(WireValue.string) ?? .null,
            "pools": store.describePools(),
            "sessions": .array(records.sorted { $0.id < $1.id }.map(\.wireValue)),
            "counters": .map(counters.sorted { $0.key < $1.key }.map { WirePair(.string($0.key), .integer($0.value)) }),
        ]
        return .map((report.mapValue ?? []) + objects)
    }
}

/// The manager's view of one connection, readable from any thread for `status`.
final class SessionRecord: @unchecked Sendable {
    let id: UInt64
    let channel: any Channel
    let peer: String
    private let lock = Lock()
    // Guarded by lock.
    private var role = "handshaking"
    private var agent = ""
    private var requests: UInt64 = 0
    private var objects = 0

    init(id: UInt64, channel: any Channel, peer: String) {
        self.id = id
        self.channel = channel
        self.peer = peer
    }

    /// Records the counters after a read (no copy of the session: a read burst may be one
    /// request).
    func update(requests: UInt64, objects: Int) {
        lock.withLock {
            self.requests = requests
            self.objects = objects
        }
    }

    var requestCount: UInt64 { lock.withLock { requests } }

    /// Records who the peer said it is, once the handshake succeeded.
    func established(_ negotiated: NegotiatedSession) {
        lock.withLock {
            role = negotiated.role
            agent = negotiated.peerAgent
        }
    }

    var wireValue: WireValue {
        lock.withLock {
            [
                "id": .integer(id), "role": .string(role), "peer": .string(peer), "agent": .string(agent),
                "requests": .integer(requests), "objects": .integer(objects),
            ]
        }
    }
}

/// Sent through a session's pipeline when the manager shuts down.
struct ManagerShuttingDown {}

/// Brings the answers of parked calls to their session's event loop. Objects call `deliver`
/// from any thread; the answer is always enqueued, never written inline.
final class ChannelOutlet: AnswerOutlet, WorkerOutlet, @unchecked Sendable {
    fileprivate let poller: BusyPoller
    private let store: ObjectStore
    // Touched only on the event loop; nil once the channel is gone.
    fileprivate var target: (handler: SessionHandler, context: ChannelHandlerContext)?
    private let queueLock = Threading.Lock()
    /// Worker frames queued and not yet written, in order (guarded by queueLock).
    private var queued: [Message] = []

    init(poller: BusyPoller, store: ObjectStore) {
        self.poller = poller
        self.store = store
    }

    func attach(_ handler: SessionHandler, _ context: ChannelHandlerContext) { target = (handler, context) }
    func detach() { target = nil }

    func deliver(requestID: UInt64, _ outcome: Result<WireValue, RemoteError>) {
        // On this session's own thread, with its handler not on the stack, answer at once
        // (a lock hand-off between sessions of one event loop skips a task); else enqueue.
        if poller.eventLoop.inEventLoop, let target, !target.handler.isBusy {
            target.handler.answerParked(requestID: requestID, outcome, context: target.context)
            return
        }
        poller.execute { [self] in
            if let target {
                target.handler.answerParked(requestID: requestID, outcome, context: target.context)
            } else if case .success(let value) = outcome, value.mayContainReferences {
                store.release(value.objectIDs)  // nobody left to hand them to
            }
        }
    }

    func deliver(requestID: UInt64, encoded body: ByteBuffer) {
        if poller.eventLoop.inEventLoop, let target, !target.handler.isBusy {
            target.handler.answerParked(requestID: requestID, encoded: body, context: target.context)
            return
        }
        poller.execute { [self] in
            if let target { target.handler.answerParked(requestID: requestID, encoded: body, context: target.context) }
        }
    }
}

extension ChannelOutlet {
    func send(_ message: Message) {
        // Always queued, never written inline: the pool calls this under its lock, and frames
        // must leave in the order it decided them. Frames queued before the event loop gets
        // to them leave together: one task, one TLS record, one system call.
        let first = queueLock.withLock {
            queued.append(message)
            return queued.count == 1
        }
        guard first else { return }
        poller.execute { [self] in writeQueued() }
    }

    /// On the event loop, writes what is queued (a later task finds the queue empty); from
    /// another thread, leaves it to the task `send` enqueued.
    func writeQueued() {
        guard poller.eventLoop.inEventLoop else { return }
        let frames = queueLock.withLock {
            defer { queued.removeAll(keepingCapacity: true) }
            return queued
        }
        if !frames.isEmpty, let target { target.handler.writeMessages(frames, context: target.context) }
    }

    func disconnect(reason: String) {
        poller.execute { [self] in
            if let target { target.handler.disconnect(reason: reason, context: target.context) }
        }
    }
}

/// The thin NIO shell around `ManagerSession`: bytes in, split into frames here (no
/// per-frame pipeline message), actions out. The frames answering one read burst are encoded
/// into one buffer and written once (one TLS record, one system call); parked calls' answers
/// and timeouts arrive as tasks.
final class SessionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var session: ManagerSession
    private let record: SessionRecord
    private let outlet: ChannelOutlet
    private let handshakeTimeout: Double
    /// Keepalive (SPEC 5): a connection with no read for an interval gets a ping, and one
    /// still silent an interval later is closed. One timer per connection checks it, rather
    /// than a handler in the pipeline that reads the clock on every read.
    private let keepaliveInterval: Double
    private var keepalive: RepeatedTask?
    private var readSinceKeepaliveCheck = false
    /// Carries the session's id and peer on every line, and its role (and a worker's node)
    /// once known.
    private var logger: Logger
    private var outbound = ByteBuffer()
    /// The previous write's buffer, reused for the next one.
    private var spareOutbound: ByteBuffer?
    private var received = FrameStream()
    /// Whether the record has the peer's role and agent from the handshake.
    private var recordedPeer = false
    private let maxFrameBody: Int
    private var awaitingPong = false
    private var closing = false
    private var timeouts: [UInt64: Scheduled<Void>] = [:]
    private let poller: BusyPoller
    private let busyPollNanoseconds: UInt64
    private var isWatched = false
    /// With `--persist always`: answers leave only once the changes made before them are on
    /// the disk, so no peer sees a change a crash could still lose.
    private let keptAnswers: KeptAnswers?
    /// How many bytes at the front of `outbound` wait for the journal (0: none).
    private var awaitingJournal = 0
    /// What the answers in `outbound` (after those that wait) show of the journal.
    private var shown = ShownRecords()
    private let offloadPool: NIOThreadPool
    /// Set while a heavy request runs on the offload pool: the session there is the live
    /// one, so reads wait in `received` (with reading paused) and whatever else needs the
    /// session waits in `afterOffload`.
    private var offloaded = false
    private var afterOffload: [() -> Void] = []
    /// Slices of a large write still to go, one per event-loop turn.
    private var slices = CircularBuffer<ByteBuffer>()

    init(
        session: ManagerSession, record: SessionRecord, outlet: ChannelOutlet, poller: BusyPoller, offloadPool: NIOThreadPool,
        busyPollNanoseconds: UInt64, maxFrameBody: Int, handshakeTimeout: Double, keepaliveInterval: Double, keptAnswers: KeptAnswers?,
        logger: Logger
    ) {
        self.keepaliveInterval = keepaliveInterval
        self.keptAnswers = keptAnswers
        self.offloadPool = offloadPool
        self.session = session
        self.record = record
        self.outlet = outlet
        self.poller = poller
        self.busyPollNanoseconds = busyPollNanoseconds
        self.maxFrameBody = maxFrameBody
        self.handshakeTimeout = handshakeTimeout
        var logger = logger
        logger[metadataKey: "session"] = "\(record.id)"
        logger[metadataKey: "peer"] = "\(record.peer)"
        self.logger = logger
    }

    /// A parked call's answer, on the event loop.
    /// True while this handler is running session code (a delivery then waits its turn).
    private(set) var isBusy = false

    func answerParked(requestID: UInt64, _ outcome: Result<WireValue, RemoteError>, context: ChannelHandlerContext) {
        answerParked(requestID: requestID, context: context) { $0.parkedAnswered(requestID: requestID, outcome) }
    }

    func answerParked(requestID: UInt64, encoded body: ByteBuffer, context: ChannelHandlerContext) {
        answerParked(requestID: requestID, context: context) { $0.parkedAnswered(requestID: requestID, encoded: body) }
    }

    private func answerParked(
        requestID: UInt64, context: ChannelHandlerContext, _ answer: @escaping (inout ManagerSession) -> [SessionAction]
    ) {
        guard !offloaded else {
            afterOffload.append { [self] in answerParked(requestID: requestID, context: context, answer) }
            return
        }
        isBusy = true
        defer { isBusy = false }
        timeouts.removeValue(forKey: requestID)?.cancel()
        perform(answer(&session), context: context)
        flushIfNeeded(context: context)
        poller.pollSoon(budget: busyPollNanoseconds)
    }

    /// A message from the pool to this worker: written with this read's answers when the
    /// handler is mid-read, at once otherwise.
    func writeMessages(_ messages: [Message], context: ChannelHandlerContext) {
        guard !closing else { return }
        for message in messages { outbound.writeMessage(message, maxFrameBody: maxFrameBody) }
        if !isBusy { flushIfNeeded(context: context) }
    }

    /// The pool found this worker silent: close without waiting for it.
    func disconnect(reason: String, context: ChannelHandlerContext) {
        guard !closing else { return }
        guard !offloaded else {
            afterOffload.append { [self] in disconnect(reason: reason, context: context) }
            return
        }
        logger.notice("closing a worker session", metadata: ["reason": "\(reason)"])
        closing = true
        session.end()
        context.close(promise: nil)
    }

    func channelActive(context: ChannelHandlerContext) {
        isWatched = poller.watch(context.channel)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        outlet.attach(self, context)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .nanoseconds(Int64(handshakeTimeout * 1e9) + 1_000_000)) {
            let (handler, context) = loopBound.value
            handler.withSession {
                handler.perform(handler.session.checkHandshakeDeadline(now: ManagerServer.now()), context: context)
                handler.flushIfNeeded(context: context)
            }
        }
        let interval = TimeAmount.nanoseconds(Int64(keepaliveInterval * 1e9))
        keepalive = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = loopBound.value
            handler.checkKeepalive(context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        awaitingPong = false
        readSinceKeepaliveCheck = true
        guard !closing else { return }
        guard !offloaded else {
            received.hold(unwrapInboundIn(data))
            return
        }
        receiveFrames(unwrapInboundIn(data), context: context)
    }

    /// Hands the session the frames of `data`, after those held from earlier reads, until
    /// one closes the connection or offloads a request.
    private func receiveFrames(_ data: ByteBuffer, context: ChannelHandlerContext) {
        isBusy = true
        defer { isBusy = false }
        // Taken out of `self` while frames are handled, so that handling them does not run
        // inside a long access to this property (each nested access would cost a search).
        var stream = FrameStream()
        swap(&stream, &received)
        defer { received = stream }
        // The clock is read only for the handshake and a worker's frames, which need it.
        let now = session.needsClock ? ManagerServer.now() : 0
        do {
            // The frame size limit is checked from the header, before the body is waited for.
            try stream.receive(data, maxBodySize: maxFrameBody) { frame in
                perform(session.receive(frame, now: now), context: context)
                return !closing && !offloaded
            }
        } catch {
            failFraming(error, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded(context: context)
        // The client usually sends its next request as soon as it has these answers.
        poller.pollSoon(budget: busyPollNanoseconds)
        if !recordedPeer, let negotiated = session.negotiated {
            record.established(negotiated)
            recordedPeer = true
            logger[metadataKey: "role"] = "\(negotiated.role)"
            logger.debug("session established", metadata: ["agent": "\(negotiated.peerAgent)"])
        }
        if let node = session.workerNode, logger[metadataKey: "node"] == nil {
            logger[metadataKey: "node"] = "\(node)"
            logger.info("worker node joined its pool")
        }
        record.update(requests: session.requestsServed, objects: session.objectCount)
    }

    private func flushIfNeeded(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        // Answers leave in order: what gathers while some wait for the journal goes after them.
        if keptAnswers != nil, !closing, awaitingJournal > 0 { return }
        if let keptAnswers {
            let target = shown.flush(gathered: outbound.readableBytes, appended: keptAnswers.journal.appendedCount)
            if !closing, keptAnswers.journal.keptCount < target {
                // What is gathered now goes once the journal has kept what it shows (one sync
                // serves every session).
                awaitingJournal = outbound.readableBytes
                keptAnswers.wait(through: target) { [self] in flushKept(context: context) }
                return
            }
        }
        awaitingJournal = 0
        var gathered = spareOutbound.take() ?? context.channel.allocator.buffer(capacity: 1024)
        swap(&gathered, &outbound)
        writeOut(gathered, context: context)
        // TLS has encrypted the bytes (or the socket taken them) by now, so the buffer is
        // usually ours again; `clear` copies only if it is still held.
        guard gathered.capacity <= SessionHandler.writeSlice else { return }
        gathered.clear()
        spareOutbound = gathered
    }

    /// A write larger than this goes out in slices of it, one per event-loop turn: TLS
    /// encrypts what is flushed at once, and 100 MB would hold the loop for a tenth of a
    /// second. (It is also the largest outgoing buffer kept for reuse.)
    static let writeSlice = 1 << 20

    /// Writes and flushes `bytes`, behind any slices of an earlier large write.
    private func writeOut(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        if slices.isEmpty, bytes.readableBytes <= SessionHandler.writeSlice {
            context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
            return
        }
        let idle = slices.isEmpty
        var rest = bytes
        while let slice = rest.readSlice(length: min(SessionHandler.writeSlice, rest.readableBytes)), slice.readableBytes > 0 {
            slices.append(slice)
        }
        if idle { writeNextSlice(context: context) }
    }

    private func writeNextSlice(context: ChannelHandlerContext) {
        guard let slice = slices.popFirst() else { return }
        context.writeAndFlush(wrapOutboundOut(slice), promise: nil)
        guard !slices.isEmpty else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = loopBound.value
            handler.writeNextSlice(context: context)
        }
    }

    /// Sends the answers that waited for the journal, then sees to any gathered since.
    private func flushKept(context: ChannelHandlerContext) {
        let kept = awaitingJournal
        awaitingJournal = 0
        guard kept > 0, context.channel.isActive, let answers = outbound.readSlice(length: kept) else { return }
        writeOut(answers, context: context)
        flushIfNeeded(context: context)
    }

    /// Writes `frames` now (outside a read burst, or before closing).
    private func writeNow(_ frames: [Frame], context: ChannelHandlerContext) {
        for frame in frames { outbound.writeFrame(frame) }
        flushIfNeeded(context: context)
    }

    private func perform(_ actions: [SessionAction], context: ChannelHandlerContext) {
        for action in actions {
            var answerBytes = 0
            switch action {
            case .send(let frame):
                outbound.writeFrame(frame)
            case .answerShows(let record):
                shown.announce(record)
                continue
            case .answer(let requestID, let result):
                let before = outbound.readableBytes
                outbound.writeAnswer(requestID: requestID, result, maxFrameBody: maxFrameBody)
                answerBytes = outbound.readableBytes - before
            case .answerEncoded(let requestID, let body):
                let before = outbound.readableBytes
                outbound.writeMessage(Message(kind: .response, requestID: requestID, body: body), maxFrameBody: maxFrameBody)
                answerBytes = outbound.readableBytes - before
            case .write(let bytes):
                if outbound.readableBytes == 0 { outbound = bytes } else { outbound.writeImmutableBuffer(bytes) }
            case .offload(let message):
                offload(message, context: context)
            case .encodeOffLoop(let requestID, let value):
                let maxFrameBody = self.maxFrameBody
                runOffLoop(requestID: requestID, context: context) {
                    var bytes = ByteBuffer()
                    bytes.writeAnswer(requestID: requestID, .success(value), maxFrameBody: maxFrameBody)
                    return OffLoopWork(session: nil, actions: [.write(bytes)])
                }
            case .close:
                closing = true
                flushIfNeeded(context: context)
                context.close(promise: nil)
            case .failAfter(let delay, let frames):
                closing = true
                logger.notice("handshake failed")
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: .nanoseconds(Int64(delay))) {
                    let (handler, context) = loopBound.value
                    handler.writeNow(frames + [Frame(kind: .goodbye)], context: context)
                    context.close(promise: nil)
                }
            case .scheduleTimeout(let requestID, let delay):
                let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
                timeouts[requestID] = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(delay))) {
                    let handler = loopBound.value
                    handler.timeouts[requestID] = nil
                    handler.withSession { handler.session.expire(requestID: requestID) }
                }
            }
            shown.performed(answerBytes: answerBytes)
        }
    }

    /// Runs `body` now, or, while a request is offloaded, once it is back.
    private func withSession(_ body: @escaping () -> Void) {
        if offloaded { afterOffload.append(body) } else { body() }
    }

    /// Runs a heavy request on the offload pool, with the session.
    private func offload(_ message: Message, context: ChannelHandlerContext) {
        let flight = OffLoopWork(session: session)
        let maxFrameBody = self.maxFrameBody
        runOffLoop(requestID: message.requestID, context: context) {
            var flight = flight
            flight.actions = flight.session?.runOffloaded(message, maxFrameBody: maxFrameBody) ?? []
            return flight
        }
    }

    /// Runs `work` on the offload pool. Reading pauses until it is back, so the session's
    /// requests still run, and its answers leave, in order; what was answered before it
    /// leaves now.
    private func runOffLoop(requestID: UInt64, context: ChannelHandlerContext, _ work: @escaping @Sendable () -> OffLoopWork) {
        offloaded = true
        try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
        flushIfNeeded(context: context)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        offloadPool.runIfActive(eventLoop: context.eventLoop, work).whenComplete { result in
            let (handler, context) = loopBound.value
            handler.offloadReturned(result, requestID: requestID, context: context)
        }
    }

    private func offloadReturned(_ result: Result<OffLoopWork, any Error>, requestID: UInt64, context: ChannelHandlerContext) {
        offloaded = false
        isBusy = true
        switch result {
        case .success(let flight):
            if let returned = flight.session {
                session = returned
                session.offloadReturned()
            }
            perform(flight.actions, context: context)
        case .failure:
            // The pool has stopped: the manager is shutting down.
            perform([.answer(requestID: requestID, .failure(RemoteError(.shutDown, "the manager is shutting down")))], context: context)
        }
        isBusy = false
        flushIfNeeded(context: context)
        let waiting = afterOffload
        afterOffload = []
        for body in waiting { body() }
        guard !closing, !offloaded, context.channel.isActive else { return }
        try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
        // The frames that arrived meanwhile, as a read would hand them on.
        receiveFrames(ByteBuffer(), context: context)
        channelReadComplete(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ManagerShuttingDown {
            withSession { [self] in perform(session.shutDown(), context: context) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// A keepalive interval passed: a ping if nothing was read in it, the close if the ping
    /// before went unanswered.
    private func checkKeepalive(context: ChannelHandlerContext) {
        // Not reading while a request is offloaded is this side's doing, not the peer's.
        guard !closing, !offloaded else { return }
        if readSinceKeepaliveCheck {
            readSinceKeepaliveCheck = false
            return
        }
        if awaitingPong || session.negotiated == nil {
            // Silent for two intervals: the peer is gone. Give back what it held now, not
            // after the TLS close, which waits for a peer that will never answer.
            logger.notice("session silent past its keepalive; closing")
            session.end()
            context.close(promise: nil)
        } else {
            awaitingPong = true
            writeNow([Frame(kind: .ping)], context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failFraming(error, context: context)
    }

    /// Bad bytes or a failed connection: answer a framing error with an error frame, then close.
    private func failFraming(_ error: any Error, context: ChannelHandlerContext) {
        logger.notice("closing session after an error", metadata: ["error": "\(error)"])
        if let frameError = error as? FrameError, !closing {
            let code: ErrorCode = frameError.code == .tooLarge ? .tooLarge : .badRequest
            outbound.writeAnswer(requestID: frameError.requestID, .failure(RemoteError(code, frameError.message)), maxFrameBody: maxFrameBody)
            flushIfNeeded(context: context)
        }
        closing = true
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        logger.debug("session ended", metadata: ["objects": "\(session.objectCount)"])
        for timeout in timeouts.values { timeout.cancel() }
        timeouts = [:]
        keepalive?.cancel()
        keepalive = nil
        slices.removeAll()
        // What the session held is given back off the event loop: the last reference to a
        // big object frees it item by item.
        withSession { [self] in
            let leaving = OffLoopWork(session: session)
            offloadPool.submit { _ in
                var leaving = leaving
                leaving.session?.end()
            }
        }
        outlet.detach()
        if isWatched {
            poller.unwatch()
            isWatched = false
        }
        context.fireChannelInactive()
    }
}

/// Which journal record the answers gathered for one connection wait for (`--persist
/// always`). An `.answerShows` action says what the action right after it shows; when every
/// answer gathered said, they wait for the last record they show, else for every record
/// made so far (an answer written any other way, say an offloaded one, did not say).
struct ShownRecords {
    private var announced: UInt64?
    private var bytes = 0
    private var record: UInt64 = 0

    /// An `.answerShows(record)` action.
    mutating func announce(_ record: UInt64) { announced = record }

    /// Any other action, which wrote `answerBytes` bytes of answer (0: none).
    mutating func performed(answerBytes: Int) {
        if let announced, answerBytes > 0 {
            bytes += answerBytes
            record = max(record, announced)
        }
        announced = nil
    }

    /// At a flush of `gathered` bytes, the record they wait for, given that the journal has
    /// `appended` records; what is gathered next starts afresh.
    mutating func flush(gathered: Int, appended: UInt64) -> UInt64 {
        defer {
            bytes = 0
            record = 0
        }
        return bytes == gathered ? record : appended
    }
}

/// Work on its way to the offload pool and back, with the session when it needs it. Its
/// handler leaves its own copy of the session alone meanwhile, so the one in flight is the
/// only live one.
private struct OffLoopWork: @unchecked Sendable {
    var session: ManagerSession?
    var actions: [SessionAction] = []
}

/// The answers of one event loop's sessions that wait for the journal (`--persist always`):
/// one registration with the journal and one task on the loop per sync, however many sessions
/// wait, instead of one of each per session.
final class KeptAnswers: @unchecked Sendable {
    let journal: Journal
    private let poller: BusyPoller
    // Touched only on the event loop.
    private var waiting: [(target: UInt64, send: () -> Void)] = []
    private var registered = false

    init(poller: BusyPoller, journal: Journal) {
        self.poller = poller
        self.journal = journal
    }

    /// On the loop: runs `send` once the records through `target` are kept.
    func wait(through target: UInt64, _ send: @escaping () -> Void) {
        waiting.append((target, send))
        register()
    }

    private func register() {
        // The first answers due: a sync that keeps them lets them go, and the next wait is
        // registered then.
        guard !registered, let target = waiting.map(\.target).min() else { return }
        registered = true
        let loopBound = NIOLoopBound(self, eventLoop: poller.eventLoop)
        // Through the poller: a busy poll on the loop stops for it.
        let poller = self.poller
        journal.whenKept(through: target) { poller.execute { loopBound.value.sendKept() } }
    }

    private func sendKept() {
        registered = false
        let kept = journal.keptCount
        let ready = waiting.filter { $0.target <= kept }
        waiting.removeAll { $0.target <= kept }
        // The next sync starts before these answers are encrypted and sent.
        register()
        for answer in ready { answer.send() }
    }
}

/// The manager could not start listening as configured.
public struct ManagerStartError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
