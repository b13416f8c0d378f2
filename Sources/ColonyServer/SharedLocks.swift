import ColonyWire
import Threading

extension Arguments {
    /// The `owner` argument: the client's name for the calling thread or task.
    func owner(_ index: Int) throws(RemoteError) -> UInt64 {
        guard let owner = values[index].uint64Value else {
            throw RemoteError(.wrongType, "\(method)(): the owner must be an unsigned integer, not \(values[index].kindDescription)")
        }
        return owner
    }
}

/// A grant answer (SPEC.md 6.3, "Lock details").
func grant(_ acquired: Bool, token: UInt64, ownerDied: Bool = false) -> WireValue {
    LockGrant(acquired: acquired, fencingToken: token, previousOwnerDied: ownerDied).wireValue
}

/// Answers to send once the object's lock is released.
typealias Replies = [() -> Void]

/// The state of a shared Lock or RLock, which the Conditions built on it share (their waiter
/// lists are guarded by the same mutex). Every method expects `mutex` held.
final class LockCore: @unchecked Sendable {
    /// What a waiter for the lock gets when it is granted.
    enum Reply {
        /// An `acquire`: a grant.
        case grant
        /// A `Condition.wait` taking the lock back: true if notified, false if it timed out.
        case conditionWait(Bool)
    }

    struct Waiter {
        let caller: Caller
        let depth: Int
        let reply: Reply
    }

    let reentrant: Bool
    let mutex = Lock()
    // Guarded by mutex.
    private(set) var holder: Caller?
    private(set) var depth = 0
    private var lastToken: UInt64 = 0
    private var ownerDied = false
    var waiters = WaiterQueue<Waiter>()
    /// A named lock's line into the journal: it records who holds it, not who waits.
    var journal: ObjectJournal?

    init(reentrant: Bool) { self.reentrant = reentrant }

    /// Fencing tokens skip this many after a restart: grants the journal lost (with
    /// `--persist no` or `everysec`) may have handed out the next ones.
    static let restartTokenGap: UInt64 = 1 << 32

    /// The largest token a journal may name: a manager that handed out a billion grants a
    /// second would need centuries to reach it, and tokens rising from it cannot overflow.
    static let largestKeptToken: UInt64 = 1 << 62

    /// What a snapshot keeps: the last token, and whether the lock was held.
    var keptState: KeptState {
        guard lastToken > 0 else { return KeptState(options: .null) }
        var effects: [(effect: String, operand: WireValue)] = [("taken", .integer(lastToken))]
        if holder == nil { effects.append(("freed", .bool(ownerDied))) }
        return KeptState(options: .null, effects: effects)
    }

    /// Redoes `taken token` or `freed ownerDied`. Nobody holds the lock after a restart; if
    /// someone did, or its holder's session died, the next holder is told its owner died.
    func replay(_ effect: String, _ operand: WireValue) throws(RemoteError) {
        switch effect {
        case "taken":
            guard let token = operand.uint64Value, token <= LockCore.largestKeptToken else {
                throw RemoteError(.badRequest, "a lock's recorded token must be at most 2^62, not \(operand)")
            }
            lastToken = token + LockCore.restartTokenGap
            ownerDied = true
        case "freed":
            ownerDied = operand.boolValue ?? false
        default:
            throw RemoteError(.badRequest, "a lock has no recorded effect '\(effect)'")
        }
    }

    var typeName: String { reentrant ? "RLock" : "Lock" }

    /// Takes the lock now if it is free and nobody is queued (no barging past waiters), or
    /// recursively for an RLock's holder. Nil when the caller must wait.
    func tryAcquire(_ caller: Caller) -> WireValue? {
        if reentrant, holder == caller {
            depth += 1
            return grant(true, token: lastToken)
        }
        guard holder == nil, waiters.isEmpty else { return nil }
        return take(caller, depth: 1)
    }

    private func take(_ caller: Caller, depth: Int) -> WireValue {
        holder = caller
        self.depth = depth
        lastToken += 1
        journal?.effect("taken", .integer(lastToken))
        defer { ownerDied = false }
        return grant(true, token: lastToken, ownerDied: ownerDied)
    }

    /// A failed (non-blocking or timed-out) acquire.
    var refusal: WireValue { grant(false, token: lastToken) }

    func acquire(_ arguments: Arguments, _ context: CallContext, on object: any BlockingObject) throws(RemoteError) -> CallResult {
        let caller = context.caller(try arguments.owner(0))
        let (blocking, timeout) = try acquireMode(arguments)
        if let granted = tryAcquire(caller) { return .answer(granted) }
        guard blocking, timeout != 0 else { return .answer(refusal) }
        let parked = try context.park(on: object, arguments.method)
        waiters.append(parked, Waiter(caller: caller, depth: 1, reply: .grant))
        return .parked(parked, timeout: timeout)
    }

    /// Python `release()`: an RLock only by its owner, one level; a Lock by anyone.
    func release(_ caller: Caller) throws(RemoteError) -> Replies {
        guard let holder else { throw RemoteError(.notOwner, "release unlocked \(typeName)") }
        if reentrant {
            guard holder == caller else { throw RemoteError(.notOwner, "cannot release un-acquired RLock: another thread holds it") }
            depth -= 1
            if depth > 0 { return [] }
        }
        return handOff()
    }

    func isOwned(by caller: Caller) -> Bool { holder == caller }

    /// Gives the lock up entirely (a Condition wait); returns the depth to restore.
    func releaseForWait(_ caller: Caller) throws(RemoteError) -> (depth: Int, replies: Replies) {
        guard holder == caller else { throw RemoteError(.notOwner, "cannot wait on un-acquired lock") }
        let saved = depth
        return (saved, handOff())
    }

    /// Frees the lock and grants it to the first waiter, if any.
    func handOff() -> Replies {
        holder = nil
        depth = 0
        journal?.effect("freed", .bool(ownerDied))
        guard let next = waiters.popFirst() else { return [] }
        let granted = take(next.payload.caller, depth: next.payload.depth)
        switch next.payload.reply {
        case .grant: return [{ next.call.answer(granted) }]
        case .conditionWait(let notified): return [{ next.call.answer(.bool(notified)) }]
        }
    }

    /// Queues a Condition waiter to take the lock back, granting at once if it is free.
    func enqueueReacquire(_ call: ParkedCall, caller: Caller, depth: Int, notified: Bool) -> Replies {
        waiters.append(call, Waiter(caller: caller, depth: depth, reply: .conditionWait(notified)))
        if holder == nil, waiters.count == 1 { return handOff() }
        return []
    }

    /// A session died: its queued acquires go, and if it held the lock (at any depth) the
    /// lock passes on and the next holder is told.
    func sessionEnded(_ session: UInt64) -> Replies {
        _ = waiters.removeAll(session: session)
        guard holder?.session == session else { return [] }
        ownerDied = true
        return handOff()
    }
}

/// Python `SyncManager.Lock()` and `RLock()`, with FIFO hand-off, fencing tokens and release
/// on session death.
final class SharedLock: BlockingObject, PersistentObject, @unchecked Sendable {
    let type: ObjectType
    let core: LockCore
    var lock: Lock { core.mutex }
    var journal: ObjectJournal? {
        get { core.mutex.withLock { core.journal } }
        set { core.mutex.withLock { core.journal = newValue } }
    }

    init(reentrant: Bool) {
        type = reentrant ? .rlock : .lock
        core = LockCore(reentrant: reentrant)
    }

    var size: Int { core.mutex.withLock { core.holder == nil ? 0 : 1 } }
    var waiting: Int { core.mutex.withLock { core.waiters.count } }

    func call(_ method: String, _ values: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    {
        var replies: Replies = []
        defer { for reply in replies { reply() } }
        return try core.mutex.withLock { () throws(RemoteError) -> CallResult in
            guard let result = try LockMethods.run(method, values, context, core, on: self, &replies) else {
                throw unknownMethod(type, method)
            }
            return result
        }
    }

    func cancel(_ call: ParkedCall) -> [UInt64] {
        let removed = core.mutex.withLock { core.waiters.remove(call) != nil }
        if removed { call.fail(RemoteError(.cancelled, "the acquire was cancelled")) }
        return []
    }

    func expire(_ call: ParkedCall) -> [UInt64] {
        let refusal: WireValue? = core.mutex.withLock { core.waiters.remove(call) != nil ? core.refusal : nil }
        if let refusal { call.answer(refusal) }
        return []
    }

    func sessionEnded(_ session: UInt64) -> [UInt64] {
        let replies = core.mutex.withLock { core.sessionEnded(session) }
        for reply in replies { reply() }
        return []
    }

    func removeAll() -> [UInt64] {
        let waiting = core.mutex.withLock { core.waiters.drain() }
        for waiter in waiting { waiter.call.fail(RemoteError(.noSuchObject, "the lock was freed while this call waited on it")) }
        return []
    }

    func referencedIDs() -> [UInt64] { [] }

    func snapshot() -> KeptState { core.mutex.withLock { core.keptState } }

    func replay(_ effect: String, _ operand: WireValue, _ changes: inout ReferenceChanges) throws(RemoteError) {
        try core.mutex.withLock { () throws(RemoteError) in try core.replay(effect, operand) }
    }
}

/// An acquire's `[owner, blocking, timeout]` after the owner: as in Python, a timeout for a
/// non-blocking acquire is a ValueError.
func acquireMode(_ arguments: Arguments) throws(RemoteError) -> (blocking: Bool, timeout: Double?) {
    let blocking = try arguments.bool(1, default: true)
    let timeout = try timeoutArgument(arguments.optional(2), arguments.method)
    if !blocking, timeout != nil {
        throw RemoteError(.valueError, "\(arguments.method)(): can't specify a timeout for a non-blocking call")
    }
    return (blocking, timeout)
}

/// The lock methods shared by Lock, RLock and Condition (whose lock they are).
enum LockMethods {
    /// Runs `method` if it is a lock method (nil otherwise). `core.mutex` is held.
    static func run(
        _ method: String, _ values: [WireValue], _ context: CallContext, _ core: LockCore, on object: any BlockingObject,
        _ replies: inout Replies
    ) throws(RemoteError) -> CallResult? {
        switch method {
        case "acquire":
            return try core.acquire(Arguments(method, values, count: 1...3), context, on: object)
        case "release":
            let arguments = try Arguments(method, values, count: 1...1)
            replies += try core.release(context.caller(arguments.owner(0)))
            return .answer(.null)
        case "locked":
            _ = try Arguments(method, values, count: 0...0)
            return .answer(.bool(core.holder != nil))
        case "is_owned":
            let arguments = try Arguments(method, values, count: 1...1)
            return .answer(.bool(core.isOwned(by: context.caller(try arguments.owner(0)))))
        default:
            return nil
        }
    }
}

/// Python `SyncManager.Condition(lock)`: on its own RLock, or on a shared Lock or RLock
/// object whose state it shares. A notified waiter queues to take the lock back and is
/// answered once it holds it again.
final class SharedCondition: BlockingObject, @unchecked Sendable {
    let type = ObjectType.condition
    let core: LockCore
    /// The shared lock object this condition uses, which it keeps alive.
    private let lockObject: UInt64?
    // Guarded by core.mutex: waiters with the lock depth each gave up.
    private var waiters = WaiterQueue<(caller: Caller, depth: Int)>()

    init(core: LockCore, lockObject: UInt64?) {
        self.core = core
        self.lockObject = lockObject
    }

    var size: Int { core.mutex.withLock { core.holder == nil ? 0 : 1 } }
    var waiting: Int { core.mutex.withLock { waiters.count + core.waiters.count } }

    func call(_ method: String, _ values: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    {
        var replies: Replies = []
        defer { for reply in replies { reply() } }
        return try core.mutex.withLock { () throws(RemoteError) -> CallResult in
            if let result = try LockMethods.run(method, values, context, core, on: self, &replies) { return result }
            switch method {
            case "wait":
                let arguments = try Arguments(method, values, count: 1...2)
                let caller = context.caller(try arguments.owner(0))
                let timeout = try timeoutArgument(arguments.optional(1), method)
                guard core.isOwned(by: caller) else { throw RemoteError(.notOwner, "cannot wait on un-acquired lock") }
                let parked = try context.park(on: self, method)
                let (depth, handed) = try core.releaseForWait(caller)
                replies += handed
                if timeout == 0 {
                    replies += core.enqueueReacquire(parked, caller: caller, depth: depth, notified: false)
                    return .parked(parked, timeout: nil)
                }
                waiters.append(parked, (caller, depth))
                return .parked(parked, timeout: timeout)
            case "notify", "notify_all":
                let arguments = try Arguments(method, values, count: method == "notify" ? 1...2 : 1...1)
                guard core.isOwned(by: context.caller(try arguments.owner(0))) else {
                    throw RemoteError(.notOwner, "cannot notify on un-acquired lock")
                }
                var n = method == "notify_all" ? Int.max : try arguments.optional(1).map { _ throws(RemoteError) in try arguments.int(1) } ?? 1
                while n > 0, let waiter = waiters.popFirst() {
                    // The notifier holds the lock, so this only queues.
                    replies += core.enqueueReacquire(waiter.call, caller: waiter.payload.caller, depth: waiter.payload.depth, notified: true)
                    n -= 1
                }
                return .answer(.null)
            default:
                throw unknownMethod(type, method)
            }
        }
    }

    func cancel(_ call: ParkedCall) -> [UInt64] {
        let removed = core.mutex.withLock { waiters.remove(call) != nil || core.waiters.remove(call) != nil }
        if removed { call.fail(RemoteError(.cancelled, "the call was cancelled")) }
        return []
    }

    /// A wait that times out still takes the lock back before it answers false, as Python's.
    func expire(_ call: ParkedCall) -> [UInt64] {
        let replies: Replies = core.mutex.withLock {
            if let waiter = waiters.remove(call) {
                return core.enqueueReacquire(call, caller: waiter.caller, depth: waiter.depth, notified: false)
            }
            guard core.waiters.remove(call) != nil else { return [] }
            let refusal = core.refusal  // an acquire on the condition timed out
            return [{ call.answer(refusal) }]
        }
        for reply in replies { reply() }
        return []
    }

    func sessionEnded(_ session: UInt64) -> [UInt64] {
        let replies: Replies = core.mutex.withLock {
            _ = waiters.removeAll(session: session)
            return core.sessionEnded(session)
        }
        for reply in replies { reply() }
        return []
    }

    func removeAll() -> [UInt64] {
        let waiting: [ParkedCall] = core.mutex.withLock {
            waiters.drain().map(\.call) + core.waiters.removeAll { $0.call.object === self }.map(\.call)
        }
        for call in waiting { call.fail(RemoteError(.noSuchObject, "the condition was freed while this call waited on it")) }
        return lockObject.map { [$0] } ?? []
    }

    func referencedIDs() -> [UInt64] { lockObject.map { [$0] } ?? [] }
}

/// Python `SyncManager.Semaphore(n)` and `BoundedSemaphore(n)`. Permits a session took and
/// did not give back are returned if the session dies.
final class SharedSemaphore: BlockingObject, PersistentObject, @unchecked Sendable {
    let type: ObjectType
    private let initialValue: Int
    let lock = Lock()
    // Guarded by lock.
    private var value: Int
    private var heldBySession: [UInt64: Int] = [:]
    private var waiters = WaiterQueue<Void>()
    private var lastToken: UInt64 = 0
    private var ownerDied = false
    /// A named semaphore keeps its value as a restart leaves it: every holder's session is
    /// gone then, so their permits are back (a `state` effect, recorded when that changes).
    var journal: ObjectJournal?
    private var recordedState: KeptSemaphore?

    init(bounded: Bool, value: Int) throws(RemoteError) {
        guard value >= 0 else { throw RemoteError(.valueError, "semaphore initial value must be >= 0") }
        type = bounded ? .boundedSemaphore : .semaphore
        initialValue = value
        self.value = value
    }

    var size: Int { lock.withLock { value } }
    var waiting: Int { lock.withLock { waiters.count } }

    private func take(_ session: UInt64) -> WireValue {
        heldBySession[session, default: 0] += 1
        lastToken += 1
        defer { ownerDied = false }
        return grant(true, token: lastToken, ownerDied: ownerDied)
    }

    /// Adds `n` permits, granting them to waiters first.
    private func give(_ n: Int) -> Replies {
        var replies: Replies = []
        for _ in 0..<n {
            if let next = waiters.popFirst() {
                let granted = take(next.call.session)
                replies.append { next.call.answer(granted) }
            } else {
                value += 1
            }
        }
        return replies
    }

    func call(_ method: String, _ values: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    {
        var replies: Replies = []
        defer { for reply in replies { reply() } }
        return try lock.withLock { () throws(RemoteError) -> CallResult in
            switch method {
            case "acquire":
                let arguments = try Arguments(method, values, count: 1...3)
                _ = try arguments.owner(0)
                let (blocking, timeout) = try acquireMode(arguments)
                if value > 0 && waiters.isEmpty {
                    value -= 1
                    defer { recordState() }
                    return .answer(take(context.session))
                }
                guard blocking, timeout != 0 else { return .answer(grant(false, token: lastToken)) }
                let parked = try context.park(on: self, method)
                waiters.append(parked, ())
                return .parked(parked, timeout: timeout)
            case "release":
                let arguments = try Arguments(method, values, count: 1...2)
                _ = try arguments.owner(0)
                let n = try arguments.optional(1).map { _ throws(RemoteError) in try arguments.int(1) } ?? 1
                guard n >= 1 else { throw RemoteError(.valueError, "n must be one or more") }
                if type == .boundedSemaphore, value + n > initialValue {
                    throw RemoteError(.valueError, "Semaphore released too many times")
                }
                let held = heldBySession[context.session, default: 0]
                heldBySession[context.session] = held > n ? held - n : nil
                replies += give(n)
                recordState()
                return .answer(.null)
            case "value":
                _ = try Arguments(method, values, count: 0...0)
                return .answer(.integer(value))
            default:
                throw unknownMethod(type, method)
            }
        }
    }

    func cancel(_ call: ParkedCall) -> [UInt64] {
        let removed = lock.withLock { waiters.remove(call) != nil }
        if removed { call.fail(RemoteError(.cancelled, "the acquire was cancelled")) }
        return []
    }

    func expire(_ call: ParkedCall) -> [UInt64] {
        let refusal: WireValue? = lock.withLock { waiters.remove(call) != nil ? grant(false, token: lastToken) : nil }
        if let refusal { call.answer(refusal) }
        return []
    }

    func sessionEnded(_ session: UInt64) -> [UInt64] {
        let replies: Replies = lock.withLock {
            _ = waiters.removeAll(session: session)
            guard let held = heldBySession.removeValue(forKey: session) else { return [] }
            ownerDied = true
            defer { recordState() }
            return give(type == .boundedSemaphore ? min(held, initialValue - value) : held)
        }
        for reply in replies { reply() }
        return []
    }

    func removeAll() -> [UInt64] {
        let waiting = lock.withLock { waiters.drain() }
        for waiter in waiting { waiter.call.fail(RemoteError(.noSuchObject, "the semaphore was freed while this call waited on it")) }
        return []
    }

    /// What a restart would leave now: the value with every held permit back (a bounded
    /// semaphore's no higher than it started), whether a holder would die, the last token.
    private var stateAfterRestart: KeptSemaphore {
        let held = heldBySession.values.reduce(0, +)
        let restored = type == .boundedSemaphore ? min(value + held, initialValue) : value + held
        return KeptSemaphore(value: restored, ownerDied: ownerDied || held > 0, token: lastToken)
    }

    /// With the lock held, after a change: records the state a restart would leave if it
    /// differs from the last recorded, or the token has gone far past it.
    private func recordState() {
        guard let journal else { return }
        let state = stateAfterRestart
        if let recorded = recordedState, recorded.value == state.value, recorded.ownerDied == state.ownerDied,
            state.token - recorded.token < LockCore.restartTokenGap / 2
        {
            return
        }
        recordedState = state
        journal.effect("state", state.wireValue)
    }

    func snapshot() -> KeptState { lock.withLock { KeptState(options: ["value": .integer(initialValue)], effects: [("state", stateAfterRestart.wireValue)]) } }

    func replay(_ effect: String, _ operand: WireValue, _ changes: inout ReferenceChanges) throws(RemoteError) {
        guard effect == "state", let state = KeptSemaphore(operand) else {
            throw RemoteError(.badRequest, "a semaphore has no recorded effect '\(effect)' with \(operand.kindDescription)")
        }
        lock.withLock {
            value = state.value
            ownerDied = state.ownerDied
            lastToken = state.token + LockCore.restartTokenGap
        }
    }

    func referencedIDs() -> [UInt64] { [] }
}

/// A semaphore as a restart leaves it: `[value, ownerDied, token]` in its `state` effect.
struct KeptSemaphore: Equatable {
    var value: Int
    var ownerDied: Bool
    var token: UInt64

    var wireValue: WireValue { [.integer(value), .bool(ownerDied), .integer(token)] }
}

extension KeptSemaphore {
    /// Reads a `state` effect's operand (nil if it is not one).
    init?(_ operand: WireValue) {
        guard let fields = operand.arrayValue, fields.count == 3, let value = fields[0].int64Value.flatMap({ Int(exactly: $0) }), value >= 0,
            let died = fields[1].boolValue, let token = fields[2].uint64Value, token <= LockCore.largestKeptToken
        else { return nil }
        self.init(value: value, ownerDied: died, token: token)
    }
}
