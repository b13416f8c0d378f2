import Atomics
import ColonyTransport
import ColonyWire
import NIOCore
import NIOPosix
import NIOSSL
import Threading

/// The connection to a manager failed or ended (Python: `EOFError`, `ConnectionRefusedError`).
public struct ConnectionError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The two sides hold different authkeys (Python `multiprocessing.AuthenticationError`):
/// a distinct error from `ConnectionError`, so a caller can tell a wrong key from a manager
/// that is not there.
public struct AuthenticationError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// How a client decides to trust the manager it connects to.
public enum ManagerTrust: Sendable {
    /// Verify the manager's certificate against this CA file (PEM).
    case certificateAuthority(path: String)
    /// Use the CA and authkey of a manager's state directory (the embedded default).
    case stateDirectory(path: String)
    /// No TLS at all: only for loopback tests and benchmarks against `--insecure-plaintext`.
    case insecurePlaintext
}

/// A client certificate for managers that require mutual TLS.
public struct ClientCertificate: Sendable {
    public var certificatePath: String
    public var privateKeyPath: String
    public init(certificatePath: String, privateKeyPath: String) {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
    }
}

/// One multiplexed connection: many requests in flight from many tasks and threads, answered
/// in any order, matched by request id.
final class ManagerConnection: @unchecked Sendable {
    let channel: any Channel
    let session: NegotiatedSession
    /// Work for the event loop goes through it, so that a busy poll there stops for it.
    let poller: BusyPoller
    private let handler: ClientHandler
    private let nextRequestID = ManagedAtomic<UInt64>(1)
    // Set once the connection is closed or lost; then no call touches the event loop, which
    // may already be shut down.
    private let closed = ManagedAtomic<Bool>(false)
    /// The references this session received, and the proxy handles using them.
    var references: ReferenceLedger { handler.references }
    private let routersLock = Threading.Lock()
    private var routers: [UInt64: PoolResultRouter] = [:]  // guarded by routersLock

    private init(channel: any Channel, session: NegotiatedSession, poller: BusyPoller, handler: ClientHandler) {
        self.channel = channel
        self.session = session
        self.poller = poller
        self.handler = handler
    }

    /// `role` "worker" opens a worker node's session; `poolFrames` then receives what the
    /// manager sends it unasked (assignments, cancels, drain, errors about its reports).
    static func open(
        host: String, port: Int, authKey: [UInt8], tls: TLSConfiguration?, serverName: String?,
        group: any EventLoopGroup, timeoutSeconds: Double, busyPollNanoseconds: UInt64, role: String = "client",
        poolFrames: (@Sendable (Message) -> Void)? = nil, unixSocketPath: String? = nil
    ) async throws -> ManagerConnection {
        let sslContext = try tls.map { try NIOSSLContext(configuration: $0) }
        let handshake = HandshakeConfiguration(
            authKey: try AuthKey(authKey), timeoutNanoseconds: UInt64(timeoutSeconds * 1e9), agent: "colony-swift/\(colonyReleaseVersion)")
        // The handler exists before the channel, so a connection the manager closes at once
        // still reports why through `established`.
        let eventLoop = group.next()
        let poller = BusyPoller.shared(by: eventLoop)
        let handler = ClientHandler(
            handshake: handshake, role: role, poller: poller, busyPollNanoseconds: busyPollNanoseconds, poolFrames: poolFrames)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(.nanoseconds(Int64(timeoutSeconds * 1e9)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let operations = channel.pipeline.syncOperations
                    if let sslContext {
                        try operations.addHandler(try NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                    }
                    try operations.addHandler(handler)
                }
            }
        let channel: any Channel
        do {
            if let unixSocketPath {
                channel = try await bootstrap.connect(unixDomainSocketPath: unixSocketPath).get()
            } else {
                channel = try await bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: host, port: port).get()
            }
        } catch {
            let failure = ConnectionError("cannot connect to the manager at \(unixSocketPath.map { "unix:" + $0 } ?? "\(host):\(port)"): \(error)")
            handler.established.fail(failure)  // no channel ever ran the handler: nobody else completes it
            throw failure
        }
        do {
            let session = try await handler.established.futureResult.get()
            let connection = ManagerConnection(channel: channel, session: session, poller: poller, handler: handler)
            channel.closeFuture.whenComplete { _ in connection.closed.store(true, ordering: .relaxed) }
            return connection
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }

    /// Hands a request to the event loop (at once when already on it); `answer` gets its
    /// answer or the mapped error.
    private func send(_ request: Request, id: UInt64, answer: AnswerWaiter) {
        let handler = self.handler
        let maxFrame = session.maxFrameBody
        if channel.eventLoop.inEventLoop {
            handler.send(request, id: id, answer: answer, maxFrameBody: maxFrame)
        } else {
            poller.execute { handler.send(request, id: id, answer: answer, maxFrameBody: maxFrame) }
        }
    }

    /// Sends one message that is not a request (a worker's results, failures, heartbeats).
    func sendMessage(kind: FrameKind, requestID: UInt64, value: WireValue) {
        guard isOpen else { return }
        let handler = self.handler
        let maxFrame = session.maxFrameBody
        if channel.eventLoop.inEventLoop {
            handler.sendMessage(kind: kind, requestID: requestID, value: value, maxFrameBody: maxFrame)
        } else {
            poller.execute { handler.sendMessage(kind: kind, requestID: requestID, value: value, maxFrameBody: maxFrame) }
        }
    }

    /// Sends a message whose body is already encoded (a worker process's report, passed on
    /// as it came).
    func sendEncoded(_ messages: [Message]) {
        guard isOpen else { return }
        let handler = self.handler
        let maxFrame = session.maxFrameBody
        if channel.eventLoop.inEventLoop {
            handler.sendEncoded(messages, maxFrameBody: maxFrame)
        } else {
            poller.execute { handler.sendEncoded(messages, maxFrameBody: maxFrame) }
        }
    }

    /// Sends a request whose answer nobody waits for (a proxy's release in its deinit).
    func sendIgnoringAnswer(_ request: Request) {
        send(request, id: nextID(), answer: .ignored)
    }

    /// Sends a request without waiting; `answer` is called with its answer on the event loop.
    func send(_ request: Request, answer: @escaping @Sendable (Result<WireValue, any Error>) -> Void) {
        guard isOpen else {
            answer(.failure(ConnectionError("the connection to the manager is closed; reconnect with Manager.connect")))
            return
        }
        send(request, id: nextID(), answer: .callback(answer))
    }

    /// The router of pushed pool results for the pool object `id` on this connection.
    func resultRouter(pool id: UInt64) -> PoolResultRouter {
        routersLock.withLock {
            if let router = routers[id] { return router }
            let router = PoolResultRouter(connection: self, pool: id, session: session.sessionID)
            routers[id] = router
            return router
        }
    }

    private func nextID() -> UInt64 { nextRequestID.loadThenWrappingIncrement(ordering: .relaxed) }

    /// Sends many requests in one event-loop task and one flush; returns when every answer is
    /// in, with each answer or error in order.
    func sendAll(_ requests: [Request]) async -> [Result<WireValue, any Error>] {
        await sendAll(requests.map(OutgoingRequest.value))
    }

    /// Sends request bodies the caller encoded (a long map's pieces, encoded on the caller's
    /// task rather than on the event loop) without waiting for their answers, which the
    /// future brings in order. On the event loop they leave at once, not when the caller's
    /// task yields: it usually goes on encoding the next pieces.
    func startAll(encoded bodies: [ByteBuffer]) -> EventLoopFuture<[Result<WireValue, any Error>]> {
        guard !bodies.isEmpty else { return channel.eventLoop.makeSucceededFuture([]) }
        let promise = channel.eventLoop.makePromise(of: [Result<WireValue, any Error>].self)
        sendAll(bodies.map(OutgoingRequest.encoded), flushAtOnce: true) { promise.succeed($0) }
        return promise.futureResult
    }

    private func sendAll(_ requests: [OutgoingRequest]) async -> [Result<WireValue, any Error>] {
        guard !requests.isEmpty else { return [] }
        return await withUnsafeContinuation { continuation in sendAll(requests) { continuation.resume(returning: $0) } }
    }

    private func sendAll(
        _ requests: [OutgoingRequest], flushAtOnce: Bool = false, done: @escaping @Sendable ([Result<WireValue, any Error>]) -> Void
    ) {
        let first = nextRequestID.loadThenWrappingIncrement(by: UInt64(requests.count), ordering: .relaxed)
        let handler = self.handler
        let maxFrame = session.maxFrameBody
        let answers = PipelineAnswers(count: requests.count, done: done)
        let sendEach: @Sendable () -> Void = {
            for (offset, request) in requests.enumerated() {
                handler.send(request, id: first + UInt64(offset), answer: .pipelined(answers, offset), maxFrameBody: maxFrame)
            }
        }
        guard channel.eventLoop.inEventLoop else { return poller.execute(sendEach) }
        sendEach()
        if flushAtOnce { handler.flushNow() }
    }

    func call(_ request: Request) async throws -> WireValue {
        try await call(request, cancellable: false) { .continuation($0) }
    }

    /// A call that may wait on the manager (a blocking method): cancelling the calling task
    /// sends a cancel frame, and the manager answers the parked call with Cancelled.
    func callCancellable(_ request: Request) async throws -> WireValue {
        try await call(request, cancellable: true) { .continuation($0) }
    }

    /// A call whose answer comes as its encoded body (`ObjectCall.readsBody`).
    func callForBody(_ request: Request, cancellable: Bool) async throws -> ByteBuffer {
        try await call(request, cancellable: cancellable) { continuation in .encoded { continuation.resume(with: $0) } }
    }

    private func call<Answer>(
        _ request: Request, cancellable: Bool, _ waiter: @escaping (UnsafeContinuation<Answer, any Error>) -> AnswerWaiter
    ) async throws -> Answer {
        try checkOpen()
        let id = nextID()
        guard cancellable else {
            return try await withUnsafeThrowingContinuation { send(request, id: id, answer: waiter($0)) }
        }
        let handler = self.handler
        let poller = self.poller
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { send(request, id: id, answer: waiter($0)) }
        } onCancel: {
            poller.execute { handler.cancel(id) }
        }
    }

    /// Blocks the calling thread; never call it on an event loop or from Swift concurrency.
    /// (It sleeps at once: a thread spinning here measured slower, as it takes a CPU from the
    /// event loop that is polling for its answer.)
    func callBlocking(_ request: Request) throws -> WireValue {
        try callBlocking(request) { .promise($0) }
    }

    /// `callForBody` for a plain thread.
    func callForBodyBlocking(_ request: Request) throws -> ByteBuffer {
        try callBlocking(request) { promise in .encoded { promise.completeWith($0) } }
    }

    private func callBlocking<Answer>(_ request: Request, _ waiter: (EventLoopPromise<Answer>) -> AnswerWaiter) throws -> Answer {
        try checkOpen()
        try checkNotOnEventLoop()
        let promise = channel.eventLoop.makePromise(of: Answer.self)
        send(request, id: nextID(), answer: waiter(promise))
        return try promise.futureResult.wait()
    }

    /// Throws where a blocking wait for an answer would never end.
    func checkNotOnEventLoop() throws {
        guard !channel.eventLoop.inEventLoop else {
            throw ConnectionError("a blocking call on the connection's own event loop would wait forever; use the async method there")
        }
    }

    private func checkOpen() throws {
        if closed.load(ordering: .relaxed) {
            throw ConnectionError("the connection to the manager is closed; reconnect with Manager.connect (named objects are still there)")
        }
    }

    func close() async {
        guard closed.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        let handler = self.handler
        poller.execute { handler.sayGoodbye() }
        _ = try? await channel.closeFuture.get()
    }

    var isOpen: Bool { !closed.load(ordering: .relaxed) }
}

/// A request on its way to the event loop: a value, or a body already encoded.
enum OutgoingRequest: Sendable {
    case value(Request)
    case encoded(ByteBuffer)
}

/// Who waits for one answer: a suspended task, a promise (blocking calls), one place in a
/// pipeline, or nobody.
enum AnswerWaiter {
    case continuation(UnsafeContinuation<WireValue, any Error>)
    case promise(EventLoopPromise<WireValue>)
    /// One answer of a pipeline, with its place in it.
    case pipelined(PipelineAnswers, Int)
    /// Called on the event loop with the answer (pool results; never block in it).
    case callback(@Sendable (Result<WireValue, any Error>) -> Void)
    /// Called on the event loop with the answer's encoded body, which the caller decodes.
    case encoded(@Sendable (Result<ByteBuffer, any Error>) -> Void)
    case ignored

    func resume(with result: Result<WireValue, any Error>) {
        switch self {
        case .continuation(let continuation): continuation.resume(with: result)
        case .promise(let promise): promise.completeWith(result)
        case .pipelined(let answers, let index): answers.record(result, at: index)
        case .callback(let body): body(result)
        case .encoded(let body): body(result.map { $0.encoded() })
        case .ignored: break
        }
    }
}

/// The answers of one pipeline, gathered on the connection's event loop; the waiting task
/// resumes when the last one is in.
final class PipelineAnswers: @unchecked Sendable {
    private var results: [Result<WireValue, any Error>]
    private var remaining: Int
    private let done: @Sendable ([Result<WireValue, any Error>]) -> Void

    init(count: Int, done: @escaping @Sendable ([Result<WireValue, any Error>]) -> Void) {
        results = Array(repeating: .success(.null), count: count)
        remaining = count
        self.done = done
    }

    func record(_ result: Result<WireValue, any Error>, at index: Int) {
        results[index] = result
        remaining -= 1
        if remaining == 0 { done(results) }
    }
}

/// The NIO side of a client connection: handshake, then request/answer matching.
final class ClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let established: EventLoopPromise<NegotiatedSession>
    private var handshake: ClientHandshake
    private var isOpen = false
    private var pending: [UInt64: AnswerWaiter] = [:]
    private var assembler = MessageAssembler()
    private var context: ChannelHandlerContext?
    private var flushScheduled = false
    /// Requests of this event-loop tick, written together (one TLS record, one system call).
    private var outbound = ByteBuffer()
    /// The previous write's buffer, reused for the next one.
    private var spareOutbound: ByteBuffer?
    private var received = FrameStream()
    /// Set once this side closes: frames still buffered are ignored.
    private var stopped = false
    private let poller: BusyPoller
    private let busyPollNanoseconds: UInt64
    private var isWatched = false
    /// Whether this read burst handed answers to waiting tasks, which are likely to send
    /// again, or an assignment to a worker node, which reports soon.
    private var answeredInThisRead = false

    private let poolFrames: (@Sendable (Message) -> Void)?
    /// The references this session received, counted as answers arrive.
    let references = ReferenceLedger()

    init(
        handshake: HandshakeConfiguration, role: String, poller: BusyPoller, busyPollNanoseconds: UInt64,
        poolFrames: (@Sendable (Message) -> Void)?
    ) {
        self.handshake = ClientHandshake(configuration: handshake, role: role)
        self.poolFrames = poolFrames
        self.poller = poller
        self.busyPollNanoseconds = busyPollNanoseconds
        established = poller.eventLoop.makePromise()
    }

    static func now() -> UInt64 { UInt64(NIODeadline.now().uptimeNanoseconds) }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        isWatched = poller.watch(context.channel)
        writeNow([handshake.start(now: ClientHandler.now())], context: context)
        context.fireChannelActive()
    }

    /// Writes `frames` at once, after whatever requests are waiting for this tick's flush.
    private func writeNow(_ frames: [Frame], context: ChannelHandlerContext) {
        for frame in frames { outbound.writeFrame(frame) }
        flushOutbound(context: context)
    }

    /// On the event loop: writes what is gathered now instead of at the end of this tick.
    func flushNow() {
        if let context { flushOutbound(context: context) }
    }

    private func flushOutbound(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        var gathered = spareOutbound.take() ?? context.channel.allocator.buffer(capacity: 1024)
        swap(&gathered, &outbound)
        context.writeAndFlush(wrapOutboundOut(gathered), promise: nil)
        // Usually written (or encrypted) by now and so ours again; `clear` copies if not.
        gathered.clear()
        spareOutbound = gathered
        if isOpen && (!pending.isEmpty || poolFrames != nil) { poller.pollSoon(budget: busyPollNanoseconds) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // The tasks just resumed usually send their next request at once (a worker node's
        // report of an assignment just received follows it as soon).
        if answeredInThisRead || !pending.isEmpty { poller.pollSoon(budget: busyPollNanoseconds) }
        answeredInThisRead = false
        context.fireChannelReadComplete()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !stopped else { return }
        // Out of `self` while frames are handled: no long access that nested ones must search.
        var stream = FrameStream()
        swap(&stream, &received)
        defer { received = stream }
        do {
            try stream.receive(unwrapInboundIn(data), maxBodySize: 1 << 30) { frame in
                receive(frame, context: context)
                return !stopped
            }
        } catch {
            errorCaught(context: context, error: error)
        }
    }

    private func receive(_ frame: Frame, context: ChannelHandlerContext) {
        guard isOpen else {
            switch handshake.receive(frame, now: ClientHandler.now()) {
            case .send(let frames):
                writeNow(frames, context: context)
            case .established(let session, let frames):
                writeNow(frames, context: context)
                isOpen = true
                established.succeed(session)
            case .failed(let failure, _, _):
                if failure.code == .authenticationFailed {
                    established.fail(AuthenticationError("the manager and this client hold different authkeys: \(failure.message)"))
                } else {
                    established.fail(ConnectionError("the manager's handshake failed: \(failure)"))
                }
                stop(context)
            }
            return
        }
        let message: Message
        do {
            guard let complete = try assembler.receive(frame) else { return }
            message = complete
        } catch {
            failAll(ConnectionError("the manager sent an oversized answer: \(error)"))
            stop(context)
            return
        }
        switch message.kind {
        case .response:
            guard let waiter = pending.removeValue(forKey: message.requestID) else { return }
            answeredInThisRead = true
            // An answer with references is decoded below, to count them. (Numbers' bytes can
            // look like a reference's marker: the quick scan's yes is checked by a walk.)
            if case .encoded(let deliver) = waiter, !message.body.mayHoldObjectReference || !message.body.holdsObjectReference {
                deliver(.success(message.body))
                return
            }
            let answer: Result<WireValue, any Error> = Result { try message.value() }.mapError { ConnectionError("the manager's answer is not a valid value: \($0)") }
            if case .success(let value) = answer, value.mayContainReferences, message.body.mayHoldObjectReference {
                references.received(value)
            }
            waiter.resume(with: answer)
        case .error:
            let error = (try? RemoteError(wireValue: message.value())) ?? RemoteError(.internalError, "malformed error frame")
            if let waiter = pending.removeValue(forKey: message.requestID) {
                answeredInThisRead = true
                waiter.resume(with: .failure(error.localError))
            } else if message.requestID == 0 {
                failAll(ConnectionError("the manager reported \(error)"))
                poolFrames?(message)  // a worker's refused hello: the worker logs why
            } else {
                poolFrames?(message)  // about a worker's report: the worker logs it
            }
        case .taskAssign:
            // Its report comes back through `execute` soon: polling until then saves waking
            // this loop from sleep for it.
            answeredInThisRead = true
            poolFrames?(message)
        case .cancel, .drain:
            poolFrames?(message)
        case .ping:
            writeNow([Frame(kind: .pong, requestID: message.requestID)], context: context)
        case .goodbye:
            failAll(ConnectionError("the manager is shutting down"))
            stop(context)
        default:
            break
        }
    }

    /// On the event loop: registers who waits for the answer and writes the request.
    func send(_ request: Request, id: UInt64, answer: AnswerWaiter, maxFrameBody: Int) {
        send(.value(request), id: id, answer: answer, maxFrameBody: maxFrameBody)
    }

    func send(_ request: OutgoingRequest, id: UInt64, answer: AnswerWaiter, maxFrameBody: Int) {
        guard context != nil, isOpen else {
            answer.resume(with: .failure(ConnectionError("the connection to the manager is closed; reconnect with Manager.connect")))
            return
        }
        pending[id] = answer
        switch request {
        case .value(let request): outbound.writeRequest(request, requestID: id, maxFrameBody: maxFrameBody)
        case .encoded(let body): outbound.writeMessage(Message(kind: .request, requestID: id, body: body), maxFrameBody: maxFrameBody)
        }
        // Gather the requests of this event-loop tick into one write and one flush.
        scheduleFlush()
    }

    /// On the event loop: writes a message that expects no answer, flushed with this tick's
    /// other writes.
    func sendMessage(kind: FrameKind, requestID: UInt64, value: WireValue, maxFrameBody: Int) {
        guard context != nil, isOpen else { return }
        outbound.writeMessage(kind: kind, requestID: requestID, value: value, maxFrameBody: maxFrameBody)
        scheduleFlush()
    }

    /// On the event loop: writes encoded messages (chunked if large).
    func sendEncoded(_ messages: [Message], maxFrameBody: Int) {
        guard context != nil, isOpen else { return }
        for message in messages {
            for frame in message.frames(maxBodySize: maxFrameBody) { outbound.writeFrame(frame) }
        }
        scheduleFlush()
    }

    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        poller.execute { [self] in
            flushScheduled = false
            if let context = self.context { flushOutbound(context: context) }
        }
    }

    /// Asks the manager to give up waiting on request `id` (it answers with Cancelled).
    func cancel(_ id: UInt64) {
        guard let context, isOpen, pending[id] != nil else { return }
        writeNow([Frame(kind: .cancel, requestID: id)], context: context)
    }

    private func stop(_ context: ChannelHandlerContext) {
        stopped = true
        context.close(promise: nil)
    }

    func sayGoodbye() {
        guard let context else { return }
        writeNow([Frame(kind: .goodbye)], context: context)
        stop(context)
    }

    private func failAll(_ error: any Error) {
        let waiting = pending
        pending = [:]
        for waiter in waiting.values { waiter.resume(with: .failure(error)) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        established.fail(ConnectionError("the manager closed the connection during the handshake (wrong authkey, or not a Colony manager)"))
        failAll(ConnectionError("the connection to the manager was lost; reconnect with Manager.connect (named objects are still there)"))
        self.context = nil
        if isWatched {
            poller.unwatch()
            isWatched = false
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        established.fail(ConnectionError("TLS or protocol error while connecting: \(error)"))
        failAll(ConnectionError("the connection failed: \(error)"))
        stop(context)
    }
}

extension RemoteError {
    /// The error a local Colony object would throw in the same situation, when there is one
    /// (QueueEmpty, QueueFull, TimeoutError, BrokenBarrierError, CancelledError); otherwise
    /// this error itself, whose `code` says what happened (KeyError, IndexError, ...).
    public var localError: any Error {
        switch code {
        case .empty: QueueEmpty()
        case .full: QueueFull()
        case .timeout: TimeoutError()
        case .brokenBarrier: BrokenBarrierError(message)
        case .cancelled: CancelledError()
        case .shutDown: QueueShutDown()
        default: self
        }
    }
}

extension ByteBuffer {
    /// Whether these MessagePack bytes may hold an object reference (ext 1: `d7 01`): a scan
    /// far cheaper than walking the decoded value, which most answers (plain data) skip.
    var mayHoldObjectReference: Bool {
        withUnsafeReadableBytes { bytes in
            var start = bytes.startIndex
            while let marker = bytes[start...].firstIndex(of: 0xD7) {
                if marker + 1 < bytes.endIndex, bytes[marker + 1] == 0x01 { return true }
                start = marker + 1
            }
            return false
        }
    }
}
