import ColonyWire
import NIOCore

/// Where the answer of a parked call goes: its session's connection. Objects call it from
/// whatever thread made the call ready. It may answer inline only on the session's own thread
/// while that session's code is not on the stack; otherwise it enqueues. Either way a session
/// has recorded a call as parked before the call's answer reaches it.
public protocol AnswerOutlet: AnyObject, Sendable {
    /// Answers request `requestID`. References inside a successful value are handed over to
    /// the receiving session (the object retained them for it).
    func deliver(requestID: UInt64, _ outcome: Result<WireValue, RemoteError>)
    /// Answers request `requestID` with a value already encoded, which holds no references
    /// (a pool's batch of results).
    func deliver(requestID: UInt64, encoded body: ByteBuffer)
}

extension AnswerOutlet {
    /// Outlets that do not write bytes themselves get the value.
    public func deliver(requestID: UInt64, encoded body: ByteBuffer) {
        let value = Result { try WireValue(messagePack: body.readableBytesView) }.mapError {
            RemoteError(.internalError, "an encoded answer does not decode: \($0)")
        }
        deliver(requestID: requestID, value)
    }
}

/// The thread or task of one client that makes a call: ownership of locks is this pair
/// (SPEC.md 6.3, "owner").
struct Caller: Hashable, Sendable {
    let session: UInt64
    let owner: UInt64
}

/// What an object needs to know about the request it is running.
struct CallContext {
    let session: UInt64
    let requestID: UInt64
    let outlet: any AnswerOutlet
    /// False inside a batch: a call that would block is refused instead of parked.
    let mayPark: Bool
    /// The size of the request's body: what a growing call adds, about (the memory budget).
    var requestBytes = 0
    /// A pool `map` or `feed` whose calls were read encoded: they are here, and the
    /// arguments hold nil in their place.
    var encodedCalls: EncodedValues?

    func caller(_ owner: UInt64) -> Caller { Caller(session: session, owner: owner) }

    /// A parked call for `object`; throws when this request may not park.
    func park(on object: any BlockingObject, _ method: String) throws(RemoteError) -> ParkedCall {
        guard mayPark else {
            throw RemoteError(.badRequest, "\(method)() would block, which a batch may not do; pass block=false or a zero timeout, or send it on its own")
        }
        return ParkedCall(requestID: requestID, session: session, outlet: outlet, object: object)
    }
}

/// One blocking request waiting on the manager. It holds no thread: the object keeps it in a
/// waiter list and answers it through its outlet exactly once, when it completes, times out,
/// is cancelled, or its session ends (then silently).
final class ParkedCall: @unchecked Sendable {
    let requestID: UInt64
    let session: UInt64
    let outlet: any AnswerOutlet
    let object: any BlockingObject

    init(requestID: UInt64, session: UInt64, outlet: any AnswerOutlet, object: any BlockingObject) {
        self.requestID = requestID
        self.session = session
        self.outlet = outlet
        self.object = object
    }

    func answer(_ value: WireValue) { outlet.deliver(requestID: requestID, .success(value)) }
    func answer(encoded body: ByteBuffer) { outlet.deliver(requestID: requestID, encoded: body) }
    func fail(_ error: RemoteError) { outlet.deliver(requestID: requestID, .failure(error)) }
}

/// What a call on an object produced.
enum CallResult {
    /// The answer, now.
    case answer(WireValue)
    /// The answer, now, already encoded; it holds no object references (a pool's batch of
    /// results, copied from their bytes).
    case encodedAnswer(ByteBuffer)
    /// The call waits; its answer comes through its outlet. With a timeout in seconds, the
    /// session arranges for `expire` to be called when it passes.
    case parked(ParkedCall, timeout: Double?)
}

/// An object with methods that may park. Every method runs under the object's lock; answers
/// to parked calls are delivered after that lock is released where the code allows it,
/// and are only ever enqueued (see `AnswerOutlet`).
protocol BlockingObject: SharedObject {
    /// The client cancelled the call: if it is still parked, answer Cancelled. Returns the
    /// references the object dropped with it.
    func cancel(_ call: ParkedCall) -> [UInt64]
    /// The call's timeout passed: if it is still parked, answer as the method defines.
    func expire(_ call: ParkedCall) -> [UInt64]
    /// Session `session` ended: remove its parked calls without answering them, and give back
    /// what it owned (locks, permits; a barrier it waited on breaks).
    func sessionEnded(_ session: UInt64) -> [UInt64]
    /// Session `session` said goodbye: it is leaving on purpose (`sessionEnded` follows).
    func sessionSaidGoodbye(_ session: UInt64)
}

extension BlockingObject {
    var blocking: (any BlockingObject)? { self }

    /// Most objects treat a goodbye as any other end.
    func sessionSaidGoodbye(_ session: UInt64) {}

    /// Every call on a blocking object goes through its session (`call(_:_:_:_:)`); the
    /// store's session-less path passes a context that may not park.
    func call(_ method: String, _ arguments: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue {
        throw RemoteError(.internalError, "a \(type) method ran without its session")
    }
}

extension SharedObject {
    var waiting: Int { 0 }
    var blocking: (any BlockingObject)? { nil }

    /// Objects without blocking methods never park.
    func call(_ method: String, _ arguments: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    {
        .answer(try call(method, arguments, &changes))
    }
}

/// Waiters in arrival order (first come, first served), with removal from the middle for
/// cancels and timeouts.
struct WaiterQueue<Payload> {
    private var items: [(call: ParkedCall, payload: Payload)] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }

    mutating func append(_ call: ParkedCall, _ payload: Payload) { items.append((call, payload)) }

    var first: (call: ParkedCall, payload: Payload)? { isEmpty ? nil : items[head] }

    mutating func updateFirst(_ payload: Payload) { items[head].payload = payload }

    mutating func popFirst() -> (call: ParkedCall, payload: Payload)? {
        guard !isEmpty else { return nil }
        let item = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    /// Removes `call` if it is waiting here.
    mutating func remove(_ call: ParkedCall) -> Payload? {
        guard let index = items[head...].firstIndex(where: { $0.call === call }) else { return nil }
        return items.remove(at: index).payload
    }

    /// Removes every waiter of `session`.
    mutating func removeAll(session: UInt64) -> [(call: ParkedCall, payload: Payload)] {
        removeAll { $0.call.session == session }
    }

    /// Removes every waiter that matches.
    mutating func removeAll(where matches: ((call: ParkedCall, payload: Payload)) -> Bool) -> [(call: ParkedCall, payload: Payload)] {
        let removed = items[head...].filter(matches)
        if !removed.isEmpty {
            items = items[head...].filter { !matches($0) }
            head = 0
        }
        return removed
    }

    /// Every waiter, first first.
    var all: ArraySlice<(call: ParkedCall, payload: Payload)> { items[head...] }

    /// Removes and returns every waiter.
    mutating func drain() -> [(call: ParkedCall, payload: Payload)] {
        defer {
            items = []
            head = 0
        }
        return Array(items[head...])
    }
}

/// Reads the common `timeout` argument: nil waits forever; negative is ValueError.
func timeoutArgument(_ value: WireValue?, _ method: String) throws(RemoteError) -> Double? {
    switch value {
    case nil, .null?: return nil
    case let number?:
        guard let seconds = number.doubleValue else {
            throw RemoteError(.wrongType, "\(method)(): timeout must be a number of seconds or nil, not \(number.kindDescription)")
        }
        guard seconds >= 0, seconds.isFinite else { throw RemoteError(.valueError, "\(method)(): timeout must be a non-negative number") }
        return seconds
    }
}

/// An outlet for calls that can never park (the store's session-less `call`).
final class DiscardingOutlet: AnswerOutlet {
    func deliver(requestID: UInt64, _ outcome: Result<WireValue, RemoteError>) {}
}
