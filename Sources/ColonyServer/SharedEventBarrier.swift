import ColonyWire
import Threading

/// Python `SyncManager.Event()`.
final class SharedEvent: BlockingObject, PersistentObject, @unchecked Sendable {
    let type = ObjectType.event
    let lock = Lock()
    // Guarded by lock.
    private var flag = false
    private var waiters = WaiterQueue<Void>()
    /// A named Event keeps whether it is set (`set`, `clear` effects).
    var journal: ObjectJournal?

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
                journal?.effect("set")
                woken = waiters.drain().map(\.call)
                return .answer(.null)
            case "clear":
                _ = try Arguments(method, values, count: 0...0)
                flag = false
                journal?.effect("clear")
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

    func snapshot() -> KeptState { lock.withLock { KeptState(options: .null, effects: flag ? [("set", .null)] : []) } }

    func replay(_ effect: String, _ operand: WireValue, _ changes: inout ReferenceChanges) throws(RemoteError) {
        guard effect == "set" || effect == "clear" else { throw RemoteError(.badRequest, "an Event has no recorded effect '\(effect)'") }
        lock.withLock { flag = effect == "set" }
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

    func referencedIDs() -> [UInt64] { [] }
}

/// Python `SyncManager.Barrier(parties, action, timeout)`. Indices count down in arrival
/// order, so the last party to arrive gets index 0. Code does not travel, so a barrier's
/// action runs in the session that created it: that client keeps an `await_action` call
/// parked here; when a round fills, it is answered, the client runs the action and reports
/// with `action_done`, and only then are the parties released, whichever session each is
/// in. If that session is gone, a round that fills breaks the barrier. A party whose wait
/// times out, is cancelled, or whose session dies breaks the barrier for the rest.
final class SharedBarrier: BlockingObject, @unchecked Sendable {
    let type = ObjectType.barrier
    let parties: Int
    private let defaultTimeout: Double?
    private let hasAction: Bool
    private let lock = Lock()
    // Guarded by lock.
    private var arrived = WaiterQueue<Int>()  // parked parties of this cycle, with their index
    /// A full round waiting for its action, every party parked.
    private var awaitingAction: [(call: ParkedCall, payload: Int)]?
    /// The creator's parked `await_action`, and its session once it has asked.
    private var runner: ParkedCall?
    private var runnerSession: UInt64?
    /// A round filled while no `await_action` was parked: the next one is answered at once.
    private var actionDue = false
    private var runnerGone = false
    private var isBroken = false

    init(parties: Int, timeout: Double?, hasAction: Bool) throws(RemoteError) {
        guard parties >= 1 else { throw RemoteError(.valueError, "a barrier needs parties >= 1") }
        self.parties = parties
        defaultTimeout = timeout
        self.hasAction = hasAction
    }

    var size: Int { parties }
    var waiting: Int { lock.withLock { arrived.count + (awaitingAction?.count ?? 0) } }

    private static let broken = RemoteError(.brokenBarrier, "the barrier is broken (a party timed out, was cancelled or died, or it was reset or aborted)")
    private static let runnerIsGone = RemoteError(
        .brokenBarrier, "the barrier is broken: the session that created it, where its action runs, is gone (create the barrier again)")

    /// Breaks the barrier: every party waiting gets BrokenBarrier.
    private func breakBarrier() -> [ParkedCall] {
        isBroken = true
        actionDue = false
        defer { awaitingAction = nil }
        return arrived.drain().map(\.call) + (awaitingAction?.map(\.call) ?? [])
    }

    func call(_ method: String, _ values: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    {
        var released: [(call: ParkedCall, payload: Int)] = []
        var broken: [ParkedCall] = []
        var brokenBecause = SharedBarrier.broken
        var wakeRunner: ParkedCall?
        defer {
            for party in released { party.call.answer(["index": .integer(party.payload)]) }
            for call in broken { call.fail(brokenBecause) }
            wakeRunner?.answer(.null)
        }
        return try lock.withLock { () throws(RemoteError) -> CallResult in
            switch method {
            case "wait":
                let arguments = try Arguments(method, values, count: 0...1)
                let timeout = try timeoutArgument(arguments.optional(0), method) ?? defaultTimeout
                if isBroken { throw SharedBarrier.broken }
                let index = parties - 1 - arrived.count
                if index == 0 {
                    guard hasAction else {
                        released = arrived.drain()
                        return .answer(["index": 0])
                    }
                    if runnerGone {
                        broken = breakBarrier()
                        brokenBecause = SharedBarrier.runnerIsGone
                        throw SharedBarrier.runnerIsGone
                    }
                    // Everyone waits for the action, the last party too (without a timeout:
                    // the action's time is not the party's wait).
                    let parked = try context.park(on: self, method)
                    awaitingAction = arrived.drain() + [(parked, 0)]
                    if let waiting = runner {
                        wakeRunner = waiting
                        runner = nil
                    } else {
                        actionDue = true
                    }
                    return .parked(parked, timeout: nil)
                }
                if timeout == 0 {
                    broken = breakBarrier()
                    throw SharedBarrier.broken
                }
                let parked = try context.park(on: self, method)
                arrived.append(parked, index)
                return .parked(parked, timeout: timeout)
            case "await_action":
                _ = try Arguments(method, values, count: 0...0)
                guard hasAction else { throw RemoteError(.valueError, "this barrier was created without an action") }
                guard runnerSession == nil || runnerSession == context.session else {
                    throw RemoteError(.valueError, "a barrier's action runs in the session that created it; another one already waits for it")
                }
                runnerSession = context.session
                if actionDue {
                    actionDue = false
                    return .answer(.null)
                }
                let parked = try context.park(on: self, method)
                runner = parked
                return .parked(parked, timeout: nil)
            case "action_done":
                let arguments = try Arguments(method, values, count: 1...2)
                let succeeded = try arguments.bool(0)
                guard let pending = awaitingAction else { return .answer(.null) }  // reset or aborted meanwhile
                awaitingAction = nil
                if succeeded {
                    released = pending
                } else {
                    if let reason = arguments.optional(1)?.stringValue {
                        brokenBecause = RemoteError(.brokenBarrier, "the barrier is broken: its action failed in the session that created it: \(reason)")
                    }
                    broken = pending.map(\.call)
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
            if runner === call {
                runner = nil
                return (true, [])
            }
            if let index = awaitingAction?.firstIndex(where: { $0.call === call }) {
                awaitingAction!.remove(at: index)
                return (true, breakBarrier())
            }
            guard arrived.remove(call) != nil else { return (false, []) }
            return (true, breakBarrier())
        }
    }

    func cancel(_ call: ParkedCall) -> [UInt64] {
        let isRunner = lock.withLock { runner === call }
        let (found, others) = withdrawAndBreak(call)
        if found { call.fail(RemoteError(.cancelled, isRunner ? "the wait for the barrier's action was cancelled" : "the wait was cancelled; the barrier is broken")) }
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
        let (others, reason): ([ParkedCall], RemoteError) = lock.withLock {
            var partyLeft = !arrived.removeAll(session: session).isEmpty
            if let pending = awaitingAction {
                let kept = pending.filter { $0.call.session != session }
                partyLeft = partyLeft || kept.count != pending.count
                awaitingAction = kept
            }
            if session == runnerSession {
                runnerGone = true
                runner = nil
                if awaitingAction != nil || actionDue { return (breakBarrier(), SharedBarrier.runnerIsGone) }
            }
            return (partyLeft ? breakBarrier() : [], SharedBarrier.broken)
        }
        for other in others { other.fail(reason) }
        return []
    }

    func removeAll() -> [UInt64] {
        let waiting = lock.withLock {
            defer { runner = nil }
            return breakBarrier() + (runner.map { [$0] } ?? [])
        }
        for call in waiting { call.fail(RemoteError(.noSuchObject, "the barrier was freed while this call waited on it")) }
        return []
    }

    func referencedIDs() -> [UInt64] { [] }
}
