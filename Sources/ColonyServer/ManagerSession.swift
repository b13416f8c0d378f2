import ColonyWire
import NIOCore

/// What the manager as a whole tells sessions about: for `status`.
public protocol ManagerContext: AnyObject, Sendable {
    var store: ObjectStore { get }
    func statusReport() -> WireValue
}

/// What a session asks its connection to do.
public enum SessionAction: Sendable, Equatable {
    /// Write this frame (flushed together with the others produced by the same input).
    case send(Frame)
    /// Write the answer to a request: a response (chunked if large) or an error frame,
    /// encoded straight into the outgoing bytes.
    case answer(requestID: UInt64, Result<WireValue, RemoteError>)
    /// Write a response whose body is already encoded (chunked if large).
    case answerEncoded(requestID: UInt64, body: ByteBuffer)
    /// Wait, then write these frames and close (a failed handshake).
    case failAfter(delayNanoseconds: UInt64, frames: [Frame])
    /// Close the connection after writing what was sent.
    case close
    /// Call `expire(requestID:)` after this long (a parked call's timeout).
    case scheduleTimeout(requestID: UInt64, afterNanoseconds: UInt64)
    /// A heavy request (RequestWeight): pass it to `runOffloaded` on a thread off the event
    /// loop, then call `offloadReturned` and perform what it returned. The session takes no
    /// other input meanwhile.
    case offload(Message)
    /// Write these bytes, already framed (an offloaded request's answer, encoded off the loop).
    case write(ByteBuffer)
    /// A heavy answer (RequestWeight): encode it off the event loop, then write it; the
    /// session takes no other input meanwhile, so its answers keep their order.
    case encodeOffLoop(requestID: UInt64, WireValue)
    /// The next answer shows only what the journal's records up to `record` changed
    /// (`--persist always`): it may leave once those are synced. An answer without one waits
    /// for every record made before it.
    case answerShows(record: UInt64)
}

extension ByteBuffer {
    /// Appends the frames of an `.answer` action: a response or an error, chunked when its
    /// body is over `maxFrameBody` bytes (as SPEC.md 2.3 requires of every message).
    public mutating func writeAnswer(requestID: UInt64, _ result: Result<WireValue, RemoteError>, maxFrameBody: Int) {
        switch result {
        case .success(let value):
            writeMessage(kind: .response, requestID: requestID, value: value, maxFrameBody: maxFrameBody)
        case .failure(let error):
            writeMessage(kind: .error, requestID: requestID, value: error.wireValue, maxFrameBody: maxFrameBody)
        }
    }
}

/// One client connection's protocol logic, with no I/O: frames and time in, actions out.
/// The NIO handler around it only moves bytes.
public struct ManagerSession {
    private enum State {
        case handshaking(ServerHandshake)
        case open(NegotiatedSession)
        case closed
    }

    public let id: UInt64
    private let context: any ManagerContext
    private var state: State
    private var assembler: MessageAssembler
    /// The objects this session holds, each with the number of times it was handed to the
    /// session since its last accepted `release` (SPEC 6.2). The session holds one store
    /// reference per object however often it received it, so reading one container in a
    /// loop pins nothing more.
    private var heldReferences: [UInt64: UInt64] = [:]
    private let outlet: any AnswerOutlet
    /// Calls waiting on the manager, by request id.
    private var parked: [UInt64: ParkedCall] = [:]
    /// Blocking objects this session called: on its end they release what it owned.
    private var touched: [ObjectIdentifier: any BlockingObject] = [:]
    private let maxInFlight: Int
    /// For a worker node's session, after its worker-hello: the pool it joined.
    private var joinedPool: SharedPool?
    /// For a worker node's session, after its worker-hello: the node's name, for logs.
    public private(set) var workerNode: String?
    /// Requests answered and frames received, for `status`.
    public private(set) var requestsServed: UInt64 = 0
    /// This event loop's request metrics; nil when the manager keeps none.
    private let meter: RequestMeter?
    /// The type of the object the last call reached (set by `execute`, for its metrics).
    private var calledType: ObjectType?
    /// The last journal record the answer of the call just run shows, when it says.
    private var callShowsRecord: UInt64?
    /// With metrics: when each parked call arrived, and what it is counted as.
    private var parkedSince: [UInt64: (kind: RequestMeter.Kind, start: UInt64)] = [:]
    /// Whether `receive` uses the time it is given: during the handshake and for a worker
    /// node's frames (its heartbeats); a client's requests never do.
    public private(set) var needsClock = true
    /// Whether heavy requests are handed back with `.offload` (the server's sessions do).
    private let offloadsHeavyRequests: Bool
    /// True while `runOffloaded` runs: the meter belongs to the event loop, so what it would
    /// count waits in `offloadedMeasure` for `offloadReturned`.
    private var runningOffloaded = false
    private var offloadedMeasure: (request: Request?, outcome: Outcome, requestID: UInt64, start: UInt64)?

    public init(
        id: UInt64, context: any ManagerContext, handshake: HandshakeConfiguration, maxFrameBody: Int, maxMessageSize: Int,
        maxInFlight: Int, outlet: any AnswerOutlet, meter: RequestMeter? = nil, offloadsHeavyRequests: Bool = false, now: UInt64
    ) {
        self.id = id
        self.offloadsHeavyRequests = offloadsHeavyRequests
        self.outlet = outlet
        self.context = context
        self.maxInFlight = maxInFlight
        self.meter = meter
        assembler = MessageAssembler(maxMessageSize: maxMessageSize, maxBufferedBytes: maxMessageSize, budget: context.store.budget)
        state = .handshaking(
            ServerHandshake(configuration: handshake, sessionID: id, maxFrameBody: maxFrameBody, maxInFlight: maxInFlight, now: now))
    }

    /// The negotiated session once the handshake succeeded.
    public var negotiated: NegotiatedSession? {
        if case .open(let session) = state { return session }
        return nil
    }

    /// How many objects this session holds references to.
    public var objectCount: Int { heldReferences.count }

    /// The store took one reference per id (an occurrence in an answer) for this session:
    /// counts the transfers and keeps just one store reference per object.
    private mutating func took(_ ids: [UInt64]) {
        var extra: [UInt64] = []
        for id in ids {
            if let count = heldReferences[id] {
                heldReferences[id] = count + 1
                extra.append(id)
            } else {
                heldReferences[id] = 1
            }
        }
        if !extra.isEmpty { context.store.release(extra) }
    }

    /// `["release", id, seen]`: the client dropped its last proxy of `id` after receiving it
    /// `seen` times since its last release. Transfers it had not received yet keep the
    /// object held (their answers are on the way); without `seen` the hold goes at once.
    private mutating func release(_ id: UInt64, seen: UInt64?) {
        guard let count = heldReferences[id] else { return }
        if let seen, seen < count {
            heldReferences[id] = count - seen
            return
        }
        heldReferences[id] = nil
        context.store.release([id])
    }

    /// Feeds one frame from the client.
    public mutating func receive(_ frame: Frame, now: UInt64) -> [SessionAction] {
        switch state {
        case .closed:
            return []
        case .handshaking(var handshake):
            let step = handshake.receive(frame, now: now)
            state = .handshaking(handshake)
            return apply(step)
        case .open:
            return receiveOpen(frame, now: now)
        }
    }

    /// Call periodically while the handshake runs; fails it after its deadline.
    public mutating func checkHandshakeDeadline(now: UInt64) -> [SessionAction] {
        guard case .handshaking(var handshake) = state, let step = handshake.checkDeadline(now: now) else { return [] }
        state = .handshaking(handshake)
        return apply(step)
    }

    private mutating func apply(_ step: HandshakeStep) -> [SessionAction] {
        switch step {
        case .send(let frames):
            return frames.map(SessionAction.send)
        case .established(let session, let frames):
            state = .open(session)
            needsClock = session.role == "worker"
            meter?.metrics.sessionOpened(role: session.role)
            return frames.map(SessionAction.send)
        case .failed(let failure, let frames, let delay):
            state = .closed
            meter?.metrics.handshakeFailed(failure.code)
            return [.failAfter(delayNanoseconds: delay, frames: frames)]
        }
    }

    private mutating func receiveOpen(_ frame: Frame, now: UInt64) -> [SessionAction] {
        let message: Message
        do {
            guard let complete = try assembler.receive(frame) else { return [] }
            message = complete
        } catch {
            let code: ErrorCode = (error as? FrameError)?.code == .overBudget ? .outOfMemory : .tooLarge
            return [.answer(requestID: frame.requestID, .failure(RemoteError(code, "\(error)"))), .close]
        }
        switch message.kind {
        case .request:
            return answer(message, mayOffload: offloadsHeavyRequests)
        case .ping:
            return [.send(Frame(kind: .pong, requestID: message.requestID))]
        case .pong:
            return []
        case .cancel:
            assembler.discard(kind: .request, requestID: message.requestID)
            if let call = parked[message.requestID] { context.store.release(context.store.changing { call.object.cancel(call) }) }
            return []
        case .goodbye:
            for object in touched.values { object.sessionSaidGoodbye(id) }
            return closeWithGoodbye(answeringParkedWith: RemoteError(.cancelled, "the session said goodbye while this call waited"))
        case .error:
            return []
        case .workerHello:
            return joinPool(message, now: now)
        case .taskResult, .taskFailure, .heartbeat, .drain:
            guard let joinedPool else {
                return [.answer(requestID: message.requestID, .failure(RemoteError(.unsupported, "send worker-hello before \(message.kind) frames")))]
            }
            do {
                try joinedPool.workerFrame(session: id, message, now: now)
                return []
            } catch let error as RemoteError {
                return [.answer(requestID: message.requestID, .failure(error))]
            } catch {
                return [.answer(requestID: message.requestID, .failure(RemoteError(.badRequest, "a malformed \(message.kind) frame: \(error)")))]
            }
        default:
            return [.answer(requestID: message.requestID, .failure(RemoteError(.unsupported, "this manager does not accept \(message.kind) frames from a client")))]
        }
    }

    /// A worker node's first frame: it joins the named pool (created if needed). A bad hello
    /// is answered with an error and the connection closes.
    private mutating func joinPool(_ message: Message, now: UInt64) -> [SessionAction] {
        func refuse(_ error: RemoteError) -> [SessionAction] { [.answer(requestID: message.requestID, .failure(error)), .close] }
        guard negotiated?.role == "worker" else {
            return [.answer(requestID: message.requestID, .failure(RemoteError(.unsupported, "only a session that said role \"worker\" in its hello may join a pool")))]
        }
        guard joinedPool == nil else {
            return [.answer(requestID: message.requestID, .failure(RemoteError(.unsupported, "this worker already joined a pool")))]
        }
        guard let outlet = outlet as? any WorkerOutlet else { return refuse(RemoteError(.unsupported, "this manager cannot serve worker nodes")) }
        do {
            let hello = try WorkerHello(wireValue: message.value())
            let reference = try context.store.create(type: .pool, name: hello.pool, options: .null)
            took([reference.id])
            guard let pool = context.store.object(reference.id) as? SharedPool else {
                return refuse(RemoteError(.internalError, "pool '\(hello.pool)' vanished"))
            }
            try pool.workerJoined(session: id, outlet: outlet, hello: hello, now: now)
            joinedPool = pool
            workerNode = hello.node
            return []
        } catch let error as RemoteError {
            return refuse(error)
        } catch {
            return refuse(RemoteError(.badRequest, "a malformed worker-hello: \(error)"))
        }
    }

    /// What running one request produced.
    enum Outcome {
        case answered(Result<WireValue, RemoteError>)
        /// Answered with a value already encoded (holding no references).
        case answeredEncoded(ByteBuffer)
        /// Parked; the answer comes later through the outlet.
        case parked(timeout: Double?)
    }

    /// Runs a request that `receive` handed back with `.offload`, on a thread off the event
    /// loop; its answer is encoded here too, so the loop only writes bytes.
    public mutating func runOffloaded(_ message: Message, maxFrameBody: Int) -> [SessionAction] {
        runningOffloaded = true
        defer { runningOffloaded = false }
        return answer(message, mayOffload: false).map { action in
            guard case .answer(let requestID, let result) = action else { return action }
            var bytes = ByteBuffer()
            bytes.writeAnswer(requestID: requestID, result, maxFrameBody: maxFrameBody)
            return .write(bytes)
        }
    }

    /// Back on the event loop after `runOffloaded`: counts what it ran.
    public mutating func offloadReturned() {
        guard let measured = offloadedMeasure.take(), let meter else { return }
        measure(measured.request, measured.outcome, requestID: measured.requestID, since: measured.start, meter)
    }

    private mutating func answer(_ message: Message, mayOffload: Bool) -> [SessionAction] {
        if mayOffload, RequestWeight.isHeavy(bodyBytes: message.body.readableBytes) { return [.offload(message)] }
        let start = meter == nil ? 0 : NIODeadline.now().uptimeNanoseconds
        var request: Request?
        let outcome: Outcome
        if parked[message.requestID] != nil {
            // Its answer would be taken for the parked one's: refused, and not run.
            outcome = .answered(.failure(RemoteError(
                .badRequest, "request id \(message.requestID) is still in flight (parked); a request id must be unique among a session's requests in flight")))
        } else if parked.count >= maxInFlight {
            outcome = .answered(.failure(RemoteError(
                .limitExceeded, "this session already has \(parked.count) requests waiting on the manager (max_in_flight); wait for some to finish")))
        } else {
            do {
                // A pool's map or feed keeps its calls encoded (checked as stored values are).
                let pooled = PoolCallsRequest(body: message.body, limits: ManagerSession.encodedCallLimits).flatMap {
                    context.store.object($0.object)?.type == .pool ? $0 : nil
                }
                let parsed = try pooled.map { Request.call(object: $0.object, method: $0.method, arguments: $0.arguments) } ?? Request(body: message.body)
                if mayOffload, RequestWeight.isHeavy(parsed, in: context.store) { return [.offload(message)] }
                if meter != nil { request = parsed }
                calledType = nil
                callShowsRecord = nil
                outcome = execute(parsed, requestID: message.requestID, requestBytes: message.body.readableBytes, encodedCalls: pooled?.calls)
                // A batch's answer shows what all its calls did, not only what its last one did.
                if case .call = parsed {} else { callShowsRecord = nil }
            } catch let error as RemoteError {
                outcome = .answered(.failure(error))
            } catch {
                outcome = .answered(.failure(RemoteError(.badRequest, "the request body is not a valid value: \(error)")))
            }
        }
        requestsServed &+= 1
        if let meter {
            if runningOffloaded {
                offloadedMeasure = (request, outcome, message.requestID, start)
            } else {
                measure(request, outcome, requestID: message.requestID, since: start, meter)
            }
        }
        switch outcome {
        case .answered(.success(let value)) where mayOffload && RequestWeight.isHeavy(answer: value):
            return [.encodeOffLoop(requestID: message.requestID, value)]
        case .answered(let result):
            guard case .success = result else { return [.answer(requestID: message.requestID, result)] }
            return showing(callShowsRecord, .answer(requestID: message.requestID, result))
        case .answeredEncoded(let body):
            return showing(callShowsRecord, .answerEncoded(requestID: message.requestID, body: body))
        case .parked(let timeout?):
            return [.scheduleTimeout(requestID: message.requestID, afterNanoseconds: UInt64(min(timeout, 1e9) * 1e9))]
        case .parked(nil):
            return []
        }
    }

    /// An answer, told what of the journal it shows when its call said so and answers wait for
    /// the journal (`--persist always`).
    private func showing(_ record: UInt64?, _ answer: SessionAction) -> [SessionAction] {
        guard let record, context.store.journal?.policy == .always else { return [answer] }
        return [.answerShows(record: record), answer]
    }

    /// Counts and times a request (a parked one when its answer comes). Labels come from
    /// the object the call reached, never from the peer's words alone: a call that reached
    /// no method is counted as "invalid".
    private mutating func measure(_ request: Request?, _ outcome: Outcome, requestID: UInt64, since start: UInt64, _ meter: RequestMeter) {
        var failure: ErrorCode?
        if case .answered(.failure(let error)) = outcome {
            failure = error.code
            meter.metrics.requestFailed(error.code)
        }
        let kind: RequestMeter.Kind
        switch request {
        case .call(let object, let method, _):
            // A call that threw from inside its method (KeyError, Empty, ...) reached it.
            let reached = failure.map { ![.unsupported, .noSuchObject, .wrongType, .badRequest].contains($0) } ?? true
            let type = calledType ?? (reached ? context.store.object(object)?.type : nil)
            kind = meter.kind(type: type, method: type == nil ? "invalid" : method)
        case .new(let type, _, _):
            kind = meter.kind(type: ObjectType.all.contains(type) ? type : nil, method: "new")
        case .release: kind = meter.kind(type: nil, method: "release")
        case .attach: kind = meter.kind(type: nil, method: "attach")
        case .delete: kind = meter.kind(type: nil, method: "delete")
        case .batch: kind = meter.kind(type: nil, method: "batch")
        case .status: kind = meter.kind(type: nil, method: "status")
        case nil: kind = meter.kind(type: nil, method: "invalid")
        }
        if case .parked = outcome {
            parkedSince[requestID] = (kind, start)
        } else {
            kind.record(nanoseconds: NIODeadline.now().uptimeNanoseconds &- start)
        }
    }

    /// How deep a pool call read encoded may nest: its calls array is at depth 2 of the
    /// request and at level 0 of `ObjectStore.checkStorable`, whose limit it keeps.
    static let encodedCallLimits = WireLimits(maxDepth: ObjectStore.maxStoredNesting + 2)

    /// Runs one request against the store. `requestID` 0 marks a call inside a batch, which
    /// may not park.
    mutating func execute(_ request: Request, requestID: UInt64 = 0, requestBytes: Int = 0, encodedCalls: EncodedValues? = nil) -> Outcome {
        let store = context.store
        do {
            switch request {
            case .new(let type, let name, let options):
                let reference = try store.create(type: type, name: name, options: options)
                took([reference.id])
                return .answered(.success(.objectRef(reference)))
            case .call(let object, let method, let arguments):
                let callContext = CallContext(
                    session: id, requestID: requestID, outlet: outlet, mayPark: requestID != 0, requestBytes: requestBytes,
                    encodedCalls: encodedCalls)
                let (result, target, adopted, shows) = try store.call(object: object, method: method, arguments: arguments, context: callContext)
                calledType = target.type
                callShowsRecord = shows
                took(adopted)
                if let blocking = target.blocking { touched[ObjectIdentifier(blocking)] = blocking }
                switch result {
                case .answer(let value):
                    return .answered(.success(value))
                case .encodedAnswer(let body):
                    return .answeredEncoded(body)
                case .parked(let call, let timeout):
                    parked[requestID] = call
                    return .parked(timeout: timeout)
                }
            case .release(let object, let seen):
                release(object, seen: seen)
                return .answered(.success(.null))
            case .attach(let object):
                let reference = try store.attach(object)
                took([object])
                return .answered(.success(.objectRef(reference)))
            case .delete(let name):
                return .answered(.success(.bool(store.delete(name: name))))
            case .batch(let requests):
                var outcomes: [WireValue] = []
                outcomes.reserveCapacity(requests.count)
                for request in requests {
                    let result: Result<WireValue, RemoteError>
                    switch execute(request, requestBytes: requestBytes) {
                    case .answered(let answered): result = answered
                    case .answeredEncoded(let body): result = ManagerSession.decoded(body)
                    case .parked: return .answered(.failure(RemoteError(.internalError, "a call inside a batch was parked")))
                    }
                    switch result {
                    case .success(let value): outcomes.append(BatchOutcome.success(value).wireValue)
                    case .failure(let error): outcomes.append(BatchOutcome.failure(error).wireValue)
                    }
                }
                return .answered(.success(.array(outcomes)))
            case .status:
                return .answered(.success(context.statusReport()))
            }
        } catch {
            return .answered(.failure(error))
        }
    }

    /// The answer of a parked call arrived (through the outlet, on this session's thread).
    /// References in it were handed over to this session; if the session is gone, they are
    /// given back.
    public mutating func parkedAnswered(requestID: UInt64, _ outcome: Result<WireValue, RemoteError>) -> [SessionAction] {
        let references = (try? outcome.get()).map { $0.mayContainReferences ? $0.objectIDs : [] } ?? []
        guard case .open = state, parked.removeValue(forKey: requestID) != nil else {
            context.store.release(references)
            return []
        }
        if let meter, let since = parkedSince.removeValue(forKey: requestID) {
            since.kind.record(nanoseconds: NIODeadline.now().uptimeNanoseconds &- since.start)
            if case .failure(let error) = outcome { meter.metrics.requestFailed(error.code) }
        }
        took(references)
        if offloadsHeavyRequests, case .success(let value) = outcome, RequestWeight.isHeavy(answer: value) {
            return [.encodeOffLoop(requestID: requestID, value)]
        }
        return [.answer(requestID: requestID, outcome)]
    }

    /// The answer of a parked call arrived already encoded (it holds no references).
    public mutating func parkedAnswered(requestID: UInt64, encoded body: ByteBuffer) -> [SessionAction] {
        guard case .open = state, parked.removeValue(forKey: requestID) != nil else { return [] }
        if meter != nil, let since = parkedSince.removeValue(forKey: requestID) {
            since.kind.record(nanoseconds: NIODeadline.now().uptimeNanoseconds &- since.start)
        }
        return [.answerEncoded(requestID: requestID, body: body)]
    }

    /// An encoded answer as a value, for a batch, which answers with values.
    static func decoded(_ body: ByteBuffer) -> Result<WireValue, RemoteError> {
        Result { try WireValue(messagePack: body.readableBytesView) }.mapError { RemoteError(.internalError, "an encoded answer does not decode: \($0)") }
    }

    /// A parked call's timeout passed.
    public func expire(requestID: UInt64) {
        guard let call = parked[requestID] else { return }
        context.store.release(context.store.changing { call.object.expire(call) })
    }

    /// The manager is shutting down: parked calls are answered with ShutDown, then goodbye.
    public mutating func shutDown() -> [SessionAction] {
        guard case .open = state else { return [.close] }
        return closeWithGoodbye(answeringParkedWith: RemoteError(.shutDown, "the manager is shutting down"))
    }

    /// Answers every parked call with `error`, then says goodbye and closes.
    private mutating func closeWithGoodbye(answeringParkedWith error: RemoteError) -> [SessionAction] {
        let answers = withdrawAll().map { SessionAction.answer(requestID: $0, .failure(error)) }
        state = .closed
        return answers + [.send(Frame(kind: .goodbye)), .close]
    }

    /// Takes every parked call of this session off its object and gives back what the
    /// session owned (locks, permits, barrier places). Returns the withdrawn request ids.
    private mutating func withdrawAll() -> [UInt64] {
        // Every object a call is parked on is among the touched ones.
        var dropped: [UInt64] = []
        context.store.changing { for object in touched.values { dropped += object.sessionEnded(id) } }
        context.store.release(dropped)
        touched = [:]
        parkedSince = [:]
        defer { parked = [:] }
        return parked.keys.sorted()
    }

    /// The connection ended, cleanly or not: gives back every reference this session held,
    /// so anonymous objects only it used are freed.
    public mutating func end() {
        joinedPool?.workerLeft(session: id)
        joinedPool = nil
        assembler.discardAll()
        _ = withdrawAll()
        state = .closed
        let ids = Array(heldReferences.keys)
        heldReferences = [:]
        context.store.release(ids)
    }
}
