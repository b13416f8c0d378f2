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
    /// Wait, then write these frames and close (a failed handshake).
    case failAfter(delayNanoseconds: UInt64, frames: [Frame])
    /// Close the connection after writing what was sent.
    case close
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
    private var heldReferences: [UInt64: Int] = [:]
    private let maxFrameBody: Int
    private let maxInFlight: Int
    /// Requests answered and frames received, for `status`.
    public private(set) var requestsServed: UInt64 = 0

    public init(
        id: UInt64, context: any ManagerContext, handshake: HandshakeConfiguration, maxFrameBody: Int, maxMessageSize: Int,
        maxInFlight: Int, now: UInt64
    ) {
        self.id = id
        self.context = context
        self.maxFrameBody = maxFrameBody
        self.maxInFlight = maxInFlight
        assembler = MessageAssembler(maxMessageSize: maxMessageSize, maxBufferedBytes: maxMessageSize)
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
            return receiveOpen(frame)
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
            return frames.map(SessionAction.send)
        case .failed(_, let frames, let delay):
            state = .closed
            return [.failAfter(delayNanoseconds: delay, frames: frames)]
        }
    }

    private mutating func receiveOpen(_ frame: Frame) -> [SessionAction] {
        let message: Message
        do {
            guard let complete = try assembler.receive(frame) else { return [] }
            message = complete
        } catch {
            return [.send(RemoteError(.tooLarge, "\(error)").frame(requestID: frame.requestID)), .close]
        }
        switch message.kind {
        case .request:
            requestsServed &+= 1
            return answer(message)
        case .ping:
            return [.send(Frame(kind: .pong, requestID: message.requestID))]
        case .pong:
            return []
        case .cancel:
            // Nothing is parked yet on this manager, so every request has been answered.
            assembler.discard(kind: .request, requestID: message.requestID)
            return []
        case .goodbye:
            state = .closed
            return [.send(Frame(kind: .goodbye)), .close]
        case .error:
            return []
        default:
            return [.send(RemoteError(.unsupported, "this manager does not accept \(message.kind) frames from a client").frame(requestID: message.requestID))]
        }
    }

    private mutating func answer(_ message: Message) -> [SessionAction] {
        let outcome: Result<WireValue, RemoteError>
        do {
            let value = try message.value()
            outcome = execute(try Request(wireValue: value))
        } catch let error as RemoteError {
            outcome = .failure(error)
        } catch {
            outcome = .failure(RemoteError(.badRequest, "the request body is not a valid value: \(error)"))
        }
        switch outcome {
        case .success(let result):
            let response = Message(kind: .response, requestID: message.requestID, body: result.encoded())
            return response.frames(maxBodySize: maxFrameBody).map(SessionAction.send)
        case .failure(let error):
            return [.send(error.frame(requestID: message.requestID))]
        }
    }

    /// Runs one request against the store.
    mutating func execute(_ request: Request) -> Result<WireValue, RemoteError> {
        let store = context.store
        do {
            switch request {
            case .new(let type, let name, let options):
                let reference = try store.create(type: type, name: name, options: options)
                heldReferences[reference.id, default: 0] += 1
                return .success(.objectRef(reference))
            case .call(let object, let method, let arguments):
                let result = try store.call(object: object, method: method, arguments: arguments)
                if result.mayContainReferences { adoptReferences(in: result) }
                return .success(result)
            case .release(let object):
                guard let count = heldReferences[object], count > 0 else { return .success(.null) }
                heldReferences[object] = count == 1 ? nil : count - 1
                store.release([object])
                return .success(.null)
            case .delete(let name):
                return .success(.bool(store.delete(name: name)))
            case .batch(let requests):
                var outcomes: [WireValue] = []
                outcomes.reserveCapacity(requests.count)
                for request in requests {
                    switch execute(request) {
                    case .success(let value): outcomes.append(BatchOutcome.success(value).wireValue)
                    case .failure(let error): outcomes.append(BatchOutcome.failure(error).wireValue)
                    }
                }
                return .success(.array(outcomes))
            case .status:
                return .success(context.statusReport())
            }
        } catch {
            return .failure(error)
        }
    }

    private mutating func adoptReferences(in value: WireValue) {
        let ids = PythonSemantics.references(in: value)
        context.store.retain(ids)
        for id in ids { heldReferences[id, default: 0] += 1 }
    }

    /// The connection ended, cleanly or not: gives back every reference this session held,
    /// so anonymous objects only it used are freed.
    public mutating func end() {
        state = .closed
        var ids: [UInt64] = []
        for (id, count) in heldReferences { ids.append(contentsOf: repeatElement(id, count: count)) }
        heldReferences = [:]
        context.store.release(ids)
    }
}
