import ColonyWire
import Threading

/// Python `SyncManager.Event()`.
final class SharedEvent: BlockingObject, @unchecked Sendable {
    let type = ObjectType.event
    private let lock = Lock()
    // Guarded by lock.
    private var flag = false
    private var waiters = WaiterQueue<Void>()

    var size: Int { lock.withLock { flag ? 1 : 0 } }
    var waiting: Int { lock.withLock { waiters.count } }

    func call(_ method: String, _ values: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    {
        var woken: [ParkedCall] = []
        defer { for call in woken { call.answer(true) } }
        return try lock.withLock { () throws(RemoteError) -> CallResult in
            switch method {
            case "set":
                _ = try Arguments(method, values, count: 0...0)
                flag = true
                woken = waiters.drain().map(\.call)
                return .answer(.null)
            case "clear":
                _ = try Arguments(method, values, count: 0...0)
                flag = false
                return .answer(.null)
            case "is_set":
                _ = try Arguments(method, values, count: 0...0)
                return .answer(.bool(flag))
            case "wait":
                let arguments = try Arguments(method, values, count: 0...1)
                let timeout = try timeoutArgument(arguments.optional(0), method)
                if flag { return .answer(true) }
                if timeout == 0 { return .answer(false) }
                let parked = try context.park(on: self, method)
                waiters.append(parked, ())
                return .parked(parked, timeout: timeout)
            default:
                throw unknownMethod(type, method)
            }
        }
    }

    func cancel(_ call: ParkedCall) -> [UInt64] {
        if lock.withLock({ waiters.remove(call) != nil }) { call.fail(RemoteError(.cancelled, "the wait was cancelled")) }
        return []
    }

    func expire(_ call: ParkedCall) -> [UInt64] {
        if lock.withLock({ waiters.remove(call) != nil }) { call.answer(false) }
        return []
    }

    func sessionEnded(_ session: UInt64) -> [UInt64] {
        lock.withLock { _ = waiters.removeAll(session: session) }
        return []
    }

    func removeAll() -> [UInt64] {
        let waiting = lock.withLock { waiters.drain() }
        for waiter in waiting { waiter.call.fail(RemoteError(.noSuchObject, "the event was freed while this call waited on it")) }
        return []
    }
}

/// Python `SyncManager.Barrier(parties, action, timeout)`. Indices count down in arrival
/// order, so the last party to arrive gets index 0; with an action, that party runs it (on
/// its client) and reports with `action_done` before the others are released. A party whose
/// wait times out, is cancelled, or whose session dies breaks the barrier for the rest.
final class SharedBarrier: BlockingObject, @unchecked Sendable {
    let type = ObjectType.barrier
    let parties: Int
    private let defaultTimeout: Double?
    private let hasAction: Bool
    private let lock = Lock()
    // Guarded by lock.
    private var arrived = WaiterQueue<Int>()  // parked parties of this cycle, with their index
    private var awaitingAction: (session: UInt64, parties: [(call: ParkedCall, payload: Int)])?
    private var isBroken = false

    init(parties: Int, timeout: Double?, hasAction: Bool) throws(RemoteError) {
        guard parties >= 1 else { throw RemoteError(.valueError, "a barrier needs parties >= 1") }
        self.parties = parties
        defaultTimeout = timeout
        self.hasAction = hasAction
    }

    var size: Int { parties }
    var waiting: Int { lock.withLock { arrived.count + (awaitingAction?.parties.count ?? 0) } }

    private static let broken = RemoteError(.brokenBarrier, "the barrier is broken (a party timed out, was cancelled or died, or it was reset or aborted)")

    /// Breaks the barrier: every party waiting gets BrokenBarrier.
    private func breakBarrier() -> [ParkedCall] {
        isBroken = true
        defer { awaitingAction = nil }
        return arrived.drain().map(\.call) + (awaitingAction?.parties.map(\.call) ?? [])
    }

    func call(_ method: String, _ values: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    {
        var released: [(call: ParkedCall, payload: Int)] = []
        var broken: [ParkedCall] = []
        defer {
            for party in released { party.call.answer(BarrierArrival(index: party.payload, runAction: false).wireValue) }
            for call in broken { call.fail(SharedBarrier.broken) }
        }
        return try lock.withLock { () throws(RemoteError) -> CallResult in
            switch method {
            case "wait":
                let arguments = try Arguments(method, values, count: 0...1)
                let timeout = try timeoutArgument(arguments.optional(0), method) ?? defaultTimeout
                if isBroken { throw SharedBarrier.broken }
                let index = parties - 1 - arrived.count
                if index == 0 {
                    if hasAction {
                        awaitingAction = (context.session, arrived.drain())
                        return .answer(BarrierArrival(index: 0, runAction: true).wireValue)
                    }
                    released = arrived.drain()
                    return .answer(BarrierArrival(index: 0, runAction: false).wireValue)
                }
                if timeout == 0 {
                    broken = breakBarrier()
                    throw SharedBarrier.broken
                }
                let parked = try context.park(on: self, method)
                arrived.append(parked, index)
                return .parked(parked, timeout: timeout)
            case "action_done":
                let arguments = try Arguments(method, values, count: 1...1)
                let succeeded = try arguments.bool(0)
                guard let pending = awaitingAction else { return .answer(.null) }  // reset or aborted meanwhile
                awaitingAction = nil
                if succeeded {
                    released = pending.parties
                } else {
                    broken = pending.parties.map(\.call)
                    broken += breakBarrier()
                }
                return .answer(.null)
            case "reset":
                _ = try Arguments(method, values, count: 0...0)
                broken = breakBarrier()
                isBroken = false
                return .answer(.null)
            case "abort":
                _ = try Arguments(method, values, count: 0...0)
                broken = breakBarrier()
                return .answer(.null)
            case "parties":
                _ = try Arguments(method, values, count: 0...0)
                return .answer(.integer(parties))
            case "n_waiting":
                _ = try Arguments(method, values, count: 0...0)
                return .answer(.integer(arrived.count))
            case "broken":
                _ = try Arguments(method, values, count: 0...0)
                return .answer(.bool(isBroken))
            default:
                throw unknownMethod(type, method)
            }
        }
    }

    /// Takes `call` out and breaks the barrier for the others; false if it was not waiting.
    private func withdrawAndBreak(_ call: ParkedCall) -> (found: Bool, others: [ParkedCall]) {
        lock.withLock {
            guard arrived.remove(call) != nil else { return (false, []) }
            return (true, breakBarrier())
        }
    }

    func cancel(_ call: ParkedCall) -> [UInt64] {
        let (found, others) = withdrawAndBreak(call)
        if found { call.fail(RemoteError(.cancelled, "the wait was cancelled; the barrier is broken")) }
        for other in others { other.fail(SharedBarrier.broken) }
        return []
    }

    func expire(_ call: ParkedCall) -> [UInt64] {
        let (found, others) = withdrawAndBreak(call)
        if found { call.fail(SharedBarrier.broken) }
        for other in others { other.fail(SharedBarrier.broken) }
        return []
    }

    func sessionEnded(_ session: UInt64) -> [UInt64] {
        let others: [ParkedCall] = lock.withLock {
            let gone = arrived.removeAll(session: session)
            let ranAction = awaitingAction?.session == session
            if let pending = awaitingAction { awaitingAction!.parties = pending.parties.filter { $0.call.session != session } }
            guard !gone.isEmpty || ranAction else { return [] }
            return breakBarrier()
        }
        for other in others { other.fail(SharedBarrier.broken) }
        return []
    }

    func removeAll() -> [UInt64] {
        let waiting = lock.withLock { breakBarrier() }
        for call in waiting { call.fail(RemoteError(.noSuchObject, "the barrier was freed while this call waited on it")) }
        return []
    }
}
